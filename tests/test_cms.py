"""archiver.cms: the PDF signature's CMS, made from the constant parts of one pyHanko built, is the CMS
pyHanko's signer makes (byte for byte with RSA, whose PKCS#1 v1.5 signatures are deterministic; all but
the random signature value with ECDSA), with and without a timestamp. tests/test_signing.py checks the
signed PDFs of every shape with pdfsig, qpdf, pyHanko's validator and openssl."""

from __future__ import annotations

import hashlib
import os
from functools import partial

import pytest
from asn1crypto import cms, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.sign.attributes import SigningTimeProvider, UnsignedAttributeProviderSpec
from pyhanko.sign.signers.pdf_cms import Signer as PyhankoSigner
from pyhanko.sign.timestamps import TimeStamper

from archiver import cms as archive_cms
from archiver import timestamps
from archiver.claims import now
from archiver.signing import Signer, SigningIdentity
from certfactory import make

SIGNING_USAGES = ("digital_signature", "content_commitment")


@pytest.fixture(scope="module")
def ecdsa(tmp_path_factory):
    return make(tmp_path_factory.mktemp("ecdsa"), "ECDSA signer", usages=SIGNING_USAGES, ec_key=True)


@pytest.fixture(scope="module")
def rsa3072(tmp_path_factory):
    return make(tmp_path_factory.mktemp("rsa"), "RSA signer", usages=SIGNING_USAGES, rsa_bits=3072)


class _Remembering(TimeStamper):
    """The authority's token for a digest, asked once: pyHanko's CMS and ours then carry the same token."""

    def __init__(self, stamper: TimeStamper) -> None:
        super().__init__()
        self.stamper, self.tokens = stamper, {}

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        if message_digest not in self.tokens:
            self.tokens[message_digest] = await self.stamper.async_timestamp(message_digest, md_algorithm)
        return self.tokens[message_digest]


def _pyhankos(signer: Signer, digest: bytes, timestamper: TimeStamper | None = None) -> bytes:
    """The CMS pyHanko's own signer makes for DIGEST, as Signer did before archiver.cms."""
    build = signer._pyhanko.async_sign(digest, "sha256", use_pades=True, timestamper=timestamper)
    return archive_cms._event_loop().run_until_complete(build).dump()


@pytest.mark.parametrize("timestamped", [False, True], ids=["B-B", "B-T"])
def test_with_rsa_the_cms_is_byte_for_byte_pyhankos(rsa3072, tsa, timestamped) -> None:
    stamper = _Remembering(timestamps.timestamper(tsa.url, 300)) if timestamped else None
    signer = Signer(SigningIdentity(rsa3072.key, rsa3072.cert, ()), timestamper=stamper)
    for digest in (os.urandom(32), bytes(32), b"\xff" * 32):
        ours = signer._cms(digest)
        assert ours == _pyhankos(signer, digest, stamper)
        assert _message_digest(ours) == digest
    assert not timestamped or len(stamper.tokens) == 3  # each signature stamped, once for both


@pytest.mark.parametrize("timestamped", [False, True], ids=["B-B", "B-T"])
def test_with_ecdsa_all_but_the_signature_value_is_pyhankos(ecdsa, tsa, timestamped) -> None:
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()),
                    timestamper=timestamps.timestamper(tsa.url, 300) if timestamped else None)
    for _ in range(3):
        digest = os.urandom(32)
        ours = cms.ContentInfo.load(signer._cms(digest), strict=True)  # strict: nothing after it
        theirs = cms.ContentInfo.load(_pyhankos(signer, digest))
        assert _message_digest(ours.dump()) == digest
        ours_info, theirs_info = ours["content"]["signer_infos"][0], theirs["content"]["signer_infos"][0]
        for name in ("version", "digest_algorithms", "encap_content_info", "certificates", "crls"):
            assert ours["content"][name].dump() == theirs["content"][name].dump(), name
        for name in ("version", "sid", "digest_algorithm", "signed_attrs", "signature_algorithm"):
            assert ours_info[name].dump() == theirs_info[name].dump(), name
        value = ours_info["signature"].native
        ecdsa.key.public_key().verify(value, ours_info["signed_attrs"].untag().dump(), ec.ECDSA(hashes.SHA256()))
        if timestamped:
            (attribute,) = ours_info["unsigned_attrs"]
            assert attribute["type"].native == "signature_time_stamp_token"
            timestamps.check_token(attribute["values"][0], hashlib.sha256(value).digest(), "sha256", None)
        else:
            assert not ours_info["unsigned_attrs"].dump()


def test_with_ecdsa_of_every_value_length_the_cms_is_byte_for_byte_pyhankos(ecdsa, tsa, monkeypatch) -> None:
    # ECDSA values are DER of 70 to 72 bytes, so the lengths around them vary: with deterministic ECDSA
    # (RFC 6979) on both sides, pyHanko's CMS and ours must be the same bytes for each length.
    stamper = _Remembering(timestamps.timestamper(tsa.url, 300))
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()), timestamper=stamper)
    sign = partial(ecdsa.key.sign, signature_algorithm=ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    monkeypatch.setattr(signer._pyhanko, "sign_raw", lambda data, _algorithm: sign(data))
    ours = archive_cms.PdfCms(signer._pyhanko, sign)
    timestamped = archive_cms.PdfCms(signer._pyhanko, sign, stamper)
    sizes: set[int] = set()
    for number in range(1000):
        digest = hashlib.sha256(b"%d" % number).digest()
        size = len(sign(ours.signed_attributes(digest)))
        if size in sizes:
            continue
        sizes.add(size)
        assert ours(digest) == _pyhankos(signer, digest), f"a {size}-byte signature value"
        assert timestamped(digest) == _pyhankos(signer, digest, stamper), f"a {size}-byte signature value, B-T"
        if {70, 71, 72} <= sizes:
            break
    assert {70, 71, 72} <= sizes


def test_a_failing_timestamp_authority_fails_the_signature_for_a_retry(ecdsa, tsa) -> None:
    # /wrong-imprint stamps another digest than the one of our signature value: refused, not embedded
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()), timestamper=timestamps.timestamper(
        tsa.at("/wrong-imprint"), 300))
    with pytest.raises(timestamps.TimestampError, match="does not cover the digest we sent"):
        signer._cms(os.urandom(32))
    assert issubclass(timestamps.TimestampError, OSError)  # the archive pass retries OSErrors


def test_signing_a_chat_does_not_ask_pyhanko_to_build_a_cms(ecdsa, monkeypatch) -> None:
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()))

    async def refuse(*_args, **_kwargs):
        raise AssertionError("pyHanko built a CMS for this signature")

    monkeypatch.setattr(PyhankoSigner, "async_sign", refuse)
    digest = os.urandom(32)
    assert _message_digest(signer._cms(digest)) == digest


def test_a_digest_of_another_size_is_refused(ecdsa) -> None:
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()))
    with pytest.raises(ValueError, match="not 48"):
        signer._cms(hashlib.sha384(b"x").digest())


@pytest.mark.parametrize("size", [0, 1, 127, 128, 255, 256, 65535, 65536, 16_777_216])
def test_lengths_are_written_as_der(size) -> None:
    content = b"\x00" * size
    assert archive_cms._tlv(0x04, content) == core.OctetString(content).dump()


def _message_digest(der: bytes) -> bytes:
    attributes = cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"]
    (value,) = [a["values"][0].native for a in attributes if a["type"].native == "message_digest"]
    return value


def test_a_cms_of_a_shape_it_cannot_reuse_is_refused_when_the_signer_is_made(ecdsa, monkeypatch) -> None:
    signer = Signer(SigningIdentity(ecdsa.key, ecdsa.cert, ()))
    sign = signer._pyhanko.raw_signer("sha256")
    original = PyhankoSigner.async_sign

    async def elsewhere(self, digest, *args, **kwargs):  # the digest is not where the template expects it
        return await original(self, bytes(reversed(range(32))), *args, **kwargs)

    monkeypatch.setattr(PyhankoSigner, "async_sign", elsewhere)
    with pytest.raises(ValueError, match="does not know how to reuse"):
        archive_cms.PdfCms(signer._pyhanko, sign)
    monkeypatch.setattr(PyhankoSigner, "async_sign", original)

    class Unsigned(UnsignedAttributeProviderSpec):  # an unsigned attribute made without a timestamper
        def unsigned_attr_providers(self, signature, signed_attrs, digest_algorithm):
            yield SigningTimeProvider(now())

    signer._pyhanko.unsigned_attr_prov_spec = Unsigned()
    with pytest.raises(ValueError, match="unsigned attributes"):
        archive_cms.PdfCms(signer._pyhanko, sign)


def test_threads_sign_at_the_same_time_each_on_its_own_event_loop() -> None:
    """`serve` runs its jobs in threads: a seal signing while a retention run signs its report must not meet
    one process-wide loop that is already running (RuntimeError)."""
    import asyncio
    import threading

    inside, leave = threading.Event(), threading.Event()

    async def hold() -> None:  # a signature in progress in another thread
        inside.set()
        while not leave.is_set():
            await asyncio.sleep(0.01)
    other = threading.Thread(target=lambda: archive_cms._event_loop().run_until_complete(hold()))
    other.start()
    try:
        assert inside.wait(10)
        assert archive_cms._event_loop().run_until_complete(asyncio.sleep(0, "done")) == "done"
    finally:
        leave.set()
        other.join(10)

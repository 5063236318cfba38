"""PAdES signatures of every shape the archiver makes (ECDSA P-256 and RSA-3072 keys, with and without
an RFC 3161 timestamp), each checked by pdfsig, qpdf and pyHanko's validator."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
from io import BytesIO

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers import pdf_cms
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from archiver import config as config_module
from archiver.artifacts import ArtifactBuilder
from archiver.claims import now
from archiver.samples import make_chat
from archiver.signing import Signer, SigningIdentity
from certfactory import make
from conftest import require_tool

SIGNING_USAGES = ("digital_signature", "content_commitment")
KEY_TYPES = {"ECDSA P-256": {"ec_key": True}, "RSA-3072": {"rsa_bits": 3072}}


@pytest.fixture(scope="module", params=list(KEY_TYPES))
def made(request, tmp_path_factory):
    return make(tmp_path_factory.mktemp("signer"), "Signer", usages=SIGNING_USAGES, **KEY_TYPES[request.param])


@pytest.fixture(scope="module")
def tsa(tmp_path_factory) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A throw-away timestamp authority for pyHanko's in-process DummyTimeStamper."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test TSA")])
    moment = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(moment - dt.timedelta(days=1))
            .not_valid_after(moment + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _dummy_timestamper(tsa) -> DummyTimeStamper:
    cert, key = tsa
    der = serialization.Encoding.DER
    return DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
    )


def _builder(made, timestamper=None) -> ArtifactBuilder:
    config = config_module.load(None, environ={}).with_overrides(**{
        "signing.certificate": str(made.cert_path), "signing.key": str(made.key_path)})
    builder = ArtifactBuilder.from_config(config, encrypt=False)
    builder.signer = Signer(SigningIdentity(made.key, made.cert, ()), timestamper=timestamper)
    return builder


def _signed_pdf(builder: ArtifactBuilder, seed: int = 1) -> bytes:
    chat, contact = make_chat(random.Random(seed), messages=30)
    return builder.plaintext(chat, contact, "ended", 1, now()).pdf


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("timestamped", [False, True], ids=["B-B", "B-T"])
def test_every_signature_shape_is_valid_for_pdfsig_qpdf_and_pyhanko(made, tsa, timestamped, tmp_path) -> None:
    require_tool("pdfsig")
    require_tool("qpdf")
    builder = _builder(made, _dummy_timestamper(tsa) if timestamped else None)
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(_signed_pdf(builder))
    report = _run("pdfsig", str(pdf)).stdout
    assert "Signature Validation: Signature is Valid." in report, report
    assert "Total document signed" in report, report
    assert "Signature Type: ETSI.CAdES.detached" in report, report
    check = _run("qpdf", "--check", str(pdf))
    assert check.returncode == 0, check.stdout + check.stderr
    signatures = PdfFileReader(BytesIO(pdf.read_bytes())).embedded_signatures
    assert len(signatures) == 1
    assert signatures[0].sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    roots = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in (made.cert, tsa[0])]
    status = validate_pdf_signature(signatures[0], ValidationContext(trust_roots=roots, allow_fetching=False))
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.coverage.name == "ENTIRE_FILE"
    if timestamped:
        assert status.timestamp_validity is not None, "B-T: the signature-timestamp attribute is missing"
        assert status.timestamp_validity.intact and status.timestamp_validity.valid
    else:
        assert status.timestamp_validity is None


def test_the_signing_key_is_not_parsed_again_for_each_signature(made, monkeypatch) -> None:
    # pyHanko's SimpleSigner parsed the key from DER for every signature: 121 ms of 127 with RSA-3072.
    builder = _builder(made)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the signing key was parsed again")

    monkeypatch.setattr(pdf_cms.serialization, "load_der_private_key", refuse)
    assert _signed_pdf(builder).startswith(b"%PDF")


def test_a_flipped_byte_in_either_signed_range_breaks_the_signature(made, tmp_path) -> None:
    require_tool("pdfsig")
    data = _signed_pdf(_builder(made))
    for where in (len(data) // 4, len(data) - 40):  # before the signature, and in the trailer after it
        tampered = bytearray(data)
        tampered[where] ^= 0x01
        pdf = tmp_path / "t.pdf"
        pdf.write_bytes(bytes(tampered))
        assert "Signature is Valid." not in _run("pdfsig", str(pdf)).stdout


def test_the_pdf_is_signed_in_its_original_revision(made) -> None:
    # One revision: the signature dictionary is in reportlab's output, no incremental update after it.
    data = _signed_pdf(_builder(made))
    assert data.count(b"%%EOF") == 1 and data.count(b"startxref") == 1
    signature = PdfFileReader(BytesIO(data)).embedded_signatures[0]
    assert signature.signed_revision == 0
    start, length, end, rest = signature.byte_range
    assert start == 0 and end + rest == len(data)


def test_a_room_id_that_imitates_the_placeholder_cannot_move_the_signature(made, tmp_path) -> None:
    require_tool("pdfsig")
    chat, contact = make_chat(random.Random(5), messages=3)
    room = "/ByteRange [0 0000000000 0000000000 0000000000] /Contents <00000000> >>"
    chat["room"] = room
    contact["id"] = room
    for message in chat["messages"]:
        message["data"]["content"]["text"] = room
    data = _builder(made).plaintext(chat, contact, "ended", 1, now()).pdf
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(data)
    report = _run("pdfsig", str(pdf)).stdout
    assert "Signature is Valid." in report and "Total document signed" in report, report
    assert PdfFileReader(BytesIO(data)).trailer["/Info"]["/Title"] == room

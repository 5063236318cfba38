"""PAdES signatures of every shape the archiver makes (ECDSA P-256 and RSA-3072 keys, with and without
an RFC 3161 timestamp from a real authority over HTTP, tests/tsa.py), each checked by pdfsig, qpdf,
pyHanko's validator and openssl."""

from __future__ import annotations

import random
import subprocess
from io import BytesIO

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers import pdf_cms
from pyhanko.sign.validation import EmbeddedPdfSignature, validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

from archiver import config as config_module
from archiver import timestamps
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
def test_every_signature_shape_is_valid_for_pdfsig_qpdf_pyhanko_and_openssl(made, tsa, timestamped,
                                                                             tmp_path) -> None:
    require_tool("pdfsig")
    require_tool("qpdf")
    require_tool("openssl")
    builder = _builder(made, timestamps.timestamper(tsa.url, 300) if timestamped else None)
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
    tsa_root = x509.load_pem_x509_certificate(tsa.ca_pem.read_bytes())
    roots = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in (made.cert, tsa_root)]
    status = validate_pdf_signature(signatures[0], ValidationContext(trust_roots=roots, allow_fetching=False))
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.coverage.name == "ENTIRE_FILE"
    if timestamped:
        assert status.timestamp_validity is not None, "B-T: the signature-timestamp attribute is missing"
        assert status.timestamp_validity.intact and status.timestamp_validity.valid
    else:
        assert status.timestamp_validity is None
    _check_with_openssl(signatures[0], pdf.read_bytes(), tsa if timestamped else None, tmp_path)


def _check_with_openssl(signature: EmbeddedPdfSignature, data: bytes, tsa, tmp_path) -> None:
    """openssl checks the CMS in /Contents over the bytes /ByteRange names (and, B-T, its timestamp token)."""
    start, length, end, rest = signature.byte_range
    hex_string = data[start + length:end]
    assert hex_string[:1] == b"<" and hex_string[-1:] == b">"
    signed_data = cms.ContentInfo.load(bytes.fromhex(hex_string[1:-1].decode()))  # the zero padding is left over
    (tmp_path / "cms.der").write_bytes(signed_data.dump())
    for name, content in [("signed", data[start:start + length] + data[end:end + rest]),
                          ("tampered", data[start:start + length - 1] + b"?" + data[end:end + rest])]:
        (tmp_path / name).write_bytes(content)
        verified = _run("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "cms.der"),
                        "-noverify", "-content", str(tmp_path / name), "-out", "/dev/null")
        assert (verified.returncode == 0) == (name == "signed"), f"{name}: {verified.stderr}"
    signer_info = signed_data["content"]["signer_infos"][0]
    tokens = [a["values"][0] for a in signer_info["unsigned_attrs"] if a["type"].native == "signature_time_stamp_token"]
    assert len(tokens) == (1 if tsa else 0)
    if tsa:  # the token stamps the signature value (CAdES-T)
        (tmp_path / "value").write_bytes(signer_info["signature"].native)
        (tmp_path / "token.der").write_bytes(tokens[0].dump())
        verified = _run("openssl", "ts", "-verify", "-data", str(tmp_path / "value"), "-in",
                        str(tmp_path / "token.der"), "-token_in", "-CAfile", str(tsa.ca_pem))
        assert verified.returncode == 0 and "Verification: OK" in verified.stdout, verified.stderr


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

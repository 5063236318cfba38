"""Signed, encrypted artefacts, checked only with tools we did not write."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from archiver import config as config_module
from archiver.artifacts import ArtifactBuilder
from archiver.claims import now
from archiver.envelope import EnvelopeError, load_recipients
from archiver.keys import create_development_keys
from archiver.samples import PHRASES, make_chat
from conftest import require_tool


def _run(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=data, capture_output=True, timeout=60)


def _multilingual_chat() -> tuple[dict, dict]:
    chat, contact = make_chat(random.Random(3), messages=len(sum(PHRASES.values(), [])) + 1)
    texts = iter(sum(PHRASES.values(), []))
    for message in chat["messages"][:-1]:
        message["data"]["messageType"] = "TEXT"
        message["data"]["content"] = {"text": next(texts), "user": message["data"]["content"]["user"]}
    return chat, contact


@pytest.fixture(scope="module")
def built(keys, tmp_path_factory):
    second = create_development_keys(tmp_path_factory.mktemp("second"))
    config = config_module.load(None, environ={}).with_overrides(**{
        "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"]), str(second["legal.crt.pem"])],
    })
    chat, contact = _multilingual_chat()
    artefacts = ArtifactBuilder.from_config(config).build(chat, contact, "ended", 1, now())
    folder = tmp_path_factory.mktemp("artefacts")
    for blob in artefacts.blobs:
        (folder / f"{blob.name}.p7m").write_bytes(blob.data)
    return {"artefacts": artefacts, "folder": folder, "chat": chat, "second": second}


def _decrypt(folder: Path, name: str, key: Path, cert: Path) -> bytes:
    require_tool("openssl")
    out = _run("openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(folder / f"{name}.p7m"),
               "-inkey", str(key), "-recip", str(cert))
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def test_every_recipient_decrypts_the_exact_bytes_with_openssl(built, keys) -> None:
    folder, artefacts = built["folder"], built["artefacts"]
    plain = artefacts.plain.files()
    for key_dir in (keys, built["second"]):
        for name in plain:
            assert _decrypt(folder, name, key_dir["legal.key.pem"], key_dir["legal.crt.pem"]) == plain[name]
    info = _run("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(folder / "pdf.p7m"))
    assert b"aes-256-cbc" in info.stdout and info.stdout.count(b"KEKRecipientInfo") == 0


def test_a_key_that_is_not_a_recipient_cannot_decrypt(built, tmp_path) -> None:
    stranger = create_development_keys(tmp_path / "stranger")
    out = _run("openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(built["folder"] / "pdf.p7m"),
               "-inkey", str(stranger["legal.key.pem"]), "-recip", str(stranger["legal.crt.pem"]))
    assert out.returncode != 0


def test_pdf_signature_is_valid_pades_over_the_whole_file(built, tmp_path) -> None:
    require_tool("pdfsig")
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(built["artefacts"].plain.pdf)
    report = _run("pdfsig", str(pdf)).stdout.decode()
    assert "Signature Type: ETSI.CAdES.detached" in report
    assert "Total document signed" in report
    assert "Signature Validation: Signature is Valid." in report
    assert _run("qpdf", "--check", str(pdf)).returncode == 0


def test_pdf_signature_has_the_pades_baseline_signed_attributes(built, keys, tmp_path) -> None:
    # signing-certificate-v2 is built once per signer (see signing.PadesSignedAttributes):
    # it must still name this certificate, and nothing PAdES forbids may appear.
    require_tool("openssl")
    contents = re.findall(rb"/Contents <([0-9a-fA-F]+)>", built["artefacts"].plain.pdf)[-1]
    cms = tmp_path / "sig.der"
    cms.write_bytes(_der(bytes.fromhex(contents.decode())))
    printed = _run("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", str(cms)).stdout.decode()
    attributes = re.findall(r"object: (\S+) \(", printed.split("signedAttrs:")[1].split("signatureAlgorithm:")[0])
    assert sorted(attributes) == ["contentType", "id-smime-aa-signingCertificateV2", "messageDigest"]
    ess = printed.split("signingCertificateV2")[1]
    certificate = _run("openssl", "x509", "-in", str(keys["signing.crt.pem"]), "-noout", "-fingerprint", "-sha256",
                       "-serial").stdout.decode()
    fingerprint = re.search(r"Fingerprint=(\S+)", certificate).group(1).replace(":", "")
    serial = re.search(r"serial=(\S+)", certificate).group(1)
    assert re.search(r"\[HEX DUMP\]:(\w+)", ess).group(1) == fingerprint, "ESS hash of the signing certificate"
    assert re.search(r"INTEGER\s+:(\w+)", ess).group(1) == serial


def _der(padded: bytes) -> bytes:
    """The DER value at the start of PADDED, without the zero padding after it (not rstrip: a
    signature may end in a zero byte)."""
    if padded[1] < 0x80:
        return padded[:2 + padded[1]]
    size = 1 + (padded[1] & 0x7F)
    return padded[:1 + size + int.from_bytes(padded[2:1 + size], "big")]


def test_pdf_text_holds_every_message(built, tmp_path) -> None:
    require_tool("pdftotext")
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(built["artefacts"].plain.pdf)
    text = re.sub(r"\s+", " ", _run("pdftotext", "-enc", "UTF-8", str(pdf), "-").stdout.decode())
    for message in built["chat"]["messages"][:-1]:
        words = message["data"]["content"]["text"]
        if any("\u0600" <= ch <= "\u06ff" for ch in words):
            continue  # Arabic comes back as presentation forms; see test_render_pdf
        assert re.sub(r"\s+", " ", words) in text


def test_flipped_byte_breaks_the_pdf_signature(built, tmp_path) -> None:
    data = bytearray(built["artefacts"].plain.pdf)
    data[len(data) // 3] ^= 0x01
    pdf = tmp_path / "t.pdf"
    pdf.write_bytes(bytes(data))
    report = _run("pdfsig", str(pdf)).stdout.decode()
    assert "Signature is Valid." not in report


def test_json_record_signature_verifies_and_detects_a_flipped_byte(built, keys, tmp_path) -> None:
    plain = built["artefacts"].plain
    record, signature = tmp_path / "r.json", tmp_path / "r.json.p7s"
    record.write_bytes(plain.record)
    signature.write_bytes(plain.record_signature)
    args = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature), "-content", str(record),
            "-CAfile", str(keys["ca.crt.pem"]), "-out", "/dev/null"]
    ok = _run(*args)
    assert ok.returncode == 0, ok.stderr.decode()
    tampered = bytearray(plain.record)
    tampered[len(tampered) // 2] ^= 0x01
    record.write_bytes(bytes(tampered))
    assert _run(*args).returncode != 0


def test_index_hashes_match_the_objects(built) -> None:
    import hashlib

    entry = built["artefacts"].entry
    for blob in built["artefacts"].blobs:
        described = entry["objects"][blob.name]
        assert described["sha256"] == hashlib.sha256(blob.data).hexdigest()
        assert blob.key.endswith(f"-{described['sha256'][:16]}.{blob.key.split('.', 1)[1]}")
    assert len(entry["recipients"]) == 2


def test_archiver_accepts_certificates_only_as_recipients(keys) -> None:
    with pytest.raises(EnvelopeError, match="encryption.recipients: .*legal.key.pem: holds a private key"):
        load_recipients([str(keys["legal.key.pem"])])

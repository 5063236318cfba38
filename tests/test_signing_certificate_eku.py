"""A signing certificate whose extended key usage leaves out S/MIME signing (codeSigning alone, say, or a
documentSigning-only certificate) made archives that `openssl cms -verify`, the check every bundle README, seal
and record signature documents, refuses ("unsuitable certificate purpose"): valid to pyHanko only. Such a
certificate is refused when the keys load, naming the setting (review "crypto", 2026-11-27)."""

from __future__ import annotations

import subprocess

import pytest
from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID

from archiver.signing import SigningError, load_identity, sign_detached
from certfactory import make
from conftest import require_tool

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # RFC 9336


def _signer(tmp_path, extended):
    ca = make(tmp_path, "ca", usages=("key_cert_sign", "crl_sign"), ca=True)
    return ca, make(tmp_path, "signer", usages=("content_commitment",), ec_key=True, issuer=ca, extended=extended)


def _openssl_verifies(tmp_path, ca, identity) -> subprocess.CompletedProcess:
    (tmp_path / "record.json").write_bytes(b"{}")
    (tmp_path / "record.json.p7s").write_bytes(sign_detached(identity, b"{}"))
    return subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                           str(tmp_path / "record.json.p7s"), "-content", str(tmp_path / "record.json"), "-CAfile",
                           str(ca.cert_path), "-out", "/dev/null"], capture_output=True, text=True)


REFUSED = [[ExtendedKeyUsageOID.CODE_SIGNING], [DOCUMENT_SIGNING],
           [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
           [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]]  # (OpenSSL 3 refuses it alone too)


@pytest.mark.parametrize("extended", REFUSED)
def test_a_signing_certificate_openssl_cms_refuses_for_its_purpose_is_refused(tmp_path, extended) -> None:
    _, signer = _signer(tmp_path, extended)
    with pytest.raises(SigningError) as refused:
        load_identity(str(signer.cert_path), str(signer.key_path))
    assert "signing.certificate" in str(refused.value), str(refused.value)
    assert "extended key usage without emailProtection" in str(refused.value), str(refused.value)


@pytest.mark.parametrize("extended", [None, [ExtendedKeyUsageOID.EMAIL_PROTECTION],
                                      [DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]])
def test_a_signing_certificate_openssl_accepts_is_loaded_and_its_signatures_verify(tmp_path, extended) -> None:
    require_tool("openssl")
    ca, signer = _signer(tmp_path, extended)
    done = _openssl_verifies(tmp_path, ca, load_identity(str(signer.cert_path), str(signer.key_path)))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("extended", REFUSED)
def test_the_refusal_agrees_with_openssl(tmp_path, extended) -> None:
    """The premise: what is refused is what openssl cms -verify refuses (signed here without the check)."""
    require_tool("openssl")
    import archiver.certificates as certificates

    ca, signer = _signer(tmp_path, extended)
    original = certificates._signing_purpose
    try:
        certificates._signing_purpose = lambda cert: []
        identity = load_identity(str(signer.cert_path), str(signer.key_path))
    finally:
        certificates._signing_purpose = original
    done = _openssl_verifies(tmp_path, ca, identity)
    assert done.returncode != 0 and "unsuitable certificate purpose" in done.stderr, done.stderr

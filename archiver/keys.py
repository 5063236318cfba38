"""Development keys: a throw-away CA, a signing certificate and a legal-team recipient.

Production deployments bring their own certificates; these exist so that the
demo and the tests use the same code path with real X.509 material.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

FILES = ("ca.crt.pem", "signing.key.pem", "signing.crt.pem", "legal.key.pem", "legal.crt.pem",
         "bundle-ca.crt.pem", "bundle.key.pem", "bundle.crt.pem")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CT Live archiver (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(subject: str, public_key, issuer: x509.Name, issuer_key, usage: x509.KeyUsage, ca: bool):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _usage(**enabled: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )
    flags.update(enabled)
    return x509.KeyUsage(**flags)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_development_keys(directory: Path) -> dict[str, Path]:
    """Write the files in FILES into DIRECTORY (which must not already hold them)."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = [name for name in FILES if (directory / name).exists()]
    if existing:
        raise FileExistsError(f"{directory}: already holds {', '.join(existing)}; refusing to overwrite keys")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Archiver development CA")
    ca = _certificate("Archiver development CA", ca_key.public_key(), ca_name, ca_key,
                      _usage(key_cert_sign=True, crl_sign=True), ca=True)
    # ECDSA P-256 signs in microseconds; two signatures per chat make this matter.
    signing_key = ec.generate_private_key(ec.SECP256R1())
    signing = _certificate("Transcript signing (development)", signing_key.public_key(), ca_name, ca_key,
                           _usage(digital_signature=True, content_commitment=True), ca=False)
    # CMS EnvelopedData recipients must be RSA (key transport) for cryptography and openssl alike.
    legal_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    legal = _certificate("Legal team recipient (development)", legal_key.public_key(), ca_name, ca_key,
                         _usage(key_encipherment=True, data_encipherment=True), ca=False)
    # The legal team's own identity for case bundles' manifests, from a CA of its own: a bundle signer the
    # archive's CA issued could sign a transcript that passes the bundle README's checks (bundle_signer.py).
    bundle_ca_key = ec.generate_private_key(ec.SECP256R1())
    bundle_ca_name = _name("Bundle signing development CA")
    bundle_ca = _certificate("Bundle signing development CA", bundle_ca_key.public_key(), bundle_ca_name,
                             bundle_ca_key, _usage(key_cert_sign=True, crl_sign=True), ca=True)
    bundle_key = ec.generate_private_key(ec.SECP256R1())
    bundle = _certificate("Case bundle signing (development)", bundle_key.public_key(), bundle_ca_name, bundle_ca_key,
                          _usage(digital_signature=True, content_commitment=True), ca=False)
    pem = serialization.Encoding.PEM
    contents = {
        "ca.crt.pem": (ca.public_bytes(pem), False),
        "signing.key.pem": (_pem_key(signing_key), True),
        "signing.crt.pem": (signing.public_bytes(pem) + ca.public_bytes(pem), False),
        "legal.key.pem": (_pem_key(legal_key), True),
        "legal.crt.pem": (legal.public_bytes(pem), False),
        "bundle-ca.crt.pem": (bundle_ca.public_bytes(pem), False),
        "bundle.key.pem": (_pem_key(bundle_key), True),
        "bundle.crt.pem": (bundle.public_bytes(pem) + bundle_ca.public_bytes(pem), False),
    }
    for name, (data, private) in contents.items():
        _write(directory / name, data, private)
    return {name: directory / name for name in FILES}


def config_lines(paths: dict[str, Path]) -> str:
    """The settings that use PATHS, as TOML (JSON strings are TOML strings: any path stays one)."""
    def text(name: str) -> str:
        return json.dumps(str(paths[name]), ensure_ascii=False)
    return (
        "[signing]\n"
        f'certificate = {text("signing.crt.pem")}\n'
        f'key = {text("signing.key.pem")}\n'
        f'trust_anchors = [{text("ca.crt.pem")}]\n\n'
        "[encryption]\n"
        f'recipients = [{text("legal.crt.pem")}]\n'
    )


def bundle_config_lines(paths: dict[str, Path]) -> str:
    """The bundle signing identity's settings, for the legal team's host that makes bundles (never the archiver's:
    nor does that host need signing.key)."""
    return ("[bundle]\n"
            f'signing_certificate = {json.dumps(str(paths["bundle.crt.pem"]), ensure_ascii=False)}\n'
            f'signing_key = {json.dumps(str(paths["bundle.key.pem"]), ensure_ascii=False)}\n')

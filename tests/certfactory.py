"""Certificates with chosen flaws, built with `cryptography`, for the certificate checks' tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
          "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")


@dataclass(frozen=True)
class Made:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def make(directory: Path, name: str, *, usages: tuple[str, ...] | None = ("key_encipherment",), ca: bool = False,
         rsa_bits: int = 2048, ec_key: bool = False, not_before: dt.datetime | None = None,
         not_after: dt.datetime | None = None, issuer: Made | None = None,
         curve: ec.EllipticCurve | None = None, extended: list[x509.ObjectIdentifier] | None = None) -> Made:
    """A certificate (CN=NAME) and its key, written as NAME.crt.pem and NAME.key.pem in DIRECTORY.

    USAGES None leaves out the keyUsage extension; ISSUER None makes it self-signed; CURVE: an EC key on it;
    EXTENDED: an extendedKeyUsage extension of these purposes (none without).
    """
    now = dt.datetime.now(dt.timezone.utc)
    curve = curve or (ec.SECP256R1() if ec_key else None)
    key = ec.generate_private_key(curve) if curve else rsa.generate_private_key(65537, rsa_bits)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usages is not None:
        builder = builder.add_extension(x509.KeyUsage(**{u: u in usages for u in USAGES}), critical=True)
    if extended is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Made(cert, key, cert_path, key_path)


def ago(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(**delta)


def ahead(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(**delta)

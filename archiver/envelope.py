"""Encryption as CMS EnvelopedData (RFC 5652), AES-256, to the legal team's certificates.

The archiver only ever holds recipients' certificates. Anyone with a recipient
key decrypts with `openssl cms -decrypt -inform DER -binary`, no code of ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from archiver import certificates
from archiver.redact import key_material_refusal


class EnvelopeError(ValueError):
    """A recipient certificate or decryption key is unusable; the message says which and why."""


def load_recipients(paths: list[str], pinned: list[str] | None = None) -> list[x509.Certificate]:
    """The certificates in PATHS, each fit to be a recipient and, if PINNED is given, pinned there."""
    loaded = [(path, cert) for path in paths for cert in _read_certificates(path)]
    for path, cert in loaded:
        problems = certificates.recipient_problems(cert)
        if problems:
            raise EnvelopeError(certificates.refusal("encryption.recipients", path, cert, problems))
    if pinned:
        _check_pins(loaded, pinned)
    if not loaded:
        raise EnvelopeError("encryption.recipients: no recipient certificate given")
    return [cert for _, cert in loaded]


def named_certificates(paths: list[str]) -> list[x509.Certificate]:
    """The certificates the files at PATHS hold, for comparing keys only: a file that cannot be read or holds
    none gives none, other PEM blocks are skipped (a command that encrypts reads them with load_recipients,
    which refuses such a file; one that only signs, `render` say, must not need them)."""
    found = []
    for path in paths:
        try:
            found += x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError):
            continue
    return found


def _read_certificates(path: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:  # given a PEM of certificate and key instead of a path: not quoted
        raise EnvelopeError(key_material_refusal("encryption.recipients", path)
                            or f"encryption.recipients: {path}: cannot read ({exc.strerror})") from None
    refusal = certificates.private_key_refusal(data, f"encryption.recipients: {path}")
    if refusal:  # the archiving process never holds a decryption key
        raise EnvelopeError(refusal)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise EnvelopeError(f"encryption.recipients: {path}: not a PEM certificate ({exc})") from None


def _check_pins(loaded: list[tuple[str, x509.Certificate]], pinned: list[str]) -> None:
    """Exactly the pinned certificates: no swapped-in recipient, no pinned one left out."""
    pins = {certificates.normalise_fingerprint(p) for p in pinned}
    for path, cert in loaded:
        if certificates.fingerprint(cert) not in pins:
            raise EnvelopeError(certificates.refusal(
                "encryption.recipients", path, cert,
                [f"fingerprint {certificates.fingerprint(cert)} is not in encryption.recipient_fingerprints"]))
    missing = sorted(pins - {certificates.fingerprint(cert) for _, cert in loaded})
    if missing:
        raise EnvelopeError(f"encryption.recipient_fingerprints: {missing[0]}: no certificate in "
                            "encryption.recipients has this fingerprint")


class Envelope:
    """Encrypts to a fixed set of recipients."""

    def __init__(self, recipients: list[x509.Certificate]) -> None:
        self.recipients = recipients

    @property
    def recipient_ids(self) -> list[str]:
        """SHA-256 fingerprints of the recipient certificates, as recorded in the index."""
        return [c.fingerprint(hashes.SHA256()).hex() for c in self.recipients]

    def encrypt(self, data: bytes) -> bytes:
        builder = pkcs7.PKCS7EnvelopeBuilder().set_data(data).set_content_encryption_algorithm(algorithms.AES256)
        for cert in self.recipients:
            builder = builder.add_recipient(cert)
        return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def decrypt(data: bytes, certificate_pem: bytes, key_pem: bytes, password: bytes | None = None) -> bytes:
    """Retrieval side only: open an envelope with a recipient's certificate and key."""
    try:
        key = serialization.load_pem_private_key(key_pem, password)
        certs = x509.load_pem_x509_certificates(certificate_pem)
    except (ValueError, TypeError) as exc:
        raise EnvelopeError(f"cannot load the decryption key or certificate ({exc})") from None
    last_error: Exception | None = None
    for cert in certs:
        try:
            return pkcs7.pkcs7_decrypt_der(data, cert, key, [])
        except ValueError as exc:
            last_error = exc
    raise EnvelopeError(f"this key cannot open the envelope ({last_error})")


class RecipientKey:
    """Retrieval side: a legal-team private key and its certificate, loaded once, opening many envelopes."""

    def __init__(self, key: rsa.RSAPrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def load(cls, key_path: str, certificates: list[str], password: bytes | None = None,
             recipients: list[str] | None = None, ask: Callable[[], bytes] | None = None) -> "RecipientKey":
        """The key in KEY_PATH and, among the certificates in that file, CERTIFICATES (--cert) and RECIPIENTS
        (encryption.recipients), the one it belongs to. PASSWORD opens an encrypted key (one that is not
        encrypted loads without it); without one, ASK (a terminal's prompt) is asked for it, if given."""
        named = [*(("--cert", p) for p in certificates), *(("encryption.recipients", p) for p in recipients or [])]
        for setting, path in [("--key", key_path), *named]:  # the key itself, not its path: never quoted
            refusal = key_material_refusal(setting, path)
            if refusal:
                raise EnvelopeError(refusal)
        try:
            pem = Path(key_path).read_bytes()
        except OSError as exc:
            raise EnvelopeError(f"--key {key_path}: cannot read ({exc.strerror})") from None
        key = _private_key(pem, key_path, password, ask)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise EnvelopeError(f"--key {key_path}: archives are encrypted to RSA keys; this is not one")
        for cert in _certificates_in(pem, named):
            if cert.public_key().public_numbers() == key.public_key().public_numbers():
                return cls(key, cert)
        listed = ", ".join(path for _, path in named) or "none"
        raise EnvelopeError(f"--key {key_path}: none of the recipient certificates ({listed}) belongs to this "
                            "key: give its certificate with --cert (a former recipient's, after a rotation of "
                            "encryption.recipients), or it is not a key the archive was encrypted to")

    def decrypt(self, data: bytes) -> bytes:
        try:
            return pkcs7.pkcs7_decrypt_der(data, self.certificate, self.key, [])
        except ValueError as exc:
            mine = asn1_x509.Certificate.load(self.certificate.public_bytes(serialization.Encoding.DER))
            raise EnvelopeError(f"this key cannot open the envelope ({exc}); it is encrypted to "
                                f"{'; '.join(recipients_of(data)) or 'no recipient it names'}, this key's "
                                f"certificate is {_named_as(mine.issuer.human_friendly, mine.serial_number)}"
                                ) from None


def _private_key(pem: bytes, key_path: str, password: bytes | None, ask: Callable[[], bytes] | None) -> Any:
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem  # PKCS#8, PKCS#1
    if encrypted and password is None:
        if ask is None:
            raise EnvelopeError(f"--key {key_path}: the key is encrypted: give its password with "
                                "--key-password-file FILE, or run the command on a terminal to be asked for it")
        password = ask()
    try:
        return serialization.load_pem_private_key(pem, password if encrypted else None)
    except (ValueError, TypeError) as exc:
        if encrypted:  # (cryptography's message names no secret)
            raise EnvelopeError(f"--key {key_path}: the password given does not open it ({exc})") from None
        raise EnvelopeError(f"--key {key_path}: not a usable PEM private key ({exc})") from None


def read_password_file(path: str) -> bytes:
    """The password in PATH (--key-password-file): its first line, without the line break."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise EnvelopeError(f"--key-password-file {path}: cannot read ({exc.strerror})") from None
    password = text.split(b"\n", 1)[0].removesuffix(b"\r")
    if not password:
        raise EnvelopeError(f"--key-password-file {path}: its first line is empty")
    return password


def recipients_of(data: bytes) -> list[str]:
    """The recipients the envelope DATA names (issuer and serial number, as `openssl cms -decrypt` matches a
    certificate): after a rotation, which key opens an archive. Said, never trusted: DATA may be anyone's."""
    try:
        infos = cms.ContentInfo.load(data)["content"]["recipient_infos"]
        named = [info.chosen["rid"].chosen for info in infos]
        return [_named_as(rid["issuer"].human_friendly, rid["serial_number"].native) for rid in named
                if isinstance(rid, cms.IssuerAndSerialNumber)]
    except Exception:  # not an envelope we can read: the decryption error above says why
        return []


def _named_as(issuer: str, serial: int) -> str:
    return certificates.escaped(f"the certificate of serial {serial:x} issued by {issuer}")  # a forged issuer


def _certificates_in(key_pem: bytes, named: list[tuple[str, str]]) -> list[x509.Certificate]:
    """The certificates beside the key in its file, then those of each (setting, path) in NAMED (an unreadable one
    is an error that names it: it was given to be read)."""
    try:
        found = x509.load_pem_x509_certificates(key_pem)
    except ValueError:
        found = []  # a key file without a certificate
    for setting, path in named:
        try:
            found.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except OSError as exc:
            raise EnvelopeError(f"{setting} {path}: cannot read ({exc.strerror})") from None
        except ValueError as exc:
            raise EnvelopeError(f"{setting} {path}: not a PEM certificate file ({exc})") from None
    return found

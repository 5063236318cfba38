"""What makes a signing or recipient certificate fit for evidence, and how long it stays so.

Checked when the keys are loaded (every command, at start-up) and before every
pass of `serve`. Times are compared with this machine's clock with no tolerance:
a signature made before its certificate's notBefore claims a signing time at
which the certificate was not valid, which verifiers reject; a CA whose clock is
a minute ahead costs a minute of waiting, not a bad archive. The validity period,
kept from loading, is checked again before and after every chat is signed
(Validity), and so is the time of each timestamp token.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

WARN_DAYS = 30  # /healthz warns this long before a certificate expires
MIN_RSA_BITS = 2048
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the ECDSA curves pdfsig, openssl and Acrobat all check
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def private_key_refusal(data: bytes, where: str) -> str | None:
    """Why DATA, read from a file meant to hold certificates only (WHERE: the setting and the file), is
    refused if it holds a private key: a recipient's key would let this host decrypt the archive, a CA's
    key sign anything; neither belongs on the archiving host. None when it holds none."""
    if not _PRIVATE_KEY.search(data):
        return None
    return (f"{where}: holds a private key (a PEM PRIVATE KEY block); this file must hold certificates only: "
            "remove the key from it (and from this host)")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def subject(cert: x509.Certificate) -> str:
    """The subject as RFC 4514 text, control characters escaped (it reaches logs and /healthz)."""
    return escaped(cert.subject.rfc4514_string() or "(empty subject)")


def escaped(text: str) -> str:
    """TEXT from a certificate or an envelope (anyone's) with its control characters as \\xNN."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def normalise_fingerprint(text: str) -> str:
    """`AB:CD:…` as `openssl x509 -fingerprint -sha256` prints it, or plain hex, as lower-case hex."""
    return text.replace(":", "").strip().lower()


def is_fingerprint(text: str) -> bool:
    return bool(_SHA256_HEX.fullmatch(normalise_fingerprint(text)))


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _validity(cert: x509.Certificate, at: dt.datetime) -> list[str]:
    if at < cert.not_valid_before_utc:
        return [f"not valid before {_when(cert.not_valid_before_utc)}"]
    if at > cert.not_valid_after_utc:
        return [f"expired on {_when(cert.not_valid_after_utc)}"]
    return []


def _key_strength(cert: x509.Certificate) -> list[str]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return [f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} needed)"]
    # pdfsig (NSS) calls a signature on another curve invalid (secp256k1, brainpool); secp192r1 is weak.
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in EC_CURVES:
        return [f"EC key on curve {key.curve.name} (P-256, P-384 or P-521 needed)"]
    return []


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _needs_usage(cert: x509.Certificate, attribute: str, name: str) -> list[str]:
    # No keyUsage extension means "any use" in RFC 5280; evidence wants the purpose stated.
    usage = _key_usage(cert)
    if usage is None:
        return [f"no key usage extension ({name} needed)"]
    return [] if getattr(usage, attribute) else [f"key usage lacks {name}"]


def is_ca(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return True
    except x509.ExtensionNotFound:
        pass
    usage = _key_usage(cert)
    return usage is not None and usage.key_cert_sign


def signing_problems(cert: x509.Certificate, at: dt.datetime | None = None) -> list[str]:
    """Why CERT must not sign archives; empty when it may.

    nonRepudiation (contentCommitment) is required: pdfsig, openssl and Acrobat accept it
    or digitalSignature, pyHanko's validator by default accepts only nonRepudiation, and
    qualified seal certificates carry only nonRepudiation. A CA's key signs certificates:
    an archive signed with it would be signed by whoever holds the CA, not by this archiver.
    """
    ca = ["is a CA certificate, not a signer's own"] if is_ca(cert) else []
    return [*ca, *_validity(cert, at or now()), *_key_strength(cert),
            *_needs_usage(cert, "content_commitment", "nonRepudiation"), *_signing_purpose(cert)]


def _signing_purpose(cert: x509.Certificate) -> list[str]:
    """An extended key usage, where a certificate has one, must name S/MIME signing (emailProtection) for `openssl
    cms -verify`, the check of every record signature, seal and bundle README, to accept what the key signs
    (OpenSSL 3 refuses anyExtendedKeyUsage alone there too)."""
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []  # no restriction
    if x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION in purposes:
        return []
    return ["has an extended key usage without emailProtection: openssl cms -verify refuses every signature it "
            "makes (unsuitable certificate purpose)"]


def recipient_problems(cert: x509.Certificate, at: dt.datetime | None = None) -> list[str]:
    """Why CERT must not be an encryption recipient; empty when it may."""
    if is_ca(cert):  # a chain pasted into a recipients file would let its CA decrypt
        return ["is a CA certificate, not a recipient's own"]
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        return ["CMS key transport needs an RSA certificate"]  # the only kind cryptography encrypts to
    return [*_validity(cert, at or now()), *_key_strength(cert),
            *_needs_usage(cert, "key_encipherment", "keyEncipherment")]


# The extended key usages OpenSSL knows (x509_purp.c): `openssl ts -verify` refuses a timestamp authority's
# certificate holding any of them but timeStamping; one it does not know beside timeStamping it lets pass.
_OPENSSL_PURPOSES = {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.3", "1.3.6.1.5.5.7.3.4",
                     "1.3.6.1.5.5.7.3.9", "1.3.6.1.5.5.7.3.10", "2.5.29.37.0", "2.16.840.1.113730.4.1",
                     "1.3.6.1.4.1.311.10.3.3"}
_TIME_STAMPING = x509.oid.ExtendedKeyUsageOID.TIME_STAMPING


def timestamping_problems(cert: x509.Certificate) -> list[str]:
    """Why CERT cannot sign RFC 3161 tokens; empty when it may. What `openssl ts -verify` demands (RFC 3161 2.3):
    the extended key usage timeStamping, critical, and no other purpose it knows; a key usage, if any, of
    digitalSignature and/or nonRepudiation only. And a certificate of its own, not a CA's (whose key signs
    certificates): pyHanko's validator accepts a token signed by a trust anchor itself."""
    problems = ["is a CA certificate, not a timestamp authority's own"] if is_ca(cert) else []
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        extended = None
    purposes = {oid.dotted_string for oid in extended.value} if extended else set()
    if (extended is None or not extended.critical or _TIME_STAMPING.dotted_string not in purposes
            or purposes & _OPENSSL_PURPOSES - {_TIME_STAMPING.dotted_string}):
        problems.append("has no extended key usage of timeStamping alone, critical")
    usage = _key_usage(cert)
    others = ("key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")
    if usage is not None and (not (usage.digital_signature or usage.content_commitment)
                              or any(getattr(usage, name) for name in others)):
        problems.append("has a key usage other than digitalSignature and nonRepudiation")
    return problems


def same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_key().public_bytes(der, spki) == b.public_key().public_bytes(der, spki)


def decryption_key_problems(signing: x509.Certificate, recipients: list[x509.Certificate]) -> list[str]:
    """Why SIGNING's key must not be the archiver's: it is a recipient's, so the host holding it to sign
    could decrypt every archive (one dual-use certificate named as signer and as recipient)."""
    shared = [subject(r) for r in recipients if same_key(signing, r)]
    return [f"its key is that of recipient {shared[0]} in encryption.recipients: the archiving host must never "
            "hold a decryption key; sign with a key of its own"] if shared else []


def refusal(setting: str, path: str, cert: x509.Certificate, problems: list[str]) -> str:
    return f"{setting}: {path}: {subject(cert)}: {'; '.join(problems)}"


@dataclass(frozen=True)
class Expiry:
    role: str  # "signing" or "recipient"
    subject: str
    fingerprint: str
    not_after: dt.datetime

    @classmethod
    def of(cls, role: str, cert: x509.Certificate) -> "Expiry":
        return cls(role, subject(cert), fingerprint(cert), cert.not_valid_after_utc)

    def days_left(self, at: dt.datetime | None = None) -> float:
        return (self.not_after - (at or now())).total_seconds() / 86400

    def warning(self, at: dt.datetime | None = None, within_days: float = WARN_DAYS) -> str | None:
        days = self.days_left(at)
        if days < 0:
            return f"warning: {self.role} certificate {self.subject} expired on {_when(self.not_after)}"
        if days < within_days:
            return (f"warning: {self.role} certificate {self.subject} expires in {int(days)} days, "
                    f"on {_when(self.not_after)}")
        return None


class NotValidNow(ValueError):
    """A certificate loaded as valid is outside its validity period now: nothing is signed (or encrypted to it)
    until it is renewed. Not the chat's fault: the archive pass retries the chat, it never quarantines it."""


@dataclass(frozen=True)
class Validity:
    """A certificate's validity period, read once when it is loaded: checked for every chat (a comparison of
    times, not a parse of the certificate), since a certificate can expire while a pass or a render runs."""
    where: str  # the setting (and file) that names the certificate
    subject: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, where: str, cert: x509.Certificate) -> "Validity":
        return cls(where, subject(cert), cert.not_valid_before_utc, cert.not_valid_after_utc)

    def check(self, start: dt.datetime, end: dt.datetime, clock: str = "") -> None:
        """NotValidNow unless all of START..END lies within the validity period (CLOCK: whose clock those
        times are, when not this machine's)."""
        by = f", by {clock}" if clock else ""
        if start < self.not_before:
            raise NotValidNow(f"{self.where}: {self.subject}: not valid before {_exact(self.not_before)} (its "
                              f"notBefore{by}): not used before then")
        if end > self.not_after:
            raise NotValidNow(f"{self.where}: {self.subject}: expired on {_exact(self.not_after)} (its notAfter"
                              f"{by}): renew it")

    def check_timestamp(self, stamped: dt.datetime) -> None:
        """NotValidNow unless STAMPED, the time of a timestamp token over a signature, lies within the validity
        period: a validator checks the signer at that time, by the authority's clock, not this machine's."""
        self.check(stamped, stamped, f"the time of its timestamp, {_exact(stamped)}")


def _exact(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

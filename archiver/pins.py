"""Whose signatures `verify` accepts: this deployment's signing certificates as the verifier's own configuration
names them (`signing.certificate`, and `signing.former_certificates` for those it signed with before a rotation),
and the timestamp authorities `signing.timestamp_trust_anchors` names. Never what the index or a signed document
says of itself: an insider who can write both, holding none of our keys, names their own certificate there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from archiver import certificates
from archiver.config import Config, ConfigError
from archiver.redact import key_material_refusal

SIGNER_SETTINGS = "signing.certificate, signing.former_certificates"
NO_TIMESTAMP_ANCHOR = ("timestamp authorities NOT checked against a trust anchor (set signing.timestamp_trust_anchors): "
                       "each timestamp token is checked over its signature, but its time is the word of whoever "
                       "signed it")


@dataclass(frozen=True)
class Pinned:
    """The certificates a verifier accepts signatures by (SHA-256 hex -> certificate), and the timestamp
    authorities' trust anchors (none: not checked)."""
    signers: dict[str, x509.Certificate]
    timestamp_anchors: tuple[x509.Certificate, ...] = ()

    def signer_problem(self, fingerprint: str, subject: str) -> str | None:
        """Why a signature by the certificate of SHA-256 FINGERPRINT (SUBJECT) is not accepted; None: it is."""
        if fingerprint in self.signers:
            return None
        return (f"it is signed by certificate {subject} (SHA-256 {fingerprint}), which is not one of this "
                f"configuration's signing certificates ({SIGNER_SETTINGS}"
                + (": none is set)" if not self.signers else ")"))

    def described(self) -> list[str]:
        return [f"{certificates.subject(c)} (SHA-256 {fp})" for fp, c in self.signers.items()]


def configured_pins(config: Config) -> Pinned:
    """CONFIG's signing certificates and timestamp trust anchors; ConfigError naming the setting if one is unfit."""
    signers = [cert for _, cert in transcript_signers(config)]
    anchors = tuple(c for path in config["signing.timestamp_trust_anchors"]
                    for c in _certificates("signing.timestamp_trust_anchors", path))
    return Pinned({certificates.fingerprint(c): c for c in signers}, anchors)


def transcript_signers(config: Config) -> list[tuple[str, x509.Certificate]]:
    """(setting, certificate) of each signing certificate CONFIG names: the current one, then the former ones."""
    return [*(("signing.pkcs12" if config["signing.pkcs12"] and not config["signing.certificate"]
               else "signing.certificate", c) for c in _current(config)),
            *(("signing.former_certificates", c) for path in config["signing.former_certificates"]
              for c in _certificates("signing.former_certificates", path, signer=True))]


def _current(config: Config) -> list[x509.Certificate]:
    """The configured signing certificate (the leaf of signing.certificate, or signing.pkcs12's); none if unset."""
    if config["signing.certificate"]:
        return _certificates("signing.certificate", config["signing.certificate"], key_allowed=True)[:1]
    if not config["signing.pkcs12"]:
        return []
    path = config["signing.pkcs12"]
    password = config["signing.key_password"].encode() or None
    try:
        _, cert, _ = pkcs12.load_key_and_certificates(_read("signing.pkcs12", path), password)
    except ValueError as exc:
        raise ConfigError(f"signing.pkcs12 {path}: cannot open ({exc}); check signing.key_password") from None
    if cert is None:
        raise ConfigError(f"signing.pkcs12 {path}: holds no certificate")
    return [cert]


def _certificates(setting: str, path: str, signer: bool = False, key_allowed: bool = False) -> list[x509.Certificate]:
    data = _read(setting, path)
    refusal = None if key_allowed else certificates.private_key_refusal(data, f"{setting} {path}")
    if refusal:
        raise ConfigError(refusal)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{setting} {path}: not a PEM certificate ({exc})") from None
    if signer:  # the chain a certificate file carries after its leaf is no signer: its CA's key signs certificates
        found = [cert for cert in found if not certificates.is_ca(cert)]
        if not found:
            raise ConfigError(f"{setting} {path}: holds only CA certificates, no signing certificate of this "
                              "deployment's")
    return found


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:  # a PEM given instead of a path: not quoted
        raise ConfigError(key_material_refusal(setting, path) or f"{setting} {path}: cannot read ({exc.strerror})"
                          ) from None

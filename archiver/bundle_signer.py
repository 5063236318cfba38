"""Who signs a case bundle's manifest: the legal team's own identity (`bundle.*`), never the archive's transcript
signing key (`signing.*`). The host that makes bundles holds the legal team's decryption key (--key); with the key
that signs transcripts beside it, anyone there could sign a forged transcript and a manifest over it that pass
every step of the bundle's README (review "court" C16). Without a bundle identity the manifest is not signed,
and the bundle says so.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from archiver import certificates
from archiver.config import Config
from archiver.pins import transcript_signers
from archiver.signing import BUNDLE_SETTINGS, SigningError, SigningIdentity, load_identity

BUNDLE_KEYS = "bundle.signing_certificate and bundle.signing_key, or bundle.signing_pkcs12"
NOT_SIGNED = (f"no bundle signing identity was configured where it was made ({BUNDLE_KEYS}); the archive's "
              "transcript signing key (signing.key, signing.pkcs12) never signs a bundle")
TRANSCRIPT_KEY_HERE = (
    "the transcript signing key ({setting}) is configured on this host, which decrypts (retrieve --bundle --key): "
    "whoever holds both can sign a forged transcript that passes every step of a bundle's README. It does not "
    "sign bundles ({keys} do); remove it from this host's configuration (signing.certificate is enough here: "
    "retrieve pins signatures to it). docs/retrieval.md, \"Who signs a bundle\"")


def configured_bundle_signer(config: Config) -> SigningIdentity | None:
    """The bundle identity CONFIG names (None: none), checked; SigningError (exit 2) naming the settings if it is
    unusable, or is (or has the key of) a transcript signing certificate (signing.certificate, signing.pkcs12,
    signing.former_certificates)."""
    cert, key, p12 = (config[f"bundle.{name}"] for name in ("signing_certificate", "signing_key", "signing_pkcs12"))
    if not (cert or key or p12):
        return None
    if not p12 and not (cert and key):
        missing = "bundle.signing_key" if cert else "bundle.signing_certificate"
        raise SigningError(f"{missing}: required with {'bundle.signing_certificate' if cert else 'bundle.signing_key'}"
                           f" (a bundle signing identity is {BUNDLE_KEYS})")
    identity = load_identity(cert, key, p12, config["bundle.key_password"], settings=BUNDLE_SETTINGS)
    setting = "bundle.signing_pkcs12" if p12 else "bundle.signing_certificate"
    for named_in, signer in transcript_signers(config):
        if certificates.same_key(identity.certificate, signer):
            what = ("is the transcript signing certificate" if identity.fingerprint == certificates.fingerprint(signer)
                    else "has the key of the transcript signing certificate")
            raise SigningError(f"{setting}: {config[setting]}: {certificates.subject(identity.certificate)}: {what} "
                               f"{certificates.subject(signer)} (SHA-256 {certificates.fingerprint(signer)}) named in "
                               f"{named_in}: a bundle's manifest is signed by an identity of its own ({BUNDLE_KEYS}), "
                               "never by the key that signs transcripts")
    return identity


def transcript_key_configured(config: Config) -> str:
    """The warning for a bundling host whose configuration names the transcript signing key ("" if it does not)."""
    setting = "signing.pkcs12" if config["signing.pkcs12"] else "signing.key" if config["signing.key"] else ""
    return TRANSCRIPT_KEY_HERE.format(setting=setting, keys=BUNDLE_KEYS) if setting else ""


def issued_by_transcript_anchor(identity: SigningIdentity, trust: tuple[x509.Certificate, ...]) -> str:
    """The warning for a bundle signer that chains to a trust anchor the transcripts are checked against ("" if
    none): README steps 4 and 5 accept any signer that CA issued, so its key could sign a transcript too."""
    for anchor in trust:
        for cert in (identity.certificate, *identity.chain):
            if cert == anchor or _issued(cert, anchor):
                return (f"the bundle signer {certificates.subject(identity.certificate)} chains to "
                        f"{certificates.subject(anchor)}, a trust anchor of the transcripts (--ca, "
                        "signing.trust_anchors): README steps 4 and 5 accept a transcript signed by any certificate "
                        "it issued, so the bundle signer's key could sign one; give the bundle signer a CA of its own")
    return ""


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True

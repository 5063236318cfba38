"""Who signs a case bundle's manifest: the legal team's own identity (`bundle.*`), never the archive's transcript
signing key (`signing.*`). The host that makes bundles holds the legal team's decryption key (--key); with the key
that signs transcripts beside it, anyone there could sign a forged transcript and a manifest over it that pass
every step of the bundle's README (review "court" C16). Nor by a certificate the transcript signer's CA issued:
README steps 4 and 5 accept any certificate of that CA (review today3 #3). Without a bundle identity the
manifest is not signed, and the bundle says so.
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
NOT_SIGNED_WARNING = (f"the manifest (SHA256SUMS) is NOT signed: no bundle signing identity is configured (set "
                      f"{BUNDLE_KEYS}: the legal team's own, never the transcript signing key); compare its SHA-256 "
                      "above with the audit log's")
TRANSCRIPT_KEY_HERE = (
    "the transcript signing key ({setting}) is configured on this host, which decrypts (retrieve --bundle --key): "
    "whoever holds both can sign a forged transcript that passes every step of a bundle's README. It does not "
    "sign bundles ({keys} do); remove it from this host's configuration (signing.certificate is enough here: "
    "retrieve pins signatures to it). docs/retrieval.md, \"Who signs a bundle\"")


def configured_bundle_signer(config: Config, trust: tuple[x509.Certificate, ...] = ()) -> SigningIdentity | None:
    """The bundle identity CONFIG names (None: none), checked; SigningError (exit 2) naming the settings if it is
    unusable, is (or has the key of) a transcript signing certificate (signing.certificate, signing.pkcs12,
    signing.former_certificates) or the certificate the archive index names as the signer of an entry, was issued
    by a transcript signer's issuer, or chains to TRUST (the transcripts' trust anchors)."""
    cert, key, p12 = (config[f"bundle.{name}"] for name in ("signing_certificate", "signing_key", "signing_pkcs12"))
    if not (cert or key or p12):
        return None
    if not p12 and not (cert and key):
        missing = "bundle.signing_key" if cert else "bundle.signing_certificate"
        raise SigningError(f"{missing}: required with {'bundle.signing_certificate' if cert else 'bundle.signing_key'}"
                           f" (a bundle signing identity is {BUNDLE_KEYS})")
    identity = load_identity(cert, key, p12, config["bundle.key_password"], settings=BUNDLE_SETTINGS)
    setting = "bundle.signing_pkcs12" if p12 else "bundle.signing_certificate"
    named = f"{setting}: {config[setting]}: {certificates.subject(identity.certificate)}"
    for named_in, signer in transcript_signers(config):
        _refuse_transcript_signer(identity, signer, named,
                                  f"the transcript signing certificate {certificate_said(signer)} named in {named_in}")
    signed = _entry_signed_by(config, identity.fingerprint)
    if signed:
        raise SigningError(f"{named}: is the certificate the archive index names as the signer of {signed} "
                           f"(signing_certificate_sha256): {OWN_IDENTITY}")
    anchored = _chains_to_transcript_anchor(identity, trust)
    if anchored:
        raise SigningError(f"{named}: {anchored}")
    return identity


def refuse_room_signer(identity: SigningIdentity, room_certificates: list[x509.Certificate], room: str) -> None:
    """SigningError if the bundle IDENTITY is, has the key of, or shares the issuer of ROOM's signer (the first of
    ROOM_CERTIFICATES, as its signatures verified): checked on each room as it is bundled (a host may name no
    signing.certificate)."""
    if room_certificates:
        signer = room_certificates[0]
        _refuse_transcript_signer(identity, signer, f"the bundle signer {certificates.subject(identity.certificate)}"
                                  f" ({BUNDLE_SETTINGS_SAID})",
                                  f"the signer certificate of {room}, {certificate_said(signer)}")


BUNDLE_SETTINGS_SAID = "bundle.signing_certificate, bundle.signing_pkcs12"
OWN_IDENTITY = (f"a bundle's manifest is signed by an identity of its own ({BUNDLE_KEYS}), never by the key that "
                "signs transcripts")
OWN_CA = ("README steps 4 and 5 accept a transcript signed by any certificate that CA issued, so the bundle "
          "signer's key could sign one; give the bundle signer a CA of its own (as `archiver keys init` does: "
          "docs/retrieval.md, \"Who signs a bundle\")")


def certificate_said(cert: x509.Certificate) -> str:
    """CERT as messages name it: its subject (control characters escaped) and SHA-256."""
    return f"{certificates.subject(cert)} (SHA-256 {certificates.fingerprint(cert)})"


def _refuse_transcript_signer(identity: SigningIdentity, signer: x509.Certificate, named: str, signer_said: str
                              ) -> None:
    """SigningError if IDENTITY (NAMED in the message) is, has the key of, or was issued by the issuer of the
    transcript SIGNER (SIGNER_SAID)."""
    if certificates.same_key(identity.certificate, signer):
        what = "is" if identity.fingerprint == certificates.fingerprint(signer) else "has the key of"
        raise SigningError(f"{named}: {what} {signer_said}: {OWN_IDENTITY}")
    if _same_issuer(identity.certificate, signer):
        raise SigningError(f"{named}: was issued by {identity.certificate.issuer.rfc4514_string()}, the issuer of "
                           f"{signer_said}: {OWN_CA}")


def _same_issuer(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Whether A and B name one issuer: the same issuer name, and the same authority key identifier where both
    have one."""
    if a.issuer != b.issuer:
        return False
    keys = [_authority_key(c) for c in (a, b)]
    return None in keys or keys[0] == keys[1]


def _authority_key(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _entry_signed_by(config: Config, fingerprint: str) -> str:
    """"ROOM vN" of an index entry whose signer is the certificate of SHA-256 FINGERPRINT ("" if none)."""
    from archiver.index import index_database

    entry = index_database(config)[config["index.entries"]].find_one(
        {"signing_certificate_sha256": {"$eq": fingerprint}}, {"room": 1, "version": 1, "_id": 0})
    return f"{entry.get('room')} v{entry.get('version')}" if entry else ""


def transcript_key_configured(config: Config) -> str:
    """The warning for a bundling host whose configuration names the transcript signing key ("" if it does not)."""
    setting = "signing.pkcs12" if config["signing.pkcs12"] else "signing.key" if config["signing.key"] else ""
    return TRANSCRIPT_KEY_HERE.format(setting=setting, keys=BUNDLE_KEYS) if setting else ""


def _chains_to_transcript_anchor(identity: SigningIdentity, trust: tuple[x509.Certificate, ...]) -> str:
    """Why a bundle signer that chains to a trust anchor the transcripts are checked against is refused ("" if
    it does not): README steps 4 and 5 accept any signer that CA issued, so its key could sign a transcript too."""
    for anchor in trust:
        for cert in (identity.certificate, *identity.chain):
            if cert == anchor or _issued(cert, anchor):
                return (f"the bundle signer {certificates.subject(identity.certificate)} chains to "
                        f"{certificates.subject(anchor)}, a trust anchor of the transcripts (--ca, "
                        f"signing.trust_anchors): {OWN_CA}")
    return ""


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True

"""Signatures: PAdES on the PDF (pyHanko), detached CMS on the JSON record (cryptography).

Both use the same certificate. Keys are loaded once per process; `SigningIdentity`
is the seam where a PKCS#11 token would plug in (pyHanko has a PKCS#11 signer).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import multiprocessing
import os
import stat
from dataclasses import dataclass
from functools import cached_property, partial
from io import BytesIO
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.attributes import CMSAttributeProvider
from pyhanko.sign.general import as_signing_certificate_v2
from pyhanko.sign.signers.pdf_cms import SignedAttributeProviderSpec
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.util import get_pyca_cryptography_hash, process_pss_params

from archiver import certificates
from archiver import timestamps as archive_timestamps
from archiver.redact import key_material_refusal
from archiver.cms import DIGEST_ALGORITHM, PdfCms
from archiver.logs import event
from archiver.render.signature_field import Placeholder, SignatureSlot

SIGNATURE_FIELD = "ArchiveSignature"
REASON = "Archived transcript"


class SigningError(ValueError):
    """The signing key or certificate cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class SigningIdentity:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    setting: str = "signing.certificate"  # the setting and file that name the certificate, for refusals

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate, hex: read twice for every chat (its archive block and index entry)."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    @cached_property
    def validity(self) -> certificates.Validity:
        """Read once, compared with the clock for every detached signature: a run's report, a seal or a bundle is
        signed at the end of work that began while the certificate was valid."""
        return certificates.Validity.of(self.setting, self.certificate)


_WARNED: set[tuple[str, int]] = set()  # (path, mode) of key files already warned of by this process


def _warn_if_readable_by_others(setting: str, path: str) -> None:
    """A private key file that the file's group or everyone may read: warned (log event, once per process, from
    the process the operator started, not its workers), never refused: containers often mount secrets 0644."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    others = mode & (stat.S_IRGRP | stat.S_IROTH)
    if others and (path, mode) not in _WARNED and multiprocessing.parent_process() is None:
        _WARNED.add((path, mode))
        event("key_file_readable_by_others", logging.WARNING, setting=setting, path=path, mode=f"{mode:04o}")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:  # a certificate file's setting given a PEM of certificate and key: not quoted
        raise SigningError(key_material_refusal(what, path) or f"{what} {path}: cannot read ({exc.strerror})") from None


def _chain_certificates(path: str) -> list[x509.Certificate]:
    """The certificates of a signing.chain file: certificates only (a CA's key has no business on this host)."""
    data = _read(path, "signing.chain")
    refusal = certificates.private_key_refusal(data, f"signing.chain: {path}")
    if refusal:
        raise SigningError(refusal)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SigningError(f"signing.chain {path}: not a PEM certificate ({exc})") from None


class Settings(NamedTuple):
    """The settings that name an identity's files, said in every refusal."""
    certificate: str = "signing.certificate"
    key: str = "signing.key"
    pkcs12: str = "signing.pkcs12"
    password: str = "signing.key_password"


BUNDLE_SETTINGS = Settings("bundle.signing_certificate", "bundle.signing_key", "bundle.signing_pkcs12",
                           "bundle.key_password")


def load_identity(
    certificate: str = "", key: str = "", pkcs12_path: str = "", password: str = "", chain: list[str] | None = None,
    settings: Settings = Settings(),
) -> SigningIdentity:
    """Load from PEM files (certificate file may hold the chain after the leaf) or PKCS#12; SETTINGS name them."""
    secret = password.encode() if password else None
    for setting, path in ((settings.key, key), (settings.pkcs12, pkcs12_path)):
        refusal = key_material_refusal(setting, path)  # the key itself, not its path: never quoted
        if refusal:
            raise SigningError(refusal)
    extra = [c for path in chain or [] for c in _chain_certificates(path)]
    if pkcs12_path:
        data = _read(pkcs12_path, settings.pkcs12)
        _warn_if_readable_by_others(settings.pkcs12, pkcs12_path)
        try:
            loaded_key, cert, more = pkcs12.load_key_and_certificates(data, secret)
        except ValueError as exc:
            raise SigningError(f"{settings.pkcs12} {pkcs12_path}: cannot open ({exc}); check {settings.password}"
                               ) from None
        if cert is None or loaded_key is None:
            raise SigningError(f"{settings.pkcs12} {pkcs12_path}: holds no key and certificate pair")
        _check(cert, settings.pkcs12, pkcs12_path)
        return _identity(loaded_key, cert, [*more, *extra], pkcs12_path, f"{settings.pkcs12}: {pkcs12_path}")
    data = _read(certificate, settings.certificate)  # a missing file is said as such, not as "not a PEM certificate"
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SigningError(f"{settings.certificate} {certificate}: not a PEM certificate ({exc})") from None
    _check(certs[0], settings.certificate, certificate)
    data = _read(key, settings.key)
    _warn_if_readable_by_others(settings.key, key)
    try:
        loaded_key = serialization.load_pem_private_key(data, secret)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{settings.key} {key}: cannot load ({exc}); check {settings.password}") from None
    return _identity(loaded_key, certs[0], [*certs[1:], *extra], key, f"{settings.certificate}: {certificate}")


def _check(cert: x509.Certificate, setting: str, path: str) -> None:
    problems = certificates.signing_problems(cert)
    if problems:
        raise SigningError(certificates.refusal(setting, path, cert, problems))


def _identity(key, cert: x509.Certificate, chain: list[x509.Certificate], where: str, setting: str
              ) -> SigningIdentity:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise SigningError(f"{where}: key type {type(key).__name__} is not supported (use RSA or ECDSA)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise SigningError(f"{where}: the key does not belong to certificate {cert.subject.rfc4514_string()}")
    return SigningIdentity(key, cert, tuple(chain), setting)


class Signer:
    """Signs PDFs and JSON records with one identity; build once, use for many chats."""

    def __init__(self, identity: SigningIdentity, timestamp_url: str = "", max_skew_seconds: float = 300.0,
                 timestamper: timestamps.TimeStamper | None = None) -> None:
        """TIMESTAMPER (or the checked client of the authority at TIMESTAMP_URL, archiver.timestamps)
        makes the PDF signatures PAdES B-T."""
        self.identity = identity
        der = serialization.Encoding.DER
        certificate = asn1_x509.Certificate.load(identity.certificate.public_bytes(der))
        self._pyhanko = LoadedKeySigner(
            identity.key,
            signing_cert=certificate,
            signing_key=asn1_keys.PrivateKeyInfo.load(
                identity.key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            ),
            cert_registry=SimpleCertificateStore.from_certs(
                [asn1_x509.Certificate.load(c.public_bytes(der)) for c in identity.chain]
            ),
        )
        # Every signed attribute comes from here: pyHanko then ignores CAdES options given to
        # PdfSignatureMetadata (commitment type, signature policy); add such attributes here.
        self._pyhanko.signed_attr_prov_spec = PadesSignedAttributes(certificate)
        self._timestamper = (timestamper if timestamper is not None
                             else archive_timestamps.timestamper(timestamp_url, max_skew_seconds))
        self._pdf_signer = signers.PdfSigner(
            signers.PdfSignatureMetadata(
                field_name=SIGNATURE_FIELD,
                subfilter=fields.SigSeedSubFilter.PADES,
                md_algorithm="sha256",
                reason=REASON,
            ),
            signer=self._pyhanko,
            timestamper=self._timestamper,
        )
        # The CMS pyHanko's signer would make, from the constant parts of one it made (archiver.cms).
        self._cms = PdfCms(self._pyhanko, self._pyhanko.raw_signer(DIGEST_ALGORITHM), self._timestamper)
        # Reserving room up front spares pyHanko a dry-run CMS build per document.
        cert_bytes = sum(len(c.public_bytes(der)) for c in (identity.certificate, *identity.chain))
        self._reserved = 2 * cert_bytes + (16384 if self._timestamper else 4096)

    def slot(self) -> SignatureSlot:
        """The signature field a PDF is rendered with, for sign_rendered to fill in."""
        return SignatureSlot(SIGNATURE_FIELD, REASON, self._reserved, dt.datetime.now(dt.timezone.utc))

    def sign_rendered(self, pdf: bytes, placeholder: Placeholder) -> bytes:
        """PDF, rendered with a slot(), signed in its original revision: PAdES B-B (B-T with a timestamper)
        over the whole file, its two byte ranges hashed and the CMS patched into the placeholder."""
        data = bytearray(pdf)
        data[placeholder.byte_range:placeholder.byte_range + len(placeholder.ranges(len(data)))] = \
            placeholder.ranges(len(data))
        with memoryview(data) as view:
            digest = hashlib.sha256(view[:placeholder.contents])
            digest.update(view[placeholder.contents_end:])
        signed = self._cms(digest.digest()).hex().encode()
        room = placeholder.contents_end - placeholder.contents - 2
        if len(signed) > room:  # reserved from the certificates' size: a timestamp token larger than allowed for
            needs = f"the signature needs {len(signed) // 2:,} bytes, {room // 2:,} were reserved"
            if self._timestamper is not None:  # the authority's answer, not the chat: retried, never quarantined
                url = getattr(self._timestamper, "url", "")
                raise archive_timestamps.TimestampError(f"timestamp authority {url}: its token is larger than "
                                                        f"allowed for ({needs})")
            raise SigningError(needs)
        data[placeholder.contents + 1:placeholder.contents + 1 + len(signed)] = signed
        return bytes(data)

    def sign_pdf(self, pdf: bytes) -> bytes:
        """A PAdES B-B (B-T with a timestamp authority) signature covering the whole file of any PDF,
        as an incremental update (a PDF we render is signed with slot() and sign_rendered instead)."""
        writer = IncrementalPdfFileWriter(BytesIO(pdf), strict=False)
        out = self._pdf_signer.sign_pdf(writer, bytes_reserved=self._reserved)
        return out.getvalue()

    def sign_detached(self, data: bytes) -> bytes:
        return sign_detached(self.identity, data)


def sign_detached(identity: SigningIdentity, data: bytes) -> bytes:
    """A detached CMS SignedData (DER) over DATA, verifiable with `openssl cms -verify -binary`; NotValidNow
    (naming the certificate's setting and its notAfter) instead of one whose signingTime is outside the
    certificate's validity."""
    started = certificates.now()
    identity.validity.check(started, started)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(data).add_signer(identity.certificate, identity.key,
                                                                      hashes.SHA256())
    for cert in identity.chain:
        builder = builder.add_certificate(cert)
    signature = builder.sign(serialization.Encoding.DER,
                             [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary])
    identity.validity.check(started, certificates.now())  # one finished as the certificate expired is dropped
    return signature


class LoadedKeySigner(signers.SimpleSigner):
    """pyHanko's SimpleSigner, signing with the key object loaded once instead of parsing it from DER
    for every signature (121 of the 127 ms an RSA-3072 signature cost)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, **options) -> None:
        super().__init__(**options)
        self._key = key

    def sign_raw(self, data: bytes, digest_algorithm: str) -> bytes:
        return self.raw_signer(digest_algorithm)(data)

    def raw_signer(self, digest_algorithm: str) -> Callable[[bytes], bytes]:
        """sign_raw for one digest algorithm, its signature mechanism resolved once."""
        mechanism = self.get_signature_mechanism_for_digest(digest_algorithm)
        name, key = mechanism.signature_algo, self._key
        if isinstance(key, ec.EllipticCurvePrivateKey) and name == "ecdsa":
            return partial(key.sign, signature_algorithm=ec.ECDSA(get_pyca_cryptography_hash(digest_algorithm)))
        if isinstance(key, rsa.RSAPrivateKey) and name == "rsassa_pkcs1v15":
            return partial(key.sign, padding=PKCS1v15(), algorithm=get_pyca_cryptography_hash(digest_algorithm))
        if isinstance(key, rsa.RSAPrivateKey) and name == "rsassa_pss":
            padding, algorithm = process_pss_params(mechanism["parameters"])
            return partial(key.sign, padding=padding, algorithm=algorithm)
        raise SigningError(f"signature mechanism {name} does not fit a {type(key).__name__}")


class PadesSignedAttributes(SignedAttributeProviderSpec):
    """The signed attributes pyHanko gives a PAdES signature, with signing-certificate-v2 built once.

    PAdES baseline signed attributes are content-type and message-digest (pyHanko
    adds those itself) and signing-certificate-v2, which depends only on the
    certificate. Building that one in asn1crypto was nine tenths of the cost of
    signing a PDF; it is now built once per signer and reused already encoded.
    """

    def __init__(self, certificate: asn1_x509.Certificate) -> None:
        value = tsp.SigningCertificateV2.load(as_signing_certificate_v2(certificate).dump())
        self._provider = _Constant("signing_certificate_v2", value)

    def signed_attr_providers(self, data_digest: bytes, digest_algorithm: str) -> Iterator[CMSAttributeProvider]:
        yield self._provider


class _Constant(CMSAttributeProvider):
    def __init__(self, attribute_type: str, value: tsp.SigningCertificateV2) -> None:
        self.attribute_type = attribute_type
        self.value = value

    async def build_attr_value(self, dry_run: bool = False) -> tsp.SigningCertificateV2:
        return self.value


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

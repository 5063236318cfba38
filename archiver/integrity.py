"""Proof of integrity: stored objects against the index, and (with a key) content against both.

`check_stored` needs no key: every object present with the recorded size and
SHA-256. `check_content` needs a recipient key: it decrypts and checks the
plaintext hashes, the PDF's PAdES signature (pyHanko's validator), the record's
detached CMS signature, and that the record and the PDF belong to the entry's
room and version, so an object swapped with another room's is named even when
its hashes were copied into the index too. `verify_archive` walks any number of
entries with a cursor, and the store's listing as a stream (bounded memory).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from io import BytesIO
from typing import Any, Callable, Iterable, Iterator

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms
from pyhanko_certvalidator import ValidationContext

from archiver.artifacts import OBJECTS
from archiver.envelope import EnvelopeError, RecipientKey
from archiver.index import OBJECT_KEY_FIELDS
from archiver.store import ObjectMissing, ObjectStore, StoreError


@dataclass(frozen=True)
class Check:
    check: str  # what was checked, in words a person reads
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Problem:
    room: str
    version: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.room} v{self.version}" if self.version is not None else self.room
        return f"{where}: {self.problem}"


@dataclass
class Opened:
    """An entry's objects after checking: ciphertexts, plaintexts, checks, signer certificates."""
    entry: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    sealed: dict[str, bytes] = field(default_factory=dict)
    plain: dict[str, bytes] = field(default_factory=dict)
    certificates: list[x509.Certificate] = field(default_factory=list)  # signer first

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        return [f"{c.check}: {c.detail}" if c.detail else c.check for c in self.checks if not c.ok]


def check_stored(entry: dict[str, Any], store: ObjectStore) -> Opened:
    """Every object of ENTRY fetched and checked against its recorded size and SHA-256."""
    opened = Opened(entry)
    if entry.get("status") != "archived":
        opened.checks.append(Check("the entry is archived", False, f"status is {entry.get('status')!r}"))
    objects = entry.get("objects") or {}
    for name in OBJECTS:
        obj = objects.get(name)
        if not obj:
            opened.checks.append(Check(f"{name}: listed in the index", False, "missing from the entry"))
            continue
        opened.checks.append(_fetch(opened, name, obj, store))
    return opened


def _fetch(opened: Opened, name: str, obj: dict[str, Any], store: ObjectStore) -> Check:
    what = f"{name}: stored object {obj['key']} has the recorded size and SHA-256"
    try:
        data = store.get(obj["key"], obj.get("version_id", ""))
    except ObjectMissing:
        return Check(what, False, "the object is missing from the store")
    except StoreError as exc:
        return Check(what, False, f"cannot read it ({exc})")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != obj["size"] or digest != obj["sha256"]:
        return Check(what, False, f"altered: size {len(data)} (index {obj['size']}), SHA-256 {digest} (index {obj['sha256']})")
    opened.sealed[name] = data
    return Check(what, True, f"{len(data)} bytes, SHA-256 {digest}")


def check_content(opened: Opened, key: RecipientKey, trust: list[x509.Certificate] | None = None) -> Opened:
    """Decrypt what `check_stored` fetched and check hashes, both signatures and the record."""
    entry = opened.entry
    for name, sealed in opened.sealed.items():
        opened.checks.append(_decrypt(opened, name, sealed, entry["objects"][name], key))
    if "pdf" in opened.plain:
        opened.checks.extend(_pdf_checks(opened, trust))
    if "record" in opened.plain and "record_signature" in opened.plain:
        opened.checks.extend(_record_signature_checks(opened, trust))
    if "record" in opened.plain:
        opened.checks.extend(_record_checks(opened.plain["record"], entry))
    return opened


def _decrypt(opened: Opened, name: str, sealed: bytes, obj: dict[str, Any], key: RecipientKey) -> Check:
    what = f"{name}: decrypts with the legal team's key to the recorded plaintext (size, SHA-256)"
    plain = key.decrypt(sealed)  # EnvelopeError: the key is wrong, reported as such by the caller
    digest = hashlib.sha256(plain).hexdigest()
    if len(plain) != obj.get("plaintext_size") or digest != obj.get("plaintext_sha256"):
        return Check(what, False, f"plaintext SHA-256 {digest} differs from the index ({obj.get('plaintext_sha256')})")
    opened.plain[name] = plain
    return Check(what, True, f"SHA-256 {digest}")


def _context(trust: list[x509.Certificate] | None) -> ValidationContext:
    roots = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in trust or []]
    return ValidationContext(trust_roots=roots, allow_fetching=False)


def _pdf_checks(opened: Opened, trust: list[x509.Certificate] | None) -> list[Check]:
    entry = opened.entry
    try:
        reader = PdfFileReader(BytesIO(opened.plain["pdf"]))
        signatures = reader.embedded_signatures
        title = str(reader.trailer["/Info"].get("/Title", ""))
    except Exception as exc:  # a damaged PDF: named, not a crash
        return [Check("pdf: readable PDF", False, f"{type(exc).__name__}: {exc}")]
    if len(signatures) != 1:
        return [Check("pdf: carries exactly one signature", False, f"found {len(signatures)}")]
    status = validate_pdf_signature(signatures[0], _context(trust))
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    opened.certificates = _certificates(signer, signatures[0].signed_data)
    checks = [
        Check("pdf: PAdES signature intact and cryptographically valid (pyHanko)", status.intact and status.valid,
              f"coverage {status.coverage.name}, signed by {signer.subject.rfc4514_string()}"),
        Check("pdf: the signature covers the whole file", status.coverage.name == "ENTIRE_FILE", status.coverage.name),
        _signer_check("pdf", signer, entry),
        Check("pdf: its title names the entry's room", title == entry["room"], f"title {title!r}"),
    ]
    if trust:
        checks.append(Check("pdf: signer chains to the given CA", bool(status.trusted), status.summary()))
    return checks


def _record_signature_checks(opened: Opened, trust: list[x509.Certificate] | None) -> list[Check]:
    try:
        signed = cms.ContentInfo.load(opened.plain["record_signature"])["content"]
        status = asyncio.run(async_validate_detached_cms(opened.plain["record"], signed, _context(trust)))
    except Exception as exc:
        return [Check("record: detached CMS signature readable", False, f"{type(exc).__name__}: {exc}")]
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    checks = [Check("record: detached CMS signature intact and valid (pyHanko)", status.intact and status.valid,
                    f"signed by {signer.subject.rfc4514_string()}"),
              _signer_check("record", signer, opened.entry)]
    if trust:
        checks.append(Check("record: signer chains to the given CA", bool(status.trusted), status.summary()))
    return checks


def _signer_check(name: str, signer: x509.Certificate, entry: dict[str, Any]) -> Check:
    fingerprint = signer.fingerprint(hashes.SHA256()).hex()
    return Check(f"{name}: signed with the certificate the index records", fingerprint == entry.get(
        "signing_certificate_sha256"), f"SHA-256 {fingerprint}")


def _record_checks(record: bytes, entry: dict[str, Any]) -> list[Check]:
    try:
        doc = json.loads(record)
    except ValueError as exc:
        return [Check("record: valid JSON", False, str(exc))]
    same = {k: (doc.get(k), entry.get(k)) for k in ("room", "version", "source_sha256")}
    wrong = {k: v for k, v in same.items() if v[0] != v[1]}
    return [Check("record: its room, version and source SHA-256 are the entry's", not wrong,
                  "; ".join(f"{k} {a!r} (index {b!r})" for k, (a, b) in wrong.items()))]


def _certificates(signer: x509.Certificate, signed_data: cms.SignedData) -> list[x509.Certificate]:
    others = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed_data["certificates"] or []]
    return [signer, *[c for c in others if c != signer]]


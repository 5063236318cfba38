"""Proof of integrity: stored objects against the index, and (with a key) content against both.

`check_stored` needs no key: every object present with the recorded size and
SHA-256. `check_content` needs a recipient key: it decrypts and checks the
plaintext hashes, the PDF's PAdES signature (pyHanko's validator), the record's
detached CMS signature, and that the record and the PDF belong to the entry's
room and version (the PDF attaches its record), so an object swapped with another
room's or version's is named even when its hashes were copied into the index too. `verify_archive` walks any number of
entries with a cursor, and the store's listing as a stream (bounded memory).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import hashlib
import json
import logging
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from io import BytesIO
from typing import Any, Callable, Iterator, Sequence

from asn1crypto import cms
from asn1crypto import parser as asn1_parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.generic_cms import async_validate_detached_cms, validate_tst_signed_data
from pyhanko_certvalidator import ValidationContext

from archiver import certificates, seals, timestamps
from archiver.artifacts import OBJECTS
from archiver.envelope import EnvelopeError, RecipientKey
from archiver.config import Config
from archiver.content_pool import ContentPool
from archiver.index import OBJECT_KEY_FIELDS, index_database
from archiver.mongo import server_ms
from archiver.mongo import stored_time as _parse_time  # index times, and the stand-in's dates as text
from archiver.names import safe_name
from archiver.pins import SIGNER_SETTINGS, Pinned, configured_pins
from archiver.redaction import Redactor
from archiver.render.evidence import RECORD_NAME
from archiver.render.record import read_source, source_json
from archiver.transcript import (CONTACT_PEOPLE, DERIVED_FROM_CONTACT, ROLE_NAMES, ROLES, contact_person,
                                 contact_present, found_as)
from archiver.store import (ListedKey, ObjectMissing, ObjectStore, StoreError, open_store_for, raise_if_unreachable,
                            store_location)
from archiver.unarchived import not_held
from archiver.visible import is_pdf_title


LEGACY_RECORD_FORMAT = "ctlive-archive-record/1"  # its PDF attaches no record


@dataclass(frozen=True)
class Check:
    check: str  # what was checked, in words a person reads
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Problem:
    room: str | None  # a room id, or None: a problem of no room's (subject), or a store object of unknown room
    version: int | None
    problem: str
    key: str | None = None  # an object the index does not explain (or a temporary file): its key,
    store: str | None = None  # and its store's URL
    subject: str | None = None  # what a problem of no room is about: "run report RUN", "seal DAY#SEQ", "audit log"

    def __str__(self) -> str:
        if self.subject is not None:
            return f"{self.subject}: {self.problem}"
        if self.room is None:
            return self.problem  # which names the object's key: its folder is no room id
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
    attached_record: bytes | None = None  # the record.json the signed PDF carries (PDF/A-3), if any

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        """Each failed check as "failed: CLAIM (WHAT WAS FOUND)": a check is worded as what should hold (a few,
        whose claim read as the fault, say the fault when failed: _archived_at_check)."""
        return [f"failed: {c.check} ({c.detail})" if c.detail else f"failed: {c.check}"
                for c in self.checks if not c.ok]


def malformed(entry: dict[str, Any]) -> str:
    """What in ENTRY's shape the checks cannot read (a hand edit): room and version, each object's key, size
    and SHA-256, superseded_objects; "" if nothing."""
    def shown(value: Any) -> str:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."

    wrong = []
    if not isinstance(entry.get("room"), str):
        wrong.append(f"room {shown(entry.get('room'))} is not text")
    if not isinstance(entry.get("version"), int) or isinstance(entry.get("version"), bool):
        wrong.append(f"version {shown(entry.get('version'))} is not a whole number")
    objects = entry.get("objects") or {}
    if not isinstance(objects, dict):
        wrong.append(f"objects {shown(objects)} is not a document")
    for name, obj in objects.items() if isinstance(objects, dict) else ():
        if not isinstance(obj, dict):
            wrong.append(f"objects.{name} {shown(obj)} is not a document")
            continue
        wrong.extend(f"objects.{name}.{part} {shown(obj.get(part))} is not {what}"
                     for part, kind, what in (("key", str, "text"), ("sha256", str, "text"), ("size", int, "a whole number"))
                     if not isinstance(obj.get(part), kind) or isinstance(obj.get(part), bool))
    superseded = entry.get("superseded_objects") or []
    if not isinstance(superseded, list) or not all(isinstance(key, str) for key in superseded):
        wrong.append(f"superseded_objects {shown(superseded)} is not a list of keys")
    return "; ".join(wrong)


def check_stored(entry: dict[str, Any], store: ObjectStore) -> Opened:
    """Every object of ENTRY fetched and checked against its recorded size and SHA-256."""
    opened = Opened(entry)
    if entry.get("status") == "deleted":  # a tombstone: its objects are gone on purpose (retention, erasure)
        opened.checks.append(_tombstone_check(entry, store))
        deleted = _parse_time(entry.get("deleted_at"))
        if deleted is not None and deleted > dt.datetime.now(dt.timezone.utc) + CLOCK_SKEW:  # it dates a seal
            opened.checks.append(Check("the tombstone's deleted_at is not in the future", False,
                                       f"deleted_at {deleted.isoformat(timespec='seconds')}"))
        return opened
    if entry.get("status") != "archived":
        has = (f"an archived_at ({entry['archived_at']})" if entry.get("archived_at") is not None else
               "stored objects" if entry.get("objects") else "")
        opened.checks.append(Check("the entry is archived", False, f"status is {entry.get('status')!r}" + (
            f", but it has {has}, as only a completed archive has, and an archive only ever becomes a tombstone "
            "('deleted'): relabelled by hand?" if has else "")))
    indexed = _parse_time(entry.get("archived_at"))  # it dates the entry's seal
    if indexed is None:
        opened.checks.append(Check("the entry's archived_at reads as a time", False,
                                   f"archived_at {entry.get('archived_at')!r}"))
    elif indexed > dt.datetime.now(dt.timezone.utc) + CLOCK_SKEW:
        opened.checks.append(Check("the entry's archived_at is not in the future", False,
                                   f"archived_at {indexed.isoformat(timespec='seconds')}"))
    objects = entry.get("objects") or {}
    for name in [*OBJECTS, *attachment_objects(entry)]:
        obj = objects.get(name)
        if not obj:
            opened.checks.append(Check(f"{name}: listed in the index", False, "missing from the entry"))
            continue
        opened.checks.append(_fetch(opened, name, obj, store))
    return opened


def _tombstone_check(entry: dict[str, Any], store: ObjectStore) -> Check:
    """A tombstone is settled only once its deletion is done; one left half-way names what is still stored."""
    what = "deleted by policy: a tombstone, its objects are not expected in the store"
    deletion = entry.get("deletion")
    if not deletion:
        return Check(what, False, "no deletion record")
    left = _still_stored(entry, store)
    if deletion.get("state") == "done":  # a tombstone written by hand over an archive would hide it: its objects tell
        return Check(what, not left, f"marked done by run {deletion.get('run')}, but its objects are still in the "
                                     f"store: {', '.join(left)}" if left else "")
    return Check(what, False, f"deletion by run {deletion.get('run')} (rule {deletion.get('rule')}) is not finished "
                              f"(state {deletion.get('state')!r}); still in the store: {', '.join(left) or 'none'}")


def _still_stored(entry: dict[str, Any], store: ObjectStore) -> list[str]:
    """ENTRY's objects of which any version is stored: a delete marker over one (a delete without VersionId
    in a bucket versioned since the put) hides it from a GET, the bytes stay."""
    left = []
    for obj in (entry.get("objects") or {}).values():
        try:
            if store.versions(obj["key"]):
                left.append(obj["key"])
        except StoreError as exc:
            raise_if_unreachable(exc, store)
            left.append(f"{obj['key']} (cannot tell: {exc})")
    return left


def kept_whole(runs: Any, steps: Any, entry: dict[str, Any]) -> str:
    """Why ENTRY, a tombstone whose deletion was begun and never finished (a crash cut it short), was kept:
    the run that began it finished and its step skipped it (held by a case, as its signed report says). ""
    if not (no such step, or the run is not finished: the tombstone is its intent). Its objects are the
    caller's to check: only when all are stored as recorded is it still the archive it was."""
    deletion = entry.get("deletion") or {}
    if entry.get("status") != "deleted" or deletion.get("state") != "deleting" or runs is None or steps is None:
        return ""
    if runs.find_one({"_id": deletion.get("run"), "state": "done"}, {"_id": 1}) is None:
        return ""
    step = _skipped_step(steps, entry, {"detail": 1, "reason": 1})
    if step is None:
        return ""
    when = f"{deletion['at']:%Y-%m-%d}" if deletion.get("at") else "an unrecorded date"
    return (f"its deletion, begun by run {deletion.get('run')} on {when}, was not finished: the run kept it "
            f"({step.get('detail') or step.get('reason')})")


def kept_objects(steps: Any, entry: dict[str, Any]) -> list[str] | None:
    """The names of ENTRY's objects stored when the run that began deleting it kept it (its skipped step's
    `kept_objects`); None if not recorded (a step recorded before runs recorded them)."""
    step = None if steps is None else _skipped_step(steps, entry, {"kept_objects": 1})
    return (step or {}).get("kept_objects")


def _skipped_step(steps: Any, entry: dict[str, Any], fields: dict[str, int]) -> dict[str, Any] | None:
    """The step by which the run that began deleting ENTRY skipped it (kept it), with FIELDS; None if none."""
    return steps.find_one({"run": (entry.get("deletion") or {}).get("run"), "room": entry["room"],
                           "entry_id": entry["_id"], "outcome": "skipped"}, fields)


def missing_out_of_order(entry: dict[str, Any], opened: Opened, kept: list[str] | None = None) -> Check | None:
    """For a kept version (`kept_whole`) checked as archived: a failed check if objects are missing that its
    deletion cannot have removed, None if none is. KEPT (`kept_objects`): those stored when its run kept it,
    so any of them missing was removed since. Without it: only the first of its objects in the order retention
    deletes them (ENTRY's `objects`, one by one, stopping at the first failure: a deletion cut short leaves
    such a first part gone) may be missing. The others were removed after its run kept it: held evidence gone."""
    order = list(entry.get("objects") or {})
    missing = {c.check.split(": ", 1)[0] for c in opened.checks if not c.ok and c.detail == MISSING}
    run = (entry.get("deletion") or {}).get("run")
    if kept is not None:
        removed = [name for name in order if name in missing and name in kept]
        return Check(f"a kept version lacks none of the objects stored when its run kept it "
                     f"({', '.join(kept) or 'none'})", False,
                     f"{', '.join(removed)} missing: removed after run {run} kept it") if removed else None
    gone = [name for name in order if name in missing]
    if gone == order[:len(gone)]:
        return None
    stored = [name for name in order[:order.index(gone[-1])] if name not in missing]
    return Check(f"a kept version lacks only objects its deletion removed before it was kept (retention deletes "
                 f"{', '.join(order)} in that order: a deletion cut short leaves the first of them gone)", False,
                 f"{', '.join(gone)} missing while {', '.join(stored)} {'is' if len(stored) == 1 else 'are'} "
                 f"stored: removed after run {run} kept it")


def attachment_objects(entry: dict[str, Any]) -> list[str]:
    """The names of ENTRY's attachment objects: those it lists as fetched, and any in its objects."""
    listed = [f"attachment-{a.get('position')}" for a in entry.get("attachments") or [] if a.get("outcome") == "fetched"]
    stored = [name for name in entry.get("objects") or {} if name.startswith("attachment-")]
    return list(dict.fromkeys([*listed, *stored]))


MISSING = "the object is missing from the store"  # a failed check's detail: absent, not altered


def _fetch(opened: Opened, name: str, obj: dict[str, Any], store: ObjectStore) -> Check:
    what = f"{name}: stored object {obj['key']} has the recorded size and SHA-256"
    try:
        data = store.get(obj["key"], obj.get("version_id", ""))
    except ObjectMissing:
        return Check(what, False, MISSING)
    except StoreError as exc:
        raise_if_unreachable(exc, store)  # an outage says nothing about the object: no verdict
        return Check(what, False, f"cannot read it ({exc})")
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != obj["size"] or digest != obj["sha256"]:
        return Check(what, False, f"altered: size {len(data)} (index {obj['size']}), SHA-256 {digest} (index {obj['sha256']})")
    opened.sealed[name] = data
    return Check(what, True, f"{len(data)} bytes, SHA-256 {digest}")


def check_content(opened: Opened, key: RecipientKey, trust: list[x509.Certificate] | None = None,
                  redactor: Redactor | None = None, pinned: Pinned | None = None) -> Opened:
    """Decrypt what `check_stored` fetched and check hashes, both signatures and the record; with REDACTOR,
    also that the record's source holds nothing its rules mask (`redaction_check`); with PINNED (verify), that
    both signers are among its certificates and the PDF's timestamp authority chains to its anchors."""
    entry = opened.entry
    for name, sealed in opened.sealed.items():
        opened.checks.append(_decrypt(opened, name, sealed, entry["objects"][name], key))
    if "pdf" in opened.plain:
        opened.checks.extend(_pdf_checks(opened, trust, pinned))
    if "record" in opened.plain and "record_signature" in opened.plain:
        opened.checks.extend(_record_signature_checks(opened, trust, pinned))
    if "record" in opened.plain:
        opened.checks.extend(_record_checks(opened.plain["record"], entry))
    if "pdf" in opened.plain and "record" in opened.plain:
        opened.checks.append(_binding_check(opened))
    if redactor is not None and "record" in opened.plain:
        opened.checks.append(redaction_check(opened.plain["record"], redactor))
    return opened


def redaction_check(record: bytes, redactor: Redactor) -> Check:
    """Whether REDACTOR's rules would change the record's source documents. A version archived with redaction
    off, or before a rule or detector found what it holds, keeps it as long as its lock lasts: named by rule and
    count, never by value. Changed bytes decide, not matches: a mask a rule finds again is no finding."""
    what = f"record: holds nothing today's redaction rules mask (settings {redactor.version})"
    try:
        source = read_source(record)
        chat, contact = source["chat"], source.get("contact")
        redacted = redactor.apply(chat, contact)
        changed = source_json(redacted.chat, redacted.contact) != source_json(chat, contact)
    except Exception as exc:  # a record that cannot be read back fails its other checks too; said here as well
        return Check(what, False, f"cannot be checked: {type(exc).__name__}: {exc}")
    if not changed:
        return Check(what, True)
    found = ", ".join(f"{rule} {count}" for rule, count in redacted.note.matches.items() if count)
    then = _record_field(record, "redaction")
    if isinstance(then, dict) and then.get("enabled") and then.get("version") == redactor.version:
        # A pass applies these very settings once and gets this source again (the same digest): no new version.
        return Check(what, False, f"they would mask {found or 'text'}; archived under today's redaction settings "
                                  f"{redactor.version}, which change their own output here (as a configured pattern "
                                  "that takes what another rule reads can): `archiver run --full` makes no new version")
    under = (f"redaction settings {then.get('version')}{'' if then.get('enabled') else ', redaction off'}"
             if isinstance(then, dict) else "no redaction settings recorded")
    return Check(what, False, f"they would mask {found or 'text'}; archived under {under}; `archiver run --full` "
                              "archives a masked new version while the source is in MongoDB, this one stays")


def _binding_check(opened: Opened) -> Check:
    """The signed PDF carries the record it was made with: a PDF of another version of the room (signed by
    us, of the right room) put in this entry's place, or a record put in another's, is named here."""
    what = "pdf: attaches this version's record, byte for byte"
    if opened.attached_record is None:
        if _record_field(opened.plain["record"], "format") == LEGACY_RECORD_FORMAT:  # before PDFs carried records
            return Check(what, True, f"not applicable: a {LEGACY_RECORD_FORMAT} record, whose PDF attaches none")
        return Check(what, False, f"the PDF attaches no {RECORD_NAME}")
    if opened.attached_record != opened.plain["record"]:
        return Check(what, False, f"it attaches another record (SHA-256 {hashlib.sha256(opened.attached_record).hexdigest()}"
                                  f", version {_record_field(opened.attached_record, 'version')!r})")
    return Check(what, True)


def _attached_record(reader: PdfFileReader) -> bytes | None:
    """The record.json the PDF's catalog names among its embedded files (archiver.render.evidence), if any."""
    root = reader.root  # pyHanko resolves indirect objects on [], not on .get()
    files = root["/Names"]["/EmbeddedFiles"] if "/Names" in root and "/EmbeddedFiles" in root["/Names"] else None
    listed = list(files["/Names"]) if files is not None and "/Names" in files else []
    for at in range(0, len(listed) - 1, 2):
        if str(listed[at]) == RECORD_NAME:
            return listed[at + 1].get_object()["/EF"]["/F"].data
    return None


def made_at(opened: Opened) -> dt.datetime | None:
    """When the signed record says this version was made (None without its plaintext)."""
    return _parse_time(_record_field(opened.plain["record"], "generated_at")) if "record" in opened.plain else None


def _record_field(record: bytes, name: str) -> Any:
    try:
        doc = json.loads(record)
    except ValueError:
        return None
    return doc.get(name) if isinstance(doc, dict) else None


def _decrypt(opened: Opened, name: str, sealed: bytes, obj: dict[str, Any], key: RecipientKey) -> Check:
    what = f"{name}: decrypts with the legal team's key to the recorded plaintext (size, SHA-256)"
    plain = key.decrypt(sealed)  # EnvelopeError: the key is wrong, reported as such by the caller
    digest = hashlib.sha256(plain).hexdigest()
    if len(plain) != obj.get("plaintext_size") or digest != obj.get("plaintext_sha256"):
        return Check(what, False, f"plaintext SHA-256 {digest} differs from the index ({obj.get('plaintext_sha256')})")
    opened.plain[name] = plain
    return Check(what, True, f"SHA-256 {digest}")


# While we validate, pyHanko logs why a chain did not validate as warnings with a stack trace each (and,
# without --ca, that it found no chain, which we did not ask for). They go into our checks' details instead,
# said once, in words; never to stderr.
_VALIDATION_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("validation_notes",
                                                                                     default=None)


class _ValidationNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        notes = _VALIDATION_NOTES.get()
        if notes is None:  # not ours: left as it is
            return True
        if record.getMessage() not in notes:
            notes.append(record.getMessage())
        return False


for _name in ("pyhanko.sign.validation.generic_cms", "pyhanko.sign.validation.pdf_embedded"):
    logging.getLogger(_name).addFilter(_ValidationNotes())


@contextmanager
def validation_notes() -> Iterator[list[str]]:
    """What pyHanko logs while the block validates, as a list of messages."""
    notes: list[str] = []
    token = _VALIDATION_NOTES.set(notes)
    try:
        yield notes
    finally:
        _VALIDATION_NOTES.reset(token)


def validation_context(trust: list[x509.Certificate] | None, moment: dt.datetime | None = None) -> ValidationContext:
    """Chains to TRUST, checked at MOMENT (default now)."""
    roots = [asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)) for c in trust or []]
    return ValidationContext(trust_roots=roots, allow_fetching=False, moment=moment)


def signing_time(status: Any) -> tuple[dt.datetime, str] | None:
    """When STATUS's signature was made, and by whose word: its RFC 3161 timestamp's, when that verifies and
    its authority chains to the trust anchors; else the time the signer states (None: it states none)."""
    stamp = getattr(status, "timestamp_validity", None)
    if stamp is not None and stamp.intact and stamp.valid and stamp.trusted:
        return stamp.timestamp, "the time its RFC 3161 timestamp states"
    if status.signer_reported_dt is not None:
        return status.signer_reported_dt, "the time its signer states (its own word: no trusted timestamp)"
    return None


def chain_check(name: str, status: Any, notes: list[str], trust: list[x509.Certificate],
                validate_at: Callable[[ValidationContext], Any]) -> Check:
    """Whether the signer of STATUS (validated now) chains to TRUST, at today's date or else at the time of
    signing (`signing_time`), as long-term validation does: a certificate that has expired since signing
    leaves a genuine archive valid. VALIDATE_AT(context) validates the same signature again."""
    what = f"{name}: signer chains to a trust anchor (--ca or signing.trust_anchors)"
    if status.trusted:
        return Check(what, True, "; ".join([status.summary(), *notes]))
    when = signing_time(status)
    if when is not None and when[0] < dt.datetime.now(dt.timezone.utc):
        with validation_notes():
            then = validate_at(validation_context(trust, when[0]))
        if then.trusted:
            return Check(what, True, f"at {when[0].isoformat()}, {when[1]}; not at today's date: "
                                     + "; ".join([status.summary(), *notes]))
    return Check(what, False, "; ".join([status.summary(), *notes]))


def check_detached_signature(body: bytes, signature: bytes, token: bytes | None, signer_sha256: Any,
                             trust: Sequence[x509.Certificate] = (), pinned: Pinned | None = None) -> Iterator[str]:
    """What is wrong with SIGNATURE (detached CMS) over BODY: it must verify, by the certificate of SHA-256
    SIGNER_SHA256 (what the signed thing names), one of PINNED's signers if given (what the verifier is
    configured with: the only check a forger cannot satisfy), chaining to TRUST if given; TOKEN, if any, an
    RFC 3161 timestamp over SIGNATURE, by an authority chaining to PINNED's timestamp anchors if it has any.
    Nothing: it holds. A seal's signature, and a retention or erasure run's report's (runs.py, `check_reports`)."""
    notes: list[str] = []
    try:
        signed = cms.ContentInfo.load(signature)["content"]
        with validation_notes() as notes:  # pyHanko's chain-building traceback kept off stderr
            status = asyncio.run(async_validate_detached_cms(body, signed, validation_context(list(trust))))
        intact = status.intact and status.valid
    except Exception as exc:
        intact, status = False, exc
    if not intact:
        yield f"its signature does not verify over the stored document ({status})"
    else:
        found = hashlib.sha256(status.signing_cert.dump()).hexdigest()
        if found != signer_sha256:
            yield "it is signed by another certificate than the one it names (signer_sha256)"
        unpinned = None if pinned is None else pinned.signer_problem(found, _subject(status.signing_cert))
        if unpinned:
            yield unpinned
        elif trust and not (check := chain_check("seal", status, notes, list(trust), lambda at: asyncio.run(
                async_validate_detached_cms(body, signed, at)))).ok:
            yield "its signer does not chain to the trust anchors (--ca, signing.trust_anchors): " + check.detail
    if token is not None:
        yield from _token_problems(token, signature, pinned.timestamp_anchors if pinned else ())


def _token_problems(token: bytes, signature: bytes, anchors: Sequence[x509.Certificate]) -> Iterator[str]:
    """What is wrong with TOKEN, an RFC 3161 timestamp token over SIGNATURE: it must verify over it and, given
    ANCHORS, its authority chain to one at the time the token states (as long-term validation does)."""
    try:
        token_data = cms.ContentInfo.load(token)["content"]
        expected = hashlib.sha256(signature).digest()
        context = (validation_context(list(anchors), timestamps.token_time(token)) if anchors
                   else ValidationContext(trust_roots=[], allow_fetching=False))
        with validation_notes():
            result = asyncio.run(validate_tst_signed_data(token_data, context, lambda _algorithm: expected))
        ok = result.get("intact") and result.get("valid")
    except Exception:
        ok, result = False, {}
    if not ok:
        yield "its timestamp token does not verify over its signature"
    elif anchors and not (result.get("trust_problem_indic") is None and result.get("validation_path")):
        issuer = result.get("signing_cert")
        yield ("its timestamp token's authority " + (f"({_subject(issuer)}) " if issuer else "")
               + "does not chain to signing.timestamp_trust_anchors")
    elif anchors and (unfit := _timestamping_problems(result["signing_cert"])):
        yield f"its timestamp token's authority ({_subject(result['signing_cert'])}) {'; '.join(unfit)}"


def _timestamping_problems(cert: asn1_x509.Certificate) -> list[str]:
    return certificates.timestamping_problems(x509.load_der_x509_certificate(cert.dump()))


def _subject(cert: asn1_x509.Certificate) -> str:
    """CERT's subject as RFC 4514 text, control characters escaped (a forger chooses it)."""
    return certificates.subject(x509.load_der_x509_certificate(cert.dump()))


def _pdf_checks(opened: Opened, trust: list[x509.Certificate] | None, pinned: Pinned | None = None) -> list[Check]:
    entry = opened.entry
    try:
        reader = PdfFileReader(BytesIO(opened.plain["pdf"]))
        signatures = reader.embedded_signatures
        title = str(reader.trailer["/Info"].get("/Title", ""))
        opened.attached_record = _attached_record(reader)
    except Exception as exc:  # a damaged PDF: named, not a crash
        return [Check("pdf: readable PDF", False, f"{type(exc).__name__}: {exc}")]
    if len(signatures) != 1:
        return [Check("pdf: carries exactly one signature", False, f"found {len(signatures)}")]
    try:
        anchors = list(pinned.timestamp_anchors) if pinned else []
        with validation_notes() as notes:  # (the timestamp's authority: against its own anchors, if configured)
            status = validate_pdf_signature(signatures[0], validation_context(trust),
                                            validation_context(anchors) if anchors else None)
    except Exception as exc:  # a malformed signature dictionary or CMS: named, not a crash
        return [Check("pdf: PAdES signature readable", False, f"{type(exc).__name__}: {exc}")]
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    opened.certificates = _certificates(signer, signatures[0].signed_data)
    checks = [
        Check("pdf: PAdES signature intact and cryptographically valid (pyHanko)", status.intact and status.valid,
              f"coverage {status.coverage.name}, signed by {signer.subject.rfc4514_string()}"),
        Check("pdf: the signature covers the whole file", status.coverage.name == "ENTIRE_FILE", status.coverage.name),
        _contents_check(bytes(signatures[0].pkcs7_content)),
        *_signer_checks("pdf", signer, entry, pinned),
        Check("pdf: its title names the entry's room", is_pdf_title(title, entry["room"]), f"title {title!r}"),
    ]
    stamp = status.timestamp_validity  # B-T: when the signature existed, by the authority's word
    if stamp is not None:
        checks.append(Check("pdf: its signature timestamp (RFC 3161, PAdES B-T) is intact and valid",
                            stamp.intact and stamp.valid, f"{stamp.timestamp.isoformat()} by "
                            f"{stamp.signing_cert.subject.human_friendly}"))
        if anchors:
            checks.append(_stamp_anchor_check(stamp, lambda at: validate_pdf_signature(
                signatures[0], validation_context(trust), validation_context(anchors, at)).timestamp_validity))
    if trust:
        checks.append(chain_check("pdf", status, notes, trust, lambda at: validate_pdf_signature(signatures[0], at)))
    return checks


def _contents_check(contents: bytes) -> Check:
    """/Contents, the one part of the file no byte range covers, holds the CMS and zeros after it: pyHanko reads
    the CMS and ignores the rest, where anything could be hidden under a valid signature (pdfsig then says "Not
    total document signed", failing the bundle's offline check)."""
    what = "pdf: its signature's /Contents holds the CMS and zero padding only"
    try:
        _, _, _, header, content, trailer = asn1_parser.parse(contents, strict=False)
    except ValueError as exc:  # pyHanko read it; said, not a crash, should another reading differ
        return Check(what, False, f"its CMS cannot be read: {exc}")
    rest = contents[len(header) + len(content) + len(trailer):]
    extra = len(rest) - rest.count(0)
    return Check(what, not extra, f"{extra:,} bytes after the CMS are not zero" if extra else "")


def _record_signature_checks(opened: Opened, trust: list[x509.Certificate] | None,
                             pinned: Pinned | None = None) -> list[Check]:
    try:
        signed = cms.ContentInfo.load(opened.plain["record_signature"])["content"]
        with validation_notes() as notes:
            status = asyncio.run(async_validate_detached_cms(opened.plain["record"], signed,
                                                             validation_context(trust)))
    except Exception as exc:
        return [Check("record: detached CMS signature readable", False, f"{type(exc).__name__}: {exc}")]
    signer = x509.load_der_x509_certificate(status.signing_cert.dump())
    checks = [Check("record: detached CMS signature intact and valid (pyHanko)", status.intact and status.valid,
                    f"signed by {signer.subject.rfc4514_string()}"),
              *_signer_checks("record", signer, opened.entry, pinned)]
    if trust:
        checks.append(chain_check("record", status, notes, trust, lambda at: asyncio.run(
            async_validate_detached_cms(opened.plain["record"], signed, at))))
    return checks


def _signer_checks(name: str, signer: x509.Certificate, entry: dict[str, Any], pinned: Pinned | None) -> list[Check]:
    """SIGNER is the one the index records and, given PINNED, one the verifier is configured with (the index is
    no authority on who may sign: whoever can write it can name their own certificate)."""
    fingerprint = signer.fingerprint(hashes.SHA256()).hex()
    checks = [Check(f"{name}: signed with the certificate the index records", fingerprint == entry.get(
        "signing_certificate_sha256"), f"SHA-256 {fingerprint}")]
    if pinned is not None:
        checks.append(Check(f"{name}: signed with one of this configuration's signing certificates "
                            f"({SIGNER_SETTINGS})", fingerprint in pinned.signers,
                            f"{certificates.subject(signer)}, SHA-256 {fingerprint}"))
    return checks


def _stamp_anchor_check(stamp: Any, at_time: Callable[[dt.datetime], Any]) -> Check:
    """Whether the authority of STAMP (a signature's timestamp, validated now against the timestamp anchors)
    chains to them, now or else at the time it states (AT_TIME(moment): the stamp validated at MOMENT)."""
    what = "pdf: its signature timestamp's authority chains to signing.timestamp_trust_anchors"
    detail = _subject(stamp.signing_cert)
    unfit = _timestamping_problems(stamp.signing_cert)
    if unfit:
        return Check(what, False, f"{detail} {'; '.join(unfit)}")
    if stamp.trusted:
        return Check(what, True, detail)
    try:
        with validation_notes():
            then = at_time(stamp.timestamp)
    except Exception:
        then = None
    return Check(what, bool(then is not None and then.trusted), f"{detail}, at {stamp.timestamp.isoformat()}")


def _record_checks(record: bytes, entry: dict[str, Any]) -> list[Check]:
    try:
        doc = json.loads(record)
    except ValueError as exc:
        return [Check("record: valid JSON", False, str(exc))]
    # A version made by an attachment retry keeps the source digest in documents_sha256 (archiver.attachment_retries).
    same = {k: (doc.get(k), entry.get("documents_sha256") if k == "source_sha256" and entry.get("documents_sha256")
                else entry.get(k)) for k in ("room", "version", "source_sha256")}
    wrong = {k: v for k, v in same.items() if v[0] != v[1]}
    checks = [Check("record: its room, version and source SHA-256 are the entry's", not wrong,
                    "; ".join(f"{k} {a!r} (index {b!r})" for k, (a, b) in wrong.items())), _archived_at_check(doc, entry),
              _searchable_check(doc, entry)]
    return checks + _attachment_checks(doc, entry)


def _searchable_check(doc: dict[str, Any], entry: dict[str, Any]) -> Check:
    """What search, holds and retention select by (and verification.json repeats) is the signed record's: an
    entry whose agents, customers, times or kind were edited would hide a chat from a search or a hold."""
    what = "record: the entry's searchable fields (kind, times, people, type, channel, service) are the record's"
    view = doc.get("transcript") if isinstance(doc.get("transcript"), dict) else {}
    people = view.get("participants") if isinstance(view.get("participants"), list) else None
    expected: dict[str, Any] = {"kind": doc.get("status"), "started_at": view.get("started_at"),
                                "ended_at": view.get("ended_at") or view.get("last_message_at")}
    expected.update({k: view[k] for k in ("ctlive_type", "channel", "service", "closed_by", "message_count")
                     if k in view})
    if people is not None:
        for field, role in (("agents", "agent"), ("customers", "customer")):
            expected[field] = [p.get("user_id") for p in people
                               if isinstance(p, dict) and role in _found_as(p.get("role"), doc.get("format"))]
    contact = _record_contact(doc)
    for field in CONTACT_PEOPLE:  # (an entry from before one was indexed lacks it: every hold by that role holds it)
        if field in entry:
            expected[field] = contact_person(contact, field) or None
    if "present" in entry:  # (likewise)
        expected["present"] = contact_present(contact, [p.get("user_id") for p in people or [] if isinstance(p, dict)])
    # A field removed from the entry counts too (every entry has had them all): it hides a chat as well.
    differ = [f"{k} {_shown(k, entry.get(k))!r} (record {v!r}{_derived(entry, k)})" for k, v in expected.items()
              if _shown(k, entry.get(k)) != v]
    return Check(what, not differ, "; ".join(differ))


def _derived(entry: dict[str, Any], field: str) -> str:
    """How the entry says FIELD came to be, where it says it was derived after archiving: a contact changed since
    differs from the record's. Only the wording: whoever could edit the field could write this mark too."""
    marks = entry.get(DERIVED_FROM_CONTACT)
    derivable = field in (*CONTACT_PEOPLE, "present")  # (a mark on another field is not read)
    when = _parse_time(marks.get(field)) if derivable and isinstance(marks, dict) else None
    if when is None:
        return ""
    return (f": derived from the source contact on {when:%Y-%m-%d}, which may have changed since the chat was "
            "archived (docs/search.md), or edited since")


# Records whose participants' role is their first message's, indexed under that role alone (unknown: neither).
_FIRST_MESSAGE_ROLES = ("ctlive-archive-record/1", "ctlive-archive-record/2", "ctlive-archive-record/3")


def _found_as(role: Any, record_format: Any) -> tuple[str, ...]:
    """The roles the index lists a participant of ROLE (as the record writes it) under, as its archive pass did."""
    if record_format in _FIRST_MESSAGE_ROLES:
        return (role,) if role in ROLES else ()
    stated = {name: roles for roles, name in ROLE_NAMES.items()}
    return found_as(stated[role]) if role in stated else ()


def _record_contact(doc: dict[str, Any]) -> dict[str, Any]:
    """The signed record's contact as the index's contact fields are made of it (its people: opened_by, handled_by;
    its users and events: present), decoded."""
    from bson import json_util

    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    contact = source.get("contact") if isinstance(source.get("contact"), dict) else {}
    names = (*(name for name, _ in CONTACT_PEOPLE.values()), "users", "contact_events")
    return json_util.loads(json.dumps({name: contact.get(name) for name in names}))


def _shown(name: str, value: Any) -> Any:
    """An index value as the record writes it: times in UTC to the millisecond, as MongoDB keeps them."""
    if name not in ("started_at", "ended_at", "fetched_at") or value is None:
        return value
    when = _parse_time(value)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else value


INDEXED_WITHIN = dt.timedelta(days=1)  # from building a version to indexing it: minutes (a retry rebuilds it)
CLOCK_SKEW = dt.timedelta(minutes=5)


def _archived_at_check(doc: dict[str, Any], entry: dict[str, Any]) -> Check:
    """The entry's archived_at (which dates the seal that covers it) follows the signed record's generated_at:
    an entry edited and moved to another day, one not sealed yet, would otherwise escape its seal."""
    seal = " (archived_at dates its seal)"  # a failed check says the fault, not the rule it breaks
    made, indexed = _parse_time(doc.get("generated_at")), _parse_time(entry.get("archived_at"))
    if made is None or indexed is None:
        return Check("record: the entry's archived_at or the record's generated_at cannot be read" + seal, False,
                     f"generated_at {doc.get('generated_at')!r}, archived_at {entry.get('archived_at')!r}")
    found = f"generated_at {made.isoformat()}, archived_at {indexed.isoformat()}"
    if indexed < made - CLOCK_SKEW:
        return Check("record: the entry was indexed before the record was made" + seal, False, found)
    if indexed > made + INDEXED_WITHIN:
        return Check("record: the entry was indexed more than a day after the record was made" + seal, False, found)
    return Check("record: the entry was indexed within a day after the record was made" + seal, True, found)


def recorded_attachments(doc: Any) -> dict[str, dict[str, Any]]:
    """The signed record's description of each stored attachment (archiver.attachments), by object name."""
    listed = doc.get("attachments") if isinstance(doc, dict) else None
    return {a["object"]: a for a in listed or [] if isinstance(a, dict) and a.get("outcome") == "fetched"
            and isinstance(a.get("object"), str)}


# An attachment object's facts in the index entry, and the record's name for each.
OBJECT_FACTS = {"position": "position", "content_type": "content_type", "fetched_at": "fetched_at",
                 "plaintext_size": "size", "plaintext_sha256": "sha256"}


def _attachment_checks(doc: dict[str, Any], entry: dict[str, Any]) -> list[Check]:
    """What retrieval, bundles and verification.json say of a file (its position, which names it, type, fetch
    time, size, SHA-256) is the signed record's; the entry's copy must agree, and so must its list of outcomes.
    An index edited before its day is sealed (positions swapped: files misnamed) is named by object and field;
    a file swapped in the store and the index alike, by its SHA-256."""
    recorded = recorded_attachments(doc)
    objects = {n: o for n, o in (entry.get("objects") or {}).items() if n.startswith("attachment-")}
    described = [a for a in doc.get("attachments") or [] if isinstance(a, dict)]
    listed = entry.get("attachments") or []
    if not recorded and not objects and not described and not listed:
        return []  # no attachments (and records from before them list none)
    differ = []
    for name in dict.fromkeys([*recorded, *objects]):
        signed, indexed = recorded.get(name), objects.get(name)
        if signed is None or indexed is None:
            differ.append(f"{name}: {'not in the record' if signed is None else 'not in the index'}")
            continue
        differ.extend(f"{name}: {field} record {_fact(field, signed.get(theirs))!r}, index "
                      f"{_fact(field, indexed.get(field))!r}" for field, theirs in OBJECT_FACTS.items()
                      if _fact(field, signed.get(theirs)) != _fact(field, indexed.get(field)))
    if len(listed) != len(described):
        differ.append(f"attachments: {len(described)} in the record, {len(listed)} in the index")
    for at, (signed, indexed) in enumerate(zip(described, listed)):
        if not isinstance(indexed, dict):
            differ.append(f"attachments[{at}]: not a document in the index")
            continue
        differ.extend(f"attachments[{at}]: {field} record {_fact(field, signed.get(field))!r}, index "
                      f"{_fact(field, value)!r}" for field, value in indexed.items()
                      if _fact(field, signed.get(field)) != _fact(field, value))
    return [Check("record: lists the entry's attachments as the index does (each object's position, type, "
                  "fetch time, size and SHA-256; each outcome)", not differ, "; ".join(differ))]


def _fact(field: str, value: Any) -> Any:
    """VALUE as the record writes it (`_shown`), no content type as None."""
    return value or None if field == "content_type" else _shown(field, value)


def _certificates(signer: x509.Certificate, signed_data: cms.SignedData) -> list[x509.Certificate]:
    others = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed_data["certificates"] or []]
    return [signer, *[c for c in others if c != signer]]



RUNS_KEPT = 10_000  # run ids (and folders' rooms) remembered by a verification; then forgotten all at once
MAX_PROBLEMS_KEPT = 10_000  # beyond this only counted: memory stays bounded however broken the archive is
LISTING_BATCH = 500


@dataclass
class VerifyReport:
    entries: int = 0
    objects: int = 0  # stored objects checked against the index
    listed: int = 0  # keys listed in the store (each explained by the index, or a problem)
    tombstones: int = 0  # entries of deleted archives (retention, erasure): no objects expected
    kept: list[str] = field(default_factory=list)  # tombstones whose deletion was begun, then kept whole (kept_whole)
    in_progress: int = 0  # entries still uploading within their lease
    awaiting_retry: int = 0  # entries left uploading by an attempt that failed, which the job queue retries
    retries: list[str] = field(default_factory=list)  # those, named (up to MAX_PROBLEMS_KEPT): information
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)
    with_key: bool = False
    seconds: float = 0.0
    seals: int = 0  # seals recomputed (docs/seals.md)
    reports: int = 0  # signed reports of retention and erasure runs (and their parts) read back and checked
    trust_anchors: list[str] = field(default_factory=list)  # what signers were checked against ([]: nothing)
    signers: list[str] = field(default_factory=list)  # the only certificates signatures were accepted by (pins.py)
    timestamp_trust_anchors: list[str] = field(default_factory=list)  # timestamps' authorities' ([]: not checked)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(problem)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["problems"] = [asdict(p) for p in self.problems]
        return out


class Verifier:
    """Checks index entries against their stores, and the stores against the index."""

    def __init__(self, entries: Any, open_store: Callable[[dict[str, Any]], ObjectStore], lease_seconds: int,
                 key: RecipientKey | None = None, trust: list[x509.Certificate] | None = None,
                 workers: int = 1, redaction: Config | None = None) -> None:
        self.entries = entries  # the index collection
        self.open_store = open_store  # entry -> its store (cached by the caller)
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.key = key
        self.trust = trust
        self.explain_more: Callable[[list[str]], set[str]] = lambda keys: set()  # seal objects, say
        self.sealed_rooms: Callable[[list[str]], dict[str, str]] = lambda rooms: {}  # where seals hold rooms
        # the index lacks (removed since)
        self.runs: Any = None  # retention runs: their signed reports in the store are explained by them
        self.steps: Any = None  # their steps: each tombstone is checked against its run's, and what a run that
        # began a deletion then kept (kept_whole)
        self.jobs: Any = None  # the job queue: an interrupted attempt whose job will retry it is no problem
        self._known_runs: dict[Any, str] = {}  # run id -> _run_problem (tombstones name a few runs, many times)
        self._lease: tuple[dict[str, Any], int] | None = None  # the deletion lease, and the server's time then
        self._folder_rooms: dict[str, str | None] = {}  # a store folder -> the room whose objects live in it
        self.workers = workers  # with a key and more than 1: content checks in worker processes
        self.redaction = redaction  # with a key: its [redaction] rules are checked against every record
        self.redactor = Redactor.from_config(redaction) if redaction is not None else None
        self.pinned: Pinned | None = None  # with a key: the signers (and timestamp anchors) content must have

    def run(self, rooms: list[str] | None, progress: Callable[[VerifyReport], None] | None = None) -> VerifyReport:
        """ROOMS (None: every entry and every stored object)."""
        report = VerifyReport(with_key=self.key is not None)
        query: dict[str, Any] = {} if rooms is None else {"room": {"$in": [str(r) for r in rooms]}}
        seen_rooms: set[str] = set()
        pool = (ContentPool(self.workers, self.key, self.trust, self.redaction, self.pinned) if self.key is not None
                and self.workers > 1 else None)
        waiting: deque[tuple[Opened, Any]] = deque()  # checked in order, content maybe still in a worker
        try:
            for entry in self.entries.find(query).sort([("room", 1), ("version", 1)]).batch_size(200):
                opened = self._check_stored(entry, report)
                waiting.append((opened, pool.submit(entry, opened.sealed) if pool and opened and opened.ok else None))
                while waiting and (len(waiting) > (pool.in_flight if pool else 0) or waiting[0][1] is None):
                    self._settle(*waiting.popleft(), report, progress)
                if rooms is not None:
                    seen_rooms.add(entry.get("room"))
            while waiting:
                self._settle(*waiting.popleft(), report, progress)
        finally:
            if pool:
                pool.close()
        missing = sorted(set(rooms or []) - seen_rooms)
        sealed = self.sealed_rooms(missing)
        for room in missing:  # a seal holds it (removed since), else not tampering: say why the archive lacks it
            report.add(Problem(room, None, sealed.get(room) or ("not in the archive index" if self.jobs is None
                                                                else not_held(self.jobs, self.entries, room))))
        return report

    def check_entry(self, entry: dict[str, Any], report: VerifyReport) -> None:
        """ENTRY checked in this process (with the key, its content too)."""
        self._settle(self._check_stored(entry, report), None, report, None)

    def _deletion_run_check(self, entry: dict[str, Any]) -> Check:
        """A tombstone names the retention or erasure run that deleted it (and the one that finished it,
        `completed_by`): each must be a run of this service, finished with a signed report or running now
        (`_run_problem`; verify --all checks the report and the signed plan themselves)."""
        deletion = entry.get("deletion") or {}
        what = ("deleted by a run on record (retention or erasure) of this service: finished with a signed report, "
                "or running")
        if self.runs is None:
            return Check(what, True, "runs not checked")
        for run in dict.fromkeys([deletion.get("run"), deletion.get("completed_by", deletion.get("run"))]):
            problem = self._run_problem(run)
            if problem:
                return Check(what, False, problem)
        return self._deletion_step_check(entry) if self.steps is not None else Check(what, True)

    def _run_problem(self, run_id: Any) -> str:
        """Why RUN_ID is not a run a tombstone may name ("" if it is), remembered: a run of unknown kind, one
        marked done without a signed report (a run finishes only once its report is stored), one never
        executed (planning, abandoned), or one unfinished that no run holds the deletion lease for (interrupted,
        or written by hand) or whose plan is not signed."""
        if run_id not in self._known_runs:
            if len(self._known_runs) >= RUNS_KEPT:
                self._known_runs.clear()
            run = self.runs.find_one({"_id": run_id}, {"kind": 1, "state": 1, "report": 1, "plan": 1})
            self._known_runs[run_id] = self._run_record_problem(run_id, run)
        return self._known_runs[run_id]

    def _run_record_problem(self, run_id: Any, run: dict[str, Any] | None) -> str:
        from archiver.runs import LEASE, LEASE_MS

        if run is None:
            return f"no run {run_id!r} in {self.runs.name}"
        kind, state = run.get("kind"), run.get("state")
        if kind not in ("retention", "erasure"):
            return f"run {run_id} is of unknown kind {kind!r}: not a run of this service"
        if state == "done":
            return "" if (run.get("report") or {}).get("key") else (
                f"run {run_id} is marked done but has no signed report: not a run of this service")
        if state not in ("executing", "reporting"):
            return f"run {run_id} is {state!r}: none of its steps can have run"
        if self._lease is None:  # read once: whether a deletion run is under way now, by the server's clock
            self._lease = (self.runs.find_one({"_id": LEASE}) or {}, server_ms(self.runs.database))
        lease, now_ms = self._lease
        until = lease.get("until_ms")
        command = "archiver erase" if kind == "erasure" else "archiver retention run"
        if lease.get("kind") != kind or not isinstance(until, int) or until <= now_ms:
            return (f"run {run_id} is unfinished ({state!r}) and no deletion run holds the lease: interrupted (the "
                    f"next `{command}` finishes it), or not a run of this service")
        if until > now_ms + LEASE_MS + 60_000:  # a run sets it LEASE_MS ahead of the server's clock, no further
            return (f"run {run_id} is unfinished ({state!r}) and the deletion lease in {self.runs.name} runs until "
                    f"{dt.datetime.fromtimestamp(until / 1000, dt.timezone.utc):%Y-%m-%d %H:%M} UTC, further ahead "
                    "than a run sets it: not set by this service")
        if not run.get("plan"):
            return f"run {run_id} was not planned by this service: its plan is not signed"
        return ""

    def _deletion_step_check(self, entry: dict[str, Any]) -> Check:
        """The run a tombstone names planned to delete this very version (a `delete_archive` step), and one that
        is done was deleted by a step of it, or of the run that finished it (`completed_by`): a tombstone written
        by hand over an archive, naming a real run, is named here (verify --all checks the steps against the
        run's signed report)."""
        deletion = entry.get("deletion") or {}
        run, room, version = deletion.get("run"), entry["room"], entry.get("version")
        found = [step for step in self.steps.find({"run": {"$in": [run, deletion.get("completed_by", run)]},
                                                   "room": room, "version": version, "action": "delete_archive"},
                                                  {"run": 1, "state": 1, "outcome": 1})
                 if str(step["_id"]).startswith(f"{step['run']}:")]  # a run's steps only (runs.steps_of)
        what = "deleted by a run on record (retention or erasure) whose steps delete this version"
        if not any(step["run"] == run for step in found):
            return Check(what, False, f"run {run!r} has no step deleting {room} v{version} in {self.steps.name}")
        if deletion.get("state") == "done" and not any(step.get("outcome") == "deleted" or step.get("state") ==
                                                       "pending" for step in found):
            return Check(what, False, f"marked done, but no step of run {run!r}"
                                      + (f" or {deletion['completed_by']!r}" if deletion.get("completed_by") else "")
                                      + f" in {self.steps.name} records deleting it")
        return Check(what, True)

    def _retry_of(self, room: str) -> str:
        """How the job queue will take ROOM up again ("": it will not: done, quarantined, or no job)."""
        if self.jobs is None:
            return ""
        job = self.jobs.find_one({"_id": room}, {"state": 1, "available_at": 1, "last_error": 1}) or {}
        state = job.get("state")
        if state not in ("failed", "pending", "claimed"):
            return ""
        at = job.get("available_at")  # epoch milliseconds
        when = (dt.datetime.fromtimestamp(at / 1000, dt.timezone.utc).isoformat(timespec="seconds")
                if isinstance(at, (int, float)) else "?")
        if state == "claimed":
            return f"its job is claimed by a worker (lease until {when})"
        why = f" after: {job.get('last_error')}" if state == "failed" and job.get("last_error") else ""
        return f"its job is {state}, retried from {when}{why}"

    def _check_stored(self, entry: dict[str, Any], report: VerifyReport) -> Opened | None:
        """ENTRY's objects against the index (None: still uploading within its lease, or a problem already)."""
        report.entries += 1
        room, version = entry.get("room"), entry.get("version")
        wrong = malformed(entry)
        if wrong:  # edited by hand (or by an intruder): its own problem, and the others are still checked
            report.add(Problem(room if isinstance(room, str) else None, version if isinstance(version, int) else None,
                               f"malformed index entry: {wrong}" + ("" if isinstance(room, str) else
                                                                    f" (_id {entry.get('_id')})")))
            return None
        # an attempt (uploading, superseded) has no archived_at and no objects (index.complete sets both, with
        # status archived): one that has either is a relabelled archive, checked as one
        attempt = (entry.get("archived_at") is None and not entry.get("objects")
                   and entry.get("status") in ("uploading", "superseded"))
        if attempt and entry.get("status") == "uploading":
            created = entry.get("created_at")
            begun = _parse_time(created) if created is not None else None
            retry = self._retry_of(room)
            now = dt.datetime.now(dt.timezone.utc)
            if begun is not None and begun > now + CLOCK_SKEW:  # never "within its lease": that would be forever
                report.add(Problem(room, version, f"created_at {begun.isoformat(timespec='seconds')} is in the "
                                                  "future: no attempt began then (edited by hand, or a writer's "
                                                  "clock runs ahead)"))
            elif begun is not None and begun > now - self.lease:
                report.in_progress += 1
            elif retry:
                report.awaiting_retry += 1
                if len(report.retries) < MAX_PROBLEMS_KEPT:
                    report.retries.append(f"{room} v{version}: left 'uploading' since {created}; {retry}")
            else:
                report.add(Problem(room, version, f"left 'uploading' since {created} (longer than the lease): "
                                                  "an interrupted archive that no pass has completed"))
            return None
        if attempt:  # superseded: an attempt that never completed: no archive to check; the
            return None  # objects it left are listed on it (check_listing explains them) until deleted
        opened = self._kept_whole(entry, report) or check_stored(entry, self.open_store(entry))
        if entry.get("status") == "deleted":
            report.tombstones += 1
            opened.checks.append(self._deletion_run_check(entry))
        report.objects += len(opened.sealed)
        return opened

    def _kept_whole(self, entry: dict[str, Any], report: VerifyReport) -> Opened | None:
        """A tombstone whose deletion its run began, then kept (held: `kept_whole`), checked as the archive it
        still is, and named as kept; None if it is not one, or if objects are only missing as its deletion, cut
        short, left them (`missing_out_of_order`; the tombstone check names what is left). One with an object
        altered, or missing otherwise, comes back with that failure."""
        why = kept_whole(self.runs, self.steps, entry)
        if not why:
            return None
        opened = check_stored({**entry, "status": "archived"}, self.open_store(entry))
        if not opened.ok:  # held evidence with other bytes, or removed since, is tampering: named as such
            removed = missing_out_of_order(entry, opened, kept_objects(self.steps, entry))
            if removed is not None:
                opened.checks.append(removed)
            return opened if any(not c.ok and c.detail != MISSING for c in opened.checks) else None
        report.kept.append(f"{entry['room']} v{entry.get('version')}: {why}; every object is stored as recorded")
        return opened

    def _settle(self, opened: Opened | None, content: Any, report: VerifyReport,
                progress: Callable[[VerifyReport], None] | None) -> None:
        """OPENED's content checks (CONTENT: a worker's future, else done here) and its problems reported."""
        if opened is not None:
            if content is not None:
                try:
                    opened.checks.extend(content.result())
                except Exception as exc:  # a worker died (a crash in a library on this input): named, not fatal
                    opened.checks.append(Check("content checked in a worker process", False,
                                               f"{type(exc).__name__}: {exc}"))
            elif self.key is not None and opened.ok:
                try:
                    check_content(opened, self.key, self.trust, self.redactor, self.pinned)
                except EnvelopeError as exc:
                    opened.checks.append(Check("decrypts with the given key", False, str(exc)))
            for failure in opened.failures():
                report.add(Problem(opened.entry["room"], opened.entry.get("version"), failure))
        if progress:
            progress(report)

    def check_listing(self, store: ObjectStore, prefix: str, report: VerifyReport,
                      progress: Callable[[VerifyReport], None] | None = None, room: str | None = None) -> None:
        """Every key under PREFIX (ROOM's folder, or "": the whole store) in STORE is some entry's object or
        superseded object, and an archived object's key holds its recorded version alone (one listing of every
        version: iter_versions)."""
        batch: list[ListedKey] = []
        try:
            for listed in store.iter_versions(prefix):
                batch.append(listed)
                if len(batch) >= LISTING_BATCH:
                    self._explain(store, batch, report, room)
                    batch = []
                    if progress:
                        progress(report)
        except StoreError as exc:
            raise_if_unreachable(exc, store)
            raise
        if batch:
            self._explain(store, batch, report, room)
        for name in store.stale_temporaries(prefix, self.lease):
            report.add(Problem(room or self._room_of(name), None, f"temporary file {name} in {store.url}, left by a "
                               "write cut short (a process killed mid-put) longer than the lease ago: never an "
                               "archived object, but it may hold a whole ciphertext; remove it", name, store.url))

    def _room_of(self, key: str) -> str | None:
        """The room whose objects live in KEY's folder (its first part), None if no index entry's do: a folder
        name is no room id (a sanitised one is a cleaned prefix and a hash; a stranger's, anything)."""
        folder, sep, _ = key.partition("/")
        if not sep:
            return None
        if folder not in self._folder_rooms:
            if len(self._folder_rooms) >= RUNS_KEPT:
                self._folder_rooms.clear()
            # keys under FOLDER/ sort from "FOLDER/" up to "FOLDER0" ("/" + 1): one range on an indexed field
            # each (the array fields are left out: a range there could match two different elements)
            inside = {"$gte": folder + "/", "$lt": folder + "0"}
            entry = self.entries.find_one({"$or": [{name: inside} for name in OBJECT_KEY_FIELDS
                                                   if name.startswith("objects.")]}, {"room": 1})
            self._folder_rooms[folder] = entry.get("room") if entry else None
        return self._folder_rooms[folder]

    def _explain(self, store: ObjectStore, listing: list[ListedKey], report: VerifyReport,
                 room: str | None = None) -> None:
        stored = [listed for listed in listing if listed.versions]  # a key with delete markers alone holds nothing
        keys = [listed.key for listed in listing]
        report.listed += len(stored)
        here = {"$or": [{"store.url": store_location(store)["url"]}, {"store": {"$exists": False}}]}
        named = {"$or": [{name: {"$in": keys}} for name in OBJECT_KEY_FIELDS]}
        explained: set[str] = set()
        archived: dict[str, tuple[dict[str, Any], str]] = {}  # an archived object's key -> its entry, version id
        for entry in self.entries.find({"$and": [named, here]}, {"room": 1, "version": 1, "status": 1, "objects": 1,
                                                                  "superseded_objects": 1}):
            objects = entry.get("objects") or {}
            for obj in objects.values() if isinstance(objects, dict) else ():  # (a malformed one is named by its
                if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):  # entry's check)
                    continue
                explained.add(obj["key"])
                if entry.get("status") == "archived":  # not a tombstone's (_tombstone_check) nor an attempt's
                    archived[obj["key"]] = (entry, obj.get("version_id") or "")
            superseded = entry.get("superseded_objects") or []
            if isinstance(superseded, list):
                explained.update(key for key in superseded if isinstance(key, str))
        explained |= self.explain_more(keys)
        if self.runs is not None:
            explained.update(reports_explained(self.runs, keys))
        for listed in stored:
            if listed.key not in explained:
                report.add(Problem(room or self._room_of(listed.key), None,
                                   f"object {listed.key} in {store.url} is not explained by the index",
                                   listed.key, store.url))
        for listed in listing:
            if listed.key in archived:
                entry, version_id = archived[listed.key]
                for problem in _other_versions(listed, version_id, store.url):
                    report.add(Problem(entry["room"], entry.get("version"), problem))


def _other_versions(listed: ListedKey, version_id: str, where: str) -> list[str]:
    """What LISTED (an archived object's key) holds besides VERSION_ID, the version its entry records. Object Lock
    keeps that version, not the key: a version put over it is what a GET without a version id (aws s3 cp) returns,
    a delete marker makes that GET answer 404. Retrieval reads the recorded version, so these are named, not fatal
    to it. A version id "" (stored without versioning, or in a local store) is S3's "null" version."""
    recorded = (version_id, "null") if not version_id else (version_id,)
    problems = []
    for other in [v for v in listed.versions if v not in recorded]:
        current = "; it is the current one, which a GET without a version id returns" if other == listed.current else ""
        problems.append(f"object {listed.key} in {where} holds a version the index does not record: {other} "
                        f"(the archived one is {version_id or 'null'}){current}")
    for marker in listed.delete_markers:
        current = ": a GET without a version id answers 404" if marker == listed.current else ""
        problems.append(f"object {listed.key} in {where} has a delete marker {marker} over the archived version "
                        f"{version_id or 'null'}{current}")
    return problems


def reports_explained(runs: Any, keys: list[str]) -> set[str]:
    """Of KEYS, the signed reports of retention and erasure runs (runs.py) that a run names, and their parts."""
    from archiver.runs import REPORTS_PREFIX

    wanted = [key for key in keys if key.startswith(REPORTS_PREFIX)]
    named: set[str] = set()
    if wanted:
        for run in runs.find({"$or": [{"report.key": {"$in": wanted}}, {"report.signature_key": {"$in": wanted}},
                                      {"report_parts": {"$in": wanted}}]}, {"report": 1, "report_parts": 1}):
            named.update(run.get("report_parts", ()))  # named before they were stored: a crash leaves none unnamed
            if run.get("report"):
                named.update((run["report"]["key"], run["report"]["signature_key"]))
    return named


def check_reports(runs: Any, store_of: Callable[[dict[str, Any]], ObjectStore], report: VerifyReport,
                  trust: list[x509.Certificate] | None = None, steps: Any = None, pinned: Pinned | None = None
                  ) -> None:
    """Every finished retention or erasure run's signed report (and each part it lists) is in its store, with
    the SHA-256 the run recorded (the parts': the report's), and its signature beside it verifies over it by the
    certificate the run records (`signed_by`), one of PINNED's (with TRUST, chaining to it), as a seal's does.
    Each is read by the version the run recorded, and another version stored over it is named (what a GET without one returns).
    A run recorded before signatures were pinned has no signature SHA-256 or versions: the current ones are read.
    With STEPS (`index.retention_steps`), the run's steps are its report's items, one by one: tombstones are
    checked against the steps (Verifier), the steps here against what was signed. One part in memory at a time."""
    from archiver.runs import RunLedger

    for run in runs.find({"report.key": {"$exists": True}}, {"report": 1}):
        where = run["report"]
        store = store_of({"store": where["store"]} if where.get("store") else {})
        data = _report_object(store, where["key"], where["sha256"], where.get("version_id"), run["_id"], report)
        _report_signature(store, data, where["signature_key"], where, where.get("signed_by"), run["_id"], report, trust,
                          pinned)
        body = json.loads(data) if data is not None else {}
        if data is not None and body.get("run") != run["_id"]:  # another run's report, named by this one
            report.add(_report_problem(run["_id"], f"report {where['key']} is the report of run {body.get('run')!r}"))
            continue
        placed = {p["key"]: p for p in where.get("part_versions", [])}
        ledger = enumerate(RunLedger(runs, steps).items(run["_id"]), 1) if steps is not None else None
        if ledger is not None and "items" in body:
            ledger = _steps_as_signed(ledger, body["items"], run["_id"], steps.name, report)
        for part in body.get("parts", []):
            at = placed.get(part["key"], {})
            blob = _report_object(store, part["key"], part["sha256"], at.get("version_id"), run["_id"], report)
            _report_signature(store, blob, part["signature_key"], at, where.get("signed_by"), run["_id"], report,
                              trust, pinned)
            if ledger is not None:
                ledger = None if blob is None else _steps_as_signed(ledger, json.loads(blob).get("items", []),
                                                                    run["_id"], steps.name, report)
        if ledger is not None and data is not None:
            for n, step in ledger:  # more steps than the report has items
                report.add(_report_problem(run["_id"], f"its steps in {steps.name} differ from its signed report: "
                                                       f"item {n} ({_item_name(step)}) is not in the report"))
                break


def check_plans(runs: Any, steps: Any, report: VerifyReport, trust: list[x509.Certificate] | None = None,
                pinned: Pinned | None = None) -> None:
    """Every run's plan, as its steps are now, signed by the certificate the run records, one of PINNED's (the
    verifier's signing certificates; with TRUST, chaining to it): runs.py `plan_problem`. A run finished before
    plans were signed is vouched for by its report alone."""
    from archiver.runs import plan_problem

    for run in runs.find({"state": {"$in": ["executing", "reporting", "done"]}}):
        if run["state"] == "done" and "plan" not in run:
            continue
        problem = plan_problem(run, steps, (run.get("plan") or {}).get("signed_by"), trust or (), pinned)
        if problem:
            report.add(Problem(None, None, problem, subject=f"run {run['_id']}"))


def _report_problem(run_id: Any, problem: str) -> Problem:
    """A problem of a run's signed report: about no room (its items' rooms are the tombstones' to name)."""
    return Problem(None, None, problem, subject=f"run report {run_id}")


def _steps_as_signed(ledger: Iterator[tuple[int, dict[str, Any]]], items: list[dict[str, Any]], run_id: str,
                     where: str, report: VerifyReport) -> Iterator[tuple[int, dict[str, Any]]] | None:
    """Whether the next steps of LEDGER are ITEMS (a signed report's, or a part's), in order; the rest of LEDGER,
    or None once a difference is named (one problem per run)."""
    for item in items:
        n, step = next(ledger, (None, None))
        if step != item:
            shown = (f"item {n} ({_item_name(step)}) is not the report's ({_item_name(item)})" if step is not None
                     else f"the report's item ({_item_name(item)}) has no step")
            report.add(_report_problem(run_id, f"its steps in {where} differ from its signed report: {shown}"))
            return None
    return ledger


def _item_name(item: Any) -> str:
    if not isinstance(item, dict):
        return repr(item)[:200]
    name = f"{item.get('action')} {item.get('room')}" + (f" v{item['version']}" if item.get("version") is not None
                                                         else "")
    return f"{name}, {item.get('outcome')}"


def _report_signature(store: ObjectStore, data: bytes | None, key: str, at: dict[str, Any], signer_sha256: Any,
                      run_id: str, report: VerifyReport, trust: list[x509.Certificate] | None,
                      pinned: Pinned | None = None) -> None:
    """The signature KEY of a report (DATA, None if it failed its own check), as AT (the run's record) says."""
    try:
        signature = store.get(key, at.get("signature_version_id") or "")
    except StoreError as exc:
        raise_if_unreachable(exc, store)
        report.add(_report_problem(run_id, f"signature {key} is missing or unreadable in {store.url} ({exc})"))
        return
    _other_report_versions(store, key, at.get("signature_version_id"), run_id, report)
    found = hashlib.sha256(signature).hexdigest()
    if at.get("signature_sha256") and found != at["signature_sha256"]:
        report.add(_report_problem(run_id, f"signature {key} has SHA-256 {found}, the run recorded "
                                               f"{at['signature_sha256']}"))
    elif data is not None:
        for problem in check_detached_signature(data, signature, None, signer_sha256, trust or (), pinned):
            report.add(_report_problem(run_id, f"signature {key}: {problem} (the run records signed_by "
                                                   f"{signer_sha256})"))


def _other_report_versions(store: ObjectStore, key: str, version_id: str | None, run_id: str,
                           report: VerifyReport) -> None:
    """Versions of KEY besides VERSION_ID (the recorded one; None: a run recorded without versions, not checked)."""
    if version_id is None:
        return
    for listed in store.iter_versions(key):
        if listed.key == key:
            for problem in _other_versions(listed, version_id, store.url):
                report.add(_report_problem(run_id, problem))


def _report_object(store: ObjectStore, key: str, sha256: str, version_id: str | None, run_id: str,
                   report: VerifyReport) -> bytes | None:
    report.reports += 1
    try:
        data = store.get(key, version_id or "")
    except StoreError as exc:
        raise_if_unreachable(exc, store)
        report.add(_report_problem(run_id, f"report {key} is missing or unreadable in {store.url} ({exc})"))
        return None
    _other_report_versions(store, key, version_id, run_id, report)
    found = hashlib.sha256(data).hexdigest()
    if found != sha256:
        report.add(_report_problem(run_id, f"report {key} has SHA-256 {found}, the run recorded {sha256}"))
        return None
    return data


def verify_archive(config: Config, rooms: list[str] | None, key: RecipientKey | None = None,
                   trust: list[x509.Certificate] | None = None,
                   progress: Callable[[VerifyReport], None] | None = None, workers: int = 1,
                   redaction: bool = False, pinned: Pinned | None = None) -> VerifyReport:
    """Check ROOMS (None: the whole archive, including every object in every store the index names);
    with KEY, content checks in WORKERS processes (1: in this one), and with REDACTION, CONFIG's redaction
    rules against every record (`redaction_check`). Every signature must be by one of PINNED's signers
    (default: CONFIG's, `configured_pins`)."""
    config.require("mongodb.uri")
    pinned = pinned if pinned is not None else configured_pins(config)
    started = time.monotonic()
    entries = index_database(config)[config["index.entries"]]
    stores: dict[str, ObjectStore] = {}

    def store_of(entry: dict[str, Any]) -> ObjectStore:
        where = (entry.get("store") or {}).get("url", "")
        if where not in stores:
            stores[where] = open_store_for(entry, config)
        return stores[where]

    verifier = Verifier(entries, store_of, config["archive.lease_seconds"], key, trust, workers,
                        config if redaction else None)
    verifier.explain_more = seals.SealBook(config).explained
    verifier.sealed_rooms = lambda rooms: seals.sealed_rooms(config, rooms)
    verifier.runs = index_database(config)[config["index.retention_runs"]]
    verifier.steps = index_database(config)[config["index.retention_steps"]]
    verifier.jobs = index_database(config)[config["index.jobs"]]
    verifier.pinned = pinned
    report = verifier.run(rooms, progress)
    for room in [None] if rooms is None else rooms:  # the whole store, or each room's folder
        # distinct on a plain field (not on the `store` subdocument): every stand-in supports it
        urls = entries.distinct("store.url", {} if room is None else {"room": {"$eq": str(room)}})
        found = [entries.find_one({"store.url": url}, {"store": 1})["store"] for url in urls]
        targets = {}
        for location in [None, *found]:
            store = store_of({"store": location} if location else {})
            targets[store_location(store)["url"]] = store
        for store in targets.values():
            verifier.check_listing(store, "" if room is None else safe_name(room) + "/", report, progress, room)
    if rooms is None:
        check_reports(verifier.runs, store_of, report, trust, verifier.steps, pinned)
        check_plans(verifier.runs, verifier.steps, report, trust, pinned)
    _check_seals(config, entries, rooms, report, trust, pinned)
    report.trust_anchors = [c.subject.rfc4514_string() for c in trust or []]
    report.signers = pinned.described()
    report.timestamp_trust_anchors = [c.subject.rfc4514_string() for c in pinned.timestamp_anchors]
    report.seconds = time.monotonic() - started
    return report


def _check_seals(config: Config, entries: Any, rooms: list[str] | None, report: VerifyReport,
                 trust: list[x509.Certificate] | None = None, pinned: Pinned | None = None) -> None:
    """Every seal of the days ROOMS' entries belong to (None: every seal) recomputes from the index now."""
    days = None
    if rooms is not None:  # each entry's days, and the day before: an entry moved a day on is missed there
        days = [seen for entry in entries.find({"room": {"$in": [str(r) for r in rooms]}})
                for day in (seals.day_of(entry, "archived"), seals.day_of(entry, "deleted")) if day
                for seen in (day, seals.day_before(day)) if seen]
    report.seals, problems = seals.check_days(config, days, trust or (), pinned)
    if rooms is None:  # and the days no seal covers that the seal job no longer reaches
        problems = [*problems, *seals.check_unsealed(config)]
    for problem in problems:
        report.add(Problem(problem.room, problem.version, problem.problem, subject=problem.subject))

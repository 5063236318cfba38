"""Legal retrieval: one archived version fetched, decrypted, verified and written for a person.

Nothing is written unless every check passed, and then all at once: the files go
to a hidden temporary folder beside the target, which is renamed into place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pymongo import DESCENDING

from archiver.attachments import extension
from archiver.audit import Actor
from archiver.config import Config
from archiver.envelope import RecipientKey
from archiver import seals
from archiver.integrity import (MISSING, OBJECT_FACTS, Check, Opened, check_content, check_stored, kept_objects,
                                kept_whole, made_at, missing_out_of_order, recorded_attachments)
from archiver.index import index_database
from archiver.mongo import stored_time
from archiver.names import file_stem, folded
from archiver.offline_checks import cms_command, pdf_command
from archiver.pins import Pinned, configured_pins
from archiver.visible import visible
from archiver.store import ObjectStore, StoreError, StoreUnreachable, open_store_for, store_location, unreachable
from archiver.unarchived import not_held

FILES = {"pdf": "transcript.pdf", "record": "record.json", "record_signature": "record.json.p7s"}


class NotFound(LookupError):
    """No archived entry for that room (or version)."""


class VerificationFailed(RuntimeError):
    def __init__(self, room: str, version: int, failures: list[str], note: str = "") -> None:
        super().__init__(visible(f"{room} v{version}: verification failed: " + "; ".join(failures) + kept_said(note)))
        self.failures = failures


def kept_said(note: str) -> str:
    """A kept version's NOTE (`open_stored`) after its failures: why a tombstone's objects were checked at all."""
    return f"; NOTE: {note}" if note else ""


@dataclass(frozen=True)
class Request:
    room: str
    key: RecipientKey
    out: Path
    reason: str
    actor: Actor
    version: int | None = None
    trust: tuple[x509.Certificate, ...] = ()
    # This deployment's signing certificates (pins.configured_pins) the signatures must be by; None: not pinned
    # (a configuration without signing.certificate), said in the output and verification.json.
    pinned: Pinned | None = None


NOT_PINNED = ("this configuration names no signing certificate (signing.certificate, signing.former_certificates): "
              "the signers were compared with the certificate the index names only, which an insider can write")


def signer_pins(config: Config) -> Pinned | None:
    """The signing certificates CONFIG names, which every signature retrieved must be by; None if it names none."""
    pinned = configured_pins(config)
    return pinned if pinned.signers else None


def find_entry(config: Config, room: str, version: int | None, kept: bool = False) -> dict[str, Any]:
    """The latest archived entry of ROOM (or its VERSION); with KEPT, else a tombstone whose deletion was begun
    and then kept (held: `kept_note`). NotFound if none."""
    db = index_database(config)
    query: dict[str, Any] = {"room": {"$eq": room}, "status": "archived"}
    if version is not None:
        query["version"] = {"$eq": version}
    entry = db[config["index.entries"]].find_one(query, sort=[("version", DESCENDING)])
    if entry is None:
        which = f"version {version} of room" if version is not None else "room"
        tombstone = db[config["index.entries"]].find_one({**query, "status": "deleted"}, sort=[("version", DESCENDING)])
        if tombstone is not None:  # deleted on purpose: say by what, not "unknown"
            if kept and kept_note(config, tombstone):
                return tombstone
            raise _deleted(f"{which} {room!r}", tombstone)
        if version is not None:
            raise NotFound(f"{which} {room!r}: not in the archive index (`archiver search --room` lists its versions)")
        why = not_held(db[config["index.jobs"]], db[config["index.entries"]], room)  # quarantined, say: what to do
        raise NotFound(f"{which} {room!r}: {why}")
    return entry


def _deleted(what: str, tombstone: dict[str, Any], meanwhile: str = "") -> NotFound:
    deletion = tombstone.get("deletion") or {}
    when = deletion.get("at") or tombstone.get("deleted_at")
    how = "being deleted" if deletion.get("state") == "deleting" else "deleted"
    return NotFound(f"{what}: {how} by run {deletion.get('run')} under rule {deletion.get('rule')} "
                    f"on {f'{when:%Y-%m-%d}' if when else 'an unrecorded date'}{meanwhile}; its tombstone keeps "
                    "the object hashes (`archiver verify`)")


def kept_note(config: Config, tombstone: dict[str, Any]) -> str:
    """Why TOMBSTONE's objects are still there ("" if they are not meant to be): its deletion was begun, then
    kept by its run (`kept_whole`); such a version is served from its recorded objects, with this note."""
    db = index_database(config)
    return kept_whole(db[config["index.retention_runs"]], db[config["index.retention_steps"]], tombstone)


def deleted_meanwhile(config: Config, entry: dict[str, Any]) -> None:
    """Raise NotFound if ENTRY, read as archived, is a tombstone now: its objects went missing because a
    retention run or erasure deleted it while it was being fetched, not because the archive is damaged."""
    now = index_database(config)[config["index.entries"]].find_one({"_id": entry["_id"]})
    if now is not None and now.get("status") == "deleted":
        raise _deleted(f"version {entry['version']} of room {entry['room']!r}", now, " (while it was being fetched)")


def open_stored(config: Config, entry: dict[str, Any], store: ObjectStore) -> tuple[Opened, str]:
    """ENTRY (from find_entry(..., kept=True)) fetched and checked against the index (`check_stored`), and the
    note of a kept version ("" for an archived one), which is checked as the archive it was: an object present
    but altered fails its check (exit 3), as an archive's. NotFound if an object is missing because the entry
    is a tombstone: a kept one whose only failures are the objects its deletion removes first missing (it went
    on before it was kept; any other missing is a failed check: `missing_out_of_order`), or one a run deleted
    since it was read."""
    note = kept_note(config, entry) if entry["status"] == "deleted" else ""
    opened = check_stored({**entry, "status": "archived"} if note else entry, store)  # a kept one, as archived
    kept = kept_objects(index_database(config)[config["index.retention_steps"]], entry) if note else None
    if note and not opened.ok and (removed := missing_out_of_order(entry, opened, kept)) is not None:
        opened.checks.append(removed)  # gone since the run kept it: tampering (exit 3), as one altered is
    # Only the objects its deletion, cut short, removed first gone: its deletion went on before it was kept.
    elif note and not opened.ok and all(c.ok or c.detail == MISSING for c in opened.checks):
        raise _deleted(f"version {entry['version']} of room {entry['room']!r}", entry,
                       "; not every object is stored as recorded: " + "; ".join(opened.failures()))
    if not opened.ok and not note:
        deleted_meanwhile(config, entry)  # missing because a run deleted it since it was read: NotFound
    return opened, (f"{note}; retrieved from its recorded objects, each checked against its recorded size and "
                    "SHA-256" if note else "")


def retrieve(config: Config, request: Request, release: Callable[[Path], None] | None = None) -> Path:
    """The folder written (OUT/<room>-v<N>); raises NotFound, EnvelopeError or VerificationFailed.
    RELEASE(folder) is called with every file written, before they become visible: if it raises, they are
    removed (the audit entry comes first)."""
    entry = find_entry(config, request.room, request.version, kept=True)
    suffix = f"-v{entry['version']}"
    present = folded(os.listdir(request.out)) if request.out.is_dir() else {}
    target = request.out / f"{file_stem(entry['room'], present, [suffix])}{suffix}"
    if target.exists():
        raise FileExistsError(f"{target}: already there; not overwritten (choose another --out)")
    store = open_store_for(entry, config)
    opened, note = open_stored(config, entry, store)
    if opened.ok:
        check_content(opened, request.key, list(request.trust), pinned=request.pinned)
    proof = seal_check(config, opened)
    if not opened.ok:
        raise VerificationFailed(entry["room"], entry["version"], opened.failures(), note)
    report = _report(opened, request, store_location(store), proof)
    if note:
        report["note"] = note
    report["versions"] = room_versions(config, entry["room"])
    files = _files(opened, report)
    _write_all(target, files, release)
    return target


def room_versions(config: Config, room: str) -> list[dict[str, Any]]:
    """Every version of ROOM in the index, oldest first: a version is a distinct content, and the one
    retrieved (the latest archived, unless --version) is not necessarily the one the source holds now."""
    fields = ("version", "status", "kind", "archived_at", "deletion.run", "deletion.rule", "deletion.state",
              "attachments_retry_of")
    found = index_database(config)[config["index.entries"]].find(
        {"room": {"$eq": room}}, {**dict.fromkeys(fields, 1), "_id": 0}).sort("version", 1)
    # An entry without a whole version number is a malformed one (verify names it): no version of the room.
    return [{k: _text(v, k) for k, v in doc.items()} for doc in found
            if isinstance(doc.get("version"), int) and not isinstance(doc.get("version"), bool)]


def _files(opened: Opened, report: dict[str, Any]) -> dict[str, bytes]:
    names = attachment_file_names(opened)
    files = {FILES.get(name) or names[name]: data for name, data in opened.plain.items()}
    pem = [c.public_bytes(Encoding.PEM) for c in opened.certificates]
    files["signer.crt.pem"] = pem[0]
    files["certificates.pem"] = b"".join(pem)
    report["files"] = {name: {"sha256": _sha256(data), "size": len(data)} for name, data in sorted(files.items())}
    files["verification.json"] = json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    return files


def seal_check(config: Config, opened: Opened) -> dict[str, Any] | None:
    """The entry's inclusion proof in its day's seal (None: not sealed yet), checked: an entry that is
    not in the seal, or no longer hashes to its sealed leaf, fails the retrieval."""
    try:
        proof = seals.inclusion_proof(config, opened.entry, made=made_at(opened))
    except StoreError as exc:  # the seal's document is missing or altered in the store
        if unreachable(exc):
            raise StoreUnreachable(f"the store holding the seal could not be reached (storage.url, storage.endpoint_url): {exc}") from exc
        opened.checks.append(Check("sealed: the seal of the entry's day can be read", False, str(exc)))
        return None
    if proof is not None:
        ok = proof["in_seal"] and proof["matches_index"]
        why = ("changed since it was sealed: it no longer hashes to its sealed leaf" if proof["in_seal"] else
               "not in the seal of its day (recorded after sealing: `archiver seal` seals it; or planted)")
        opened.checks.append(Check(f"sealed: the entry is leaf {proof.get('index')} of seal {proof['seal']['seq']} "
                                   f"of {proof['day']}, unchanged since", bool(ok),
                                   f"root {proof['seal']['root']}" if ok else why))
    return proof


def _report(opened: Opened, request: Request, store: dict[str, str], proof: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    entry = opened.entry
    return {
        "ok": opened.ok,
        "room": entry["room"],
        "version": entry["version"],
        "retrieved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "retrieved_by": request.actor.as_dict(),
        "reason": request.reason,
        "store": store,
        "entry": {k: _text(entry.get(k), k) for k in ("kind", "ended_at", "archived_at", "source_sha256",
                                                   "signing_certificate_sha256")},
        "objects": {name: _object_facts(opened, name) for name in [*FILES, *sorted(opened.sealed.keys() - FILES.keys())]},
        "checks": [asdict(c) for c in opened.checks],
        "trusted_roots": [c.subject.rfc4514_string() for c in request.trust],
        "signer_trust": ("both signers chain to the trust anchors in trusted_roots" if request.trust else
                         "NOT CHECKED: no trust anchor (--ca or signing.trust_anchors); the signatures are intact "
                         "and made by the certificate the index names, which anyone can arrange"),
        "signers_pinned": (request.pinned.described() if request.pinned else
                           f"NOT PINNED: {NOT_PINNED}"),
        "tools": tool_versions("archiver", "pyHanko", "cryptography"),
        # Shell commands only (each pasted as is into a shell, in this folder); what to make of them in the notes.
        # The first two run with your CA at YOUR-CA.pem (and, for a timestamped transcript, the timestamp
        # authority's at YOUR-TSA-CA.pem); each checks the signer's chain at the time it signed, and its OK line
        # says which time (archiver/offline_checks.py).
        "check_it_yourself": [
            pdf_command("transcript.pdf", "YOUR-CA.pem", "YOUR-TSA-CA.pem"),
            cms_command("record.json.p7s", "record.json", "YOUR-CA.pem"),
            SUMS_COMMAND,
        ],
        "check_it_yourself_notes": [
            "the third command: compare its lines (every file here but this one, attachments/ included) with "
            "'files' below; this file is not signed, so that shows only "
            "that the files are the ones retrieved with it: the two signatures the first two check are what prove "
            "them",
            "inclusion_proof: recompute the root from 'leaf' and 'audit_path' as docs/seals.md shows",
        ],
        "inclusion_proof": proof,
    }


SUMS_COMMAND = "find . -type f ! -name verification.json -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum"
TOOL_DISTRIBUTIONS = {"archiver": "ctlive-archiver"}  # a tool's name in reports -> its installed distribution


def tool_versions(*names: str) -> dict[str, str]:
    """Each tool of NAMES with its installed version, "unknown" when it is not installed as a distribution."""
    versions = {}
    for name in names:
        try:
            versions[name] = package_version(TOOL_DISTRIBUTIONS.get(name, name))
        except PackageNotFoundError:  # a source checkout never installed
            versions[name] = "unknown"
    return versions


def _write_all(target: Path, files: dict[str, bytes], release: Callable[[Path], None] | None = None) -> None:
    """All FILES in TARGET, or nothing: written in a temporary folder, then (after RELEASE) renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(exist_ok=True)  # attachments/
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                os.fsync(out.fileno())
        if release is not None:
            release(target)
        os.rename(staging, target)  # fails if TARGET appeared meanwhile: nothing replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def attachment_file_names(opened: Opened) -> dict[str, str]:
    """Object name -> file under attachments/, from the signed record (the index's copy is checked against it:
    `integrity._attachment_checks`): the position, the name the URL gave (cleaned), and the extension of the
    type sniffed from its bytes."""
    recorded = recorded_attachments(_record(opened))
    files = {}
    for name in opened.plain.keys() - FILES.keys():
        signed = recorded[name]  # a stored file the record does not list fails verification first
        cleaned = _UNSAFE.sub("_", str(signed.get("file_name") or "")).lstrip("._")[:100]
        ext = extension(signed.get("content_type") or "")
        stem = cleaned if cleaned.lower().endswith(f".{ext}") else f"{cleaned or 'file'}.{ext}"
        files[name] = f"attachments/{int(signed['position']):04d}-{stem}"
    return files


def _record(opened: Opened) -> Any:
    try:
        return json.loads(opened.plain.get("record", b"{}"))
    except ValueError:
        return {}


def _object_facts(opened: Opened, name: str) -> dict[str, Any]:
    """The index's description of object NAME for verification.json; an attachment's position, type, fetch
    time and plaintext size and SHA-256 as the signed record states them (the index's are checked equal)."""
    obj = {k: _text(v, k) for k, v in opened.entry["objects"][name].items()}
    signed = recorded_attachments(_record(opened)).get(name)
    if signed is not None:
        obj.update({field: _text(signed.get(theirs), field) for field, theirs in OBJECT_FACTS.items()})
    return obj


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _text(value: Any, name: str = "") -> Any:
    """VALUE for verification.json: a time (a datetime, or a NAME in *_at the server returned as text, as
    nx-27017 does for a date set with $set) in ISO 8601."""
    if name.endswith("_at") and isinstance(value, str):
        value = stored_time(value) or value
    return value.isoformat() if isinstance(value, dt.datetime) else value

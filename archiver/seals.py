"""Seals: each UTC day's index entries under a signed, timestamped Merkle root, locked in the store.

A seal proves, to anyone holding it and the signer's (and timestamp authority's)
certificates, which entries the archive held for a day and what they said, at a
time the authority vouches for. The day an entry belongs to is the day of its
event: `archived_at` for an archive, `deleted_at` for a tombstone (status
`deleted`, issue 10). Each entry's event is one leaf: the canonical JSON of a
fixed list of its fields (see `leaf`, documented in docs/seals.md so an auditor
recomputes it without our code). Leaves are ordered by (event time, room,
version, status), hashed as RFC 6962 leaves, and folded into a root (merkle.py).

The seal document (canonical JSON) holds the day, the root, every leaf's
(room, version, status, leaf hash), the head of the audit log and who sealed it
when; it is signed (detached CMS, `openssl cms -verify`) and its signature
timestamped (RFC 3161, `openssl ts -verify`), all three stored under Object Lock
(`~seals/DAY/...`: no room folder can start with `~`) and recorded in the index
(`index.seals`, the document without its leaf list).

Sealing a day again changes nothing while its entries are as sealed (idempotent).
Entries that arrived later (a clock-skewed or stalled writer) get a new seal,
numbered on, that holds every earlier leaf and names the seal it extends: an
earlier seal is never rewritten. An entry removed or changed since its seal makes
sealing that day refuse (SealConflict) and `verify` name it.

Several sealers (one per `serve`) seal at the same minute. A seal's number is owned before
anything is stored: a sealer reserves (day, seq) by inserting a pending record (unique
index) naming the folder its objects will go to, and completes that record once they are
stored. A sealer that finds the day's next seal reserved by another, within
archive.lease_seconds (the server's clock), skips the day; one reserved longer ago (its
maker died or stalled) is taken over, the old folder kept on the record as `abandoned`:
every object under `~seals/` is explained by a seal record, pending or complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from cryptography import x509
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError, PyMongoError

from archiver import merkle, timestamps
from archiver.certificates import NotValidNow
from archiver.claims import worker_id
from archiver.audit import Actor, AuditLog, SealedHead, open_audit_log
from archiver.config import Config
from archiver.index import index_database
from archiver.mongo import server_ms, stored_time
from archiver.pins import Pinned, configured_pins
from archiver.signing import Signer
from archiver.store import (ObjectMissing, ObjectStore, StoreError, open_store, open_store_for, raise_if_unreachable,
                            store_location)
from archiver.visible import visible

FORMAT = "archiver-seal/1"
LEAF_FORMAT_1 = "archiver-seal-leaf/1"  # tombstone leaves, and archive leaves of entries not marked for /2
LEAF_FORMAT_2 = "archiver-seal-leaf/2"  # archive leaves holding the contact's people (PEOPLE_FIELDS), typed values
LEAF_FORMAT = LEAF_FORMAT_2  # the newest: what a day's first seal is made with (its document says which)
PREFIX = "~seals/"  # safe_name never starts a room folder with "~": seals share no folder with a room
SUFFIXES = (".json", ".json.p7s", ".json.p7s.tsr")  # a seal's objects: its folder (key stem) and these
DAY = dt.timedelta(days=1)

# What an archive leaf holds besides room, version, status and its objects, in the entry's own names.
ARCHIVE_FIELDS = ("archived_at", "kind", "started_at", "ended_at", "ctlive_type", "channel", "service", "agents",
                  "customers", "message_count", "source_sha256", "signing_certificate_sha256")
# What a /2 archive leaf adds: the contact's people, which search and holds read (--agent, --customer). Only an
# entry archived with them holds them from the start (index_entry marks it: ARCHIVE_LEAF_MARK); an older one gets
# them derived later, which must not change the leaf it was sealed with.
PEOPLE_FIELDS = ("opened_by", "handled_by", "present")
ARCHIVE_LEAF_MARK = "archive_leaf_format"
# A tombstone (issue 10) keeps room, version and `objects` (key, size, sha256) and adds these.
TOMBSTONE_FIELDS = ("deleted_at", "deletion_rule", "archived_leaf_sha256")
# A tombstone written while its archive day had no complete seal also keeps its archive leaf's /1 hash when that
# differs: the day's first seal may yet be completed in /1 (one left pending by a sealer from before format 2 and
# taken over). Outside the tombstone leaf (older sealed tombstone leaves stay as they are); a wrong value is a
# leaf that no longer matches the day's signed one, named as any other change.
ARCHIVED_LEAF_1 = "archived_leaf_sha256_1"
EVENT_TIME = {"archived": "archived_at", "deleted": "deleted_at"}
# What an entry with an archived_at can be: `archived_at` is set only as an upload completes (index.complete),
# and an archive only ever becomes a tombstone (retention). An entry relabelled otherwise (`superseded`,
# `uploading`: hidden from search and retrieve) holds no archive event: it reads as removed from its day.
ARCHIVE_STATES = ("archived", "deleted")
# Only what a leaf reads crosses the wire (not the word hashes, participants, warnings...).
LEAF_PROJECTION = {name: 1 for name in ("room", "version", "status", "objects", "superseded_objects",
                                        *ARCHIVE_FIELDS, *PEOPLE_FIELDS, ARCHIVE_LEAF_MARK, *TOMBSTONE_FIELDS,
                                        ARCHIVED_LEAF_1)}


class SealConflict(RuntimeError):
    """A sealed day's entries were removed or changed since: sealing it again would hide that."""


class SealRace(RuntimeError):
    """This sealer stalled past its lease and another took its seal over (its objects stay explained)."""


class SealingRefused(ValueError):
    """The day asked for has not ended yet (plus the grace every writer gets)."""


class MalformedSeal(StoreError):
    """A seal record in a shape no sealer writes (edited by hand): named, never used (a seal that cannot be
    read as recorded, as a store error is)."""


# ---- leaves ---------------------------------------------------------------------------------------

def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8 (the audit log's encoding too)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _time(value: Any) -> Any:
    """Datetimes as ISO 8601 UTC with milliseconds and Z (what MongoDB stores); others unchanged."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, (str, int, float, bool, type(None), list, dict)):
        return value
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return _time(value)


def _order(value: Any) -> tuple[int, Any]:
    """A sort key for any stored value: numbers, then text (each as itself, so that well-formed entries keep
    the order they always had), then anything else by its canonical JSON."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, value
    return (1, value) if isinstance(value, str) else (2, canonical(_plain(value)).decode("utf-8"))


def _hashable(value: Any) -> Any:
    """VALUE as a leaf names it (room, version): as it is, or a document or list edited in as its JSON."""
    return value if isinstance(value, (str, int, float, type(None))) else canonical(_plain(value)).decode("utf-8")


def _typed(value: Any) -> Any:
    """A value of a /2 leaf, exactly: JSON's own types as they are, lists and documents item by item (a document
    with a field name that starts with $ as {"$document": [[name, value], ...]}), a date as {"$date": ISO text}, any
    other value (a str subclass such as BSON JavaScript, an ObjectId, an Int64...) as {"$type": its type, "value":
    its repr}: no stored value reads as another of the same text, which MongoDB's $eq (search, holds) tells apart."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list:
        return [_typed(item) for item in value]
    if kind is dict:
        typed = {str(key): _typed(item) for key, item in value.items()}
        dollar = any(str(key)[:1] == "$" for key in value)
        return {"$document": [[key, item] for key, item in typed.items()]} if dollar else typed
    if kind is dt.datetime:
        return {"$date": _time(value)}
    return {"$type": kind.__name__, "value": repr(value)}


def leaf(entry: dict[str, Any], status: str = "archived", newest: str | None = None) -> bytes:
    """The canonical leaf of ENTRY's STATUS event ("archived" or "deleted"), as documented in docs/seals.md, in
    leaf_format(ENTRY, STATUS, NEWEST). Total: a value edited by hand into any shape is written as it is (the
    leaf then differs), never an error."""
    form = leaf_format(entry, status, newest)
    value = _typed if form == LEAF_FORMAT_2 else _plain
    part_value = value if form == LEAF_FORMAT_2 else (lambda v: v)  # (/1 wrote an object's key, size, sha256 as is)
    stored = entry.get("objects") or {}
    objects = ({name: {part: part_value(o.get(part)) for part in ("key", "size", "sha256")}
                if isinstance(o, dict) else value(o) for name, o in sorted(stored.items(), key=lambda i: _order(i[0]))}
               if isinstance(stored, dict) else value(stored))
    body: dict[str, Any] = {"format": form, "room": value(entry.get("room")),
                            "version": value(entry.get("version")), "status": status, "objects": objects}
    if status == "archived":
        body.update({name: value(entry.get(name)) for name in ARCHIVE_FIELDS})
        if form == LEAF_FORMAT_2:
            body.update({name: value(entry.get(name)) for name in PEOPLE_FIELDS})
        superseded = entry.get("superseded_objects") or []
        body["superseded_objects"] = (value(sorted(superseded, key=_order)) if isinstance(superseded, list)
                                      else value(superseded))
    else:
        body.update({name: value(entry.get(name)) for name in TOMBSTONE_FIELDS})
    return canonical(body)


def leaf_format(entry: dict[str, Any], status: str = "archived", newest: str | None = None) -> str:
    """The format of ENTRY's STATUS leaf in a seal whose sealer wrote NEWEST at most (its document's `leaf_format`:
    day_format; None: this code's newest, LEAF_FORMAT): /2 for the archive leaf of an entry marked so (a mark
    removed, or added to an older entry, changes the leaf: named as an edit), else /1."""
    allowed = LEAF_FORMAT if newest is None else newest
    marked = status == "archived" and entry.get(ARCHIVE_LEAF_MARK) == LEAF_FORMAT_2
    return LEAF_FORMAT_2 if marked and allowed == LEAF_FORMAT_2 else LEAF_FORMAT_1


def day_format(seal: dict[str, Any]) -> str:
    """The newest leaf format SEAL (its signed document, or its record) was made with: a day keeps the format of
    its first seal, whatever the version of the sealer that extends it or of the verifier (a sealer that predates
    format 2 wrote /1, and none before the field existed)."""
    return LEAF_FORMAT_2 if seal.get("leaf_format") == LEAF_FORMAT_2 else LEAF_FORMAT_1


def tombstone_fields(entry: dict[str, Any], rule: str, at: dt.datetime, newest: str | None = None) -> dict[str, Any]:
    """What a tombstone adds to ENTRY (still as archived) when it is deleted under RULE at AT; NEWEST: the format
    of its archive day's seal, if that day is sealed (archive_day_format); None: the newest, and the /1 hash too
    if it differs (ARCHIVED_LEAF_1)."""
    fields = {"deleted_at": at, "deletion_rule": rule, "archived_leaf_sha256": leaf_hash(entry, newest=newest).hex()}
    if newest is None and leaf_format(entry, newest=newest) != LEAF_FORMAT_1:
        fields[ARCHIVED_LEAF_1] = leaf_hash(entry, newest=LEAF_FORMAT_1).hex()
    return fields


def archive_day_format(seals: Any, entry: dict[str, Any]) -> str | None:
    """The leaf format of the seals of ENTRY's archive day (the latest complete seal's record says it), or None
    if that day is not sealed: the format its archive leaf is sealed in, or will be."""
    day = day_of(entry, "archived")
    record = seals.find_one({"day": day, "objects": {"$exists": True}}, {"leaf_format": 1},
                            sort=[("seq", -1)]) if day else None
    return day_format(record) if record is not None else None


def leaf_hash(entry: dict[str, Any], status: str = "archived", newest: str | None = None) -> bytes:
    """The RFC 6962 leaf hash of ENTRY's STATUS event. A tombstone that no longer holds what its
    archive leaf covered carries that leaf's hash as `archived_leaf_sha256` (hex), used as is (in a /1 day, its
    ARCHIVED_LEAF_1 if it has one)."""
    if status == "archived" and entry.get("status") == "deleted" and entry.get("archived_leaf_sha256"):
        kept = ARCHIVED_LEAF_1 if newest == LEAF_FORMAT_1 and entry.get(ARCHIVED_LEAF_1) else "archived_leaf_sha256"
        try:
            return bytes.fromhex(entry[kept])
        except (TypeError, ValueError):  # edited into no hash: the leaf as the entry reads (it then differs)
            pass
    return merkle.leaf_hash(leaf(entry, status, newest))


@dataclass(frozen=True)
class Leaf:
    room: str
    version: int
    status: str
    digest: bytes

    @property
    def ident(self) -> tuple[str, int, str]:
        return self.room, self.version, self.status

    def as_list(self) -> list[Any]:
        return [self.room, self.version, self.status, self.digest.hex()]


def day_of(entry: dict[str, Any], status: str = "archived") -> str | None:
    """The day (YYYY-MM-DD, UTC) whose seal covers ENTRY's STATUS event; None if it has none."""
    when = stored_time(entry.get(EVENT_TIME[status]))
    return None if when is None else when.astimezone(dt.timezone.utc).date().isoformat()


def day_before(day: str) -> str | None:
    """The day before DAY (YYYY-MM-DD); None before year 1."""
    try:
        return (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    except OverflowError:
        return None


def _bounds(day: str) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.timezone.utc)
    return start, start + DAY


def current_leaves(entries: Any, day: str, newest: str | None = None) -> list[Leaf]:
    """Every event of DAY in the index now, in seal order (event time, room, version, status); an archive
    event only of an entry in one of ARCHIVE_STATES.

    An event's time is what `stored_time` reads (as verify does): a date, or ISO 8601 text, which nx-27017
    returns for a date written with $set and a hand edit or another server may store. A range over dates
    alone matches no text on MongoDB or mongomock: such an entry would be in no seal while its day's seal
    claimed the day complete. So text that may read as a time of DAY (an offset moves it up to a day either
    way) is fetched too, and every event is kept by the time it reads as. NEWEST: the day's leaf format
    (day_format of its seals; None: a first seal's, LEAF_FORMAT)."""
    start, end = _bounds(day)
    as_text = {"$type": "string", "$gte": (start - DAY).date().isoformat(), "$lt": (end + DAY).date().isoformat()}
    keyed: dict[tuple[Any, str], tuple[tuple[str, str, int, str], Leaf]] = {}
    for status, when in EVENT_TIME.items():
        for bounds in ({"$gte": start, "$lt": end}, as_text):
            query: dict[str, Any] = {when: bounds, "status": status if status != "archived" else
                                     {"$in": list(ARCHIVE_STATES)}}
            for entry in entries.find(query, LEAF_PROJECTION).batch_size(1000):
                at = stored_time(entry[when])
                if at is not None and start <= at < end:  # (nx-27017's range matches its text too: once each)
                    room, version = _hashable(entry.get("room")), _hashable(entry.get("version"))
                    keyed[(entry["_id"], status)] = ((_time(at), _order(room), _order(version), status),
                                                     Leaf(room, version, status, leaf_hash(entry, status, newest)))
    return [item for _, item in sorted(keyed.values(), key=lambda pair: pair[0])]


# ---- the seal book: the index's `seals` collection and the stored documents -------------------------

@dataclass
class SealOutcome:
    day: str
    action: str  # "sealed", "unchanged", "skipped" (another sealer is making it), "refused", "failed"
    seal: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    detail: str = ""  # why it was skipped, or whose seal left pending it completed

    def __str__(self) -> str:
        if self.seal is None:
            return f"{self.day}: {self.action}: " + ("; ".join(self.problems) or self.detail)
        s = self.seal
        stamped = f", timestamped {s['timestamped_at']}" if s.get("timestamped_at") else ", NOT timestamped"
        took = f"; {self.detail}" if self.detail else ""
        return (f"{self.day}: {self.action}{took} (seal {s['seq']}: {s['count']} entries, root {s['root']}"
                f"{stamped}; {s['objects']['document']['key']})")


class SealBook:
    def __init__(self, config: Config) -> None:
        self.config = config
        db = index_database(config)
        self.entries = db[config["index.entries"]]
        self.seals = db[config["index.seals"]]
        self.audit = AuditLog(db[config["index.audit"]])

    def ensure_indexes(self) -> None:
        self.seals.create_index([("day", ASCENDING), ("seq", ASCENDING)], unique=True, name="day_seq")
        self.seals.create_index([("objects.document.key", ASCENDING)], name="document_key")
        for when in EVENT_TIME.values():  # the day's events, found without a scan
            self.entries.create_index([(when, ASCENDING)], name=when)

    def records(self, day: Any) -> DayRecords:
        """DAY's seal records: complete, reserved, and malformed ones (named, used for nothing)."""
        found = DayRecords()
        today = dt.datetime.now(dt.timezone.utc).date()
        records = self.seals.find({"day": day}, {"_id": 0})
        for record in sorted(records, key=lambda r: r["seq"] if _is_int(r.get("seq")) else 0):
            why = record_problem(record, today)
            if why:
                found.malformed.append((record, why))
            else:
                (found.complete if completed(record) else found.pending).append(record)
        return found

    def of_day(self, day: str) -> list[dict[str, Any]]:
        """DAY's complete seals, by number, whatever else their records carry (a `pending` added by hand does
        not switch a seal off); MalformedSeal if one is in a shape no sealer writes."""
        records = self.records(day)
        for record, why in records.malformed:
            if completed(record):
                raise MalformedSeal(f"{seal_name(record)}: {why}")
        return records.complete

    def reservation(self, record: dict[str, Any]) -> str:
        """RECORD's reservation on the server's clock: "live" (its sealer is at work, within the lease),
        "given up" (older than the lease: its sealer stopped) or "future" (dated ahead of the server's clock:
        no sealer's, written by hand; taken over like one given up)."""
        now = server_ms(self.seals.database)
        at = record["pending"]["at"]
        if at > now + RESERVATION_SKEW_MS:
            return "future"
        return "given up" if at + self.config["archive.lease_seconds"] * 1000 <= now else "live"

    def days(self) -> list[Any]:
        return sorted(self.seals.distinct("day"), key=str)  # (a day edited to another type is named, not sorted out)

    def explained(self, keys: list[str]) -> set[str]:
        """Which of the store KEYS are objects of a recorded seal."""
        found: set[str] = set()
        wanted = [k for k in keys if k.startswith(PREFIX)]
        if not wanted:
            return found
        for name in ("document", "signature", "timestamp"):
            for seal in self.seals.find({f"objects.{name}.key": {"$in": wanted}}, {"objects": 1}):
                objects = seal.get("objects")
                found.update(o.get("key") for o in (objects.values() if isinstance(objects, dict) else ())
                             if isinstance(o, dict))
        # and those under the folder of a pending seal, or of an attempt another sealer took over: a folder
        # named for that record's own day and number (not another seal's, listed there by hand)
        days = sorted({key[len(PREFIX):].split("/", 1)[0] for key in wanted})
        folders: set[str] = set()
        for seal in self.seals.find({"day": {"$in": days}}, {"day": 1, "seq": 1, "pending": 1, "abandoned": 1}):
            pending, abandoned = seal.get("pending"), seal.get("abandoned")
            named = [pending.get("folder") if isinstance(pending, dict) else None,
                     *(abandoned if isinstance(abandoned, list) else ())]
            if _is_int(seal.get("seq")):
                folders.update(f for f in named if isinstance(f, str) and f.startswith(folder_prefix(seal["day"],
                                                                                                     seal["seq"])))
        found.update(key for key in wanted for suffix in SUFFIXES
                     if key.endswith(suffix) and key[:-len(suffix)] in folders)
        return found & set(wanted)

    def store_of(self, seal: dict[str, Any]) -> ObjectStore:
        return open_store_for(seal, self.config)


RESERVATION_SKEW_MS = 5 * 60 * 1000  # a reservation dated further ahead of the server's clock is no sealer's
_RESERVED = ("_id", "day", "seq", "pending", "abandoned")  # what a reservation holds; a completed record more
_PARTS = {"document": True, "signature": True, "timestamp": False}  # a seal's objects: required?


@dataclass
class DayRecords:
    complete: list[dict[str, Any]] = field(default_factory=list)  # by number
    pending: list[dict[str, Any]] = field(default_factory=list)  # reservations
    malformed: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # and why


def seal_name(record: dict[str, Any]) -> str:
    return f"seal {record.get('day')}#{record.get('seq')}"


def folder_prefix(day: str, seq: int) -> str:
    """How the folders of seal SEQ of DAY begin (the sealer adds its time)."""
    return f"{PREFIX}{day}/seal-{seq:04d}-"


def completed(record: dict[str, Any]) -> bool:
    """Whether RECORD was completed, a seal stored and recorded: it holds more than a reservation does. It is
    checked as a seal whatever else it carries (a `pending` added by hand is named, never obeyed)."""
    return any(name not in _RESERVED for name in record)


def record_problem(record: dict[str, Any], today: dt.date) -> str:
    """What makes RECORD unusable ("malformed index record (FIELD ...)"), or "" if its shape is a sealer's."""
    day, seq = record.get("day"), record.get("seq")
    why = ""
    if not (isinstance(day, str) and len(day) == 10 and _is_day(day)):
        why = f"day: {day!r} is not a YYYY-MM-DD day"
    elif day >= today.isoformat():
        why = f"day: {day} has not ended"
    elif not _is_int(seq) or seq < 1:
        why = f"seq: {seq!r} is not a seal number"
    elif not isinstance(record.get("abandoned", []), list) or \
            not all(isinstance(f, str) for f in record.get("abandoned", [])):
        why = "abandoned: not a list of folders"
    elif completed(record):
        why = _objects_problem(record.get("objects"), record.get("store"))
    else:
        why = _reservation_problem(record.get("pending"))
    return f"malformed index record ({why})" if why else ""


def _is_int(value: Any) -> bool:
    """An integer as stored (bson's Int64 is one; a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _objects_problem(objects: Any, store: Any) -> str:
    if not isinstance(objects, dict):
        return f"objects: {type(objects).__name__}, not the seal's objects"
    for part, required in _PARTS.items():
        obj = objects.get(part)
        if obj is None and not required and part not in objects:
            continue
        if not (isinstance(obj, dict) and isinstance(obj.get("key"), str) and obj["key"].startswith(PREFIX)
                and isinstance(obj.get("sha256"), str) and _is_int(obj.get("size"))
                and isinstance(obj.get("version_id", ""), (str, type(None)))):
            return f"objects.{part}: {obj!r:.80}, not an object's key, sha256 and size"
    if objects.keys() - _PARTS.keys():
        return f"objects: {', '.join(sorted(map(str, objects.keys() - _PARTS.keys())))}, not a seal's objects"
    if store is not None and not isinstance(store, dict):
        return f"store: {store!r:.80}, not a store's location"
    return ""


def _reservation_problem(pending: Any) -> str:
    """(A folder named for another seal is named where it counts: it explains nothing, and is not taken over.)"""
    if pending is None:
        return "neither a complete seal nor a reservation (`pending`)"
    if not isinstance(pending, dict):
        return f"pending: {pending!r:.80}, not a reservation"
    if not _is_int(pending.get("at")):
        return f"pending.at: {pending.get('at')!r:.80}, not a time (the server's, in milliseconds)"
    if not isinstance(pending.get("folder"), str):
        return f"pending.folder: {pending.get('folder')!r:.80}, not a folder"
    return ""


def open_book(config: Config) -> SealBook:
    config.require("mongodb.uri")
    book = SealBook(config)
    book.ensure_indexes()
    return book


@dataclass
class StoredSeal:
    """A seal's document as stored, with its tree built once for the inclusion proofs asked of it."""
    document: dict[str, Any]
    _positions: dict[tuple[str, int, str], int] | None = None
    _levels: list[list[bytes]] | None = None

    def position(self, room: str, version: int, status: str) -> int | None:
        if self._positions is None:
            self._positions = {(r, v, s): i for i, (r, v, s, _) in enumerate(self.document["leaves"])}
        return self._positions.get((room, version, status))

    def levels(self) -> list[list[bytes]]:
        if self._levels is None:
            self._levels = merkle.levels([bytes.fromhex(item[3]) for item in self.document["leaves"]])
        return self._levels


_DOCUMENTS: OrderedDict[tuple[str, str, str, str], StoredSeal] = OrderedDict()
_DOCUMENTS_KEPT = 8  # a bundle of many rooms asks for the same few days' seals again and again


def stored_seal(book: SealBook, seal: dict[str, Any]) -> StoredSeal:
    """SEAL's document from the store, checked against the index's SHA-256 (a few are cached)."""
    obj = seal["objects"]["document"]
    store = book.store_of(seal)
    cache_key = (store.url, obj["key"], obj.get("version_id", ""), obj["sha256"])
    if cache_key in _DOCUMENTS:
        _DOCUMENTS.move_to_end(cache_key)
        return _DOCUMENTS[cache_key]
    data = store.get(obj["key"], obj.get("version_id", ""))
    if hashlib.sha256(data).hexdigest() != obj["sha256"]:
        raise StoreError(f"seal document {obj['key']}: its SHA-256 differs from the index (altered?)")
    _DOCUMENTS[cache_key] = stored = StoredSeal(json.loads(data))
    while len(_DOCUMENTS) > _DOCUMENTS_KEPT:
        _DOCUMENTS.popitem(last=False)
    return stored


# ---- sealing -------------------------------------------------------------------------------------

def sealable_days(config: Config, first: dt.date, last: dt.date, now: dt.datetime | None = None) -> list[str]:
    """The days FIRST..LAST; SealingRefused if LAST has not ended yet (plus archive.lease_seconds,
    within which a writer may still record an entry of that day)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if first > last:
        raise SealingRefused(f"--from {first} is after --to {last}")
    if last >= now.date():  # refused before computing its end: 9999-12-31 has none a datetime can hold
        raise SealingRefused(f"{last}: the day has not ended yet (today is {now:%Y-%m-%d} UTC)"
                             + (f"; it can be sealed from {_closes(config, last):%Y-%m-%d %H:%M} UTC"
                                if last < dt.date.max else ""))
    closes = _closes(config, last)
    if closes > now:
        raise SealingRefused(f"{last}: the day has not ended yet; it can be sealed from {closes:%Y-%m-%d %H:%M} UTC")
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _closes(config: Config, day: dt.date) -> dt.datetime:
    """When DAY can be sealed: its end, plus the lease within which a writer may still record an entry of it."""
    return _bounds(day.isoformat())[1] + dt.timedelta(seconds=config["archive.lease_seconds"])


def default_days(config: Config, now: dt.datetime | None = None) -> list[str]:
    """What the scheduled job seals: the last schedule.seal_lookback_days days that can be sealed."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return sealable_days(config, *_job_window(config, now), now)


def _job_window(config: Config, now: dt.datetime) -> tuple[dt.date, dt.date]:
    last = (now - dt.timedelta(seconds=config["archive.lease_seconds"])).date() - dt.timedelta(days=1)
    return last - dt.timedelta(days=config["schedule.seal_lookback_days"] - 1), last


def check_unsealed(config: Config, now: dt.datetime | None = None, limit: int | None = None) -> list[SealProblem]:
    """Each day before the seal job's window (schedule.seal_lookback_days) that holds archive or deletion events
    and has no complete seal: no seal will ever cover them unless someone runs `archiver seal` (serve was down
    longer than the window, a writer's clock was behind). Nothing while the index holds no seal record at all
    (sealing not in use yet: every day would be named). Reads only: an indexed range per gap between sealed
    days, a few queries while every day is sealed; with LIMIT, at most that many entries (status)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    db = index_database(config)
    seals, entries = db[config["index.seals"]], db[config["index.entries"]]
    if seals.find_one({}, {"_id": 1}) is None:
        return []
    window = _job_window(config, now)[0]
    # Sealed as the seal book reads it: a completed record, whatever it carries (a malformed one is named by verify).
    sealed = {record["day"] for record in seals.find({}) if completed(record) and isinstance(record.get("day"), str)}
    found: dict[str, set[tuple[Any, str]]] = {}
    stopped = False
    for n, (day, ident, name) in enumerate(_unsealed_events(entries, sealed, window)):
        if limit is not None and n >= limit:
            stopped = True
            break
        found.setdefault(day, set()).add((ident, name))
    lookback = config["schedule.seal_lookback_days"]
    problems = []
    for day, events in sorted(found.items()):
        named, count = sorted({name for _, name in events}), len({ident for ident, _ in events})
        rooms = ", ".join(named[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")
        problems.append(SealProblem(None, None, f"{count} {'entry' if count == 1 else 'entries'} not sealed ({rooms}), "
                                    f"and the seal job covers only the last {lookback} days "
                                    f"(schedule.seal_lookback_days): run archiver seal --from {day} --to {day}", day))
    if stopped:
        problems.append(SealProblem(None, None, f"stopped counting after {limit} entries not sealed: `archiver verify "
                                                "--all` names every such day", "days not sealed"))
    return problems


def _unsealed_events(entries: Any, sealed: set[Any], window: dt.date) -> Iterator[tuple[str, Any, str]]:
    """(day, entry id, "ROOM vN") of each archive or deletion event before WINDOW on a day not in SEALED."""
    for start, end in _gaps(sealed, window):
        for status, when in EVENT_TIME.items():
            states = list(ARCHIVE_STATES) if status == "archived" else [status]
            as_date = {"$lt": _bounds(end.isoformat())[0], **({"$gte": _bounds(start.isoformat())[0]} if start else {})}
            as_text = {"$type": "string", "$lt": (end + DAY).isoformat(),
                       **({"$gte": (start - DAY).isoformat()} if start and start > dt.date.min else {})}
            for bounds in (as_date, as_text):
                for entry in entries.find({when: bounds, "status": {"$in": states}}, {"room": 1, "version": 1, when: 1}):
                    at = stored_time(entry.get(when))
                    day = at.astimezone(dt.timezone.utc).date() if at is not None else None
                    if day is not None and day < window and day.isoformat() not in sealed:
                        yield day.isoformat(), entry["_id"], f"{entry.get('room')} v{entry.get('version')}"


def _gaps(sealed: set[Any], before: dt.date) -> Iterator[tuple[dt.date | None, dt.date]]:
    """The runs of days before BEFORE that no day of SEALED (YYYY-MM-DD) is in, as [start, end) (start None:
    from the beginning of time)."""
    days = sorted(day for day in map(_date, sealed) if day is not None and day < before)
    start: dt.date | None = None
    for day in days:
        if start is None or day > start:
            yield start, day
        start = day + DAY
    if start is None or start < before:
        yield start, before


def _date(day: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(day)
    except (TypeError, ValueError):
        return None


def seal_days(config: Config, days: list[str], actor: Actor) -> list[SealOutcome]:
    """Seal each of DAYS (idempotent); one day's failure never stops the others."""
    book = open_book(config)
    from archiver.artifacts import configured_identity  # here: importing seals (verify, status) loads no renderer

    signer = Signer(configured_identity(config))
    stamper = timestamps.from_config(config)
    store = open_store(config)
    outcomes = []
    for day in days:
        try:
            outcomes.append(seal_day(book, day, signer, stamper, store, actor))
        except SealConflict as exc:
            outcomes.append(SealOutcome(day, "refused", problems=list(exc.args[1])))
        except (timestamps.TimestampError, StoreError, SealRace, NotValidNow) as exc:  # NotValidNow: the
            # certificate expired while the days were sealed (named, with its notAfter): nothing of the day stored
            outcomes.append(SealOutcome(day, "failed", problems=[str(exc)]))
        except PyMongoError:  # the index out of reach: no day can be sealed
            raise
        except Exception as exc:  # a record or entry in a shape no writer makes: this day fails, the others go on
            outcomes.append(SealOutcome(day, "failed", problems=[f"{type(exc).__name__}: {exc}"]))
    log = open_audit_log(config)
    for outcome in outcomes:
        log.record("seal", actor, outcome={"sealed": "ok", "unchanged": "ok"}.get(outcome.action, outcome.action),
                   filters=_audited_fields(outcome), detail=str(outcome))
    return outcomes


def _audited_fields(outcome: SealOutcome) -> dict[str, Any]:
    """What a seal run's audit entry records as data (its `filters`, which the entry's hash covers): the day, and
    the seal it made or found unchanged (number, root), which `check_audited_seals` reads."""
    seal = outcome.seal
    return {"day": outcome.day, **({"seq": seal["seq"], "root": seal["root"]} if seal is not None else {})}


def seal_day(book: SealBook, day: str, signer: Signer, stamper: Any, store: ObjectStore, actor: Actor
             ) -> SealOutcome:
    earlier, waiting = _day_state(book, day)
    if waiting is not None and book.reservation(waiting) == "live":
        return SealOutcome(day, "skipped", detail=_being_made(waiting))
    abandoned = [*waiting.get("abandoned", []), waiting["pending"]["folder"]] if waiting else []
    latest_document = stored_seal(book, earlier[-1]).document if earlier else None
    # The day's first seal names its format; one a sealer taken over signed before it stopped does too
    first = latest_document if earlier else _first_signed(book, waiting, abandoned) if waiting else None
    newest = day_format(first) if first is not None else LEAF_FORMAT
    leaves = current_leaves(book.entries, day, newest)
    previous = None
    if earlier:
        latest = earlier[-1]
        sealed = [_leaf_from_list(item) for item in latest_document["leaves"]]
        problems = compare(sealed, leaves, day, latest["seq"])
        dropped = [str(p) for p in problems if p.kind != "uncovered"]
        if dropped:
            raise SealConflict(f"{day}: sealed entries removed or changed", dropped)
        if not problems and waiting is None:  # (a seal left pending is completed, even with nothing new)
            return SealOutcome(day, "unchanged", latest)
        # entries arrived after the last seal: a new seal holds every sealed leaf first, then them
        known = {leaf.ident for leaf in sealed}
        leaves = sealed + [leaf for leaf in leaves if leaf.ident not in known]
        previous = {"seq": latest["seq"], "document_sha256": latest["objects"]["document"]["sha256"],
                    "count": latest["count"], "root": latest["root"]}
    seq = earlier[-1]["seq"] + 1 if earlier else 1  # (not their count: a seal removed from the index leaves a gap)
    if waiting:  # what the sealer taken over may have signed and stored stays sealed
        taken = {leaf.ident: leaf.digest for leaf in leaves}
        problems = folder_problems(book, waiting, abandoned, taken)
        if problems:
            raise SealConflict(f"{day}: the seal left pending cannot be taken over", problems)
    created = dt.datetime.now(dt.timezone.utc)
    mine = {"owner": worker_id(), "at": server_ms(book.seals.database), "sealer": actor.as_dict(),
            "folder": f"{folder_prefix(day, seq)}{created:%Y%m%dT%H%M%S%fZ}"}
    other = _reserve(book, day, seq, mine, waiting)
    if other:
        return SealOutcome(day, "skipped", detail=other)
    stored: list[str] = []
    try:
        seal = _make_seal(book, day, leaves, seq, previous, signer, stamper, store, actor, created, mine, stored,
                          abandoned, newest)
    except Exception as exc:
        _release(book, day, seq, mine, stored, exc)
        raise
    _complete(book, seal, mine)
    return SealOutcome(day, "sealed", seal, detail=_taken_over(waiting) if waiting else "")


def _day_state(book: SealBook, day: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """DAY's complete seals and the reservation of its next one, if any; MalformedSeal if a record is in a
    shape no sealer writes, or a reservation is not of the day's next seal (edited by hand)."""
    records = book.records(day)
    if records.malformed:
        raise MalformedSeal("; ".join(f"{seal_name(record)}: {why}" for record, why in records.malformed))
    earlier = records.complete
    following = earlier[-1]["seq"] + 1 if earlier else 1
    stray = [record for record in records.pending if record["seq"] != following]
    if stray:
        raise MalformedSeal(f"{seal_name(stray[0])}: a reservation, but the day's next seal is {following}")
    return earlier, (records.pending or [None])[0]


def folder_problems(book: SealBook, record: dict[str, Any], folders: list[str],
                    kept: dict[tuple[str, int, str], bytes]) -> list[str]:
    """What FOLDERS, the folders RECORD's seal took over from sealers that stopped, say against it. Each must
    be named for RECORD's day and number. A sealer taken over may have signed and stored its seal before it
    lost its reservation: a seal document signed there must be of that day and number (else a seal removed
    from the index hides there), and every leaf of it must be KEPT (room, version, status: hash) by RECORD's."""
    day, seq = record["day"], record["seq"]
    own = folder_prefix(day, seq)
    found = []
    for folder in folders:
        if not folder.startswith(own):
            found.append(f"abandoned folder {visible(folder)} is not one of {seal_name(record)}'s ({own}…)")
        document = _signed_document(book, record, folder) if folder.startswith(PREFIX) else None
        if document is None:
            continue
        if (document.get("day"), document.get("seq")) != (day, seq):
            found.append(f"abandoned folder {visible(folder)} holds a signed seal {document.get('day')}#{document.get('seq')}"
                         ", which is not on record (removed from the index?)")
            continue
        dropped = [f"{room} v{version} ({status})" for room, version, status, digest in document["leaves"]
                   if kept.get((room, version, status), b"").hex() != digest]
        if dropped:
            found.append(f"abandoned folder {visible(folder)} holds this seal as signed by a sealer taken over, with entries "
                         f"since removed or changed: {', '.join(dropped[:10])}"
                         + (f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""))
    return found


def _first_signed(book: SealBook, record: dict[str, Any], folders: list[str]) -> dict[str, Any] | None:
    """The first seal document signed in FOLDERS (those of RECORD's seal, a pending one, that sealers which
    stopped left), if any: a sealer from before leaf format 2 may have signed the day's first seal in /1."""
    return next(filter(None, (_signed_document(book, record, folder) for folder in folders
                              if folder.startswith(PREFIX))), None)


def _signed_document(book: SealBook, record: dict[str, Any], folder: str) -> dict[str, Any] | None:
    """The seal document stored under FOLDER if its signature verifies by one of our signing certificates (a
    sealer's, not planted); else None."""
    from archiver.integrity import check_detached_signature  # (integrity imports this module)

    store = book.store_of(record)
    try:
        body, signature = store.get(folder + ".json"), store.get(folder + ".json.p7s")
    except StoreError as exc:
        raise_if_unreachable(exc, store)
        return None  # nothing (or not all) stored there
    try:
        document = json.loads(body)
        leaves = document["leaves"]
        if not (isinstance(document, dict) and all(isinstance(item, list) and len(item) == 4 for item in leaves)):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    pinned = configured_pins(book.config)  # our signing certificates: a document signed by anyone else is none of ours
    if any(True for _ in check_detached_signature(body, signature, None, document.get("signer_sha256"),
                                                  pinned=pinned)):
        return None
    return document


def _reserve(book: SealBook, day: str, seq: int, mine: dict[str, Any], waiting: dict[str, Any] | None) -> str:
    """Own seal SEQ of DAY before storing anything: "" once it is ours (a new pending record, or WAITING's
    taken over, its folder kept as `abandoned`), else why another sealer has it."""
    if waiting is None:
        try:
            book.seals.insert_one({"day": day, "seq": seq, "pending": dict(mine)})
            return ""
        except DuplicateKeyError:  # another sealer numbered it first
            other = book.seals.find_one({"day": day, "seq": seq}, {"_id": 0}) or {}
            return _being_made(other) if "pending" in other else \
                f"seal {seq} was made by another sealer at the same moment"
    old = waiting["pending"]
    taken = book.seals.update_one({"day": day, "seq": waiting["seq"], "pending.owner": old.get("owner"),
                                   "pending.at": old.get("at")},
                                  {"$set": {"pending": dict(mine)}, "$push": {"abandoned": old.get("folder")}})
    return "" if taken.matched_count else f"seal {seq} was taken over by another sealer at the same moment"


def _complete(book: SealBook, seal: dict[str, Any], mine: dict[str, Any]) -> None:
    done = book.seals.update_one({"day": seal["day"], "seq": seal["seq"], "pending.owner": mine["owner"]},
                                 {"$set": dict(seal), "$unset": {"pending": ""}})
    if not done.matched_count:
        raise SealRace(f"{seal['day']}: seal {seal['seq']}: this sealer stalled past its lease (archive.lease_seconds) "
                       f"and another sealer took it over; the objects it stored under {mine['folder']} stay "
                       "explained by that seal's record (abandoned)")


def _release(book: SealBook, day: str, seq: int, mine: dict[str, Any], stored: list[str], exc: Exception) -> None:
    """A seal that failed: its number freed if nothing was stored, else left pending (explaining what was)
    and given up at once, so that the next run completes it without waiting for the lease."""
    owned = {"day": day, "seq": seq, "pending.owner": mine["owner"]}
    try:
        if stored:
            book.seals.update_one(owned, {"$set": {"pending.at": 0, "pending.failed": str(exc)[:500]}})
        else:
            book.seals.delete_one(owned)
    except PyMongoError:  # the index is out of reach: the reservation lapses after the lease instead
        pass


def _being_made(record: dict[str, Any]) -> str:
    pending = record.get("pending") or {}
    return (f"seal {record.get('seq')} is being made by another sealer ({visible(pending.get('owner'))}, since "
            f"{_ms_time(pending.get('at'))} UTC); it stays that sealer's")


def _taken_over(record: dict[str, Any]) -> str:
    pending = record.get("pending") or {}
    failed = f", which failed: {visible(pending['failed'])}" if pending.get("failed") else ""
    return (f"completed seal {record.get('seq')}, left pending by {visible(pending.get('owner'))} (since "
            f"{_ms_time(pending.get('at'))} UTC{failed}); its objects under {visible(pending.get('folder'))} stay, "
            "kept as abandoned")


def _ms_time(ms: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ms)


def _document(day: str, seq: int, leaves: list[Leaf], previous: dict[str, Any] | None, head: dict[str, Any] | None,
              created: dt.datetime, actor: Actor, signer: Signer, abandoned: list[str],
              previous_day: dict[str, Any] | None, leaf_format: str = LEAF_FORMAT) -> dict[str, Any]:
    """The seal document (docs/seals.md). ABANDONED: the folders of the sealers it took over, signed so that
    no folder can be added to the record later (a seal removed from the index passed off as one of them).
    PREVIOUS_DAY: the latest seal of the nearest earlier sealed day (`chain_link`), so that a sealed day
    removed with its seal is named by the next day's."""
    root, count = merkle.root(leaf.digest for leaf in leaves)
    start, end = _bounds(day)
    return {
        "format": FORMAT, "day": day, "from": _time(start), "to": _time(end), "seq": seq, "count": count,
        "root": root.hex(), "leaves": [leaf.as_list() for leaf in leaves], "previous": previous,
        "audit_head": {"seq": head["seq"], "hash": head["hash"]} if head else None,
        "created_at": _time(created), "sealer": actor.as_dict(), "signer_sha256": signer.identity.fingerprint,
        "leaf_format": leaf_format, "abandoned": abandoned, "previous_day": previous_day,
    }


def _make_seal(book: SealBook, day: str, leaves: list[Leaf], seq: int, previous: dict[str, Any] | None,
               signer: Signer, stamper: Any, store: ObjectStore, actor: Actor, created: dt.datetime,
               mine: dict[str, Any], stored: list[str], abandoned: list[str], newest: str = LEAF_FORMAT
               ) -> dict[str, Any]:
    """The seal's document (its leaves of formats up to NEWEST) signed, timestamped and stored under MINE's folder
    (each key added to STORED as it is); its record, to complete the reservation with."""
    document = _document(day, seq, leaves, previous, book.audit.head(), created, actor, signer, abandoned,
                         chain_link(book, day), newest)
    end = _bounds(day)[1]
    body = canonical(document)
    signature = signer.sign_detached(body)
    token = timestamps.timestamp(stamper, signature) if stamper is not None else None
    if token is not None and timestamps.token_time(token) < end:  # our clock ran ahead: the day is not over
        raise timestamps.TimestampError(f"{day}: the authority dates the seal {timestamps.token_time(token)}, "
                                        "before the day ended; check this machine's clock")
    if token is not None:
        signer.identity.validity.check_timestamp(timestamps.token_time(token))
    folder = mine["folder"]
    blobs = {"document": (folder + ".json", body), "signature": (folder + ".json.p7s", signature)}
    if token is not None:
        blobs["timestamp"] = (folder + ".json.p7s.tsr", token)
    retain = (created + dt.timedelta(days=book.config["storage.retain_days"])
              if book.config["storage.object_lock_mode"] else None)
    objects = {}
    for name, (key, data) in blobs.items():
        digest = hashlib.sha256(data).hexdigest()
        stored.append(key)  # before the put: one cut short may have stored it all the same
        put = store.put(key, data, digest, retain)
        objects[name] = {"key": key, "sha256": digest, "size": len(data), "version_id": put.version_id}
    record = {k: v for k, v in document.items() if k != "leaves"}
    record.update(objects=objects, store=store_location(store),
                  timestamped_at=_time(timestamps.token_time(token)) if token else None)
    return record


def chain_link(book: SealBook, day: str) -> dict[str, Any] | None:
    """The latest complete seal of the nearest day before DAY that has one (day, seq, its document's SHA-256), as
    a new seal of DAY names it; None if there is none (the archive's first sealed day). Reservations are passed
    over (filtered here: not every MongoDB-compatible server matches `$exists` on a nested field alike)."""
    for record in book.seals.find({"day": {"$lt": day}}, {"day": 1, "seq": 1, "objects.document.sha256": 1}
                                  ).sort([("day", -1), ("seq", -1)]):
        objects = record.get("objects")
        document = objects.get("document") if isinstance(objects, dict) else None
        sha256 = document.get("sha256") if isinstance(document, dict) else None
        if isinstance(record.get("day"), str) and _is_int(record.get("seq")) and isinstance(sha256, str):
            return {"day": record["day"], "seq": record["seq"], "document_sha256": sha256}
    return None


def _leaf_from_list(item: list[Any]) -> Leaf:
    room, version, status, digest = item
    return Leaf(room, version, status, bytes.fromhex(digest))


@dataclass(frozen=True)
class Difference:
    room: str
    version: int
    kind: str  # "removed", "changed", "uncovered"
    text: str

    def __str__(self) -> str:
        return f"{self.room} v{self.version}: {self.text}"


def compare(sealed: list[Leaf], current: list[Leaf], day: str, seq: int) -> list[Difference]:
    """What differs between a seal's leaves and the index now, each named by its room and version."""
    now = {leaf.ident: leaf.digest for leaf in current}
    then = {leaf.ident: leaf.digest for leaf in sealed}
    found = []
    for (room, version, status), digest in then.items():
        if (room, version, status) not in now:
            found.append(Difference(room, version, "removed", f"its {status} entry was removed from the index "
                                                              f"after {day} was sealed (seal {seq})"))
        elif now[(room, version, status)] != digest:
            found.append(Difference(room, version, "changed", f"its {status} index entry was changed after {day} "
                                                              f"was sealed (seal {seq}): it no longer hashes to "
                                                              "the sealed leaf"))
    for room, version, status in sorted(now.keys() - then.keys(), key=lambda ident: tuple(map(_order, ident))):
        found.append(Difference(room, version, "uncovered", f"its {status} entry is dated {day} but not covered "
                                f"by seal {seq} (recorded after sealing: `archiver seal` seals it; or planted)"))
    return found


# ---- verification --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SealProblem:
    room: str | None  # the room, or None for a problem of the seal itself or of the audit log:
    version: int | None
    problem: str
    subject: str | None = None  # then "seal DAY#SEQ" or "audit log"


def _of_seal(name: str, problem: str) -> SealProblem:
    return SealProblem(None, None, problem, name)


def check_days(config: Config, days: list[str] | None, trust: Sequence[x509.Certificate] = (),
               pinned: Pinned | None = None) -> tuple[int, list[SealProblem]]:
    """Every seal of DAYS (None: every sealed day): how many seals were checked, and what is wrong; each
    seal's signer must be one of PINNED's (default: CONFIG's signing certificates, never the one a seal names),
    and with TRUST (anchors), chain to one. Reads only (an auditor's read access suffices);
    sealing made the indexes these queries use."""
    config.require("mongodb.uri")
    pinned = pinned if pinned is not None else configured_pins(config)
    book = SealBook(config)
    problems: list[SealProblem] = []
    checked = 0
    wanted = book.days() if days is None else sorted(set(days))
    audit_ok = not book.audit.verify() if wanted else True  # walks the whole log: only when seals are checked
    if not audit_ok:
        problems.append(SealProblem(None, None, "its chain is broken (see `archiver audit verify`): the sealed "
                                                "heads cannot vouch for it", "audit log"))
    for day in wanted:
        checked += _check_day(book, day, problems, trust, pinned)
    if days is None:  # the whole archive: no sealed day may be gone
        problems.extend(check_gaps(book))
        problems.extend(check_audited_seals(book))
    return checked, problems


def check_gaps(book: SealBook) -> list[SealProblem]:
    """Each run of days between two sealed days that has no seal record at all, where the sealed day after it
    was first sealed before seals were chained. An empty day is sealed too, so days sealed one after the other
    leave none; a sealed day removed (its record and its objects) leaves one, and so does a day never sealed (a
    seal run that failed, days sealed by hand out of order): named, with what seals it. A chained seal after the
    gap says which day was sealed before it when it was made (`_check_chain` names that seal gone): a gap it
    skips is not named. Such a gap is days never sealed, or days removed before that seal was made (its
    `previous_day` was read from the index as left): those only `check_audited_seals` names. Days before the first sealed day (sealing not in use yet) and
    after the last (not sealed yet) are not named: removing the newest sealed days is caught by
    `check_audited_seals` only. One query (seal records are small, and one a day or so)."""
    today = dt.datetime.now(dt.timezone.utc).date()
    recorded: set[dt.date] = set()  # days with any record (a reservation, a malformed record: named elsewhere)
    first_seal: dict[dt.date, tuple[int, bool]] = {}  # days with a complete, well-formed seal: their first's
    # number, and whether it names the day sealed before it (`previous_day`): the state when the day was sealed
    for record in book.seals.find({}, {"_id": 0}):
        day = _date(record.get("day"))
        if day is not None and day < today:
            recorded.add(day)
            first = completed(record) and not record_problem(record, today) and \
                (day not in first_seal or record["seq"] < first_seal[day][0])
            if first:
                first_seal[day] = (record["seq"], "previous_day" in record)
    if not first_seal:
        return []
    ends = sorted(first_seal)
    chained = {day for day, (_, names) in first_seal.items() if names}
    known = sorted(day for day in recorded if ends[0] <= day <= ends[-1])
    problems = []
    for before, after in zip(known, known[1:]):
        if after - before > DAY:
            first, last = before + DAY, after - DAY
            sealed_before, sealed_after = ends[bisect_left(ends, first) - 1], ends[bisect_left(ends, last)]
            if sealed_after not in chained:
                problems.append(_gap(first, last, sealed_before, sealed_after))
    return problems


def _gap(first: dt.date, last: dt.date, before: dt.date, after: dt.date) -> SealProblem:
    span = (last - first).days + 1
    one = span == 1
    it = "it" if one else "them"
    return SealProblem(None, None, f"not sealed{'' if one else f' ({span} days)'}, between sealed days {before} and "
                                   f"{after}: a sealed day may have been removed (its seal record and objects); if "
                                   f"never sealed (a failed seal run, or days sealed by hand around {it}), `archiver "
                                   f"seal --from {first} --to {last}` seals {it}",
                       first.isoformat() if one else f"{first} to {last}")


# What a seal run's audit entry said of the seal before its fields recorded it (`_audited_fields`): its detail,
# SealOutcome's text, begins with the day and ends with the seal (number, root). Text in between (a take-over's
# owner, failure, folder) came from the index unescaped: it may hold newlines and even this wording, so the
# day is read at the start and the seal from the last match.
_AUDITED_DAY = re.compile(r"\A(\d{4}-\d{2}-\d{2}): (?:sealed|unchanged)\b")
_AUDITED_SEAL = re.compile(r"\(seal (\d+): \d+ entries, root ([0-9a-f]{64})")
_ROOT = re.compile(r"\A[0-9a-f]{64}\Z")


def audited_seal(entry: dict[str, Any]) -> tuple[str, int, str] | None:
    """The seal (day, number, root) a seal run's audit ENTRY records: from its fields (`filters`, covered by the
    entry's hash), or from the text of an entry written before they were; None if it says neither."""
    fields = entry.get("filters")
    if isinstance(fields, dict) and {"seq", "root"} <= fields.keys():
        day, seq, root = fields.get("day"), fields["seq"], fields["root"]
        ok = _date(day) is not None and _is_int(seq) and isinstance(root, str) and _ROOT.match(root)
        return (day, seq, root) if ok else None
    return audited_seal_text(entry.get("detail"))


def audited_seal_text(detail: Any) -> tuple[str, int, str] | None:
    """The seal (day, number, root) an older seal run's audit entry names in its DETAIL; None if none."""
    day = _AUDITED_DAY.match(detail) if isinstance(detail, str) else None
    seals_named = list(_AUDITED_SEAL.finditer(detail)) if day else []
    if not seals_named:
        return None
    return day.group(1), int(seals_named[-1].group(1)), seals_named[-1].group(2)


def check_audited_seals(book: SealBook) -> list[SealProblem]:
    """Each seal the audit log records as made (or found unchanged) whose record is gone, or holds another root
    (the day sealed again after its seal was removed); and each `seal` entry with outcome ok that names no seal
    (edited: it could hide one). Reads the log's `seal` entries (a scan of the log, as checking its chain is)
    and every seal record's day, number and root."""
    roots: dict[tuple[str, int], Any] = {}
    for record in book.seals.find({}, {"day": 1, "seq": 1, "root": 1}):
        if isinstance(record.get("day"), str) and _is_int(record.get("seq")):
            roots[(record["day"], record["seq"])] = record.get("root")
    problems, seen = [], set()
    for entry in book.audit.collection.find({"action": "seal", "outcome": "ok"},
                                            {"seq": 1, "at": 1, "filters": 1, "detail": 1}).sort("seq", ASCENDING):
        found = audited_seal(entry)
        if found is None:
            problems.append(_of_seal("audit log", f"entry {visible(entry.get('seq'))} ({visible(entry.get('at'))}) "
                                                  "records a seal run as ok, but says of no seal which day, number "
                                                  "and root it has (edited?): a seal it named cannot be checked"))
            continue
        if found in seen:
            continue
        seen.add(found)
        day, seq, root = found
        said = f"the audit log records it (entry {entry.get('seq')}, {entry.get('at')}: root {root})"
        if (day, seq) not in roots:
            problems.append(_of_seal(f"seal {day}#{seq}", f"{said}, but the index holds no such seal (removed?)"))
        elif roots[(day, seq)] != root:
            problems.append(_of_seal(f"seal {day}#{seq}", f"{said}, but its record holds root {roots[(day, seq)]} "
                                                          "(removed and sealed again?)"))
    return problems


SEALED_DAYS_SEARCHED = 31  # `verify ROOM` of a room not in the index: how many of the newest sealed days it reads


def sealed_rooms(config: Config, rooms: list[str]) -> dict[str, str]:
    """Where a seal holds each of ROOMS (which the index no longer does): "sealed on DAY (seal N: version V) and
    removed from the archive index since", for those found. Bounded: reads the latest seal of the days each room's
    archive job names (`_job_days`) and of the newest SEALED_DAYS_SEARCHED sealed days, each once, one store read
    each; `verify --all` recomputes every sealed day."""
    if not rooms:
        return {}
    book, wanted = SealBook(config), set(rooms)
    jobs = index_database(config)[config["index.jobs"]]
    hinted = [day for job in jobs.find({"_id": {"$in": sorted(wanted)}}, {"ended_at": 1, "finished_at": 1})
              for day in _job_days(job)]
    newest = sorted((day for day in map(_date, book.days()) if day is not None), reverse=True)
    found: dict[str, str] = {}
    for day in dict.fromkeys([*hinted, *newest[:SEALED_DAYS_SEARCHED]]):
        if len(found) == len(wanted):
            break
        complete = book.records(day.isoformat()).complete
        if not complete:
            continue
        try:
            leaves = stored_seal(book, complete[-1]).document["leaves"]
            versions: dict[Any, set[Any]] = {}
            for item in leaves:
                if item[0] in wanted and item[0] not in found:
                    versions.setdefault(item[0], set()).add(item[1])
        except (StoreError, ValueError, KeyError, TypeError, IndexError):  # named by `verify --all`
            continue
        for room, held in versions.items():
            listed = sorted(held, key=_order)
            found[room] = (f"sealed on {day} (seal {complete[-1]['seq']}: version{'s' if len(listed) > 1 else ''} "
                           f"{', '.join(map(str, listed))}) and removed from the archive index since")
    return found


def _job_days(job: dict[str, Any]) -> list[dt.date]:
    """The days an archive of JOB's room is dated on if honest: the day its archive finished (server ms) and the
    one before, the day its chat ended and the one after."""
    days = []
    try:
        finished = dt.datetime.fromtimestamp(job["finished_at"] / 1000, dt.timezone.utc).date()
        days += [finished, finished - DAY]
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        pass
    ended = stored_time(job.get("ended_at"))
    if ended is not None:
        day = ended.astimezone(dt.timezone.utc).date()
        days += [day, day + DAY] if day < dt.date.max else [day]
    return days


def _check_day(book: SealBook, day: Any, problems: list[SealProblem], trust: Sequence[x509.Certificate],
               pinned: Pinned) -> int:
    """DAY's seal records into PROBLEMS; how many seals were checked. A complete seal is checked whatever its
    record carries; a reservation is named once its lease ran out, or at once if dated ahead of the server."""
    records = book.records(day)
    problems.extend(_of_seal(seal_name(record), why) for record, why in records.malformed)
    seals = records.complete
    following = seals[-1]["seq"] + 1 if seals else 1
    for record in records.pending:
        state = book.reservation(record)
        if record["seq"] != following:
            problems.append(_of_seal(seal_name(record), f"a reservation, but the day's next seal is {following} "
                                                        "(edited by hand?)"))
        elif state == "future":
            problems.append(_of_seal(seal_name(record), "its reservation is dated in the future "
                                     f"({_ms_time(record['pending']['at'])} UTC, by the server's clock): no "
                                     "sealer's; the next `archiver seal` of the day takes it over"))
        elif state == "given up":
            problems.append(_of_seal(seal_name(record), _left_pending(record)))
    problems.extend(_of_seal(seal_name(record), "a complete seal's record carries `pending` (edited by hand?): "
                                                "checked as complete") for record in seals if "pending" in record)
    on_record = {record.get("seq") for record, _ in records.malformed if completed(record)} | \
        {seal["seq"] for seal in seals}
    by_seq = {seal["seq"]: seal for seal in seals}
    later: list[Leaf] | None = None  # the leaves of the seal after this one
    for seal in reversed(seals):
        if seal["seq"] > 1 and seal["seq"] - 1 not in on_record:
            problems.append(_of_seal(seal_name(seal), f"it extends seal {seal['seq'] - 1}, which is not on record "
                                                       "(removed from the index?)"))
        leaves, found = _check_seal(book, seal, by_seq.get(seal["seq"] - 1), later, trust, pinned)
        problems.extend(found)
        later = leaves if leaves is not None else later
    return len(seals)


def _left_pending(record: dict[str, Any]) -> str:
    pending, day = record["pending"], record["day"]
    why = (f"that failed while storing it ({visible(pending['failed'])})" if pending.get("failed")
           else f"that stopped while making it (killed? {visible(pending.get('owner'))}, since "
                f"{_ms_time(pending.get('at'))} UTC)")
    return (f"left pending by a sealer {why}; its objects under {visible(pending.get('folder'))} are explained by it; the "
            f"next `archiver seal --from {day} --to {day}` completes it (so does the seal job, for a day within "
            "schedule.seal_lookback_days)")


def _check_seal(book: SealBook, seal: dict[str, Any], before: dict[str, Any] | None, later: list[Leaf] | None,
                trust: Sequence[x509.Certificate] = (), pinned: Pinned | None = None
                ) -> tuple[list[Leaf] | None, list[SealProblem]]:
    """SEAL's objects, document, signature, timestamp and audit head; then its leaves against the index
    (the latest seal of a day) or against the seal that extends it (LATER). Returns its leaves too."""
    name = f"seal {seal['day']}#{seal['seq']}"
    problems: list[SealProblem] = []
    blobs = _fetch_objects(book, seal, name, problems)
    if "document" not in blobs:
        return None, problems
    document = json.loads(blobs["document"])
    problems.extend(_check_document(name, seal, document, before))
    if "timestamp" in blobs and _stamped_before_end(blobs["timestamp"], seal["day"]):
        problems.append(_of_seal(name, "its timestamp is earlier than the end of the day it seals"))
    if "signature" in blobs:
        from archiver.integrity import check_detached_signature  # (integrity imports this module)
        problems.extend(_of_seal(name, problem) for problem in check_detached_signature(
            blobs["document"], blobs["signature"], blobs.get("timestamp"), document.get("signer_sha256"), trust,
            pinned))
    problems.extend(_check_audit_head(book, name, document.get("audit_head")))
    problems.extend(_check_chain(book, name, document.get("previous_day")))
    sealed = [_leaf_from_list(item) for item in document.get("leaves", [])]
    problems.extend(_of_seal(name, problem) for problem in folder_problems(
        book, seal, seal.get("abandoned", []), {leaf.ident: leaf.digest for leaf in sealed}))
    if later is None:
        current = current_leaves(book.entries, seal["day"], day_format(document))
        problems.extend(SealProblem(d.room, d.version, d.text) for d in compare(sealed, current, seal["day"], seal["seq"]))
    else:
        kept = {leaf.ident: leaf.digest for leaf in later}
        problems.extend(SealProblem(leaf.room, leaf.version, f"sealed by {name} but dropped or changed by the "
                                                             "seal that extends it")
                        for leaf in sealed if kept.get(leaf.ident) != leaf.digest)
    return sealed, problems


def _stamped_before_end(token: bytes, day: str) -> bool:
    try:
        return timestamps.token_time(token) < _bounds(day)[1]
    except Exception:  # an unreadable token is named by the signature checks
        return False


def _fetch_objects(book: SealBook, seal: dict[str, Any], name: str, problems: list[SealProblem]) -> dict[str, bytes]:
    store = book.store_of(seal)
    blobs: dict[str, bytes] = {}
    for part, obj in seal["objects"].items():
        try:
            data = store.get(obj["key"], obj.get("version_id", ""))
        except ObjectMissing:
            problems.append(_of_seal(name, f"{part} {obj['key']} is missing from the store"))
            continue
        except StoreError as exc:
            raise_if_unreachable(exc, store)
            problems.append(_of_seal(name, f"{part} {obj['key']}: cannot read it ({exc})"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != obj["sha256"] or len(data) != obj["size"]:
            problems.append(_of_seal(name, f"{part} {obj['key']} was altered in the store "
                                                    f"(SHA-256 {digest}, index {obj['sha256']})"))
            continue
        blobs[part] = data
    return blobs


def _check_document(name: str, seal: dict[str, Any], document: dict[str, Any], before: dict[str, Any] | None
                    ) -> Iterator[SealProblem]:
    # (`abandoned` is signed since seals took it into their documents; `pending` on a complete seal is named)
    unsigned = {"objects", "store", "timestamped_at", "pending"} | (set() if "abandoned" in document else {"abandoned"})
    recorded = _plain({k: v for k, v in seal.items() if k not in unsigned})
    stored = {k: v for k, v in document.items() if k != "leaves"}
    if canonical(recorded) != canonical(stored):
        differ = sorted(k for k in recorded.keys() | stored.keys() if recorded.get(k) != stored.get(k))
        yield _of_seal(name, f"the index copy differs from the stored seal in {', '.join(differ)}")
    root, count = merkle.root(bytes.fromhex(item[3]) for item in document.get("leaves", []))
    if root.hex() != document.get("root") or count != document.get("count"):
        yield _of_seal(name, f"its leaves do not recompute its root ({count} leaves, root {root.hex()})")
    if before is not None and (document.get("previous") or {}).get("document_sha256") != \
            before["objects"]["document"]["sha256"]:
        yield _of_seal(name, f"it does not name seal {before['seq']} of its day as the one it extends")


def _check_chain(book: SealBook, name: str, link: Any) -> Iterator[SealProblem]:
    """The seal LINK names as the latest of the nearest earlier sealed day when NAME was made (its signed
    `previous_day`) must still be on record, as it was. (None: NAME was the first sealed day; a seal made before
    seals were chained has no `previous_day`.)"""
    if link is None:
        return
    day, seq = (link.get("day"), link.get("seq")) if isinstance(link, dict) else (None, None)
    record = book.seals.find_one({"day": day, "seq": seq}, {"objects": 1}) if isinstance(day, str) and _is_int(seq) \
        else None
    objects = (record or {}).get("objects")
    document = objects.get("document") if isinstance(objects, dict) else None
    held = document.get("sha256") if isinstance(document, dict) else None
    follows = f"it follows seal {day}#{seq}, the latest of the day sealed before it (its signed document says so)"
    if record is None:
        yield _of_seal(name, f"{follows}, which is not on record: a sealed day removed (its seal and entries)?")
    elif held != link.get("document_sha256"):
        yield _of_seal(name, f"{follows}, with document SHA-256 {link.get('document_sha256')}, but that seal's record "
                             f"names {held} (removed and sealed again?)")


def sealed_audit_heads(config: Config) -> list[SealedHead]:
    """The audit log heads the seals recorded (their index copies; `archiver verify` checks those against
    the signed stored seals). Reads only."""
    config.require("mongodb.uri")
    seals = index_database(config)[config["index.seals"]]
    heads = []
    for seal in seals.find({"audit_head": {"$ne": None}}, {"day": 1, "seq": 1, "audit_head": 1}):
        head = seal["audit_head"] if isinstance(seal["audit_head"], dict) else {}
        if type(head.get("seq")) is int and isinstance(head.get("hash"), str):  # else `archiver verify` names it
            heads.append(SealedHead(f"seal {seal.get('day')}#{seal.get('seq')}", head["seq"], head["hash"]))
    return heads


def _check_audit_head(book: SealBook, name: str, head: dict[str, Any] | None) -> Iterator[SealProblem]:
    if head is None:
        return
    found = book.audit.collection.find_one({"seq": head["seq"]}, {"hash": 1})
    if found is None:
        yield _of_seal(name, f"audit log entry {head['seq']}, the head when sealed, was removed")
    elif found.get("hash") != head["hash"]:
        yield _of_seal(name, f"audit log entry {head['seq']}, the head when sealed, was changed")


# ---- inclusion proofs ----------------------------------------------------------------------------

def inclusion_proof(config: Config, entry: dict[str, Any], status: str = "archived",
                    made: dt.datetime | None = None) -> dict[str, Any] | None:
    """ENTRY's audit path to the root of the latest seal of its day, with everything an auditor needs
    to recompute it (docs/seals.md); None when its day is not sealed yet. MADE: when the signed record
    says the version was made; if on an earlier day, that day's seal is read too."""
    day = day_of(entry, status)
    if day is None:
        return None
    book = SealBook(config)
    # Made the day before: the entry may be sealed there with its time moved a day on since (to a day not
    # sealed yet, say); found where it was sealed, it fails as changed instead of passing as "not sealed yet".
    earlier = day_before(day) if made is not None and made.astimezone(dt.timezone.utc).date().isoformat() < day else None
    found = _sealed_in(book, earlier, entry, status) if earlier else None
    if found is None or found[2] is None:
        found = _sealed_in(book, day, entry, status)
    else:
        day = earlier
    if found is None:
        return None
    seals, stored, position = found
    seal = seals[-1]
    newest = day_format(stored.document)
    digest = leaf_hash(entry, status, newest)
    proof: dict[str, Any] = {
        "day": day, "seal": {k: seal[k] for k in ("seq", "count", "root", "created_at", "timestamped_at")},
        "seal_objects": seal["objects"], "seal_store": seal.get("store"),
        "leaf_format": leaf_format(entry, status, newest), "leaf": leaf(entry, status, newest).decode("utf-8"),
        "leaf_sha256": digest.hex(),
        "in_seal": position is not None,
    }
    if position is None:
        return proof
    tree = stored.levels()
    proof.update(index=position, tree_size=len(tree[0]),
                 audit_path=[h.hex() for h in merkle.path_from_levels(tree, position)],
                 matches_index=tree[0][position] == digest)
    return proof


def _sealed_in(book: SealBook, day: str, entry: dict[str, Any], status: str
               ) -> tuple[list[dict[str, Any]], StoredSeal, int | None] | None:
    """DAY's seals, its latest one's stored document, and ENTRY's position there; None if DAY has no seal."""
    seals = book.of_day(day)
    if not seals:
        return None
    stored = stored_seal(book, seals[-1])
    return seals, stored, stored.position(entry["room"], entry["version"], status)


def seal_files(config: Config, proof: dict[str, Any]) -> dict[str, bytes]:
    """The stored seal a PROOF leads to, by file name (seal.json, seal.json.p7s, seal.json.p7s.tsr when
    timestamped), each checked against the SHA-256 the index records: what a case bundle ships beside
    the proof so that openssl alone can check the root it ends at (docs/seals.md)."""
    store = open_store_for({"store": proof.get("seal_store")}, config)
    names = {"document": "seal.json", "signature": "seal.json.p7s", "timestamp": "seal.json.p7s.tsr"}
    files = {}
    for part, obj in proof["seal_objects"].items():
        data = store.get(obj["key"], obj.get("version_id", ""))
        if hashlib.sha256(data).hexdigest() != obj["sha256"]:
            raise StoreError(f"seal {part} {obj['key']}: its SHA-256 differs from the index (altered?)")
        files[names[part]] = data
    return files


def proof_check(proof: dict[str, Any]) -> bool:
    """Whether PROOF leads from its leaf to its seal's root (what docs/seals.md shows in a few lines)."""
    if not proof.get("in_seal"):
        return False
    digest = merkle.leaf_hash(proof["leaf"].encode("utf-8"))
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    return merkle.root_from_path(digest, proof["index"], proof["tree_size"], path).hex() == proof["seal"]["root"]

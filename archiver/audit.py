"""The audit log: who searched, retrieved or verified what, when and why, chained by hash.

Append-only by construction: entry N holds the hash of entry N-1 and its own hash
over a canonical encoding of its fields, and `seq` has a unique index, so two
writers appending at once cannot both become entry N (the loser retries as N+1).
Editing an entry without recomputing the hashes after it, or removing or
reordering entries, breaks the chain there and `verify` names the entry. Someone
with write access who edits an entry and recomputes every hash after it, or
removes the newest entries, leaves a chain that is consistent: that is caught
only against a head recorded elsewhere, the heads the seals record (`verify`
with SEALED heads). After the last sealed head nothing can catch it (there is
no signature over the log itself).

An entry names at most ROOMS_LISTED rooms (the first, sorted) with the count
and a SHA-256 over the whole sorted list (`room_summary`), so any scope fits
MongoDB's 16 MiB document limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pwd
import socket
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from archiver.config import Config
from archiver.index import index_database
from archiver.visible import utf8_safe

GENESIS = "0" * 64
MAX_RETRIES = 100
ROOMS_LISTED = 1000  # rooms named in one entry; the rest are counted and hashed (rooms_total, rooms_sha256)
FORMAT = 2
# The fields the hash covers: format 1 (entries without `format`), and format 2 (rooms bounded).
FIELDS = ("seq", "at", "action", "actor", "reason", "filters", "rooms", "outcome", "detail", "prev")
FIELDS_2 = (*FIELDS, "format", "rooms_total", "rooms_sha256")


@dataclass(frozen=True)
class Actor:
    user: str  # the OS user, always
    host: str
    on_behalf_of: str = ""  # `--actor`: who the user says they act for (stated, not checked)

    @classmethod
    def current(cls, stated: str = "") -> "Actor":
        """The OS user and host; STATED (`--actor`) is added beside them, never instead."""
        return cls(_os_user(), socket.gethostname(), stated)

    def as_dict(self) -> dict[str, str]:
        stated = {"on_behalf_of": self.on_behalf_of} if self.on_behalf_of else {}
        return {"user": self.user, "host": self.host, **stated}


def _os_user() -> str:
    """The process's user by its uid (never USER or LOGNAME, which anyone sets: getpass reads them first)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container's uid with no passwd entry
        return f"uid {uid}"


@dataclass(frozen=True)
class RoomSummary:
    listed: list[str]  # the first ROOMS_LISTED of the sorted, distinct rooms
    total: int
    sha256: str  # over every room of the sorted list, each followed by "\n" (UTF-8)


def room_summary(rooms: Iterable[str]) -> RoomSummary:
    """ROOMS (any order, repeats allowed) as an entry holds them."""
    return sorted_room_summary(sorted(set(rooms)))


def sorted_room_summary(rooms: Iterable[str]) -> RoomSummary:
    """ROOMS already sorted (repeats next to each other), streamed: a scope of millions is never held."""
    digest, listed, total, last = hashlib.sha256(), [], 0, None
    for room in rooms:
        if room == last:
            continue
        last, total = room, total + 1
        digest.update(room.encode("utf-8", "surrogateescape") + b"\n")
        if len(listed) < ROOMS_LISTED:
            listed.append(room)
    return RoomSummary(listed, total, digest.hexdigest())


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.problem}"


@dataclass(frozen=True)
class SealedHead:
    """The head of the log a seal recorded when it was made."""
    seal: str  # "seal DAY#SEQ"
    seq: int
    hash: str


class AuditError(RuntimeError):
    """The log could not be appended to (the database refused the write, or too many concurrent writers)."""


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the entry's format's fields (sorted keys, no spaces, UTF-8)."""
    body = {name: entry.get(name) for name in (FIELDS_2 if entry.get("format") == FORMAT else FIELDS)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_index([("seq", ASCENDING)], unique=True, name="seq")

    def head(self) -> dict[str, Any] | None:
        return self.collection.find_one({}, sort=[("seq", DESCENDING)])

    def record(self, action: str, actor: Actor, *, outcome: str, reason: str = "",
               filters: dict[str, Any] | None = None, rooms: Iterable[str] | RoomSummary | None = None,
               detail: str = "") -> dict[str, Any]:
        """Append one entry; retried as the next number when another writer took this one. AuditError if
        the database refuses it (full disk, no write permission...): the caller must not go on as if
        it were recorded."""
        summary = rooms if isinstance(rooms, RoomSummary) else room_summary(rooms or [])
        try:
            for _ in range(MAX_RETRIES):
                head = self.head()
                entry = {"seq": (head["seq"] + 1) if head else 1, "at": _now(), "action": action,
                         "actor": actor.as_dict(), "reason": utf8_safe(reason), "filters": _plain(filters or {}),
                         "rooms": summary.listed, "rooms_total": summary.total, "rooms_sha256": summary.sha256,
                         "outcome": outcome, "detail": utf8_safe(detail), "prev": head["hash"] if head else GENESIS,
                         "format": FORMAT}
                entry["hash"] = entry_hash(entry)
                try:
                    self.collection.insert_one(dict(entry))
                except DuplicateKeyError:
                    continue
                return entry
        except (PyMongoError, BSONError, ValueError) as exc:
            raise AuditError(f"the audit log could not be written ({type(exc).__name__}: {exc})") from exc
        raise AuditError(f"audit log: could not append after {MAX_RETRIES} attempts (too many writers?)")

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry in order, streamed."""
        for doc in self.collection.find({}, {"_id": 0}).sort("seq", ASCENDING):
            yield doc

    def verify(self, sealed: Iterable[SealedHead] = ()) -> list[ChainProblem]:
        """The first break in the chain (an edited, malformed, removed or reordered entry); else, against
        the SEALED heads, an entry that differs from the head a seal recorded (edited, the hashes after it
        recomputed) or a sealed head no longer there (the newest entries removed)."""
        heads: dict[int, list[SealedHead]] = {}
        for head in sealed:
            heads.setdefault(head.seq, []).append(head)
        expected_seq, prev, matched = 1, GENESIS, 0  # matched: the last entry a sealed head vouches for
        for entry in self.entries():
            problem = _check(entry, expected_seq, prev)
            if problem:
                seq = entry.get("seq")
                return [ChainProblem(seq if _number(seq) else expected_seq, problem)]
            for head in heads.pop(entry["seq"], []):
                if head.hash != entry["hash"]:
                    return [ChainProblem(entry["seq"], f"differs from the head {head.seal} recorded: an entry from "
                                                       f"{matched + 1} to {entry['seq']} was changed and the hashes "
                                                       "after it recomputed")]
                matched = entry["seq"]
            expected_seq, prev = entry["seq"] + 1, entry["hash"]
        if heads:
            seq = min(heads)
            return [ChainProblem(seq, f"missing, though {heads[seq][0].seal} recorded it as the head: entries from "
                                      f"{expected_seq} on were removed")]
        return []


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(entry: dict[str, Any], expected_seq: int, prev: str) -> str:
    if not _number(entry.get("seq")):
        return f"malformed: its number (seq) is {entry.get('seq')!r}, not an integer"
    try:
        digest = entry_hash(entry)
    except (TypeError, ValueError) as exc:  # a value JSON cannot hold (a BSON date...): not written by us
        return f"malformed: a field holds a value no entry is written with ({exc})"
    if digest != entry.get("hash"):
        return "edited (its hash does not match its content)"
    if entry["seq"] != expected_seq:
        return f"entries removed before it (expected number {expected_seq})"
    if entry.get("prev") != prev:
        return "removed or reordered entries before it (it does not follow the previous entry's hash)"
    return ""


def _plain(filters: dict[str, Any]) -> dict[str, Any]:
    """Filters as JSON-safe values (dates as ISO text), so the hash survives a round trip."""
    return json.loads(json.dumps(filters, default=str, sort_keys=True))


def open_audit_log(config: Config) -> AuditLog:
    """The log, to append to (its unique index made if missing)."""
    log = read_audit_log(config)
    log.ensure_indexes()
    return log


def read_audit_log(config: Config) -> AuditLog:
    """The log, to read only: nothing created, so a read-only database role suffices."""
    config.require("mongodb.uri")
    return AuditLog(index_database(config)[config["index.audit"]])

"""The audit log: who searched, retrieved or verified what, when and why, chained by hash.

Append-only by construction: entry N holds the hash of entry N-1 and its own hash
over a canonical encoding of its fields, and `seq` has a unique index, so two
writers appending at once cannot both become entry N (the loser retries as N+1).
Editing, removing or reordering an entry breaks the chain at that entry, and
`verify` names it. Removing the *last* entries leaves a shorter chain that still
verifies: that is caught only against a head recorded elsewhere (seals, issue 9
item 6, record `head()`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from typing import Any, Iterator

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from archiver.config import Config
from archiver.index import index_database

GENESIS = "0" * 64
MAX_RETRIES = 100
# The fields the hash covers, in this order; a new field needs a new chain format.
FIELDS = ("seq", "at", "action", "actor", "reason", "filters", "rooms", "outcome", "detail", "prev")


@dataclass(frozen=True)
class Actor:
    user: str
    host: str

    @classmethod
    def current(cls, override: str = "") -> "Actor":
        """The OS user and host, or OVERRIDE (`--actor`) as the user on this host."""
        return cls(override or getpass.getuser(), socket.gethostname())

    def as_dict(self) -> dict[str, str]:
        return {"user": self.user, "host": self.host}


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.problem}"


class AuditError(RuntimeError):
    """The log could not be appended to (too many concurrent writers)."""


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of FIELDS (sorted keys, no spaces, UTF-8)."""
    body = {name: entry.get(name) for name in FIELDS}
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
               filters: dict[str, Any] | None = None, rooms: list[str] | None = None,
               detail: str = "") -> dict[str, Any]:
        """Append one entry; retried as the next number when another writer took this one."""
        for _ in range(MAX_RETRIES):
            head = self.head()
            entry = {"seq": (head["seq"] + 1) if head else 1, "at": _now(), "action": action,
                     "actor": actor.as_dict(), "reason": reason, "filters": _plain(filters or {}),
                     "rooms": list(rooms or []), "outcome": outcome, "detail": detail,
                     "prev": head["hash"] if head else GENESIS}
            entry["hash"] = entry_hash(entry)
            try:
                self.collection.insert_one(dict(entry))
            except DuplicateKeyError:
                continue
            return entry
        raise AuditError(f"audit log: could not append after {MAX_RETRIES} attempts (too many writers?)")

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry in order, streamed."""
        for doc in self.collection.find({}, {"_id": 0}).sort("seq", ASCENDING):
            yield doc

    def verify(self) -> list[ChainProblem]:
        """The first break in the chain (edited, removed or reordered entry), or nothing."""
        expected_seq, prev = 1, GENESIS
        for entry in self.entries():
            problem = _check(entry, expected_seq, prev)
            if problem:
                return [ChainProblem(entry.get("seq", expected_seq), problem)]
            expected_seq, prev = entry["seq"] + 1, entry["hash"]
        return []


def _check(entry: dict[str, Any], expected_seq: int, prev: str) -> str:
    if entry_hash(entry) != entry.get("hash"):
        return "edited (its hash does not match its content)"
    if entry["seq"] != expected_seq:
        return f"entries removed before it (expected number {expected_seq})"
    if entry["prev"] != prev:
        return "removed or reordered entries before it (it does not follow the previous entry's hash)"
    return ""


def _plain(filters: dict[str, Any]) -> dict[str, Any]:
    """Filters as JSON-safe values (dates as ISO text), so the hash survives a round trip."""
    return json.loads(json.dumps(filters, default=str, sort_keys=True))


def open_audit_log(config: Config) -> AuditLog:
    config.require("mongodb.uri")
    log = AuditLog(index_database(config)[config["index.audit"]])
    log.ensure_indexes()
    return log

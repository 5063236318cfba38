"""The archive index: one MongoDB document per archived version of a room.

An entry is written as `uploading` for (room, version) *before* any object is
stored, and rewritten as `archived`, with every object's key, hash and version
id, after. Every object of a version lives under that version's folder, so a
crash in between leaves an entry that says where to look: the next attempt
records whatever reached the store under `superseded_objects` and stores new
objects. Each attempt carries its own token (`attempt`): only the attempt that
holds the entry can complete it, and one that lost it (its lease ran out and
another worker took over) records its objects as superseded. Nothing in the
store is unaccounted for.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Iterator, Mapping

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from archiver.claims import now
from archiver.names import version_folder
from archiver.visible import utf8_safe


# Where an entry names its stored objects; each is indexed, so a key in the store finds its entry.
OBJECT_KEY_FIELDS = ("objects.pdf.key", "objects.record.key", "objects.record_signature.key", "superseded_objects",
                     "attachment_keys")


class VersionConflict(RuntimeError):
    """Another worker recorded this room's version first."""


class ArchiveIndex:
    def __init__(self, entries: Collection) -> None:
        self.entries = entries

    def ensure_indexes(self) -> None:
        self.entries.create_index([("room", ASCENDING), ("version", ASCENDING)], unique=True, name="room_version")
        self.entries.create_index(
            [("room", ASCENDING), ("source_sha256", ASCENDING)], unique=True, name="room_content"
        )
        for field in ("ended_at", "started_at", "agents", "customers", "opened_by", "handled_by", "present",
                      "ctlive_type", "channel", "status"):
            self.entries.create_index([(field, ASCENDING)], name=field)
        # search (--service, --text) and verify (which entry explains a stored object)
        for field in ("service", "terms", *OBJECT_KEY_FIELDS):
            self.entries.create_index([(field, ASCENDING)], name=field)
        self.entries.create_index([("attachments_retry_until", ASCENDING)], name="attachments_retry_until")

    def versions(self, rooms: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every entry of each of ROOMS, oldest version first, in one query."""
        found: dict[str, list[dict[str, Any]]] = {room: [] for room in rooms}
        for doc in self.entries.find({"room": {"$in": rooms}}).sort("version", ASCENDING):
            found[doc["room"]].append(doc)
        return found

    def archived_rooms(self) -> Iterator[str]:
        """Every room with an archived version, once each, in order (through the (room, version) index)."""
        last = None
        # Exactly the (room, version) index's order, the status read from each: no in-memory sort on a real
        # MongoDB, however many entries.
        for doc in self.entries.find({}, {"room": 1, "status": 1, "_id": 0}).sort([("room", ASCENDING),
                                                                                   ("version", ASCENDING)]):
            if doc.get("status") == "archived" and doc["room"] != last:
                last = doc["room"]
                yield last

    def archived_contents(self, rooms: list[str]) -> dict[str, tuple[set[str], float | None]]:
        """For each of ROOMS with archived versions: their source digests, and the newest message
        time any of them holds (None if one predates that record), in one query."""
        found: dict[str, tuple[set[str], float | None]] = {}
        for doc in self.entries.find({"room": {"$in": rooms}, "status": "archived"},
                                     {"room": 1, "source_sha256": 1, "newest_message_ms": 1}):
            digests, newest = found.get(doc["room"], (set(), 0.0))
            mine = doc.get("newest_message_ms")
            digests.add(doc["source_sha256"])
            found[doc["room"]] = digests, None if newest is None or mine is None else max(newest, mine)
        return found

    def with_content(self, room: str, source_sha256: str) -> dict[str, Any] | None:
        """ROOM's newest archived version of exactly that source content, if any (versions need not be in
        content order: a chat reverted to earlier content matches an earlier version). A version made by
        an attachment retry holds the source digest in `documents_sha256` and has more files than the
        one it completes, so it is preferred."""
        return self.entries.find_one({"room": room, "status": "archived", "$or": [
            {"source_sha256": source_sha256}, {"documents_sha256": source_sha256}]}, sort=[("version", DESCENDING)])

    def attachment_retries_due(self, at: dt.datetime) -> dict[str, str]:
        """Room -> kind of the rooms whose latest archived version missed files that a retry may fetch
        now (inside its window, past its backoff: see archiver.attachment_retries)."""
        due = {}
        waited = {"$or": [{"attachments_retry_after": {"$exists": False}}, {"attachments_retry_after": {"$lte": at}}]}
        for doc in self.entries.find({"status": "archived", "attachments_retry_until": {"$gt": at}, **waited},
                                     {"room": 1, "version": 1, "kind": 1}):
            latest = self.latest(doc["room"])
            if latest is not None and latest["version"] == doc["version"]:
                due[doc["room"]] = doc.get("kind", "ended")
        return due

    def postpone_attachment_retry(self, room: str, version: int, after: dt.datetime, retries: int) -> None:
        """The retry of ROOM's VERSION fetched nothing more: the next one not before AFTER."""
        self.entries.update_one({"room": room, "version": version, "status": "archived"},
                                {"$set": {"attachments_retry_after": after, "attachments_retries": retries}})

    def latest(self, room: str) -> dict[str, Any] | None:
        return self.entries.find_one({"room": room, "status": "archived"}, sort=[("version", DESCENDING)])

    def begin(self, planned: list[tuple[str, int, str]], newest_ms: Mapping[str, float | None] | None = None
              ) -> tuple[list[dict[str, Any]], list[str]]:
        """Record that each (room, version, source_sha256) is being stored, before any object is.

        NEWEST_MS: each room's newest message time in that content, which discovery compares
        with the source to notice later messages. One write for all; returns the entries made
        and the rooms whose version another worker recorded first.
        """
        newest_ms = newest_ms or {}
        docs = [{"room": room, "version": version, "folder": version_folder(room, version),
                 "source_sha256": digest, "status": "uploading",
                 "attempt": _token(), "objects": {}, "superseded_objects": [], "created_at": now(),
                 "newest_message_ms": newest_ms.get(room)}
                for room, version, digest in planned]
        if not docs:
            return [], []
        try:
            self.entries.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
            taken = {e["index"] for e in exc.details["writeErrors"]}
            return [d for i, d in enumerate(docs) if i not in taken], [docs[i]["room"] for i in sorted(taken)]
        return docs, []

    def replan(self, previous: dict[str, Any], leftovers: list[str]) -> dict[str, Any]:
        """Take over an entry an earlier attempt left (crash, failed upload, lost lease) or that was
        closed (its content is back): whatever reached the store is kept as superseded, and the
        earlier attempt can no longer complete it."""
        doc = self.entries.find_one_and_update(
            {"_id": previous["_id"], "status": {"$in": ["uploading", "superseded"]}},
            # `taken_over`: an earlier attempt may still add what it stored, so never abandoned.
            {"$set": {"attempt": _token(), "taken_over": True, "status": "uploading"},
             "$unset": {"superseded_because": ""},
             "$addToSet": {"superseded_objects": {"$each": leftovers}}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise VersionConflict(f"room {previous['room']!r}: version {previous['version']} "
                                  "was completed by another worker")
        return doc

    def complete(self, done: list[tuple[dict[str, Any], dict[str, Any], int, str]], writer: str
                 ) -> tuple[list[str], dict[str, str]]:
        """Record each (stub, built entry, attempts, last error) as archived, in one write.

        Returns the rooms whose entry this attempt no longer held (another worker took it
        over or completed it), and the rooms whose entry the index refused as a duplicate
        of another one, with the error: the objects of both are recorded as superseded.
        """
        if not done:
            return [], {}
        writes = [UpdateOne({"_id": stub["_id"], "status": "uploading", "attempt": stub["attempt"]},
                            {"$set": {**_without(entry, "superseded_objects", "created_at"), "status": "archived",
                                      "archived_at": now(), "archived_by": writer, "attempts": attempts,
                                      "last_error": utf8_safe(last_error)}})
                  for stub, entry, attempts, last_error in done]
        matched, refused = self._write_completions(writes, done)
        if matched + len(refused) == len(done):
            return [], refused
        held = {d["_id"]: d.get("attempt") for d in self.entries.find(
            {"_id": {"$in": [stub["_id"] for stub, *_ in done]}, "status": "archived"}, {"attempt": 1})}
        lost = [(stub, entry) for stub, entry, *_ in done
                if held.get(stub["_id"]) != stub["attempt"] and stub["room"] not in refused]
        for stub, entry in lost:  # rare: a worker that stalled past its lease
            self.set_aside(stub, [o["key"] for o in entry["objects"].values()])
        return [stub["room"] for stub, _ in lost], refused

    def _write_completions(self, writes: list[UpdateOne], done: list[tuple[dict[str, Any], dict[str, Any], int, str]]
                           ) -> tuple[int, dict[str, str]]:
        """Apply WRITES; how many matched, and the rooms refused for a duplicate key (objects set aside)."""
        try:
            return self.entries.bulk_write(writes, ordered=False).matched_count, {}
        except BulkWriteError as exc:
            details = exc.details
            if any(e.get("code") != 11000 for e in details.get("writeErrors", [])):
                raise
        refused = {}
        for error in details["writeErrors"]:
            stub, entry, *_ = done[error["index"]]
            self.set_aside(stub, [o["key"] for o in entry["objects"].values()])
            refused[stub["room"]] = (f"room {stub['room']!r}: the index refused version {stub['version']} "
                                     f"as a duplicate key ({error.get('errmsg', '')})")
        return details.get("nMatched", 0), refused

    def close(self, entry: dict[str, Any], leftovers: list[str], why: str) -> None:
        """End an upload that will not complete as it is: `superseded`, with what reached the store
        set aside; the attempt that began it can no longer complete it."""
        self.entries.update_one({"_id": entry["_id"], "status": "uploading"},
                                {"$set": {"status": "superseded", "attempt": _token(), "taken_over": True,
                                          "superseded_because": utf8_safe(why)},
                                 "$addToSet": {"superseded_objects": {"$each": leftovers}}})

    def set_aside(self, stub: dict[str, Any], keys: list[str]) -> None:
        """Record objects an attempt stored but will not complete with as superseded on its entry."""
        if keys:
            self.entries.update_one({"_id": stub["_id"]}, {"$addToSet": {"superseded_objects": {"$each": keys}}})

    def abandon(self, doc: dict[str, Any]) -> None:
        """Drop our entry if it is ours alone and nothing was stored for it (its chat failed to build)."""
        self.entries.delete_one({"_id": doc["_id"], "status": "uploading", "attempt": doc["attempt"],
                                 "superseded_objects": {"$size": 0},  # not `[]`: nx-27017 cannot compare lists
                                 "taken_over": {"$exists": False}})


def _token() -> str:
    return uuid.uuid4().hex


def _without(doc: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in fields}


def index_database(config: Any) -> Any:
    """The database holding the index, jobs and audit log (index.uri, or the source cluster); Unreachable,
    naming the setting, if no server answers."""
    from archiver.mongo import index_uri, reachable

    return reachable(*index_uri(config))[config["index.database"]]

"""The archive index: one MongoDB document per archived version of a room.

An entry is written as `uploading` for (room, version) *before* any object is
stored, and rewritten as `archived`, with every object's key, hash and version
id, after. Every object of a version lives under that version's folder, so a
crash in between leaves an entry that says where to look: the next attempt
records whatever reached the store under `superseded_objects` and stores new
objects. Nothing in the store is unaccounted for.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from archiver.claims import now


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
        for field in ("ended_at", "agents", "customers", "ctlive_type", "channel", "status"):
            self.entries.create_index([(field, ASCENDING)], name=field)

    def versions(self, rooms: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every entry of each of ROOMS, oldest version first, in one query."""
        found: dict[str, list[dict[str, Any]]] = {room: [] for room in rooms}
        for doc in self.entries.find({"room": {"$in": rooms}}).sort("version", ASCENDING):
            found[doc["room"]].append(doc)
        return found

    def latest(self, room: str) -> dict[str, Any] | None:
        return self.entries.find_one({"room": room, "status": "archived"}, sort=[("version", DESCENDING)])

    # Entries are always written whole (never $set piecemeal): every field keeps its
    # exact BSON type on any server, and an entry never mixes two attempts.

    def begin(self, planned: list[tuple[str, int, str]]) -> tuple[list[dict[str, Any]], list[str]]:
        """Record that each (room, version, source_sha256) is being stored, before any object is.

        One write for all; returns the entries made and the rooms whose version another
        worker recorded first.
        """
        docs = [{"room": room, "version": version, "source_sha256": digest, "status": "uploading",
                 "objects": {}, "superseded_objects": [], "created_at": now()} for room, version, digest in planned]
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
        """A retry after a crash or a failed upload: whatever reached the store is kept as superseded."""
        known = set(previous.get("superseded_objects", []))
        doc = {**previous, "superseded_objects": sorted(known | set(leftovers))}
        self._rewrite(doc)
        return doc

    def complete(self, done: list[tuple[dict[str, Any], dict[str, Any], int, str]], writer: str) -> list[str]:
        """Rewrite each (stub, built entry, attempts, last error) as archived, in one write.

        Returns the rooms whose stub another worker completed first (their write is kept).
        """
        docs = [{**entry, "_id": stub["_id"], "status": "archived", "created_at": stub["created_at"],
                 "superseded_objects": stub["superseded_objects"], "archived_at": now(), "archived_by": writer,
                 "attempts": attempts, "last_error": last_error} for stub, entry, attempts, last_error in done]
        if not docs:
            return []
        result = self.entries.bulk_write([ReplaceOne({"_id": d["_id"], "status": "uploading"}, d) for d in docs],
                                         ordered=False)
        if result.matched_count == len(docs):
            return []
        ours = {d["_id"] for d in self.entries.find({"_id": {"$in": [d["_id"] for d in docs]}, "archived_by": writer},
                                                    {"_id": 1})}
        return [d["room"] for d in docs if d["_id"] not in ours]

    def abandon(self, doc: dict[str, Any]) -> None:
        """Drop an entry whose attempts stored nothing (its chat failed to build, e.g. quarantined)."""
        if not doc["superseded_objects"]:
            self.entries.delete_one({"_id": doc["_id"], "status": "uploading"})

    def _rewrite(self, doc: dict[str, Any]) -> None:
        result = self.entries.replace_one({"_id": doc["_id"], "status": "uploading"}, doc)
        if result.matched_count != 1:
            raise VersionConflict(f"room {doc['room']!r}: version {doc['version']} was completed by another worker")

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

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

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

    def versions(self, room: str) -> list[dict[str, Any]]:
        return list(self.entries.find({"room": room}).sort("version", ASCENDING))

    def latest(self, room: str) -> dict[str, Any] | None:
        return self.entries.find_one({"room": room, "status": "archived"}, sort=[("version", DESCENDING)])

    # Entries are always written whole (never $set piecemeal): every field keeps its
    # exact BSON type on any server, and an entry never mixes two attempts.

    def begin(self, room: str, version: int, source_sha256: str) -> dict[str, Any]:
        """Record that (ROOM, VERSION) is being stored, before any object is; VersionConflict if taken."""
        doc = {"room": room, "version": version, "source_sha256": source_sha256, "status": "uploading",
               "objects": {}, "superseded_objects": [], "created_at": now()}
        try:
            self.entries.insert_one(doc)
        except DuplicateKeyError:
            raise VersionConflict(f"room {room!r}: version {version} already recorded") from None
        return doc

    def replan(self, previous: dict[str, Any], leftovers: list[str]) -> dict[str, Any]:
        """A retry after a crash or a failed upload: whatever reached the store is kept as superseded."""
        known = set(previous.get("superseded_objects", []))
        doc = {**previous, "superseded_objects": sorted(known | set(leftovers))}
        self._rewrite(doc)
        return doc

    def complete(self, doc: dict[str, Any], entry: dict[str, Any], attempts: int, last_error: str) -> None:
        self._rewrite({**entry, "_id": doc["_id"], "status": "archived", "created_at": doc["created_at"],
                       "superseded_objects": doc["superseded_objects"], "archived_at": now(),
                       "attempts": attempts, "last_error": last_error})

    def abandon(self, doc: dict[str, Any]) -> None:
        """Drop an entry whose attempts stored nothing (its chat failed to build, e.g. quarantined)."""
        if not doc["superseded_objects"]:
            self.entries.delete_one({"_id": doc["_id"], "status": "uploading"})

    def _rewrite(self, doc: dict[str, Any]) -> None:
        result = self.entries.replace_one({"_id": doc["_id"], "status": "uploading"}, doc)
        if result.matched_count != 1:
            raise VersionConflict(f"room {doc['room']!r}: version {doc['version']} was completed by another worker")

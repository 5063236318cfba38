"""The archive index: one MongoDB document per archived version of a room.

An entry is written as `uploading` with the hashes and keys of the objects
*before* they are stored, and turned `archived` after. A crash in between leaves
an entry that names exactly what may be in the store, so nothing is orphaned:
the next attempt either finds those objects and completes the entry, or records
them under `superseded_objects` and stores new ones.
"""

from __future__ import annotations

from typing import Any, Iterator

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

    def begin(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Record ENTRY as `uploading`; VersionConflict if that version or content is recorded."""
        doc = {**entry, "status": "uploading", "created_at": now()}
        try:
            self.entries.insert_one(doc)
        except DuplicateKeyError:
            raise VersionConflict(f"room {entry['room']!r}: version {entry['version']} already recorded") from None
        return doc

    def replan(self, previous: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        """A retry after a crash: new objects replace the planned ones, which are kept as superseded."""
        doc = {**entry, "_id": previous["_id"], "status": "uploading", "created_at": previous["created_at"],
               "superseded_objects": previous.get("superseded_objects", []) + list(previous["objects"].values())}
        self._rewrite(doc)
        return doc

    def complete(self, doc: dict[str, Any], version_ids: dict[str, str], attempts: int) -> None:
        objects = {name: {**obj, "version_id": version_ids.get(name, "")} for name, obj in doc["objects"].items()}
        self._rewrite({**doc, "objects": objects, "status": "archived", "archived_at": now(), "attempts": attempts})

    def _rewrite(self, doc: dict[str, Any]) -> None:
        result = self.entries.replace_one({"_id": doc["_id"], "status": "uploading"}, doc)
        if result.matched_count != 1:
            raise VersionConflict(f"room {doc['room']!r}: version {doc['version']} was completed by another worker")

    def search(self, query: dict[str, Any], limit: int = 0) -> Iterator[dict[str, Any]]:
        return self.entries.find(query).sort([("ended_at", ASCENDING), ("room", ASCENDING)]).limit(limit)


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

    def begin(self, entry: dict[str, Any]) -> Any:
        """Record an entry as `uploading` and return its id; VersionConflict if the version or content exists."""
        try:
            return self.entries.insert_one({**entry, "status": "uploading", "created_at": now()}).inserted_id
        except DuplicateKeyError:
            raise VersionConflict(f"room {entry['room']!r}: version {entry['version']} already recorded") from None

    def replan(self, entry: dict[str, Any], fields: dict[str, Any]) -> None:
        """A retry after a crash: new objects replace the planned ones, which are kept as superseded."""
        superseded = entry.get("superseded_objects", []) + list(entry["objects"].values())
        self.entries.update_one(
            {"_id": entry["_id"], "status": "uploading"}, {"$set": {**fields, "superseded_objects": superseded}}
        )

    def complete(self, entry_id: Any, version_ids: dict[str, str], attempts: int) -> None:
        sets: dict[str, Any] = {"status": "archived", "archived_at": now(), "attempts": attempts}
        for name, version_id in version_ids.items():
            sets[f"objects.{name}.version_id"] = version_id
        self.entries.update_one({"_id": entry_id}, {"$set": sets})

    def search(self, query: dict[str, Any], limit: int = 0) -> Iterator[dict[str, Any]]:
        return self.entries.find(query).sort([("ended_at", ASCENDING), ("room", ASCENDING)]).limit(limit)


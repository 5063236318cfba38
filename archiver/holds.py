"""Legal holds: nothing of a held room is deleted, in the source or the archive.

A hold is a search filter (archiver/search.py) with a case name and a reason: by room,
customer id, agent id, or any combination of the search filters. It is evaluated against
the archive index whenever it matters (at deletion time, and when a chat is archived), so
it also covers chats archived after it was placed. A room is held when any of its
versions matches an active hold; every version of a held room is then protected.

In S3 each object of a held room carries an S3 legal hold: set when the hold is placed,
by the archive pass for new versions of held rooms, and repaired by each retention run;
cleared on release only where no other active hold applies. The entry records it
(`legal_hold: true`). A local directory has no Object Lock: the hold is written in the
object's metadata file and honoured by the archiver's own deletions only.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any, Callable, Iterable, Iterator

import bson
from bson.errors import InvalidDocument
from pymongo import ASCENDING
from pymongo.collection import Collection

from archiver.claims import now
from archiver.logs import event
from archiver.search import SEARCH_KEY_STATE, SearchFilters, build_query, same_key, words
from archiver.store import ObjectMissing, ObjectStore, StoreError

ROOM_BATCH = 500
_DATES = ("ended_from", "ended_to")


def filters_doc(filters: SearchFilters) -> dict[str, Any]:
    """FILTERS as stored in a hold (dates as ISO text)."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in filters.given().items()}


def filters_of(hold: dict[str, Any]) -> SearchFilters:
    """HOLD's filters; a date bound outside years 1-9999 in UTC (stored before `hold place` refused them) is
    left out, so the hold covers every date within its other filters rather than stop every run."""
    given = dict(hold["filters"])
    for name in _DATES:
        if name in given:
            given[name] = _utc(given[name])
            if given[name] is None:
                del given[name]
                event("hold_date_out_of_range", logging.WARNING, case=hold.get("case"), hold=hold.get("_id"),
                      filter=name, value=hold["filters"][name])
    return SearchFilters(**given)


def _utc(text: str) -> dt.datetime | None:
    """TEXT (a stored date bound) in UTC, or None outside years 1-9999 there."""
    value = dt.datetime.fromisoformat(text)
    try:
        return value.astimezone(dt.timezone.utc) if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    except OverflowError:
        return None


def describe(hold: dict[str, Any]) -> str:
    scope = ", ".join(f"{k}={v}" + (" (outside years 1-9999 in UTC: not applied, every date is covered)"
                                    if k in _DATES and _utc(v) is None else "")
                      for k, v in sorted(hold["filters"].items()))
    return f"case {hold['case']!r} ({scope})"


class Holds:
    def __init__(self, holds: Collection, entries: Collection, key: bytes | None,
                 state: Collection | None = None) -> None:
        self.holds = holds
        self.entries = entries
        self.key = key  # the search key, for holds by --text
        self.state = state  # the index state, which names the key the word hashes were made with

    def ensure_indexes(self) -> None:
        self.holds.create_index([("case", ASCENDING)], name="case")
        self.holds.create_index([("active", ASCENDING)], name="active")

    def active(self) -> list[dict[str, Any]]:
        return list(self.holds.find({"active": True}).sort("placed_at", ASCENDING))

    def listing(self, everything: bool = False) -> list[dict[str, Any]]:
        return list(self.holds.find({} if everything else {"active": True}).sort("placed_at", ASCENDING))

    def place(self, filters: SearchFilters, case: str, reason: str, actor: dict[str, str],
              before_insert: Callable[[dict[str, Any]], None] = lambda hold: None) -> dict[str, Any]:
        """Store a hold, checked first; BEFORE_INSERT(hold) comes between (the audit entry: no hold unrecorded)."""
        if not filters.given():
            raise ValueError("a hold needs a scope: --room, --customer, --agent or search filters")
        hold = {"_id": uuid.uuid4().hex, "case": case, "reason": reason, "filters": filters_doc(filters),
                "active": True, "placed_at": now(), "placed_by": actor}
        late = [f"{name} {hold['filters'][name]}" for name in _DATES if name in hold["filters"]
                and _utc(hold["filters"][name]) is None]
        if late:  # (filters_of would leave it out)
            raise ValueError(f"{', '.join(late)}: outside years 1-9999 in UTC; nothing stored")
        try:  # refused now, not at deletion: a filter that cannot be evaluated, another search key, or stored
            bson.encode(self.query(hold))
        except (OverflowError, InvalidDocument) as exc:
            raise ValueError(f"a hold by {filters.given()} cannot be stored in MongoDB ({exc}); nothing stored") from None
        if filters.text is not None and not words(filters.text):
            raise ValueError(f"--text {filters.text!r}: no word to hold by (only punctuation)")
        before_insert(hold)
        self.holds.insert_one(hold)
        return hold

    def release(self, case: str, reason: str, actor: dict[str, str]) -> list[dict[str, Any]]:
        """Release every active hold of CASE; the holds released (kept, marked inactive)."""
        released = list(self.holds.find({"case": {"$eq": case}, "active": True}))
        for hold in released:
            self.holds.update_one({"_id": hold["_id"], "active": True}, {"$set": {
                "active": False, "released_at": now(), "released_by": actor, "release_reason": reason}})
        return released

    def query(self, hold: dict[str, Any]) -> dict[str, Any]:
        """The index entries HOLD covers. A hold by words fails closed: entries archived before word hashes
        were written cannot be told apart, so they are covered; under another key than the index's, words
        would match nothing, so that is a ConfigError (the run stops) rather than a hold that holds nothing."""
        query = build_query(filters_of(hold), self.key, unknown_contact=True)
        if "$or" not in query:  # no words
            return query
        if self.state is not None:
            same_key(self.state.find_one({"_id": SEARCH_KEY_STATE}), self.key)
        # Archives without word hashes (made before the key, or by an archiver without it), and what is left of
        # one whose deletion was cut short; not an attempt that never completed, an upload under way or a
        # finished tombstone: they have no words of their own and would hold their room under every such hold.
        unhashed = {"terms": {"$exists": False}, "$or": [
            {"status": "archived"}, {"status": "deleted", "deletion.state": "deleting"}]}
        return {**query, "$or": [*query["$or"], unhashed]}

    def held_rooms(self, rooms: list[str], holds: list[dict[str, Any]] | None = None) -> dict[str, list[str]]:
        """Of ROOMS, those any version of which matches an active hold, with the cases holding them."""
        found: dict[str, list[str]] = {}
        if not rooms:
            return found
        for hold in self.active() if holds is None else holds:
            match = {"$and": [{"room": {"$in": rooms}}, self.query(hold)]}
            for room in {doc["room"] for doc in self.entries.find(match, {"room": 1})}:
                found.setdefault(room, []).append(hold["case"])
        return {room: sorted(set(cases)) for room, cases in found.items()}

    def rooms_of(self, hold: dict[str, Any]) -> Iterator[list[str]]:
        """The rooms HOLD covers, in batches (streamed: a hold may cover millions of chats)."""
        batch: list[str] = []
        seen_last = None
        for doc in self.entries.find(self.query(hold), {"room": 1}).sort("room", ASCENDING):
            if doc["room"] != seen_last:
                batch.append(doc["room"])
                seen_last = doc["room"]
            if len(batch) >= ROOM_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- S3 legal holds on the objects ---------------------------------------------------------

    def protect(self, rooms: list[str], store_of: Callable[[dict[str, Any]], ObjectStore]) -> int:
        """Set the S3 legal hold on every object of ROOMS' entries that lacks it, and on what is left of an
        archive whose deletion was cut short (its tombstone still `deleting`); the entries changed."""
        changed = 0
        unsettled = [{"status": "archived"}, {"status": "deleted", "deletion.state": "deleting"}]
        for entry in self.entries.find({"room": {"$in": rooms}, "$or": unsettled, "legal_hold": {"$ne": True}}):
            try:
                _set_all(entry, store_of(entry), True)
            except StoreError as exc:  # repaired by the next retention run; deletions check holds anyway
                event("legal_hold_failed", logging.WARNING, room=entry["room"], error=str(exc))
                continue
            self.entries.update_one({"_id": entry["_id"]}, {"$set": {"legal_hold": True}})
            changed += 1
        return changed

    def unprotect(self, rooms: list[str], store_of: Callable[[dict[str, Any]], ObjectStore],
                  failures: list[str] | None = None) -> int:
        """Clear the S3 legal hold on ROOMS' objects where no active hold still applies; the entries changed.
        One the store refuses keeps `legal_hold: true` (the next retention run's sync retries it) and is
        added to FAILURES ("room vN: error")."""
        still = self.held_rooms(rooms)
        free = [room for room in rooms if room not in still]
        changed = 0
        for entry in self.entries.find({"room": {"$in": free}, "legal_hold": True}):
            try:
                _set_all(entry, store_of(entry), False)
            except StoreError as exc:
                event("legal_hold_release_failed", logging.WARNING, room=entry["room"], error=str(exc))
                if failures is not None:
                    failures.append(f"{entry['room']} v{entry.get('version')}: {exc}")
                continue
            self.entries.update_one({"_id": entry["_id"]}, {"$unset": {"legal_hold": ""}})
            changed += 1
        return changed

    def protect_new(self, rooms: Iterable[str], holds: list[dict[str, Any]],
                    store_of: Callable[[dict[str, Any]], ObjectStore]) -> int:
        """The archive pass's seam: new versions of held rooms get the S3 legal hold at once (HOLDS: the
        active ones, which the pass has just read)."""
        rooms = list(rooms)
        if not rooms or not holds:  # nothing new (an index write with no chat ended), or nothing held: no query
            return 0
        try:
            return self.protect(list(self.held_rooms(rooms, holds)), store_of)
        except Exception as exc:  # never fails the pass: deletions check holds themselves, the next run repairs
            event("legal_hold_failed", logging.WARNING, rooms=len(rooms), error=f"{type(exc).__name__}: {exc}")
            return 0

    def sync(self, store_of: Callable[[dict[str, Any]], ObjectStore]) -> int:
        """Set the legal hold wherever an active hold applies and it is missing (a crash, a failed put), and
        clear it where none applies any more (a release the store refused in part); the entries changed."""
        changed = sum(self.protect(batch, store_of) for hold in self.active() for batch in self.rooms_of(hold))
        rooms = sorted(set(self.entries.distinct("room", {"legal_hold": True})))
        for i in range(0, len(rooms), ROOM_BATCH):
            changed += self.unprotect(rooms[i:i + ROOM_BATCH], store_of)
        return changed


def _set_all(entry: dict[str, Any], store: ObjectStore, on: bool) -> None:
    for obj in (entry.get("objects") or {}).values():
        try:
            store.set_legal_hold(obj["key"], obj.get("version_id", ""), on)
        except StoreError:
            if entry["status"] != "deleted" or not _gone(store, obj):
                raise  # (an object a deletion cut short had removed already: nothing left to hold)


def _gone(store: ObjectStore, obj: dict[str, Any]) -> bool:
    try:
        store.get(obj["key"], obj.get("version_id", ""))
    except ObjectMissing:
        return True
    return False


def open_holds(config: Any) -> Holds:
    from archiver.index import index_database
    from archiver.search import load_search_key

    config.require("mongodb.uri")
    db = index_database(config)
    key = load_search_key(config["search.key_file"]) if config["search.key_file"] else None
    holds = Holds(db[config["index.holds"]], db[config["index.entries"]], key, db[config["index.state"]])
    holds.ensure_indexes()
    return holds

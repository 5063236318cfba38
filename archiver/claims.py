"""The work queue: one job per room, claimed with a lease so several workers never collide.

A job is `pending` (discovered), `claimed` (a worker holds a lease until
`available_at`), `done`, `failed` (retried at `available_at`) or `quarantined`
(needs a person; `reason` says why). A claim whose lease ran out is free again:
that is how a killed worker's chats are taken over. `available_at` is epoch
milliseconds: lease arithmetic stays plain numbers on every server. Those times
are read from the database server's clock, never the worker's: one worker's
lease is judged by another, and a worker whose clock runs ahead must not find
every live lease expired.

A claim whose lease ran out is a `lapse` (counted in `lapses`): its archiver died
holding it (an OOM kill of the main process, which holds every chat in flight), or
stalled, or a pass of it failed with an error of ours (a bug it meets with this chat).
A pass that an outage ends hands its claims back instead (`release_held`, not a lapse),
unless the outage keeps it from doing so.
A job that lapsed ALONE_AFTER times is claimed only alone (`claim_alone`),
so that a chat that kills its archiver no longer takes its batch-mates down with it,
and is quarantined once it lapsed archive.max_attempts more times.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass
from typing import AbstractSet, Any, Callable, Iterable, Mapping

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from archiver.mongo import server_ms
from archiver.visible import utf8_safe

CLAIMABLE = ["pending", "failed", "claimed"]
ALONE_AFTER = 2  # lapses after which a job is claimed only alone: those it may have shared with batch-mates
SHARED = {"lapses": {"$in": [None, *range(ALONE_AFTER)]}}  # jobs claimed in batches (no `lapses`: none)
LAPSED = ("the archiver holding this chat stopped (killed: out of memory?) or stalled before finishing it, or its "
          "pass failed with an error (see pass_failed in its log)")
# What a lapse leaves cannot tell these apart: a death, a stall, a pass that a bug ended, an outage that kept a
# failed pass from handing the chat back.
DIED = ("the archiver died (or stalled past its lease) {lapses} times while holding this chat, the last {alone} of "
        "them with no other chat in hand (killed by the operating system: out of memory? Or its passes failed "
        "with an error: see pass_failed in its log)")


def now() -> dt.datetime:
    # Millisecond precision: what MongoDB stores, so comparisons round-trip.
    t = dt.datetime.now(dt.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def now_ms() -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Job:
    room: str
    kind: str  # ended / abandoned / interim
    attempts: int
    last_error: str
    lapses: int = 0  # claims of this job whose lease ran out (their archiver died or stalled)


class WorkQueue:
    def __init__(self, jobs: Collection, owner: str | None = None) -> None:
        self.jobs = jobs
        self.owner = owner or worker_id()

    def server_ms(self) -> int:
        """Now, on the database server's clock (epoch ms): the one clock every worker shares."""
        return server_ms(self.jobs.database)

    def ensure_indexes(self) -> None:
        self.jobs.create_index([("state", ASCENDING), ("available_at", ASCENDING)], name="claim_order")
        self.jobs.create_index([("state", ASCENDING), ("discovered_at", ASCENDING)], name="oldest_open")
        self.jobs.create_index([("state", ASCENDING), ("ended_at", ASCENDING)], name="oldest_ended")
        self.jobs.create_index([("claim", ASCENDING)], name="claim_token")

    def enqueue(self, rooms: Iterable[tuple[str, str]], changed: AbstractSet[str] = frozenset(),
                ended_ms: Mapping[str, float] | None = None) -> int:
        """Add (room, kind) pairs not yet known. An archived (`done`) room is reopened as KIND when it
        is in CHANGED (its source changed since), or when it had not ended and now has. ENDED_MS: when
        each room's chat ended, where known (status reports how long the oldest has waited)."""
        wanted = dict(rooms)
        if not wanted:
            return 0
        ended = {room: _from_ms(ms) for room, ms in (ended_ms or {}).items() if _from_ms(ms) is not None}
        known = {j["_id"]: j for j in self.jobs.find({"_id": {"$in": list(wanted)}}, {"state": 1, "kind": 1})}
        t = self.server_ms()
        fresh = [
            {"_id": room, "state": "pending", "kind": kind, "attempts": 0, "last_error": "",
             "available_at": t, "discovered_at": now(), **({"ended_at": ended[room]} if room in ended else {})}
            for room, kind in wanted.items() if room not in known
        ]
        added = 0
        if fresh:
            try:
                added = len(self.jobs.insert_many(fresh, ordered=False).inserted_ids)
            except BulkWriteError as exc:  # another worker discovered some of them first
                added = exc.details.get("nInserted", 0)
        reopen = [room for room, kind in wanted.items() if room in known and (
            room in changed or kind == "ended" and known[room].get("kind") != "ended")]
        reopened = sum(self._reopen([r for r in reopen if wanted[r] == kind], kind) for kind in {wanted[r] for r in reopen})
        for room in reopen:  # the end of the content now waiting (rare: a changed chat), else none claimed
            self.jobs.update_one({"_id": room, "state": "pending"}, {"$set": {"ended_at": ended[room]}} if room in ended
                                 else {"$unset": {"ended_at": ""}})
        return added + reopened

    def _reopen(self, rooms: list[str], kind: str) -> int:
        """Archived ROOMS queued again as KIND (their next version)."""
        return self.jobs.update_many(
            {"_id": {"$in": rooms}, "state": "done"},
            {"$set": {"state": "pending", "kind": kind, "available_at": self.server_ms(), "attempts": 0,
                      "lapses": 0, "discovered_at": now()}},
        ).modified_count

    def archived(self, rooms: list[str]) -> dict[str, str]:
        """The kind of each of ROOMS whose job is `done`, in one query."""
        return {j["_id"]: j.get("kind", "ended")
                for j in self.jobs.find({"_id": {"$in": rooms}, "state": "done"}, {"kind": 1})}

    def claim_room(self, room: str, kind: str, lease_seconds: int) -> Job | None:
        """Claim ROOM now whatever its state (on-demand export); None if another worker holds it."""
        t = self.server_ms()
        self._lapse(t, [room])
        ready = {"$set": {"state": "pending", "kind": kind, "available_at": t}}
        # Not claimed, or its lease is over: two plain filters, not {_id, $or} (nx-27017, the wire-protocol
        # stand-in, applies an update so filtered to another document).
        free = (self.jobs.update_one({"_id": room, "state": {"$ne": "claimed"}}, ready).matched_count
                or self.jobs.update_one({"_id": room, "available_at": {"$lte": t}}, ready).matched_count)
        if not free:
            try:
                self.jobs.insert_one({"_id": room, **ready["$set"], "attempts": 0, "last_error": "",
                                      "discovered_at": now()})
            except DuplicateKeyError:  # the room exists and is claimed by someone else
                return None
        return self.claim(lease_seconds, {"_id": room})

    def claim(self, lease_seconds: int, only: dict[str, Any] | None = None, due_by_ms: int | None = None
              ) -> Job | None:
        """The next job due (by DUE_BY_MS, default now), leased to us for LEASE_SECONDS."""
        t = self.server_ms()
        doc = self.jobs.find_one_and_update(
            {**(only or {}), **_due(t, due_by_ms)},
            {"$set": {"state": "claimed", "owner": self.owner, "claim": uuid.uuid4().hex,
                      "available_at": t + lease_seconds * 1000}, "$inc": {"attempts": 1}},
            sort=[("available_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else _job(doc)

    def claim_batch(self, lease_seconds: int, limit: int, due_by_ms: int | None = None) -> list[Job]:
        """Up to LIMIT jobs due (by DUE_BY_MS, default now), leased to us for LEASE_SECONDS.

        Three round trips whatever LIMIT is: pick candidates, claim the ones still free in
        one update (each document's filter is checked atomically, so a job another worker
        took meanwhile is skipped), then read back what this claim's token got. Empty only
        when nothing is due.
        """
        while True:
            t = self.server_ms()
            due = {**_due(t, due_by_ms), **SHARED}
            found = list(self.jobs.find(due, {"state": 1}).sort("available_at", ASCENDING).limit(limit))
            if not found:
                return []
            ids = [d["_id"] for d in found]
            lapsed = [d["_id"] for d in found if d["state"] == "claimed"]
            if lapsed:  # those that lapse ALONE_AFTER times now are left to claim_alone
                self._lapse(t, lapsed)
            token = uuid.uuid4().hex
            self.jobs.update_many(
                {**due, "_id": {"$in": ids}},
                {"$set": {"state": "claimed", "owner": self.owner, "claim": token,
                          "available_at": t + lease_seconds * 1000}, "$inc": {"attempts": 1}},
            )
            jobs = [_job(doc) for doc in self.jobs.find({"claim": token}).sort("available_at", ASCENDING)]
            if jobs:  # else other workers took every candidate first: look again
                return jobs

    def claim_alone(self, lease_seconds: int, max_alone: int, due_by_ms: int | None = None,
                    before_quarantine: Callable[[str, str], None] = lambda room, reason: None
                    ) -> tuple[Job | None, dict[str, str]]:
        """The next job due (by DUE_BY_MS, default now) that lapsed ALONE_AFTER times or more, leased to us
        for LEASE_SECONDS, to be worked on with no other chat in hand (None when none is due); and the
        jobs quarantined on the way, with the reason: those that lapsed MAX_ALONE times more, each after
        BEFORE_QUARANTINE(room, reason) (which closes its uploads: the archiver whose claim lapsed may only
        have stalled, and must not complete one once the chat is quarantined)."""
        gave_up: dict[str, str] = {}
        while True:
            # Due by DUE_BY_MS (a pass's start, always past): the server's clock is read only if one is.
            due = _due(self.server_ms() if due_by_ms is None else due_by_ms, None)
            doc = self.jobs.find_one({**due, "lapses": {"$gte": ALONE_AFTER}}, {"_id": 1},
                                     sort=[("available_at", ASCENDING)])
            if doc is None:
                return None, gave_up
            t = self.server_ms()
            self._lapse(t, [doc["_id"]])
            lapses = (self.jobs.find_one({"_id": doc["_id"]}, {"lapses": 1}) or {}).get("lapses", 0)
            if lapses >= ALONE_AFTER + max_alone:
                reason = DIED.format(lapses=lapses, alone=lapses - ALONE_AFTER)
                before_quarantine(doc["_id"], reason)
                if self.jobs.update_one({"_id": doc["_id"], "state": {"$in": ["pending", "failed"]}, "lapses": lapses},
                                        {"$set": {"state": "quarantined", "reason": reason, "last_error": reason,
                                                  "finished_at": now_ms()}}).modified_count:
                    gave_up[doc["_id"]] = reason
                continue
            claimed = self.jobs.find_one_and_update(
                {**_due(t, due_by_ms), "_id": doc["_id"]},
                {"$set": {"state": "claimed", "owner": self.owner, "claim": uuid.uuid4().hex,
                          "available_at": t + lease_seconds * 1000}, "$inc": {"attempts": 1}},
                return_document=ReturnDocument.AFTER)
            if claimed is not None:  # else another worker took it first: look again
                return _job(claimed), gave_up

    def alone_due(self, due_by_ms: int) -> int:
        """How many jobs due by DUE_BY_MS are to be claimed alone (`claim_alone`)."""
        return self.jobs.count_documents({**_due(due_by_ms, None), "lapses": {"$gte": ALONE_AFTER}})

    def _lapse(self, t: int, rooms: list[str]) -> None:
        """Close the claims on ROOMS whose lease ran out by T (their archiver died or stalled), counting
        the lapse; claimable again at once."""
        self.jobs.update_many({"_id": {"$in": rooms}, "state": "claimed", "available_at": {"$lte": t}},
                              {"$set": {"state": "failed", "last_error": LAPSED, "finished_at": now_ms()},
                               "$inc": {"lapses": 1}, "$unset": {"owner": "", "claim": ""}})

    def _finish(self, rooms: list[str], fields: dict[str, Any], uncounted: bool = False) -> int:
        """Close our claims on ROOMS in one write; how many we still held (a lost lease is skipped).
        UNCOUNTED: the attempt each claim counted is taken back."""
        return self._update_ours(rooms, {"$set": {**fields, "finished_at": now_ms()},
                                         "$unset": {"owner": "", "claim": ""},
                                         **({"$inc": {"attempts": -1}} if uncounted else {})})

    def _update_ours(self, rooms: list[str], update: dict[str, Any]) -> int:
        """Apply UPDATE to the claims on ROOMS we still hold, in one write; how many those were."""
        if not rooms:
            return 0
        return self.jobs.update_many({"_id": {"$in": rooms}, "state": "claimed", "owner": self.owner},
                                     update).modified_count

    def done(self, rooms: list[str]) -> int:
        return self._finish(rooms, {"state": "done", "last_error": "", "lapses": 0})

    def renew(self, rooms: list[str], lease_seconds: int) -> list[str]:
        """Extend our leases on ROOMS (chats still queued or being built); the ones we no longer held."""
        if not rooms:
            return []
        held = self._update_ours(rooms, {"$set": {"available_at": self.server_ms() + lease_seconds * 1000}})
        if held == len(rooms):
            return []
        ours = {d["_id"] for d in self.jobs.find({"_id": {"$in": rooms}, "state": "claimed", "owner": self.owner},
                                                 {"_id": 1})}
        return [room for room in rooms if room not in ours]

    def release(self, rooms: list[str]) -> int:
        """Hand back claims not worked on (shutdown): claimable at once, the attempt not counted."""
        if not rooms:
            return 0
        return self._update_ours(rooms, _released(self.server_ms()))

    def release_held(self, keep: Iterable[str] = ()) -> int:
        """Hand back every claim we still hold but those whose claim token is on KEEP (a pass that an outage
        ended, or one before it in this process that could not): claimable at once, neither the attempt nor
        a lapse counted; how many there were. A chat claimed afresh has a new token: it is handed back."""
        return self.jobs.update_many({"state": "claimed", "owner": self.owner, "claim": {"$nin": list(keep)}},
                                     _released(self.server_ms())).modified_count

    def held(self) -> set[str]:
        """The tokens of the claims we hold (each claim has its own, a batch's claims one together)."""
        return {d.get("claim", "") for d in self.jobs.find({"state": "claimed", "owner": self.owner}, {"claim": 1})}

    def failed(self, room: str, error: str, retry_in_seconds: float, counted: bool = True) -> bool:
        """ROOM's attempt failed: retried RETRY_IN_SECONDS from now; not COUNTED when the failure is the archiver's,
        not the chat's (its certificate expired, say): the chat's attempts stay as they were."""
        retry_at = self.server_ms() + int(retry_in_seconds * 1000)
        return self._finish([room], {"state": "failed", "last_error": utf8_safe(error), "available_at": retry_at},
                            uncounted=not counted) == 1

    def quarantine(self, room: str, reason: str) -> bool:
        reason = utf8_safe(reason)  # a reason may name a place in the chat, bytes that were not UTF-8 and all
        return self._finish([room], {"state": "quarantined", "last_error": reason, "reason": reason}) == 1

    def oldest_open(self) -> dt.datetime | None:
        """Since when the oldest job not archived yet (quarantined included) has waited: its chat's end, or
        its discovery when the end is not known (an abandoned chat, a job from before ended_at was kept)."""
        doc = self.oldest_open_job()
        return waiting_since(doc) if doc else None

    def oldest_open_job(self) -> dict[str, Any] | None:
        """The job not archived yet (quarantined included) that has waited longest (see oldest_open)."""
        open_ = {"$in": [*CLAIMABLE, "quarantined"]}
        fields = {"state": 1, "discovered_at": 1, "ended_at": 1}
        candidates = [
            self.jobs.find_one({"state": open_, "ended_at": {"$gte": EPOCH}}, fields, sort=[("ended_at", ASCENDING)]),
            self.jobs.find_one({"state": open_, "ended_at": {"$exists": False}}, fields,
                               sort=[("discovered_at", ASCENDING)]),
        ]
        found = [doc for doc in candidates if doc is not None and waiting_since(doc) is not None]
        return min(found, key=waiting_since) if found else None

    def recent(self, state: str, limit: int) -> list[dict[str, Any]]:
        """Up to LIMIT jobs in STATE, the most recently finished first (read-only, for status)."""
        return list(self.jobs.find({"state": state}).sort("finished_at", DESCENDING).limit(limit))

    def counts(self) -> dict[str, int]:
        return {row["_id"]: row["n"] for row in self.jobs.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}])}


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def waiting_since(job: dict[str, Any]) -> dt.datetime | None:
    """When JOB's chat ended, else when it was discovered (aware, UTC)."""
    when = job.get("ended_at") or job.get("discovered_at")
    if not isinstance(when, dt.datetime):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _from_ms(ms: float) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    except (ValueError, OverflowError, OSError):  # a time no datetime holds (year 10000 ...)
        return None


def _due(t: int, due_by_ms: int | None) -> dict[str, Any]:
    """Jobs claimable at T: pending, failed and due for retry, or claimed with the lease run out."""
    return {"state": {"$in": CLAIMABLE}, "available_at": {"$lte": min(t, due_by_ms or t)}}


def _released(t: int) -> dict[str, Any]:
    """The update that hands a claim back at T: claimable at once, the attempt not counted."""
    return {"$set": {"state": "pending", "available_at": t}, "$inc": {"attempts": -1},
            "$unset": {"owner": "", "claim": ""}}


def _job(doc: dict[str, Any]) -> Job:
    return Job(room=doc["_id"], kind=doc.get("kind", "ended"), attempts=doc["attempts"],
               last_error=doc.get("last_error", ""), lapses=doc.get("lapses") or 0)

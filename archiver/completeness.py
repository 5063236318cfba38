"""Completeness: every chat that ended in the source in a window is archived, or accounted for.

The source is read through the discovery index (`archiver_end_ts`: endChat
messages by time) as a stream; its rooms are looked up in batches, in the index
(an archived, non-interim version: `room_version`) and in the job queue (a
`failed` or `quarantined` job: by `_id`); a room whose archive is a tombstone (deleted by
retention or an erasure) is accounted for as deleted. Memory holds one batch and the bounded
lists of rooms reported, whatever the size of the window.

A chat "ended in the window" when it has an endChat message whose time is in
[FROM, TO]: a number of milliseconds (as the platform writes it) or a BSON date
(as old data has it). Times kept as numeric strings are not found by the window
(they are not ordered as times). With `source.abandoned_after_hours` set, chats without an endChat whose
last message is in the window and which have been idle that long since are in scope too, as the archive
pass archives them (as abandoned); without it they are not.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from archiver.batches import batched
from archiver.config import Config
from archiver.index import index_database
from archiver.mongo import reachable
from archiver.source import ChatSource, _room_of
from archiver.transcript import END_TYPE

BATCH = 500
MAX_LISTED = 10_000  # rooms listed per kind; beyond this only counted


@dataclass(frozen=True)
class Missing:
    room: str
    why: str
    abandoned: bool = False  # idle without an end, rather than ended

    def __str__(self) -> str:
        how = "went idle without an end (abandoned)" if self.abandoned else "ended"
        return f"{self.room}: {how} in the source but not archived ({self.why})"


@dataclass
class CompletenessReport:
    window: dict[str, str]
    ended: int = 0  # ended chats found in the source in the window
    abandoned: int = 0  # chats idle without an end (source.abandoned_after_hours), last message in the window
    archived: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    failed_count: int = 0
    quarantined_count: int = 0
    missing: list[Missing] = field(default_factory=list)
    missing_count: int = 0
    seconds: float = 0.0
    deleted: list[dict[str, str]] = field(default_factory=list)  # archived, then deleted by policy (a tombstone)
    deleted_count: int = 0

    @property
    def ok(self) -> bool:
        return self.missing_count == 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def check_completeness(config: Config, start: dt.datetime, end: dt.datetime,
                       progress: Callable[[CompletenessReport], None] | None = None) -> CompletenessReport:
    """Ended chats of [START, END] in the source, each archived, failed, quarantined or reported missing."""
    config.require("mongodb.uri")
    began = time.monotonic()
    report = CompletenessReport({"from": start.isoformat(), "to": end.isoformat()})
    db = index_database(config)
    entries, jobs = db[config["index.entries"]], db[config["index.jobs"]]
    for batch in batched(ended_rooms(config, start, end), BATCH):
        _classify(dict.fromkeys(batch), entries, jobs, report)
        if progress:
            progress(report)
    for idle in batched(abandoned_rooms(config, start, end), BATCH):
        _classify(dict.fromkeys(idle), entries, jobs, report, abandoned=True)
    report.seconds = time.monotonic() - began
    return report


def abandoned_rooms(config: Config, start: dt.datetime, end: dt.datetime) -> Iterator[str]:
    """With source.abandoned_after_hours set: rooms without an endChat whose last message is in [START, END]
    and that have been idle that long by now (those the archive pass archives as abandoned)."""
    hours = config["source.abandoned_after_hours"]
    if hours <= 0:
        return iter(())
    source = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
    chats = ChatSource(source, config["source.chats"], config["source.contacts"], config["source.messages"])
    before = min(end.timestamp() * 1000 + 1, time.time() * 1000 - hours * 3_600_000)
    return chats.idle_between(start.timestamp() * 1000, before) if before > start.timestamp() * 1000 else iter(())


def ended_rooms(config: Config, start: dt.datetime, end: dt.datetime) -> Iterator[str]:
    """Rooms with an endChat message timed in [START, END], streamed (duplicates possible with a
    messages collection: a room with two endChat messages)."""
    source = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
    ms = {"$gte": start.timestamp() * 1000, "$lte": end.timestamp() * 1000}
    dates = {"$gte": start, "$lte": end}
    if config["source.messages"]:
        query = {"data.messageType": END_TYPE, "$or": [{"data.ts": ms}, {"data.ts": dates}]}
        for doc in source[config["source.messages"]].find(query, {"room": 1, "_id": 0}).batch_size(BATCH):
            if isinstance(doc.get("room"), str):
                yield doc["room"]
        return
    query = {"$or": [{"messages": {"$elemMatch": {"data.messageType": END_TYPE, "data.ts": window}}}
                     for window in (ms, dates)]}
    for doc in source[config["source.chats"]].find(query, {"room": 1, "_id": 1}).batch_size(BATCH):
        yield _room_of(doc)


def _classify(rooms: dict[str, None], entries: Any, jobs: Any, report: CompletenessReport,
              abandoned: bool = False) -> None:
    names = list(rooms)
    archived = {d["room"] for d in entries.find(
        {"room": {"$in": names}, "status": "archived", "kind": {"$ne": "interim"}}, {"room": 1, "_id": 0})}
    tombstones = {d["room"]: d.get("deletion") or {} for d in entries.find(
        {"room": {"$in": names}, "status": "deleted"}, {"room": 1, "deletion": 1, "_id": 0})}
    job = {d["_id"]: d for d in jobs.find({"_id": {"$in": names}}, {"state": 1, "last_error": 1, "reason": 1})}
    for room in names:
        if abandoned:
            report.abandoned += 1
        else:
            report.ended += 1
        state = job.get(room, {}).get("state")
        if room in archived:
            report.archived += 1
        elif room in tombstones:  # accounted for: archived, then deleted by retention or an erasure
            report.deleted_count += 1
            if len(report.deleted) < MAX_LISTED:
                deletion = tombstones[room]
                report.deleted.append({"room": room, "why": f"deleted by run {deletion.get('run')} "
                                                            f"under rule {deletion.get('rule')}"})
        elif state in ("failed", "quarantined"):
            _account(report, state, {"room": room, "why": job[room].get("reason") or job[room].get("last_error", "")})
        else:
            report.missing_count += 1
            if len(report.missing) < MAX_LISTED:
                report.missing.append(Missing(room, _why(state), abandoned))


def _account(report: CompletenessReport, state: str, item: dict[str, str]) -> None:
    listed = report.failed if state == "failed" else report.quarantined
    if state == "failed":
        report.failed_count += 1
    else:
        report.quarantined_count += 1
    if len(listed) < MAX_LISTED:
        listed.append(item)


def _why(state: str | None) -> str:
    if state is None:
        return "never picked up: no job for it"
    if state == "done":
        return "its job is done but the index has no archived version: removed from the index?"
    return f"its job is {state}: not archived yet"

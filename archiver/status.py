"""What `archiver status` reports, and the records of passes and rescans it reads.

Every archive pass and every full rediscovery (rescan) records how it ended in the
index database's state collection (`index.state`, documents `last_pass` and
`last_rescan`), from `archiver run` and `archiver serve` alike. Status reads those,
job counts by state (one aggregation) and the most recent failed and quarantined
jobs (bounded lists): a few cheap queries whatever the size of the archive.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pymongo
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from archiver.claims import WorkQueue, now, waiting_since
from archiver.config import Config
from archiver.logs import event
from archiver.mongo import index_uri, reachable, stored_time
from archiver.redact import redact
from archiver.seals import check_unsealed
from archiver.source import missing_collections
from archiver.visible import utf8_safe

LAST_PASS, LAST_RESCAN = "last_pass", "last_rescan"
STATES = ("pending", "claimed", "failed", "quarantined", "done")
QUARANTINE_SHOWN = FAILED_SHOWN = 20
UNSEALED_COUNTED = 10_000  # entries on old days no seal covers read at most (a few queries while all are sealed)
RECORD_SECONDS = 3  # how long recording an outcome may take (the database may be what failed)


@contextmanager
def recorded(state: Collection, kind: str, worker: str) -> Iterator[dict[str, Any]]:
    """Record in STATE how the pass or rescan run in the block ended (document KIND).

    The block adds its counts (and `outcome` when not "ok") to the dict it is given; an
    exception is recorded as outcome "error" with its message, and raised on.
    """
    fields: dict[str, Any] = {"outcome": "ok", "error": ""}
    started = now()
    try:
        yield fields
    except Exception as exc:
        fields.update(outcome="error", error=utf8_safe(redact(f"{type(exc).__name__}: {exc}")))
        # Saved whatever the error: a connection error may be the source's, or a primary stepping down, while
        # the index answers (and status would show the pass before as the last).
        _save(state, kind, {**fields, "started_at": started, "worker": worker})
        raise
    _save(state, kind, {**fields, "started_at": started, "worker": worker})


def _save(state: Collection, kind: str, doc: dict[str, Any]) -> None:
    try:
        # Bounded: an index that is down must not hold the pass for another server selection timeout.
        # _id in the document too: nx-27017 does not take it from the filter when it inserts
        with pymongo.timeout(RECORD_SECONDS):
            state.replace_one({"_id": kind}, {"_id": kind, **doc, "ended_at": now()}, upsert=True)
    except PyMongoError as exc:  # the outcome itself still reaches the caller (exit code, logs)
        event("outcome_not_recorded", logging.WARNING, kind=kind, error=redact(str(exc)))


@dataclass
class Status:
    """The JSON of `archiver status --json`; its field names are documented in the README."""
    jobs: dict[str, int]
    failed: list[dict[str, Any]]
    failed_total: int
    quarantined: list[dict[str, Any]]
    quarantined_total: int
    oldest_unarchived: dict[str, Any] | None
    last_pass: dict[str, Any] | None
    last_rescan: dict[str, Any] | None
    last_retention: dict[str, Any] | None
    last_erasure: dict[str, Any] | None
    warnings: list[str]  # source collections that do not exist (archiver.source.missing_collections)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def collect(config: Config) -> Status:
    """The state of the archive for an operator; needs only the index database."""
    if not config["index.uri"]:
        config.require("mongodb.uri")
    db = reachable(*index_uri(config))[config["index.database"]]
    queue = WorkQueue(db[config["index.jobs"]])
    counts = {name: 0 for name in STATES} | queue.counts()
    state = db[config["index.state"]]
    return Status(
        jobs=counts,
        failed=[_failed(job) for job in queue.recent("failed", FAILED_SHOWN)],
        failed_total=counts["failed"],
        quarantined=[_quarantined(job) for job in queue.recent("quarantined", QUARANTINE_SHOWN)],
        quarantined_total=counts["quarantined"],
        oldest_unarchived=_oldest(queue.oldest_open_job()),
        last_pass=_outcome(state.find_one({"_id": LAST_PASS})),
        last_rescan=_outcome(state.find_one({"_id": LAST_RESCAN})),
        last_retention=_last_run(db[config["index.retention_runs"]], "retention"),
        last_erasure=_last_run(db[config["index.retention_runs"]], "erasure"),
        warnings=missing_collections(config) + [f"{p.subject}: {p.problem}" for p in
                                                    check_unsealed(config, limit=UNSEALED_COUNTED)],
    )


def _last_run(runs: Collection, kind: str) -> dict[str, Any] | None:
    """The latest deletion run of KIND (runs.py), finished or not: one left `executing` or `reporting` is
    finished by the next run of its kind."""
    run = runs.find_one({"kind": kind, "started_at": {"$exists": True}}, sort=[("started_at", -1)])
    if run is None:
        return None
    return {"run": run["_id"], "state": run["state"], "as_of": _iso(run.get("as_of")),
            "started_at": _iso(run.get("started_at")), "finished_at": _iso(run.get("finished_at")),
            "counts": run.get("counts"), "rooms_affected": run.get("rooms_affected"),
            "report": (run.get("report") or {}).get("key")}


def _iso(value: Any) -> str | None:
    """A time as ISO 8601 UTC: datetimes as stored, or epoch milliseconds (the queue's times)."""
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
    value = stored_time(value)
    return value.isoformat(timespec="milliseconds") if value else None


def _failed(job: dict[str, Any]) -> dict[str, Any]:
    return {"room": job["_id"], "error": redact(job.get("last_error", "")), "attempts": job.get("attempts", 0),
            "failed_at": _iso(job.get("finished_at")), "retry_at": _iso(job.get("available_at"))}


def _quarantined(job: dict[str, Any]) -> dict[str, Any]:
    return {"room": job["_id"], "reason": redact(job.get("reason") or job.get("last_error", "")),
            "attempts": job.get("attempts", 0), "quarantined_at": _iso(job.get("finished_at"))}


def _oldest(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chat waiting longest: its age since it ended (since it was found, when its end is not known)."""
    if job is None:
        return None
    since = waiting_since(job)
    age = (now() - since).total_seconds() if since else None
    return {"room": job["_id"], "state": job["state"], "ended_at": _iso(job.get("ended_at")),
            "discovered_at": _iso(job.get("discovered_at")), "age_seconds": None if age is None else round(max(age, 0.0), 3)}


def _outcome(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in doc.items() if k != "_id"}

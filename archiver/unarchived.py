"""What the archive does not hold: chats whose archive job is not done, for search, bundles, retrieve and verify.

The archive index knows only what was archived. A chat the platform has but the archive does not
(quarantined: needs a person; failed: retried; pending or claimed: not archived yet) is known to the
job queue alone, with its state, why and when its chat ended. A search or a bundle says which of those
fall in its selection's window, so that "every chat of X" is never silently short of one.

Jobs hold a room, a state, a reason and `ended_at`, nothing of the chat's people, type, service or words:
a selection's room and --from/--to are applied to the jobs; its --customer/--agent to the source chat as it
is now (where it cannot be read, the chat is listed: it cannot be ruled out); its other filters not at all.
Jobs record no start: with --overlapping, those that ended after the window are counted as not known.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterator

from archiver.batches import batched
from archiver.config import Config
from archiver.index import index_database
from archiver.mongo import reachable, stored_time
from archiver.redact import redact
from archiver.search import SearchFilters
from archiver.visible import visible

NOT_DONE = ["quarantined", "failed", "pending", "claimed"]
NAMED = 100  # jobs named in a report; beyond this, counted only (a backlog can be long)
BATCH = 500
# Source chats read to match a person filter, at most: a backlog (a first deployment, `run --full`) is not read
# whole from the platform's database for one search; the jobs past it are counted as not checked.
PEOPLE_READ = 2_000
EXPORT_ADVICE = ("`archiver status` lists them with why; `archiver export ROOM` archives one (a quarantined one once "
                 "its source is fixed; one quarantined for a message over archive.max_message_chars, unaltered, with "
                 "that limit raised for that one export)")


@dataclass
class NotArchived:
    """The jobs not done that a selection's window covers (see module doc)."""
    jobs: list[dict[str, Any]] = field(default_factory=list)  # as `describe` reads them, up to NAMED
    count: int = 0
    undated: int = 0  # jobs not done with no recorded end (abandoned chats, old jobs): not placed in a window
    people_unknown: bool = False  # the selection names people: matched on the source chat (see module doc)
    unapplied: tuple[str, ...] = ()  # the selection's filters jobs cannot be matched by
    unchecked: int = 0  # jobs of the window past PEOPLE_READ, whose source chats were not read for the people
    # --overlapping: jobs not done that ended after the window, which may have begun in it (jobs record no start)
    ended_after: int = 0

    def lines(self) -> list[str]:
        """What a search (stderr) or a bundle (stdout, README.txt) says of them: nothing if there are none."""
        if not self.count and not self.undated and not self.unchecked and not self.ended_after:
            return []
        out = []
        if self.count:
            out.append(f"{self.count} chat(s) in this selection's window are NOT in the archive (their archive job "
                       "is not done), so no search or bundle holds them:")
            out += [f"  {describe(job)}" for job in self.jobs]
            if self.count > len(self.jobs):
                out.append(f"  ... and {self.count - len(self.jobs)} more (`archiver status`)")
        if self.unchecked:
            out.append(f"{self.unchecked} more chat(s) of the window not archived were not read for the people asked "
                       f"for (only the first {PEOPLE_READ:,} are): whose they are is not known (`archiver status`)")
        if self.ended_after:
            out.append(f"{self.ended_after} other chat(s) not archived, of any person, ended after the period; the job "
                       "queue does not record when they began, so whether they overlap it is not known (`archiver status`)")
        if self.undated:
            out.append(f"{self.undated} other chat(s) not archived, of any person, have no recorded end, so whether they "
                       "fall in the window is not known (`archiver verify --completeness --from --to` reads the source)")
        out.append(f"  (taken from the job queue by {self.matched_by()}"
                   + (f"; their {', '.join(self.unapplied)} are not known to the archive" if self.unapplied else "")
                   + ")")
        out.append(f"  {EXPORT_ADVICE}")
        return [visible(line) for line in out]

    def matched_by(self) -> str:
        return "room and the chat's end time" + (", and by the people its source chat names now"
                                                 if self.people_unknown else "")

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "jobs": [_plain(job) for job in self.jobs], "undated": self.undated,
                "not_read_for_people": self.unchecked,
                **({"ended_after_period": self.ended_after} if self.ended_after else {}),
                "matched_by": self.matched_by(),
                "not_matched_by": list(self.unapplied), "what_to_do": EXPORT_ADVICE}


_UNAPPLIED = {"ctlive_type": "type", "channel": "channel", "service": "service", "text": "words"}


def not_archived(config: Config, filters: SearchFilters) -> NotArchived:
    """The jobs not done that FILTERS' room and window cover (and, for people filters, whose source chat names
    them or cannot be read)."""
    jobs = index_database(config)[config["index.jobs"]]
    query: dict[str, Any] = {"state": {"$in": NOT_DONE}}
    if filters.room is not None:
        query["_id"] = {"$eq": filters.room}
    window = {**({"$gte": filters.ended_from} if filters.ended_from else {}),
              **({"$lte": filters.ended_to} if filters.ended_to else {})}
    report = NotArchived(people_unknown=filters.customer is not None or filters.agent is not None,
                         unapplied=tuple(name for key, name in _UNAPPLIED.items() if getattr(filters, key)))
    if filters.overlapping and filters.ended_to is not None:
        report.ended_after = jobs.count_documents({**query, "ended_at": {"$gt": filters.ended_to}})
    if window and filters.room is None:
        report.undated = jobs.count_documents({**query, "ended_at": {"$exists": False}})
        query["ended_at"] = window
    elif window:  # one room: its job, unless its recorded end is outside the window
        query["$or"] = [{"ended_at": window}, {"ended_at": {"$exists": False}}]
    found = jobs.find(query, {"state": 1, "reason": 1, "last_error": 1, "ended_at": 1, "finished_at": 1,
                              "discovered_at": 1, "available_at": 1}).sort("_id", 1)
    for job in _people(config, filters, found, report):
        report.count += 1
        if len(report.jobs) < NAMED:
            report.jobs.append(job)
    earlier = set(index_database(config)[config["index.entries"]].distinct(
        "room", {"room": {"$in": [job["_id"] for job in report.jobs]}, "status": "archived"}))
    report.jobs = [{**job, "archived_before": True} if job["_id"] in earlier else job for job in report.jobs]
    return report


def _people(config: Config, filters: SearchFilters, jobs: Any, report: NotArchived) -> Iterator[dict[str, Any]]:
    """JOBS whose source chat names FILTERS' customer and agent, or cannot be read (all of them without those
    filters); past PEOPLE_READ source chats, the rest are counted in REPORT as not checked."""
    if filters.customer is None and filters.agent is None:
        yield from jobs
        return
    from archiver.holds import _source_people
    from archiver.source import ChatSource

    db = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
    source = ChatSource(db, config["source.chats"], config["source.contacts"], config["source.messages"])
    read = 0
    for batch in batched(jobs, BATCH):
        if read >= PEOPLE_READ:
            report.unchecked += len(batch)
            continue
        read += len(batch)
        loaded = source.load_many([job["_id"] for job in batch])
        for job in batch:
            people = _source_people(*(loaded.get(job["_id"]) or (None, None)))
            if people is None:
                yield {**job, "people_unknown": True}
            elif all(getattr(filters, role) is None or getattr(filters, role) in people[role]
                     for role in ("customer", "agent")):
                yield job


def describe(job: dict[str, Any]) -> str:
    """ "ROOM: quarantined (needs a person) since ... (chat ended ...): why" (the reason redacted as `archiver
    status` shows it)."""
    return visible(f"{job['_id']}: {_state(job)}")


def _state(job: dict[str, Any]) -> str:
    state = job.get("state")
    since = _since(job)
    ended = _when(job.get("ended_at"))
    what = {"quarantined": "quarantined (needs a person)", "failed": "failed (retried)",
            "pending": "pending (not archived yet)", "claimed": "being archived now"}.get(state, str(state))
    why = _reason(job)
    return (what + (f" since {since}" if since else "") + (f" (chat ended {ended})" if ended else "")
            + (f": {why}" if why and state in ("quarantined", "failed") else "")
            + (f"; retried from {_when(job.get('available_at'))}" if state == "failed" else "")
            + ("; an earlier version of it is archived, its content since is not" if job.get("archived_before") else "")
            + ("; its source chat cannot be read, so whose it is is not known" if job.get("people_unknown") else ""))


def _reason(job: dict[str, Any]) -> str:
    """JOB's reason (else its last error), redacted; "" if it has none, or one that is not text (the job queue is
    in the index database, which a hand can edit)."""
    why = job.get("reason") or job.get("last_error")
    return redact(why) if isinstance(why, str) else ""


def _since(job: dict[str, Any]) -> str | None:
    """Since when JOB is in its state: its last attempt's end (quarantined, failed), its discovery (pending)."""
    state = job.get("state")
    return _when(job.get("finished_at") if state in ("quarantined", "failed") else
                 job.get("discovered_at") if state == "pending" else None)


def _plain(job: dict[str, Any]) -> dict[str, Any]:
    """JOB for chain-of-custody.json."""
    return {"room": job["_id"], "state": job.get("state"), "since": _since(job), "ended_at": _when(job.get("ended_at")),
            "reason": _reason(job),
            **{flag: True for flag in ("archived_before", "people_unknown") if job.get(flag)}}


def _when(value: Any) -> str | None:
    """A job's time (a datetime, or epoch milliseconds) as 'YYYY-MM-DD HH:MM UTC'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            return None
    value = stored_time(value)
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else None


def not_held(jobs: Any, entries: Any, room: str) -> str:
    """Why `retrieve ROOM` / `verify ROOM` find no archived version of ROOM (JOBS, ENTRIES: the job queue and the
    index): its job is not done (quarantined, say: since when, why, what to do), an archive attempt did not
    finish, or no chat of that id was ever discovered."""
    job = jobs.find_one({"_id": {"$eq": room}, "state": {"$in": NOT_DONE}})
    if job is not None:
        return visible(f"not archived (nothing of it was stored, so nothing was lost or altered): its archive job is "
                       f"{_state(job)}; {what_to_do(room, job)}")
    attempt = entries.find_one({"room": {"$eq": room}, "status": {"$in": ["uploading", "superseded"]}},
                               sort=[("version", -1)])
    if attempt is not None:
        return (f"no archived version: an archive attempt (version {attempt.get('version')}, status "
                f"{attempt.get('status')}) did not finish; `archiver status` shows its job")
    return "not in the archive index, and no archive job names it (check the room id; `archiver search` lists rooms)"


def what_to_do(room: str, job: dict[str, Any]) -> str:
    """What archives ROOM, whose JOB is not done (control characters of a room id made visible)."""
    return visible(_what_to_do(room, job))


def _what_to_do(room: str, job: dict[str, Any]) -> str:
    state = job.get("state")
    if state == "claimed":
        return "an archiver is working on it: ask again once it is done (`archiver status`)"
    if state in ("pending", "failed"):
        return (f"the next archive pass {'retries' if state == 'failed' else 'archives'} it; "
                f"`archiver export {room}` archives it now")
    if "archive.max_message_chars" in _reason(job):  # the chat as it is, without editing evidence
        return (f"`archiver export {room}` with that limit raised for that one export (ARCHIVER_ARCHIVE__MAX_MESSAGE_CHARS"
                "=<more>) archives it unaltered: the signed record keeps the message whole, the PDF shows what its page "
                "limit allows and says so; or fix the source chat first")
    return f"once its source chat is fixed, `archiver export {room}` archives it"

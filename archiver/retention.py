"""Retention runs and erasure: what may be deleted, and deleting it with proof.

A source chat is deleted only when its rule's `source_days` have passed since the
archived version holding exactly its current content was archived, that version's
objects are in the store with their recorded sizes and hashes (`check_stored`), no
archive job for the room is failed, quarantined, pending or claimed, no version is
uploading, and no legal hold covers the room. A chat that changed since it was
archived is queued for the archive pass instead, never deleted with an outdated
archive. An archived version is deleted when `archive_days` have passed, its
retain-until has passed, no hold covers the room and its source chat is gone; it
leaves a tombstone: the index entry itself, status `deleted`, object hashes kept,
with a `deletion` sub-document (run, rule, reason, when).

Holds are checked when the plan is made and again right before each deletion.
See runs.py for how a run is planned, persisted, resumed and reported.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import bson
from bson.errors import BSONError
from pymongo import ASCENDING

from archiver.attachment_retries import documents_sha256
from archiver.audit import Actor, AuditError, open_audit_log, sorted_room_summary
from archiver.claims import WorkQueue, now
from archiver.config import Config, ConfigError
from archiver.seals import ARCHIVED_LEAF_1, TOMBSTONE_FIELDS, archive_day_format, tombstone_fields
from archiver.search import SEARCH_KEY_STATE, person_trace, same_key
from archiver.holds import Holds, SourceHolds, _source_people, open_holds
from archiver.integrity import check_stored
from archiver.logs import event
from archiver.mongo import index_uri, reachable, server_ms
from archiver.mongo import stored_time as _aware  # index times, and the stand-in's dates as text
from archiver.policy import Policy, Rule, configured_policy
from archiver.pins import configured_pins
from archiver.redaction import Redactor
from archiver.render.record import source_digest
from archiver.runs import (RunLedger, Step, Tally, described_counts, dry_run_report, iso, report_keys, steps_of,
                           store_report, timed_steps)
from archiver.source import ChatSource, SourceProblem
from archiver.names import recorded_folders
from archiver.store import ObjectLocked, ObjectStore, StoreError, open_store, open_store_for
from archiver.transcript import CONTACT_PEOPLE, DERIVED_FROM_CONTACT, InvalidChat, contact_person, contact_present

ROOM_BATCH = 500
CONTACT_GONE_AT = "contact_gone_at"  # no source contact when its fields were to be derived: not read again
ENTRY_FIELDS = {"terms": 0, "participants": 0, "warnings": 0, "redaction": 0}  # not needed to plan
# (passed as a copy: mongomock adds "_id": 1 to the projection it is given, which the stand-in nx-27017 then reads
# as an inclusion, returning _id alone, when another query of the process uses it)
ENTRY_ACTIONS = ("delete_archive", "delete_leftovers", "extend_lock", "erase_personal")  # steps on an index entry
EXECUTED = ("requeue", "extend_lock", "erase_personal", "delete_leftovers", "delete_source", "delete_archive")
PERSONAL_FIELDS = ("customers", "opened_by", "agents", "handled_by", "present", "participants", "title", "terms",
                   "closed_by")  # erased from tombstones
ERASES = f"; removes from the tombstone: {', '.join(PERSONAL_FIELDS)} (its object hashes and seal leaves stay)"
DESCRIBED = ["archived", "deleted"]  # entries with a chat's metadata (not an attempt's or a superseded one)
OPEN_JOB = {"pending": "waiting to be archived", "claimed": "being archived", "failed": "archive failed",
            "quarantined": "quarantined"}


@dataclass
class RunResult:
    report: dict[str, Any]  # a report in parts has no `items` (runs.store_report): items() reads them
    resumed: bool = False
    location: dict[str, Any] | None = None
    stored_items: Callable[[], Iterator[dict[str, Any]]] | None = None  # the run's items, from its ledger
    unaudited: str = ""  # why its audit entry could not be written (the run stays unfinished until it is)

    @property
    def ok(self) -> bool:
        return not Tally(self.report["counts"]).failed and not self.unaudited

    def items(self) -> Iterator[dict[str, Any]]:
        """Every item, streamed when the report was written in parts."""
        if "items" in self.report or self.stored_items is None:
            return iter(self.report["items"])
        return self.stored_items()


class Deletions:
    """Plans and carries out retention runs and erasures against the source, the index and the stores."""

    def __init__(self, config: Config) -> None:
        config.require("mongodb.uri", "storage.url")
        self.config = config
        self.policy: Policy = configured_policy(config)
        index_db = reachable(*index_uri(config))[config["index.database"]]
        source_db = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
        self.redactor = Redactor.from_config(config)
        self.source = ChatSource(source_db, config["source.chats"], config["source.contacts"], config["source.messages"],
                                 self.redactor.mask)
        self.entries = index_db[config["index.entries"]]
        self.seals = index_db[config["index.seals"]]  # (the leaf format an archive day was sealed in)
        self.queue = WorkQueue(index_db[config["index.jobs"]])
        self.ledger = RunLedger(index_db[config["index.retention_runs"]], index_db[config["index.retention_steps"]])
        self.ledger.ensure_indexes()
        # holds are matched against the source chats as they are now too (holds.SourceHolds)
        self.sources = SourceHolds(self.source, self.redactor, config["archive.max_message_chars"])
        self.holds: Holds = open_holds(config, self.sources)
        self.lock_mode = config["storage.object_lock_mode"]
        self._stores: dict[str, ObjectStore] = {}
        # an erased shared chat's tombstone keeps the other customers' ids keyed with it (search.person_trace): the
        # holds' search key (search.key_file, read once), which must be the index's (ConfigError otherwise)
        self.search_key = self.holds.key
        if self.search_key is not None:
            same_key(index_db[config["index.state"]].find_one({"_id": SEARCH_KEY_STATE}), self.search_key)

    def store_of(self, entry: dict[str, Any]) -> ObjectStore:
        where = (entry.get("store") or {}).get("url", "")
        if where not in self._stores:
            self._stores[where] = open_store_for(entry, self.config)
        return self._stores[where]

    # -- running -------------------------------------------------------------------------------

    def run(self, kind: str, planner: Callable[[dt.datetime], Iterator[Step]], params: dict[str, Any],
            dry_run: bool, actor: Actor) -> RunResult:
        """Plan (and unless DRY_RUN, persist and execute) a run of KIND; resumes one a crash left."""
        self._check_clock()
        if dry_run:
            self.sources.record = None  # writes nothing: not even that a source chat was found held (Holds.record)
            run = {"_id": "dry-run", "kind": kind, "as_of": now(), "params": params}
            items = ({**step.item(), "outcome": "skipped" if step.action == "skip" else "planned"}
                     for step in planner(run["as_of"]))
            body, spooled = dry_run_report(run, items, self.policy.describe())
            waiting = self.ledger.runs.find_one({"kind": kind, "state": {"$in": ["executing", "reporting"]}})
            if waiting:  # the real command finishes that one first: say so rather than show another plan
                body["interrupted_run_first"] = waiting["_id"]
            return RunResult(body, stored_items=spooled)
        signer = self.signer()  # fails before work
        self.ledger.acquire(kind)
        try:
            result = self._run_or_resume(kind, planner, params, signer, actor)
            if result.resumed and not result.unaudited and result.report["params"] != params:  # another request's
                result = self._run_or_resume(kind, planner, params, signer, actor)
        finally:
            self.ledger.release(kind)
        return result

    def signer(self) -> Any:
        """The archiver's signing identity: it signs each run's plan and report."""
        from archiver.artifacts import configured_identity
        from archiver.signing import Signer

        return Signer(configured_identity(self.config), self.config["signing.timestamp_url"],
                      self.config["signing.timestamp_max_skew_seconds"])

    def _check_clock(self) -> None:
        """What is due is decided by this machine's date: it must agree with the database server's (within
        signing.timestamp_max_skew_seconds), or a fast clock would delete early. ConfigError if not."""
        ahead = (now() - dt.datetime.fromtimestamp(server_ms(self.ledger.runs.database) / 1000, dt.timezone.utc))
        allowed = self.config["signing.timestamp_max_skew_seconds"]
        if abs(ahead.total_seconds()) > allowed:
            raise ConfigError(f"this machine's clock is {abs(ahead.total_seconds()):,.0f} s "
                              f"{'ahead of' if ahead.total_seconds() > 0 else 'behind'} the MongoDB server's (more "
                              f"than signing.timestamp_max_skew_seconds, {allowed:g} s): a deletion run decides "
                              "what is due by the date; nothing done (fix the clock, NTP)")

    def _run_or_resume(self, kind: str, planner: Callable[[dt.datetime], Iterator[Step]], params: dict[str, Any],
                       signer: Any, actor: Actor) -> RunResult:
        run = self.ledger.unfinished(kind)
        resumed = run is not None
        if run is not None:  # PlanNotSigned unless this service planned it, as its steps are now: nothing done
            self.ledger.check_plan(run, configured_pins(self.config))
        else:
            # (both keep the lease, batch by batch: on a large archive they may outlast it; RunBusy if it was lost)
            self.derive_contact_people(self.ledger.keep)  # before holds are matched: else held by any person's
            # S3 legal holds a crash or a failed put left unset; those of rooms held through their source chats
            # alone by a retention run only (it reads every source chat of an archive without one: not for one
            # customer's erasure, whose own chats are checked before each deletion)
            self.holds.sync(self.store_of, through_sources=kind == "retention", keep=self.ledger.keep)
            self.ledger.keep()  # still ours: else another process runs, and this one begins no run
            run = self.ledger.begin(kind, now(), params, actor.as_dict(), self.policy.describe())
            self.ledger.record_plan(run, planner(_aware(run["as_of"])), signer)
            run["state"] = "executing"
        if run["state"] == "executing":
            timed_steps(lambda batch: self._execute(run["_id"], batch), self.ledger, run["_id"], kind)
            self.ledger.runs.update_one({"_id": run["_id"]}, {"$set": {"state": "reporting"}})
        result = self._finish(run, signer, resumed)
        try:  # a step of the run: until its entry is written the run is unfinished, and the next one writes it
            entry = self._audit(run, result, resumed, actor)
        except AuditError as exc:
            result.unaudited = (f"{exc}: run {run['_id']} is not finished until its audit entry is written; the "
                                f"next `archiver {'erase' if kind == 'erasure' else 'retention run'}` writes it "
                                "(and no other run of this kind starts before)")
            event(f"{kind}_run_unaudited", logging.ERROR, run=run["_id"], error=str(exc))
            return result
        self.ledger.runs.update_one({"_id": run["_id"]}, {"$set": {"state": "done", "finished_at": now(),
                                                                   "audit_seq": entry["seq"]}})
        return result

    def _audit(self, run: dict[str, Any], result: RunResult, resumed: bool, actor: Actor) -> dict[str, Any]:
        ran = run.get("params", {})
        return open_audit_log(self.config).record(
            "erase" if run["kind"] == "erasure" else "retention_run", actor,
            outcome="ok" if result.ok else "items_failed", reason=ran.get("reason", ""),
            filters={"run": run["_id"], "resumed": resumed, **{k: v for k, v in ran.items() if k != "reason"},
                     **({"started_by": run["started_by"]} if run.get("started_by") else {})},
            rooms=sorted_room_summary(self.ledger.affected_rooms(run["_id"])),
            detail=f"report {result.location['key']} SHA-256 {result.location['sha256']}; "
                   f"counts {result.report['counts']}")

    def _finish(self, run: dict[str, Any], signer: Any, resumed: bool) -> RunResult:
        retain = now() + dt.timedelta(days=self.config["storage.retain_days"]) if self.lock_mode else None
        items = functools.partial(self.ledger.items, run["_id"])
        store = open_store(self.config)
        body, location, summary = store_report(store, signer, run, items(), self._planned_under(run, store),
                                               retain, functools.partial(self.ledger.name_report_parts, run))
        self.ledger.runs.update_one({"_id": run["_id"]}, {"$set": {  # done once audited (_run_or_resume)
            "counts": body["counts"], "rooms_affected": body["rooms_affected"], "report": location}})
        event(f"{run['kind']}_run_finished", run=run["_id"], resumed=resumed, counts=body["counts"])
        return RunResult(body, resumed, location, items)

    def _planned_under(self, run: dict[str, Any], store: ObjectStore) -> list[dict[str, Any]]:
        """The policy RUN was planned under, which its report states (a resumed run stores the same report,
        whatever the policy is today): as recorded when it began; for a run begun before runs recorded it,
        as its report states if one was stored before a crash; else today's."""
        if run.get("policy") is not None:
            return run["policy"]
        try:
            return json.loads(store.get(report_keys(run["kind"], run["_id"])[0]))["policy"]
        except (StoreError, ValueError, KeyError, TypeError):
            return self.policy.describe()

    # -- executing one batch of steps ----------------------------------------------------------

    def _execute(self, run_id: str, batch: list[dict[str, Any]]) -> None:
        """Carry out BATCH; each step is marked done after it (all in one write: a crash before it makes
        the next run redo them, and every action is idempotent)."""
        rooms = sorted({step["room"] for step in batch})
        run = self.ledger.runs.find_one({"_id": run_id}, {"kind": 1, "policy": 1, "as_of": 1, "params": 1}) or {}
        asked = run.get("params") or {}
        holds = self.holds.active()
        ctx = _Batch(
            entries={e["_id"]: e for e in self.entries.find({"_id": {"$in": [
                s["entry_id"] for s in batch if s["action"] in ENTRY_ACTIONS]}})},
            held=self.holds.held_rooms(rooms, holds), hold_ids={h["_id"] for h in holds},
            sources={d["room"] for d in self.source.chats.find({"room": {"$in": rooms}}, {"room": 1})},
            # resumed under a policy changed since the plan (or not recorded): each deletion is due today too
            due_by=(_aware(run["as_of"]) if run.get("kind") == "retention" and run.get("as_of")
                    and run.get("policy") != self.policy.describe() else None),
            # an erasure without --include-shared: whose (its chats shared since the plan are kept too)
            erasure_of=(asked.get("customer") if run.get("kind") == "erasure" and asked.get("include_shared") is not True
                        else None))
        done = []
        for step in batch:
            self.ledger.keep()  # by time: a slow store's steps never outlast the lease; RunBusy if lost
            try:
                outcome, detail = self._do(run_id, step, ctx)
            except StoreError as exc:
                outcome, detail = "failed", str(exc)
            if outcome == "failed":
                event("deletion_failed", logging.WARNING, room=step["room"], action=step["action"], error=detail)
            done.append((step, outcome, detail))
        self.ledger.done_all(done)

    def _do(self, run_id: str, step: dict[str, Any], ctx: "_Batch") -> tuple[str, str]:
        action = step["action"]
        if action not in EXECUTED:  # a skip made pending by hand (its state is not signed: plan_statement)
            return "failed", f"not an action a run executes: {action!r} (the step was edited)"
        if action == "requeue":
            return self._requeue(step["room"])
        if action == "extend_lock":
            return self._extend(step, ctx.entries.get(step["entry_id"]))
        entry, room = ctx.entries.get(step["entry_id"]), step["room"]
        # Right before the deletion, not only when the batch was read: a hold placed, or a chat changed,
        # while the batch runs still counts (a deletion cut short by a crash and held since is not finished).
        # The source too, while it is there: holds are matched against it as it is now.
        loaded = self.source.load_many([room])[room] if action == "delete_source" or room in ctx.sources else (None, None)
        if action == "delete_source" and loaded[0] is None:  # this run deleted it before it was interrupted (or
            # it went otherwise). Its messages and contact go after it: those a crash left are named, not guessed at.
            left = "" if step["rule"] == "erasure" else self.source.left_of(room, self.config["retention.delete_contacts"])
            return ("failed", f"source chat deleted, but {left} left in MongoDB (a deletion cut short, or written "
                              "since): a person should look") if left else ("deleted", "")
        cases = self._held_now(room, ctx, loaded)
        if cases:
            self._record_kept_objects(run_id, step, entry)
            return "skipped", (f"held by case {', '.join(map(repr, cases))} (found right before the deletion: placed, "
                               "or the chat changed, after the plan was made)")
        kept = self._kept_by_policy_now(run_id, step, entry, ctx.due_by) if ctx.due_by else ""
        kept = kept or (self._shared_now(step, entry, loaded, ctx.erasure_of) if ctx.erasure_of else "")
        if kept:
            return "skipped", kept
        if action == "erase_personal":
            return self._erase_personal(run_id, entry)
        if action == "delete_leftovers":
            return self._delete_leftovers(run_id, entry)
        if action == "delete_source":
            outcome = self._delete_source(run_id, step, loaded)
            if outcome[0] == "deleted":
                ctx.sources.discard(room)
            return outcome
        return self._delete_archive(run_id, step, entry, room in ctx.sources)

    def _record_kept_objects(self, run_id: str, step: dict[str, Any], entry: dict[str, Any] | None) -> None:
        """On STEP, kept although this run began deleting ENTRY (a crash cut it short): which of its objects were
        stored then (`kept_objects`). Any of those missing later was removed after the run kept it (held
        evidence gone), not by the deletion. Not recorded if the store cannot tell (then read as before)."""
        deletion = (entry or {}).get("deletion") or {}
        if entry is None or entry["status"] != "deleted" or deletion.get("state") != "deleting" \
                or deletion.get("run") != run_id:
            return
        store = self.store_of(entry)
        try:
            kept = [name for name, obj in (entry.get("objects") or {}).items()
                    if (versions := store.versions(obj["key"])) and (not obj.get("version_id")
                                                                     or obj["version_id"] in versions)]
        except StoreError:
            return
        self.ledger.steps.update_one({"_id": step["_id"]}, {"$set": {"kept_objects": kept}})

    def _held_now(self, room: str, ctx: "_Batch", loaded: tuple[Any, Any]) -> list[str]:
        """The cases holding ROOM now: as read for the batch, by any hold placed since (one query for the
        active holds, however many there are; by id, not by time: the placer's clock may be behind), and by
        any active hold its source chat (LOADED, if still there) may fall under (SourceHolds)."""
        cases = list(ctx.held.get(room, ()))
        active = self.holds.active()
        new = [h for h in active if h["_id"] not in ctx.hold_ids]
        if new:
            cases += self.holds.held_rooms([room], new).get(room, [])
        cases += self.sources.cases(room, loaded, active)
        return sorted(set(cases))

    def _shared_now(self, step: dict[str, Any], entry: dict[str, Any] | None, loaded: tuple[Any, Any],
                    customer: str) -> str:
        """Why an erasure without --include-shared keeps what STEP would delete ("" if nothing does): another
        customer wrote in or opened the chat after the plan was made (by its source now, and the entry). As the
        plan does: a deletion begun already is finished, and removing one's own trace takes no one else's data."""
        deletion = (entry or {}).get("deletion") or {}
        if step["action"] not in ("delete_source", "delete_archive", "erase_personal") or (
                step["action"] == "delete_archive" and (entry or {}).get("status") != "archived") or (
                step["action"] == "erase_personal" and "personal_data_removed" in deletion):
            return ""
        shared = _shared([entry] if entry and step["action"] != "delete_source" else [], loaded, customer)
        what = {"delete_source": "source chat", "delete_archive": "archive", "erase_personal": "personal data"}
        return (f"{what[step['action']]} kept: {shared} (found right before the deletion: the chat changed after the "
                "plan was made); erase with --include-shared to remove it anyway") if shared else ""

    def _kept_by_policy_now(self, run_id: str, step: dict[str, Any], entry: dict[str, Any] | None,
                            as_of: dt.datetime) -> str:
        """Why today's policy keeps what STEP, planned under an earlier one, would delete ("" if it is due
        today too, or its deletion has begun: a tombstone is finished). Never delete what today's policy keeps."""
        if step["action"] not in ("delete_source", "delete_archive", "delete_leftovers") or (
                step["action"] != "delete_source" and (entry is None or entry["status"] == "deleted")):
            return ""
        versions = list(self.entries.find({"room": step["room"], "status": {"$in": ["archived", "deleted"]}},
                                          dict(ENTRY_FIELDS)).sort("version", 1))
        # the rule the plan applied: by the room's latest version archived then (this run may have deleted some)
        planned = [v for v in versions if v["status"] == "archived" or (v.get("deletion") or {}).get("run") == run_id]
        rule = self.policy.rule_for((planned or versions)[-1]) if versions else None
        if step["action"] == "delete_source":
            what = "source_days"
            since = next((v["archived_at"] for v in versions if v["version"] == step["version"]), None)
        else:
            what = "archive_days"
            since = entry.get("archived_at") if step["action"] == "delete_archive" else entry.get("created_at")
        days = getattr(rule, what) if rule else None
        if since is not None and days is not None and _aware(since) + dt.timedelta(days=days) <= as_of:
            return ""
        today = f"rule {rule.name}: {what} {'none' if days is None else days}" if rule else "no rule applies"
        return (f"kept: not due under today's policy ({today}); this run was planned under the policy its report "
                "states and resumed after it changed")

    def derive_contact_people(self, keep: Callable[[], None] = lambda: None) -> int:
        """`opened_by`, `handled_by` (the contact's userID and agentID, transcript.CONTACT_PEOPLE) and `present`
        (whom else it names: transcript.contact_present) for entries indexed before they were, from the source
        contact while it is there (one contact document for the room); the fields set. Without one, every hold by
        customer (or agent) covers the entry (search.contact_unknown). KEEP() before each batch of rooms.
        `present` only where the entry's redaction version is today's: redacted by other rules it could differ
        from the signed record's (an origin a rule masks), and `verify` would name it. Each derived field is
        recorded in DERIVED_FROM_CONTACT (when); an entry whose contact is gone is marked CONTACT_GONE_AT, and
        later runs skip it (its fields stay unknown)."""
        kept = {"status": {"$in": DESCRIBED}, "deletion.personal_data_removed": {"$exists": False},
                CONTACT_GONE_AT: {"$exists": False}}
        missing = {field: {field: {"$exists": False}, **kept} for field in CONTACT_PEOPLE}
        missing["present"] = {"present": {"$exists": False}, "redaction.version": self.redactor.version, **kept}
        changed = 0
        projection = {"id": 1, "users": 1, "contact_events": 1, **{name: 1 for name, _ in CONTACT_PEOPLE.values()}}
        for rooms in self._rooms_missing(list(missing.values()), keep):
            contacts: dict[str, list[dict[str, Any]]] = {}
            try:
                for doc in self.source.contacts.find({"id": {"$in": rooms}}, projection):
                    if isinstance(doc.get("id"), str):  # (not an array holding the room)
                        contacts.setdefault(doc["id"], []).append(doc)
            except BSONError:  # a contact MongoDB cannot decode: that batch stays unknown (held by any person's)
                continue
            gone = [room for room in rooms if room not in contacts]
            if gone:
                self.entries.update_many({"room": {"$in": gone}, "$or": list(missing.values())},
                                         {"$set": {CONTACT_GONE_AT: now()}})
            for room, found in contacts.items():
                if len(found) != 1:  # (two contacts for a room: which one says who opened or handled it is not known)
                    continue
                for field in CONTACT_PEOPLE:
                    changed += self.entries.update_many({**missing[field], "room": room}, {"$set": {
                        field: contact_person(found[0], field) or None,
                        f"{DERIVED_FROM_CONTACT}.{field}": now()}}).modified_count
                changed += self._derive_present(room, found[0], missing["present"])
        return changed

    def _rooms_missing(self, conditions: list[dict[str, Any]], keep: Callable[[], None]) -> Iterator[list[str]]:
        """The rooms of the entries matching any of CONDITIONS, up to ROOM_BATCH entries' at a time, paged by _id:
        no `distinct` (its result is capped at 16 MB: some 270k rooms) and no cursor left open while contacts are
        read (a room of several versions may come twice: its second pass finds nothing left to set)."""
        after: Any = None
        while True:
            keep()
            query = {"$or": conditions, **({"_id": {"$gt": after}} if after is not None else {})}
            page = list(self.entries.find(query, {"room": 1}).sort("_id", ASCENDING).limit(ROOM_BATCH))
            if not page:
                return
            after = page[-1]["_id"]
            yield sorted({entry["room"] for entry in page if isinstance(entry.get("room"), str)})

    def _derive_present(self, room: str, contact: dict[str, Any], missing: dict[str, Any]) -> int:
        """`present` of ROOM's entries that lack it (MISSING), from CONTACT redacted as the archive pass reads it
        (an event's origin is text redaction may mask), each beside its own authors; 0 if it cannot be redacted."""
        try:
            contact = self.redactor.apply({}, contact).contact or {}
        except InvalidChat:  # (stays unknown: held by every hold by agent)
            return 0
        changed = 0
        for entry in self.entries.find({**missing, "room": room}, {"participants": 1, "agents": 1, "customers": 1}):
            listed = [entry.get(field) if isinstance(entry.get(field), list) else []
                      for field in ("participants", "agents", "customers")]
            authors = [p.get("user_id") if isinstance(p, dict) else p for people in listed for p in people]
            changed += self.entries.update_one({"_id": entry["_id"], "present": {"$exists": False}}, {"$set": {
                "present": contact_present(contact, authors), f"{DERIVED_FROM_CONTACT}.present": now()}}).modified_count
        return changed

    def _requeue(self, room: str) -> tuple[str, str]:
        job = self.queue.jobs.find_one({"_id": room}, {"kind": 1}) or {}
        self.queue.enqueue([(room, job.get("kind") or "ended")], changed={room})
        return "queued", ""

    def _delete_source(self, run_id: str, step: dict[str, Any], loaded: tuple[Any, Any]) -> tuple[str, str]:
        chat, contact = loaded
        erasure = step["rule"] == "erasure"
        # The pass may have read it: it would archive what it read after the deletion (an erasure undone); once
        # done, the next request goes. A claim whose lease ran out too: its archiver may only have stalled.
        if self.queue.jobs.find_one({"_id": step["room"], "state": "claimed"}, {"_id": 1}):
            return "skipped", ("source chat kept: it is being archived right now (its job is claimed); "
                               f"{'erase' if erasure else 'run'} again once the archive pass has finished")
        if isinstance(chat, SourceProblem) and not (erasure and chat.readable):  # an erasure takes every contact
            return "skipped", f"the source chat cannot be read: {chat.reason}"
        if isinstance(chat, dict) and step["source_sha256"]:  # erasure plans carry no digest: any content goes
            if _raw(chat, contact) != step["raw_sha256"] and self._digest(chat, contact) != step["source_sha256"]:
                self._requeue(step["room"])
                return "skipped", "the source chat changed after the plan was made: queued for archiving"
        if not erasure:
            return self._delete_checked(step["room"], chat, contact)
        # Idempotent: a chat deleted before a crash is gone; what is left of the room (contact) goes now.
        self.source.delete_room(step["room"], step["entry_id"], True)
        meanwhile = self._archived_meanwhile(run_id, step["room"])
        if meanwhile:
            return "failed", f"source chat deleted, but {meanwhile}, after this erasure was planned: erase again"
        return "deleted", ""

    def _delete_checked(self, room: str, chat: dict[str, Any], contact: dict[str, Any] | None) -> tuple[str, str]:
        """Retention deletes exactly what it compared with the archive: a document written (or changed) since
        stays, and the room is queued for archiving, so a later pass archives it and a later run deletes it."""
        deleted, left = self.source.delete_checked(room, chat, contact, self.config["retention.delete_contacts"])
        if not left:
            return "deleted", ""
        self._requeue(room)
        if not deleted:
            return "skipped", f"source chat kept: {left}; queued for archiving"
        return "failed", (f"source chat deleted as archived, but {left}: not deleted, not archived; queued for "
                          "archiving (a person should look: messages without their chat are quarantined)")

    def _archived_meanwhile(self, run_id: str, room: str) -> str:
        """What the archive pass did with ROOM that this run's plan does not cover ("" if nothing): a version
        archived (or being archived) that the plan does not name, or a claim on its job (the pass may have
        read the chat before the deletion, and archive it after). Asked once the source is gone, so nothing
        read before escapes: a pass holds its claim from before its read until its version is indexed."""
        planned = [s["entry_id"] for s in self.ledger.steps.find({"run": run_id, "room": room}, {"entry_id": 1})
                   if s.get("entry_id") is not None]
        versions = sorted(e["version"] for e in self.entries.find(
            {"room": room, "status": {"$in": ["archived", "uploading"]}, "_id": {"$nin": planned}}, {"version": 1}))
        if versions:
            return f"the archive pass archived it meanwhile (version {', '.join(map(str, versions))})"
        if self.queue.jobs.find_one({"_id": room, "state": "claimed"}, {"_id": 1}):
            return "the archive pass claimed it meanwhile (it may have read it before the deletion)"
        return ""

    def _delete_archive(self, run_id: str, step: dict[str, Any], entry: dict[str, Any] | None,
                        source_present: bool) -> tuple[str, str]:
        if entry is None:
            return "failed", "the index entry is gone"
        deletion = entry.get("deletion") or {}
        if entry["status"] == "deleted" and deletion.get("state") == "done":  # by this run before a crash: done
            return ("deleted", "") if deletion.get("run") == run_id else (
                "skipped", f"already deleted by run {deletion.get('run')}")
        if entry["status"] not in ("archived", "deleted"):
            return "skipped", f"the entry is {entry['status']} now"
        resumed = entry["status"] == "deleted"
        if not resumed:
            if step["rule"] != "erasure" and source_present:
                return "skipped", "archive kept: the source chat is still in MongoDB (its archive goes only after it)"
            until = _aware(entry.get("retain_until"))
            if self.lock_mode and until is not None and until > now():
                return "skipped", f"locked until {iso(until)}"
            if not self._mark_deleting(entry, run_id, step):  # the intent, before any object goes
                now_is = (self.entries.find_one({"_id": entry["_id"]}, {"status": 1}) or {}).get("status", "gone")
                return "skipped", f"the entry changed meanwhile (now {now_is}): nothing deleted"
        store = self.store_of(entry)
        objects = [(o["key"], o.get("version_id", "")) for o in (entry.get("objects") or {}).values()]
        set_aside = entry.get("superseded_objects") or []  # interrupted attempts' ciphertext, by key alone
        for n, (key, version_id) in enumerate([*objects, *((k, None) for k in set_aside)]):
            try:  # gone already (a resumed run): no error
                store.delete(key, version_id) if version_id is not None else store.delete_versions(key)
            except StoreError as exc:  # locked: refused; anything else (a permission, an outage): failed
                return self._refused(entry, exc, partly=resumed or n > 0)
        self._remove_temporaries(store, entry)
        return "deleted", self._complete(entry, step, run_id)

    def _remove_temporaries(self, store: ObjectStore, entry: dict[str, Any]) -> None:
        """What writes cut short left in the version's folders (stale_temporaries): it may hold a ciphertext."""
        lease = dt.timedelta(seconds=self.config["archive.lease_seconds"])
        for folder in recorded_folders(entry):
            store.remove_temporaries(store.stale_temporaries(folder + "/", lease))

    def _delete_leftovers(self, run_id: str, entry: dict[str, Any] | None) -> tuple[str, str]:
        """The objects an interrupted attempt left (a superseded entry's), each key with every version; the
        entry keeps which went, when and by which run."""
        if entry is None:
            return "failed", "the index entry is gone"
        keys = entry.get("superseded_objects") or []
        store = self.store_of(entry)
        for n, key in enumerate(keys):
            try:  # gone already (a resumed run): no error
                store.delete_versions(key)
            except ObjectLocked as exc:
                return ("failed" if n else "refused"), f"the store refused: {exc}"
        self._remove_temporaries(store, entry)
        self.entries.update_one({"_id": entry["_id"]}, {  # only those: an attempt may have added more since
            "$pullAll": {"superseded_objects": keys},
            "$set": {"leftovers_deleted": {"run": run_id, "at": now(), "keys": keys}}})
        return "deleted", ""

    def _complete(self, entry: dict[str, Any], step: dict[str, Any], run_id: str) -> str:
        """Every object is gone: the tombstone is done; an erasure's also loses the personal metadata (who
        took part, title, word hashes) now, not before: a refused deletion leaves the entry whole. What the
        step says of the other customers' trace ("" if none)."""
        update: dict[str, Any] = {"$set": {"deletion.state": "done", "deletion.completed_at": now()}}
        begun_by = (entry.get("deletion") or {}).get("run", run_id)
        if begun_by != run_id:  # an earlier run's, finished by this one
            update["$set"]["deletion.completed_by"] = run_id
        said = ""
        if step["rule"] == "erasure" or (entry.get("deletion") or {}).get("rule") == "erasure":
            update["$set"]["deletion.personal_data_removed"] = list(PERSONAL_FIELDS)
            update["$unset"] = {name: "" for name in PERSONAL_FIELDS}
            said = self._trace(entry, self._requesters(begun_by, run_id), update["$set"])
        self.entries.update_one({"_id": entry["_id"]}, update)
        return said

    def _requesters(self, *run_ids: str) -> set[str]:
        """The customers whose erasures those of RUN_IDS that are erasures were."""
        return {customer for run in self.ledger.runs.find({"_id": {"$in": list(run_ids)}}, {"params": 1})
                if isinstance(customer := (run.get("params") or {}).get("customer"), str)}

    def _trace(self, entry: dict[str, Any], requesters: set[str], fields: dict[str, Any]) -> str:
        """For a chat other customers wrote in or opened, erased at REQUESTERS' request (the run that began the
        deletion and the one finishing it: no requester's own trace): the others' ids, keyed with the search
        key, into FIELDS (`deletion.shared_with`), so that `search --customer` can say it was erased; none
        without the key. What the step says of it ("" for the requesters' own chat)."""
        others = _other_customers([entry], (None, None), *requesters) if requesters else set()
        if not others:
            return ""
        if self.search_key is None:
            return f"no trace of the {len(others)} other customer(s) kept: search.key_file is not set"
        fields["deletion.shared_with"] = sorted(person_trace(other, self.search_key) for other in others)
        return (f"a keyed trace of the {len(others)} other customer(s) kept in the tombstone "
                "(`search --customer` says the chat was erased)")

    def _traced_said(self) -> str:
        """What a shared chat's erasure (--include-shared) tells of the other customers, in its plan."""
        return ("; a keyed trace of them is kept in the tombstone (search --customer says the chat was erased)"
                if self.search_key is not None else "; no trace of them is kept: search.key_file is not set")

    def unreadable_traces(self) -> int:
        """Without the search key: how many tombstones keep keyed traces of customers (erase --include-shared),
        which an erasure cannot then look a customer up in (0 with the key, which finds them)."""
        if self.search_key is not None:
            return 0
        return self.entries.count_documents({"status": "deleted", "deletion.shared_with": {"$exists": True}})

    def _traced(self, customer: str, deletion: dict[str, Any]) -> bool:
        """Whether an erased shared chat's tombstone (DELETION) keeps CUSTOMER's keyed trace."""
        traces = deletion.get("shared_with")
        return (self.search_key is not None and isinstance(traces, list)
                and person_trace(customer, self.search_key) in traces)

    def _mark_deleting(self, entry: dict[str, Any], run_id: str, step: dict[str, Any]) -> bool:
        """The tombstone, written before any object goes: the entry itself, hashes kept."""
        at = now()
        update: dict[str, Any] = {"$set": {"status": "deleted", "deletion": {
            "run": run_id, "rule": step["rule"], "reason": step["reason"], "at": at, "state": "deleting"},
            # what the seals read (docs/seals.md): the tombstone's own leaf, and the archive leaf's hash
            # so a sealed day still recomputes once the personal fields are gone
            **tombstone_fields(entry, step["rule"], at, archive_day_format(self.seals, entry))}}
        return self.entries.update_one({"_id": entry["_id"], "status": "archived"}, update).matched_count == 1

    def _erase_personal(self, run_id: str, entry: dict[str, Any] | None) -> tuple[str, str]:
        """An erasure of a tombstone an earlier deletion left: its personal metadata goes; its leaves stay
        (the archive leaf is kept as `archived_leaf_sha256`, the tombstone leaf reads none of it)."""
        if entry is None:
            return "failed", "the index entry is gone"
        if not entry.get("archived_leaf_sha256"):  # removing the fields would break the sealed archive leaf
            return "skipped", "personal data kept: the tombstone predates archived_leaf_sha256 (its seal leaf)"
        deletion = entry.get("deletion") or {}
        requester = next(iter(self._requesters(run_id)), None)
        update: dict[str, Any] = {"$set": {"deletion.personal_data_removed": list(PERSONAL_FIELDS),
                                           "deletion.erased_by": run_id, "deletion.erased_at": now()},
                                  "$unset": {name: "" for name in PERSONAL_FIELDS}}
        said = ""
        if "personal_data_removed" not in deletion:  # a shared chat's (--include-shared): the others' trace stays
            said = self._trace(entry, {requester} if requester else set(), update["$set"])
        if isinstance(requester, str) and self._traced(requester, deletion):  # their trace, kept by another's erasure
            mine = person_trace(requester, self.search_key)  # (_traced: the key is set)
            kept = {"deletion.shared_with": [t for t in deletion["shared_with"] if t != mine]}
            update = ({"$set": kept} if "personal_data_removed" in deletion  # (the other fields went then)
                      else {**update, "$set": {**update["$set"], **kept}})
        if self.entries.update_one({"_id": entry["_id"], "status": "deleted", "deletion.state": "done",
                                    "archived_leaf_sha256": {"$exists": True}}, update).matched_count != 1:
            return "skipped", f"the tombstone changed meanwhile (now {entry.get('status')}): nothing erased"
        return "erased", said

    def _refused(self, entry: dict[str, Any], exc: StoreError, partly: bool) -> tuple[str, str]:
        what = "refused" if isinstance(exc, ObjectLocked) else "failed"
        if not partly:  # nothing went: the entry is archived as before
            added = {name: "" for name in (*TOMBSTONE_FIELDS, ARCHIVED_LEAF_1)}
            self.entries.update_one({"_id": entry["_id"]}, {"$set": {"status": "archived"},
                                                             "$unset": {"deletion": "", **added}})
            return what, f"the store {what}: {exc}"
        return "failed", f"partly deleted, then the store {what}: {exc}"

    def _extend(self, step: dict[str, Any], entry: dict[str, Any] | None) -> tuple[str, str]:
        if entry is None or entry["status"] != "archived":
            return "skipped", "no longer archived"
        until = dt.datetime.fromisoformat(step["until"])
        store = self.store_of(entry)
        for obj in (entry.get("objects") or {}).values():
            store.extend_retention(obj["key"], obj.get("version_id", ""), until)
        self.entries.update_one({"_id": entry["_id"], "retain_until": entry.get("retain_until")},
                                {"$set": {"retain_until": until, "retention_rule": step["rule"]}})
        return "extended", ""

    def _digest(self, chat: dict[str, Any], contact: dict[str, Any] | None) -> str:
        redacted = self.redactor.apply(chat, contact)
        return source_digest(redacted.chat, redacted.contact)

    # -- planning a retention run ----------------------------------------------------------------

    def plan_retention(self, as_of: dt.datetime) -> Iterator[Step]:
        """Every step of a retention run as of AS_OF, room by room (rooms in order, streamed)."""
        for batch in self._room_batches({}):
            rooms = list(batch)
            holds = self.holds.active()
            held = self.holds.held_rooms(rooms, holds)
            jobs = {j["_id"]: j for j in self.queue.jobs.find({"_id": {"$in": rooms}})}
            rules = {room: self._rule(versions) for room, versions in batch.items()}
            wanted = [room for room in rooms if rules[room] and _due_anything(rules[room], batch[room], as_of)]
            loaded = self.source.load_many(wanted) if wanted else {}
            for room, cases in self.sources.cases_many(loaded, holds).items():  # (the chats read for their steps)
                held[room] = sorted({*held.get(room, ()), *cases})
            held = {room: cases for room, cases in held.items() if cases}
            for room in rooms:
                yield from self._unfinished_steps(batch[room], held.get(room), as_of)
                yield from self._leftover_steps(batch[room], self._rule(batch[room], any_status=True),
                                                held.get(room), as_of)
                if room in loaded:
                    yield from self._room_plan(room, batch[room], rules[room], held.get(room), jobs.get(room),
                                               loaded[room], as_of)
                elif rules[room]:
                    yield from self._lock_steps(batch[room], rules[room], set())

    def _unfinished_steps(self, versions: list[dict[str, Any]], cases: list[str] | None,
                          as_of: dt.datetime) -> Iterator[Step]:
        """Archive deletions an earlier run left half-way (the store refused part): finished now, unless a
        hold or a lock keeps them (then named again, so every run's report shows them), or the run the tombstone
        names has no step deleting it (a tombstone written by hand: this run would finish, and sign, its deletion)."""
        for v in versions:
            deletion = v.get("deletion") or {}
            if v["status"] != "deleted" or deletion.get("state") != "deleting":
                continue
            if self.ledger.steps.find_one({"run": deletion.get("run"), "room": v["room"], "entry_id": v["_id"],
                                           "action": "delete_archive", "_id": steps_of(deletion.get("run"))},
                                          {"_id": 1}) is None:
                yield Step("skip", v["room"], v["version"], deletion.get("rule", ""), "archive kept: its tombstone "
                           f"names run {deletion.get('run')}, which has no step deleting it (a person should look)",
                           entry_id=v["_id"])
                continue
            yield self._finish_step(v, deletion.get("rule", ""), f"finishing the deletion run {deletion.get('run')} "
                                    "began", cases, as_of)

    def _finish_step(self, v: dict[str, Any], rule: str, why: str, cases: list[str] | None,
                     as_of: dt.datetime) -> Step:
        until = _aware(v.get("retain_until"))
        if cases:
            kept = f"held by case {', '.join(map(repr, cases))}"
        elif self.lock_mode and until is not None and until > as_of:
            kept = f"locked until {iso(until)}"
        else:
            return Step("delete_archive", v["room"], v["version"], rule, why, entry_id=v["_id"])
        return Step("skip", v["room"], v["version"], rule, f"archive kept: {kept}", entry_id=v["_id"])

    def _rule(self, versions: list[dict[str, Any]], any_status: bool = False) -> Rule | None:
        """The rule of the room's latest archived version; ANY_STATUS: else of its latest tombstone (which
        keeps the fields rules match). None without either: an attempt's entry has none of those fields."""
        archived = [v for v in versions if v["status"] == "archived"]
        deleted = [v for v in versions if v["status"] == "deleted"] if any_status else []
        return self.policy.rule_for((archived or deleted)[-1]) if archived or deleted else None

    def _room_batches(self, query: dict[str, Any]) -> Iterator[dict[str, list[dict[str, Any]]]]:
        """Index entries (matching QUERY) grouped by room, ROOM_BATCH rooms at a time, versions in order."""
        batch: dict[str, list[dict[str, Any]]] = {}
        entries = self.entries.find(query, dict(ENTRY_FIELDS)).sort([("room", 1), ("version", 1)]).batch_size(1000)
        for entry in entries:
            if entry["room"] not in batch and len(batch) >= ROOM_BATCH:
                yield batch
                batch = {}
            batch.setdefault(entry["room"], []).append(entry)
        if batch:
            yield batch

    def _room_plan(self, room: str, versions: list[dict[str, Any]], rule: Rule, cases: list[str] | None,
                   job: dict[str, Any] | None, loaded: tuple[Any, Any], as_of: dt.datetime) -> Iterator[Step]:
        chat, contact = loaded
        source_goes = False
        held = f"held by case {', '.join(map(repr, cases))}" if cases else ""
        if chat is not None and rule.source_days is not None:
            step = self._source_step(room, versions, rule, held, job, chat, contact, as_of)
            if step is not None:
                source_goes = step.action == "delete_source"
                yield step
        deleting = set()
        for version in versions:
            if version["status"] != "archived" or rule.archive_days is None:
                continue
            if _aware(version["archived_at"]) + dt.timedelta(days=rule.archive_days) > as_of:
                continue
            deleting.add(version["_id"])
            yield self._archive_step(version, rule, held, chat is not None and not source_goes, as_of)
        yield from self._lock_steps(versions, rule, deleting)

    def _leftover_steps(self, versions: list[dict[str, Any]], rule: Rule | None, cases: list[str] | None,
                        as_of: dt.datetime, erasure: bool = False) -> Iterator[Step]:
        """What interrupted attempts left (superseded entries' objects) goes as an archive would, whatever is
        left of the room: archive_days after the attempt by the room's RULE (never, without archive_days or a
        rule), or at once for an ERASURE; unless the room is held (CASES)."""
        days = None if erasure or rule is None else rule.archive_days
        for v in versions:
            if v["status"] != "superseded" or not v.get("superseded_objects"):
                continue
            made = _aware(v.get("created_at"))
            if not erasure and (days is None or made is None or made + dt.timedelta(days=days) > as_of):
                continue
            name = "erasure" if erasure else rule.name if rule else ""
            yield (Step("skip", v["room"], v["version"], name, "leftovers kept: held by case "
                        + ", ".join(map(repr, cases)), entry_id=v["_id"]) if cases
                   else Step("delete_leftovers", v["room"], v["version"], name, "objects an interrupted attempt "
                             "left (never part of an archive)", entry_id=v["_id"]))

    def _source_step(self, room: str, versions: list[dict[str, Any]], rule: Rule, held: str,
                     job: dict[str, Any] | None, chat: Any, contact: Any, as_of: dt.datetime) -> Step | None:
        """The source chat's step: deleted, queued for archiving, skipped (why), or None (not due yet)."""
        archived = [v for v in versions if v["status"] == "archived"]
        first_due = min(_aware(v["archived_at"]) for v in archived) + dt.timedelta(days=rule.source_days or 0)
        if first_due > as_of:
            return None
        skip = Step("skip", room, archived[-1]["version"], rule.name)
        if isinstance(chat, SourceProblem):
            return _with(skip, f"source chat kept: it cannot be read ({chat.reason})")
        why = held or _open_work(versions, job)
        if why:
            return _with(skip, f"source chat kept: {why}")
        retry_until = _aware(archived[-1].get("attachments_retry_until"))
        if retry_until is not None and retry_until > as_of:  # a retry builds from the source
            return _with(skip, f"source chat kept: attachments retried until {iso(retry_until)}")
        try:
            digest = self._digest(chat, contact)
        except InvalidChat as exc:
            return _with(skip, f"source chat kept: {exc}")
        match = next((v for v in reversed(archived) if documents_sha256(v) == digest), None)
        if match is None:
            return Step("requeue", room, archived[-1]["version"], rule.name,
                        f"the source changed since v{archived[-1]['version']} was archived (source digest differs "
                        "from every archived version): archived again before its source can be deleted")
        if _aware(match["archived_at"]) + dt.timedelta(days=rule.source_days or 0) > as_of:
            return None
        if match.get("kind") == "interim":  # the platform may still be writing to it
            return _with(skip, f"source chat kept: the chat has not ended (v{match['version']} is an interim "
                               "copy, archived by export --force)")
        opened = check_stored(match, self.store_of(match))
        if not opened.ok:
            return _with(skip, f"source chat kept: its archive v{match['version']} fails verification: "
                               + "; ".join(opened.failures()))
        return Step("delete_source", room, match["version"], rule.name,
                    f"source_days {rule.source_days} passed since v{match['version']} was archived and verified",
                    entry_id=chat.get("_id"), source_sha256=digest, raw_sha256=_raw(chat, contact))

    def _archive_step(self, version: dict[str, Any], rule: Rule, held: str, source_stays: bool,
                      as_of: dt.datetime) -> Step:
        room, number = version["room"], version["version"]
        until = _aware(version.get("retain_until"))
        if held:
            why = f"archive kept: {held}"
        elif source_stays:
            why = "archive kept: the source chat is still in MongoDB (its archive goes only after it)"
        elif self.lock_mode and until is not None and until > as_of:
            why = f"archive kept: locked until {iso(until)}"
        else:
            return Step("delete_archive", room, number, rule.name,
                        f"archive_days {rule.archive_days} passed since it was archived", entry_id=version["_id"])
        return Step("skip", room, number, rule.name, why, entry_id=version["_id"])

    def _lock_steps(self, versions: list[dict[str, Any]], rule: Rule, deleting: set[Any]) -> Iterator[Step]:
        """Object Lock follows a policy change for existing archives: extended, never shortened."""
        if not self.lock_mode or rule.lock_days is None:
            return
        for v in versions:
            if v["status"] != "archived" or v["_id"] in deleting or not v.get("generated_at"):
                continue
            want = _aware(v["generated_at"]) + dt.timedelta(days=rule.lock_days)
            current = _aware(v.get("retain_until"))
            if current is None or want > current + dt.timedelta(seconds=1):
                yield Step("extend_lock", v["room"], v["version"], rule.name,
                           f"rule {rule.name} locks for {rule.lock_days} days", entry_id=v["_id"], until=iso(want))

    # -- planning an erasure -------------------------------------------------------------------------

    def plan_erasure(self, customer: str, reason: str,
                     include_shared: bool = False) -> Callable[[dt.datetime], Iterator[Step]]:
        """The steps erasing CUSTOMER's rooms; a room other customers also wrote in or opened is kept (their
        statements are in it) unless INCLUDE_SHARED."""
        def plan(as_of: dt.datetime) -> Iterator[Step]:
            rooms = set(self.entries.distinct("room", {"$or": [{"customers": {"$eq": customer}},
                                                               {"opened_by": {"$eq": customer}}]}))
            rooms |= self.source.rooms_of_user(customer)
            if self.search_key is not None:  # shared chats erased at another's request, keeping their trace
                rooms |= set(self.entries.distinct("room", {"status": "deleted", "deletion.shared_with": person_trace(
                    customer, self.search_key)}))
            ordered = sorted(rooms)
            for i in range(0, len(ordered), ROOM_BATCH):
                yield from self._erasure_batch(ordered[i:i + ROOM_BATCH], customer, reason, include_shared, as_of)
        return plan

    def _erasure_batch(self, rooms: list[str], customer: str, reason: str, include_shared: bool,
                       as_of: dt.datetime) -> Iterator[Step]:
        holds = self.holds.active()
        held = self.holds.held_rooms(rooms, holds)
        versions: dict[str, list[dict[str, Any]]] = {room: [] for room in rooms}
        for entry in self.entries.find({"room": {"$in": rooms}}, dict(ENTRY_FIELDS)).sort([("room", 1), ("version", 1)]):
            versions[entry["room"]].append(entry)
        loaded = self.source.load_many(rooms)
        through = self.sources.cases_many(loaded, holds)
        for room in rooms:
            shared = _shared(versions[room], loaded[room], customer)
            why = f"erasure request: {reason}" + (f"; {shared}" if shared else "")
            tombstone_why = why + (self._traced_said() if shared else "")  # an archive's: its tombstone may keep a trace
            chat = loaded[room][0]
            cases = sorted({*held.get(room, ()), *through.get(room, ())})
            kept = f"held by case {', '.join(map(repr, cases))}" if cases else ""
            if kept and isinstance(chat, SourceProblem):  # why a hold that reads the chat could not be ruled out
                kept += f" (the source chat cannot be read, so it cannot be ruled out: {chat.reason})"
            # the others' statements go with a shared chat: kept, as a hold keeps it (its reason first), unless asked
            shared_kept = "" if kept or include_shared or not shared else (
                f"kept: {shared} (their statements would go with it); erase with --include-shared to remove it anyway")
            if chat is not None:
                readable = chat.readable if isinstance(chat, SourceProblem) else chat  # (two contacts: both go)
                yield (Step("skip", room, None, "erasure", f"source chat kept: {kept}") if kept else
                       Step("skip", room, None, "erasure", f"source chat {shared_kept}") if shared_kept else
                       Step("delete_source", room, None, "erasure", why,
                            entry_id=readable.get("_id") if isinstance(readable, dict) else None))
            for v in versions[room]:
                deletion = v.get("deletion") or {}
                if v["status"] == "deleted" and deletion.get("state") == "deleting":  # left half-way: finished
                    yield self._finish_step(v, "erasure", tombstone_why, cases, as_of)
                elif v["status"] == "deleted" and ("personal_data_removed" not in deletion
                                                   or self._traced(customer, deletion)):
                    # (the requester's own trace taken from an erased one removes no one else's data)
                    erased = "personal_data_removed" in deletion
                    shared_too = "" if erased else shared_kept
                    removes = ERASES if not erased else ("; removes this customer's keyed trace from the tombstone "
                                                         "(its personal fields went with run "
                                                         f"{deletion.get('erased_by') or deletion.get('run')})")
                    yield (Step("skip", room, v["version"], "erasure", f"personal data kept: {kept}", entry_id=v["_id"])
                           if kept else
                           Step("skip", room, v["version"], "erasure", f"personal data {shared_too}", entry_id=v["_id"])
                           if shared_too else Step("erase_personal", room, v["version"], "erasure",
                                                   tombstone_why + removes, entry_id=v["_id"]))
                if v["status"] == "superseded":
                    yield from self._leftover_steps([v], None, cases, as_of, erasure=True)
                if v["status"] == "uploading":  # its objects are being stored: erased by the next request
                    yield Step("skip", room, v["version"], "erasure", "archive kept: this version is being "
                               "archived right now; erase again once the archive pass has finished", entry_id=v["_id"])
                if v["status"] != "archived":
                    continue
                until = _aware(v.get("retain_until"))
                if kept or (self.lock_mode and until is not None and until > as_of):
                    yield Step("skip", room, v["version"], "erasure",
                               f"archive kept: {kept or 'locked until ' + iso(until)}", entry_id=v["_id"])
                elif shared_kept:
                    yield Step("skip", room, v["version"], "erasure", f"archive {shared_kept}", entry_id=v["_id"])
                else:
                    yield Step("delete_archive", room, v["version"], "erasure", tombstone_why, entry_id=v["_id"])


def _shared(versions: list[dict[str, Any]], loaded: tuple[Any, Any], customer: str) -> str:
    """What an erasure's steps say of a chat other customers also wrote in or opened (their statements are in
    it: kept without --include-shared, and the person who decides sees it in the dry run); "" for the
    requester's own. Counted, not named: the erasure's report keeps no one else's id."""
    others = _other_customers(versions, loaded, customer)
    return f"shared: {len(others)} other customer(s) wrote in or opened this chat" if others else ""


def _other_customers(versions: list[dict[str, Any]], loaded: tuple[Any, Any], *customers: str) -> set[str]:
    """The customers other than CUSTOMERS who wrote in or opened a chat: by its index VERSIONS and its source."""
    others: set[str] = set()
    for v in versions:  # as the index found them
        people = v.get("customers") if isinstance(v.get("customers"), list) else []
        others.update(p for p in [*people, v.get("opened_by")] if isinstance(p, str))
    in_source = _source_people(*loaded) if isinstance(loaded[0], dict) else None  # and as the source names them now
    others |= in_source["customer"] if in_source else set()
    others.difference_update(customers)
    return others


@dataclass
class _Batch:
    """What a batch of steps is carried out against, read in a few queries (right before each deletion, its
    source chat is read again and holds placed since are asked for)."""
    entries: dict[Any, dict[str, Any]]  # the index entries the steps name
    held: dict[str, list[str]]  # room -> cases holding it when the batch was read
    hold_ids: set[Any]  # the active holds then
    sources: set[str]  # rooms whose source chat is still there
    due_by: dt.datetime | None = None  # the run's as_of, if its deletions are checked against today's policy
    erasure_of: str | None = None  # the customer of an erasure without --include-shared (shared chats kept)


def _raw(chat: dict[str, Any], contact: dict[str, Any] | None) -> str:
    return hashlib.sha256(bson.encode(chat) + bson.encode(contact or {})).hexdigest()


def _with(step: Step, reason: str) -> Step:
    return Step(step.action, step.room, step.version, step.rule, reason, step.entry_id)


def _open_work(versions: list[dict[str, Any]], job: dict[str, Any] | None) -> str:
    """Why the room's archive is not settled ("" if it is)."""
    state = (job or {}).get("state", "done")
    if state in OPEN_JOB:
        detail = (job or {}).get("reason") or (job or {}).get("last_error") or ""
        return f"its archive job is {state} ({OPEN_JOB[state]}{': ' + detail if detail else ''})"
    uploading = [v["version"] for v in versions if v["status"] == "uploading"]
    if uploading:
        return f"version {uploading[0]} is still uploading"
    return ""


def _due_anything(rule: Rule, versions: list[dict[str, Any]], as_of: dt.datetime) -> bool:
    """Whether ROOM may have something due (source or archive): only those rooms' chats are read."""
    periods = [d for d in (rule.source_days, rule.archive_days) if d is not None]
    if not periods:
        return False
    oldest = min(_aware(v["archived_at"]) for v in versions if v["status"] == "archived")
    return oldest + dt.timedelta(days=min(periods)) <= as_of


def retention_summary(report: dict[str, Any]) -> str:
    counts = described_counts(report["counts"])
    return f"{report['report']}{' (dry run)' if report['dry_run'] else ''} as of {report['as_of']}: {counts}"

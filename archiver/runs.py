"""Deletion runs (retention and erasure): plan, persist the plan, execute each step once, report.

A run is planned in full before anything is deleted; the plan is written to MongoDB
(`index.retention_steps`, one document per step), then each step is executed and
marked done. A run killed at any point is resumed by the next one: its pending
steps are executed (every action is idempotent: deleting what is gone is a no-op,
and a tombstone records its intent before any object goes), the done ones never
again, so the final state and the report are those of an uninterrupted run. A run
killed while planning deleted nothing; its partial plan is dropped and planned anew.
A run records the policy it is planned under (`policy`), and its report states that one
whoever resumes it; resumed under a changed policy, retention.py skips each pending
deletion that policy no longer makes due (the report then differs by those items).
A run is done only once its audit entry is written (retention.py): one whose entry the
audit log refused stays `reporting`, and the next run of its kind writes it.

Only one deletion run executes at a time, retention or erasure (an erasure and a retention
run deleting the same archive at once would each act on an entry the other is changing): it
holds the one lease in `index.retention_runs`, taken over when it expires or when its
holder's process is gone. The holder renews it by time (lease_clock), whenever a third of it
has passed (checked before each planned step and each step executed, and before each batch of
the hold repair retention.py does before the plan), so no slow repair, plan or store outlasts
it; a run that finds it lost (one step outlasted the whole lease, and another process took the
run over) stops before its next step, deleting nothing more.

The plan is signed when it is recorded (`plan` in the run: how many steps, a SHA-256 over what each step
says to do, in order, and a detached CMS signature by the archiver's signing identity over that and the run's
own fields): an unfinished run is resumed only if its plan verifies, signed by this service's certificate, so
a run record and steps written by hand into the index are never executed nor signed into a report
(PlanNotSigned); `verify --all` checks every run's plan likewise.

The report (counts per rule, every item with its outcome) is written into the run's
document (counts, and where the report is) and, signed (detached CMS, the archiver's
signing identity), into the store under `.reports/<kind>/` (a name no room folder can
have); past PART_ITEMS items, in signed parts that the report lists, so that no report
is ever held whole in memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator

from bson import Binary
from pymongo import ASCENDING, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from archiver.certificates import NotValidNow
from archiver.claims import now, worker_id
from archiver.integrity import check_detached_signature
from archiver.logs import event
from archiver.mongo import server_ms
from archiver.mongo import stored_time as _aware  # index times, and the stand-in's dates as text
from archiver.signing import Signer
from archiver.store import ObjectExists, ObjectStore, store_location
from archiver.visible import utf8_safe

REPORTS_PREFIX = ".reports/"
PART_ITEMS = 20_000  # items per stored part of a larger report (about 4 MB of JSON): see store_report
STEP_BATCH = 200
LEASE_MS = 10 * 60_000  # renewed whenever a third of it has passed (RunLedger.keep)
LEASE = "lease:deletion"  # one for every kind of run


@dataclass(frozen=True)
class Step:
    """One thing a run does, or decided not to do (`skip`, with the reason)."""
    action: str  # delete_source / delete_archive / erase_personal / extend_lock / requeue / skip
    room: str
    version: int | None = None
    rule: str = ""
    reason: str = ""
    entry_id: Any = None
    source_sha256: str = ""
    raw_sha256: str = ""  # of the source documents as read (BSON): a cheap "unchanged since the plan"
    until: str = ""  # extend_lock: the new retain-until (ISO)

    def item(self) -> dict[str, Any]:
        """What the report and the dry run show of it."""
        return {"action": self.action, "room": self.room, "version": self.version, "rule": self.rule,
                "reason": self.reason, **({"until": self.until} if self.until else {})}


def lease_clock() -> float:
    """Seconds, for how long since the lease was renewed: on Linux CLOCK_BOOTTIME, which counts a suspend of
    the host (a VM or laptop asleep), as the server's lease runs out meanwhile; time.monotonic does not (it
    would let a run that woke up go on deleting after another took over). Elsewhere time.monotonic."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


class RunBusy(RuntimeError):
    """Another live process holds this kind of run."""


class PlanNotSigned(RuntimeError):
    """An unfinished run whose plan this service did not sign (a run written into the index by hand, a step of it
    edited, or a run recorded by a release before plans were signed): never resumed, nothing of it done."""


class ReportUnsigned(RuntimeError):
    """A run's report could not be signed (its certificate expired during the run): the run stays unfinished, and
    the next run of its kind signs and stores the report."""


def iso(value: dt.datetime) -> str:
    return _aware(value).isoformat().replace("+00:00", "Z")


class RunLedger:
    """The runs and their steps in MongoDB."""

    def __init__(self, runs: Collection, steps: Collection) -> None:
        self.runs = runs
        self.steps = steps
        self.owner = worker_id()
        self._held = ""  # the kind of run whose lease this ledger holds ("": none)
        self._renewed = 0.0  # when it was last taken or renewed (lease_clock)

    def ensure_indexes(self) -> None:
        self.steps.create_index([("run", ASCENDING), ("state", ASCENDING), ("seq", ASCENDING)], name="run_state_seq")
        self.runs.create_index([("kind", ASCENDING), ("state", ASCENDING)], name="kind_state")
        self.steps.create_index([("run", ASCENDING), ("room", ASCENDING)], name="run_room")  # affected_rooms

    # -- the lease: one run of a kind at a time ------------------------------------------------

    def acquire(self, kind: str) -> None:
        lock = LEASE
        asked = lease_clock()
        t = server_ms(self.runs.database)
        mine = {"owner": self.owner, "until_ms": t + LEASE_MS, "kind": kind}
        try:
            self.runs.insert_one({"_id": lock, **mine})
            self._held, self._renewed = kind, asked
            return
        except DuplicateKeyError:
            pass
        held = self.runs.find_one({"_id": lock}) or {}
        if held.get("until_ms", 0) > t and _alive(held.get("owner", "")):
            raise RunBusy(f"a {held.get('kind', 'deletion')} run is in progress (held by {held.get('owner')}); "
                          f"this {kind} run waits for it: try again when it has finished")
        if self.runs.update_one({"_id": lock, "owner": held.get("owner"), "until_ms": held.get("until_ms")},
                                {"$set": mine}).matched_count != 1:
            raise RunBusy(f"another {kind} run took over just now")
        self._held, self._renewed = kind, asked

    def renew(self, kind: str) -> None:
        """Keep the lease; RunBusy if another process took it over (this one stalled past it): stop."""
        asked = lease_clock()
        if self.runs.update_one({"_id": LEASE, "owner": self.owner},
                                {"$set": {"until_ms": server_ms(self.runs.database) + LEASE_MS}}).matched_count != 1:
            raise RunBusy(f"the {kind} run's lease was taken over by another process; stopping")
        self._renewed = asked

    def keep(self) -> None:
        """Renew the lease held once a third of it has passed since it was last renewed (as archive passes renew
        their claims): called before every planned and executed step, so that slow steps, however few, never
        outlast it. RunBusy if it was lost meanwhile (one step outlasted it all): the caller does no more."""
        if self._held and lease_clock() - self._renewed > LEASE_MS / 3000:
            self.renew(self._held)

    def release(self, kind: str) -> None:
        self._held = ""
        self.runs.delete_one({"_id": LEASE, "owner": self.owner})

    # -- runs and steps ------------------------------------------------------------------------

    def unfinished(self, kind: str) -> dict[str, Any] | None:
        """The run of KIND a crash left (a half-made plan is dropped: nothing of it was done)."""
        for run in self.runs.find({"kind": kind, "state": "planning"}):
            self.steps.delete_many({"run": run["_id"]})
            self.runs.update_one({"_id": run["_id"]}, {"$set": {"state": "abandoned while planning"}})
        return self.runs.find_one({"kind": kind, "state": {"$in": ["executing", "reporting"]}})

    def begin(self, kind: str, as_of: dt.datetime, params: dict[str, Any],
              started_by: dict[str, str] | None = None, policy: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A new run; STARTED_BY (who asked for it) stays on it whoever finishes it after a crash, and POLICY
        (the one it is planned under, as its report states it) too."""
        run = {"_id": f"{kind}-{as_of.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}", "kind": kind,
               "state": "planning", "as_of": as_of, "started_at": now(), "params": params, "owner": self.owner,
               **({"started_by": started_by} if started_by else {}),
               **({"policy": policy} if policy is not None else {})}
        self.runs.insert_one(run)
        return run

    def record_plan(self, run: dict[str, Any], steps: Iterable[Step], signer: Signer) -> int:
        """Write every step (skips done at once), in batches, keeping the lease; then sign the plan (plan_statement),
        and the run may execute."""
        count, batch, digest = 0, [], hashlib.sha256()
        for step in steps:
            self.keep()  # planning a step may take long (the archive read back before its source goes)
            count += 1
            doc = {"_id": f"{run['_id']}:{count:09d}", "run": run["_id"], "seq": count, **asdict(step),
                   "state": "done" if step.action == "skip" else "pending",
                   "outcome": "skipped" if step.action == "skip" else ""}
            digest.update(_planned(doc))
            batch.append(doc)
            if len(batch) >= STEP_BATCH:
                self.steps.insert_many(batch)
                batch = []
        if batch:
            self.steps.insert_many(batch)
        self.keep()  # still ours (a lost lease ran out, past a third): else the taker dropped this plan: it stays so
        stored = self.runs.find_one({"_id": run["_id"]}) or run  # its fields as read back (times in milliseconds)
        signature = signer.sign_detached(_statement(stored, count, digest.hexdigest()))
        self.runs.update_one({"_id": run["_id"]}, {"$set": {"state": "executing", "steps": count, "plan": {
            "steps": count, "sha256": digest.hexdigest(), "signature": Binary(signature),
            "signed_by": signer.identity.fingerprint}}})
        return count

    def check_plan(self, run: dict[str, Any], pinned: Any) -> None:
        """PlanNotSigned unless RUN's plan, as its steps are now, is signed by one of PINNED's (pins.Pinned) signing
        certificates: this service's own, or one it signed with before a renewal or rotation, listed in
        signing.former_certificates (never any certificate a trust anchor merely vouches for: a corporate CA
        issues many). Checked before an unfinished run is resumed."""
        plan = run.get("plan") if isinstance(run.get("plan"), dict) else {}
        signed_by = plan.get("signed_by")
        if isinstance(signed_by, str) and signed_by in pinned.signers:
            problem = plan_problem(run, self.steps, signed_by, (), pinned)
        elif signed_by is None:
            problem = plan_problem(run, self.steps, None, (), pinned)  # names what is missing
        else:
            problem = (f"run {run.get('_id')} was not planned by this service: its plan is signed by the certificate "
                       f"of SHA-256 {signed_by}, not by one of this configuration's signing certificates "
                       "(signing.certificate, or one this service signed with before a renewal, listed in "
                       "signing.former_certificates)")
        if problem:
            command = "archiver erase" if run.get("kind") == "erasure" else "archiver retention run"
            raise PlanNotSigned(f"{problem}; nothing done, and no other {run.get('kind')} run starts before a person "
                                "has looked: a run this service did not plan is evidence of tampering with the "
                                f"index. Once it is dealt with, set its state to \"abandoned\" in "
                                f"{self.runs.name} and run `{command}` again")

    def pending(self, run_id: str) -> Iterator[list[dict[str, Any]]]:
        while True:
            batch = list(self.steps.find({"run": run_id, "state": "pending", "_id": steps_of(run_id)})
                         .sort("seq", ASCENDING).limit(STEP_BATCH))
            if not batch:
                return
            yield batch

    def name_report_parts(self, run: dict[str, Any], keys: list[str]) -> None:
        """Record KEYS (a part of RUN's report about to be stored) in the run, and keep its lease."""
        self.runs.update_one({"_id": run["_id"]}, {"$addToSet": {"report_parts": {"$each": keys}}})
        self.renew(run["kind"])

    def done_all(self, done: list[tuple[dict[str, Any], str, str]]) -> None:
        """Mark each (step, outcome, detail) done, in one write."""
        if done:
            self.steps.bulk_write([UpdateOne({"_id": step["_id"]}, {"$set": {
                "state": "done", "outcome": outcome, "detail": utf8_safe(detail)}}) for step, outcome, detail in done])

    def affected_rooms(self, run_id: str) -> Iterator[str]:
        """The rooms of the run's items that did something (as Tally counts them), in order, streamed."""
        for doc in self.steps.find({"run": run_id, "outcome": {"$nin": ["skipped", ""]}, "_id": steps_of(run_id)},
                                   {"room": 1, "_id": 0}).sort("room", ASCENDING):
            yield doc["room"]

    def items(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's items in order, read through the `_id` index (`<run>:<seq, 9 digits>`): no sort in
        memory, which a real MongoDB refuses (or spills to disk) for millions of steps."""
        for doc in self.steps.find({"_id": steps_of(run_id)}).sort("_id", ASCENDING):
            step = Step(**{k: doc[k] for k in Step.__dataclass_fields__ if k in doc})  # older steps lack raw_sha256
            yield {**step.item(), "outcome": doc["outcome"], **({"detail": doc["detail"]} if doc.get("detail") else {})}


def steps_of(run_id: Any) -> dict[str, str]:
    """The `_id`s of RUN_ID's steps (`<run>:<seq, 9 digits>`): only these are its plan, executed, reported and
    signed; a document naming the run under another `_id` (written by hand) is none of them."""
    return {"$gt": f"{run_id}:", "$lt": f"{run_id};"}


PLANNED = ("_id", "run", "seq", *Step.__dataclass_fields__)  # what a step says to do: never changed once planned


def _planned(doc: dict[str, Any]) -> bytes:
    """A step's PLANNED fields, one line of canonical JSON; a value JSON has no type for (an ObjectId) is written
    with its type's name, so that another type with the same text is another step."""
    return json.dumps([doc.get(name) for name in PLANNED], separators=(",", ":"), ensure_ascii=True,
                      default=lambda value: [type(value).__name__, str(value)]).encode("ascii") + b"\n"


def _statement(run: dict[str, Any], count: int, sha256: str) -> bytes:
    """What a run's plan signature covers: the run (as the index holds it) and its COUNT steps, by SHA256."""
    as_of = run.get("as_of")
    return canonical({"plan": f"{run.get('kind')} run", "run": run.get("_id"), "kind": run.get("kind"),
                      "as_of": iso(as_of) if isinstance(as_of, (dt.datetime, str)) else as_of,
                      "params": run.get("params"), "policy": run.get("policy"), "started_by": run.get("started_by"),
                      "steps": count, "sha256": sha256})


def plan_statement(run: dict[str, Any], steps: Collection) -> tuple[bytes, str]:
    """(what RUN's plan signature must cover, the SHA-256 of its steps), from its steps as they are now (read in
    order through the `_id` index, streamed)."""
    digest, count = hashlib.sha256(), 0
    for doc in steps.find({"_id": steps_of(run["_id"])}).sort("_id", ASCENDING):
        digest.update(_planned(doc))
        count += 1
    return _statement(run, count, digest.hexdigest()), digest.hexdigest()


def plan_problem(run: dict[str, Any], steps: Collection, fingerprint: Any,
                 trust: Iterable[Any] = (), pinned: Any = None) -> str:
    """Why RUN was not planned by this service ("" if it was): its plan is not signed, its steps differ from
    the plan signed, or the signature does not verify over it by the certificate of SHA-256 FINGERPRINT
    (with TRUST, chaining to it; with PINNED, pins.Pinned, one of a verifier's signing certificates)."""
    plan = run.get("plan")
    name = f"run {run.get('_id')} was not planned by this service"
    if not isinstance(plan, dict) or not isinstance(plan.get("signature"), bytes):
        return (f"{name}: its plan is not signed (a run written into the index by hand, or one recorded by a "
                "release before plans were signed)")
    statement, digest = plan_statement(run, steps)
    if digest != plan.get("sha256"):
        return f"{name}: its steps in {steps.name} differ from its signed plan ({plan.get('steps')} steps)"
    problems = list(check_detached_signature(statement, plan["signature"], None, fingerprint, list(trust), pinned))
    return f"{name}: its plan's signature: {'; '.join(problems)}" if problems else ""


@dataclass
class Tally:
    """What a report says of all its items, counted one item at a time (add). A plan goes room by room
    (every run's planner), so a room's items are next to each other and the rooms affected are counted
    without holding them all."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # rule -> "action:outcome" -> items
    rooms_affected: int = 0
    items: int = 0
    _last: str | None = None

    def add(self, item: dict[str, Any]) -> dict[str, Any]:
        self.items += 1
        per_rule = self.counts.setdefault(item["rule"] or "(none)", {})
        label = f"{item['action']}:{item['outcome']}"
        per_rule[label] = per_rule.get(label, 0) + 1
        if item["outcome"] not in ("skipped", "") and item["room"] != self._last:
            self.rooms_affected, self._last = self.rooms_affected + 1, item["room"]
        return item

    @property
    def failed(self) -> bool:
        return any(label.endswith(":failed") for per_rule in self.counts.values() for label in per_rule)


def described_counts(counts: dict[str, dict[str, int]]) -> str:
    """A report's counts in one line: "rule: action:outcome N, ...; rule: ..." (or "nothing to do")."""
    return "; ".join(f"{rule}: " + ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
                     for rule, c in sorted(counts.items())) or "nothing to do"


def report_head(run: dict[str, Any], summary: Tally, policy: list[dict[str, Any]] | None,
                dry_run: bool) -> dict[str, Any]:
    return {"report": f"{run['kind']} run", "run": run["_id"], "dry_run": dry_run, "as_of": iso(run["as_of"]),
            **({"started_by": run["started_by"]} if run.get("started_by") else {}),
            "params": run.get("params", {}), "policy": policy, "counts": summary.counts,
            "rooms_affected": summary.rooms_affected}


def dry_run_report(run: dict[str, Any], items: Iterable[dict[str, Any]], policy: list[dict[str, Any]] | None
                   ) -> tuple[dict[str, Any], Callable[[], Iterator[dict[str, Any]]]]:
    """A dry run's report, and its items again: ITEMS (planned once) are spooled to a temporary file as
    they are counted, so a plan over millions of chats is shown without being held. Up to PART_ITEMS
    they are in the report too; past that it has `items_total` instead (as a stored report in parts
    has), and only the second value gives them."""
    spool = tempfile.TemporaryFile()
    summary = Tally()
    for item in items:
        spool.write(json.dumps(summary.add(item)).encode("ascii") + b"\n")  # \u escapes: any text round-trips

    def spooled() -> Iterator[dict[str, Any]]:
        spool.seek(0)
        return (json.loads(line) for line in spool)

    head = report_head(run, summary, policy, True)
    if summary.items <= PART_ITEMS:
        return {**head, "items": list(spooled())}, spooled
    return {**head, "items_total": summary.items}, spooled


def store_report(store: ObjectStore, signer: Signer, run: dict[str, Any], items: Iterable[dict[str, Any]],
                 policy: list[dict[str, Any]] | None, retain_until: dt.datetime | None,
                 before_part: Callable[[list[str]], None]) -> tuple[dict[str, Any], dict[str, Any], Tally]:
    """Publish the report of RUN, whose ITEMS are final; (the report, where it is, its tally). Up to
    PART_ITEMS items it is one document with every item. Past that, a run over millions of chats would
    hold gigabytes: the items go into parts of PART_ITEMS, each signed and stored as it is made
    (`<run>.part-00001.json`...), and the report, signed too, lists each part's key, SHA-256 and number
    of items instead of the items (`items_total`, `parts`). One pass over ITEMS. BEFORE_PART is given
    the keys of each part before it is stored (the run names them, so they are explained from then on,
    and keeps its lease). The same ITEMS make the same bytes: a resumed report stores the same parts."""
    summary, remaining = Tally(), iter(items)
    first = iter([summary.add(item) for item in itertools.islice(remaining, PART_ITEMS + 1)])  # freed once read
    if summary.items <= PART_ITEMS:
        body = {**report_head(run, summary, policy, False), "items": list(first)}
        return body, publish_report(store, signer, run["kind"], run["_id"], canonical(body), retain_until), summary
    parts, stored = [], []  # STORED: each part's versions and signature digest, for the run (not the report)
    for number, chunk in enumerate(_chunks(itertools.chain(first, map(summary.add, remaining)), PART_ITEMS), 1):
        name = f"{run['_id']}.part-{number:05d}"
        before_part(list(report_keys(run["kind"], name)))
        part = {"report": f"{run['kind']} run, part {number}", "run": run["_id"], "part": number, "items": chunk}
        placed = publish_report(store, signer, run["kind"], name, canonical(part), retain_until)
        parts.append({"key": placed["key"], "signature_key": placed["signature_key"], "sha256": placed["sha256"],
                      "items": len(chunk)})
        stored.append({k: placed[k] for k in ("key", "version_id", "signature_sha256", "signature_version_id")})
    body = {**report_head(run, summary, policy, False), "items_total": summary.items, "parts": parts}
    location = publish_report(store, signer, run["kind"], run["_id"], canonical(body), retain_until)
    return body, {**location, "part_versions": stored}, summary


def _chunks(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False, default=str).encode("utf-8")


def publish_report(store: ObjectStore, signer: Signer, kind: str, run_id: str, data: bytes,
                   retain_until: dt.datetime | None) -> dict[str, Any]:
    """Put the report and its detached CMS signature in the store (again after a crash: the same bytes)."""
    try:
        signature = signer.sign_detached(data)
    except NotValidNow as exc:
        command = "archiver erase" if kind == "erasure" else "archiver retention run"
        raise ReportUnsigned(f"{exc}: the {kind} report {run_id} is not signed and its run is not finished: the "
                             f"next `{command}` signs it once the certificate is renewed (and no other run of "
                             "this kind starts before)") from None
    base, signature_key = report_keys(kind, run_id)
    placed: dict[str, tuple[str, str]] = {}  # key -> (SHA-256, version id) of what the store holds
    for key, blob in ((base, data), (signature_key, signature)):
        digest = hashlib.sha256(blob).hexdigest()
        try:
            placed[key] = digest, store.put(key, blob, digest, retain_until).version_id
        except ObjectExists:  # a resumed run: the report is the same, its signature an earlier one's
            placed[key] = _stored_before(store, key, lambda found: hashlib.sha256(found).hexdigest() == digest
                                         if key == base else _signed_by(data, found, signer.identity.fingerprint))
    return {"key": base, "signature_key": signature_key, "sha256": placed[base][0],
            "signed_by": signer.identity.fingerprint, "store": store_location(store), "version_id": placed[base][1],
            "signature_sha256": placed[signature_key][0], "signature_version_id": placed[signature_key][1]}


def _stored_before(store: ObjectStore, key: str, genuine: Callable[[bytes], bool]) -> tuple[str, str]:
    """(SHA-256, version id) of the version of KEY a run stopped after storing it left, the one GENUINE accepts;
    ObjectExists if none is (another's object under the name: never overwritten)."""
    for version_id in store.versions(key):
        found = store.get(key, version_id)
        if genuine(found):
            return hashlib.sha256(found).hexdigest(), version_id
    raise ObjectExists(f"{key}: already in {store.url}, but not as this run made it; refusing to overwrite")


def _signed_by(data: bytes, signature: bytes, fingerprint: str) -> bool:
    """Whether SIGNATURE (detached CMS) verifies over DATA, by the certificate of SHA-256 FINGERPRINT (as seals')."""
    return not list(check_detached_signature(data, signature, None, fingerprint))


def report_keys(kind: str, name: str) -> tuple[str, str]:
    """Where a report (or a part of one) and its signature are stored."""
    base = f"{REPORTS_PREFIX}{kind}/{name}.json"
    return base, base + ".p7s"


def _alive(owner: str) -> bool:
    """Whether OWNER (host:pid:token) may still be running: on another host we cannot tell."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(int(pid))


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def timed_steps(execute: Callable[[list[dict[str, Any]]], None], ledger: RunLedger, run_id: str, kind: str) -> int:
    """Execute every pending step of RUN_ID in batches, keeping the lease (EXECUTE keeps it before each step
    too); how many were done."""
    count = 0
    started = time.monotonic()
    for batch in ledger.pending(run_id):
        ledger.keep()
        execute(batch)
        count += len(batch)
    event(f"{kind}_steps_done", run=run_id, steps=count, seconds=round(time.monotonic() - started, 3))
    return count

"""The archive pass: discover, claim, build and store (in worker processes), index.

The main process talks to MongoDB (claims, reads, the index); worker processes
render, sign, encrypt and put the objects, so CPU and storage I/O run on every
core. A bounded number of chats is in flight, so memory stays flat however many
chats a pass handles. Builds always run in worker processes, one worker or many,
on-demand exports included: the main process keeps renewing leases while a
build runs, and a chat that gets its process killed costs only that process.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pymongo.errors import ConnectionFailure, PyMongoError

from archiver import artifacts, heap
from archiver import attachment_retries
from archiver.attachment_retries import NothingNew
from archiver.attachments import unlisted_nat64_warning
from archiver.batches import batched
from archiver.artifacts import Artifacts, Plaintext, WorkerNotReady, timed
from archiver.certificates import NotValidNow
from archiver.claims import Job, WorkQueue, now, now_ms
from archiver.config import Config
from archiver.holds import Holds
from archiver.index import ArchiveIndex, VersionConflict
from archiver.logs import event
from archiver.mongo import index_uri, reachable
from archiver.names import recorded_folders
from archiver.redact import redact
from archiver.render.record import source_json
from archiver.redaction import Redacted
from archiver.search import key_required, load_search_key, record_search_key
from archiver.signing import sha256_hex
from archiver.source import ChatSource, SourceProblem, newest_ms
from archiver.status import LAST_PASS, LAST_RESCAN, recorded
from archiver.store import ObjectStore, StoreError, local_lock_warning, open_store, unreachable
from archiver.store.s3 import S3Store
from archiver.timestamps import TimestampError
from archiver.transcript import InvalidChat
from archiver.worker_processes import forkserver_context

MAX_BACKOFF_SECONDS = 6 * 3600
WORKER_DIED = "the worker process building this chat died (killed by the operating system: out of memory?)"
BUILD_TIMED_OUT = "the build did not finish within {seconds} seconds; its worker process was stopped"
MISSING_CHAT = "no chat document with this room yet (its messages are in the source)"
DISCOVERY_STATE = "discovery"
ENQUEUE_BATCH = 1000
STOP_POLL_SECONDS = 0.5  # a stop (SIGTERM) cancels the queued builds this soon, however long builds take

_Copies = tuple[Redacted, bytes]  # a chat's redacted copies, and the record's `source` written from them


class DiscoveryStopped(Exception):
    """A stop (SIGTERM) seen between discovery batches: what was queued stays, the watermark is not advanced."""


@dataclass
class PassReport:
    discovered: int = 0
    archived: int = 0  # a count: a pass over millions of chats keeps no per-chat state
    unchanged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    quarantined: dict[str, str] = field(default_factory=dict)
    leases_lost: list[str] = field(default_factory=list)  # chats left to the worker that took them over
    worker_deaths: int = 0  # worker processes killed (by the OS, say) during the pass
    stages: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def handled(self) -> int:
        return self.archived + self.unchanged + len(self.failed) + len(self.quarantined)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.quarantined

    def summary(self) -> dict[str, Any]:
        """Counts as recorded for `archiver status`."""
        return {"outcome": "ok" if self.ok else "items_failed", "discovered": self.discovered,
                "archived": self.archived, "unchanged": self.unchanged, "failed": len(self.failed),
                "quarantined": len(self.quarantined), "leases_lost": len(self.leases_lost),
                "worker_deaths": self.worker_deaths, "seconds": round(self.seconds, 3)}


@dataclass(eq=False)
class _Prepared:
    job: Job
    entry: dict[str, Any]  # the `uploading` index entry, written before anything is stored
    build: Callable[[], Artifacts]  # builds and stores the chat; run by a worker
    pool: cf.Executor
    future: cf.Future
    running_since: float | None = None  # when the pass first saw the build running (time.monotonic())


class Archiver:
    def __init__(self, config: Config, stop: threading.Event | None = None) -> None:
        config.require("mongodb.uri", "storage.url", "encryption.recipients")
        if not config["signing.pkcs12"]:
            config.require("signing.certificate", "signing.key")
        self.config = config
        self.stop = stop or threading.Event()
        artifacts.init_worker(config)  # fails fast on bad keys: before any claim, and before waiting on MongoDB
        source_db = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
        self.source = ChatSource(source_db, config["source.chats"], config["source.contacts"], config["source.messages"],
                                 artifacts.worker_builder().redactor.mask)
        index_db = reachable(*index_uri(config))[config["index.database"]]
        self.queue = WorkQueue(index_db[config["index.jobs"]])
        self.index = ArchiveIndex(index_db[config["index.entries"]])
        self.state = index_db[config["index.state"]]
        if config["search.key_file"]:  # the word hashes of every entry must be made with one key
            record_search_key(self.state, index_db[config["index.entries"]], load_search_key(config["search.key_file"]),
                              now())
        else:  # and once the index has some, every entry has them
            key_required(self.state)
        self.store: ObjectStore = open_store(config)  # a local one is checked for writing (storage.url)
        if isinstance(self.store, S3Store):
            self.store.check_bucket()
        self.lock_warning = local_lock_warning(config)
        if self.lock_warning:
            event("local_store_not_locked", logging.WARNING, url=self.store.url,
                  object_lock_mode=config["storage.object_lock_mode"])
        self.nat64_warning = unlisted_nat64_warning(config)
        if self.nat64_warning:
            event("nat64_prefix_not_listed", logging.WARNING, warning=self.nat64_warning)
        self.queue.ensure_indexes()
        self.index.ensure_indexes()
        self.holds = Holds(index_db[config["index.holds"]], self.index.entries,  # legal holds (holds.py)
                           load_search_key(config["search.key_file"]) if config["search.key_file"] else None,
                           index_db[config["index.state"]])
        self.workers = config["archive.workers"] or os.cpu_count() or 1
        self._attachment_retries: dict[str, attachment_retries.Retry] = {}  # planned, not yet submitted
        # `serve` keeps a pass's worker processes for the next pass (each new one costs 0.7-0.8 s of CPU to start).
        self.keep_workers = False
        self._unreturned = False  # claims an outage kept a failed pass from handing back (see _hand_back)
        self._lapsing: set[str] = set()  # tokens of the claims a pass that a bug ended leaves to lapse (_hand_back)
        self._kept: cf.ProcessPoolExecutor | None = None
        self._stopped: cf.Executor | None = None  # the pool whose processes _stop_overdue killed
        self._unfit: cf.Executor | None = None  # a pool with a worker process that could not start (not kept)
        heap.freeze_start_up()  # the builder, fonts and clients live as long as this process (archiver/heap.py)

    # -- discovery -------------------------------------------------------------------------

    def discover(self, full: bool = False) -> int:
        """Queue rooms that ended (or went idle) since the last discovery, and archived rooms whose
        source changed since; when FULL, every ended (or idle) room, comparing source digests."""
        state = self.state.find_one({"_id": DISCOVERY_STATE}) or {}
        # The watermark is compared with message times, which the platform stamps with its own clock: the
        # earlier of the database server's clock and this machine's, so that neither running ahead hides
        # chats that end meanwhile (one running behind makes the next window longer by its lag).
        server = self.queue.server_ms()
        started_ms = min(server, now_ms())
        overlap_ms = self.config["source.discovery_overlap_minutes"] * 60_000
        since = None if full or "ended_ms" not in state else state["ended_ms"] - overlap_ms
        found = self._enqueue(self.source.ended_since(since), "ended", full)
        if since is not None:  # a message after the end (the chat re-opened, or a late one)
            found += self._enqueue(self.source.active_since(since), "ended", full, only_archived=True)
        else:  # archived chats that no longer look ended (their endChat deleted) are compared too
            found += self._enqueue_no_longer_ended()
        sets: dict[str, float] = {"ended_ms": started_ms}
        idle_hours = self.config["source.abandoned_after_hours"]
        if idle_hours > 0:
            before = server - idle_hours * 3_600_000  # idle that long by the server's clock (not a lagging local one)
            idle_since = None if full or "idle_ms" not in state else state["idle_ms"] - overlap_ms
            found += self._enqueue(self.source.idle_between(idle_since, before), "abandoned", full)
            sets["idle_ms"] = before
        if self.config["attachments.enabled"]:  # files an archived version missed, due for a retry
            due = self.index.attachment_retries_due(now())
            if due:  # a room whose source is gone (retention, by hand) has nothing to build from
                kept = self.source.present(list(due))
                due = {room: kind for room, kind in due.items() if room in kept}
            found += self.queue.enqueue(due.items(), changed=set(due)) if due else 0
        self.state.update_one({"_id": DISCOVERY_STATE}, {"$set": sets}, upsert=True)
        event("discovery", queued=found, full=full or since is None)
        return found

    def _enqueue_no_longer_ended(self) -> int:
        """The rescan's part for archived rooms without an end message now: queued if their source changed."""
        queued = 0
        for batch in self._batches(self.index.archived_rooms()):
            ended = self.source.ended_among(batch)
            queued += self._enqueue_batch([r for r in batch if r not in ended], "ended", True, only_archived=True)
        return queued

    def _enqueue(self, rooms: Iterable[str], kind: str, full: bool, only_archived: bool = False) -> int:
        return sum(self._enqueue_batch(batch, kind, full, only_archived) for batch in self._batches(rooms))

    def _batches(self, rooms: Iterable[str]) -> Iterable[list[str]]:
        """ROOMS a batch at a time; DiscoveryStopped once a stop is seen between two: a full rediscovery reads
        every chat (hours over millions), and `serve` must exit within seconds of a SIGTERM. A discovery of
        one batch (the usual one) ends as before: its pass, once stopping, claims nothing."""
        for batch in batched(rooms, ENQUEUE_BATCH):
            yield batch
            if len(batch) == ENQUEUE_BATCH and self.stop.is_set():  # looked at before the next one is read
                event("discovery_stopped")
                raise DiscoveryStopped("stopped before discovery ended; the next one reads these chats again")

    def _enqueue_batch(self, rooms: list[str], kind: str, full: bool, only_archived: bool) -> int:
        """Queue ROOMS not known yet (unless ONLY_ARCHIVED, then only archived ones of KIND), and
        reopen the archived ones whose source changed since their last version."""
        archived = self.queue.archived(list(dict.fromkeys(rooms))) if rooms else {}
        if only_archived:
            rooms = [room for room in rooms if archived.get(room) == kind]
        changed = self._changed([room for room in rooms if room in archived], by_digest=full)
        ended = self.source.end_times(rooms) if kind == "ended" and rooms else {}  # for status: how long unarchived
        return self.queue.enqueue(((room, kind) for room in rooms), changed, ended)

    def _changed(self, rooms: list[str], by_digest: bool) -> set[str]:
        """Those of the archived ROOMS whose source no longer matches a version: a message newer than
        any archived (one query), or, BY_DIGEST (the rescan: edits and contact changes carry no new
        time), a source digest no version has. Digests are computed without rendering anything."""
        if not rooms:
            return set()
        contents = self.index.archived_contents(rooms)
        with_time = {} if by_digest else {room: newest for room, (_, newest) in contents.items() if newest is not None}
        rest = [room for room in rooms if room not in with_time]
        return self.source.newer_than(with_time) | (self._digest_changed(rest, contents) if rest else set())

    def _digest_changed(self, rooms: list[str], contents: dict[str, tuple[set[str], float | None]]) -> set[str]:
        changed = set()
        for room, (chat, contact) in self.source.load_many(rooms).items():
            if chat is None:  # gone from the source: nothing more to archive
                continue
            try:
                digest = "" if isinstance(chat, SourceProblem) else self.source_digest(chat, contact)
            except InvalidChat:  # the pass reports it
                digest = ""
            if digest not in contents.get(room, (set(), None))[0]:
                changed.add(room)
        return changed

    # -- the pass ------------------------------------------------------------------------------

    def rescan(self) -> int:
        """Rediscover every ended chat (the nightly job, `run --full`); the outcome is recorded for status."""
        with recorded(self.state, LAST_RESCAN, self.queue.owner) as outcome:
            outcome["queued"] = self.discover(full=True)
        return outcome["queued"]

    def run_pass(self, limit: int | None = None, *, discover: bool = True, full: bool = False,
                 progress: Callable[[PassReport], None] | None = None) -> PassReport:
        """One pass; how it ended (counts, or the error that stopped it) is recorded for status."""
        with recorded(self.state, LAST_PASS, self.queue.owner) as outcome:
            report = self._pass(limit, discover, full, progress)
            outcome.update(report.summary())
        return report

    def _pass(self, limit: int | None, discover: bool, full: bool,
              progress: Callable[[PassReport], None] | None) -> PassReport:
        report = PassReport()
        started = time.perf_counter()
        if self._unreturned:  # `serve` keeps its owner: claims an earlier pass's outage kept it from handing back
            self._hand_back(None)
        if discover:
            with timed(report.stages, "discover"):
                report.discovered = self.rescan() if full else self.discover()
        try:
            self._drain(report, limit, progress)
        except BaseException as exc:
            self._hand_back(exc)
            raise
        report.seconds = time.perf_counter() - started
        event("pass_finished", archived=report.archived, unchanged=report.unchanged,
              failed=len(report.failed), quarantined=len(report.quarantined), leases_lost=len(report.leases_lost),
              worker_deaths=report.worker_deaths, seconds=round(report.seconds, 3))
        return report

    def _hand_back(self, failure: BaseException | None) -> None:
        """Hand back the claims this process still holds, so that they do not lapse: a lapse counts as a
        death of the archiver (claims.py), a pass that an outage (or a stop) ended is none. A FAILURE of ours
        (a bug raised while handling a chat) hands nothing back: its lapses isolate, then quarantine, a chat
        that makes every pass fail. Best effort after an outage (the database may be what failed): that the
        claims could not be handed back is logged, not raised, and the next pass of this process retries."""
        if failure is not None and not _outage(failure):
            try:  # left to lapse: not to be handed back by a later outage's hand-back either. By claim token,
                # not room: a chat claimed afresh once its claim lapsed is handed back like any other. Those
                # kept back before and not held now are forgotten (they lapsed): the set stays one pass's claims.
                self._lapsing = self.queue.held()
            except Exception as exc:
                event("claims_not_listed", logging.ERROR, owner=self.queue.owner, error=redact(str(exc)))
            return
        try:
            released = self.queue.release_held(keep=self._lapsing)
        except Exception as exc:
            if failure is None:
                raise
            self._unreturned = True
            event("claims_not_released", logging.ERROR, owner=self.queue.owner, error=redact(str(exc)))
            return
        self._unreturned = False
        if released:
            event("claims_released", logging.WARNING, claims=released,
                  after="this pass failed" if failure else "an earlier pass of this process failed")

    def archive_room(self, room: str, kind: str) -> tuple[PassReport, Plaintext | None]:
        """Archive ROOM now (on-demand export), built in a worker process like any chat; also the
        plaintext, as that process built and stored it, when a new version was built."""
        report = PassReport()
        since = time.monotonic()
        job = self.queue.claim_room(room, kind, self.config["archive.lease_seconds"])
        if job is None:
            report.failed[room] = "another worker is archiving this room right now; try again shortly"
            return report, None
        try:
            built = self._build_alone(job, since, report)
        except BaseException as exc:
            self._hand_back(exc)
            raise
        return report, built[room].plain if room in built else None

    def _build_alone(self, job: Job, since: float, report: PassReport) -> dict[str, Artifacts]:
        alone = self._process_pool(1)  # its process starts only if there is something to build
        built: dict[str, Artifacts] = {}
        try:
            for p in self._prepare(alone, [job], since, report, keep_plaintext=True):
                if self._await_alone(p, report):
                    built = self._finish([p], report)
        except BaseException:
            _kill_workers(alone)  # a build may run on: the bound is enforced only while it is awaited
            raise
        finally:
            alone.shutdown(wait=True, cancel_futures=True)
        return built

    def _executor(self) -> cf.Executor:
        return self._process_pool(self.workers)

    def _process_pool(self, workers: int) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            workers, mp_context=_worker_context(),
            initializer=artifacts.init_pool_worker, initargs=(self.config, dict(os.environ), os.getpid()),
        )

    def _drain(self, report: PassReport, limit: int | None, progress: Callable[[PassReport], None] | None) -> None:
        in_flight: list[_Prepared] = []  # claimed, submitted, not ended
        ended: list[_Prepared] = []  # ended (built, failed or cancelled), not indexed yet
        claimed, exhausted = 0, False
        # Only work due when the pass began: a chat that fails now is retried by a later
        # pass, so an outage cannot make this one spin on the same chats.
        due_by = self.queue.server_ms()
        # Chats to be claimed alone come after the batches: a LIMIT keeps room for them, or while a backlog
        # lasts they would never be reached (a poison chat never quarantined, its batch-mates never archived).
        batches = None if limit is None else limit - min(limit, self.queue.alone_due(due_by))
        batch = self.config["archive.batch_size"]
        depth = max(2 * batch, 2 * self.workers)  # keeps every worker busy while we do I/O
        lease = self.config["archive.lease_seconds"]
        renewed = indexed = time.monotonic()
        pool = self._pass_pool()
        idle = False  # every build of the pass ended: the pool may serve the next pass
        try:
            while True:
                if time.monotonic() - renewed > lease / 3:  # chats queued behind slow ones keep their claims
                    in_flight = self._renew(in_flight, lease, report, waiting=ended)
                    renewed = time.monotonic()
                room = depth - len(in_flight)
                want = room if batches is None else min(room, batches - claimed)
                # Claim in batches, a few queries per batch rather than per chat; the last chats
                # of a LIMIT are claimed whatever their number.
                claimable = not exhausted and want > 0 and not self.stop.is_set()
                if claimable and (room >= min(batch, depth // 2) or want < room):
                    since = time.monotonic()
                    with timed(report.stages, "claim"):
                        jobs = self.queue.claim_batch(lease, want, due_by_ms=due_by)
                    claimed += len(jobs)
                    exhausted = not jobs or claimed == batches
                    in_flight.extend(self._prepare(pool, jobs, since, report))
                    continue  # a batch with nothing to build (all unchanged, say) is no reason to stop
                if not in_flight:  # nothing in hand (the rest indexed): chats whose archiver died with them
                    since = time.monotonic()
                    job = None if self.stop.is_set() or claimed == limit else self._claim_alone(report, due_by)
                    if job is None and batches != limit and claimed != limit and not self.stop.is_set():
                        batches, exhausted = limit, False  # fewer alone than kept room for: batches fill the rest
                        continue
                    if job is None:
                        break
                    claimed += 1
                    in_flight.extend(self._prepare(pool, [job], since, report))
                    continue
                in_flight, just_ended, broken = self._settle(pool, in_flight)
                ended += just_ended
                if broken:  # the built chats indexed first: a rebuild may last archive.build_timeout_seconds
                    self._finish(ended, report)
                    ended, indexed = [], time.monotonic()
                    pool = self._rebuild_alone(pool, broken, report, waiting=[p.job.room for p in in_flight])
                # Indexed a batch at a time (three writes: entries, jobs, holds), and at least every second.
                if len(ended) >= batch or not in_flight or time.monotonic() - indexed > 1:
                    self._finish(ended, report)
                    ended, indexed = [], time.monotonic()
                    if progress:
                        progress(report)
            self._finish(ended, report)  # builds that ended before their chats' leases were lost
            idle = True
        except BaseException:
            # archive.build_timeout_seconds is enforced only in the loop: shutting down would wait for a build
            # that never ends, with the pass and its claims. What a killed build stored is set aside by the
            # chat's next attempt (_replan), as after a crash.
            _kill_workers(pool)
            raise
        finally:
            self._end_pass_pool(pool, idle)

    def _claim_alone(self, report: PassReport, due_by: int) -> Job | None:
        """A chat whose archiver died holding it (claims.ALONE_AFTER times), to be handled with nothing else in
        hand, so that a chat that kills the main process (out of memory) takes no other down with it; those
        that killed it archive.max_attempts more times are quarantined."""
        with timed(report.stages, "claim"):
            job, gave_up = self.queue.claim_alone(self.config["archive.lease_seconds"],
                                                  self.config["archive.max_attempts"], due_by, self._close_uploads)
        for room, reason in gave_up.items():
            report.quarantined[room] = reason
            event("quarantined", logging.WARNING, room=room, reason=reason)
        if job is not None:
            event("claimed_alone", logging.WARNING, room=job.room, lapses=job.lapses)
        return job

    def _close_uploads(self, room: str, reason: str) -> None:
        """Close ROOM's uploads, what reached the store set aside, before it is quarantined unloaded: the
        archiver whose claim lapsed may only have stalled, and its attempt can no longer complete one."""
        for entry in self.index.versions([room])[room]:
            if entry["status"] == "uploading":
                self.index.close(entry, self._stored_for(entry), f"the chat was quarantined: {reason}")

    def _pass_pool(self) -> cf.ProcessPoolExecutor:
        """The worker processes for a pass: those kept from the last one, unless broken, or new ones."""
        pool, self._kept = self._kept, None
        if pool is not None and not _broken(pool):
            return pool
        if pool is not None:  # a worker died between passes
            pool.shutdown(wait=True, cancel_futures=True)
        return self._executor()

    def _end_pass_pool(self, pool: cf.ProcessPoolExecutor, idle: bool) -> None:
        if self.keep_workers and idle and not self.stop.is_set() and not _broken(pool) and pool is not self._unfit:
            self._kept = pool
        else:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker processes kept for the next pass (serve: on stop, or when the keys change)."""
        pool, self._kept = self._kept, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _renew(self, in_flight: list[_Prepared], lease: int, report: PassReport,
               waiting: Sequence[_Prepared] = ()) -> list[_Prepared]:
        """Extend our leases, those of the chats built and WAITING to be indexed too; a chat whose lease
        ran out is left to the worker that took it over (if its build already started, the index records
        whichever attempt completes first; for a WAITING one, `_finish` finds out)."""
        lost = set(self.queue.renew([p.job.room for p in [*in_flight, *waiting]], lease))
        for p in in_flight:
            if p.job.room in lost and p.future.cancel():
                report.leases_lost.append(p.job.room)
                event("lease_lost", logging.WARNING, room=p.job.room)
        return [p for p in in_flight if not (p.job.room in lost and p.future.cancelled())]

    def _settle(self, pool: cf.Executor, in_flight: list[_Prepared]
                ) -> tuple[list[_Prepared], list[_Prepared], list[_Prepared]]:
        """Wait for a build to end; what is still running, what ended, and what a dead worker
        process took down with it. Once stopping, builds not started yet are cancelled."""
        if self.stop.is_set():
            for p in in_flight:
                p.future.cancel()
        running = [p for p in in_flight if not p.future.cancelled()]
        # Bounded wait, so leases of queued chats are renewed, and a stop noticed, while every build is slow.
        timeout = min(self.config["archive.lease_seconds"] / 3, STOP_POLL_SECONDS)
        done = cf.wait([p.future for p in running], timeout, cf.FIRST_COMPLETED).done if running else set()
        ended = [p for p in in_flight if p.future.cancelled() or p.future in done]
        broken = [p for p in ended if not p.future.cancelled() and isinstance(p.future.exception(), BrokenProcessPool)]
        still = [p for p in running if p.future not in done]
        self._stop_overdue(pool, still)
        return still, [p for p in ended if p not in broken], broken

    def _stop_overdue(self, pool: cf.Executor, running: list[_Prepared]) -> None:
        """Kill POOL's processes if a build in it has run longer than archive.build_timeout_seconds (a chat
        whose build never ends would hold the pass, and every later one, forever). The pool then fails every
        build it held, and _rebuild_alone builds each again alone, where the bound is exact: only a chat whose
        build outlasts it again fails. RUNNING is in the order of submission, which is the order the workers
        take builds in: the first of them, one per worker, are the ones being built (the pool calls a build
        `running` already when it queues it for a worker). Each is timed from when it is first seen among
        them: never before the build ahead of it on that worker ended (a worker's start, a fraction of a
        second, may count), and late by whatever the pass did since it last looked."""
        clock, bound = time.monotonic(), self.config["archive.build_timeout_seconds"]
        for p in [p for p in running if p.pool is pool][:self.workers]:
            if p.running_since is None and p.future.running():
                p.running_since = clock
        if pool is self._stopped or _broken(pool):  # killed already (by us, or the operating system)
            return
        if any(p.pool is pool and p.running_since is not None and clock - p.running_since > bound
               and not p.future.done() for p in running):
            self._stopped = pool
            _kill_workers(pool)

    def _rebuild_alone(self, pool: cf.Executor, broken: list[_Prepared], report: PassReport,
                       waiting: Sequence[str] = ()) -> cf.Executor:
        """A worker process died (killed by the operating system, say, or by _stop_overdue) and its pool
        failed every build it held. Each of them is built again alone, so that only a chat that kills its
        worker fails; returns the pool to go on with (a new one if POOL is the broken one). The leases of
        the chats WAITING (still in flight) are kept meanwhile."""
        if any(p.pool is pool for p in broken):  # else the rest of a pool replaced already
            if pool is self._stopped:  # by _stop_overdue, not the operating system
                event("build_overdue", logging.WARNING, builds=len(broken),
                      seconds=self.config["archive.build_timeout_seconds"])
                self._stopped = None
            else:
                report.worker_deaths += 1
                event("worker_died", logging.WARNING, builds=len(broken))
            # Waits until its other processes are gone: nothing is still being stored when we look.
            pool.shutdown(wait=True, cancel_futures=True)
            pool = self._executor()
        alone = self._process_pool(1)
        try:
            for i, p in enumerate(broken):
                if not self._rebuild(p, alone, report, [*(q.job.room for q in broken[i + 1:]), *waiting]):
                    alone.shutdown(wait=True)
                    alone = self._process_pool(1)
        except BaseException:
            _kill_workers(alone)  # as in _drain: a rebuild may run on
            raise
        finally:
            alone.shutdown(wait=True)
        return pool

    def _rebuild(self, p: _Prepared, alone: cf.Executor, report: PassReport, waiting: list[str]) -> bool:
        """Build P again in ALONE (indexed, or handed back when stopping), keeping the leases of the
        chats WAITING their turn; False if its worker process died or was stopped."""
        lease = self.config["archive.lease_seconds"]
        if self.queue.renew([p.job.room], lease):  # taken over meanwhile: the other worker sets this aside
            report.leases_lost.append(p.job.room)
            return True
        entry = self._replan(p.job, p.entry, report)  # the dead attempt may have stored a part
        if entry is None:
            return True
        if self.stop.is_set():
            self.queue.release([p.job.room])
            event("released", room=p.job.room)
            return True
        p.entry, p.pool, p.future = entry, alone, _submit(alone, p.build)
        if not self._await_alone(p, report, waiting):
            return False
        self._finish([p], report)
        return True

    def _await_alone(self, p: _Prepared, report: PassReport, waiting: Sequence[str] = ()) -> bool:
        """Wait for P, the only build in its pool, renewing its lease and those of WAITING meanwhile.
        False, with the chat failed, if its worker process died or the build outlasted
        archive.build_timeout_seconds (then the process is killed: a build cannot be cancelled)."""
        lease, bound = self.config["archive.lease_seconds"], self.config["archive.build_timeout_seconds"]
        deadline = time.monotonic() + bound
        while not cf.wait([p.future], min(lease / 3, max(0.0, deadline - time.monotonic()))).done:
            if time.monotonic() >= deadline:
                _kill_workers(p.pool)
                self._fail(p.job, BUILD_TIMED_OUT.format(seconds=bound), report, permanent=True)
                return False
            self.queue.renew([p.job.room, *waiting], lease)  # a lost one is settled when indexed
        if isinstance(p.future.exception(), BrokenProcessPool):
            report.worker_deaths += 1
            self._fail(p.job, WORKER_DIED, report, permanent=True)
            return False
        return True

    def _prepare(self, pool: cf.Executor, jobs: list[Job], since: float, report: PassReport,
                 keep_plaintext: bool = False) -> list[_Prepared]:
        """Load the chats, write their `uploading` entries, and submit their builds to POOL (JOBS were claimed
        at SINCE, time.monotonic())."""
        if not jobs:
            return []
        rooms = [job.room for job in jobs]
        with timed(report.stages, "read"):
            loaded = self.source.load_many(rooms)
        with timed(report.stages, "index"):
            versions = self.index.versions(rooms)
        redacted: dict[str, _Copies] = {}  # the copies each digest was computed over, handed to the build
        new, retries = self._plan(jobs, loaded, versions, report, redacted)
        # Retries planned for these rooms, taken out whether built or not (a room taken by another worker
        # must not carry its plan to a later build).
        planned_retries = {room: self._attachment_retries.pop(room, None) for room in rooms}
        with timed(report.stages, "index"):
            made, taken = self.index.begin(new, {room: newest_ms(loaded[room][0]) for room, *_ in new})
        by_room = {job.room: job for job in jobs}
        for room in taken:
            self._fail(by_room[room], f"room {room!r}: this version was recorded by another worker", report,
                       permanent=False)
        prepared = []
        for entry in self._still_held([*retries, *made], since, report):
            job = by_room[entry["room"]]
            retry = planned_retries.get(job.room)
            if retry is not None and retry.content_key != entry["source_sha256"]:
                retry = None  # planned for another entry than this one: an ordinary build
            # Only the entry comes back from the worker, and the plaintext for an on-demand export. The worker
            # gets the copies redacted here and their serialisation for the digest (it neither redacts nor
            # serialises again), and checks the digest of what it stores.
            copies, source = redacted[job.room]
            # Files earlier versions stored are kept, not fetched again: their links may have expired.
            trusted = (attachment_retries.as_sealed(self.config, versions[job.room])
                       if self.config["attachments.enabled"] else [])
            earlier = attachment_retries.earlier(trusted, entry["version"])
            if retry is not None and not any(v["version"] == retry.of_version for v in trusted):
                retry = dataclasses.replace(retry, kept={})  # its files no longer match its seal: fetched again
            build = functools.partial(artifacts.archive_in_worker, copies.chat, copies.contact, job.kind,
                                      entry["version"], now(), keep_plaintext=keep_plaintext, retry=retry,
                                      source_sha256=retry.documents_sha256 if retry else entry["source_sha256"],
                                      redaction=copies.note, source_json=source, earlier=earlier)
            prepared.append(_Prepared(job, entry, build, pool, _submit(pool, build)))
        return prepared

    def _still_held(self, entries: list[dict[str, Any]], since: float, report: PassReport) -> list[dict[str, Any]]:
        """The ENTRIES (just written) whose chats we still hold. Asked only if the pass may have stalled past the
        lease since it claimed them at SINCE (a third of it passed, as for renewals): another worker may have
        quarantined such a chat meanwhile, before the entry existed to be closed, and it must not be built. The
        entry of a lost one is dropped (closed, if an earlier attempt stored something under it)."""
        lease = self.config["archive.lease_seconds"]
        if not entries or time.monotonic() - since <= lease / 3:
            return entries
        lost = set(self.queue.renew([entry["room"] for entry in entries], lease))
        for entry in entries:
            if entry["room"] in lost:
                self.index.abandon(entry)
                self.index.close(entry, [], "the claim on this chat was lost before anything was stored")
                report.leases_lost.append(entry["room"])
                event("lease_lost", logging.WARNING, room=entry["room"], version=entry["version"])
        return [entry for entry in entries if entry["room"] not in lost]

    def _plan(self, jobs: list[Job], loaded: dict[str, tuple[Any, Any]], versions: dict[str, list[dict[str, Any]]],
              report: PassReport, redacted: dict[str, _Copies]
              ) -> tuple[list[tuple[str, int, str]], list[dict[str, Any]]]:
        """New versions to record, as (room, version, source digest), and entries of earlier attempts to
        retry. Chats gone from the source or unreadable are quarantined; unchanged ones are closed.
        REDACTED gets the redacted copies of each room whose digest was computed."""
        new: list[tuple[str, int, str]] = []
        retries: list[dict[str, Any]] = []
        unchanged: list[str] = []
        for job in jobs:
            with timed(report.stages, "redact"):  # the worker's copies are made here (with the source digest)
                digest, problem = self._digest(job, *loaded[job.room], redacted)
            known = versions[job.room]
            # No entry stays half-way: uploads of another content than this one are closed.
            stale = [v for v in known if v["status"] == "uploading" and v.get("source_sha256") != digest]
            if not self._close_stale(job, stale, digest, report):
                continue
            if problem and loaded[job.room][0] is None and self.source.messages is not None:
                # Its messages were found: the chat document may not be written yet. Retried with
                # backoff, quarantined after archive.max_attempts with this reason.
                self._fail(job, MISSING_CHAT, report, permanent=True)
                continue
            if problem:
                self._quarantine(job, problem, report)
                continue
            same = next((v for v in known if v.get("source_sha256") == digest), None)
            if same is None:
                new.append((job.room, 1 + max((v["version"] for v in known), default=0), digest))
            elif same["status"] == "archived":
                retry = self._attachment_retry(job.room, known, digest)
                if retry:
                    new.append((job.room, 1 + max(v["version"] for v in known), retry.content_key))
                else:
                    unchanged.append(job.room)
            else:  # an earlier attempt stopped half-way: rare, so one room at a time
                retries.extend(entry for entry in [self._replan(job, same, report)] if entry)
        self.queue.done(unchanged)
        report.unchanged += len(unchanged)
        return new, retries

    def _attachment_retry(self, room: str, known: list[dict[str, Any]], digest: str
                          ) -> attachment_retries.Retry | None:
        """A retry of the files ROOM's latest archived version missed, if one is due (remembered for _prepare)."""
        if not self.config["attachments.enabled"]:
            return None
        latest = next((v for v in reversed(known) if v["status"] == "archived"), None)
        retry = attachment_retries.planned(latest, digest, 1 + max(v["version"] for v in known), now())
        if retry:
            self._attachment_retries[room] = retry
        return retry

    def _digest(self, job: Job, chat: Any, contact: Any, redacted: dict[str, _Copies]) -> tuple[str, str]:
        """The source digest of JOB's loaded chat (its redacted copies and their serialisation put in
        REDACTED), or why it cannot be archived."""
        problem = _unusable(job, chat)
        if problem:
            return "", problem
        try:
            copies, source = self._redacted_source(chat, contact)
        except InvalidChat as exc:  # e.g. invalid UTF-8 somewhere in the source documents
            return "", str(exc)
        redacted[job.room] = copies, source
        return sha256_hex(source), ""

    def source_digest(self, chat: dict[str, Any], contact: dict[str, Any] | None) -> str:
        return sha256_hex(self._redacted_source(chat, contact)[1])

    def _redacted_source(self, chat: dict[str, Any], contact: dict[str, Any] | None) -> _Copies:
        """The redacted copies and the record's `source` written from them, whose digest the index keeps, as
        the worker will store them: the index keeps nothing derived from a redacted value (and a change to
        masked digits alone is no new version)."""
        redacted = artifacts.worker_builder().redactor.apply(chat, contact)
        return redacted, source_json(redacted.chat, redacted.contact)

    def _close_stale(self, job: Job, stale: list[dict[str, Any]], digest: str, report: PassReport) -> bool:
        """Close uploads an earlier attempt left for content the source no longer has, or for an attachment
        retry of DIGEST (the current source; a retry due again makes a new version), what they stored set
        aside (a later return of that content completes them after all); False on failure."""
        try:
            with timed(report.stages, "index"):
                for entry in stale:
                    leftovers = self._stored_for(entry)
                    retried = entry.get("source_sha256") == attachment_retries.content_key(digest, entry["version"])
                    self.index.close(entry, leftovers, "an attachment retry stopped before this version was stored"
                                     if retried else "the source changed before this version was stored")
        except StoreError as exc:
            self._fail(job, str(exc), report, permanent=False)
            return False
        return True

    def _stored_for(self, entry: dict[str, Any]) -> list[str]:
        """What ENTRY's attempts stored: under the folder recorded when it was begun (an older naming
        may have chosen it) and today's."""
        return [key for folder in recorded_folders(entry) for key in self.store.keys(folder + "/")]

    def _replan(self, job: Job, same: dict[str, Any], report: PassReport) -> dict[str, Any] | None:
        """The entry an earlier attempt left, with whatever it stored set aside; None on failure."""
        try:
            with timed(report.stages, "index"):
                return self.index.replan(same, self._stored_for(same))
        except (VersionConflict, StoreError) as exc:
            self._fail(job, str(exc), report, permanent=False)
            return None

    def _finish(self, finished: list[_Prepared], report: PassReport) -> dict[str, Artifacts]:
        """Index what the workers built and stored, in one write; the artifacts of each success."""
        built: dict[str, tuple[_Prepared, Artifacts]] = {}
        for p in finished:
            artifacts_ = self._result(p, report)
            if artifacts_ is not None and artifacts_.entry["room"] != p.job.room:
                self._misfiled(p, artifacts_, report)
            elif artifacts_ is not None:
                built[p.job.room] = (p, artifacts_)
                for stage, seconds in artifacts_.timings.items():
                    report.stages[stage] = report.stages.get(stage, 0.0) + seconds
        if built and not self._synced(built, report):
            return {}
        with timed(report.stages, "index"):
            lost, refused = self.index.complete([(p.entry, a.entry, p.job.attempts, p.job.last_error)
                                                 for p, a in built.values()], self.queue.owner)
        for room, error in refused.items():  # never fails the pass: that chat alone fails
            self._fail(built.pop(room)[0].job, error, report, permanent=True)
        for room in lost:  # our lease ran out and another worker took the chat over: it is theirs now
            p, _ = built.pop(room)
            report.leases_lost.append(room)
            event("lease_lost", logging.WARNING, room=room, version=p.entry["version"], superseded=True)
        with timed(report.stages, "index"):
            self.queue.done(list(built))
            # New versions of held rooms get the S3 legal hold. Whether any hold exists is asked here: the
            # seam logs and swallows every error as a hold failure, and an outage is the pass's error.
            holds = self.holds.active() if built else []
            self.holds.protect_new(built, holds, lambda _: self.store)
        for room, (p, a) in built.items():
            report.archived += 1
            event("archived", room=room, version=p.entry["version"], messages=a.entry["message_count"])
        return {room: a for room, (_, a) in built.items()}

    def _synced(self, built: dict[str, tuple[_Prepared, Artifacts]], report: PassReport) -> bool:
        """Whether what the workers stored for BUILT is durable (the local store syncs once for them all,
        not per chat), as it must be before the index says so; if not, each of them fails, to be retried
        (the next attempt sets aside what this one stored, as after a crash)."""
        try:
            with timed(report.stages, "put"):
                self.store.sync()
        except StoreError as exc:
            for p, _ in built.values():
                self._fail(p.job, str(exc), report, permanent=False)
            return False
        return True

    def _misfiled(self, p: _Prepared, built: Artifacts, report: PassReport) -> None:
        """A build for another room than P's job: its entry is closed with the objects set aside, the
        chat quarantined."""
        self.index.close(p.entry, [o["key"] for o in built.entry["objects"].values()], "built for another room")
        self._quarantine(p.job, f"room {p.job.room!r}: built a transcript of room {built.entry['room']!r}", report)

    def _result(self, p: _Prepared, report: PassReport) -> Artifacts | None:
        """What the worker built for P; None (with the job failed, quarantined or released) if not built."""
        if p.future.cancelled():  # never started (shutdown): nothing stored, the claim goes back
            self.index.abandon(p.entry)
            self.queue.release([p.job.room])
            event("released", room=p.job.room)
            return None
        try:
            return p.future.result()
        except StoreError as exc:  # what did reach the store is set aside, now and by the next attempt
            self.index.set_aside(p.entry, getattr(exc, "stored", []))
            self._fail(p.job, str(exc), report, permanent=False)
        except InvalidChat as exc:
            self.index.abandon(p.entry)
            self._quarantine(p.job, str(exc), report)
        except TimestampError as exc:  # an outage of the authority: retried, never quarantined, never B-B
            self.index.abandon(p.entry)
            self._fail(p.job, str(exc), report, permanent=False)
        except (NotValidNow, WorkerNotReady) as exc:  # the keys, not the chat: retried (a renewal fixes it) by
            self.index.abandon(p.entry)  # the next pass, with no attempt counted against the chat
            self._fail(p.job, str(exc), report, permanent=False, counted=False)
            if isinstance(exc, WorkerNotReady):  # its processes would fail every later chat too
                self._unfit = p.pool
        except NothingNew as exc:  # nothing was stored: the version stays as it is, retried later
            self.index.abandon(p.entry)
            wait = attachment_retries.backoff(exc.retries, self.config["archive.retry_backoff_seconds"])
            self.index.postpone_attachment_retry(p.job.room, exc.of_version, now() + wait, exc.retries + 1)
            self.queue.done([p.job.room])
            report.unchanged += 1
            event("attachments_retried", room=p.job.room, version=exc.of_version, fetched_more=False,
                  next_in_seconds=int(wait.total_seconds()))
        except Exception as exc:  # a renderer or signer bug must not stop the pass
            self.index.abandon(p.entry)
            self._fail(p.job, f"{type(exc).__name__}: {exc}", report, permanent=True)
        return None

    def _quarantine(self, job: Job, reason: str, report: PassReport) -> None:
        if not self.queue.quarantine(job.room, reason):
            self._lost(job, reason, report)
            return
        report.quarantined[job.room] = reason
        event("quarantined", logging.WARNING, room=job.room, reason=reason)

    def _fail(self, job: Job, error: str, report: PassReport, permanent: bool, counted: bool = True) -> None:
        """Record a failure for retry; a deterministic error is quarantined after archive.max_attempts. Not
        COUNTED (the archiver's failure, not the chat's): no attempt counted, no backoff."""
        if permanent and job.attempts >= self.config["archive.max_attempts"]:
            self._quarantine(job, f"gave up after {job.attempts} attempts: {error}", report)
            return
        backoff = (min(self.config["archive.retry_backoff_seconds"] * 2 ** (job.attempts - 1), MAX_BACKOFF_SECONDS)
                   if counted else 0)
        if not self.queue.failed(job.room, error, backoff, counted):
            self._lost(job, error, report)
            return
        report.failed[job.room] = error
        event("failed", logging.WARNING, room=job.room, error=error, retry_in_seconds=backoff)

    def _lost(self, job: Job, error: str, report: PassReport) -> None:
        """JOB's claim was no longer ours when we came to close it (our lease ran out, and another worker took
        the chat over, maybe archived it): its outcome is that worker's, not a failure of this pass."""
        report.leases_lost.append(job.room)
        event("lease_lost", logging.WARNING, room=job.room, error=error)


def _unusable(job: Job, chat: Any) -> str:
    """Why JOB's loaded CHAT cannot be archived as that room ("" if it can be tried)."""
    if chat is None:
        return "chat is no longer in the source collection"
    if isinstance(chat, SourceProblem):
        return chat.reason
    room = chat.get("room")
    if isinstance(room, str) and room and room != job.room:  # never stored under another room
        return f"chat {chat.get('_id')!r} has room {room!r}, not this job's"
    return ""


def _worker_context() -> multiprocessing.context.BaseContext:
    """Worker processes forked from a server process that imported the build's libraries and parsed
    the bundled template's fonts once (archiver/worker_preload.py): a worker starts in about 0.05 s of
    CPU instead of the 1.5 s a spawned process spends importing reportlab, pyHanko and boto3 and
    parsing fonts (one per pass, export and rebuild). The server is single-threaded, so its
    children are as clean as spawned ones. They never import the caller's main module (worker_processes)."""
    return forkserver_context(["archiver.worker_preload"])


def _submit(pool: cf.Executor, build: Callable[[], Artifacts]) -> cf.Future:
    """BUILD submitted to POOL; a pool broken by a dead worker gives a future that says so."""
    try:
        return pool.submit(build)
    except BrokenProcessPool as exc:
        future: cf.Future = cf.Future()
        future.set_exception(exc)
        return future


def _broken(pool: cf.Executor) -> bool:
    """Whether a worker process of POOL died (the pool then fails every build it is given)."""
    return bool(getattr(pool, "_broken", False))


def _kill_workers(pool: cf.Executor) -> None:
    """Kill POOL's worker processes, to end a build that runs on: Python before 3.14 has no public way."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _outage(failure: BaseException) -> bool:
    """Whether FAILURE is a passing outage (the database or the store not reachable, a primary stepping down)
    or a stop, not an error that would come back with the same chats (a write the server refuses, a bug)."""
    if not isinstance(failure, Exception):  # KeyboardInterrupt, SystemExit: a stop
        return True
    if isinstance(failure, ConnectionFailure):  # AutoReconnect, NotPrimaryError, timeouts, no server
        return True
    if isinstance(failure, PyMongoError):
        return failure.has_error_label("RetryableWriteError") or failure.has_error_label("TransientTransactionError")
    return isinstance(failure, StoreError) and unreachable(failure)

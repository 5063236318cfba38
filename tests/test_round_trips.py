"""What an archive pass asks of MongoDB: a few commands per batch of chats, never one per chat.

Counted two ways: a proxy that counts the calls made on one collection (mongomock, or a real
MongoDB), and pymongo's command monitoring on a client of nx-27017 (or the real server).
"""

from __future__ import annotations

import collections
import random
import types
import uuid
from typing import Any, Callable

import pymongo
import pytest
from pymongo import monitoring

from archiver import mongo
from archiver import pipeline
from archiver.claims import WorkQueue
from archiver.holds import Holds
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from test_pipeline import archived_rooms, recent_ms, seed


class Counting:
    """COLLECTION with the calls made on it counted by method name; BEFORE(name) runs before each."""

    def __init__(self, collection: Any, before: Callable[[str], None] | None = None) -> None:
        self._collection = collection
        self._before = before
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._collection, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self._before:
                self._before(name)
            return attr(*args, **kwargs)
        return counted


# -- claims ---------------------------------------------------------------------------------------

def test_claiming_a_batch_is_a_few_commands_whatever_its_size(jobs) -> None:
    WorkQueue(jobs, "seed").enqueue([*((f"e{i}", "ended") for i in range(40)), ("a0", "abandoned")])
    counted = Counting(jobs)
    taken = WorkQueue(counted, "me").claim_batch(60, 50)
    assert sorted((j.room, j.kind, j.attempts, j.last_error) for j in taken) == sorted(
        [*((f"e{i}", "ended", 1, "") for i in range(40)), ("a0", "abandoned", 1, "")])
    assert counted.calls["find"] == 2  # candidates, then what this claim's token got
    assert counted.calls["bulk_write"] + counted.calls["update_many"] + counted.calls["update_one"] == 1
    assert {d["owner"] for d in jobs.find()} == {"me"}
    assert {d["attempts"] for d in jobs.find()} == {1}


def test_a_failed_job_keeps_its_attempts_and_error_when_claimed_from_what_was_read(jobs) -> None:
    queue = WorkQueue(jobs, "me")
    queue.enqueue([("r", "ended")])
    [first] = queue.claim_batch(60, 1)
    assert queue.failed("r", "the store said no", 0)
    [again] = queue.claim_batch(60, 1)
    assert (again.attempts, again.last_error, again.kind) == (2, "the store said no", "ended")
    assert jobs.find_one({"_id": "r"})["attempts"] == 2


def test_a_job_another_worker_claims_between_read_and_write_is_not_ours(jobs) -> None:
    WorkQueue(jobs, "seed").enqueue((f"r{i}", "ended") for i in range(3))
    other = WorkQueue(jobs, "other")

    def race(name: str) -> None:  # just before our claim is written, another worker takes r1
        if name in ("bulk_write", "update_many"):  # the claim's write, whichever form it takes
            assert other.claim(60, {"_id": "r1"}) is not None

    taken = WorkQueue(Counting(jobs, race), "me").claim_batch(60, 10)
    assert sorted((j.room, j.attempts) for j in taken) == [("r0", 1), ("r2", 1)]
    assert jobs.find_one({"_id": "r1"})["owner"] == "other"
    assert {d["_id"]: d["owner"] for d in jobs.find({"_id": {"$in": ["r0", "r2"]}})} == {"r0": "me", "r2": "me"}


def test_a_job_that_changed_between_read_and_write_is_claimed_as_it_is_now(jobs) -> None:
    """Between the candidates' read and the claim, discovery reopened a job as another kind: the job
    comes back as the claim left it (its kind now), never as it was read."""
    WorkQueue(jobs, "seed").enqueue((f"r{i}", "ended") for i in range(3))

    def reopen(name: str) -> None:
        if name in ("bulk_write", "update_many"):  # the claim's write, whichever form it takes
            jobs.update_one({"_id": "r1"}, {"$set": {"kind": "abandoned"}})

    taken = WorkQueue(Counting(jobs, reopen), "me").claim_batch(60, 10)
    assert sorted((j.room, j.kind, j.attempts) for j in taken) == [
        ("r0", "ended", 1), ("r1", "abandoned", 1), ("r2", "ended", 1)]


def test_a_job_without_kind_or_error_is_claimed_as_before(jobs) -> None:
    """Jobs written by an older version may lack `kind` or `last_error`: they read as ended, no error."""
    jobs.insert_one({"_id": "old", "state": "pending", "attempts": 0, "available_at": 0})
    [job] = WorkQueue(jobs, "me").claim_batch(60, 5)
    assert (job.room, job.kind, job.attempts, job.last_error) == ("old", "ended", 1, "")


# -- holds -------------------------------------------------------------------------------------------

def test_an_index_write_with_no_chat_archived_asks_nothing_of_the_holds(mongo_uri, db_names) -> None:
    db = connect(mongo_uri)[db_names["index.database"]]
    holds, entries = Counting(db["holds"]), Counting(db["entries"])
    assert Holds(holds, entries, None).protect_new([], [], lambda _: None) == 0
    assert holds.calls == {} and entries.calls == {}


# -- the pass ----------------------------------------------------------------------------------------

def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass's clock stands still: indexing follows the batch size alone, never the one-second bound."""
    real = pipeline.time
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(
        monotonic=lambda: 0.0, perf_counter=real.perf_counter, time=real.time))


def test_a_pass_indexes_a_batch_at_a_time(make_config, monkeypatch) -> None:
    config = make_config(archive__batch_size=8, archive__workers=2)
    rng = random.Random(12)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(32)]
    seed(config, chats)
    _frozen_clock(monkeypatch)
    archiver = Archiver(config)
    archiver.index.entries = entries = Counting(archiver.index.entries)
    archiver.queue.jobs = jobs = Counting(archiver.queue.jobs)
    report = archiver.run_pass()
    assert report.archived == 32 and archived_rooms(config) == sorted(c["room"] for c, _ in chats)
    # 32 chats in batches of 8: four completions (five if the last batch ends in two parts), not one per 4 chats
    assert 4 <= entries.calls["bulk_write"] <= 5
    assert entries.calls["insert_many"] <= 4 and entries.calls["find"] <= 4  # begin, versions: per claimed batch
    assert jobs.calls["update_many"] <= 9  # claims (16, 8, 8) and done (per completion)


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: collections.Counter[tuple[str, str]] = collections.Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        target = event.command.get("collection" if name == "getMore" else name)
        self.seen[(name, target if isinstance(target, str) else "")] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_pass_of_many_chats_sends_a_few_commands_per_batch(make_config, nx_uri, monkeypatch) -> None:
    """Against a server (nx-27017, or the real MongoDB), every command of a pass counted: none is sent
    once per chat (a regression to per-chat reads, claims or index writes would send 48 or more)."""
    listener = _Commands()
    uri = nx_uri + ("&" if "?" in nx_uri else "?") + f"appname=count{uuid.uuid4().hex[:6]}"
    monkeypatch.setitem(mongo._CLIENTS, uri, pymongo.MongoClient(uri, tz_aware=True, event_listeners=[listener]))
    config = make_config(mongodb__uri=uri, archive__batch_size=16, archive__workers=2)
    rng = random.Random(48)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(48)]
    seed(config, chats)
    _frozen_clock(monkeypatch)
    archiver = Archiver(config)
    listener.seen.clear()
    report = archiver.run_pass()
    assert report.archived == 48, report.failed
    per_kind = dict(listener.seen)
    assert max(per_kind.values()) <= 10, per_kind
    # 48 chats in batches of 16: claims (server clock, candidates, claim), reads (chats, contacts), index
    # (versions, begin, complete), jobs done, holds: about ten per batch, and discovery's few.
    assert sum(per_kind.values()) <= 3 * 10 + 12, per_kind
    for kind in [("find", "chats"), ("find", "contacts"), ("insert", config["index.entries"]),
                 ("update", config["index.entries"])]:
        assert 1 <= per_kind.get(kind, 0) <= 4, (kind, per_kind)
    assert per_kind.get(("find", config["index.jobs"]), 0) <= 10, per_kind  # discovery's 2, then 2 per claim


def test_chats_built_and_waiting_to_be_indexed_keep_their_leases(make_config, monkeypatch) -> None:
    """Indexed a batch at a time, a built chat may wait for the rest of its batch: its lease is
    renewed with those of the chats in flight, so that no other worker takes it over meanwhile."""
    config = make_config(archive__lease_seconds=2, archive__batch_size=8)
    chats = [make_chat(random.Random(i), messages=3, start_ms=recent_ms()) for i in range(8)]
    seed(config, chats)
    clock = [0.0]  # the pass's clock moves 0.4 s each time it comes back from waiting for builds
    real = pipeline.time
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(
        monotonic=lambda: clock[0], perf_counter=real.perf_counter, time=real.time))
    archiver = Archiver(config)
    waiting: set[str] = set()  # built, not indexed yet
    seen: list[tuple[set[str], set[str]]] = []  # (waiting, renewed) at each renewal
    settle, finish, renew = archiver._settle, archiver._finish, archiver.queue.renew

    def settle_and_tick(*args: Any) -> Any:
        running, ended, broken = settle(*args)
        waiting.update(p.job.room for p in ended)
        clock[0] += 0.4
        return running, ended, broken

    def finish_and_forget(finished: list[Any], *args: Any) -> Any:
        waiting.difference_update(p.job.room for p in finished)
        return finish(finished, *args)

    def renew_and_note(rooms: list[str], *args: Any) -> list[str]:
        seen.append((set(waiting), set(rooms)))
        return renew(rooms, *args)

    monkeypatch.setattr(archiver, "_settle", settle_and_tick)
    monkeypatch.setattr(archiver, "_finish", finish_and_forget)
    monkeypatch.setattr(archiver.queue, "renew", renew_and_note)
    assert archiver.run_pass().archived == 8
    assert any(w for w, _ in seen), "some renewal happened while a built chat waited (else this shows nothing)"
    for built, renewed in seen:
        assert built <= renewed

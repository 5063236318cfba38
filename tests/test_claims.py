"""The work queue: batched claims, leases, renewal, hand-back (mongomock, or a real MongoDB)."""

from __future__ import annotations

import time
import uuid

import pytest

from archiver.claims import WorkQueue
from archiver.mongo import connect


@pytest.fixture
def jobs(mongo_uri, db_names):
    collection = connect(mongo_uri)[db_names["index.database"]][f"jobs_{uuid.uuid4().hex[:6]}"]
    WorkQueue(collection).ensure_indexes()
    return collection


def test_batches_of_two_workers_never_overlap_and_cover_everything(jobs) -> None:
    first, second = WorkQueue(jobs, "first"), WorkQueue(jobs, "second")
    first.enqueue((f"room-{i}", "ended") for i in range(25))
    taken = [first.claim_batch(60, 10), second.claim_batch(60, 10), first.claim_batch(60, 10),
             second.claim_batch(60, 10)]
    rooms = [job.room for batch in taken for job in batch]
    assert [len(batch) for batch in taken] == [10, 10, 5, 0]
    assert sorted(rooms) == sorted(f"room-{i}" for i in range(25))
    assert {job.attempts for batch in taken for job in batch} == {1}


def test_an_expired_lease_is_taken_over_unless_renewed(jobs) -> None:
    dead, alive, other = WorkQueue(jobs, "dead"), WorkQueue(jobs, "alive"), WorkQueue(jobs, "other")
    dead.enqueue([("a", "ended")])
    alive.enqueue([("b", "ended")])
    assert [j.room for j in dead.claim_batch(1, 1)] == ["a"]
    assert [j.room for j in alive.claim_batch(1, 1)] == ["b"]
    assert alive.renew(["b"], 60) == []
    time.sleep(1.2)
    taken = other.claim_batch(60, 10)
    assert [(j.room, j.attempts) for j in taken] == [("a", 2)], "only the lapsed claim moves"
    assert dead.renew(["a"], 60) == ["a"], "a lost lease is reported, not renewed"
    assert dead.done(["a"]) == 0, "a worker that lost its lease cannot close the job"
    assert alive.done(["b"]) == 1


def test_released_claims_are_claimable_at_once_and_the_attempt_is_not_counted(jobs) -> None:
    queue = WorkQueue(jobs, "me")
    queue.enqueue([("a", "ended"), ("b", "ended")])
    claimed = queue.claim_batch(600, 10)
    assert queue.release([job.room for job in claimed]) == 2
    again = WorkQueue(jobs, "someone-else").claim_batch(600, 10)
    assert sorted((j.room, j.attempts) for j in again) == [("a", 1), ("b", 1)]


def test_only_archived_rooms_whose_source_changed_are_reopened(jobs) -> None:
    queue = WorkQueue(jobs, "me")
    queue.enqueue([("same", "ended"), ("changed", "ended"), ("busy", "ended")])
    claimed = queue.claim_batch(600, 10)
    queue.done(["same", "changed"])
    assert queue.archived([j.room for j in claimed]) == {"same": "ended", "changed": "ended"}
    assert queue.enqueue([("same", "ended"), ("changed", "ended"), ("busy", "ended")], {"changed", "busy"}) == 1
    assert {d["_id"]: d["state"] for d in jobs.find()} == {"same": "done", "changed": "pending", "busy": "claimed"}
    assert [(j.room, j.attempts) for j in WorkQueue(jobs, "other").claim_batch(600, 10)] == [("changed", 1)]

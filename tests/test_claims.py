"""The work queue: batched claims, leases, renewal, hand-back (mongomock, or a real MongoDB)."""

from __future__ import annotations

import datetime as dt
import time
import types
import uuid

import pytest

from archiver import claims
from archiver.claims import WorkQueue
from archiver.mongo import connect


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


def test_claims_held_by_a_failed_pass_are_handed_back_uncounted_and_only_its_own(jobs) -> None:
    """A pass that fails hands back every claim of its process, its lease run out or not, as no lapse; the
    claims of another archiver (one that died) are left to lapse and count."""
    mine, dead = WorkQueue(jobs, "me"), WorkQueue(jobs, "dead")
    mine.enqueue((room, "ended") for room in ["a", "b", "c"])
    assert [j.room for j in mine.claim_batch(600, 2)] == ["a", "b"]
    assert [j.room for j in dead.claim_batch(600, 2)] == ["c"]
    jobs.update_many({"_id": {"$in": ["b", "c"]}}, {"$set": {"available_at": 0}})  # their leases ran out
    assert mine.release_held() == 2
    assert mine.release_held() == 0
    assert {d["_id"]: (d["state"], d.get("lapses") or 0, d["attempts"]) for d in jobs.find()} == {
        "a": ("pending", 0, 0), "b": ("pending", 0, 0), "c": ("claimed", 0, 1)}
    assert sorted(j.room for j in WorkQueue(jobs, "next").claim_batch(600, 10)) == ["a", "b", "c"]
    assert jobs.find_one({"_id": "c"})["lapses"] == 1, "the dead archiver's claim lapsed"


def test_jobs_to_be_claimed_alone_are_counted_when_due(jobs) -> None:
    queue = WorkQueue(jobs, "me")
    queue.enqueue((room, "ended") for room in ["a", "b", "c"])
    t = queue.server_ms()
    jobs.update_many({"_id": {"$in": ["a", "b"]}}, {"$set": {"lapses": claims.ALONE_AFTER}})
    jobs.update_one({"_id": "b"}, {"$set": {"available_at": t + 60_000}})  # not due yet
    assert queue.alone_due(t) == 1
    assert queue.alone_due(t + 60_000) == 2


FIVE_MINUTES_MS = 5 * 60_000


def skew_clock(monkeypatch, offset_ms: int) -> None:
    """This process's clock, as the claims module reads it, is OFFSET_MS off (a drifting VM, no NTP)."""
    class Skewed(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + dt.timedelta(milliseconds=offset_ms)
    monkeypatch.setattr(claims, "dt", types.SimpleNamespace(datetime=Skewed, timezone=dt.timezone,
                                                            timedelta=dt.timedelta))
    monkeypatch.setattr(claims, "now_ms", lambda: int(time.time() * 1000) + offset_ms)


@pytest.fixture(params=["mongo_uri", "nx_uri"])
def any_jobs(request, db_names):
    """Jobs on the in-process stand-in (or a real MongoDB) and on the wire-protocol server."""
    uri = request.getfixturevalue(request.param)
    collection = connect(uri)[db_names["index.database"]][f"jobs_{uuid.uuid4().hex[:6]}"]
    WorkQueue(collection).ensure_indexes()
    return collection


def test_a_worker_whose_clock_is_ahead_cannot_take_a_live_lease(any_jobs, monkeypatch) -> None:
    holder, skewed = WorkQueue(any_jobs, "holder"), WorkQueue(any_jobs, "skewed")
    holder.enqueue([("a", "ended"), ("b", "ended")])
    assert len(holder.claim_batch(60, 10)) == 2
    skew_clock(monkeypatch, +FIVE_MINUTES_MS)
    assert skewed.claim_batch(60, 10) == [] and skewed.claim(60) is None
    assert skewed.claim_room("a", "ended", 60) is None, "not even on demand"
    assert holder.renew(["a", "b"], 60) == [] and holder.done(["a", "b"]) == 2


def test_a_worker_whose_clock_is_behind_holds_its_lease_for_the_full_term(any_jobs, monkeypatch) -> None:
    slow, other = WorkQueue(any_jobs, "slow"), WorkQueue(any_jobs, "other")
    slow.enqueue([("a", "ended")])
    skew_clock(monkeypatch, -FIVE_MINUTES_MS)
    assert [j.room for j in slow.claim_batch(60, 1)] == ["a"]
    assert slow.renew(["a"], 60) == []
    monkeypatch.undo()
    assert other.claim_batch(60, 10) == [], "its lease is not five minutes shorter"
    (doc,) = any_jobs.find({"_id": "a"})
    assert abs(doc["available_at"] - (time.time() * 1000 + 60_000)) < 10_000, "a 60 s lease, on the server's clock"


def test_only_archived_rooms_whose_source_changed_are_reopened(jobs) -> None:
    queue = WorkQueue(jobs, "me")
    queue.enqueue([("same", "ended"), ("changed", "ended"), ("busy", "ended")])
    claimed = queue.claim_batch(600, 10)
    queue.done(["same", "changed"])
    assert queue.archived([j.room for j in claimed]) == {"same": "ended", "changed": "ended"}
    assert queue.enqueue([("same", "ended"), ("changed", "ended"), ("busy", "ended")], {"changed", "busy"}) == 1
    assert {d["_id"]: d["state"] for d in jobs.find()} == {"same": "done", "changed": "pending", "busy": "claimed"}
    assert [(j.room, j.attempts) for j in WorkQueue(jobs, "other").claim_batch(600, 10)] == [("changed", 1)]


def test_a_chat_whose_archiver_keeps_dying_is_claimed_alone_then_quarantined_and_its_batch_mates_are_not(
        any_jobs) -> None:
    """A chat whose handling kills the archiver's main process (out of memory) lapsed and was claimed again
    after every lease, for ever: attempts grew past archive.max_attempts, nothing quarantined it."""
    rooms = ["poison", "a", "b", "c"]
    WorkQueue(any_jobs, "discovery").enqueue((room, "ended") for room in rooms)

    def die() -> None:  # the archiver holding the claims is killed: its leases run out, nobody closes them
        any_jobs.update_many({"state": "claimed"}, {"$set": {"available_at": 0}})
    for i in range(claims.ALONE_AFTER):  # killed with its whole batch in hand
        assert sorted(j.room for j in WorkQueue(any_jobs, f"dead-{i}").claim_batch(60, 10)) == sorted(rooms)
        die()
    queue = WorkQueue(any_jobs, "next")
    assert queue.claim_batch(60, 10) == [], "a chat whose archiver died with it twice is never claimed in a batch"
    assert {d["_id"]: (d["state"], d["lapses"]) for d in any_jobs.find()} == {
        room: ("failed", claims.ALONE_AFTER) for room in rooms}
    gave_up: dict[str, str] = {}
    for _ in range(20):
        job, quarantined = queue.claim_alone(60, max_alone=3)
        gave_up.update(quarantined)
        if job is None:
            break
        assert any_jobs.count_documents({"state": "claimed"}) == 1, "claimed alone"
        if job.room == "poison":
            die()
        else:
            assert queue.done([job.room]) == 1
    assert gave_up == {"poison": "the archiver died (or stalled past its lease) 5 times while holding this chat, "
                                 "the last 3 of them with no other chat in hand (killed by the operating system: "
                                 "out of memory? Or its passes failed with an error: see pass_failed in its log)"}
    assert {d["_id"]: d["state"] for d in any_jobs.find()} == {"poison": "quarantined", "a": "done", "b": "done",
                                                               "c": "done"}
    assert any_jobs.find_one({"_id": "poison"})["reason"] == gave_up["poison"]
    assert {d["lapses"] for d in any_jobs.find({"state": "done"})} == {0}, "archived: the count starts afresh"


def test_claiming_one_room_on_demand_changes_that_room_s_job_alone(any_jobs) -> None:
    """nx-27017 applied an update filtered by {_id, $or: [...]} to another document (the first one): an export
    then pushed an unrelated chat's job out of the pass's reach."""
    queue = WorkQueue(any_jobs, "export")
    queue.enqueue([(room, "ended") for room in ("a", "b", "c", "d")])
    before = {j["_id"]: j for j in any_jobs.find({"_id": {"$ne": "c"}})}
    job = queue.claim_room("c", "ended", 60)
    assert job is not None and job.room == "c"
    assert {j["_id"]: j for j in any_jobs.find({"_id": {"$ne": "c"}})} == before


def test_reasons_that_are_not_utf8_are_stored_escaped_not_refused_by_the_driver(any_jobs) -> None:
    """A reason naming a field whose name was invalid UTF-8 (decoded as a lone surrogate) could not be
    BSON-encoded: the write raised out of the pass and the job stayed claimed. Stored escaped, as \\xNN."""
    queue = WorkQueue(any_jobs, "me")
    queue.enqueue([("a", "ended"), ("b", "ended")])
    assert len(queue.claim_batch(60, 10)) == 2
    assert queue.quarantine("a", "chat.form\udcff: invalid UTF-8")
    assert queue.failed("b", "boom \ud800 \udc80", 60)
    a, b = any_jobs.find_one({"_id": "a"}), any_jobs.find_one({"_id": "b"})
    assert a["state"] == "quarantined" and a["reason"] == a["last_error"] == "chat.form\\xff: invalid UTF-8"
    assert b["state"] == "failed" and b["last_error"] == "boom \\ud800 \\x80"

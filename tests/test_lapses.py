"""Lapses (claims whose lease ran out) count deaths of the archiver, not passes that failed; chats to be
claimed alone are reached under `run --limit` too (mongomock, or a real MongoDB)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from archiver import claims
from archiver.index import ArchiveIndex
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from test_pipeline import archived_rooms, index_db, recent_ms, seed

BLIP = AutoReconnect("127.0.0.1:27017: connection closed (primary stepped down)")


def _leases_run_out(config: Any) -> None:
    """Time passes: every claim still held has its lease run out (nobody closed it)."""
    index_db(config)[config["index.jobs"]].update_many({"state": "claimed"}, {"$set": {"available_at": 0}})


def _failing_complete(monkeypatch: pytest.MonkeyPatch, outage: list[bool]) -> None:
    """MongoDB goes away just as a pass indexes what it built, while OUTAGE[0]."""
    real = ArchiveIndex.complete

    def complete(self: ArchiveIndex, *args: Any, **kwargs: Any) -> Any:
        if outage[0]:
            raise BLIP
        return real(self, *args, **kwargs)
    monkeypatch.setattr(ArchiveIndex, "complete", complete)


def test_passes_that_fail_on_a_mongodb_blip_hand_their_chats_back_and_never_quarantine_them(
        make_config, monkeypatch, caplog) -> None:
    """A pass that raised left its claims to lapse, and every lapse counted: after 2 + archive.max_attempts
    failed passes an ordinary chat was quarantined as 'killed by the operating system: out of memory?'."""
    config = make_config(archive__max_attempts=2)
    chat, contact = make_chat(random.Random(3), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    outage = [True]
    _failing_complete(monkeypatch, outage)
    jobs = index_db(config)[config["index.jobs"]]
    for _ in range(claims.ALONE_AFTER + config["archive.max_attempts"] + 1):
        with pytest.raises(AutoReconnect):
            Archiver(config).run_pass()  # a new process each time, as `archiver run`
        job = jobs.find_one({"_id": chat["room"]})
        assert (job["state"], job.get("lapses") or 0, job["attempts"]) == ("pending", 0, 0), "handed back, uncounted"
        _leases_run_out(config)
    assert {(r.fields["claims"], r.fields["after"]) for r in caplog.records if r.msg == "claims_released"} == {
        (1, "this pass failed")}
    outage[0] = False
    report = Archiver(config).run_pass()
    assert report.archived == 1 and not report.quarantined
    assert archived_rooms(config) == [chat["room"]]


class _Down:
    """The jobs collection while DOWN[0]: every write fails as if the database were unreachable."""

    def __init__(self, jobs: Any, down: list[bool]) -> None:
        self._jobs, self._down = jobs, down

    def update_many(self, *args: Any, **kwargs: Any) -> Any:
        if self._down[0]:
            raise BLIP
        return self._jobs.update_many(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)


def test_claims_a_failed_pass_could_not_hand_back_are_handed_back_by_the_next_pass_of_that_process(
        make_config, monkeypatch, caplog) -> None:
    """`serve` keeps its owner across passes: what a failed pass could not hand back (the database down) is
    handed back, uncounted, by its next pass; the failure to hand back is logged, the pass's own error raised."""
    config = make_config()
    chat, contact = make_chat(random.Random(5), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    down = [False]

    def complete(*args: Any, **kwargs: Any) -> Any:  # the database goes away as the pass indexes, and stays away
        down[0] = True
        raise BLIP
    monkeypatch.setattr(ArchiveIndex, "complete", complete)
    archiver = Archiver(config)
    archiver.queue.jobs = _Down(archiver.queue.jobs, down)
    with pytest.raises(AutoReconnect) as raised:
        archiver.run_pass()
    assert raised.value is BLIP, "the pass's own error, not the hand-back's"
    assert [r.fields["error"] for r in caplog.records if r.msg == "claims_not_released"] == [str(BLIP)]
    jobs = index_db(config)[config["index.jobs"]]
    assert jobs.find_one({"_id": chat["room"]})["state"] == "claimed", "the database was down: nothing written"
    _leases_run_out(config)
    down[0] = False
    monkeypatch.setattr(ArchiveIndex, "complete", lambda *a, **k: (_ for _ in ()).throw(BLIP))  # fails again
    with pytest.raises(AutoReconnect):
        archiver.run_pass()
    job = jobs.find_one({"_id": chat["room"]})
    assert (job["state"], job.get("lapses") or 0) == ("pending", 0), "its own claim handed back, not a lapse"


def test_a_claim_that_lapsed_under_another_owner_still_counts(make_config) -> None:
    """A pass hands back only its own process's claims: the lease of an archiver that died still counts."""
    config = make_config()
    chat, contact = make_chat(random.Random(6), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    archiver.discover()
    dead = claims.WorkQueue(index_db(config)[config["index.jobs"]], "dead-host:1:0")
    assert [j.room for j in dead.claim_batch(60, 10)] == [chat["room"]]
    _leases_run_out(config)
    assert archiver.run_pass().archived == 1
    entry = index_db(config)[config["index.entries"]].find_one({"room": chat["room"], "status": "archived"})
    assert entry["last_error"] == claims.LAPSED, "the dead archiver's lapse was counted"


def test_run_with_a_limit_reaches_the_chats_to_be_claimed_alone_while_a_backlog_lasts(make_config, caplog) -> None:
    """With `run --limit N`, a chat that must be claimed alone (an innocent batch-mate of one that killed the
    archiver, say) was claimed only once fewer than N chats were due: while a backlog lasted, never."""
    config = make_config()
    rng = random.Random(11)
    waiting = make_chat(rng, messages=3, start_ms=recent_ms(90))
    seed(config, [waiting])
    room = waiting[0]["room"]
    Archiver(config).discover()
    jobs = index_db(config)[config["index.jobs"]]
    jobs.update_one({"_id": room}, {"$set": {"state": "failed", "lapses": claims.ALONE_AFTER, "available_at": 0}})
    backlog = [make_chat(rng, messages=3, start_ms=recent_ms(60 - n)) for n in range(5)]
    seed(config, backlog)
    report = Archiver(config).run_pass(limit=3)
    assert report.archived == 3, "the limit holds"
    assert jobs.find_one({"_id": room})["state"] == "done", "the chat to be claimed alone was reached"
    assert [r.fields["room"] for r in caplog.records if r.msg == "claimed_alone"] == [room]
    assert len(archived_rooms(config)) == 3 and room in archived_rooms(config)
    assert Archiver(config).run_pass(limit=10).archived == 3, "the rest of the backlog next time"
    assert len(archived_rooms(config)) == 6


def test_a_limit_smaller_than_the_chats_to_be_claimed_alone_claims_only_those(make_config) -> None:
    config = make_config()
    rng = random.Random(12)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(90 - n)) for n in range(4)]
    seed(config, chats)
    Archiver(config).discover()
    jobs = index_db(config)[config["index.jobs"]]
    alone = [chats[0][0]["room"], chats[1][0]["room"]]
    jobs.update_many({"_id": {"$in": alone}}, {"$set": {"state": "failed", "lapses": claims.ALONE_AFTER}})
    assert Archiver(config).run_pass(limit=1).archived == 1
    assert Archiver(config).run_pass(limit=1).archived == 1
    assert sorted(archived_rooms(config)) == sorted(alone), "each run took one of them alone, within its limit"


def test_an_export_that_fails_on_a_mongodb_blip_hands_its_chat_back(make_config, monkeypatch) -> None:
    """An on-demand export's claim was left to lapse too, counted as a death of the archiver."""
    config = make_config()
    chat, contact = make_chat(random.Random(8), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    _failing_complete(monkeypatch, [True])
    with pytest.raises(AutoReconnect):
        Archiver(config).archive_room(chat["room"], "ended")
    job = index_db(config)[config["index.jobs"]].find_one({"_id": chat["room"]})
    assert (job["state"], job.get("lapses") or 0) == ("pending", 0)


def _too_large() -> Exception:
    from pymongo.errors import OperationFailure

    return OperationFailure("Resulting document after update is larger than 16777216", 17419)


@pytest.mark.parametrize("error", [RuntimeError("a bug in handling this chat"), FileNotFoundError(2, "gone"),
                                   _too_large()], ids=["bug", "oserror", "refused-write"])
def test_a_pass_that_fails_on_an_error_of_ours_leaves_its_claims_to_lapse(error, make_config, monkeypatch) -> None:
    """Only a passing outage hands claims back uncounted: a chat whose handling fails the same way every time (a
    bug, a write the server refuses) must still be isolated and quarantined, so a pass it ends leaves its claim
    to lapse, and the next pass of the same process (serve) does not hand it back either."""
    config = make_config()
    chat, contact = make_chat(random.Random(4), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])

    def bug(self, *args: Any, **kwargs: Any) -> Any:
        raise error
    monkeypatch.setattr(ArchiveIndex, "complete", bug)
    archiver = Archiver(config)
    with pytest.raises(type(error)):
        archiver.run_pass()
    jobs = index_db(config)[config["index.jobs"]]
    assert jobs.find_one({"_id": chat["room"]})["state"] == "claimed"
    monkeypatch.setattr(ArchiveIndex, "complete", lambda *a, **k: (_ for _ in ()).throw(BLIP))
    other = make_chat(random.Random(5), messages=4, start_ms=recent_ms(30))
    seed(config, [other])
    with pytest.raises(AutoReconnect):  # an outage now hands back its own claims, not the lapsing one
        archiver.run_pass()
    assert jobs.find_one({"_id": chat["room"]})["state"] == "claimed"
    assert jobs.find_one({"_id": other[0]["room"]})["state"] == "pending"
    monkeypatch.undo()
    archiver.run_pass(discover=False)  # the same process: its lease has not run out, the chat stays claimed
    assert jobs.find_one({"_id": chat["room"]})["state"] == "claimed"
    _leases_run_out(config)
    assert archiver.run_pass().archived == 1
    assert sorted(archived_rooms(config)) == sorted([chat["room"], other[0]["room"]])
    assert (jobs.find_one({"_id": chat["room"]}).get("lapses") or 0) == 0  # archived: the count starts again


def test_a_transient_database_error_is_an_outage() -> None:
    from pymongo.errors import NotPrimaryError, OperationFailure, ServerSelectionTimeoutError

    from archiver.pipeline import _outage

    retryable = OperationFailure("interrupted at shutdown", 11600, {"errorLabels": ["RetryableWriteError"]})
    assert all(_outage(e) for e in (BLIP, NotPrimaryError("stepped down"), ServerSelectionTimeoutError("none"),
                                    retryable, KeyboardInterrupt()))
    assert not any(_outage(e) for e in (_too_large(), RuntimeError("bug"), OSError(28, "No space left on device")))


def test_a_chat_claimed_afresh_after_its_claim_lapsed_is_handed_back_after_an_outage(make_config, monkeypatch) -> None:
    """A claim a bug left to lapse is kept back from hand-backs by its claim, not by its room: once it lapsed
    and the same process (serve) claimed the chat afresh, a pass that an outage ends hands the new claim back
    (it was kept back for good, left to lapse again and counted as another death of the archiver)."""
    config = make_config()
    chat, contact = make_chat(random.Random(5), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    monkeypatch.setattr(ArchiveIndex, "complete", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError):
        archiver.run_pass()  # left to lapse, as designed
    _leases_run_out(config)
    monkeypatch.setattr(ArchiveIndex, "complete", lambda *a, **k: (_ for _ in ()).throw(BLIP))
    with pytest.raises(AutoReconnect):
        archiver.run_pass()  # claims the chat afresh (the lapse counted once), then an outage ends the pass
    job = index_db(config)[config["index.jobs"]].find_one({"_id": chat["room"]})
    assert (job["state"], job.get("lapses")) == ("pending", 1), "the new claim handed back, uncounted"

"""A deletion run keeps its lease by time, however slow its plan or its steps, and stops once it lost it.

Another process (a second `retention run`, `serve`, another host) takes the run over once the lease has run out:
the first must never be deleting still by then. The lease is made short here, and the store slow.
"""

from __future__ import annotations

import time

import pytest

from archiver import runs
from archiver.retention import Deletions
from archiver.runs import RunBusy, RunLedger
from archiver.store.local import LocalStore
from retention_helpers import age, archive, index, retention, retention_config, source

LEASE_MS = 1_500


@pytest.fixture
def aged(make_config, monkeypatch):
    """Three rooms whose sources and archives are due: six steps (source, then archive, room by room)."""
    config = retention_config(make_config)
    archive(config, 3)
    age(config, 400)
    monkeypatch.setattr(runs, "LEASE_MS", LEASE_MS)
    return config


class Rival:
    """Another process that tries to take the run over each time the store is called (it can once the lease
    has run out), and what the first run deleted after it did."""

    def __init__(self, config) -> None:
        deletions = Deletions(config)
        self.ledger = RunLedger(deletions.ledger.runs, deletions.ledger.steps)
        self.took_over = False
        self.deleted_after: list[str] = []

    def try_now(self) -> None:
        if not self.took_over:
            try:
                self.ledger.acquire("retention")
                self.took_over = True
            except RunBusy:
                pass


def _slow(monkeypatch, method: str, rival: Rival, seconds) -> None:
    """LocalStore.METHOD sleeps SECONDS(call number) first, then the rival tries to take over."""
    real, calls = getattr(LocalStore, method), []

    def slow(self, key, *args, **kwargs):
        calls.append(key)
        time.sleep(seconds(len(calls)))
        if method == "delete" and rival.took_over:
            rival.deleted_after.append(key)
        rival.try_now()
        return real(self, key, *args, **kwargs)
    monkeypatch.setattr(LocalStore, method, slow)


def test_slow_steps_outlasting_the_lease_keep_it(aged, monkeypatch) -> None:
    """Each archive step takes 0.6 s (three objects, 0.2 s each), the six steps 1.8 s and more: past the lease."""
    rival = Rival(aged)
    _slow(monkeypatch, "delete", rival, lambda n: 0.2)
    result = retention(aged)
    assert not rival.took_over, "the lease ran out while the run was deleting"
    assert result.ok and source(aged).count_documents({}) == 0
    assert index(aged).count_documents({"status": "deleted"}) == 3


def test_a_slow_plan_outlasting_the_lease_keeps_it(aged, monkeypatch) -> None:
    """Planning reads each due room's archive back (three objects) before its source may go: 0.2 s an object."""
    rival = Rival(aged)
    _slow(monkeypatch, "get", rival, lambda n: 0.2)
    result = retention(aged)
    assert not rival.took_over, "the lease ran out while the run was planning"
    assert result.ok and source(aged).count_documents({}) == 0


def test_a_run_that_lost_its_lease_in_a_step_stops_and_the_other_finishes_it(aged, monkeypatch) -> None:
    """The first object deletion hangs past the lease, and another process takes the run over meanwhile: the
    first run finishes that step's deletion at most, deletes nothing of any other room, and stops (RunBusy);
    the run is left to the other process, which finishes it."""
    rival = Rival(aged)
    _slow(monkeypatch, "delete", rival, lambda n: LEASE_MS / 1000 + 0.3 if n == 1 else 0)
    with pytest.raises(RunBusy, match="taken over"):
        retention(aged)
    assert rival.took_over
    first = index(aged).find_one({"status": "deleted"})  # the one whose step was under way
    assert {key.split("/")[0] for key in rival.deleted_after} <= {first["objects"]["pdf"]["key"].split("/")[0]}
    assert index(aged).count_documents({"status": "deleted"}) == 1
    assert source(aged).count_documents({}) == 2, "the later rooms' sources were left to the other process"
    rival.ledger.release("retention")  # the other process, resuming the run
    monkeypatch.undo()
    result = retention(aged)
    assert result.resumed and result.ok and source(aged).count_documents({}) == 0
    assert index(aged).count_documents({"status": "deleted"}) == 3


@pytest.mark.parametrize("where", ["planning a step", "after the last step"])
def test_a_run_that_lost_its_lease_while_planning_deletes_nothing(aged, monkeypatch, where) -> None:
    rival = Rival(aged)
    if where == "planning a step":  # reading the first due room's archive back hangs
        _slow(monkeypatch, "get", rival, lambda n: LEASE_MS / 1000 + 0.3 if n == 1 else 0)
    else:  # the planner, every step yielded, goes on past the lease
        real = Deletions.plan_retention

        def plan(self, as_of):
            yield from real(self, as_of)
            time.sleep(LEASE_MS / 1000 + 0.3)
            rival.try_now()
        monkeypatch.setattr(Deletions, "plan_retention", plan)
    deleted = []
    monkeypatch.setattr(LocalStore, "delete", lambda self, key, *a: deleted.append(key))
    with pytest.raises(RunBusy, match="taken over"):
        retention(aged)
    assert rival.took_over and deleted == []
    assert source(aged).count_documents({}) == 3 and index(aged).count_documents({"status": "deleted"}) == 0
    planned = Deletions(aged).ledger.runs.find_one({"kind": "retention", "_id": {"$ne": runs.LEASE}})
    assert planned["state"] == "planning", "never marked executing: the next run drops this plan"
    rival.ledger.release("retention")
    monkeypatch.undo()
    result = retention(aged)
    assert not result.resumed and result.ok and source(aged).count_documents({}) == 0
    assert Deletions(aged).ledger.runs.find_one({"_id": planned["_id"]})["state"] == "abandoned while planning"


def test_a_slow_hold_repair_before_the_plan_keeps_the_lease(aged, monkeypatch) -> None:
    """The repair before a run is planned (`holds.sync`) reads the source chat of every archived room under a hold
    not by room, batch by batch: on a large archive it outlasts the lease. It keeps it (renewed per batch), so no
    other process takes the run over and the run is not left `planning` (review "today", finding 5)."""
    from archiver import holds as holds_module
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    open_holds(aged).place(SearchFilters(service="Nobody's service"), "Case S", "r", {"user": "l", "host": "h"})
    monkeypatch.setattr(holds_module, "ROOM_BATCH", 1)  # three batches of one room, each read slowly
    rival, real = Rival(aged), holds_module.SourceHolds.held

    def slow(self, rooms, holds):
        time.sleep(LEASE_MS / 3000 + 0.15)  # each batch longer than a third of the lease, all three past it
        rival.try_now()
        return real(self, rooms, holds)
    monkeypatch.setattr(holds_module.SourceHolds, "held", slow)
    result = retention(aged)
    assert not rival.took_over, "the lease ran out while the run repaired the legal holds"
    assert result.ok and source(aged).count_documents({}) == 0
    runs_left = Deletions(aged).ledger.runs.find({"kind": "retention", "_id": {"$ne": runs.LEASE}})
    assert [r["state"] for r in runs_left] == ["done"]


def test_a_run_that_lost_its_lease_in_the_hold_repair_stops_before_it_begins(aged, monkeypatch) -> None:
    """One batch of the repair hangs past the lease and another process takes it over: the run stops (RunBusy)
    before it begins, leaving no run `planning` and deleting nothing."""
    from archiver import holds as holds_module
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    open_holds(aged).place(SearchFilters(service="Nobody's service"), "Case S", "r", {"user": "l", "host": "h"})
    rival, real = Rival(aged), holds_module.SourceHolds.held

    def hangs(self, rooms, holds):
        time.sleep(LEASE_MS / 1000 + 0.3)
        rival.try_now()
        return real(self, rooms, holds)
    monkeypatch.setattr(holds_module.SourceHolds, "held", hangs)
    with pytest.raises(RunBusy, match="taken over"):
        retention(aged)
    assert rival.took_over
    assert list(Deletions(aged).ledger.runs.find({"kind": "retention", "_id": {"$ne": runs.LEASE}})) == []
    assert source(aged).count_documents({}) == 3 and index(aged).count_documents({"status": "deleted"}) == 0


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="CLOCK_BOOTTIME is Linux's")
def test_a_host_suspended_past_the_lease_notices_it_lost_it_before_its_next_step(make_config, monkeypatch) -> None:
    """The lease runs out on the server while the host sleeps (a suspended VM or laptop); time.monotonic does not
    count the sleep, so the run would go on deleting after another process took over. Its clock counts it (faked
    here: CLOCK_BOOTTIME runs LEASE_MS and a minute ahead, CLOCK_MONOTONIC does not): the next keep() checks
    the lease, finds it taken and stops (review "today", finding 7)."""
    ledger = Deletions(retention_config(make_config)).ledger
    ledger.acquire("retention")
    real, slept = time.clock_gettime, [0.0]
    monkeypatch.setattr(time, "clock_gettime", lambda clock: real(clock) + (
        slept[0] if clock == time.CLOCK_BOOTTIME else 0.0))
    ledger.keep()  # not a third of the lease yet: nothing asked
    slept[0] = runs.LEASE_MS / 1000 + 60
    ledger.runs.update_one({"_id": runs.LEASE}, {"$set": {"owner": "another-host:1:x"}})  # taken over meanwhile
    with pytest.raises(RunBusy, match="taken over"):
        ledger.keep()

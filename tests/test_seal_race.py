"""Several sealers at once (README: "start as many `serve` as you like"; each seals at schedule.seal) and a
sealer that dies or fails half-way: nothing reaches the store before the seal's number is owned, a sealer
that finds the day's seal being made by another skips it quietly, and whatever a sealer that died stored is
explained by its pending seal until the next seal run completes the day (docs/seals.md, "Several sealers").

Moved here from the ops review's reproduction (reports/ops-tests/test_two_serves_seal.py, finding 1)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest

from archiver import seals
from archiver.integrity import verify_archive
from archiver.jobs import Service
from archiver.mongo import connect, server_ms
from archiver.store import StoreError, open_store
from retrieval_helpers import archive_samples
from test_seals import DAY, backdate, seal_cli, seal_records, sealed_rooms

ACTOR = seals.Actor("test", "host")


def _seals(config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.seals"]]


@contextmanager
def _puts_then(config, monkeypatch, error: BaseException, suffix: str = ".p7s") -> Iterator[None]:
    """Each put of a key ending in SUFFIX stores its object, then raises ERROR (SystemExit: the process
    killed right there, no handler of ours runs)."""
    cls = type(open_store(config))
    real = cls.put

    def put(self, key, *args, **kwargs):
        stored = real(self, key, *args, **kwargs)
        if key.endswith(suffix):
            raise error
        return stored
    with monkeypatch.context() as patched:
        patched.setattr(cls, "put", put)
        yield


def _expire_pending(config) -> None:
    """As if the pending seal's maker stopped longer than its lease ago."""
    lease_ms = config["archive.lease_seconds"] * 1000
    assert _seals(config).update_many({"pending": {"$exists": True}},
                                      {"$inc": {"pending.at": -lease_ms - 1000}}).matched_count == 1


@pytest.fixture(params=["mongo_uri", "nx_uri"])
def any_uri(request) -> str:
    """The in-process stand-in (or a real MongoDB), and the wire-protocol server."""
    return request.getfixturevalue(request.param)


def test_two_serves_sealing_at_the_same_minute_one_seals_the_other_skips(make_config, any_uri, monkeypatch) -> None:
    config = make_config(mongodb__uri=any_uri)
    (entry,) = archive_samples(config, count=1)
    backdate(config)
    first, second = Service(config, threading.Event()), Service(config, threading.Event())
    together = threading.Barrier(2, timeout=10)
    leaves = seals.current_leaves

    def at_the_same_moment(entries, day, newest=None):  # both fired by the same cron minute: both have read the day
        if day == DAY.isoformat():
            together.wait()
        return leaves(entries, day, newest)
    monkeypatch.setattr(seals, "current_leaves", at_the_same_moment)
    threads = [threading.Thread(target=s.seal) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.undo()
    report = verify_archive(config, None)
    assert report.ok, [str(p) for p in report.problems][:3]
    assert (first.seal_error, second.seal_error) == ("", ""), (first.seal_error or second.seal_error)[:300]
    assert first.healthy() and second.healthy()
    ours = [r for r in seal_records(config) if r["day"] == DAY.isoformat()]
    assert [(r["seq"], r["count"]) for r in ours] == [(1, 1)] and "pending" not in ours[0]
    assert sealed_rooms(config) == [entry["room"]]  # (on nx-27017 its archived_at is text: sealed all the same)


def test_a_sealer_finding_the_days_seal_being_made_skips_it_quietly(make_config, tmp_path, capsys) -> None:
    config = make_config()
    day = DAY.isoformat()
    _seals(config).insert_one({"day": day, "seq": 1, "pending": {
        "owner": "elsewhere:1:abc", "at": server_ms(_seals(config).database), "folder": "~seals/x",
        "sealer": {"user": "u", "host": "elsewhere"}}})
    (outcome,) = seals.seal_days(config, [day], ACTOR)
    assert outcome.action == "skipped" and not outcome.problems and outcome.seal is None
    assert seal_cli(config, tmp_path, "seal", "--from", day, "--to", day) == 0
    out = capsys.readouterr().out
    assert f"{day}: skipped: seal 1 is being made by another sealer (elsewhere:1:abc" in out and "PROBLEM" not in out
    assert len(seal_records(config)) == 1  # still only the other's reservation
    assert seal_cli(config, tmp_path, "seal", "--from", day, "--to", day, "--json") == 0  # the reason there too
    (printed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed["action"] == "skipped" and printed["problems"] == [], printed
    assert printed["detail"].startswith("seal 1 is being made by another sealer (elsewhere:1:abc"), printed


def test_a_sealer_killed_while_storing_leaves_a_pending_seal_the_next_run_completes(make_config, any_uri, monkeypatch,
                                                                                      tmp_path, capsys) -> None:
    config = make_config(mongodb__uri=any_uri)
    (entry,) = archive_samples(config, count=1)
    backdate(config)
    day = DAY.isoformat()
    with _puts_then(config, monkeypatch, SystemExit("killed")), pytest.raises(SystemExit):
        seals.seal_days(config, [day], ACTOR)  # killed after storing the document and its signature
    # Its maker may still be at work (within its lease): its objects are explained, nothing is wrong yet,
    # and another sealer (a second serve) leaves the day to it without an error.
    report = verify_archive(config, None)
    assert report.ok and report.listed == 3 + 2, [str(p) for p in report.problems]
    service = Service(config, threading.Event())
    service.seal()  # the lookback days: six empty ones sealed, DAY skipped
    assert service.seal_error == "" and service.healthy()
    assert ["pending" in r for r in seal_records(config) if r["day"] == day] == [True]

    _expire_pending(config)  # its maker died: verify names the pending seal, its objects still explained
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert len(problems) == 1 and problems[0].startswith(f"seal {day}#1: left pending by a sealer that stopped "
                                                         "while making it"), problems
    assert "archiver seal --from" in problems[0]
    assert seal_cli(config, tmp_path, "verify", "--all") == 3
    assert f"PROBLEM seal {day}#1: left pending" in capsys.readouterr().out

    (outcome,) = seals.seal_days(config, [day], ACTOR)  # the next run completes the day's seal 1, and says so
    assert outcome.action == "sealed" and outcome.seal["seq"] == 1 and outcome.seal["count"] == 1
    assert str(outcome).startswith(f"{day}: sealed; completed seal 1, left pending by "), str(outcome)
    assert "kept as abandoned (seal 1: 1 entries" in str(outcome), str(outcome)
    (record,) = [r for r in seal_records(config) if r["day"] == day]
    assert "pending" not in record and sealed_rooms(config) == [entry["room"]]
    report = verify_archive(config, None)
    assert report.ok and report.seals == 7 and report.listed == 3 + 2 + 2 + 6 * 2, [str(p) for p in report.problems]
    assert seals.seal_days(config, [day], ACTOR)[0].action == "unchanged"


def test_a_seal_that_failed_while_storing_is_completed_by_the_next_run_at_once(make_config, monkeypatch) -> None:
    config = make_config()
    archive_samples(config, count=1)
    backdate(config)
    day = DAY.isoformat()
    with _puts_then(config, monkeypatch, StoreError("disk full"), suffix=".json"):
        (failed,) = seals.seal_days(config, [day], ACTOR)
    assert failed.action == "failed" and "disk full" in failed.problems[0]
    problems = [str(p) for p in verify_archive(config, None).problems]  # the document stored is explained
    assert len(problems) == 1 and problems[0].startswith(f"seal {day}#1: left pending") and "disk full" in problems[0]
    (outcome,) = seals.seal_days(config, [day], ACTOR)  # no lease to wait for: the failed sealer gave it up
    assert outcome.action == "sealed" and outcome.seal["seq"] == 1 and outcome.seal["count"] == 1
    report = verify_archive(config, None)
    assert report.ok and report.listed == 3 + 1 + 2, [str(p) for p in report.problems]


def test_a_failure_before_anything_is_stored_leaves_no_reservation(make_config, tsa) -> None:
    config = make_config(signing__timestamp_url=tsa.at("/garbage"))
    (outcome,) = seals.seal_days(config, [DAY.isoformat()], ACTOR)
    assert outcome.action == "failed" and seal_records(config) == []


def test_a_sealer_that_stalled_past_its_lease_is_taken_over_and_its_objects_stay_explained(make_config,
                                                                                             monkeypatch) -> None:
    config = make_config()
    archive_samples(config, count=1)
    backdate(config)
    day = DAY.isoformat()
    stalled, resume = threading.Event(), threading.Event()
    cls = type(open_store(config))
    real = cls.put

    def slow_put(self, key, *args, **kwargs):
        stored = real(self, key, *args, **kwargs)
        if threading.current_thread().name == "stalling" and key.endswith(".json"):
            stalled.set()
            resume.wait(30)
        return stored
    monkeypatch.setattr(cls, "put", slow_put)
    outcomes: list[seals.SealOutcome] = []
    first = threading.Thread(target=lambda: outcomes.extend(seals.seal_days(config, [day], ACTOR)), name="stalling")
    first.start()
    try:
        assert stalled.wait(30)
        _expire_pending(config)
        (taken,) = seals.seal_days(config, [day], ACTOR)  # another sealer takes the stalled one's seal over
        assert taken.action == "sealed" and taken.seal["seq"] == 1 and taken.seal["count"] == 1
    finally:
        resume.set()
        first.join(30)
    (late,) = outcomes
    assert late.action == "failed" and "another sealer took it over" in late.problems[0]
    report = verify_archive(config, None)
    assert report.ok and report.listed == 3 + 2 + 2, [str(p) for p in report.problems]
    assert [r["seq"] for r in seal_records(config) if r["day"] == day] == [1]

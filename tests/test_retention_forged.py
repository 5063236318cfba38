"""Runs forged in the index by an insider (write access to MongoDB and the store, no private key).

A tombstone must name a run this service planned and reported (its plan signed when it was recorded, its
report signed when it finished): a run record written by hand, finished or not, must neither make a deletion
look like retention's in `verify`, nor be resumed, executed and signed into a report by the next honest run
(review seal.md HIGH-3).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from archiver import seals
from archiver.cli import main
from archiver.integrity import verify_archive
from archiver.keys import create_development_keys
from archiver.mongo import connect
from archiver.retention import Deletions
from archiver.runs import LEASE, LEASE_MS, PlanNotSigned, RunLedger
from retention_helpers import age, archive, index, retention, retention_config, source
from retrieval_helpers import remove_stored, stored_path
from test_retention import ACTOR, _cli_toml
from test_retention_resume import _crash
from test_seals import seal_cli, sealed  # noqa: F401 (the sealed-day fixture)


def _db(config: Any):
    return connect(config["mongodb.uri"])[config["index.database"]]


def _runs(config: Any):
    return _db(config)[config["index.retention_runs"]]


def _steps(config: Any):
    return _db(config)[config["index.retention_steps"]]


def _forge_tombstone(config: Any, entry: dict[str, Any], run_id: str, at: dt.datetime, step: bool = True) -> None:
    """Turn ENTRY into a finished tombstone of RUN_ID (no key needed: every hash is computable), with a step of
    that run deleting it (unless not STEP), and remove its objects."""
    for obj in entry["objects"].values():
        remove_stored(config, obj["key"])
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "status": "deleted", **seals.tombstone_fields(entry, "10 years", at),
        "deletion": {"run": run_id, "rule": "10 years", "reason": "retention", "at": at, "state": "done",
                     "completed_at": at}}})
    if not step:
        return
    _steps(config).insert_one({
        "_id": f"{run_id}:000000001", "run": run_id, "seq": 1, "room": entry["room"], "version": entry["version"],
        "action": "delete_archive", "rule": "10 years", "reason": "retention", "state": "done",
        "outcome": "deleted", "entry_id": entry["_id"]})


NOW = dt.datetime.now(dt.timezone.utc)


@pytest.mark.parametrize("forged, named", [
    ({"kind": "forged", "state": "done"}, "of unknown kind 'forged'"),
    ({"kind": "retention", "state": "done", "as_of": NOW, "params": {}}, "marked done but has no signed report"),
    ({"kind": "erasure", "state": "executing", "as_of": NOW, "params": {}}, "no deletion run holds the lease"),
    ({"kind": "retention", "state": "planning", "as_of": NOW, "params": {}}, "none of its steps can have run"),
])
def test_a_tombstone_of_a_forged_run_is_named_by_verify(sealed, tmp_path, capsys, forged, named) -> None:  # noqa: F811
    """A sealed archive made a tombstone of a run record written by hand, with a step deleting it: its seal
    still recomputes (archived_leaf_sha256 needs no key) and its day of deletion is not sealed, so only the
    run can tell: it never reported (a signed report), or is not running (no lease)."""
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    run_id = "retention-20260101T000000-deadbeef"
    _runs(sealed).insert_one({"_id": run_id, **forged, "started_at": NOW})
    _forge_tombstone(sealed, victim, run_id, NOW)
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", "--all")
    out = capsys.readouterr().out
    assert code == 3, out
    assert f"{victim['room']} v{victim['version']}" in out and run_id in out and named in out, out
    capsys.readouterr()
    assert seal_cli(sealed, tmp_path, "verify", victim["room"]) == 3  # the room alone: the same check
    assert named in capsys.readouterr().out


def test_a_tombstone_of_an_unfinished_run_is_named_unless_a_run_holds_the_lease(make_config, monkeypatch) -> None:
    """A run killed after deleting archives, before marking its steps done: while a run holds the deletion
    lease its tombstones are its work in progress (the report comes at the end), not a problem; with none
    (nobody is finishing it) each is named, as with a lease set further ahead than any run sets it."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    _crash(config, monkeypatch, RunLedger, "done_all")
    run = _runs(config).find_one({"kind": "retention", "state": "executing"})
    assert index(config).count_documents({"status": "deleted", "deletion.state": "done"}) == 2
    report = verify_archive(config, None)
    named = [p for p in report.problems if run["_id"] in p.problem and "no deletion run holds the lease" in p.problem]
    assert len(named) == 2 and report.problem_count == 2, [str(p) for p in report.problems]
    now_ms = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    _runs(config).insert_one({"_id": LEASE, "owner": "elsewhere:1:x", "until_ms": now_ms + LEASE_MS // 2,
                              "kind": "retention"})
    report = verify_archive(config, None)
    assert report.ok, [str(p) for p in report.problems]
    _runs(config).update_one({"_id": LEASE}, {"$set": {"until_ms": now_ms + 100 * LEASE_MS}})
    report = verify_archive(config, None)
    assert report.problem_count == 2 and all("further ahead than a run sets it" in p.problem
                                             for p in report.problems), [str(p) for p in report.problems]
    _runs(config).delete_one({"_id": LEASE})
    result = retention(config)  # the run is finished: its tombstones are no problem
    assert result.resumed and result.ok and verify_archive(config, None).ok


def _forged_unfinished_run(config: Any, victim: dict[str, Any], **extra: Any) -> str:
    """The attacker's run in state 'reporting' (nobody finishing it), whose one step deleted VICTIM."""
    run_id = f"retention-{NOW:%Y%m%dT%H%M%S}-0badc0de"
    _runs(config).insert_one({"_id": run_id, "kind": "retention", "state": "reporting", "as_of": NOW,
                              "started_at": NOW, "params": {}, "owner": "x", "steps": 1, **extra})
    _forge_tombstone(config, victim, run_id, NOW)
    return run_id


def _assert_refused_and_nothing_deleted(config: Any, run_id: str, tmp_path: Any, capsys: Any,
                                        trust: list[Any] | None = None) -> None:
    with pytest.raises(PlanNotSigned, match=f"run {run_id} was not planned by this service"):
        retention(config)
    capsys.readouterr()
    assert main(["--config", str(_cli_toml(config, tmp_path)), "retention", "run"]) == 1
    err = capsys.readouterr().err
    assert f"run {run_id} was not planned by this service" in err and "nothing done" in err, err
    run = _runs(config).find_one({"_id": run_id})
    assert run["state"] == "reporting" and "report" not in run  # never signed into a report, nor finished
    assert source(config).count_documents({}) == 2  # due, yet nothing deleted
    assert index(config).count_documents({"status": "archived"}) == 1
    report = verify_archive(config, None, trust=trust)
    assert not report.ok
    assert any(run_id in p.problem and "not planned by this service" in p.problem for p in report.problems), \
        [str(p) for p in report.problems]


def test_a_forged_unfinished_run_is_refused_not_signed_into_a_report_by_the_next_honest_run(
        make_config, tmp_path, capsys) -> None:
    """HIGH-3b: the next honest `archiver retention run` took the forged run for its own interrupted one, signed
    its step into a report and the audit log and marked it done: verify was then clean. Now it refuses it
    (exit 1, the run named), deletes nothing (though the rest is due), and verify names the run."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)  # everything is due: a run that went on would delete it
    victim = index(config).find_one({}, sort=[("room", 1)])
    run_id = _forged_unfinished_run(config, victim)
    _assert_refused_and_nothing_deleted(config, run_id, tmp_path, capsys)


def test_a_forged_run_with_a_plan_signed_by_another_key_is_refused(make_config, tmp_path, capsys) -> None:
    """The attacker signs the forged plan with keys of their own (`archiver keys init`): a resumed plan must be
    signed by this service's own signing certificate. `verify`, which holds no key, checks a plan's signer as a
    report's (the certificate the run records; with --ca, chaining to it): without trust anchors it names the
    tombstone (no run holds the lease), with them the plan too."""
    from archiver.runs import plan_statement
    from archiver.signing import Signer, load_identity

    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    victim = index(config).find_one({}, sort=[("room", 1)])
    run_id = _forged_unfinished_run(config, victim)
    evil = create_development_keys(tmp_path / "evil")
    signer = Signer(load_identity(str(evil["signing.crt.pem"]), str(evil["signing.key.pem"])), "", 60)
    run = _runs(config).find_one({"_id": run_id})
    statement, digest = plan_statement(run, _steps(config))
    _runs(config).update_one({"_id": run_id}, {"$set": {"plan": {
        "steps": 1, "sha256": digest, "signature": signer.sign_detached(statement),
        "signed_by": signer.identity.fingerprint}}})
    ca = x509.load_pem_x509_certificate(Path(config["signing.certificate"]).with_name("ca.crt.pem").read_bytes())
    _assert_refused_and_nothing_deleted(config, run_id, tmp_path, capsys, trust=[ca])
    report = verify_archive(config, None)
    assert any(victim["room"] == p.room and "no deletion run holds the lease" in p.problem for p in report.problems), \
        [str(p) for p in report.problems]


def _interrupted_run(config, monkeypatch) -> tuple[dict, dict, dict]:
    """Two chats archived, the older one due: a genuine run killed before it executed. Both entries and the run."""
    archive(config, 2)
    old, young = sorted(index(config).find(), key=lambda e: e["room"])
    age(config, 400, room=old["room"])
    _crash(config, monkeypatch, Deletions, "_execute")
    return old, young, _runs(config).find_one({"kind": "retention", "state": "executing"})


def test_a_step_of_an_interrupted_run_edited_to_another_archive_is_refused(make_config, monkeypatch, tmp_path,
                                                                           capsys) -> None:
    """A genuine run killed before it executed; the insider points its pending deletion of one archive at
    another, which no rule makes due: the resumed run refuses the changed plan, deleting nothing."""
    config = retention_config(make_config)
    old, young, run = _interrupted_run(config, monkeypatch)
    assert run["plan"]["steps"] == _steps(config).count_documents({"run": run["_id"]})
    edited = _steps(config).update_one({"run": run["_id"], "action": "delete_archive", "room": old["room"]}, {
        "$set": {"room": young["room"], "entry_id": young["_id"]}})
    assert edited.modified_count == 1
    with pytest.raises(PlanNotSigned, match=f"run {run['_id']} was not planned by this service: its steps"):
        retention(config)
    assert index(config).count_documents({"status": "archived"}) == 2
    assert all(stored_path(config, o["key"]).exists() for e in index(config).find() for o in e["objects"].values())
    report = verify_archive(config, None)
    assert any(run["_id"] in p.problem and "its steps" in p.problem for p in report.problems), \
        [str(p) for p in report.problems]


def test_a_genuine_interrupted_run_is_resumed_and_its_plan_verifies(make_config, monkeypatch) -> None:
    """The signed plan does not get in the way of an honest resume; verify checks every run's plan."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    _crash(config, monkeypatch, Deletions, "_execute")
    result = retention(config)
    assert result.resumed and result.ok
    assert index(config).count_documents({"status": "deleted"}) == 2
    report = verify_archive(config, None)
    assert report.ok, [str(p) for p in report.problems]


def test_verify_names_a_finished_run_whose_planned_step_was_edited(make_config) -> None:
    """A field of a finished run's step that its report does not show (the entry it acted on) edited: the
    report still matches the steps, the signed plan does not."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    result = retention(config)
    assert result.ok and verify_archive(config, None).ok
    other = index(config).find_one({}, sort=[("room", -1)])
    _steps(config).update_one({"run": result.report["run"], "action": "delete_archive"},
                              {"$set": {"entry_id": other["_id"]}})
    report = verify_archive(config, None)
    assert any(result.report["run"] in p.problem and "differ from its signed plan" in p.problem
               for p in report.problems), [str(p) for p in report.problems]


def test_a_tombstone_begun_by_hand_is_not_finished_by_the_next_run(make_config) -> None:
    """An archive marked 'deleting' by hand, naming a real run that never planned to delete it: the next run
    used to finish the deletion ("finishing the deletion run X began") and sign it into its report. It keeps
    it, saying why, and verify names the tombstone."""
    config = retention_config(make_config)
    a, b = archive(config, 2)
    age(config, 400, room=a["room"])
    first = retention(config)
    assert first.ok and index(config).find_one({"room": a["room"]})["status"] == "deleted"
    victim = index(config).find_one({"room": b["room"]})
    index(config).update_one({"_id": victim["_id"]}, {"$set": {
        "status": "deleted", **seals.tombstone_fields(victim, "default", NOW),
        "deletion": {"run": first.report["run"], "rule": "default", "reason": "x", "at": NOW, "state": "deleting"}}})
    result = retention(config)
    (item,) = [i for i in result.report["items"] if i["room"] == b["room"]]
    assert item["action"] == "skip" and f"names run {first.report['run']}, which has no step deleting it" in \
        item["reason"], item
    assert all(stored_path(config, o["key"]).exists() for o in victim["objects"].values())
    problems = verify_archive(config, None).problems
    assert any(p.room == b["room"] and "no step deleting" in p.problem for p in problems), \
        [str(p) for p in problems]


def test_a_skip_made_pending_by_hand_fails_instead_of_deleting(make_config, monkeypatch) -> None:
    """A step's state is not signed (execution changes it): a `skip` of an interrupted run made pending by hand
    was executed as an archive deletion of its entry (kept only by the checks that deletion makes: here its
    source chat still there). It fails, naming the edit, and deletes nothing."""
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config)
    a, _ = archive(config, 2)
    age(config, 400)
    open_holds(config).place(SearchFilters(room=a["room"]), "Case S", "litigation", ACTOR)
    _crash(config, monkeypatch, Deletions, "_execute")
    run = _runs(config).find_one({"kind": "retention", "state": "executing"})
    skips = _steps(config).update_many({"run": run["_id"], "room": a["room"], "action": "skip"},
                                       {"$set": {"state": "pending", "outcome": ""}})
    assert skips.modified_count >= 1
    open_holds(config).release("Case S", "settled", ACTOR)  # nothing would keep it now but the plan
    result = retention(config)
    edited = [i for i in result.report["items"] if i["room"] == a["room"]]
    assert edited and all(i["outcome"] == "failed" and "the step was edited" in i["detail"] for i in edited), edited
    assert index(config).find_one({"room": a["room"]})["status"] == "archived"
    assert source(config).count_documents({"room": a["room"]}) == 1


def test_a_forged_finished_run_naming_another_runs_report_is_named(make_config) -> None:
    """A run marked done whose report location is an honest run's (signed, stored, and its steps copied):
    the report is that other run's, and verify --all says so."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    honest = retention(config)
    run = _runs(config).find_one({"_id": honest.report["run"]})
    forged = "retention-20260101T000000-c0ffee00"
    _runs(config).insert_one({**run, "_id": forged})
    for step in _steps(config).find({"run": run["_id"]}):
        _steps(config).insert_one({**step, "_id": step["_id"].replace(run["_id"], forged), "run": forged})
    report = verify_archive(config, None)
    assert any(p.subject == f"run report {forged}" and f"is the report of run {run['_id']!r}" in p.problem
               for p in report.problems), [str(p) for p in report.problems]


def _step_outside_the_plan(config: Any, run_id: str, entry: dict[str, Any], **fields: Any) -> None:
    """A step naming RUN_ID under an `_id` that is not one of its steps' (`<run>:<seq>`): written by hand."""
    _steps(config).insert_one({"_id": f"forged-{entry['room']}", "run": run_id, "seq": 1, "room": entry["room"],
                               "version": entry["version"], "action": "delete_archive", "rule": "default",
                               "reason": "x", "entry_id": entry["_id"], **fields})


def test_a_step_added_outside_an_interrupted_runs_plan_is_not_executed(make_config, monkeypatch) -> None:
    """The plan is the run's steps by `_id` (what is hashed, signed and reported): a step naming the run under
    another `_id` passed the plan's check and was executed by the resumed run."""
    config = retention_config(make_config)
    old, young, run = _interrupted_run(config, monkeypatch)
    _step_outside_the_plan(config, run["_id"], young, state="pending", outcome="")
    source(config).delete_one({"room": young["room"]})  # else its archive is kept for its source anyway
    result = retention(config)
    assert result.resumed and young["room"] not in {i["room"] for i in result.report["items"]}
    assert index(config).find_one({"_id": young["_id"]})["status"] == "archived"
    assert all(stored_path(config, o["key"]).exists() for o in young["objects"].values())


def test_a_tombstone_naming_a_finished_run_by_a_step_outside_its_plan_is_named(make_config) -> None:
    """An archive removed, its entry made a done tombstone of an honest finished run, and a step 'deleted' of
    that run written beside its steps (under another `_id`: the report and plan compare the run's steps by
    `_id`): verify used to find the step and pass."""
    config = retention_config(make_config)
    a, b = archive(config, 2)
    age(config, 400, room=a["room"])
    run = retention(config)
    victim = index(config).find_one({"room": b["room"]})
    _forge_tombstone(config, victim, run.report["run"], NOW, step=False)
    _step_outside_the_plan(config, run.report["run"], victim, state="done", outcome="deleted")
    problems = verify_archive(config, None).problems
    assert any(p.room == b["room"] and "no step deleting" in p.problem for p in problems), \
        [str(p) for p in problems]

"""Retention runs resumed after a crash: under a policy changed meanwhile, and what a resumed run kept.

A crash is simulated by raising a BaseException from the step it cuts short (nothing after it runs, as
with SIGKILL; tests/test_retention_crash.py kills a real process).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from archiver.envelope import RecipientKey
from archiver.holds import open_holds
from archiver.integrity import verify_archive
from archiver.retention import Deletions
from archiver.search import SearchFilters
from archiver.store.local import LocalStore
from retention_helpers import age, archive, index, retention, retention_config, source
from retrieval_helpers import audit, overwrite_stored, remove_stored, run_cli, stored_path


class Killed(BaseException):
    """The process dies here."""


def _killed_in(monkeypatch: Any, owner: Any, name: str) -> None:
    def killed(*args: Any, **kwargs: Any) -> None:
        raise Killed()
    monkeypatch.setattr(owner, name, killed)


def _crash(config: Any, monkeypatch: Any, owner: Any, name: str) -> None:
    """A retention run killed at OWNER.NAME."""
    with monkeypatch.context() as patched:
        _killed_in(patched, owner, name)
        with pytest.raises(Killed):
            retention(config)


def _stored_report(config: Any, result: Any) -> dict[str, Any]:
    return json.loads(stored_path(config, result.location["key"]).read_bytes())


def _items(report: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [i for i in report["items"] if i["action"] == action]


def _runs(config: Any):
    from archiver.mongo import connect
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]


# -- a run resumed under a changed policy ------------------------------------------------------------------

def test_a_run_resumed_after_archive_days_were_lengthened_keeps_the_archives_and_reports_its_own_policy(
        make_config, monkeypatch) -> None:
    """Planned under archive_days 365, killed before any step, resumed under 3650: the archives are no
    longer due, so they stay (each item says why); the source chats (source_days 30, still due) go; the
    signed report states the policy the plan was made under, which its items' reasons quote."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    _crash(config, monkeypatch, Deletions, "_execute")
    longer = retention_config(make_config, retention__rules={"default": {"source_days": 30, "archive_days": 3650}})
    result = retention(longer)
    assert result.resumed and result.ok
    report = _stored_report(longer, result)
    assert report["policy"][0]["archive_days"] == 365
    archives = _items(report, "delete_archive")
    assert len(archives) == 2 and all("archive_days 365 passed" in i["reason"] for i in archives)
    assert {i["outcome"] for i in archives} == {"skipped"}
    assert all("today's policy" in i["detail"] and "archive_days 3650" in i["detail"] for i in archives), archives
    assert {i["outcome"] for i in _items(report, "delete_source")} == {"deleted"}
    assert source(longer).count_documents({}) == 0
    kept = list(index(longer).find())
    assert [e["status"] for e in kept] == ["archived", "archived"]
    assert all(stored_path(longer, o["key"]).exists() for e in kept for o in e["objects"].values())
    assert verify_archive(longer, None).ok


def test_a_run_resumed_after_source_days_were_lengthened_keeps_the_source_chats(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    _crash(config, monkeypatch, Deletions, "_execute")
    longer = retention_config(make_config, retention__rules={"default": {"source_days": 500, "archive_days": 3650}})
    report = _stored_report(longer, retention(longer))
    sources = _items(report, "delete_source")
    assert len(sources) == 2 and {i["outcome"] for i in sources} == {"skipped"}
    assert all("source_days 500" in i["detail"] for i in sources), sources
    assert source(longer).count_documents({}) == 2
    assert index(longer).count_documents({"status": "archived"}) == 2


def test_a_run_resumed_under_an_unchanged_policy_deletes_as_planned(make_config, monkeypatch) -> None:
    """The check that skips what today's policy keeps does not skip what it makes due."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    _crash(config, monkeypatch, Deletions, "_execute")
    result = retention(retention_config(make_config))
    assert result.resumed and result.report["counts"] == {
        "default": {"delete_source:deleted": 2, "delete_archive:deleted": 2}}
    assert index(config).count_documents({"status": "deleted"}) == 2


def test_the_policy_is_recorded_in_the_run_when_it_begins(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    archive(config, 1)
    age(config, 400)
    _crash(config, monkeypatch, Deletions, "_execute")
    run = _runs(config).find_one({"kind": "retention", "state": "executing"})
    assert run["policy"] == Deletions(config).policy.describe()


def test_a_run_killed_after_its_report_was_stored_finishes_under_a_changed_policy(make_config, monkeypatch) -> None:
    """Killed after the report is stored, before its audit entry; the policy then changes. The next run
    stores the same report (the run's recorded policy) and writes the audit entry; later runs start."""
    config = retention_config(make_config)
    archive(config, 1)
    age(config, 40)
    _crash(config, monkeypatch, Deletions, "_audit")
    run = _runs(config).find_one({"kind": "retention", "state": "reporting"})
    stored = stored_path(config, run["report"]["key"]).read_bytes()
    changed = retention_config(make_config, retention__rules={"default": {"source_days": 30, "archive_days": 400}})
    result = retention(changed)
    assert result.resumed and result.ok and result.report["run"] == run["_id"]
    assert stored_path(config, run["report"]["key"]).read_bytes() == stored
    assert _runs(config).find_one({"_id": run["_id"]})["state"] == "done"
    entries = [e for e in audit(config) if e["action"] == "retention_run"]
    assert [e["filters"]["run"] for e in entries] == [run["_id"]]
    assert not retention(changed).resumed  # the next run is a new one


def _sign_plan_again(config: Any, run_id: str) -> None:
    """Sign RUN_ID's plan over its run document as it is now (as if it had been planned so)."""
    from bson import Binary

    from archiver.runs import plan_statement

    deletions = Deletions(config)
    statement, digest = plan_statement(_runs(config).find_one({"_id": run_id}), deletions.ledger.steps)
    _runs(config).update_one({"_id": run_id}, {"$set": {"plan.sha256": digest,
                                                        "plan.signature": Binary(deletions.signer().sign_detached(
                                                            statement))}})


def test_a_run_begun_before_runs_recorded_their_policy_finishes_with_its_stored_reports_policy(
        make_config, monkeypatch) -> None:
    """A run document without `policy` (begun by an earlier release), its report stored: resumed under a
    changed policy, it stores the same report (the policy its stored report states) and finishes."""
    config = retention_config(make_config)
    archive(config, 1)
    age(config, 40)
    _crash(config, monkeypatch, Deletions, "_audit")
    run = _runs(config).find_one({"kind": "retention", "state": "reporting"})
    _runs(config).update_one({"_id": run["_id"]}, {"$unset": {"policy": ""}})
    _sign_plan_again(config, run["_id"])  # as planned without a policy (RunLedger.begin without one)
    changed = retention_config(make_config, retention__rules={"default": {"source_days": 30, "archive_days": 400}})
    result = retention(changed)
    assert result.resumed and result.ok
    assert result.report["policy"][0]["archive_days"] == 365
    assert _runs(config).find_one({"_id": run["_id"]})["state"] == "done"


# -- a held room whose deletion a crash cut short ----------------------------------------------------------

def _unlink(config: Any, entry: dict[str, Any], names: Any) -> None:
    for name in names:
        remove_stored(config, entry["objects"][name]["key"])


def _held_after_cut_short(make_config: Any, monkeypatch: Any, removed: tuple[str, ...] = ()
                          ) -> tuple[Any, dict[str, Any], Any]:
    """A run killed after the tombstone, before the first object went (or after REMOVED, the first objects in
    retention's order, went); the room then held; the run resumed."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    age(config, 400)
    _crash(config, monkeypatch, LocalStore, "delete")
    _unlink(config, index(config).find_one(), removed)
    open_holds(config).place(SearchFilters(room=chat["room"]), "Subpoena 7", "court order", {"user": "legal", "host": "h"})
    result = retention(config)
    assert result.resumed
    return config, chat, result


def test_a_held_room_whose_deletion_was_cut_short_is_retrieved_with_a_note(make_config, keys, monkeypatch,
                                                                            tmp_path, capsys) -> None:
    config, chat, result = _held_after_cut_short(make_config, monkeypatch)
    kept = [i for i in result.report["items"] if i["action"] == "delete_archive"]
    assert [i["outcome"] for i in kept] == ["skipped"] and "Subpoena 7" in kept[0]["detail"]  # the report says why
    entry = index(config).find_one()
    assert (entry["status"], entry["deletion"]["state"]) == ("deleted", "deleting")  # the audit trail stays
    age(config, -400)  # its real times back (aging made it due): the signed record's generated_at agrees again
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "Subpoena 7")
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(next((tmp_path / "out").glob("*-v1/verification.json")).read_text())
    assert report["ok"] and report["note"].startswith("its deletion, begun by run " + entry["deletion"]["run"])
    assert "Subpoena 7" in report["note"] and "Subpoena 7" in out.out
    assert any(c["check"].startswith("sealed") or "SHA-256" in c["check"] for c in report["checks"])
    assert index(config).find_one()["status"] == "deleted"  # retrieval changes nothing
    # a case bundle takes it too, with the same note: tests/test_bundle.py


def test_verify_names_a_held_room_whose_deletion_was_cut_short_as_kept_not_as_a_problem(make_config, keys, monkeypatch,
                                                                                        tmp_path, capsys) -> None:
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    report = verify_archive(config, None)
    assert report.ok, report.problems
    assert report.tombstones == 1 and report.objects == 3
    assert len(report.kept) == 1 and "Subpoena 7" in report.kept[0] and chat["room"] in report.kept[0]
    assert verify_archive(config, [chat["room"]]).ok
    capsys.readouterr()
    assert run_cli(config, tmp_path, "verify", "--all") == 0
    out = capsys.readouterr().out
    assert f"KEPT {chat['room']} v1: its deletion, begun by run" in out and "Subpoena 7" in out, out
    age(config, -400)  # its real times back (aging made it due): the signed record's generated_at agrees again
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    for workers in (1, 2):  # content checked here, and in a worker process
        keyed = verify_archive(config, None, key, workers=workers)
        assert keyed.ok and len(keyed.kept) == 1 and keyed.objects == 3, keyed.problems


def _steps(config: Any):
    from archiver.mongo import connect
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_steps"]]


def test_a_held_cut_short_deletion_with_an_object_gone_since_it_was_kept_is_held_evidence_removed(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """The run records on its skipped step which objects were stored when it kept the version: the pdf
    (retention's first) gone since is not the deletion's doing but removal of held evidence (exit 3)."""
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    entry = index(config).find_one()
    run = entry["deletion"]["run"]
    (step,) = _steps(config).find({"run": run, "entry_id": entry["_id"]})
    assert step["outcome"] == "skipped" and step["kept_objects"] == ["pdf", "record", "record_signature"], step
    _unlink(config, entry, ["pdf"])
    report = verify_archive(config, None)
    assert not report.ok and report.kept == []
    assert any(f"pdf missing: removed after run {run} kept it" in p.problem for p in report.problems), report.problems
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 3 and f"removed after run {run} kept it" in err and "being deleted" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_held_cut_short_deletion_missing_only_what_its_deletion_removed_is_being_deleted(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """The crash came after the pdf went: the step records the other two as kept, and the pdf missing is the
    deletion's doing ("being deleted", exit 1; `verify`: the unfinished deletion), not tampering."""
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch, removed=("pdf",))
    entry = index(config).find_one()
    (step,) = _steps(config).find({"run": entry["deletion"]["run"], "entry_id": entry["_id"]})
    assert step["kept_objects"] == ["record", "record_signature"], step
    report = verify_archive(config, None)
    assert not report.ok and any("is not finished" in p.problem for p in report.problems), report.problems
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "Subpoena 7")
    err = capsys.readouterr().err
    assert code == 1 and "being deleted" in err and "removed after" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_kept_version_whose_step_predates_kept_objects_reads_a_missing_first_object_as_being_deleted(
        make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """A step recorded before runs recorded `kept_objects`: which objects were there is unknown, so the first
    in retention's order missing reads as the deletion's doing, as before."""
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    entry = index(config).find_one()
    assert _steps(config).update_many({"run": entry["deletion"]["run"]}, {"$unset": {"kept_objects": ""}}).matched_count
    _unlink(config, entry, ["pdf"])
    report = verify_archive(config, None)
    assert not report.ok and any("is not finished" in p.problem for p in report.problems), report.problems
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "Subpoena 7")
    assert code == 1 and "being deleted" in capsys.readouterr().err


def test_verify_names_the_altered_object_of_a_kept_version(make_config, keys, monkeypatch, tmp_path, capsys) -> None:
    """An object of a kept version present with other bytes is tampering with held evidence: `verify` names the
    object and its size and SHA-256 (as for an archived version), not only that the deletion is unfinished."""
    config, chat, _ = _held_after_cut_short(make_config, monkeypatch)
    key = index(config).find_one()["objects"]["record"]["key"]
    overwrite_stored(config, key, b"tampered")
    report = verify_archive(config, None)
    assert not report.ok and report.kept == []
    assert any(f"stored object {key} has the recorded size and SHA-256" in p.problem and "altered: size 8" in p.problem
               for p in report.problems), report.problems
    capsys.readouterr()
    assert run_cli(config, tmp_path, "verify", "--all") == 3
    assert "altered: size 8" in capsys.readouterr().out


def test_a_deletion_cut_short_whose_run_is_not_finished_is_not_served(make_config, keys, monkeypatch,
                                                                      tmp_path, capsys) -> None:
    """Before the run is resumed, the tombstone is the run's intent: being deleted, not retrievable."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    age(config, 400)
    _crash(config, monkeypatch, LocalStore, "delete")
    capsys.readouterr()
    code = run_cli(config, tmp_path, "retrieve", chat["room"], "--key", str(keys["legal.key.pem"]),
                   "--out", str(tmp_path / "out"), "--reason", "check")
    assert code == 1 and "being deleted by run" in capsys.readouterr().err
    assert not verify_archive(config, None).ok


def test_on_s3_a_held_cut_short_deletion_keeps_its_legal_holds_and_is_retrieved(make_config, bucket, moto_endpoint,
                                                                                 keys, monkeypatch, tmp_path) -> None:
    """The same on S3 (moto over HTTP): each object is read by its recorded version id (under the S3 legal hold
    the placed hold set on them)."""
    from archiver.retrieval import Request, retrieve
    from archiver.audit import Actor
    from archiver.store.s3 import S3Store

    config = retention_config(make_config, storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint)
    (chat,) = archive(config, 1)
    age(config, 400)
    _crash(config, monkeypatch, S3Store, "delete")
    holds = open_holds(config)
    holds.place(SearchFilters(room=chat["room"]), "Subpoena 7", "court order", {"user": "legal", "host": "h"})
    assert holds.protect([chat["room"]], Deletions(config).store_of) == 1  # what `hold place` does next
    assert retention(config).resumed
    report = verify_archive(config, None)
    assert report.ok and len(report.kept) == 1 and report.objects == 3, report.problems
    age(config, -400)  # its real times back (aging made it due): the signed record's generated_at agrees again
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    folder = retrieve(config, Request(chat["room"], key, tmp_path / "out", "Subpoena 7", Actor("legal", "h")))
    written = json.loads((folder / "verification.json").read_text())
    assert written["ok"] and "Subpoena 7" in written["note"]
    assert index(config).find_one()["deletion"]["state"] == "deleting"

"""Retention runs: nothing deleted early, unverified, held or changed; tombstones; dry run; reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from archiver.cli import main
from archiver.config import ConfigError, load
from archiver.holds import open_holds
from archiver.integrity import verify_archive
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.policy import PolicyError, parse_policy
from archiver.search import SearchFilters
from archiver.store import open_store
from conftest import REAL_MONGO, require_tool, write_toml
from retention_helpers import (age, agent_of, archive, customer_of, erase, index, jobs, outcomes, retention,
                               retention_config, source, undecodable)
from retrieval_helpers import audit, overwrite_stored, stored_path

ACTOR = {"user": "tester", "host": "test"}


# -- the policy --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rules, named", [
    ({"a": {"channel": "web", "source_days": 10, "archive_days": 3650},
      "b": {"service": "Billing", "source_days": 20, "archive_days": 3650}}, "retention.rules.a and retention.rules.b"),
    ({"a": {"source_days": -1, "archive_days": 100}}, "retention.rules.a.source_days"),
    ({"a": {"source_days": 1, "archive_days": 100_000}}, "retention.rules.a.archive_days"),
    ({"a": {"source_days": 1, "archive_days": 30}}, "retention.rules.a.archive_days"),  # lock 3650 days
    ({"a": {"source_days": 400, "archive_days": 3650}}, None),
    ({"a": {"source_days": 4000, "archive_days": 3650}}, "retention.rules.a.source_days"),
    ({"a": {"archive_days": 3650}}, "retention.rules.a.source_days"),
    ({"a": {"chanel": "web", "source_days": 1}}, "retention.rules.a.chanel"),
    ({"a": {"source_days": 1}, "b": {"source_days": 2}}, "'a', 'b' are all defaults"),
    ({"a": {"source_days": "30"}}, "retention.rules.a.source_days"),
    ({"a": {"channel": [], "source_days": 3}}, "retention.rules.a.channel"),
    ({"a": {"source_days": 0, "archive_days": 0}}, "retention.rules.a.archive_days: must be at least 1"),
    # a retain-until of the archive's own time is past when it is PUT: AWS refuses it, every archive would fail
    ({"a": {"source_days": 1, "archive_days": 100, "lock_days": 0}},
     "retention.rules.a.lock_days: must be at least 1 day with storage.object_lock_mode set"),
    ({"a": {"source_days": 1, "archive_days": 100, "lock_days": 200}},
     "retention.rules.a.archive_days: 100 days is shorter than the Object Lock retain-until (200 days, "
     "from lock_days)"),
    ({"a": {"source_days": 1.5, "archive_days": 3650}}, "retention.rules.a.source_days: must be a whole number"),
    ({"a": {"source_days": 1, "archive_days": 3650.0}}, "retention.rules.a.archive_days: must be a whole number"),
])
def test_contradictory_or_absurd_policies_are_rejected_naming_rule_and_key(rules, named) -> None:
    if named is None:
        assert parse_policy(rules, 3650, "COMPLIANCE").rules[0].name == "a"
        return
    with pytest.raises(PolicyError) as caught:
        parse_policy(rules, 3650, "COMPLIANCE")
    assert named in str(caught.value)


def test_lock_days_without_object_lock_is_rejected() -> None:
    """docs/retention.md: `lock_days` with `storage.object_lock_mode = ""` is refused, naming the rule and key."""
    with pytest.raises(PolicyError, match=r"retention\.rules\.a\.lock_days: set, but storage\.object_lock_mode is "
                                          r"empty"):
        parse_policy({"a": {"source_days": 1, "archive_days": 100, "lock_days": 10}}, 3650, "")
    assert parse_policy({"a": {"source_days": 1, "archive_days": 100}}, 3650, "").rules[0].lock_days is None


def test_overlapping_rules_with_precedence_or_equal_periods_are_accepted_and_ordered() -> None:
    policy = parse_policy({
        "default": {"source_days": 90, "archive_days": 3650},
        "web": {"channel": "web", "source_days": 10, "archive_days": 3650, "precedence": 5},
        "billing": {"service": ["Billing", "Sales"], "source_days": 20, "archive_days": 3650},
        "billing_too": {"service": "Billing", "ctlive_type": "chat", "source_days": 20, "archive_days": 3650},
    }, 3650, "COMPLIANCE")
    assert policy.rule_for({"channel": "web", "service": "Billing"}).name == "web"
    assert policy.rule_for({"channel": "whatsapp", "service": "Billing", "ctlive_type": "call"}).name == "billing"
    assert policy.rule_for({"channel": "whatsapp", "service": "Other"}).name == "default"
    # disjoint match values never overlap: no precedence needed
    parse_policy({"a": {"channel": "web", "source_days": 1, "archive_days": 3650},
                  "b": {"channel": "whatsapp", "source_days": 2, "archive_days": 3650}}, 3650, "COMPLIANCE")


def test_a_contradictory_policy_stops_every_command_before_any_deletion(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 400)
    toml = write_toml(tmp_path / "bad.toml", {k: config[k] for k in (
        "mongodb.uri", "source.database", "index.database", "storage.url", "storage.object_lock_mode",
        "signing.certificate", "signing.key", "encryption.recipients")})
    toml.write_text(toml.read_text() + "[retention.rules.web]\nchannel = \"web\"\nsource_days = 1\narchive_days = 10\n"
                    "[retention.rules.sales]\nservice = \"Sales\"\nsource_days = 5\narchive_days = 10\n")
    with pytest.raises(ConfigError):
        load(toml, environ={})
    for argv in (["retention", "run"], ["retention", "run", "--dry-run"], ["erase", "--customer", "x", "--reason", "r"],
                 ["run"]):
        assert main(["--config", str(toml), *argv]) == 2
        err = capsys.readouterr().err
        assert "retention.rules.sales and retention.rules.web" in err or "retention.rules.web and" in err
    assert source(config).count_documents({}) == 2
    assert index(config).count_documents({"status": "archived"}) == 2


def test_object_lock_periods_out_of_bounds_stop_every_command_naming_the_key(make_config, tmp_path, capsys) -> None:
    """storage.retain_days of 10,000 years was accepted, then every chat failed with OverflowError (exit 1); 0 with
    a lock mode gave a retain-until in the past (refused by AWS). Both are config errors now (exit 2), nothing done."""
    from test_pipeline import recent_ms, seed
    from archiver.samples import make_chat
    import random

    config = retention_config(make_config, storage__object_lock_mode="COMPLIANCE", retention__rules={})
    seed(config, [make_chat(random.Random(3), messages=4, start_ms=recent_ms(30))])
    settings = {k: config[k] for k in ("mongodb.uri", "source.database", "index.database", "storage.url",
                                       "signing.certificate", "signing.key", "encryption.recipients")}
    for days, mode, complaint in ((3_652_500, "COMPLIANCE", "storage.retain_days: must be at most 36600 days"),
                                  (36_601, "", "storage.retain_days: must be at most 36600 days"),
                                  (0, "GOVERNANCE", "storage.retain_days: must be at least 1 day with "
                                                    "storage.object_lock_mode set")):
        toml = write_toml(tmp_path / "bad.toml", {**settings, "storage.retain_days": days,
                                                  "storage.object_lock_mode": mode})
        with pytest.raises(ConfigError, match=complaint.replace(".", r"\.")):
            load(toml, environ={})
        for argv in (["run"], ["retention", "run"]):
            assert main(["--config", str(toml), *argv]) == 2
            assert complaint in capsys.readouterr().err
    assert index(config).count_documents({}) == 0 and jobs(config).count_documents({}) == 0
    toml = write_toml(tmp_path / "ok.toml", {**settings, "storage.retain_days": 0, "storage.object_lock_mode": ""})
    assert load(toml, environ={})["storage.retain_days"] == 0  # no lock: the period is not used
    toml = write_toml(tmp_path / "ok.toml", {**settings, "storage.retain_days": 36_600})
    assert load(toml, environ={})["storage.retain_days"] == 36_600


# -- what is never deleted -----------------------------------------------------------------------------

def _break(config, state: str, room: str) -> None:
    """Leave ROOM's archive in STATE."""
    if state == "missing":
        index(config).delete_many({"room": room})
        jobs(config).delete_many({"_id": room})
    elif state in ("failed", "quarantined", "pending"):
        jobs(config).update_one({"_id": room}, {"$set": {"state": state, "last_error": "S3 503", "reason": "bad"}})
    elif state == "claimed, its lease run out":  # its archiver stalled (or died) holding it
        jobs(config).update_one({"_id": room}, {"$set": {"state": "claimed", "owner": "stalled", "available_at": 0}})
    elif state == "claimed":  # a worker holds a live lease on it: it may be archiving what it read just now
        jobs(config).update_one({"_id": room}, {"$set": {"state": "claimed", "owner": "another worker", "claim": "c1",
                                                          "available_at": int(time.time() * 1000) + 3_600_000}})
    elif state == "uploading":
        entry = index(config).find_one({"room": room})
        index(config).insert_one({**{k: v for k, v in entry.items() if k != "_id"}, "version": 2,
                                  "status": "uploading", "source_sha256": "other"})
    elif state == "fails verification":
        key = index(config).find_one({"room": room})["objects"]["record"]["key"]
        path = stored_path(config, key)
        path.chmod(0o644)
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # always another byte (a NUL was one in 256 times the same)
    elif state == "object missing":
        stored_path(config, index(config).find_one({"room": room})["objects"]["pdf"]["key"]).unlink()


@pytest.mark.parametrize("state", ["missing", "failed", "quarantined", "pending", "claimed",
                                   "claimed, its lease run out", "uploading", "fails verification", "object missing"])
def test_a_source_chat_whose_archive_is_not_verified_is_never_deleted(make_config, state) -> None:
    config = retention_config(make_config)
    chats = archive(config, 3)
    age(config, 10_000)
    broken = chats[1]["room"]
    _break(config, state, broken)
    result = retention(config)
    assert {c["room"] for c in source(config).find()} == {broken}, "only the broken one is kept"
    if state != "missing":  # a room the index does not know is never even considered
        mine = [i for i in result.report["items"] if i["room"] == broken]
        about_source = [i["outcome"] for i in mine if i["action"] == "delete_source"
                        or i["reason"].startswith("source chat kept")]
        assert about_source == ["skipped"], mine
        archive_kept = [i for i in mine if i["reason"].startswith("archive kept")]
        assert archive_kept and index(config).count_documents({"room": broken, "status": "deleted"}) == 0
    assert result.ok


def test_a_chat_changed_since_archived_is_archived_again_before_its_source_is_deleted(make_config) -> None:
    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)
    changed = chats[0]["room"]
    source(config).update_one({"room": changed}, {"$set": {"messages.1.data.content.text": "edited afterwards"}})
    first = retention(config)
    assert outcomes(first)[("requeue", changed, 1)][0] == "queued"
    assert source(config).find_one({"room": changed}) is not None, "never deleted with an outdated archive"
    assert jobs(config).find_one({"_id": changed})["state"] == "pending"
    assert Archiver(config).run_pass(discover=False).archived == 1
    v2 = index(config).find_one({"room": changed, "version": 2})
    assert v2["status"] == "archived"
    age(config, 40, room=changed, version=2)
    second = retention(config)
    assert outcomes(second)[("delete_source", changed, 2)][0] == "deleted"
    assert source(config).count_documents({}) == 0


def test_a_chat_under_any_hold_is_never_deleted_in_source_or_archive(make_config) -> None:
    config = retention_config(make_config)
    chats = archive(config, 5)
    age(config, 10_000)
    holds = open_holds(config)
    by_room, by_customer, by_agent, by_filter = (c["room"] for c in chats[:4])
    holds.place(SearchFilters(room=by_room), "Case R", "litigation", ACTOR)
    holds.place(SearchFilters(customer=customer_of(chats[1])), "Case C", "subpoena", ACTOR)
    holds.place(SearchFilters(agent=agent_of(chats[2])), "Case A", "HR", ACTOR)
    entry = index(config).find_one({"room": by_filter})
    holds.place(SearchFilters(ctlive_type=entry["ctlive_type"], channel=entry["channel"], service=entry["service"],
                              ended_from=entry["ended_at"] - dt.timedelta(seconds=1),
                              ended_to=entry["ended_at"] + dt.timedelta(seconds=1)), "Case F", "audit", ACTOR)
    held = {by_room, by_customer, by_agent, by_filter}
    for _ in range(2):  # sources, then (sources gone) archives
        result = retention(config)
        for item in result.report["items"]:
            if item["room"] in held:
                assert item["outcome"] == "skipped" and "held by case" in item["reason"], item
    # agents are shared between sample chats: whatever the agent hold covers is kept too
    kept = {c["room"] for c in source(config).find()}
    assert held <= kept
    assert {e["room"] for e in index(config).find({"status": "archived"})} == kept
    for room in held:
        assert all(stored_path(config, o["key"]).exists() for o in index(config).find_one({"room": room})["objects"].values())


def test_a_hold_covers_chats_archived_after_it_was_placed(make_config) -> None:
    config = retention_config(make_config)
    open_holds(config).place(SearchFilters(service="Held service"), "Case Later", "placed before archiving", ACTOR)
    chats = archive(config, 2, rng_seed=3, serv_name="Held service")
    others = archive(config, 1, rng_seed=4)
    age(config, 10_000)
    retention(config)
    retention(config)
    assert {c["room"] for c in source(config).find()} == {c["room"] for c in chats}
    assert index(config).count_documents({"room": others[0]["room"], "status": "deleted"}) == 1
    assert index(config).count_documents({"room": {"$in": [c["room"] for c in chats]}, "status": "archived"}) == 2


def test_a_hold_matching_one_version_keeps_every_version_and_the_source(make_config) -> None:
    """A room is held when any of its versions matches: a hold on v1's type keeps v2 (another type) and the
    source chat as well, run after run."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    room = chat["room"]
    v1 = index(config).find_one({"room": room})
    other = "call" if v1["ctlive_type"] != "call" else "chat"
    source(config).update_one({"room": room}, {"$set": {"ctlive_type": other}})
    assert Archiver(config).archive_room(room, "ended")[0].archived == 1
    assert index(config).find_one({"room": room, "version": 2})["ctlive_type"] == other
    open_holds(config).place(SearchFilters(ctlive_type=v1["ctlive_type"]), "Case V1", "first version only", ACTOR)
    age(config, 10_000)
    for _ in range(2):  # sources, then (were the source gone) archives
        result = retention(config)
        items = list(result.report["items"])
        assert items and all(i["outcome"] == "skipped" and "held by case 'Case V1'" in i["reason"]
                             for i in items), items
    assert source(config).count_documents({"room": room}) == 1
    versions = list(index(config).find({"room": room}).sort("version", 1))
    assert [(e["version"], e["status"]) for e in versions] == [(1, "archived"), (2, "archived")]
    assert all(stored_path(config, o["key"]).exists() for e in versions for o in e["objects"].values())


def test_a_hold_placed_after_the_plan_is_honoured_at_deletion_time(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)
    from archiver import retention as retention_module

    real = retention_module.Deletions._execute

    def hold_first(self, run_id, batch):
        self.holds.place(SearchFilters(room=chats[0]["room"]), "Case Late", "during the run", ACTOR)
        return real(self, run_id, batch)
    monkeypatch.setattr(retention_module.Deletions, "_execute", hold_first)
    result = retention(config)
    assert outcomes(result)[("delete_source", chats[0]["room"], 1)][0] == "skipped"
    assert {c["room"] for c in source(config).find()} == {chats[0]["room"]}


# -- tombstones, verification, reports ---------------------------------------------------------------

def test_deleted_archives_leave_tombstones_that_verify_keylessly(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    archive(config, 3)
    before = {e["room"]: e for e in index(config).find()}
    age(config, 400)
    result = retention(config)  # both due: the source goes first, then its archive, in one run
    assert result.report["counts"]["default"] == {"delete_source:deleted": 3, "delete_archive:deleted": 3}
    assert [i["action"] for i in result.report["items"]] == ["delete_source", "delete_archive"] * 3
    assert retention(config).report["items"] == []
    for entry in index(config).find():
        assert entry["status"] == "deleted"
        assert entry["objects"] == before[entry["room"]]["objects"], "object hashes kept"
        assert entry["deletion"]["rule"] == "default" and entry["deletion"]["run"] == result.report["run"]
        assert entry["deletion"]["state"] == "done" and entry["deletion"]["completed_at"]
        assert not any(stored_path(config, o["key"]).exists() for o in entry["objects"].values())
    report = verify_archive(config, None)
    assert report.ok and report.tombstones == 3 and report.listed == 4, report.problems  # two signed reports
    # a stray object in the reports folder is still named
    stray = stored_path(config, ".reports/retention/forged.json")
    stray.write_text("{}")
    assert [p.problem for p in verify_archive(config, None).problems] == [
        f"object .reports/retention/forged.json in {open_store(config).url} is not explained by the index"]


def test_a_tampered_run_report_is_named_by_its_run_not_a_fake_room(make_config, tmp_path, capsys) -> None:
    """A run report's problem is about no room: `verify --json` gives it room null and subject "run report RUN"
    (the text line too), and the verification's audit entry lists real rooms only."""
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 40)
    result = retention(config)
    run_id, where = result.report["run"], result.location
    overwrite_stored(config, where["key"], stored_path(config, where["key"]).read_bytes() + b" ")
    toml = _cli_toml(config, tmp_path)
    assert main(["--config", str(toml), "verify", "--json"]) == 3
    (problem,) = json.loads(capsys.readouterr().out)["problems"]
    assert (problem["room"], problem["version"], problem["subject"]) == (None, None, f"run report {run_id}")
    assert problem["problem"].startswith(f"report {where['key']} has SHA-256 "), problem
    assert audit(config)[-1]["rooms"] == [] and audit(config)[-1]["outcome"] == "problems"
    # the report restored, its signature replaced: named by this run too
    overwrite_stored(config, where["key"], stored_path(config, where["key"]).read_bytes()[:-1])
    overwrite_stored(config, where["signature_key"], b"not a signature")
    assert main(["--config", str(toml), "verify"]) == 3
    out = capsys.readouterr().out
    assert f"PROBLEM run report {run_id}: signature {where['signature_key']} has SHA-256 " in out, out
    assert ".reports:" not in out


def test_the_report_is_in_mongodb_and_signed_in_the_store(make_config, keys, tmp_path) -> None:
    config = retention_config(make_config)
    archive(config, 2)
    age(config, 40)
    result = retention(config)
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]
    run = runs.find_one({"_id": result.report["run"]})
    assert run["state"] == "done" and run["counts"] == {"default": {"delete_source:deleted": 2}}
    assert run["report"] == result.location
    data = stored_path(config, result.location["key"]).read_bytes()
    assert json.loads(data) == result.report and hashlib.sha256(data).hexdigest() == result.location["sha256"]
    require_tool("openssl")
    folder = tmp_path / "check"  # docs/retention.md's commands, as written
    folder.mkdir()
    shutil.copy(stored_path(config, result.location["signature_key"]), folder / "RUN.json.p7s")
    shutil.copy(stored_path(config, result.location["key"]), folder / "RUN.json")
    shutil.copy(keys["ca.crt.pem"], folder / "ca.crt.pem")
    shutil.copy(keys["signing.crt.pem"], folder / "signing.crt.pem")  # the archiver's (the CA after it)
    docs = (Path(__file__).parents[1] / "docs/retention.md").read_text()
    command = docs.split("```sh\nt=$(openssl cms")[1].split("```")[0]
    ok = subprocess.run(["bash", "-ec", "t=$(openssl cms" + command], cwd=folder, capture_output=True, text=True)
    assert ok.returncode == 0 and "signed by the archiver's certificate" in ok.stdout, ok.stderr
    fingerprint = subprocess.run(["bash", "-c", "openssl x509 -in signing.crt.pem -outform DER | sha256sum"],
                                 cwd=folder, capture_output=True, text=True).stdout.split()[0]
    assert fingerprint == result.location["signed_by"]  # what the docs say the run records
    (folder / "RUN.json").write_bytes(data.replace(b'"run"', b'"RUN"', 1))
    bad = subprocess.run(["bash", "-ec", "t=$(openssl cms" + command], cwd=folder, capture_output=True, text=True)
    assert bad.returncode != 0
    # a made-up report signed by another certificate the same CA issued (an employee's): the CA's check alone
    # passes it, the documented commands do not
    import certfactory
    forged = tmp_path / "forged"
    ca = certfactory.make(forged, "Corp CA", usages=("key_cert_sign", "crl_sign"), ca=True, ec_key=True)
    ours = certfactory.make(forged, "Archiver", usages=("digital_signature", "content_commitment"), issuer=ca,
                            ec_key=True)
    employee = certfactory.make(forged, "Some employee", usages=("digital_signature",), issuer=ca, ec_key=True)
    shutil.copy(ca.cert_path, forged / "ca.crt.pem")
    shutil.copy(ours.cert_path, forged / "signing.crt.pem")
    (forged / "RUN.json").write_bytes(data)
    for signer, pinned in ((employee, False), (ours, True)):
        subprocess.run(["openssl", "cms", "-sign", "-binary", "-in", "RUN.json", "-signer", str(signer.cert_path),
                        "-inkey", str(signer.key_path), "-outform", "DER", "-out", "RUN.json.p7s"], cwd=forged,
                       check=True, capture_output=True)
        checked = subprocess.run(["bash", "-ec", "t=$(openssl cms" + command], cwd=forged, capture_output=True,
                                 text=True)
        assert (checked.returncode == 0) == pinned, (signer.cert.subject, checked.stdout, checked.stderr)
        unpinned = command.split("\n[")[0]  # without the last line: the CA's word alone
        assert subprocess.run(["bash", "-ec", "t=$(openssl cms" + unpinned], cwd=forged,
                              capture_output=True).returncode == 0
    audit = connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]]
    entry = audit.find_one({"action": "retention_run"})
    assert entry["filters"]["run"] == result.report["run"] and result.location["sha256"] in entry["detail"]
    assert sorted(entry["rooms"]) == sorted(i["room"] for i in result.report["items"])


def test_dry_run_and_real_run_agree_item_for_item(make_config) -> None:
    config = retention_config(make_config)
    chats = archive(config, 8)
    age(config, 400)
    for chat in chats[:4]:  # sources of half of them are gone already: their archives are due
        source(config).delete_one({"room": chat["room"]})
    open_holds(config).place(SearchFilters(room=chats[5]["room"]), "Case D", "dry", ACTOR)
    _break(config, "failed", chats[6]["room"])
    source(config).update_one({"room": chats[7]["room"]}, {"$set": {"messages.0.data.content.text": "changed"}})
    before = list(source(config).find())
    dry = retention(config, dry_run=True)
    assert list(source(config).find()) == before and index(config).count_documents({"status": "deleted"}) == 0
    real = retention(config)

    def items(result):
        return [{k: v for k, v in item.items() if k not in ("outcome", "detail")} for item in result.report["items"]]
    # 4 archives whose source is gone, 1 source and archive, 2 each for the held, failed and changed chats
    assert items(dry) == items(real) and len(items(real)) == 12
    assert {i["action"] for i in items(real)} == {"delete_source", "delete_archive", "skip", "requeue"}
    assert all(i["outcome"] != "failed" for i in real.report["items"])


def _cli_toml(config, tmp_path):
    """CONFIG's settings for the command line, with the default retention rule (30 days of source)."""
    toml = write_toml(tmp_path / "r.toml", {k: config[k] for k in (
        "mongodb.uri", "source.database", "index.database", "storage.url", "storage.object_lock_mode",
        "signing.certificate", "signing.key", "encryption.recipients")})
    toml.write_text(toml.read_text() + "[retention.rules.default]\nsource_days = 30\narchive_days = 365\n")
    return toml


def test_dry_run_prints_each_item_and_changes_nothing_from_the_cli(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)
    toml = _cli_toml(config, tmp_path)
    assert main(["--config", str(toml), "retention", "run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for chat in chats:
        assert f"PLANNED  delete_source  {chat['room']} v1 [default]" in out
    assert source(config).count_documents({}) == 2
    assert main(["--config", str(toml), "retention", "run"]) == 0
    out = capsys.readouterr().out
    assert out.count("DELETED  delete_source") == 2 and "signature .reports/retention/" in out
    assert source(config).count_documents({}) == 0


def test_contacts_go_with_their_chat_only_when_configured(make_config) -> None:
    config = retention_config(make_config)
    archive(config, 1)
    age(config, 40)
    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    retention(config)
    assert source(config).count_documents({}) == 0 and contacts.count_documents({}) == 1
    config2 = retention_config(make_config, retention__delete_contacts=True, source__database="second")
    archive(config2, 1, rng_seed=9)
    age(config2, 40)
    retention(config2)
    other = connect(config2["mongodb.uri"])["second"][config2["source.contacts"]]
    assert other.count_documents({}) == 0


def test_the_rule_sets_each_archives_lock_and_is_recorded(make_config) -> None:
    rules = {"default": {"source_days": 30, "archive_days": 3650},
             "sales": {"service": "Sales", "source_days": 10, "archive_days": 400, "lock_days": 400}}
    config = make_config(retention__rules=rules)
    archive(config, 1, serv_name="Sales")
    archive(config, 1, rng_seed=8)
    found = {e["retention_rule"]: e for e in index(config).find()}
    assert set(found) == {"sales", "default"}
    assert found["sales"]["retain_until"] - found["sales"]["generated_at"] == dt.timedelta(days=400)
    assert found["default"]["retain_until"] - found["default"]["generated_at"] == dt.timedelta(days=3650)
    meta = json.loads(stored_path(config, found["sales"]["objects"]["pdf"]["key"] + ".meta.json").read_text())
    assert dt.datetime.fromisoformat(meta["retain_until"]) == found["sales"]["retain_until"].replace(
        tzinfo=dt.timezone.utc)


def test_serve_runs_retention_on_its_schedule(make_config) -> None:
    from archiver.jobs import Service
    import threading

    config = retention_config(make_config)
    archive(config, 2)
    age(config, 40)
    service = Service(config, threading.Event())
    service.retention()
    assert service.retention_error == "" and source(config).count_documents({}) == 0
    idle = Service(config.with_overrides(retention__rules={}), threading.Event())
    idle.retention()  # no rules: nothing planned, no report
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]
    assert runs.count_documents({"kind": "retention", "state": "done"}) == 1


def test_serve_is_unhealthy_while_a_run_it_made_is_unaudited(make_config, monkeypatch) -> None:
    from archiver.jobs import Service
    from retrieval_helpers import audit, refuse_audit
    import threading

    config = retention_config(make_config)
    archive(config, 2)
    age(config, 40)
    service = Service(config, threading.Event())
    with monkeypatch.context() as patched:
        refuse_audit(patched, config)
        service.retention()
    assert "the audit log could not be written" in service.retention_error and not service.healthy()
    service.retention()  # the next scheduled run finishes it
    assert service.retention_error == "" and [e["action"] for e in audit(config)] == ["retention_run"]


def test_one_run_of_a_kind_at_a_time_and_a_half_made_plan_is_dropped(make_config) -> None:
    from archiver.retention import Deletions
    from archiver.runs import RunBusy, RunLedger, Step

    config = retention_config(make_config)
    archive(config, 1)
    age(config, 40)
    deletions = Deletions(config)
    other = RunLedger(deletions.ledger.runs, deletions.ledger.steps)  # a live process: this one
    other.acquire("retention")
    with pytest.raises(RunBusy):
        retention(config)
    other.release("retention")
    half = deletions.ledger.begin("retention", dt.datetime.now(dt.timezone.utc), {})
    deletions.ledger.steps.insert_one({"_id": "x", "run": half["_id"], "seq": 1, "state": "pending",
                                       **Step("delete_source", "nowhere").__dict__})
    result = retention(config)
    assert not result.resumed and [i["action"] for i in result.report["items"]] == ["delete_source"]
    assert deletions.ledger.runs.find_one({"_id": half["_id"]})["state"] == "abandoned while planning"
    assert deletions.ledger.steps.count_documents({"run": half["_id"]}) == 0
    interrupted = deletions.ledger.begin("retention", dt.datetime.now(dt.timezone.utc), {})
    deletions.ledger.record_plan(interrupted, iter([]), deletions.signer())  # planned, then killed before it executed
    assert retention(config, dry_run=True).report["interrupted_run_first"] == interrupted["_id"]
    assert retention(config).report["run"] == interrupted["_id"]


def test_a_chat_reverted_to_an_earlier_archived_content_is_deleted_on_that_version(make_config) -> None:
    config = retention_config(make_config)
    chats = archive(config, 1)
    room = chats[0]["room"]
    original = source(config).find_one({"room": room})
    source(config).update_one({"room": room}, {"$set": {"messages.0.data.content.text": "edited"}})
    assert Archiver(config).run_pass(full=True).archived == 1
    source(config).replace_one({"_id": original["_id"]}, original)
    age(config, 40)
    result = retention(config)
    assert outcomes(result)[("delete_source", room, 1)][0] == "deleted"


def test_rules_from_the_environment_are_checked_too() -> None:
    environ = {"ARCHIVER_RETENTION__RULES": '{"web": {"channel": "web", "source_days": -3, "archive_days": 3650}}'}
    with pytest.raises(ConfigError, match=r"retention.rules.web.source_days: must be 0 or more days \(got -3\)"):
        load(None, environ=environ)
    environ["ARCHIVER_RETENTION__RULES"] = '{"web": {"channel": "web", "source_days": 3, "archive_days": 3650}}'
    assert load(None, environ=environ)["retention.rules"]["web"]["source_days"] == 3


def test_an_erasure_after_sealing_keeps_the_sealed_day_verifiable_and_its_tombstones_are_sealed(
        make_config, tsa, tmp_path) -> None:
    """Seals and retention together: an erased entry of a sealed day drops its personal fields, yet the day's
    seal still recomputes (the tombstone keeps its archive leaf's hash); the erasure's own day seals the
    tombstones; removing a tombstone afterwards is named."""
    from test_seals import DAY, backdate, seal_cli

    config = retention_config(make_config, signing__timestamp_url=tsa.url)
    chats = archive(config, 2)
    archived_on = DAY - dt.timedelta(days=1)  # (so that the day after it has ended, and its grace, at any hour)
    backdate(config, day=archived_on)
    age(config, 0)
    assert seal_cli(config, tmp_path, "seal", "--from", archived_on.isoformat(), "--to", archived_on.isoformat()) == 0
    customer = customer_of(chats[0])
    result = erase(config, customer)
    assert result.ok and ("delete_archive", chats[0]["room"], 1) in outcomes(result)
    tombstone = index(config).find_one({"room": chats[0]["room"]})
    assert tombstone["status"] == "deleted" and "customers" not in tombstone and tombstone["archived_leaf_sha256"]
    report = verify_archive(config, None)
    assert report.ok and report.tombstones == 1, report.problems

    backdate_to = archived_on + dt.timedelta(days=1)
    index(config).update_one({"_id": tombstone["_id"]}, {"$set": {"deleted_at": dt.datetime.combine(
        backdate_to, dt.time(9), dt.timezone.utc)}})  # as if erased the day after: that day can be sealed now
    assert seal_cli(config, tmp_path, "seal", "--from", backdate_to.isoformat(), "--to", backdate_to.isoformat()) == 0
    assert verify_archive(config, None).ok
    index(config).delete_one({"_id": tombstone["_id"]})  # the proof of the deletion removed: named
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert any(chats[0]["room"] in p for p in problems), problems


def test_a_partly_deleted_archive_is_named_by_verify_and_finished_by_a_later_run(make_config) -> None:
    """The store refuses the second object (a stray legal hold): the tombstone stays `deleting`; verify
    names the run and the object left; once the store allows it a later run finishes, and verify is clean."""
    config = retention_config(make_config, retention__rules={"default": {"source_days": 1, "archive_days": 2}})
    chats = archive(config, 1)
    room = chats[0]["room"]
    age(config, 1.5)
    retention(config)  # the source goes
    age(config, 10)
    store = open_store(config)
    second = list(index(config).find_one()["objects"].values())[1]
    store.set_legal_hold(second["key"], "", True)
    first = retention(config)
    assert outcomes(first)[("delete_archive", room, 1)][0] == "failed"
    assert index(config).find_one()["deletion"]["state"] == "deleting"
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert len(problems) == 1 and first.report["run"] in problems[0] and second["key"] in problems[0], problems
    assert retention(config, dry_run=True).report["items"][0]["action"] == "delete_archive"  # planned again
    open_holds(config).place(SearchFilters(room=room), "Case P", "litigation", ACTOR)
    store.set_legal_hold(second["key"], "", False)
    held = retention(config)  # a hold placed meanwhile still counts: nothing more goes
    assert [i["reason"] for i in held.report["items"]] == ["archive kept: held by case 'Case P'"]
    assert stored_path(config, second["key"]).exists()
    open_holds(config).release("Case P", "settled", ACTOR)
    finished = retention(config)
    assert outcomes(finished)[("delete_archive", room, 1)][0] == "deleted"
    tombstone = index(config).find_one()
    assert tombstone["deletion"]["state"] == "done" and tombstone["deletion"]["run"] == first.report["run"]
    assert not stored_path(config, second["key"]).exists()
    assert verify_archive(config, None).ok
    assert retention(config).report["items"] == []


def test_an_erasure_removes_the_personal_fields_of_tombstones_retention_left(make_config) -> None:
    """Retention deleted the archive and kept who took part; the customer's erasure removes that too, and
    both leaves (archive and tombstone) still recompute, so sealed days stay verifiable."""
    from archiver.retention import PERSONAL_FIELDS
    from archiver.seals import leaf_hash

    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 400)
    retention(config)
    before = index(config).find_one({"room": chats[0]["room"]})
    assert before["deletion"]["state"] == "done" and before["customers"]
    result = erase(config, customer_of(chats[0]))
    assert outcomes(result) == {("erase_personal", chats[0]["room"], 1): ("erased", (
        "erasure request: GDPR request 1; removes from the tombstone: customers, opened_by, agents, handled_by, "
        "present, participants, title, terms, closed_by (its object hashes and seal leaves stay)"))}
    after = index(config).find_one({"room": chats[0]["room"]})
    assert not any(name in after for name in PERSONAL_FIELDS)
    assert after["deletion"]["personal_data_removed"] == list(PERSONAL_FIELDS)
    assert after["deletion"]["erased_by"] == result.report["run"]
    assert leaf_hash(after) == leaf_hash(before) and leaf_hash(after, "deleted") == leaf_hash(before, "deleted")
    assert index(config).find_one({"room": chats[1]["room"]})["customers"], "another customer's is kept"
    assert verify_archive(config, None).ok
    assert erase(config, customer_of(chats[0])).report["items"] == []


def test_set_aside_objects_of_interrupted_attempts_are_deleted_with_the_archive(make_config) -> None:
    config = retention_config(make_config)
    archive(config, 1)
    entry = index(config).find_one()
    leftover = entry["objects"]["pdf"]["key"] + ".attempt-1"  # ciphertext an interrupted attempt stored
    open_store(config).put(leftover, b"ciphertext", hashlib.sha256(b"ciphertext").hexdigest(), None)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"superseded_objects": [leftover]}})
    age(config, 400)
    result = retention(config)
    assert outcomes(result)[("delete_archive", entry["room"], 1)][0] == "deleted"
    assert not stored_path(config, leftover).exists()
    assert verify_archive(config, None).ok


def test_retention_and_erasure_share_one_lease(make_config) -> None:
    from archiver.retention import Deletions
    from archiver.runs import RunBusy, RunLedger

    config = retention_config(make_config)
    chats = archive(config, 1)
    deletions = Deletions(config)
    other = RunLedger(deletions.ledger.runs, deletions.ledger.steps)  # a live process: this one
    other.acquire("retention")
    with pytest.raises(RunBusy, match="retention run is in progress"):
        erase(config, customer_of(chats[0]))
    other.release("retention")
    assert erase(config, customer_of(chats[0])).ok


@pytest.mark.parametrize("command", ["retention", "erase"])
def test_a_second_run_from_the_cli_stops_with_exit_1_and_deletes_nothing(make_config, tmp_path, capsys,
                                                                         command) -> None:
    """docs/retention.md: while a deletion run holds the lease, a second one (retention or erasure) stops with
    "a retention run is in progress ... try again when it has finished", exit 1, and deletes nothing."""
    from archiver.retention import Deletions
    from archiver.runs import RunLedger

    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)
    deletions = Deletions(config)
    other = RunLedger(deletions.ledger.runs, deletions.ledger.steps)  # a live process: this one
    other.acquire("retention")
    toml = _cli_toml(config, tmp_path)
    argv = (["retention", "run"] if command == "retention" else
            ["erase", "--customer", customer_of(chats[0]), "--reason", "GDPR request 3"])
    assert main(["--config", str(toml), *argv]) == 1
    err = capsys.readouterr().err
    assert "a retention run is in progress" in err and "try again when it has finished" in err, err
    assert source(config).count_documents({}) == 2
    assert index(config).count_documents({"status": "archived"}) == 2
    other.release("retention")
    assert main(["--config", str(toml), *argv]) == 0  # the same command, once the lease is free, does delete
    assert source(config).count_documents({}) == (0 if command == "retention" else 1)


def test_an_archive_deleted_by_another_run_meanwhile_is_not_touched_again(make_config, monkeypatch) -> None:
    """The entry changed between the batch's read and the tombstone write: nothing is deleted on a stale entry."""
    from archiver import retention as retention_module

    config = retention_config(make_config)
    archive(config, 1)
    age(config, 400)
    real = retention_module.Deletions._mark_deleting

    def raced(self, entry, run_id, step):
        index(config).update_one({"_id": entry["_id"]}, {"$set": {"status": "superseded"}})
        return real(self, entry, run_id, step)
    monkeypatch.setattr(retention_module.Deletions, "_mark_deleting", raced)
    result = retention(config)
    entry = index(config).find_one()
    outcome, _ = outcomes(result)[("delete_archive", entry["room"], 1)]
    detail = next(i["detail"] for i in result.report["items"] if i["action"] == "delete_archive")
    assert outcome == "skipped" and "changed meanwhile" in detail and "superseded" in detail
    assert all(stored_path(config, o["key"]).exists() for o in entry["objects"].values())


def test_a_source_archived_by_an_attachment_retry_version_is_deleted_not_queued_again(make_config) -> None:
    """A retry version carries a derived source_sha256 and the real digest as documents_sha256."""
    config = retention_config(make_config)
    chats = archive(config, 1)
    entry = index(config).find_one()
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "documents_sha256": entry["source_sha256"], "source_sha256": hashlib.sha256(b"retry 2").hexdigest()}})
    age(config, 40)
    result = retention(config)
    assert outcomes(result) == {("delete_source", chats[0]["room"], 1): (
        "deleted", "source_days 30 passed since v1 was archived and verified")}
    assert source(config).count_documents({}) == 0 and jobs(config).find_one()["state"] == "done"



def test_the_run_signer_gets_the_configured_timestamp_skew(make_config, monkeypatch) -> None:
    """Report signatures carry no timestamp today; the signer is still built as the archive pass's is, so a
    timestamped report would obey signing.timestamp_max_skew_seconds rather than a built-in 300 s."""
    from archiver import signing

    built = []

    class Recording(signing.Signer):
        def __init__(self, identity, timestamp_url="", max_skew_seconds=300.0, **kw):
            built.append(max_skew_seconds)
            super().__init__(identity, timestamp_url, max_skew_seconds, **kw)
    monkeypatch.setattr(signing, "Signer", Recording)
    config = retention_config(make_config, signing__timestamp_max_skew_seconds=3 * 86400.0)
    assert retention(config).location and built == [3 * 86400.0]


def test_retrieving_a_deleted_chat_names_the_run_rule_and_date(make_config) -> None:
    from archiver.retrieval import NotFound, find_entry

    config = retention_config(make_config)
    chats = archive(config, 1)
    age(config, 400)
    run = retention(config).report["run"]
    tombstone = index(config).find_one()
    day = tombstone["deleted_at"].strftime("%Y-%m-%d")
    for version, which in ((None, "room"), (1, "version 1 of room")):
        with pytest.raises(NotFound) as raised:  # the same error (and exit code) as a room never archived
            find_entry(config, chats[0]["room"], version)
        assert str(raised.value) == (f"{which} {chats[0]['room']!r}: deleted by run {run} under rule default on "
                                     f"{day}; its tombstone keeps the object hashes (`archiver verify`)")
    with pytest.raises(NotFound, match="not in the archive index"):
        find_entry(config, "CHAT_NEVER_SEEN", None)


def test_completeness_accounts_for_a_chat_whose_archive_was_deleted_by_policy(make_config) -> None:
    """The source chat is back (a restored backup) after retention deleted it and its archive: the window
    names it as deleted by that run, not as never archived."""
    from archiver.completeness import check_completeness

    config = retention_config(make_config)
    chats = archive(config, 2)
    kept = source(config).find_one({"room": chats[0]["room"]})
    age(config, 400, room=chats[0]["room"])
    run = retention(config).report["run"]
    source(config).insert_one(kept)
    now = dt.datetime.now(dt.timezone.utc)
    report = check_completeness(config, now - dt.timedelta(days=5), now + dt.timedelta(hours=1))
    assert report.ok and report.missing == [] and (report.ended, report.archived) == (2, 1)
    assert report.deleted_count == 1 and report.deleted == [
        {"room": chats[0]["room"], "why": f"deleted by run {run} under rule default"}]


def test_serve_waits_while_an_erasure_holds_the_deletion_lease(make_config) -> None:
    from archiver.jobs import Service
    from archiver.retention import Deletions
    from archiver.runs import RunLedger
    import threading

    config = retention_config(make_config)
    archive(config, 1)
    age(config, 40)
    deletions = Deletions(config)
    erasing = RunLedger(deletions.ledger.runs, deletions.ledger.steps)
    erasing.acquire("erasure")
    service = Service(config, threading.Event())
    service.retention()  # waits: not an error, nothing deleted
    assert service.retention_error == "" and source(config).count_documents({}) == 1
    erasing.release("erasure")
    service.retention()
    assert service.retention_error == "" and source(config).count_documents({}) == 0


def test_a_large_report_is_stored_in_signed_parts_that_the_main_report_lists(make_config, keys, monkeypatch,
                                                                              capsys) -> None:
    """A run over millions of chats must not hold its report in memory: past runs.PART_ITEMS items it is
    written part by part, each part signed, the main report (signed) listing each part's digest."""
    from archiver import runs as runs_module
    monkeypatch.setattr(runs_module, "PART_ITEMS", 4)
    config = retention_config(make_config)
    archive(config, 5)
    age(config, 400)
    dry = retention(config, dry_run=True)  # in parts too: a plan over millions of chats is spooled, not held
    assert "items" not in dry.report and dry.report["items_total"] == 10 and dry.report["rooms_affected"] == 5
    whole = [{k: v for k, v in i.items() if k != "outcome"} for i in dry.items()]
    assert len(whole) == 10 and list(dry.items())[0]["outcome"] == "planned"
    result = retention(config)
    report = result.report
    assert "items" not in report and report["items_total"] == 10 and report["rooms_affected"] == 5
    assert report["counts"] == {"default": {"delete_source:deleted": 5, "delete_archive:deleted": 5}}
    assert [p["items"] for p in report["parts"]] == [4, 4, 2] and result.ok
    openssl = require_tool("openssl")

    def verified(key: str, signature_key: str) -> bytes:
        ok = subprocess.run([openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in",
                             str(stored_path(config, signature_key)), "-content", str(stored_path(config, key)),
                             "-CAfile", str(keys["ca.crt.pem"]), "-out", "/dev/null"], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        return stored_path(config, key).read_bytes()
    main_data = verified(result.location["key"], result.location["signature_key"])
    assert json.loads(main_data) == report and hashlib.sha256(main_data).hexdigest() == result.location["sha256"]
    items = []
    for number, part in enumerate(report["parts"], 1):
        data = verified(part["key"], part["signature_key"])
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
        body = json.loads(data)
        assert (body["run"], body["part"]) == (report["run"], number)
        items += body["items"]
    assert [{k: v for k, v in i.items() if k != "outcome"} for i in items] == whole
    assert {i["outcome"] for i in items} == {"deleted"} and list(result.items()) == items
    # every part is explained by the run that names it; the audit entry names the rooms
    verify = verify_archive(config, None)
    assert verify.ok, verify.problems
    audit = connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]]
    assert sorted(audit.find_one({"action": "retention_run"})["rooms"]) == sorted({i["room"] for i in items})
    # the command lists every item, in text and as JSON
    from archiver.commands.retention import print_report
    print_report(result, as_json=False)
    text = capsys.readouterr().out
    assert all(f"{i['action']:<14} {i['room']}" in text for i in items), text
    print_report(result, as_json=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["items"] == items and printed["parts"] == report["parts"]


def test_a_report_in_parts_stopped_half_way_is_explained_meanwhile_and_resumed_with_the_same_parts(
        make_config, monkeypatch) -> None:
    """Parts are named by their run before they are stored (verify --all explains them while the report is
    being written, or after a crash), and a resumed run stores the very same parts again."""
    from archiver import runs as runs_module
    from archiver.retention import Deletions
    from archiver.runs import RunLedger
    monkeypatch.setattr(runs_module, "PART_ITEMS", 4)
    config = retention_config(make_config)
    archive(config, 5)
    age(config, 400)
    real_publish, stored = runs_module.publish_report, []

    def crash_at_the_third(store, signer, kind, run_id, data, retain_until):
        if len(stored) == 2:
            raise KeyboardInterrupt("killed")
        stored.append(data)
        return real_publish(store, signer, kind, run_id, data, retain_until)
    monkeypatch.setattr(runs_module, "publish_report", crash_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        retention(config)
    problems = verify_archive(config, None).problems  # the parts are explained; the run's tombstones are named:
    assert len(problems) == 5 and all("no deletion run holds the lease" in p.problem for p in problems), \
        [p.problem for p in problems]  # it is unfinished, and no run is finishing it
    resuming = RunLedger(Deletions(config).ledger.runs, Deletions(config).ledger.steps)
    resuming.acquire("retention")  # as while the next run resumes it
    problems = verify_archive(config, None).problems
    assert not problems, [p.problem for p in problems]
    resuming.release("retention")
    monkeypatch.setattr(runs_module, "publish_report", real_publish)
    result = retention(config)
    assert result.resumed and [p["items"] for p in result.report["parts"]] == [4, 4, 2]
    for data, part in zip(stored, result.report["parts"]):
        assert stored_path(config, part["key"]).read_bytes() == data
    assert verify_archive(config, None).ok


def test_the_tally_counts_rooms_once_whatever_their_skipped_items() -> None:
    from archiver import runs as runs_module
    items = [("a", "skip", "skipped"), ("a", "delete_source", "deleted"), ("a", "delete_archive", "refused"),
             ("b", "delete_source", "deleted"), ("b", "skip", "skipped"), ("b", "delete_archive", "deleted"),
             ("c", "skip", "skipped"), ("d", "delete_archive", "failed"), ("e", "extend_lock", "extended")]
    tally = runs_module.Tally()
    for room, action, outcome in items:
        tally.add({"room": room, "action": action, "outcome": outcome, "rule": "r"})
    assert (tally.items, tally.rooms_affected, tally.failed) == (9, 4, True)
    assert tally.counts == {"r": {"skip:skipped": 3, "delete_source:deleted": 2, "delete_archive:refused": 1,
                                  "delete_archive:deleted": 1, "delete_archive:failed": 1, "extend_lock:extended": 1}}


@pytest.mark.parametrize("part_items", [4, 20_000], ids=["in parts", "whole"])
def test_verify_all_finds_a_report_or_part_removed_or_changed(make_config, monkeypatch, part_items) -> None:
    """A run's signed report is evidence of what was deleted and why: verify --all reads it (and each part
    it lists) back and checks it against what the run recorded."""
    from archiver import runs as runs_module
    monkeypatch.setattr(runs_module, "PART_ITEMS", part_items)
    config = retention_config(make_config)
    archive(config, 5)
    age(config, 400)
    result = retention(config)
    checked = verify_archive(config, None)
    assert checked.ok and checked.reports == 1 + len(result.report.get("parts", [])), checked.problems
    listed = result.report.get("parts") or [result.location]
    changed, removed = stored_path(config, listed[-1]["key"]), stored_path(config, listed[0]["signature_key"])
    changed.chmod(0o644)
    changed.write_bytes(changed.read_bytes().replace(b'"deleted"', b'"skipped"', 1))
    removed.unlink()
    problems = [p.problem for p in verify_archive(config, None).problems]
    run = result.report["run"]
    assert any(listed[-1]["key"] in p and run in p and "SHA-256" in p for p in problems), problems
    assert any(listed[0]["signature_key"] in p and run in p and "missing" in p for p in problems), problems
    assert len(problems) == 2, problems


@pytest.mark.parametrize("part_items", [4, 20_000], ids=["in parts", "whole"])
def test_verify_all_checks_each_report_signature_over_its_report_by_the_recorded_signer(
        make_config, monkeypatch, tmp_path, part_items) -> None:
    """A report's signature was only fetched: garbage in its place, or a valid signature by another certificate
    (another employee's, from the same CA), passed `verify --all` while the documented openssl check failed.
    The run now records each signature's SHA-256 and version, and verify checks the CMS signature over the
    report by the certificate the run records (`signed_by`), as seals pin `signer_sha256`."""
    import certfactory
    from archiver import runs as runs_module
    from archiver.signing import Signer, load_identity
    from retrieval_helpers import overwrite_stored
    monkeypatch.setattr(runs_module, "PART_ITEMS", part_items)
    config = retention_config(make_config)
    archive(config, 5)
    age(config, 400)
    result = retention(config)
    where = result.location
    assert where["signature_sha256"] == hashlib.sha256(
        stored_path(config, where["signature_key"]).read_bytes()).hexdigest()
    assert verify_archive(config, None).ok
    signed = [(where["key"], where["signature_key"]),
              *((p["key"], p["signature_key"]) for p in result.report.get("parts", []))]
    other = certfactory.make(tmp_path / "other", "Some employee", usages=("digital_signature", "content_commitment"), ec_key=True)
    stranger = Signer(load_identity(str(other.cert_path), str(other.key_path)))
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]

    def named(key: str) -> list[str]:
        problems = [p.problem for p in verify_archive(config, None).problems]
        assert problems and all(key in p and result.report["run"] in p for p in problems), problems
        return problems

    for key, signature_key in dict.fromkeys((signed[0], signed[-1])):
        genuine = stored_path(config, signature_key).read_bytes()
        forged = stranger.sign_detached(stored_path(config, key).read_bytes())  # valid, by another certificate
        for planted in (b"not a signature", forged):
            overwrite_stored(config, signature_key, planted)
            assert any("SHA-256" in p and "the run recorded" in p for p in named(signature_key))
        # the digest edited to the planted one's too: the signer is still checked against signed_by
        pins = {"report.signature_sha256" if key == where["key"] else f"report.part_versions.{len(signed) - 2}."
                "signature_sha256": hashlib.sha256(forged).hexdigest()}
        runs.update_one({"_id": result.report["run"]}, {"$set": pins})
        assert any("another certificate" in p for p in named(signature_key))
        # a run recorded before signatures were pinned (no SHA-256, no version): still checked over the report
        runs.update_one({"_id": result.report["run"]}, {"$unset": {
            "report.signature_sha256": "", "report.signature_version_id": "", "report.version_id": "",
            "report.part_versions": ""}})
        assert any("another certificate" in p for p in named(signature_key))
        overwrite_stored(config, signature_key, b"not a signature")
        assert any("does not verify" in p for p in named(signature_key))
        overwrite_stored(config, signature_key, genuine)
        assert verify_archive(config, None).ok
        runs.update_one({"_id": result.report["run"]}, {"$set": {"report": where}})
        assert verify_archive(config, None).ok


def test_a_report_signature_planted_over_the_locked_one_in_s3_is_named(make_config, bucket, moto_endpoint) -> None:
    """Object Lock keeps a version, not the key: a plain PUT adds a new current version of the signature, which
    a GET without a version id (the documented check's copy) returns. verify names it and still checks the
    recorded version."""
    import boto3
    config = retention_config(make_config, storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                              storage__object_lock_mode="COMPLIANCE",
                              retention__rules={"default": {"source_days": 0, "archive_days": 2, "lock_days": 1}})
    archive(config, 1)
    result = retention(config)
    where = result.location
    assert where["signature_version_id"] and where["version_id"]
    assert verify_archive(config, None).ok
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    planted = client.put_object(Bucket=bucket, Key="chats/" + where["signature_key"], Body=b"planted")["VersionId"]
    problems = [p.problem for p in verify_archive(config, None).problems]
    assert len(problems) == 1 and planted in problems[0] and where["signature_key"] in problems[0], problems
    assert "current" in problems[0] and result.report["run"] in problems[0], problems


@pytest.mark.parametrize("part_items", [2, 20_000], ids=["in parts", "whole"])
def test_a_tombstone_forged_over_an_archive_naming_a_real_run_is_named(make_config, monkeypatch, part_items) -> None:
    """A tombstone was checked only for naming a run on record: an insider who removed an archive (no lock, or
    one expired before archive_days) and turned its entry into a tombstone naming a real run passed
    `verify --all`, though the run never deleted it. Each tombstone is now checked against the run's steps, and
    `verify --all` checks every finished run's steps against its signed report, so a step forged as well is
    named too."""
    from archiver import runs as runs_module
    from archiver.seals import tombstone_fields
    monkeypatch.setattr(runs_module, "PART_ITEMS", part_items)
    config = retention_config(make_config)
    a, b = archive(config, 2)
    age(config, 400, room=a["room"])
    run = retention(config)
    assert verify_archive(config, None).ok and b["room"] not in {i["room"] for i in run.items()}
    entry = index(config).find_one({"room": b["room"]})
    real = index(config).find_one({"room": a["room"]})
    for obj in entry["objects"].values():  # an insider removes B's archive
        path = stored_path(config, obj["key"])
        for each in (path, path.with_name(path.name + ".meta.json")):
            if each.exists():
                each.chmod(0o644)
                each.unlink()
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"status": "deleted", "deletion": real["deletion"],
                                                              **tombstone_fields(entry, "default",
                                                                                 real["deletion"]["at"])}})
    problems = [(p.room, p.problem) for p in verify_archive(config, None).problems]
    assert problems and all(room == b["room"] for room, _ in problems), problems
    assert any(run.report["run"] in p and "no step deleting" in p for _, p in problems), problems
    assert verify_archive(config, [b["room"]]).problems  # a room's verification checks it too
    # the step forged too: the run's signed report does not list it
    db = connect(config["mongodb.uri"])[config["index.database"]]
    steps = db[config["index.retention_steps"]]
    step = steps.find_one({"run": run.report["run"], "room": a["room"], "action": "delete_archive"})
    steps.insert_one({**step, "_id": f"{run.report['run']}:{10**8:09d}", "seq": 10**8, "room": b["room"],
                      "version": entry["version"], "entry_id": entry["_id"]})
    problems = [(p.room, p.subject, p.problem) for p in verify_archive(config, None).problems]
    count = len(list(run.items()))
    assert problems == [(None, f"run report {run.report['run']}", f"its steps in {steps.name} differ from its "
                         f"signed report: item {count + 1} (delete_archive {b['room']} "
                         f"v{entry['version']}, deleted) is not in the report"),
                        (None, f"run {run.report['run']}", f"run {run.report['run']} was not planned by this "
                         f"service: its steps in {steps.name} differ from its signed plan ({count} steps)")], problems
    steps.delete_one({"_id": f"{run.report['run']}:{10**8:09d}"})  # a step of the report edited instead
    steps.update_one({"_id": step["_id"]}, {"$set": {"outcome": "skipped"}})
    problems = [p.problem for p in verify_archive(config, None).problems]
    assert any("differ from its signed report: item" in p and "(delete_archive " + a["room"] in p
               for p in problems), problems
    assert any("marked done, but no step of run" in p for p in problems), problems  # A's tombstone: not deleted


def test_status_shows_the_last_retention_and_erasure_runs_and_one_left_unfinished(make_config, monkeypatch,
                                                                                  tmp_path, capsys) -> None:
    from archiver import retention as retention_module
    from archiver.status import collect

    config = retention_config(make_config)
    chats = archive(config, 3)
    assert collect(config).as_json()["last_retention"] is None and collect(config).last_erasure is None
    age(config, 40)
    done = retention(config)
    erased = erase(config, customer_of(chats[0]))
    status = collect(config).as_json()
    last = status["last_retention"]
    assert (last["run"], last["state"], last["counts"]) == (done.report["run"], "done", done.report["counts"])
    assert last["report"] == done.location["key"] and last["rooms_affected"] == 3 and last["finished_at"]
    assert status["last_erasure"]["run"] == erased.report["run"]

    def stop(self, run_id, batch):  # killed while executing: the next run resumes it
        raise KeyboardInterrupt("killed")
    monkeypatch.setattr(retention_module.Deletions, "_execute", stop)
    age(config, 400)
    with pytest.raises(KeyboardInterrupt):
        retention(config)
    last = collect(config).as_json()["last_retention"]
    assert last["state"] == "executing" and last["run"] != done.report["run"] and last["finished_at"] is None
    toml = write_toml(tmp_path / "s.toml", {k: config[k] for k in ("mongodb.uri", "index.database")})
    assert main(["--config", str(toml), "status"]) == 0
    text = capsys.readouterr().out
    assert f"last retention run: {last['run']} executing" in text, text
    assert f"last erasure run: {erased.report['run']} done" in text, text


def test_the_source_of_a_chat_that_has_not_ended_is_kept_though_an_interim_copy_is_archived(make_config) -> None:
    """`export --force` archives a running chat as interim: the platform may still be writing to it, so
    retention never deletes its source on the strength of that copy (the archive of it goes by its own rule)."""
    import random as random_module

    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    config = retention_config(make_config)
    chat, contact = make_chat(random_module.Random(4), messages=5, ended=False, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    report, _ = Archiver(config).archive_room(chat["room"], "interim")
    assert report.archived == 1
    age(config, 40)
    result = retention(config)
    (item,) = result.report["items"]
    assert (item["action"], item["outcome"]) == ("skip", "skipped") and "has not ended" in item["reason"], item
    assert source(config).count_documents({}) == 1


def test_an_erasure_deletes_the_source_of_a_room_with_two_contact_documents(make_config) -> None:
    """Two contact documents quarantine a room for archiving (which one is its contact?); for an erasure
    both hold the customer's data, and both go with the chat, not one of them kept and the source left."""
    from bson import ObjectId
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db[config["source.contacts"]].insert_one({"_id": ObjectId(), "id": chat["room"], "title": "a second one"})
    result = erase(config, customer_of(chat))
    assert outcomes(result)[("delete_source", chat["room"], None)][0] == "deleted"
    assert db[config["source.chats"]].count_documents({"room": chat["room"]}) == 0
    assert db[config["source.contacts"]].count_documents({"id": chat["room"]}) == 0


@pytest.mark.parametrize("own", [6, [{"note": "the platform's own"}]], ids=["a count", "a non-empty list"])
def test_an_erasure_deletes_the_source_of_a_chat_with_a_messages_field_of_its_own(make_config, own) -> None:
    """With source.messages, a chat document with a `messages` field of its own is quarantined for archiving,
    yet readable: an erasure deletes the chat, its messages and its contact, not only plans to."""
    import copy
    import random

    from archiver.samples import make_chat

    config = retention_config(make_config, source__messages="messages")
    (chat, contact), (other, other_contact) = (make_chat(random.Random(seed), messages=6) for seed in (3, 4))
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for doc, card, fields in ((chat, contact, {"messages": own}), (other, other_contact, {})):
        db.messages.insert_many(copy.deepcopy(doc["messages"]))
        db.chats.insert_one({**{k: v for k, v in doc.items() if k != "messages"}, **fields})
        db.contacts.insert_one(copy.deepcopy(card))
    result = erase(config, customer_of(chat))
    assert outcomes(result)[("delete_source", chat["room"], None)][0] == "deleted"
    assert db.chats.count_documents({"room": chat["room"]}) == 0
    assert db.messages.count_documents({"room": chat["room"]}) == 0
    assert db.contacts.count_documents({"id": chat["room"]}) == 0
    assert db.chats.count_documents({}) == db.contacts.count_documents({}) == 1
    assert db.messages.count_documents({}) == len(other["messages"])


# -- what an interrupted attempt left (a `superseded` entry's objects) -----------------------------------------

def _archived_after_an_interrupted_attempt(make_config, monkeypatch):
    """A chat whose first attempt stored two objects and failed at the third; its source then changed, so v1 is
    superseded (its two objects listed as leftovers) and v2 archived."""
    import functools
    import random

    from archiver import artifacts
    from archiver.samples import make_chat
    from archiver.store import StoreError
    from test_pipeline import build_failing_record_puts, recent_ms, seed

    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(40), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "archive_in_worker",
                      functools.partial(build_failing_record_puts, StoreError("connection reset")))
        archiver.run_pass()
    source(config).update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "call"}})
    jobs(config).update_one({"_id": chat["room"]}, {"$set": {"available_at": 0}})
    assert archiver.run_pass().archived == 1
    v1 = index(config).find_one({"version": 1})
    assert v1["status"] == "superseded" and len(v1["superseded_objects"]) == 2
    return config, chat, v1["superseded_objects"]


def _room_keys(config, chat) -> set[str]:
    return {k for k in open_store(config).keys() if not k.startswith(".reports")}


def test_verify_accepts_an_interrupted_attempt_whose_objects_its_entry_lists(make_config, monkeypatch) -> None:
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    report = verify_archive(config, None)
    assert report.ok, [str(p) for p in report.problems]
    assert set(leftovers) <= _room_keys(config, chat)


def test_an_erasure_deletes_what_an_interrupted_attempt_left(make_config, monkeypatch) -> None:
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    result = erase(config, customer_of(chat))
    assert outcomes(result)[("delete_leftovers", chat["room"], 1)][0] == "deleted"
    assert _room_keys(config, chat) == set()
    entry = index(config).find_one({"version": 1})
    assert entry["superseded_objects"] == [] and entry["leftovers_deleted"]["keys"] == leftovers
    assert verify_archive(config, None).ok


def test_retention_deletes_what_an_interrupted_attempt_left_with_the_rooms_archive(make_config,
                                                                                   monkeypatch) -> None:
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    def older(days: int) -> None:  # the archive, and the attempt before it
        age(config, days, status="archived")
        for entry in index(config).find({"status": "superseded"}):
            index(config).update_one({"_id": entry["_id"]}, {"$set": {
                "created_at": entry["created_at"] - dt.timedelta(days=days)}})
    older(100)  # the source is due (30 days), the archive and the leftovers not (365)
    retention(config)
    assert set(leftovers) <= _room_keys(config, chat)
    older(300)
    result = retention(config)
    assert outcomes(result)[("delete_leftovers", chat["room"], 1)][0] == "deleted"
    assert _room_keys(config, chat) == set()
    assert verify_archive(config, None).ok


def test_a_held_room_keeps_what_an_interrupted_attempt_left(make_config, monkeypatch) -> None:
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    open_holds(config).place(SearchFilters(room=chat["room"]), "Case L", "litigation", ACTOR)
    result = erase(config, customer_of(chat))
    kept = [i for i in result.report["items"] if i["version"] == 1]
    assert [(i["action"], i["outcome"]) for i in kept] == [("skip", "skipped")] and "Case L" in kept[0]["reason"]
    assert set(leftovers) <= _room_keys(config, chat)


def test_an_erasure_removes_the_temporary_files_killed_writes_left_in_the_rooms_folders(make_config) -> None:
    """A worker killed mid-put leaves its temporary file (a whole encrypted transcript) in the version's folder:
    the erasure that deletes the version deletes it too, or the customer's chat would outlive it."""
    import os
    import time

    config = retention_config(make_config)
    chat = archive(config, 1)[0]
    entry = index(config).find_one()
    pdf = stored_path(config, entry["objects"]["pdf"]["key"])
    temp = pdf.with_name(".tmp-abc123")
    temp.write_bytes(pdf.read_bytes())
    os.utime(temp, (time.time() - config["archive.lease_seconds"] - 60,) * 2)
    erase(config, customer_of(chat))
    assert not temp.exists() and not any(pdf.parent.iterdir())
    assert verify_archive(config, None).ok


def test_an_erasure_while_the_pass_is_archiving_the_chat_leaves_it_to_a_later_request(make_config,
                                                                                      monkeypatch) -> None:
    """The pass has claimed and read the chat; an erasure deleting its source now would be undone by the pass,
    which archives what it read. The source is kept, named as being archived; erased once the pass is done."""
    import random

    from archiver.index import ArchiveIndex
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(5), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    real, during = ArchiveIndex.begin, []

    def begin(self, *args, **kwargs):
        if not during:  # another process's erasure, between the pass's read and its index entry
            during.append(erase(config, customer_of(chat)))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(ArchiveIndex, "begin", begin)
    assert Archiver(config).run_pass().archived == 1
    monkeypatch.undo()
    [item] = [i for i in during[0].report["items"] if i["action"] == "delete_source"]
    assert item["outcome"] == "skipped" and "being archived" in item["detail"], item
    assert source(config).count_documents({}) == 1
    erase(config, customer_of(chat))  # again, once the pass is done
    assert source(config).count_documents({}) == 0
    assert index(config).find_one()["status"] == "deleted"


def test_a_run_finished_by_someone_else_names_who_started_it(make_config, monkeypatch) -> None:
    """Alice's erasure stops after its first deletion; Bob's request finishes it first: the audit log, the run and
    its signed report name Alice as who started it (the audit log names Bob as who finished it)."""
    from archiver.audit import Actor
    from archiver.retention import Deletions
    from archiver.source import ChatSource

    class PowerCut(BaseException):
        pass

    config = retention_config(make_config)
    chats = archive(config, 2)
    x, y = customer_of(chats[0]), customer_of(chats[1])
    real = ChatSource.delete_room

    def delete_then_power_cut(self, *args):
        real(self, *args)
        raise PowerCut()
    deletions = Deletions(config)
    with monkeypatch.context() as patch, pytest.raises(PowerCut):
        patch.setattr(ChatSource, "delete_room", delete_then_power_cut)
        deletions.run("erasure", deletions.plan_erasure(x, "request of X"), {"customer": x, "reason": "request of X"},
                      False, Actor("alice", "dpo-laptop"))
    deletions = Deletions(config)
    deletions.run("erasure", deletions.plan_erasure(y, "request of Y"), {"customer": y, "reason": "request of Y"},
                  False, Actor("bob", "ops"))
    db = connect(config["mongodb.uri"])[config["index.database"]]
    [finished] = [r for r in db[config["index.audit"]].find({"action": "erase"}) if r["reason"] == "request of X"]
    assert finished["actor"] == {"user": "bob", "host": "ops"}
    assert finished["filters"]["started_by"] == {"user": "alice", "host": "dpo-laptop"}
    run = db[config["index.retention_runs"]].find_one({"params.customer": x})
    assert run["started_by"] == {"user": "alice", "host": "dpo-laptop"}
    report = json.loads(open_store(config).get(run["report"]["key"]))
    assert report["started_by"] == {"user": "alice", "host": "dpo-laptop"}


def test_a_run_on_a_machine_whose_clock_disagrees_with_the_database_stops_before_deleting(make_config,
                                                                                         monkeypatch) -> None:
    """What is due is decided by the date: a clock 40 days fast would delete sources archived today under
    source_days 30. The run compares its clock with MongoDB's first and stops (exit 2) when they disagree."""
    import archiver.retention as retention_module

    config = retention_config(make_config)
    archive(config, 2)
    fast = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=40)
    monkeypatch.setattr(retention_module, "now", lambda: fast)
    for dry_run in (True, False):
        with pytest.raises(ConfigError, match="clock"):
            retention(config, dry_run=dry_run)
    assert source(config).count_documents({}) == 2


def test_what_an_interrupted_attempt_left_goes_even_once_the_rooms_archive_is_gone(make_config, monkeypatch) -> None:
    """The room's archive is deleted first (the attempt is younger); later runs still find the attempt's
    objects, though the room has no archived version left to take a rule from."""
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    age(config, 400, status="archived")
    first = retention(config)
    assert ("delete_archive", chat["room"], 2) in outcomes(first) and set(leftovers) <= _room_keys(config, chat)
    for entry in index(config).find({"status": "superseded"}):
        index(config).update_one({"_id": entry["_id"]}, {"$set": {"created_at": entry["created_at"] - dt.timedelta(days=400)}})
    assert outcomes(retention(config))[("delete_leftovers", chat["room"], 1)][0] == "deleted"
    assert _room_keys(config, chat) == set()


def test_a_rule_that_keeps_archives_for_ever_keeps_what_an_interrupted_attempt_left(make_config,
                                                                                    monkeypatch) -> None:
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    config = config.with_overrides(**{"retention.rules": {"default": {"source_days": 30}}})
    age(config, 40, status="archived")  # the source is due: the room is planned
    for entry in index(config).find({"status": "superseded"}):
        index(config).update_one({"_id": entry["_id"]}, {"$set": {"created_at": entry["created_at"] - dt.timedelta(days=4000)}})
    result = retention(config)
    assert not [i for i in result.report["items"] if i["action"] == "delete_leftovers"]
    assert set(leftovers) <= _room_keys(config, chat)


def test_what_an_attempt_left_in_a_room_never_archived_is_kept_for_want_of_a_rule(make_config, monkeypatch) -> None:
    """An attempt's entry carries none of the fields rules match (type, channel, service): with no archive or
    tombstone to take the room's rule from, its objects are kept rather than deleted under the default rule."""
    config, chat, leftovers = _archived_after_an_interrupted_attempt(make_config, monkeypatch)
    index(config).delete_one({"version": 2})  # as if the chat had never been archived
    for entry in index(config).find({"status": "superseded"}):
        index(config).update_one({"_id": entry["_id"]}, {"$set": {"created_at": entry["created_at"] - dt.timedelta(days=4000)}})
    result = retention(config)
    assert not [i for i in result.report["items"] if i["action"] == "delete_leftovers"]
    assert set(leftovers) <= _room_keys(config, chat)


def test_a_run_whose_audit_entry_is_refused_stays_unfinished_until_one_is_written(make_config, tmp_path, monkeypatch,
                                                                                  capsys) -> None:
    """The entry was written after the run was marked done: when it failed (a full disk, a too large entry)
    the deletions were never audited and the next run had nothing to resume."""
    from retrieval_helpers import audit, refuse_audit
    config = retention_config(make_config)
    chats = archive(config, 3)
    age(config, 400)
    toml = _cli_toml(config, tmp_path)
    with monkeypatch.context() as patched:
        refuse_audit(patched, config)
        assert main(["--config", str(toml), "retention", "run"]) == 1
    out = capsys.readouterr()
    assert out.out.count("DELETED  delete_source") == 3
    assert "the audit log could not be written" in out.err and "No space left on device" in out.err
    assert "the next `archiver retention run` writes it" in out.err
    assert source(config).count_documents({}) == 0 and not audit(config)
    runs = connect(config["mongodb.uri"])[config["index.database"]][config["index.retention_runs"]]
    (run,) = runs.find({"kind": "retention"})
    assert run["state"] == "reporting"  # unfinished: resumed by the next run
    again = retention(config)
    assert again.resumed and again.report["run"] == run["_id"] and not again.unaudited
    (entry,) = audit(config)
    assert entry["action"] == "retention_run" and entry["filters"]["run"] == run["_id"]
    assert entry["rooms"] == sorted(c["room"] for c in chats) and entry["rooms_total"] == 3
    assert runs.find_one({"_id": run["_id"]})["state"] == "done"


def test_a_run_audit_entry_streams_its_rooms_sorted_and_bounded(make_config) -> None:
    """A run over more rooms than an entry lists: the first 1,000 sorted, the count, the hash of all
    (from the ledger's steps; skipped and unexecuted items are not rooms affected)."""
    import hashlib as hl
    from archiver.audit import sorted_room_summary
    from archiver.runs import RunLedger
    config = retention_config(make_config)
    db = connect(config["mongodb.uri"])[config["index.database"]]
    ledger = RunLedger(db[config["index.retention_runs"]], db[config["index.retention_steps"]])
    ledger.ensure_indexes()
    rooms = [f"R{n:05d}" for n in range(2500)]
    steps = [{"_id": f"run-1:{n:09d}", "run": "run-1", "seq": n, "room": room, "outcome": outcome}
             for n, (room, outcome) in enumerate([(r, "deleted") for r in reversed(rooms)] + [(rooms[0], "deleted")]
                                                 + [("S-skipped", "skipped"), ("S-pending", "")])]
    steps.append({"_id": "run-2:000000001", "run": "run-2", "seq": 1, "room": "OTHER", "outcome": "deleted"})
    db[config["index.retention_steps"]].insert_many(steps)
    summary = sorted_room_summary(ledger.affected_rooms("run-1"))
    assert summary.total == 2500 and summary.listed == rooms[:1000]
    assert summary.sha256 == hl.sha256("".join(r + "\n" for r in rooms).encode()).hexdigest()


def test_an_erasure_deletes_the_source_of_a_room_the_driver_cannot_decode(make_config, monkeypatch) -> None:
    """A room whose documents MongoDB cannot decode (a corrupt message or contact) is quarantined for archiving;
    an erasure needs only its chat's _id to delete it, not the whole chat read: it goes, contact included."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    undecodable(monkeypatch, chat["room"])
    result = erase(config, customer_of(chat))
    assert outcomes(result)[("delete_source", chat["room"], None)][0] == "deleted", outcomes(result)
    db = connect(config["mongodb.uri"])[config["source.database"]]
    assert db[config["source.chats"]].count_documents({"room": chat["room"]}) == 0
    assert db[config["source.contacts"]].count_documents({"id": chat["room"]}) == 0


def test_an_erasure_after_the_source_is_gone_finds_a_customer_whose_first_message_states_no_role(make_config) -> None:
    """Review "lossless" F2b: the customer's first message has no isAgent, the later ones say false, and the contact
    names someone else (a call-back a colleague opened). The index had them in neither `customers` nor
    `opened_by`: once retention deleted the source, the erasure never looked at the archive of their messages,
    and its report said nothing."""
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    import random
    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(8), messages=8, start_ms=recent_ms(60))
    mine = [m for m in chat["messages"] if m["data"]["content"]["user"]["isAgent"] is False]
    customer = mine[0]["data"]["content"]["user"]["id"]
    del mine[0]["data"]["content"]["user"]["isAgent"]
    contact["userID"] = "someone-else"
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    age(config, 40)
    retention(config)
    assert source(config).count_documents({}) == 0
    result = erase(config, customer, include_shared=True)  # (shared: found, not kept; kept without the flag)
    assert outcomes(result) == {("delete_archive", chat["room"], 1): (  # opened by the colleague's "someone-else"
        "deleted", "erasure request: GDPR request 1; shared: 1 other customer(s) wrote in or opened this chat; no "
                   "trace of them is kept: search.key_file is not set")}, \
        result.report


# -- retention deletes exactly what it compared with the archive (review "lossless", F3 and F4) ----------------

def _seed_apart(config, chat, contact):
    """CHAT with its messages in a collection of their own (source.messages = "messages")."""
    import copy

    db = connect(config["mongodb.uri"])[config["source.database"]]
    db.messages.insert_many(copy.deepcopy(chat["messages"]))
    db.chats.insert_one({k: v for k, v in chat.items() if k != "messages"})
    db.contacts.insert_one(copy.deepcopy(contact))
    return db


def _archived_chat(config, rng_seed: int, apart: bool = False):
    import random

    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    chat, contact = make_chat(random.Random(rng_seed), messages=6, start_ms=recent_ms(60))
    if apart:
        db = _seed_apart(config, chat, contact)
    else:
        seed(config, [(chat, contact)])
        db = connect(config["mongodb.uri"])[config["source.database"]]
    assert Archiver(config).run_pass().archived == 1
    age(config, 40)
    return chat, db


@pytest.mark.parametrize("where", ["message", "contact"])
def test_retention_keeps_a_document_whose_room_is_an_array_holding_it(make_config, where) -> None:
    """F3: `$in` loads a message whose room is ["R"] (or a contact whose id is), `$eq` deletes it with the room's;
    no archive holds it. It was left out of the archive without a word, then deleted: now the room's source is
    read as a problem (the document named) and kept."""
    config = retention_config(make_config, source__messages="messages", retention__delete_contacts=True)
    chat, db = _archived_chat(config, 3, apart=True)
    if where == "message":
        db.messages.insert_one({"room": [chat["room"]], "data": {"content": {"text": "I withdraw my consent"}}})
    else:
        db.contacts.insert_one({"id": [chat["room"]], "dataCollections": {"note": "I withdraw my consent"}})
    result = retention(config)
    assert db.messages.count_documents({"data.content.text": "I withdraw my consent"}) \
        + db.contacts.count_documents({"dataCollections.note": "I withdraw my consent"}) == 1
    assert db.chats.count_documents({"room": chat["room"]}) == 1
    [item] = [i for i in result.report["items"] if i["room"] == chat["room"] and i["action"] == "skip"]
    assert "cannot be read" in item["reason"] and "[" + repr(chat["room"]) + "]" in item["reason"], item


@pytest.mark.parametrize("where", ["message", "contact"])
def test_the_pass_quarantines_a_room_a_document_names_in_an_array(make_config, where) -> None:
    """F3: such a document is not dropped without a word: the room is quarantined, the document named."""
    import random

    from archiver.samples import make_chat
    from test_pipeline import recent_ms

    config = retention_config(make_config, source__messages="messages")
    chat, contact = make_chat(random.Random(5), messages=6, start_ms=recent_ms(60))
    db = _seed_apart(config, chat, contact)
    field, collection = ("room", db.messages) if where == "message" else ("id", db.contacts)
    collection.insert_one({"_id": "STRAY", field: [chat["room"], "other"]})
    assert Archiver(config).run_pass().archived == 0
    job = jobs(config).find_one({"_id": chat["room"]})
    assert job["state"] == "quarantined", job
    assert "'STRAY'" in job["reason"] and "array" in job["reason"], job["reason"]


def test_a_message_pushed_after_the_check_is_not_deleted_with_the_chat(make_config, monkeypatch) -> None:
    """F4: the chat is re-opened (a message $pushed) between retention's check and its deletion: the chat is
    kept, the step says so and the room is queued for archiving."""
    from archiver import retention as retention_module

    config = retention_config(make_config)
    chat, db = _archived_chat(config, 9)
    late = {"_id": "LATE", "data": {"content": {"text": "Please do not close my case"}}}
    calls, original = [], retention_module._raw

    def raw_then_reopen(c, k):
        calls.append(1)
        if len(calls) == 2:  # the comparison right before the deletion (the first: the plan's)
            db.chats.update_one({"room": chat["room"]}, {"$push": {"messages": late}})
        return original(c, k)

    monkeypatch.setattr(retention_module, "_raw", raw_then_reopen)
    result = retention(config)
    assert db.chats.count_documents({"messages._id": "LATE"}) == 1
    outcome, detail = _step(result, chat["room"])
    assert outcome == "skipped" and "changed since it was checked" in detail, detail
    assert jobs(config).find_one({"_id": chat["room"]})["state"] == "pending"


def _step(result, room):
    [item] = [i for i in result.report["items"] if i["room"] == room and i["action"] == "delete_source"]
    return item["outcome"], item.get("detail", "")


def _after_the_check(monkeypatch, write) -> None:
    """WRITE once, right after delete_checked read the chat again (between the last read and the deletions)."""
    from archiver.source import ChatSource

    real, done = ChatSource._as_stored, []

    def as_stored(self, *args):
        found = real(self, *args)
        if not done:
            done.append(write())
        return found
    monkeypatch.setattr(ChatSource, "_as_stored", as_stored)


def test_a_chat_changed_after_its_last_read_is_not_deleted(make_config, monkeypatch) -> None:
    """F4: the chat's deletion matches it field by field, so a write after the last read makes it match nothing."""
    config = retention_config(make_config)
    chat, db = _archived_chat(config, 10)
    _after_the_check(monkeypatch, lambda: db.chats.update_one({"room": chat["room"]},
                                                              {"$set": {"closedBy": "a late edit"}}))
    result = retention(config)
    assert db.chats.count_documents({"closedBy": "a late edit"}) == 1
    outcome, detail = _step(result, chat["room"])
    assert outcome == "skipped" and "changed since it was checked" in detail, detail
    assert jobs(config).find_one({"_id": chat["room"]})["state"] == "pending"


def test_a_message_document_written_after_the_check_is_kept_with_its_chat(make_config, monkeypatch) -> None:
    """F4 with source.messages: a message document written since the check keeps the chat whole (all its message
    documents, the new one too): the next pass archives it with the new one; the step says so."""
    config = retention_config(make_config, source__messages="messages")
    chat, db = _archived_chat(config, 11, apart=True)
    _after_the_check(monkeypatch, lambda: db.messages.insert_one(
        {"_id": "NEW", "room": chat["room"], "data": {"content": {"text": "I have new evidence"}}}))
    result = retention(config)
    assert db.messages.count_documents({"room": chat["room"]}) == len(chat["messages"]) + 1
    assert db.chats.count_documents({"room": chat["room"]}) == 1
    outcome, detail = _step(result, chat["room"])
    assert outcome == "skipped" and "message documents written, changed or removed since it was checked" in detail, \
        detail
    assert jobs(config).find_one({"_id": chat["room"]})["state"] == "pending"


def test_a_second_contact_written_after_the_check_is_left_and_reported(make_config, monkeypatch) -> None:
    """F4 with retention.delete_contacts: the compared contact goes by _id; one written since stays, and the
    step does not say the room's source is gone (failed, naming it)."""
    config = retention_config(make_config, retention__delete_contacts=True)
    chat, db = _archived_chat(config, 12)
    _after_the_check(monkeypatch, lambda: db.contacts.insert_one({"_id": "SECOND", "id": chat["room"]}))
    result = retention(config)
    assert [c["_id"] for c in db.contacts.find({"id": chat["room"]})] == ["SECOND"]
    assert db.chats.count_documents({"room": chat["room"]}) == 0
    outcome, detail = _step(result, chat["room"])
    assert outcome == "failed" and "1 contact document" in detail, detail
    assert not result.ok


@pytest.fixture(params=["mongomock", "nx-27017"])
def any_source(request, mongo_uri):
    from archiver.source import ChatSource

    uri = mongo_uri if request.param == "mongomock" else request.getfixturevalue("nx_uri")
    db = connect(uri)[f"src_{uuid.uuid4().hex[:10]}"]
    yield db, ChatSource(db, "chats", "contacts")
    db.client.drop_database(db.name)


def _tricky_chat(room: str):
    from bson import Decimal128, Int64, ObjectId

    chat = {"_id": f"id-{room}", "room": room, "when": dt.datetime(2026, 1, 2, 3, 4, 5, 678000),
            "nested": {"b": 1, "a": [1, {"y": 2.5, "x": None}]}, "big": Int64(1 << 40), "zero": 0.0,
            "messages": [{"_id": ObjectId(), "data": {"ts": 1700000000000, "content": {"text": "hi"}}}],
            "owner": {"ref": ObjectId()}}  # ObjectIds nested, as the platform's messages carry them
    if "mongomock" in room:  # (nx-27017 cannot store a Decimal128)
        chat["price"] = Decimal128("1.10")
    return chat


def test_delete_checked_deletes_an_unchanged_chat_whatever_its_values(any_source, request) -> None:
    db, chats = any_source
    room = f"R-{request.node.callspec.id}"
    db.chats.insert_one(_tricky_chat(room))
    chat, contact = chats.load(room)
    assert chats.delete_checked(room, chat, contact, contacts=False) == (True, "")
    assert db.chats.count_documents({}) == 0


@pytest.mark.parametrize("change", ["$push", "a type", "a sign", "a field", "a nested order"])
def test_delete_checked_keeps_a_chat_changed_after_it_was_read(any_source, request, change) -> None:
    """Changes MongoDB's equality would not see (1 and 1.0, 0.0 and -0.0) are found by the bytes read last;
    those made after that are found by the filter (a $push, a field set): never deleted, said why."""
    from bson import Int64

    db, chats = any_source
    room = f"R-{request.node.callspec.id}"
    db.chats.insert_one(_tricky_chat(room))
    chat, contact = chats.load(room)
    update = {"$push": {"$push": {"messages": {"late": True}}}, "a type": {"$set": {"big": float(1 << 40)}},
              "a sign": {"$set": {"zero": -0.0}}, "a field": {"$set": {"new": Int64(0)}},
              "a nested order": {"$set": {"nested": {"a": [1, {"y": 2.5, "x": None}], "b": 1}}}}[change]
    if change == "a type" and "nx" in room and isinstance(db.chats.find_one()["big"], float):
        pytest.skip("nx-27017 keeps no Int64")
    db.chats.update_one({"_id": chat["_id"]}, update)
    if change == "a sign" and math.copysign(1, db.chats.find_one()["zero"]) > 0:
        pytest.skip("nx-27017 keeps no -0.0")
    deleted, why = chats.delete_checked(room, chat, contact, contacts=False)
    assert (deleted, db.chats.count_documents({})) == (False, 1) and "changed since it was checked" in why, why


@pytest.mark.parametrize("write", ["$push", "$set"])
def test_delete_checked_keeps_a_chat_written_to_after_its_last_read(any_source, request, monkeypatch, write) -> None:
    db, chats = any_source
    room = f"R-{request.node.callspec.id}"
    db.chats.insert_one(_tricky_chat(room))
    chat, contact = chats.load(room)
    update = {"$push": {"messages": {"late": True}}} if write == "$push" else {"$set": {"status": "reopened"}}
    _after_the_check(monkeypatch, lambda: db.chats.update_one({"_id": chat["_id"]}, update))
    deleted, why = chats.delete_checked(room, chat, contact, contacts=False)
    assert (deleted, db.chats.count_documents({})) == (False, 1) and "changed since it was checked" in why, why


def test_delete_checked_keeps_a_chat_its_filter_cannot_match(any_source, request) -> None:
    """A value the server does not find equal to itself (NaN on mongomock) errs on keeping: the step says the
    chat changed; a server that finds NaN equal to NaN (MongoDB) deletes it."""
    db, chats = any_source
    room = f"R-{request.node.callspec.id}"
    if "nx" in room:
        pytest.skip("nx-27017 stores no NaN (its JSON refuses it)")
    db.chats.insert_one({"_id": room, "room": room, "score": float("nan")})
    chat, contact = chats.load(room)
    deleted, why = chats.delete_checked(room, chat, contact, contacts=False)
    assert db.chats.count_documents({}) == (0 if deleted else 1)
    assert deleted if REAL_MONGO else (not deleted and "changed since it was checked" in why), (deleted, why)


def test_an_erasure_finds_a_chat_never_archived_whose_messages_name_the_customer_as_the_bare_user(make_config) -> None:
    """Review "today2": the transcript reads `data.content.user` given as text as the sender's id, and the index
    lists them; an erasure's source lookup read `data.content.user.id` alone, said nothing to do and left the
    chat (the next pass archived it, naming the customer)."""
    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed
    import random
    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(21), messages=6, start_ms=recent_ms(60))
    for m in chat["messages"]:
        if m["data"]["content"]["user"].get("isAgent") is False:
            m["data"]["content"]["user"] = "CUST-TEXT-7"
    contact.update(userID="someone-else", users={})
    seed(config, [(chat, contact)])
    result = erase(config, "CUST-TEXT-7", include_shared=True)  # (opened by someone else: shared)
    assert source(config).count_documents({"room": chat["room"]}) == 0, result.report


@pytest.mark.parametrize("apart", [False, True])
def test_a_chat_written_to_during_its_deletion_keeps_all_of_it(make_config, monkeypatch, apart) -> None:
    """Review "today2": the contact and the message documents were deleted before the chat; a write to the chat in
    between made its deletion match nothing, and the step said "source chat kept" with its contact and messages
    gone (the next version would have held the chat without them). The chat goes first now: kept, all of it."""
    from archiver.source import ChatSource

    extra = {"source__messages": "messages"} if apart else {}
    config = retention_config(make_config, retention__delete_contacts=True, **extra)
    chat, db = _archived_chat(config, 31, apart=apart)
    real, done = ChatSource._as_stored, []

    def write_after_the_last_read(self, *args):  # the chat's last read, right before its own deletion
        found = real(self, *args)
        if not done:
            done.append(db.chats.update_one({"room": chat["room"]}, {"$set": {"closedBy": "reopened"}}))
        return found
    monkeypatch.setattr(ChatSource, "_as_stored", write_after_the_last_read)
    result = retention(config)
    outcome, detail = _step(result, chat["room"])
    assert outcome == "skipped" and "changed since it was checked" in detail, detail
    assert db.chats.count_documents({"room": chat["room"]}) == 1
    assert db.contacts.count_documents({"id": chat["room"]}) == 1
    if apart:
        assert db.messages.count_documents({"room": chat["room"]}) == len(chat["messages"])


def test_messages_a_deletion_cut_short_left_after_its_chat_are_named_when_the_run_resumes(make_config,
                                                                                           monkeypatch) -> None:
    """The chat goes first: a crash before its message documents and contact went leaves them; the resumed step
    names them (failed: a person should look), it does not report the room's source deleted."""
    from archiver.source import ChatSource

    config = retention_config(make_config, source__messages="messages", retention__delete_contacts=True)
    chat, db = _archived_chat(config, 32, apart=True)

    def crash(self, *args):
        raise KeyboardInterrupt("killed right after the chat went")
    monkeypatch.setattr(ChatSource, "_delete_unchanged", crash)
    with pytest.raises(KeyboardInterrupt):
        retention(config)
    monkeypatch.undo()
    assert db.chats.count_documents({"room": chat["room"]}) == 0
    result = retention(config)
    outcome, detail = _step(result, chat["room"])
    assert outcome == "failed" and f"{len(chat['messages'])} message documents and 1 contact document" in detail, detail
    assert db.messages.count_documents({"room": chat["room"]}) == len(chat["messages"])


def test_a_message_document_changed_before_the_chats_deletion_keeps_the_chat(make_config, monkeypatch) -> None:
    """Review "att2": only the number of message documents was checked before the chat went; a message changed
    meanwhile (a late messageSeen) kept the count: the chat was deleted, the changed message left without it,
    its change never archived. Each is compared by its bytes now, before the chat goes."""
    from archiver.source import ChatSource

    config = retention_config(make_config, retention__delete_contacts=True, source__messages="messages")
    chat, db = _archived_chat(config, 33, apart=True)
    real, done = ChatSource._as_stored, []

    def as_stored(self, collection, ids):  # the chat read again right before its deletion: a message changes then
        found = real(self, collection, ids)
        if not done and collection.name == "chats":
            done.append(db.messages.update_one({"_id": chat["messages"][2]["_id"]},
                                               {"$set": {"data.messageSeen": True}}).modified_count)
        return found
    monkeypatch.setattr(ChatSource, "_as_stored", as_stored)
    result = retention(config)
    assert done == [1]
    outcome, detail = _step(result, chat["room"])
    assert outcome == "skipped" and "changed or removed since it was checked" in detail, detail
    assert db.chats.count_documents({"room": chat["room"]}) == 1
    assert db.messages.count_documents({"room": chat["room"]}) == len(chat["messages"])
    assert db.contacts.count_documents({"id": chat["room"]}) == 1


def test_an_erasure_says_which_chats_it_deletes_are_shared_with_other_customers(make_config, tmp_path,
                                                                                capsys) -> None:
    """Review "court" C8: one customer's erasure deletes a chat another customer opened or wrote in (their
    statements too), and the dry run said nothing of it. Each step of such a chat says how many other customers
    it holds (a count: their ids are not repeated into the erasure's report); a chat of the requester alone
    says nothing more."""
    import random

    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    config = retention_config(make_config)
    rng = random.Random(31)
    (alone, alone_contact), (shared, shared_contact) = (make_chat(rng, messages=4, start_ms=recent_ms(50 - i))
                                                        for i in range(2))
    requester = customer_of(alone)
    for message in shared["messages"]:  # the requester wrote in it too, beside the other customer
        if not message["data"]["content"]["user"]["isAgent"]:
            message["data"]["content"]["user"]["id"] = requester
            break
    shared_contact["userID"] = "CUST_ACCOUNT_HOLDER"  # who opened it
    seed(config, [(alone, alone_contact), (shared, shared_contact)])
    assert Archiver(config).run_pass().archived == 2
    toml = _cli_toml(config, tmp_path)
    capsys.readouterr()
    assert main(["--config", str(toml), "erase", "--customer", requester, "--reason", "GDPR 9", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if shared["room"] in line]
    others = len(({m["data"]["content"]["user"]["id"] for m in shared["messages"]
                   if not m["data"]["content"]["user"]["isAgent"]} | {"CUST_ACCOUNT_HOLDER"}) - {requester})
    assert others == 2  # the chat's own customer, who wrote after the requester, and who opened it
    assert lines and all(f"shared: {others} other customer(s) wrote in or opened this chat" in line
                         for line in lines), out
    own = [line for line in out.splitlines() if alone["room"] in line]
    assert own and not any("shared:" in line for line in own), out


SHARED_KEPT = ("kept: shared: 2 other customer(s) wrote in or opened this chat (their statements would go with it); "
               "erase with --include-shared to remove it anyway")


def _shared_and_own_chats(config):
    """The requester's own chat (ALONE) and a chat they wrote in that two other customers wrote in or opened
    (SHARED: its own customer, and CUST_ACCOUNT_HOLDER who opened it), both archived; and the requester's id."""
    import random

    from archiver.samples import make_chat
    from test_pipeline import recent_ms, seed

    rng = random.Random(31)
    (alone, alone_contact), (shared, shared_contact) = (make_chat(rng, messages=4, start_ms=recent_ms(50 - i))
                                                        for i in range(2))
    requester = customer_of(alone)
    for message in shared["messages"]:
        if not message["data"]["content"]["user"]["isAgent"]:
            message["data"]["content"]["user"]["id"] = requester
            break
    shared_contact["userID"] = "CUST_ACCOUNT_HOLDER"
    seed(config, [(alone, alone_contact), (shared, shared_contact)])
    assert Archiver(config).run_pass().archived == 2
    return alone, shared, requester


def _erase_cli(toml, capsys, requester, *flags) -> tuple[int, dict, str]:
    """Exit code, JSON report and standard error of `archiver erase ... --json FLAGS`."""
    capsys.readouterr()
    code = main(["--config", str(toml), "erase", "--customer", requester, "--reason", "GDPR 10", "--json", *flags])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _steps(report) -> set[tuple[str, str, object, str]]:
    return {(i["action"], i["room"], i["version"], i["reason"]) for i in report["items"]}


def _stored(config, room) -> bool:
    """Whether ROOM's source chat and its archive v1 (every object, checked) are still there."""
    from archiver.integrity import check_stored
    from archiver.store import open_store_for

    entry = index(config).find_one({"room": room, "version": 1})
    return (source(config).count_documents({"room": room}) == 1 and entry["status"] == "archived"
            and check_stored(entry, open_store_for(entry, config)).ok)


def test_an_erasure_keeps_a_chat_shared_with_other_customers_unless_include_shared(make_config, tmp_path,
                                                                                   capsys) -> None:
    """Review "court" C8: a chat other customers wrote in or opened holds their statements (GDPR art. 17(3)(e):
    they may need it for a claim). Without --include-shared the erasure keeps it, source and archive, each step
    saying why and what to do (the others counted, never named), exit 0 with NOT ERASED as for a hold; the
    requester's own chat goes in the same run. The dry run plans exactly that. With --include-shared it goes
    too, and the audit entry of each erasure records whether the flag was given."""
    config = retention_config(make_config)
    alone, shared, requester = _shared_and_own_chats(config)
    toml = _cli_toml(config, tmp_path)
    code, planned, _ = _erase_cli(toml, capsys, requester, "--dry-run")
    assert code == 0
    code, done, err = _erase_cli(toml, capsys, requester)
    assert code == 0 and "NOT ERASED: 2 item(s)" in err, err  # kept, as for a hold: not a failure
    kept = {("skip", shared["room"], None, f"source chat {SHARED_KEPT}"),
            ("skip", shared["room"], 1, f"archive {SHARED_KEPT}")}
    assert {s for s in _steps(done) if s[1] == shared["room"]} == kept, done["items"]
    assert _steps(planned) == _steps(done)  # the dry run showed what the run did
    assert all(i["outcome"] == "skipped" for i in done["items"] if i["room"] == shared["room"])
    assert _stored(config, shared["room"])
    assert {(i["action"], i["outcome"]) for i in done["items"] if i["room"] == alone["room"]} == {
        ("delete_source", "deleted"), ("delete_archive", "deleted")}
    assert source(config).count_documents({"room": alone["room"]}) == 0
    assert index(config).find_one({"room": alone["room"]})["status"] == "deleted"
    assert "CUST_ACCOUNT_HOLDER" not in json.dumps(done) + json.dumps(planned)  # counted, not named

    code, planned, _ = _erase_cli(toml, capsys, requester, "--dry-run", "--include-shared")
    assert code == 0
    code, done, err = _erase_cli(toml, capsys, requester, "--include-shared")
    assert code == 0 and "NOT ERASED" not in err, err
    why = "erasure request: GDPR 10; shared: 2 other customer(s) wrote in or opened this chat"
    untraced = "; no trace of them is kept: search.key_file is not set"  # what the archive's tombstone keeps of them
    assert {(i["action"], i["room"], i["version"], i["reason"], i["outcome"]) for i in done["items"]} == {
        ("delete_source", shared["room"], None, why, "deleted"),
        ("delete_archive", shared["room"], 1, why + untraced, "deleted")}
    assert _steps(planned) == _steps(done)
    assert source(config).count_documents({"room": shared["room"]}) == 0
    assert index(config).find_one({"room": shared["room"]})["status"] == "deleted"
    erasures = [a for a in audit(config) if a["action"] == "erase"]
    assert [a["filters"].get("include_shared") for a in erasures] == [False, True], erasures
    assert done["params"]["include_shared"] is True  # the signed report's too


def test_an_erasure_without_include_shared_says_not_erased_for_a_shared_chat(make_config, tmp_path,
                                                                             capsys) -> None:
    """The text form: the shared chat's two steps are SKIPPED with the reason, and NOT ERASED counts them."""
    config = retention_config(make_config)
    _, shared, requester = _shared_and_own_chats(config)
    toml = _cli_toml(config, tmp_path)
    capsys.readouterr()
    assert main(["--config", str(toml), "erase", "--customer", requester, "--reason", "GDPR 11"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if shared["room"] in line]
    assert len(lines) == 2 and all(line.startswith("SKIPPED") and SHARED_KEPT in line for line in lines), out
    assert "NOT ERASED: 2 item(s)" in out
    assert _stored(config, shared["room"])


def test_a_locked_shared_chat_says_locked_and_include_shared_erases_only_its_source(make_config, tmp_path,
                                                                                     capsys) -> None:
    """A lock wins over "shared" on the archive step, as a hold does; --include-shared then erases the source."""
    config = retention_config(make_config, storage__object_lock_mode="COMPLIANCE", retention__rules={
        "default": {"source_days": 30, "archive_days": 365, "lock_days": 30}})
    _, shared, requester = _shared_and_own_chats(config)
    toml = _cli_toml(config, tmp_path)
    toml.write_text(toml.read_text() + "lock_days = 30\n")  # (the default rule's: shorter than archive_days)
    code, report, _ = _erase_cli(toml, capsys, requester)
    assert code == 0
    steps = {(i["action"], i["version"]): i["reason"] for i in report["items"] if i["room"] == shared["room"]}
    assert steps[("skip", None)] == f"source chat {SHARED_KEPT}", steps
    assert steps[("skip", 1)].startswith("archive kept: locked until "), steps
    code, report, _ = _erase_cli(toml, capsys, requester, "--include-shared")
    assert code == 0
    steps = {(i["action"], i["version"]): i["outcome"] for i in report["items"] if i["room"] == shared["room"]}
    assert steps == {("delete_source", None): "deleted", ("skip", 1): "skipped"}, report["items"]
    assert index(config).find_one({"room": shared["room"]})["status"] == "archived"


def _keyed_erasure_setup(make_config, tmp_path):
    """With a search key (also in the CLI settings): the config, the CLI settings, the requester's own chat, a chat
    they share with two other customers (_shared_and_own_chats), the requester, and one of those others."""
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    config = retention_config(make_config, search__key_file=str(key))
    alone, shared, requester = _shared_and_own_chats(config)
    other = next(m["data"]["content"]["user"]["id"] for m in shared["messages"]
                 if not m["data"]["content"]["user"]["isAgent"] and m["data"]["content"]["user"]["id"] != requester)
    toml = _cli_toml(config, tmp_path)
    toml.write_text(toml.read_text() + f'[search]\nkey_file = "{key}"\n')
    return config, toml, alone, shared, requester, other


def _search_cli(toml, capsys, customer) -> str:
    """What `archiver search --customer CUSTOMER` prints: its table, then its notes (on stderr)."""
    capsys.readouterr()
    assert main(["--config", str(toml), "search", "--customer", customer]) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_a_shared_chat_erased_with_include_shared_leaves_a_keyed_trace_the_others_search_finds(
        make_config, tmp_path, capsys) -> None:
    """Review "court" C8: after one customer's erasure took a chat another customer wrote in, `search --customer
    OTHER` said "0 entries" and nothing else. The tombstone keeps the other customers' ids as keyed hashes (the
    search key's, as word hashes are: no readable id), and the search says the chat was erased, by which run and
    when. The other customer's own erasure removes their trace."""
    config, toml, _, shared, requester, other = _keyed_erasure_setup(make_config, tmp_path)
    code, done, _ = _erase_cli(toml, capsys, requester, "--include-shared")
    assert code == 0
    [archive_step] = [i for i in done["items"] if i["room"] == shared["room"] and i["action"] == "delete_archive"]
    assert "keyed trace of the 2 other customer(s) kept" in archive_step.get("detail", ""), archive_step
    tombstone = index(config).find_one({"room": shared["room"]})
    traces = tombstone["deletion"]["shared_with"]
    assert len(traces) == 2 and other not in json.dumps(tombstone, default=str)
    assert "CUST_ACCOUNT_HOLDER" not in json.dumps(tombstone, default=str)
    for customer in (other, "CUST_ACCOUNT_HOLDER"):
        out = _search_cli(toml, capsys, customer)
        assert "0 entries" in out and (
            f"1 chat of this customer was erased at another customer's request (erasure run {done['run']} on "
            f"{tombstone['deletion']['at']:%Y-%m-%d}); its content is gone") in out, out
    assert "erased at another customer's request" not in _search_cli(toml, capsys, requester)

    code, theirs, _ = _erase_cli(toml, capsys, other)  # the other customer's own erasure: their trace goes
    assert code == 0
    assert ("erase_personal", shared["room"], 1, "erased") in {
        (i["action"], i["room"], i["version"], i["outcome"]) for i in theirs["items"]}, theirs["items"]
    assert len(index(config).find_one({"room": shared["room"]})["deletion"]["shared_with"]) == 1
    assert "erased at another customer's request" not in _search_cli(toml, capsys, other)
    assert "erased at another customer's request" in _search_cli(toml, capsys, "CUST_ACCOUNT_HOLDER")


def test_a_shared_chat_erased_without_a_search_key_keeps_no_trace_and_says_so(make_config, tmp_path,
                                                                              capsys) -> None:
    config = retention_config(make_config)
    _, shared, requester = _shared_and_own_chats(config)
    code, done, _ = _erase_cli(_cli_toml(config, tmp_path), capsys, requester, "--include-shared")
    assert code == 0
    [archive_step] = [i for i in done["items"] if i["room"] == shared["room"] and i["action"] == "delete_archive"]
    assert archive_step["outcome"] == "deleted" and archive_step.get("detail") == (
        "no trace of the 2 other customer(s) kept: search.key_file is not set"), archive_step
    assert "shared_with" not in index(config).find_one({"room": shared["room"]})["deletion"]


def test_an_erasure_without_the_search_key_says_it_cannot_find_the_customers_keyed_trace(make_config, tmp_path,
                                                                                       capsys) -> None:
    """newuser3: A's --include-shared erasure (with the key) kept B's keyed trace; B's own erasure run without
    search.key_file cannot compute it, so it stays: the run says so instead of reporting success alone."""
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    config = retention_config(make_config, search__key_file=str(key))
    _, shared, requester = _shared_and_own_chats(config)
    other = _other_of(shared, requester)
    toml = _cli_toml(config, tmp_path)
    keyed = tmp_path / "keyed.toml"
    keyed.write_text(toml.read_text() + f'[search]\nkey_file = "{key}"\n')
    assert _erase_cli(keyed, capsys, requester, "--include-shared")[0] == 0
    code, _, err = _erase_cli(toml, capsys, other)  # the same service, without search.key_file
    assert code == 0
    assert ("WARNING: 1 erased chat(s) keep keyed traces of the other customers of a shared chat; without "
            "search.key_file this erasure cannot tell whether one is this customer's: erase again with the key") in err, err
    assert len(index(config).find_one({"room": shared["room"]})["deletion"]["shared_with"]) == 2
    assert "keyed traces" not in _erase_cli(keyed, capsys, other)[2]  # with the key: found, and removed
    assert len(index(config).find_one({"room": shared["room"]})["deletion"]["shared_with"]) == 1


@pytest.mark.parametrize("keyed", [True, False])
def test_the_dry_run_of_include_shared_says_whether_a_trace_of_the_others_is_kept(make_config, tmp_path, capsys,
                                                                                  keyed) -> None:
    """newuser3: the person who decides reads, before anything is done, whether the other customers will be told."""
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    config = retention_config(make_config, **({"search__key_file": str(key)} if keyed else {}))
    _, shared, requester = _shared_and_own_chats(config)
    toml = _cli_toml(config, tmp_path)
    if keyed:
        toml.write_text(toml.read_text() + f'[search]\nkey_file = "{key}"\n')
    code, plan, _ = _erase_cli(toml, capsys, requester, "--include-shared", "--dry-run")
    assert code == 0
    [step] = [i for i in plan["items"] if i["room"] == shared["room"] and i["action"] == "delete_archive"]
    assert step["reason"].endswith("; a keyed trace of them is kept in the tombstone (search --customer says the chat "
                                   "was erased)" if keyed else "; no trace of them is kept: search.key_file is not set"), step
    assert _stored(config, shared["room"])  # a dry run


@pytest.mark.parametrize("flags", [(), ("--include-shared",)])
def test_a_held_shared_chat_stays_held_whatever_include_shared_says(make_config, tmp_path, capsys, flags) -> None:
    """A hold wins over --include-shared, and its reason is the one given (not "shared")."""
    config = retention_config(make_config)
    _, shared, requester = _shared_and_own_chats(config)
    open_holds(config).place(SearchFilters(room=shared["room"]), "Case S", "dispute", ACTOR)
    toml = _cli_toml(config, tmp_path)
    for dry in (("--dry-run",), ()):
        code, report, _ = _erase_cli(toml, capsys, requester, *dry, *flags)
        assert code == 0
        assert {s for s in _steps(report) if s[1] == shared["room"]} == {
            ("skip", shared["room"], None, "source chat kept: held by case 'Case S'"),
            ("skip", shared["room"], 1, "archive kept: held by case 'Case S'")}, report["items"]
    assert _stored(config, shared["room"])


def _other_of(shared, requester) -> str:
    """The shared chat's own customer (not the requester, not who opened it)."""
    return next(m["data"]["content"]["user"]["id"] for m in shared["messages"]
                if not m["data"]["content"]["user"]["isAgent"] and m["data"]["content"]["user"]["id"] != requester)


def test_a_chat_another_customer_writes_in_after_the_plan_is_kept_by_an_erasure_without_include_shared(
        make_config, monkeypatch) -> None:
    """Review today4 F1: sharedness was decided at plan time only. Another customer writing in the requester's
    own chat between the plan and the deletion (a long run, or one resumed after a crash: its params are read
    from its record) must keep it, source and archive, as a hold placed meanwhile does."""
    import copy

    from archiver.retention import Deletions

    config = retention_config(make_config)
    alone, _, requester = _shared_and_own_chats(config)
    execute = Deletions._execute

    def late_statement_first(self, run_id, batch):
        if alone["room"] in {s["room"] for s in batch} and not source(config).find_one(
                {"room": alone["room"], "messages.data.content.user.id": "CUST_LATE_OTHER"}):
            late = copy.deepcopy(alone["messages"][0])
            late["data"]["content"]["user"] = {"id": "CUST_LATE_OTHER", "isAgent": False}
            late["data"]["content"]["text"] = "I, another customer, state this"
            source(config).update_one({"room": alone["room"]}, {"$push": {"messages": late}})
        return execute(self, run_id, batch)

    monkeypatch.setattr(Deletions, "_execute", late_statement_first)
    result = erase(config, requester)
    found = ("kept: shared: 1 other customer(s) wrote in or opened this chat (found right before the deletion: the "
             "chat changed after the plan was made); erase with --include-shared to remove it anyway")
    assert {(i["action"], i["outcome"], i.get("detail")) for i in result.report["items"] if i["room"] == alone["room"]
            } == {("delete_source", "skipped", f"source chat {found}"),
                  ("delete_archive", "skipped", f"archive {found}")}, result.report["items"]
    assert source(config).count_documents({"room": alone["room"]}) == 1
    assert index(config).find_one({"room": alone["room"]})["status"] == "archived"
    monkeypatch.setattr(Deletions, "_execute", execute)
    assert {(i["action"], i["outcome"]) for i in erase(config, requester, include_shared=True).report["items"]
            if i["room"] == alone["room"]} == {("delete_source", "deleted"), ("delete_archive", "deleted")}


@pytest.mark.parametrize("flags", [(), ("--include-shared",)])
def test_an_erasure_of_a_shared_chats_retention_tombstone_keeps_it_or_keeps_the_others_trace(
        make_config, tmp_path, capsys, flags) -> None:
    """Review today4 F2: retention deleted a shared chat, its tombstone keeps who took part. The requester's
    erasure without --include-shared keeps that (the others' ids) with the shared reason; with it, the
    personal data goes and the others' keyed trace is kept, so `search --customer OTHER` says it was erased."""
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    config = retention_config(make_config, search__key_file=str(key),
                              retention__rules={"default": {"source_days": 30, "archive_days": 60}})
    _, shared, requester = _shared_and_own_chats(config)
    age(config, 400)
    retention(config)
    assert index(config).find_one({"room": shared["room"]})["opened_by"] == "CUST_ACCOUNT_HOLDER"
    toml = _cli_toml(config, tmp_path)
    toml.write_text(toml.read_text() + f'[search]\nkey_file = "{key}"\n')
    code, done, _ = _erase_cli(toml, capsys, requester, *flags)
    assert code == 0
    steps = [(i["action"], i["outcome"], i["reason"], i.get("detail")) for i in done["items"]
             if i["room"] == shared["room"]]
    tombstone = index(config).find_one({"room": shared["room"]})
    out = _search_cli(toml, capsys, "CUST_ACCOUNT_HOLDER")
    if not flags:
        assert steps == [("skip", "skipped", f"personal data {SHARED_KEPT}", None)], steps
        assert tombstone["opened_by"] == "CUST_ACCOUNT_HOLDER" and "shared_with" not in tombstone["deletion"]
        assert "1 entry" in out and "erased at another customer's request" not in out, out
    else:
        assert steps == [("erase_personal", "erased", "erasure request: GDPR 10; shared: 2 other customer(s) wrote in "
                          "or opened this chat; a keyed trace of them is kept in the tombstone (search --customer says "
                          "the chat was erased); removes from the tombstone: customers, opened_by, agents, handled_by, "
                          "present, participants, title, terms, closed_by (its object hashes and seal leaves stay)",
                          "a keyed trace of the 2 other customer(s) kept in the tombstone "
                          "(`search --customer` says the chat was erased)")], steps
        assert "opened_by" not in tombstone and len(tombstone["deletion"]["shared_with"]) == 2
        assert "0 entries" in out and "1 chat of this customer was erased at another customer's request" in out, out


def test_the_other_customers_own_erasure_finishing_a_shared_deletion_keeps_no_trace_of_them(
        make_config, tmp_path, capsys, monkeypatch) -> None:
    """Review today4 F3: A's --include-shared erasure is cut short by the store (the entry left `deleting`);
    B's own erasure finishes it. Every erasure requester involved is left out of the trace: B's too, else
    `search --customer B` would say B's chat was erased at another customer's request."""
    from archiver.retention import Deletions
    from archiver.store import StoreError
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    config = retention_config(make_config, search__key_file=str(key))
    _, shared, requester = _shared_and_own_chats(config)
    other = _other_of(shared, requester)
    toml = _cli_toml(config, tmp_path)
    toml.write_text(toml.read_text() + f'[search]\nkey_file = "{key}"\n')
    store_of, deletes = Deletions.store_of, []

    class SecondDeleteFails:
        def __init__(self, store):
            self.store = store

        def __getattr__(self, name):
            return getattr(self.store, name)

        def delete(self, key, version_id):
            deletes.append(key)
            if len(deletes) == 2:
                raise StoreError("simulated outage")
            return self.store.delete(key, version_id)

    monkeypatch.setattr(Deletions, "store_of", lambda self, entry: SecondDeleteFails(store_of(self, entry)))
    _erase_cli(toml, capsys, requester, "--include-shared")
    assert index(config).find_one({"room": shared["room"]})["deletion"]["state"] == "deleting"
    code, theirs, _ = _erase_cli(toml, capsys, other)
    assert code == 0
    assert [(i["action"], i["outcome"], i.get("detail")) for i in theirs["items"] if i["room"] == shared["room"]] == [
        ("delete_archive", "deleted", "a keyed trace of the 1 other customer(s) kept in the tombstone "
         "(`search --customer` says the chat was erased)")], theirs["items"]
    assert len(index(config).find_one({"room": shared["room"]})["deletion"]["shared_with"]) == 1
    assert "erased at another customer's request" not in _search_cli(toml, capsys, other)
    assert "erased at another customer's request" in _search_cli(toml, capsys, "CUST_ACCOUNT_HOLDER")


def test_an_erasure_resumed_after_a_crash_keeps_a_chat_shared_since_by_its_own_recorded_request(
        make_config, monkeypatch) -> None:
    """Review today4 F1, the resumed run: its plan may be old. The customer and the flag are its record's, not the
    request that resumes it (another customer's, with --include-shared, here): a chat another customer wrote in
    since the crash is kept."""
    from archiver.retention import Deletions

    config = retention_config(make_config)
    alone, _, requester = _shared_and_own_chats(config)

    def crash(self, run_id, batch):
        raise KeyboardInterrupt("killed before the first batch")
    monkeypatch.setattr(Deletions, "_execute", crash)
    with pytest.raises(KeyboardInterrupt):
        erase(config, requester)
    monkeypatch.undo()
    late = {**alone["messages"][0], "data": {**alone["messages"][0]["data"], "content": {
        **alone["messages"][0]["data"]["content"], "user": {"id": "CUST_LATE_OTHER", "isAgent": False}}}}
    source(config).update_one({"room": alone["room"]}, {"$push": {"messages": late}})
    resumed = erase(config, "CUST_NOBODY", include_shared=True)  # resumes the crashed run first, then runs its own
    assert resumed.report["params"]["customer"] == "CUST_NOBODY" and resumed.report["items"] == []
    [run] = [r for r in Deletions(config).ledger.runs.find({"kind": "erasure"}) if r["params"]["customer"] == requester]
    items = [i for i in Deletions(config).ledger.items(run["_id"]) if i["room"] == alone["room"]]
    assert {(i["action"], i["outcome"]) for i in items} == {("delete_source", "skipped"),
                                                            ("delete_archive", "skipped")}, items
    assert all("found right before the deletion" in i["detail"] for i in items), items
    assert source(config).count_documents({"room": alone["room"]}) == 1


def test_a_customer_erased_at_their_own_request_is_said_so_by_search(make_config, tmp_path, capsys) -> None:
    """newuser3: after a customer's own erasure, `search --customer` said "0 entries" and, like for a typo, named
    similar ids from the index (another customer's, say). It now says that this customer's data was erased at
    their request, by which run and when; the run's record keeps the id as it was asked (the request itself), and
    no similar id is offered for it. A customer never erased still gets the usual notes."""
    config, toml, alone, _, requester, _ = _keyed_erasure_setup(make_config, tmp_path)
    code, done, _ = _erase_cli(toml, capsys, requester, "--include-shared")
    assert code == 0
    tombstone = index(config).find_one({"room": alone["room"]})
    out = _search_cli(toml, capsys, requester)
    assert "0 entries" in out, out
    assert (f"--customer {requester!r}: erased at this customer's request (erasure run {done['run']} on "
            f"{tombstone['deletion']['at']:%Y-%m-%d}); what it erased is gone from the index") in out, out
    assert "ids are compared exactly" not in out and "matched nothing" not in out, out
    assert "erased at this customer's request" not in _search_cli(toml, capsys, requester + "0")  # another id


def test_a_trace_only_erase_personal_step_does_not_claim_to_remove_fields_already_gone(
        make_config, tmp_path, capsys) -> None:
    config, toml, _, shared, requester, other = _keyed_erasure_setup(make_config, tmp_path)
    assert _erase_cli(toml, capsys, requester, "--include-shared")[0] == 0
    tombstone = index(config).find_one({"room": shared["room"]})
    assert "customers" not in tombstone and "opened_by" not in tombstone  # gone with the first erasure
    code, theirs, _ = _erase_cli(toml, capsys, other)
    assert code == 0
    [step] = [i for i in theirs["items"] if i["room"] == shared["room"] and i["action"] == "erase_personal"]
    assert step["outcome"] == "erased"
    assert "removes from the tombstone: customers" not in step["reason"] and "trace" in step["reason"], step

"""The hash-chained audit log: appends, tampering named, two writers never fork the chain."""

from __future__ import annotations

import json
import multiprocessing

from archiver.audit import Actor, AuditLog, open_audit_log
from archiver.cli import main
from archiver.mongo import connect
from conftest import write_toml

ACTOR = Actor(user="alice", host="legal-pc")


def _log(config) -> AuditLog:
    return open_audit_log(config)


def _raw(config):
    return connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]]


def _three(config) -> AuditLog:
    log = _log(config)
    log.record("search", ACTOR, outcome="ok", filters={"room": "A"}, rooms=["A"])
    log.record("retrieve", ACTOR, reason="case 42", outcome="ok", rooms=["A"])
    log.record("retrieve", ACTOR, reason="case 43", outcome="failed", rooms=["B"], detail="unknown room")
    return log


def test_entries_are_chained_and_verify(make_config) -> None:
    log = _three(make_config())
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == "0" * 64 and entries[1]["prev"] == entries[0]["hash"]
    assert entries[2]["actor"] == {"user": "alice", "host": "legal-pc"} and entries[2]["outcome"] == "failed"
    assert log.verify() == []


def test_each_hash_recomputes_from_the_stored_entry_with_hashlib_and_json_alone(make_config) -> None:
    """docs/retrieval.md: `hash` is the SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of seq, at,
    action, actor, reason, filters, rooms, outcome, detail and prev; `prev` is 64 zeros for the first entry."""
    import hashlib

    config = make_config()
    _three(config)
    _log(config).record("retrieve", ACTOR, reason="richiesta n° 7 – Müller «urgente»", outcome="ok", rooms=["Ä"])
    documented = ("seq", "at", "action", "actor", "reason", "filters", "rooms", "outcome", "detail", "prev")
    prev = "0" * 64
    stored = list(_raw(config).find({}, {"_id": 0}).sort("seq", 1))
    assert len(stored) == 4 and set(stored[0]) == {*documented, "hash"}
    for entry in stored:
        canonical = json.dumps({k: entry[k] for k in documented}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode("utf-8")
        assert entry["prev"] == prev and entry["hash"] == hashlib.sha256(canonical).hexdigest(), entry
        assert entry["at"].endswith("Z")  # UTC
        prev = entry["hash"]


def test_an_edited_entry_is_named(make_config) -> None:
    config = make_config()
    log = _three(config)
    _raw(config).update_one({"seq": 2}, {"$set": {"reason": "case 99"}})
    problems = log.verify()
    assert problems and problems[0].seq == 2 and "edited" in problems[0].problem


def test_a_removed_entry_is_named(make_config) -> None:
    config = make_config()
    log = _three(config)
    _raw(config).delete_one({"seq": 2})
    problems = log.verify()
    assert problems and problems[0].seq == 3 and "removed" in problems[0].problem


def test_reordered_entries_are_named(make_config) -> None:
    config = make_config()
    log = _three(config)
    raw = _raw(config)
    raw.update_one({"seq": 2}, {"$set": {"seq": 99}})
    raw.update_one({"seq": 3}, {"$set": {"seq": 2}})
    raw.update_one({"seq": 99}, {"$set": {"seq": 3}})
    problems = log.verify()
    assert problems and problems[0].seq == 2


def _append_many(uri: str, database: str, collection: str, count: int, who: str) -> None:
    log = AuditLog(connect(uri)[database][collection])
    for i in range(count):
        log.record("search", Actor(who, "h"), outcome="ok", filters={"i": str(i)})


def test_two_processes_appending_at_once_never_fork_the_chain(nx_uri, db_names) -> None:
    database = db_names["index.database"]
    AuditLog(connect(nx_uri)[database]["audit"]).ensure_indexes()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(nx_uri, database, "audit", 40, f"w{n}")) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log = AuditLog(connect(nx_uri)[database]["audit"])
    assert [e["seq"] for e in log.entries()] == list(range(1, 81))
    assert log.verify() == []


def test_audit_commands(make_config, tmp_path, capsys) -> None:
    config = make_config()
    _three(config)
    toml = write_toml(tmp_path / "a.toml", {"mongodb.uri": config["mongodb.uri"],
                                           "index.database": config["index.database"]})
    assert main(["--config", str(toml), "audit", "verify"]) == 0
    assert main(["--config", str(toml), "audit", "list", "--json"]) == 0
    out = capsys.readouterr().out
    listed = json.loads(out[out.index("["):])
    assert [e["action"] for e in listed] == ["search", "retrieve", "retrieve"]
    _raw(config).update_one({"seq": 1}, {"$set": {"outcome": "failed"}})
    assert main(["--config", str(toml), "audit", "verify"]) == 3
    assert "entry 1" in capsys.readouterr().out


def test_audit_verify_json(make_config, tmp_path, capsys) -> None:
    config = make_config()
    toml = write_toml(tmp_path / "a.toml", {"mongodb.uri": config["mongodb.uri"],
                                           "index.database": config["index.database"]})
    assert main(["--config", str(toml), "audit", "verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "entries": 0, "head": None, "problems": []}
    _three(config)
    assert main(["--config", str(toml), "audit", "verify", "--json"]) == 0
    intact = json.loads(capsys.readouterr().out)
    head = _raw(config).find_one({"seq": 3})
    assert intact == {"ok": True, "entries": 3, "head": {"seq": 3, "hash": head["hash"]}, "problems": []}
    _raw(config).update_one({"seq": 2}, {"$set": {"reason": "case 99"}})
    assert main(["--config", str(toml), "audit", "verify", "--json"]) == 3
    broken = json.loads(capsys.readouterr().out)
    assert broken["ok"] is False and broken["entries"] == 3
    assert broken["problems"] == [{"seq": 2, "problem": "edited (its hash does not match its content)"}]

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
    action, actor, reason, filters, rooms, rooms_total, rooms_sha256, outcome, detail, format and prev; `prev` is
    64 zeros for the first entry."""
    import hashlib

    config = make_config()
    _three(config)
    _log(config).record("retrieve", ACTOR, reason="richiesta n° 7 – Müller «urgente»", outcome="ok", rooms=["Ä"])
    documented = ("seq", "at", "action", "actor", "reason", "filters", "rooms", "rooms_total", "rooms_sha256",
                  "outcome", "detail", "format", "prev")
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
    assert json.loads(capsys.readouterr().out) == {"ok": True, "entries": 0, "head": None, "sealed_heads": 0,
                                                   "last_sealed_seq": None, "problems": []}
    _three(config)
    assert main(["--config", str(toml), "audit", "verify", "--json"]) == 0
    intact = json.loads(capsys.readouterr().out)
    head = _raw(config).find_one({"seq": 3})
    assert intact == {"ok": True, "entries": 3, "head": {"seq": 3, "hash": head["hash"]}, "sealed_heads": 0,
                      "last_sealed_seq": None, "problems": []}
    _raw(config).update_one({"seq": 2}, {"$set": {"reason": "case 99"}})
    assert main(["--config", str(toml), "audit", "verify", "--json"]) == 3
    broken = json.loads(capsys.readouterr().out)
    assert broken["ok"] is False and broken["entries"] == 3
    assert broken["problems"] == [{"seq": 2, "problem": "edited (its hash does not match its content)"}]


def _seal_record(config, day: str, seq: int, head: dict) -> None:
    """A seal's index copy as `archiver seal` leaves it, reduced to what `audit verify` reads."""
    db = connect(config["mongodb.uri"])[config["index.database"]]
    db[config["index.seals"]].insert_one({"day": day, "seq": seq, "audit_head": {"seq": head["seq"],
                                                                                 "hash": head["hash"]}})


def _rehash_from(config, seq: int, **changes) -> None:
    """Edit entry SEQ and recompute every hash after it, as someone with write access could."""
    from archiver.audit import entry_hash
    raw = _raw(config)
    prev = raw.find_one({"seq": seq - 1})["hash"] if seq > 1 else "0" * 64
    for e in list(raw.find({"seq": {"$gte": seq}}, {"_id": 0}).sort("seq", 1)):
        if e["seq"] == seq:
            e.update(changes)
        e["prev"] = prev
        e["hash"] = prev = entry_hash(e)
        raw.replace_one({"seq": e["seq"]}, e)


def _cli(config, tmp_path, *argv) -> int:
    toml = write_toml(tmp_path / "a.toml", {"mongodb.uri": config["mongodb.uri"],
                                           "index.database": config["index.database"]})
    return main(["--config", str(toml), *argv])


def test_an_edit_rehashed_forward_before_a_sealed_head_is_named(make_config, tmp_path, capsys) -> None:
    config = make_config()
    log = _three(config)
    _seal_record(config, "2026-11-01", 1, log.head())
    log.record("search", ACTOR, outcome="ok")  # entry 4, after the sealed head
    assert _cli(config, tmp_path, "audit", "verify") == 0
    assert "1 sealed head(s) checked; entries up to 3 are vouched for by the seals, entries after 3 by the chain " \
           "alone" in capsys.readouterr().out
    _rehash_from(config, 2, reason="case 99")
    assert log.verify() == []  # the chain alone is consistent again
    assert _cli(config, tmp_path, "audit", "verify") == 3
    assert "BROKEN audit entry 3: differs from the head seal 2026-11-01#1 recorded: an entry from 1 to 3 was " \
           "changed" in capsys.readouterr().out


def test_an_edit_rehashed_after_the_last_sealed_head_cannot_be_told(make_config, tmp_path, capsys) -> None:
    """What the docs say is not detected: nothing vouches for entries after the last sealed head."""
    config = make_config()
    _three(config)
    _seal_record(config, "2026-11-01", 1, _raw(config).find_one({"seq": 2}))
    _rehash_from(config, 3, reason="case 99")
    assert _cli(config, tmp_path, "audit", "verify") == 0


def test_a_removed_tail_before_a_sealed_head_is_named(make_config, tmp_path, capsys) -> None:
    config = make_config()
    log = _three(config)
    _seal_record(config, "2026-11-01", 1, _raw(config).find_one({"seq": 2}))
    _seal_record(config, "2026-11-02", 1, log.head())
    _raw(config).delete_many({"seq": {"$gte": 2}})
    assert log.verify() == []  # a shorter chain, consistent
    assert _cli(config, tmp_path, "audit", "verify", "--json") == 3
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["sealed_heads"] == 2 and report["last_sealed_seq"] == 3
    assert report["problems"] == [{"seq": 2, "problem": "missing, though seal 2026-11-01#1 recorded it as the "
                                                        "head: entries from 2 on were removed"}]


def test_malformed_entries_are_named_broken_not_a_crash(make_config, tmp_path, capsys) -> None:
    import datetime as dt
    from archiver.audit import entry_hash
    config = make_config()
    _three(config)
    raw = _raw(config)
    raw.update_one({"seq": 2}, {"$set": {"at": dt.datetime(2024, 1, 1)}})  # a BSON date, not text
    assert _cli(config, tmp_path, "audit", "verify") == 3
    out = capsys.readouterr().out
    assert out.startswith("BROKEN audit entry 2: malformed: a field holds a value no entry is written with"), out
    assert _cli(config, tmp_path, "audit", "list", "--json") == 0  # still listed
    capsys.readouterr()
    raw.update_one({"seq": 2}, {"$set": {"at": "2024-01-01T00:00:00Z"}})
    e = raw.find_one({"seq": 3}, {"_id": 0})
    raw.delete_one({"seq": 3})
    del e["seq"]
    e["hash"] = entry_hash(e)
    raw.insert_one(e)
    assert _cli(config, tmp_path, "audit", "verify", "--json") == 3
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert len(problems) == 1 and "malformed: its number (seq) is None" in problems[0]["problem"]


def test_audit_verify_and_list_need_no_write_access(make_config, tmp_path, monkeypatch, capsys) -> None:
    """A read-only role is refused createIndexes: reading the log must not ask for it."""
    import mongomock
    from pymongo.collection import Collection
    from pymongo.errors import OperationFailure
    config = make_config()
    _three(config)

    def refused(self, *a, **k):
        raise OperationFailure("not authorized to execute command createIndexes", code=13)
    monkeypatch.setattr(Collection, "create_index", refused)
    monkeypatch.setattr(mongomock.collection.Collection, "create_index", refused)
    assert _cli(config, tmp_path, "audit", "verify") == 0
    assert _cli(config, tmp_path, "audit", "list") == 0
    assert "case 43" in capsys.readouterr().out


def test_an_entry_bounds_its_rooms_with_a_count_and_a_hash(make_config) -> None:
    """300,000 rooms (a broad search) made a 16 MiB+ document MongoDB refuses: the scope went unaudited."""
    import hashlib
    import bson
    from archiver.audit import ROOMS_LISTED
    config = make_config()
    rooms = [f"CHAT_DEFAULT_{n:036d}" for n in range(300_000, 0, -1)] + ["CHAT_DEFAULT_dup"] * 2
    entry = _log(config).record("search", ACTOR, outcome="ok", rooms=rooms)
    distinct = sorted(set(rooms))
    assert entry["rooms"] == distinct[:ROOMS_LISTED] and entry["rooms_total"] == 300_001
    assert entry["rooms_sha256"] == hashlib.sha256("".join(r + "\n" for r in distinct).encode()).hexdigest()
    assert len(bson.encode(_raw(config).find_one({"seq": 1}))) < 200_000
    assert _log(config).verify() == []
    _raw(config).update_one({"seq": 1}, {"$set": {"rooms_total": 3}})
    assert "edited" in _log(config).verify()[0].problem  # the count and hash are covered by the entry's hash


def test_entries_of_the_first_format_still_verify(make_config) -> None:
    """Logs written before rooms were bounded (no `format`): their hash covers the first fields only."""
    from archiver.audit import FIELDS, GENESIS
    import hashlib
    config = make_config()
    old = {"seq": 1, "at": "2025-01-01T00:00:00.000000Z", "action": "search", "actor": {"user": "the-ceo", "host": "h"},
           "reason": "", "filters": {}, "rooms": ["A"], "outcome": "ok", "detail": "", "prev": GENESIS}
    old["hash"] = hashlib.sha256(json.dumps({k: old[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"),
                                            ensure_ascii=False).encode()).hexdigest()
    _raw(config).insert_one(dict(old))
    log = _log(config)
    log.record("search", ACTOR, outcome="ok", rooms=["B"])
    assert log.verify() == []
    _raw(config).update_one({"seq": 1}, {"$set": {"rooms": ["Z"]}})
    assert log.verify()[0].seq == 1


def test_the_os_user_is_always_recorded_and_actor_is_who_for(make_config, tmp_path, capsys, monkeypatch) -> None:
    """--actor replaced the OS user: anyone could log in as themselves and be recorded as someone else. So did
    USER or LOGNAME (getpass reads them first): the user is the process's own uid, by the password database."""
    import os
    import pwd
    import socket
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "someone-else")
    real = pwd.getpwuid(os.geteuid()).pw_name
    config = make_config(search__key_file="")
    assert _cli(config, tmp_path, "search", "--actor", "the-ceo") == 0
    (entry,) = list(_log(config).entries())
    assert entry["actor"] == {"user": real, "host": socket.gethostname(), "on_behalf_of": "the-ceo"}
    assert _cli(config, tmp_path, "audit", "list") == 0
    assert f"{real}@{socket.gethostname()} for the-ceo" in capsys.readouterr().out


def test_a_malformed_sealed_head_does_not_crash_audit_verify(make_config, tmp_path, capsys) -> None:
    """A seal's index copy with an odd audit_head is `archiver verify`'s finding (it differs from the signed
    stored seal); `audit verify` checks the well-formed heads and does not fall over."""
    config = make_config()
    log = _three(config)
    _seal_record(config, "2026-11-01", 1, {"seq": "3", "hash": log.head()["hash"]})
    _seal_record(config, "2026-11-02", 1, {"seq": None, "hash": None})
    assert _cli(config, tmp_path, "audit", "verify") == 0
    assert "0 sealed head(s) checked" in capsys.readouterr().out


def test_a_reason_or_detail_with_bytes_that_were_not_utf8_is_recorded_escaped(nx_uri, db_names) -> None:
    """An exception's text can quote source data decoded with surrogateescape: the entry is still written
    (a real server refuses the lone surrogate), the byte shown as \\xNN, and the chain verifies."""
    log = AuditLog(connect(nx_uri)[db_names["index.database"]]["audit_utf8"])
    log.ensure_indexes()
    entry = log.record("verify", Actor("ops", "host1"), outcome="failed", reason="case \udcff1",
                       detail="field form\udcff: cannot read")
    (stored,) = list(log.entries())
    assert stored["reason"] == "case \\xff1" and stored["detail"] == "field form\\xff: cannot read"
    assert stored["hash"] == entry["hash"] and log.verify() == []

"""What the archive does not hold, said where a court's selection is made (review "court", C1 and C17):
chats whose archive job is not done (quarantined, failed, pending, claimed) named by `search` (stderr),
bundles by filters (stdout, README.txt, chain-of-custody.json), `retrieve ROOM` and `verify ROOM`; entries
without word hashes named by a bundle by --text; an archive pass without the search key the index uses refused."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from bson import ObjectId

from archiver.claims import WorkQueue
from archiver.cli import main
from archiver.config import ConfigError
from archiver.mongo import connect
from archiver.pipeline import Archiver
from conftest import write_toml
from retrieval_helpers import CLI_KEYS, search_key, zipped_json, zipped_text
from test_pipeline import index_db, recent_ms, seed

CUSTOMER = "393331234567"
AGENT = "USER_alice@acd.example.com"


def _msg(room: str, ts: float, user: str, is_agent: bool, text: str | None = None, kind: str = "TEXT") -> dict:
    content = {"user": {"id": user, "isAgent": is_agent}}
    if text is not None:
        content["text"] = text
    return {"data": {"replyTo": "", "id": str(uuid.uuid4()), "messageType": kind, "content": content, "ts": ts,
                     "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
            "_id": ObjectId(), "room": room}


def court_chat(room: str, lines: list[tuple[str, str]], *, minutes_ago: float = 30,
               customer: str = CUSTOMER) -> tuple[dict, dict]:
    """An ended chat: LINES are (who, text), who 'c' (the customer) or 'a' (the agent)."""
    start = recent_ms(minutes_ago)
    t, body = start, []
    for who, text in lines:
        t += 30_000
        body.append(_msg(room, t, customer if who == "c" else AGENT, who == "a", text))
    t += 30_000
    body.append(_msg(room, t, AGENT, True, kind="endChat"))
    chat = {"_id": room, "room": room, "ctlive_type": "chat", "messages": body, "__v": 0}
    contact = {"id": room, "servid": "42", "serv_name": "Billing", "beginTime": start, "endTime": t, "title": "Chat",
               "lang": "en", "userID": customer, "agentID": AGENT,
               "users": {customer: {"nickname": "Mario Rossi", "channel": "web"},
                         AGENT: {"nickname": "Alice Agent", "channel": "web"}},
               "contact_events": [{"event": "newContactAccepted", "ts": start, "origin": "acd"}],
               "ctlive_type": "chat"}
    return chat, contact


def cli(config, tmp_path: Path, *argv: str) -> int:
    keys = CLI_KEYS + ("source.database", "signing.certificate", "signing.key") + (
        ("search.key_file",) if config["search.key_file"] else ())
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in keys})
    return main(["--config", str(toml), *argv])


def quarantined_big(config) -> None:
    """ROOM_A archived; ROOM_BIG (a 1,000,001-character message) quarantined; both the customer's."""
    seed(config, [court_chat("ROOM_A", [("c", "I want a refund"), ("a", "ok")], minutes_ago=50),
                  court_chat("ROOM_BIG", [("c", "x" * 1_000_001), ("a", "ok")], minutes_ago=40)])
    report = Archiver(config).run_pass()
    assert report.archived == 1 and list(report.quarantined) == ["ROOM_BIG"]


# -- C1: a quarantined chat of the customer: search and a bundle by --customer name it ---------------------------

def test_bundle_by_customer_is_silent_about_quarantined_chat(make_config, keys, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    capsys.readouterr()

    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    out = capsys.readouterr()
    bundle = tmp_path / "case.zip"
    code = cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "--key", str(keys["legal.key.pem"]),
               "--reason", "case 1", "--customer", CUSTOMER, "--no-progress")
    made = capsys.readouterr()
    custody = zipped_json(bundle, "chain-of-custody.json") if bundle.exists() else {}
    told = ("ROOM_BIG" in out.out + out.err) and ("ROOM_BIG" in made.out + made.err + json.dumps(custody))
    # A court relies on a bundle "by customer" being every chat of that customer, or saying which are missing.
    assert told, (f"search said {out.out!r} / {out.err!r}; bundle exit {code}, left_out "
                  f"{custody.get('left_out')}: the quarantined chat of the customer is never mentioned")


# -- C17: a bundle by --text says nothing of the entries --text cannot see (no word hashes) ----------------------

def test_bundle_by_text_names_what_text_cannot_see(make_config, keys, tmp_path, capsys) -> None:
    key_file = str(search_key(tmp_path))
    with_key = make_config(search__key_file=key_file)
    without_key = make_config(search__key_file="")
    # archived before the key was set (a pass without the key after it is refused: test below)
    seed(without_key, [court_chat("ROOM_NOKEY", [("c", "this is fraud too"), ("a", "ok")], minutes_ago=50)])
    assert Archiver(without_key).run_pass().archived == 1
    seed(with_key, [court_chat("ROOM_KEYED", [("c", "this is fraud"), ("a", "ok")], minutes_ago=40)])
    assert Archiver(with_key).run_pass().archived == 1
    capsys.readouterr()
    assert cli(with_key, tmp_path, "search", "--text", "fraud") == 0
    searched = capsys.readouterr()
    assert "no word hashes" in searched.err  # search does warn
    bundle = tmp_path / "case.zip"
    assert cli(with_key, tmp_path, "retrieve", "--bundle", str(bundle), "--text", "fraud",
               "--key", str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    made = capsys.readouterr()
    custody = json.dumps(zipped_json(bundle, "chain-of-custody.json"))
    assert "word hash" in made.out + made.err + custody or "ROOM_NOKEY" in made.out + made.err + custody, (
        "the bundle by --text is silent about archived entries that --text cannot match", made.out, made.err)


def test_search_names_the_quarantined_chat_on_stderr_and_keeps_json_exact(make_config, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    capsys.readouterr()
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER, "--json") == 0
    out = capsys.readouterr()
    assert [e["room"] for e in json.loads(out.out)] == ["ROOM_A"]  # stdout: the entries alone (CONTRACT)
    assert "ROOM_BIG: quarantined (needs a person) since " in out.err
    assert "data.content.text has 1,000,001 characters" in out.err and "archiver export ROOM" in out.err
    assert cli(config, tmp_path, "search", "--room", "ROOM_BIG") == 0
    out = capsys.readouterr()
    assert "0 entries" in out.out and "ROOM_BIG: quarantined" in out.err
    assert cli(config, tmp_path, "search", "--status", "deleted") == 0  # of the index alone: no such note
    assert "NOT in the archive" not in capsys.readouterr().err


def test_bundle_names_what_it_does_not_hold_in_custody_readme_and_stdout(make_config, keys, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert cli(config, tmp_path, "retrieve", "--bundle", str(bundle), "--key", str(keys["legal.key.pem"]),
               "--reason", "case 1", "--customer", CUSTOMER, "--no-progress") == 0
    out = capsys.readouterr().out
    custody = zipped_json(bundle, "chain-of-custody.json")
    missing = custody["not_archived"]
    assert missing["count"] == 1 and [(j["room"], j["state"]) for j in missing["jobs"]] == [("ROOM_BIG", "quarantined")]
    assert "1,000,001 characters" in missing["jobs"][0]["reason"] and missing["jobs"][0]["since"]
    assert custody["completeness"].startswith("complete of the archive index")
    assert "WHAT THIS BUNDLE DOES NOT HOLD" in zipped_text(bundle, "README.txt")
    assert "ROOM_BIG: quarantined" in zipped_text(bundle, "README.txt")
    assert "WARNING: WHAT THIS BUNDLE DOES NOT HOLD" in out and "ROOM_BIG: quarantined" in out
    # by rooms: nothing to say of a window (a quarantined room named is refused: test below)
    by_room = tmp_path / "room.zip"
    assert cli(config, tmp_path, "retrieve", "--bundle", str(by_room), "ROOM_A", "--key", str(keys["legal.key.pem"]),
               "--reason", "case 1", "--no-progress") == 0
    assert "not_archived" not in zipped_json(by_room, "chain-of-custody.json")


def test_not_archived_chats_are_those_of_the_window_and_the_person(make_config, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    seed(config, [court_chat("ROOM_OTHER", [("c", "y" * 1_000_001)], minutes_ago=45, customer="390000000001")])
    assert list(Archiver(config).run_pass().quarantined) == ["ROOM_OTHER"]
    capsys.readouterr()
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    err = capsys.readouterr().err
    assert "ROOM_BIG" in err and "ROOM_OTHER" not in err  # another customer's chat is not named
    assert cli(config, tmp_path, "search", "--service", "Billing") == 0
    err = capsys.readouterr().err
    assert "ROOM_BIG" in err and "ROOM_OTHER" in err and "service are not known to the archive" in err
    # both ended within the last hour: a window ending the day before (that of two hours ago, at any hour)
    before = ((dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).date() - dt.timedelta(days=1)).isoformat()
    assert cli(config, tmp_path, "search", "--to", before) == 0
    assert "NOT in the archive" not in capsys.readouterr().err
    # a source chat that cannot be read any more: whose it is cannot be ruled out, so it is named, and said so
    connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]].delete_one({"room": "ROOM_OTHER"})
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    err = capsys.readouterr().err
    assert "ROOM_OTHER: quarantined" in err and "whose it is is not known" in err


def test_pending_and_failed_jobs_are_named_with_their_state(make_config, keys, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    queue = WorkQueue(index_db(config)[config["index.jobs"]])
    ended = recent_ms(10)
    queue.enqueue([("ROOM_LATE", "ended"), ("ROOM_RETRY", "ended")], ended_ms={"ROOM_LATE": ended, "ROOM_RETRY": ended})
    index_db(config)[config["index.jobs"]].update_one(
        {"_id": "ROOM_RETRY"}, {"$set": {"state": "failed", "last_error": "S3 said 503 SlowDown", "finished_at": ended}})
    capsys.readouterr()
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)).date().isoformat()  # (at any hour)
    assert cli(config, tmp_path, "search", "--from", since) == 0
    err = capsys.readouterr().err
    assert "3 chat(s) in this selection's window are NOT in the archive" in err
    assert "ROOM_LATE: pending (not archived yet) since " in err
    assert "ROOM_RETRY: failed (retried) since " in err and "S3 said 503 SlowDown; retried from " in err
    assert cli(config, tmp_path, "retrieve", "ROOM_LATE", "--key", str(keys["legal.key.pem"]), "--out", str(tmp_path / "o"),
               "--reason", "x") == 1
    assert "the next archive pass archives it; `archiver export ROOM_LATE` archives it now" in capsys.readouterr().err


def test_retrieve_and_verify_of_a_quarantined_room_say_why_and_what_to_do(make_config, keys, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    capsys.readouterr()
    assert cli(config, tmp_path, "retrieve", "ROOM_BIG", "--key", str(keys["legal.key.pem"]),
               "--out", str(tmp_path / "out"), "--reason", "case 1") == 1
    err = capsys.readouterr().err
    assert "room 'ROOM_BIG': not archived (nothing of it was stored" in err
    assert "quarantined (needs a person) since" in err and "1,000,001 characters" in err
    assert "ARCHIVER_ARCHIVE__MAX_MESSAGE_CHARS" in err and "search for it" not in err
    # verify ROOM answers "is ROOM archived and intact": not archived is a finding (exit 3), said as what it is
    assert cli(config, tmp_path, "verify", "ROOM_BIG") == 3
    out = capsys.readouterr().out
    assert "PROBLEM ROOM_BIG: not archived (nothing of it was stored, so nothing was lost or altered)" in out
    assert cli(config, tmp_path, "verify", "NO_SUCH_ROOM") == 3
    assert "no archive job names it" in capsys.readouterr().out


def test_retrieve_of_an_unfinished_attempt_says_so(make_config, keys, tmp_path, capsys) -> None:
    config = make_config()
    quarantined_big(config)
    index_db(config)[config["index.entries"]].update_one({"room": "ROOM_A"}, {"$set": {"status": "uploading"}})
    capsys.readouterr()
    assert cli(config, tmp_path, "retrieve", "ROOM_A", "--key", str(keys["legal.key.pem"]),
               "--out", str(tmp_path / "out"), "--reason", "case 1") == 1
    assert "an archive attempt (version 1, status uploading) did not finish" in capsys.readouterr().err


def test_export_with_the_limit_raised_archives_the_long_message_unaltered(make_config, keys, tmp_path, capsys,
                                                                           monkeypatch) -> None:
    """What `retrieve ROOM`, bundles and export tell the user to do for a message over the limit is true."""
    config = make_config()
    quarantined_big(config)
    capsys.readouterr()
    assert cli(config, tmp_path, "export", "ROOM_BIG") == 1
    assert "ARCHIVER_ARCHIVE__MAX_MESSAGE_CHARS" in capsys.readouterr().out
    monkeypatch.setenv("ARCHIVER_ARCHIVE__MAX_MESSAGE_CHARS", "2000000")
    assert cli(config, tmp_path, "export", "ROOM_BIG") == 0
    monkeypatch.delenv("ARCHIVER_ARCHIVE__MAX_MESSAGE_CHARS")
    capsys.readouterr()
    assert cli(config, tmp_path, "retrieve", "ROOM_BIG", "--key", str(keys["legal.key.pem"]),
               "--out", str(tmp_path / "out"), "--reason", "case 1") == 0
    record = (tmp_path / "out" / "ROOM_BIG-v1" / "record.json").read_text(encoding="utf-8")
    assert '"' + "x" * 1_000_001 + '"' in record  # the message whole, as the customer sent it
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    assert "NOT in the archive" not in capsys.readouterr().err  # archived now: nothing more to say


def test_bundle_by_text_counts_the_entries_without_word_hashes(make_config, keys, tmp_path, capsys) -> None:
    without_key = make_config(search__key_file="")
    seed(without_key, [court_chat("ROOM_NOKEY", [("c", "fraud here")], minutes_ago=50)])
    assert Archiver(without_key).run_pass().archived == 1
    with_key = make_config(search__key_file=str(search_key(tmp_path)))
    seed(with_key, [court_chat("ROOM_KEYED", [("c", "fraud there")], minutes_ago=40)])
    assert Archiver(with_key).run_pass().archived == 1
    capsys.readouterr()
    bundle = tmp_path / "case.zip"
    assert cli(with_key, tmp_path, "retrieve", "--bundle", str(bundle), "--text", "fraud",
               "--key", str(keys["legal.key.pem"]), "--reason", "case", "--no-progress") == 0
    out = capsys.readouterr().out
    note = "1 archived entry has no word hashes (archived while search.key_file was not set)"
    assert note in out and note in zipped_text(bundle, "README.txt")
    assert zipped_json(bundle, "chain-of-custody.json")["text_unsearchable"]["entries"] == 1


def test_an_archive_pass_without_the_search_key_the_index_uses_is_refused(make_config, tmp_path, capsys) -> None:
    with_key = make_config(search__key_file=str(search_key(tmp_path)))
    seed(with_key, [court_chat("ROOM_KEYED", [("c", "fraud there")], minutes_ago=40)])
    assert Archiver(with_key).run_pass().archived == 1
    without_key = make_config(search__key_file="")
    with pytest.raises(ConfigError, match=r"search.key_file: not set, but the index's word hashes are made with a "
                                          r"search key \(fingerprint [0-9a-f]{16}, in use since "):
        Archiver(without_key)
    seed(without_key, [court_chat("ROOM_NOKEY", [("c", "fraud here")], minutes_ago=30)])
    toml = write_toml(tmp_path / "run.toml", {k: without_key[k] for k in (
        *CLI_KEYS, "source.database", "signing.certificate", "signing.key")})
    for argv in (["run"], ["export", "ROOM_NOKEY"]):
        capsys.readouterr()
        assert main(["--config", str(toml), *argv]) == 2
        assert "search.key_file: not set" in capsys.readouterr().err
    assert index_db(without_key)[without_key["index.entries"]].count_documents({"room": "ROOM_NOKEY"}) == 0


def test_a_job_of_any_shape_is_named_and_a_person_search_reads_a_bounded_backlog(make_config, keys, tmp_path, capsys,
                                                                                monkeypatch) -> None:
    """Review of the change: a job whose reason is not text (the job queue is in the index database, which a hand
    can edit) crashed search, retrieve, verify and bundles after their audit entry; and a search by person read
    the source chat of every job not done (a whole backlog, after a first deployment or `run --full`)."""
    import archiver.source as source_module
    import archiver.unarchived as unarchived

    config = make_config()
    quarantined_big(config)
    jobs = index_db(config)[config["index.jobs"]]
    jobs.update_one({"_id": "ROOM_BIG"}, {"$set": {"reason": 5}})
    capsys.readouterr()
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    assert "ROOM_BIG: quarantined (needs a person) since " in capsys.readouterr().err
    assert cli(config, tmp_path, "verify", "ROOM_BIG") == 3
    assert "its archive job is quarantined" in capsys.readouterr().out
    queue = WorkQueue(jobs)
    queue.enqueue([(f"ROOM_P{i}", "ended") for i in range(5)], ended_ms={f"ROOM_P{i}": recent_ms(5) for i in range(5)})
    monkeypatch.setattr(unarchived, "BATCH", 2)
    monkeypatch.setattr(unarchived, "PEOPLE_READ", 2)
    read: list[str] = []
    real = source_module.ChatSource.load_many
    monkeypatch.setattr(source_module.ChatSource, "load_many", lambda self, rooms: read.extend(rooms) or real(self, rooms))
    assert cli(config, tmp_path, "search", "--customer", CUSTOMER) == 0
    err = capsys.readouterr().err
    assert len(read) == 2, read
    assert "4 more chat(s) of the window not archived were not read for the people asked for (only the first 2 " \
           "are)" in err, err

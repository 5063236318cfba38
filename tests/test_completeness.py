"""archiver verify --completeness: ended chats in the source that are neither archived nor accounted for."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from archiver.claims import WorkQueue
from archiver.completeness import check_completeness
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.cli import main
from conftest import write_toml
from retrieval_helpers import CLI_KEYS, archive_samples, audit, index
from test_pipeline import recent_ms, seed

NOW = dt.datetime.now(dt.timezone.utc)


def _chat(rng: random.Random, end_ts=None, minutes_ago: float = 30):
    chat, contact = make_chat(rng, messages=4, start_ms=recent_ms(minutes_ago))
    if end_ts is not None:
        assert chat["messages"][-1]["data"]["messageType"] == "endChat"
        chat["messages"][-1]["data"]["ts"] = end_ts
    return chat, contact


def run_cli(config, tmp_path, *argv: str) -> int:
    """`archiver ARGV` with CONFIG's settings, the source's included."""
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*CLI_KEYS, "source.database", "source.messages")})
    return main(["--config", str(toml), *argv])


def _window(config, start: dt.datetime, end: dt.datetime):
    return check_completeness(config, start, end)


@pytest.fixture
def archived(make_config):
    config = make_config()
    return config, archive_samples(config, count=4)


def test_deleted_never_picked_up_failed_and_quarantined_are_told_apart(archived, tmp_path, capsys) -> None:
    config, entries = archived
    rng = random.Random(11)
    broken_end = {"data": {"messageType": "endChat", "ts": recent_ms(20), "content": {"user": {"id": "USER_x"}}}}
    seed(config, [({"_id": "CHAT_BROKEN", "room": "CHAT_BROKEN", "messages": [{"data": "not-an-object"}, broken_end]},
                   None)])
    report = Archiver(config).run_pass()
    assert list(report.quarantined) == ["CHAT_BROKEN"] and report.archived == 0
    failing = _chat(rng)  # a chat whose archiving failed (and will be retried): claimed, then failed
    seed(config, [failing])
    queue = WorkQueue(connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]])
    assert queue.claim_room(failing[0]["room"], "ended", 60) is not None
    assert queue.failed(failing[0]["room"], "store unreachable", 600)
    deleted = entries[1]["room"]
    index(config).delete_one({"room": deleted})
    never = _chat(rng)
    seed(config, [never])

    result = _window(config, NOW - dt.timedelta(hours=3), NOW + dt.timedelta(hours=1))
    assert result.ended == 7 and result.archived == 3
    assert {m.room: m.why for m in result.missing} == {
        deleted: "its job is done but the index has no archived version: removed from the index?",
        never[0]["room"]: "never picked up: no job for it"}
    assert [f["room"] for f in result.failed] == [failing[0]["room"]] and "unreachable" in result.failed[0]["why"]
    assert [q["room"] for q in result.quarantined] == ["CHAT_BROKEN"]

    start, end = (NOW - dt.timedelta(hours=3)).isoformat(), (NOW + dt.timedelta(hours=1)).isoformat()
    assert run_cli(config, tmp_path, "verify", "--completeness", "--from", start, "--to", end) == 3
    out = capsys.readouterr().out
    assert f"MISSING {deleted}: ended in the source but not archived" in out
    assert f"MISSING {never[0]['room']}" in out and "MISSING CHAT_BROKEN" not in out
    assert "quarantined (recorded, needs a person) CHAT_BROKEN" in out
    assert f"failed (recorded, retried) {failing[0]['room']}" in out
    entry = audit(config)[-1]
    assert entry["action"] == "verify" and entry["outcome"] == "problems"
    assert sorted(entry["rooms"]) == sorted([deleted, never[0]["room"]])
    assert run_cli(config, tmp_path, "verify", "--completeness", "--from", start, "--to", end, "--json") == 3
    assert json.loads(capsys.readouterr().out)["missing_count"] == 2


def test_a_complete_window_passes(archived, tmp_path, capsys) -> None:
    config, _ = archived
    start, end = (NOW - dt.timedelta(hours=3)).isoformat(), (NOW + dt.timedelta(hours=1)).isoformat()
    assert run_cli(config, tmp_path, "verify", "--completeness", "--from", start, "--to", end) == 0
    assert "OK: 4 chats ended in the source" in capsys.readouterr().out
    assert audit(config)[-1]["outcome"] == "ok"


def test_window_edges_are_inclusive_and_exact_to_the_millisecond(make_config, tmp_path, capsys) -> None:
    config = make_config()
    rng = random.Random(3)
    day = dt.datetime(2021, 3, 1, tzinfo=dt.timezone.utc)
    ms = day.timestamp() * 1000
    last = (day + dt.timedelta(days=2)).timestamp() * 1000 - 1  # 2021-03-02T23:59:59.999
    chats = {"first": _chat(rng, ms), "last": _chat(rng, last), "before": _chat(rng, ms - 1),
             "after": _chat(rng, last + 1), "as_date": _chat(rng, day + dt.timedelta(hours=5)),
             "date_after": _chat(rng, day + dt.timedelta(days=3))}
    seed(config, list(chats.values()))
    code = run_cli(config, tmp_path, "verify", "--completeness", "--from", "2021-03-01", "--to", "2021-03-02")
    assert code == 3
    out = capsys.readouterr().out
    named = {name for name, (chat, _) in chats.items() if f"MISSING {chat['room']}" in out}
    assert named == {"first", "last", "as_date"}
    assert "OK" not in out and "3 chats ended in the source" in out


def test_a_messages_collection_source_and_usage_errors(make_config, tmp_path, capsys) -> None:
    config = make_config(source__messages="messages")
    rng = random.Random(4)
    chat, _ = _chat(rng, 1_614_600_000_000.0)  # 2021-03-01T12:00Z
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db.chats.insert_one({"_id": chat["_id"], "room": chat["room"]})
    db.messages.insert_many([{**m, "room": chat["room"]} for m in chat["messages"]])
    result = _window(config, dt.datetime(2021, 3, 1, tzinfo=dt.timezone.utc),
                     dt.datetime(2021, 3, 2, tzinfo=dt.timezone.utc))
    assert [m.room for m in result.missing] == [chat["room"]]
    assert run_cli(config, tmp_path, "verify", "--completeness", "--from", "2021-03-01") == 2
    assert run_cli(config, tmp_path, "verify", "--completeness", "--from", "2021-03-02", "--to", "2021-03-01") == 2
    capsys.readouterr()
    # With --all as well: both run, and the worse exit code wins (the archive is intact, a chat is missing).
    assert run_cli(config, tmp_path, "verify", "--completeness", "--all", "--from", "2021-03-01",
                   "--to", "2021-03-02") == 3
    out = capsys.readouterr().out
    assert f"MISSING {chat['room']}" in out and "OK: 0 entries" in out


def test_with_abandoned_chats_archived_an_idle_chat_not_archived_is_missing(make_config) -> None:
    """With source.abandoned_after_hours set, a chat idle that long without an end is to be archived (as
    abandoned): completeness left it out of scope, so one never archived went unreported."""
    config = make_config(source__abandoned_after_hours=1.0)
    chat, contact = _chat(random.Random(8), minutes_ago=300)
    chat["messages"].pop()  # no endChat
    seed(config, [(chat, contact)])
    window = (NOW - dt.timedelta(days=1), NOW)
    report = _window(config, *window)
    assert not report.ok and [m.room for m in report.missing] == [chat["room"]] and report.abandoned == 1
    assert "idle without an end (abandoned)" in str(report.missing[0])
    assert Archiver(config).run_pass().archived == 1
    after = _window(config, *window)
    assert after.ok and (after.abandoned, after.archived) == (1, 1)
    recent = make_config(source__abandoned_after_hours=24.0)  # idle for less than that: not due yet
    assert _window(recent.with_overrides(**{"mongodb.uri": config["mongodb.uri"]}), *window).abandoned == 0


class _CountingFinds:
    """A collection whose find() calls are counted (what a long completeness window costs in round trips)."""

    def __init__(self, collection) -> None:
        self.collection, self.finds = collection, 0

    def find(self, *args, **kwargs):
        self.finds += 1
        return self.collection.find(*args, **kwargs)


def test_idle_rooms_of_a_messages_collection_are_read_in_batches_not_one_query_per_room(make_config) -> None:
    """Completeness (and discovery) over a messages collection asked for each room of the window on its own:
    a month of a million chats was a million round trips. Rooms are read a batch at a time, with the same
    answer: idle rooms without an end, in order; ended, still active and out-of-window rooms left out."""
    from archiver.source import BATCH, ChatSource

    config = make_config(source__messages="messages")
    db = connect(config["mongodb.uri"])[config["source.database"]]
    base, hour = recent_ms(600), 3_600_000
    idle = [f"IDLE_{i:05d}" for i in range(2 * BATCH + 7)]
    docs = [{"room": room, "data": {"messageType": "TEXT", "ts": base + i}} for i, room in enumerate(idle)]
    docs += [{"room": "ENDED", "data": {"messageType": "TEXT", "ts": base}},
             {"room": "ENDED", "data": {"messageType": "endChat", "ts": base + 5}},
             {"room": "ACTIVE", "data": {"messageType": "TEXT", "ts": base}},
             {"room": "ACTIVE", "data": {"messageType": "TEXT", "ts": base + 9 * hour}},  # after the window
             {"room": "EARLIER", "data": {"messageType": "TEXT", "ts": base - 5 * hour}}]
    db.messages.insert_many(docs)
    source = ChatSource(db, "chats", "contacts", "messages")
    source.messages = counting = _CountingFinds(source.messages)
    found = list(source.idle_between(base - hour, base + 2 * hour))
    assert found == sorted(idle)
    assert counting.finds <= 1 + 3, f"{counting.finds} queries for {len(idle) + 2} rooms"


def test_verify_all_with_completeness_and_json_prints_one_document_with_both(archived, tmp_path, capsys) -> None:
    """The contract's `verify [ROOM ... | --all] [--key PEM] [--completeness --from DATE --to DATE] [--json]`: with
    both, one JSON document: the archive's verification, its completeness check under "completeness", and "ok" only
    if both are; the exit code is the worse of the two."""
    config, entries = archived
    window = ("--from", (NOW - dt.timedelta(days=1)).date().isoformat(), "--to", NOW.date().isoformat())
    assert run_cli(config, tmp_path, "verify", "--all", "--completeness", *window, "--json") == 0
    both = json.loads(capsys.readouterr().out)
    assert both["ok"] is True and both["entries"] == len(entries) and both["problems"] == []
    assert both["completeness"]["ok"] is True and both["completeness"]["archived"] == len(entries)
    seed(config, [_chat(random.Random(4321), minutes_ago=20)])  # ended, never archived
    assert run_cli(config, tmp_path, "verify", "--all", "--completeness", *window, "--json") == 3
    both = json.loads(capsys.readouterr().out)
    assert both["ok"] is False and both["problems"] == [] and both["completeness"]["missing_count"] == 1
    room = entries[0]["room"]
    index(config).update_one({"room": room}, {"$set": {"objects.pdf.sha256": "0" * 64}})  # the archive altered too
    assert run_cli(config, tmp_path, "verify", room, "--completeness", *window, "--json") == 3
    both = json.loads(capsys.readouterr().out)
    assert both["ok"] is False and both["completeness"]["missing_count"] == 1
    assert both["problems"] and {p["room"] for p in both["problems"]} == {room}


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
@pytest.mark.parametrize("wrong", [["--all", "ROOM_X"], ["--all", "--workers", "-1"], ["--all", "--redaction"]])
def test_a_usage_error_of_the_verification_stops_the_completeness_check_before_any_work(
        archived, tmp_path, capsys, wrong, json_flag) -> None:
    """CONTRACT.md: a usage error (exit 2) before any work. With --completeness and ROOMs or --all, a verification
    option given wrong was found only after the completeness check had run, printed and been recorded in the audit
    log as done."""
    config, _ = archived
    before = len(audit(config))
    window = ("--from", (NOW - dt.timedelta(days=1)).date().isoformat(), "--to", NOW.date().isoformat())
    capsys.readouterr()
    assert run_cli(config, tmp_path, "verify", *wrong, "--completeness", *window, *json_flag) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "archiver: error: " in captured.err, captured
    assert len(audit(config)) == before, audit(config)[before:]

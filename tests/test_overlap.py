"""--overlapping (review "court" C19): with --from/--to, the chats whose span [start, end] overlaps the period, not
only those that ended in it; by search, case bundles and holds, recorded in the audit log and the custody report."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from bson import ObjectId

import archiver.bundle as bundle_module
from archiver.bundle import DATES_MEANING
from archiver.cli import main
from archiver.mongo import connect
from archiver.holds import _Indexed
from archiver.pipeline import Archiver
from archiver.search import Search, SearchFilters, parse_date
from archiver.transcript import normalise
from conftest import write_toml
from retrieval_helpers import CLI_KEYS, audit, index, zipped_json, zipped_text
from test_pipeline import index_db, seed

AGENT, CUSTOMER = "USER_alice@acd.example.com", "393331234567"
UTC = dt.timezone.utc


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _ms(at: dt.datetime) -> float:
    return at.timestamp() * 1000


def _msg(room: str, at: dt.datetime, agent: bool, kind: str = "TEXT") -> dict:
    content = {"user": {"id": AGENT if agent else CUSTOMER, "isAgent": agent},
               **({"text": "hello there"} if kind == "TEXT" else {})}
    return {"data": {"replyTo": "", "id": str(uuid.uuid4()), "messageType": kind, "content": content, "ts": _ms(at),
                     "deliverySuccess": True, "deliveryErrorReason": "", "messageSeen": None},
            "_id": ObjectId(), "room": room}


def span_chat(room: str, start: str, end: str) -> tuple[dict, dict]:
    """An ended chat begun at START (the customer's first message) and ended at END (ISO, UTC)."""
    first, last = _at(start), _at(end)
    body = [_msg(room, first, False), _msg(room, first + (last - first) / 2, True), _msg(room, last, True, "endChat")]
    chat = {"_id": room, "room": room, "ctlive_type": "chat", "messages": body, "__v": 0}
    contact = {"id": room, "servid": "42", "serv_name": "Billing", "beginTime": _ms(first), "endTime": _ms(last),
               "title": "Chat", "lang": "en", "userID": CUSTOMER, "agentID": AGENT,
               "users": {CUSTOMER: {"nickname": "Mario", "channel": "web"}, AGENT: {"nickname": "Alice", "channel": "web"}},
               "contact_events": [], "ctlive_type": "chat"}
    return chat, contact


# The period asked for: every chat between 1 and 31 March 2025.
SPANS = {"BEFORE": ("2025-02-10T09:00:00", "2025-02-10T09:30:00"),
         "INTO_MARCH": ("2025-02-28T23:50:00", "2025-03-01T00:10:00"),  # ended in March: selected today too
         "INSIDE": ("2025-03-10T10:00:00", "2025-03-10T10:20:00"),
         "OUT_OF_MARCH": ("2025-03-31T23:50:00", "2025-04-01T00:10:00"),  # begun on 31 March, ended on 1 April
         "WHOLE": ("2025-02-27T08:00:00", "2025-04-02T18:00:00"),  # ran across the whole period
         "AFTER": ("2025-04-05T09:00:00", "2025-04-05T09:30:00")}
ENDED_IN_MARCH = ["INSIDE", "INTO_MARCH"]
OVERLAPPING_MARCH = ["INSIDE", "INTO_MARCH", "OUT_OF_MARCH", "WHOLE"]


@pytest.fixture
def spans(make_config):
    config = make_config()
    seed(config, [span_chat(room, *span) for room, span in SPANS.items()])
    archiver = Archiver(config)
    for room in SPANS:
        assert archiver.archive_room(room, "ended")[0].archived == 1
    return config


def cli(config, tmp_path: Path, *argv: str) -> int:
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in CLI_KEYS + (
        "source.database", "signing.certificate", "signing.key")})
    return main(["--config", str(toml), *argv])


def _searched(config, tmp_path, capsys, *argv: str) -> list[str]:
    assert cli(config, tmp_path, "search", "--json", *argv) == 0
    return sorted(e["room"] for e in json.loads(capsys.readouterr().out))


def test_overlapping_finds_the_chats_across_either_end_of_the_period(spans, tmp_path, capsys) -> None:
    """--from/--to alone keep selecting by end time, exactly as before; with --overlapping, a chat begun on 31 March
    and ended on 1 April is a chat of March, and so is one that ran across the whole month."""
    march = ("--from", "2025-03-01", "--to", "2025-03-31")
    assert _searched(spans, tmp_path, capsys, *march) == sorted(ENDED_IN_MARCH)
    assert _searched(spans, tmp_path, capsys, *march, "--overlapping") == sorted(OVERLAPPING_MARCH)
    # --to a bare date covers that whole day: a chat begun at 23:50 on 31 March is in
    assert _searched(spans, tmp_path, capsys, "--to", "2025-03-31", "--overlapping") == sorted(
        ["BEFORE", *OVERLAPPING_MARCH])
    assert _searched(spans, tmp_path, capsys, "--from", "2025-04-01T00:00:00", "--overlapping") == sorted(
        ["OUT_OF_MARCH", "WHOLE", "AFTER"])
    assert _searched(spans, tmp_path, capsys, "--from", "2025-04-01T00:10:01", "--to", "2025-04-04",
                     "--overlapping") == ["WHOLE"]  # (the chat that ended at 00:10 does not reach it)
    entry = audit(spans)[1]
    assert entry["action"] == "search" and entry["filters"]["overlapping"] is True, entry
    assert str(entry["filters"]["ended_from"]).startswith("2025-03-01"), entry  # (the audit log keeps text)


@pytest.mark.parametrize("argv", [("search", "--overlapping"),
                                  ("search", "--customer", CUSTOMER, "--overlapping"),
                                  ("hold", "place", "--customer", CUSTOMER, "--overlapping", "--case", "K",
                                   "--reason", "r")])
def test_overlapping_without_a_date_is_a_usage_error(spans, tmp_path, capsys, argv) -> None:
    assert cli(spans, tmp_path, *argv) == 2
    assert "--overlapping needs --from and/or --to" in capsys.readouterr().err


def test_a_case_bundle_by_overlapping_dates_holds_and_records_them(spans, keys, tmp_path, capsys) -> None:
    out = tmp_path / "march.zip"
    assert cli(spans, tmp_path, "retrieve", "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason",
               "production request", "--from", "2025-03-01", "--to", "2025-03-31", "--overlapping",
               "--no-progress") == 0
    custody = zipped_json(out, "chain-of-custody.json")
    assert sorted(r["room"] for r in custody["rooms"]) == sorted(OVERLAPPING_MARCH)
    OVERLAP_MEANING = bundle_module.OVERLAP_MEANING
    assert custody["selection"]["filters"]["overlapping"] is True
    assert custody["selection"]["dates"] == OVERLAP_MEANING != DATES_MEANING
    assert OVERLAP_MEANING in zipped_text(out, "README.txt") and DATES_MEANING not in zipped_text(out, "README.txt")
    assert "without_start" not in custody["selection"]  # every chat here has its start
    entry = audit(spans)[-1]
    assert entry["outcome"] == "ok" and entry["filters"]["overlapping"] is True
    assert sorted(entry["rooms"]) == sorted(OVERLAPPING_MARCH)
    # without --overlapping the same dates select by end time, and say so
    plain = tmp_path / "ended.zip"
    assert cli(spans, tmp_path, "retrieve", "--bundle", str(plain), "--key", str(keys["legal.key.pem"]), "--reason",
               "r", "--from", "2025-03-01", "--to", "2025-03-31", "--no-progress") == 0
    custody = zipped_json(plain, "chain-of-custody.json")
    assert sorted(r["room"] for r in custody["rooms"]) == sorted(ENDED_IN_MARCH)
    assert custody["selection"]["dates"] == DATES_MEANING and "overlapping" not in custody["selection"]["filters"]


def test_a_bundle_takes_overlapping_only_with_filters(spans, keys, tmp_path, capsys) -> None:
    for argv in (("--bundle", str(tmp_path / "a.zip"), "INSIDE", "--overlapping"),
                 ("INSIDE", "--out", str(tmp_path / "o"), "--overlapping")):
        assert cli(spans, tmp_path, "retrieve", *argv, "--key", str(keys["legal.key.pem"]), "--reason", "r") == 2
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "o").exists()
    assert cli(spans, tmp_path, "retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", str(keys["legal.key.pem"]),
               "--reason", "r", "--service", "Billing", "--overlapping") == 2
    assert "--overlapping needs --from and/or --to" in capsys.readouterr().err


def test_a_hold_by_overlapping_dates_covers_them_by_the_index_and_the_source(spans, tmp_path, capsys) -> None:
    from archiver.retention import Deletions

    assert cli(spans, tmp_path, "hold", "place", "--from", "2025-03-01", "--to", "2025-03-31", "--overlapping",
               "--case", "March", "--reason", "production") == 0
    assert f"{len(OVERLAPPING_MARCH)} archived room(s) covered now" in capsys.readouterr().out
    holds = Deletions(spans).holds
    (hold,) = holds.active()
    assert hold["filters"]["overlapping"] is True
    assert sorted(holds.held_rooms(list(SPANS))) == sorted(OVERLAPPING_MARCH)
    assert audit(spans)[-1]["filters"]["overlapping"] is True
    # the source check (a chat the index does not show) reads the span of the chat as it is now
    f = SearchFilters(ended_from=parse_date("2025-03-01", end=False), ended_to=parse_date("2025-03-31", end=True),
                      overlapping=True)
    for room, span in SPANS.items():
        chat, contact = span_chat(room, *span)
        assert _Indexed(normalise(chat, contact, status="ended", max_message_chars=1000)).matches(f) == (
            room in OVERLAPPING_MARCH), room
        assert _Indexed(normalise(chat, contact, status="ended", max_message_chars=1000)).matches(
            SearchFilters(ended_from=f.ended_from, ended_to=f.ended_to)) == (room in ENDED_IN_MARCH), room


def _entries(collection, *spans: tuple[str, object, object], text_dates: bool = True) -> Search:
    for room, start, end in spans:
        if isinstance(start, str) and start != "absent" and not text_dates:
            continue
        collection.insert_one({"room": room, "version": 1, "status": "archived",
                               **({} if start == "absent" else {"started_at": start}), "ended_at": end})
    return Search(collection, None)


def _found(search: Search, start: str | None, end: str | None) -> list[str]:
    f = SearchFilters(ended_from=None if start is None else parse_date(start, end=False),
                      ended_to=None if end is None else parse_date(end, end=True), overlapping=True)
    return sorted(e["room"] for e in search.find(f))


@pytest.mark.parametrize("server", ["mongo_uri", "nx_uri"])  # the in-process stand-in, and over the wire protocol
def test_worst_values_missing_start_clock_skew_and_year_9999(server, request, db_names) -> None:
    """A missing start: the chat is placed by its end alone (as without --overlapping). A start after the end (a
    clock skew): the span runs between the two, whichever is first. Dates in year 9999: compared as any other."""
    collection = connect(request.getfixturevalue(server))[db_names["index.database"]]["overlap_worst"]
    search = _entries(collection,
                      ("NO_START_IN", None, _at("2025-03-05T10:00:00")),
                      ("NO_START_AFTER", None, _at("2025-04-02T10:00:00")),
                      ("ABSENT_START_AFTER", "absent", _at("2025-04-02T10:00:00")),
                      ("SKEW_ACROSS", _at("2025-04-03T00:00:00"), _at("2025-03-30T00:00:00")),  # start after end
                      ("SKEW_AFTER", _at("2025-04-09T00:00:00"), _at("2025-04-03T00:00:00")),
                      ("SKEW_OVER", _at("2025-04-09T00:00:00"), _at("2025-02-03T00:00:00")),  # skew over the month
                      ("TEXT_START", "2025-03-02T00:00:00Z", _at("2025-04-02T10:00:00")),  # not a date: as if none
                      ("NO_END", _at("2025-03-31T23:00:00"), None),  # (an interim chat without messages' times)
                      ("Y9999", _at("9999-12-31T22:00:00"), _at("9999-12-31T23:59:59.999000")),
                      ("TO_9999", _at("2025-03-31T23:00:00"), _at("9999-12-31T23:30:00")),
                      # nx-27017 compares a date with text (MongoDB never does): a start edited into text, on mongomock
                      text_dates=server == "mongo_uri")
    text = ["TEXT_START"] if server == "mongo_uri" else []
    assert _found(search, "2025-03-01", "2025-03-31") == ["NO_END", "NO_START_IN", "SKEW_ACROSS", "SKEW_OVER", "TO_9999"]
    assert _found(search, "9999-12-31", "9999-12-31") == ["TO_9999", "Y9999"]
    assert _found(search, "9999-12-31T23:59:59.999", None) == ["Y9999"]
    assert _found(search, None, "0001-01-01") == []
    assert _found(search, "2025-04-02", "2025-04-02") == ["ABSENT_START_AFTER", "NO_START_AFTER", "SKEW_ACROSS",
                                                            "SKEW_OVER", *text, "TO_9999"]
    # the entries of a selection that have no start are named: they were placed by their end time alone (a start
    # kept as ISO text, as nx-27017 returns every date written with $set, is read as the time it says)
    assert search.without_start(SearchFilters(ended_from=parse_date("2025-04-01", end=False), overlapping=True)) == (
        2, ["ABSENT_START_AFTER", "NO_START_AFTER"])
    assert search.without_start(SearchFilters(ended_from=parse_date("2025-04-01", end=False), overlapping=True),
                                named=1) == (2, ["ABSENT_START_AFTER"])
    assert search.without_start(SearchFilters(ended_from=parse_date("2025-04-01", end=False))) == (0, [])


def test_search_names_the_entries_placed_by_their_end_alone(spans, tmp_path, capsys) -> None:
    index(spans).update_one({"room": "OUT_OF_MARCH"}, {"$unset": {"started_at": ""}})
    index(spans).update_one({"room": "AFTER"}, {"$set": {"started_at": None}})
    march = ("--from", "2025-03-01", "--to", "2025-03-31", "--overlapping")
    assert cli(spans, tmp_path, "search", "--json", *march) == 0
    captured = capsys.readouterr()
    assert sorted(e["room"] for e in json.loads(captured.out)) == ["INSIDE", "INTO_MARCH", "WHOLE"]
    assert "no recorded start" not in captured.err  # neither entry lacking one is found: nothing of them to say
    assert cli(spans, tmp_path, "search", "--from", "2025-04-01", "--overlapping") == 0
    err = capsys.readouterr().err
    assert "note: 2 of these entries have no recorded start: placed by their end time alone: AFTER, OUT_OF_MARCH" \
        in err, err


def test_pending_chats_ended_after_the_period_are_counted_as_not_known(spans, keys, tmp_path, capsys) -> None:
    """The job queue records when a chat not yet archived ended, not when it began: one that ended after the period
    may have begun in it, so an overlapping selection counts those as not known, rather than stay silent."""
    jobs = index_db(spans)[spans["index.jobs"]]
    jobs.insert_one({"_id": "LATE", "state": "pending", "ended_at": _at("2025-04-01T00:05:00"),
                     "discovered_at": _at("2025-04-01T00:06:00")})
    jobs.insert_one({"_id": "IN_MARCH", "state": "failed", "ended_at": _at("2025-03-03T00:05:00"),
                     "reason": "store down"})
    march = ("--from", "2025-03-01", "--to", "2025-03-31")
    assert cli(spans, tmp_path, "search", *march, "--overlapping") == 0
    err = capsys.readouterr().err
    assert "1 chat(s) in this selection's window are NOT in the archive" in err and "IN_MARCH" in err, err
    assert ("1 other chat(s) not archived, of any person, ended after the period; the job queue does not record when "
            "they began, "
            "so whether they overlap it is not known") in err, err
    assert cli(spans, tmp_path, "search", *march) == 0
    assert "ended after the period" not in capsys.readouterr().err  # by end time: known not to be selected
    out = tmp_path / "march.zip"  # a bundle says it where it says what it does not hold
    assert cli(spans, tmp_path, "retrieve", "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason", "r",
               *march, "--overlapping", "--no-progress") == 0
    assert zipped_json(out, "chain-of-custody.json")["not_archived"]["ended_after_period"] == 1
    assert "1 other chat(s) not archived, of any person, ended after the period" in zipped_text(out, "README.txt")


@pytest.mark.parametrize("command", ["search", "retrieve", "hold"])
def test_help_shows_overlapping_with_an_example(command, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--overlapping" in out.split("example:")[0], out
    assert "--overlapping" in out.split("example:")[1], out


def test_a_bundle_names_the_chats_it_placed_by_their_end_alone(spans, keys, tmp_path) -> None:
    """A chat with no start anywhere (no beginTime, no message time): its end is the contact's endTime; an overlapping
    bundle selects it by that, and says so in chain-of-custody.json and README.txt."""
    chat, contact = span_chat("NO_START", "2025-03-20T10:00:00", "2025-03-20T10:30:00")
    for message in chat["messages"]:
        del message["data"]["ts"]
    del contact["beginTime"]
    seed(spans, [(chat, contact)])
    assert Archiver(spans).archive_room("NO_START", "ended")[0].archived == 1
    (entry,) = index(spans).find({"room": "NO_START"})
    assert entry.get("started_at") is None and entry["ended_at"] is not None
    out = tmp_path / "march.zip"
    assert cli(spans, tmp_path, "retrieve", "--bundle", str(out), "--key", str(keys["legal.key.pem"]), "--reason",
               "r", "--from", "2025-03-01", "--to", "2025-03-31", "--overlapping", "--no-progress") == 0
    custody = zipped_json(out, "chain-of-custody.json")
    assert sorted(r["room"] for r in custody["rooms"]) == sorted([*OVERLAPPING_MARCH, "NO_START"])
    assert custody["selection"]["without_start"]["count"] == 1
    assert custody["selection"]["without_start"]["rooms"] == ["NO_START"]
    assert "1 of the entries has no recorded start: selected by when they ended alone" in zipped_text(out, "README.txt")

"""Review "court" C9: `search --customer`/`--agent` compare ids exactly; a search that finds nothing names the
ids the index has that are similar to the one given (case, Unicode form, the USER_ prefix, a participant's name),
read by bounded queries (never a distinct() over a person field), on mongomock and on nx-27017 alike."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archiver.search import SearchFilters, open_search
from conftest import write_toml
from retrieval_helpers import audit, index

GENERIC = ("nothing matched: --customer is compared exactly with the user id the platform stores (case and "
           "Unicode form included; not a name)")


def _entry(room: str, customers=(), agents=(), opened_by=None, handled_by=None, present=(), named=()) -> dict:
    return {"room": room, "version": 1, "status": "archived", "ended_at": dt.datetime(2025, 6, 1),
            "customers": list(customers), "agents": list(agents), "opened_by": opened_by,
            "handled_by": handled_by, "present": list(present),
            "participants": [{"user_id": u, "role": r, "nickname": n} for u, r, n in named]}


ENTRIES = [
    _entry("R1", customers=["Mario.Rossi@Example.COM"], agents=["USER_anna"], handled_by="USER_anna",
           named=[("Mario.Rossi@Example.COM", "customer", "Mario Rossi"), ("USER_anna", "agent", "Anna Bianchi")]),
    _entry("R2", customers=["jose\u0301.garcia"], opened_by="jose\u0301.garcia", handled_by="carl",
           named=[("jose\u0301.garcia", "customer", "Jos\u00e9 Garc\u00eda")]),
    _entry("R3", customers=["aXbbbc("], present=["USER_bob"]),
    _entry("R4", customers=["evil\x1b[31m\nid"], opened_by="Mario.Rossi@Example.COM",
           named=[("someone", "agent", "Mario Rossi")]),  # an agent of that name: not a customer
]


@pytest.fixture(params=["mongomock", "nx"])
def searcher(request, make_config):
    config = make_config(**({"mongodb__uri": request.getfixturevalue("nx_uri")} if request.param == "nx" else {}))
    index(config).insert_many([dict(e) for e in ENTRIES])
    return open_search(config)


def _notes(searcher, **filters) -> list[str]:
    found = list(searcher.find(SearchFilters(**filters)))
    assert found == []  # the notes are for a search that found nothing
    return searcher.exact_notes(SearchFilters(**filters))


def test_a_customer_id_in_another_case_is_named(searcher) -> None:
    assert _notes(searcher, customer="mario.rossi@example.com") == [
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM'"]


def test_an_id_in_another_unicode_form_is_named_and_said_to_be_one(searcher) -> None:
    assert _notes(searcher, customer="JOS\u00c9.garcia") == [
        "--customer 'JOS\u00c9.garcia' matched nothing: ids are compared exactly; the index has "
        "'jose\u0301.garcia' (another Unicode form)"]


def test_a_name_names_the_ids_of_that_role_with_it(searcher) -> None:
    assert _notes(searcher, customer="mario rossi") == [
        "--customer 'mario rossi' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM' (named 'Mario Rossi')"]  # not 'someone', the agent of that name in R4
    assert _notes(searcher, customer="jose\u0301 garci\u0301a") == [
        "--customer 'jose\u0301 garci\u0301a' matched nothing: ids are compared exactly; the index has "
        "'jose\u0301.garcia' (named 'Jos\u00e9 Garc\u00eda')"]


def test_an_agent_without_or_with_the_user_prefix_is_named(searcher) -> None:
    assert _notes(searcher, agent="anna") == [
        "--agent 'anna' matched nothing: ids are compared exactly; the index has 'USER_anna'"]
    assert _notes(searcher, agent="Bob") == [  # found where the contact names it (present)
        "--agent 'Bob' matched nothing: ids are compared exactly; the index has 'USER_bob'"]
    assert _notes(searcher, agent="user_Carl") == [  # handled_by 'carl'
        "--agent 'user_Carl' matched nothing: ids are compared exactly; the index has 'carl'"]


def test_regex_metacharacters_are_literal(searcher) -> None:
    assert _notes(searcher, customer="a.b*c(") == [GENERIC]  # not 'aXbbbc(', and no error
    assert _notes(searcher, customer="AXBBBC(") == [
        "--customer 'AXBBBC(' matched nothing: ids are compared exactly; the index has 'aXbbbc('"]


def test_a_hostile_id_is_shown_escaped(searcher) -> None:
    (note,) = _notes(searcher, customer="EVIL\x1b[31m\nID")
    assert note.endswith("the index has 'evil\\x1b[31m\\nid'"), note
    assert "\n" not in note and "\x1b" not in note


def test_no_similar_id_keeps_the_generic_note(searcher) -> None:
    assert _notes(searcher, customer="nobody") == [GENERIC]
    assert _notes(searcher, customer="Mario.Rossi@Example.COM", room="R2") == [  # it matched: --room found nothing
        "--customer 'Mario.Rossi@Example.COM' has entries: the other filters exclude them all"]
    assert _notes(searcher, customer="nobody", agent="anna") == [
        "--agent 'anna' matched nothing: ids are compared exactly; the index has 'USER_anna'", GENERIC]


def test_at_most_five_are_named_and_no_person_field_is_read_whole(make_config, monkeypatch) -> None:
    config = make_config()
    variants = ["MARIO", "Mario", "mario", "MArio", "maRIO", "marIO", "mARIO"]
    index(config).insert_many([_entry(f"V{n}", customers=[v]) for n, v in enumerate(variants)])
    searcher = open_search(config)
    collection = type(searcher.entries)
    distinct = collection.distinct
    monkeypatch.setattr(collection, "distinct", lambda self, field, *a, **k: (
        pytest.fail(f"distinct({field!r}) over the whole index") if field not in ("service", "channel", "ctlive_type")
        else distinct(self, field, *a, **k)))
    bounds = []
    real_find = collection.find

    def find(self, query, *args, **kwargs):  # records each look-up's bounds (entries read, time)
        cursor = real_find(self, query, *args, **kwargs)
        real_limit = cursor.limit
        cursor.limit = lambda n: (bounds.append(("limit", n)), real_limit(n))[1]
        real_time = cursor.max_time_ms
        cursor.max_time_ms = lambda ms: (bounds.append(("ms", ms)), real_time(ms))[1]
        return cursor

    monkeypatch.setattr(collection, "find", find)
    note = searcher.exact_notes(SearchFilters(customer="mArIo"))[0]
    assert bounds == [("limit", 50), ("ms", 5000)] * 2, bounds  # by id, by name
    assert note.startswith("--customer 'mArIo' matched nothing: ids are compared exactly; the index has "), note
    named = note.split("the index has ")[1].split(", ")
    assert len(named) == 5 and all(n.strip("'") in variants for n in named), note


def test_the_search_command_names_similar_ids_on_nx(nx_uri, db_names, tmp_path) -> None:
    from archiver.mongo import connect
    connect(nx_uri)[db_names["index.database"]]["archive_index"].insert_many([dict(e) for e in ENTRIES])
    toml = write_toml(tmp_path / "a.toml", {"mongodb.uri": nx_uri, "index.database": db_names["index.database"]})
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "archiver.cli", "--config", str(toml), "search", "--customer",
                           "Mario Rossi", "--agent", "ANNA"], capture_output=True, text=True, timeout=120,
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done
    assert "0 entries" in done.stdout + done.stderr, done
    assert ("note: --customer 'Mario Rossi' matched nothing: ids are compared exactly; the index has "
            "'Mario.Rossi@Example.COM' (named 'Mario Rossi')\n") in done.stderr, done.stderr
    assert ("note: --agent 'ANNA' matched nothing: ids are compared exactly; the index has 'USER_anna'\n"
            in done.stderr), done.stderr


def test_entries_holding_the_id_given_do_not_crowd_out_a_similar_one(make_config) -> None:
    """The given id's own entries (more than are read for similar ids) are not read in their place."""
    config = make_config()
    index(config).insert_many([_entry(f"M{n:03d}", customers=["Mario"]) for n in range(80)]
                              + [_entry("Z", customers=["MARIO"])])
    assert open_search(config).similar_ids("customer", "Mario") == ([("MARIO", "")], True)


def test_a_lookup_out_of_time_says_so_and_names_what_it_found(searcher, monkeypatch) -> None:
    from pymongo.errors import ExecutionTimeout

    collection = type(searcher.entries)
    find = collection.find

    class OutOfTime:  # the cursor of the lookup by name, on an index too large to read in time
        def limit(self, n):
            return self

        def max_time_ms(self, ms):
            assert ms == 5000
            return self

        def __iter__(self):
            raise ExecutionTimeout("operation exceeded time limit")

    monkeypatch.setattr(collection, "find", lambda self, query, *a, **k: (
        OutOfTime() if "participants" in query else find(self, query, *a, **k)))
    assert searcher.exact_notes(SearchFilters(customer="mario.rossi@example.com")) == [
        "--customer: the look-up of ids similar to 'mario.rossi@example.com' stopped early (it reads 50 entries "
        "for 5 s at most): there may be others than those named",
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM'"]
    assert searcher.exact_notes(SearchFilters(customer="Mario Rossi"))[1:] == [GENERIC]


def test_a_value_too_long_to_be_an_id_is_not_looked_up(searcher, monkeypatch) -> None:
    """Its pattern (its Unicode forms, with and without USER_) could pass
    MongoDB's limit of 32,764 bytes and fail a search that succeeded."""
    find = type(searcher.entries).find  # the value's own (exact) look-up is made; no pattern of it is
    monkeypatch.setattr(type(searcher.entries), "find", lambda self, query, *a, **k: pytest.fail("looked up")
                        if "$regex" in repr(query) else find(self, query, *a, **k))
    assert searcher.exact_notes(SearchFilters(customer="\u00e9" * 1001)) == [GENERIC]  # 40 kB of pattern, at most
    monkeypatch.undo()
    long_id = "A" * 240 + "@example.com"  # an id as long as an e-mail address may be is looked up
    searcher.entries.insert_one(_entry("LONG", customers=[long_id]))
    assert searcher.exact_notes(SearchFilters(customer=long_id.lower())) == [
        f"--customer {long_id.lower()!r} matched nothing: ids are compared exactly; the index has {long_id!r}"]


def test_a_bundle_that_selects_nothing_names_the_similar_ids_too(make_config, keys, tmp_path, capsys) -> None:
    """`retrieve --bundle` takes the same filters as search: a paralegal who typed the customer's id in another
    case is told which id the index has, not only "no archived entry matches"."""
    from archiver.cli import main
    from test_cli_contract import cli_toml

    config = cli_toml(tmp_path, make_config)
    index(make_config()).insert_many([dict(e) for e in ENTRIES])
    argv = ["retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", str(keys["legal.key.pem"]), "--reason", "x",
            "--customer", "mario.rossi@example.com", "--no-progress"]
    assert main(["--config", str(config), *argv]) == 1
    err = capsys.readouterr().err
    assert "no archived entry matches --customer mario.rossi@example.com" in err, err
    assert ("note: --customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
            "'Mario.Rossi@Example.COM'") in err, err
    assert not (tmp_path / "b.zip").exists()
    # the audit log, which nothing ever erases, keeps what was asked for, never another person's id it suggested
    entries = [a for a in audit(make_config()) if a["action"] == "retrieve"]
    assert entries and all(a["outcome"] == "failed" for a in entries), entries
    assert "no archived entry matches --customer mario.rossi@example.com" in entries[-1]["detail"], entries
    assert not any("Mario.Rossi@Example.COM" in json.dumps(a, default=str) for a in entries), entries


def test_a_customer_id_that_has_chats_is_not_said_to_match_nothing(searcher) -> None:
    """Another filter (--service) is what found nothing: the id itself matched, so no similar id (another
    person's) is offered in its place."""
    searcher.entries.insert_one(_entry("R9", customers=["mario.rossi@example.com"]))
    assert list(searcher.find(SearchFilters(customer="Mario.Rossi@Example.COM")))
    notes = _notes(searcher, customer="Mario.Rossi@Example.COM", service="Billing")
    assert notes == ["--customer 'Mario.Rossi@Example.COM' has entries: the other filters exclude them all"], notes


def test_a_look_up_whose_entries_were_all_of_one_similar_id_says_there_may_be_others(searcher) -> None:
    """The look-up reads 50 entries: all of one similar id, another similar id may be behind them."""
    searcher.entries.insert_many([_entry(f"U{i}", customers=["USER_mario"]) for i in range(60)])
    searcher.entries.insert_one(_entry("UPPER", customers=["MARIO"]))
    similar, complete = searcher.similar_ids("customer", "mario")
    assert ("MARIO", "") in similar or not complete, (similar, complete)
    notes = _notes(searcher, customer="mario")
    assert any("there may be others than those named" in note for note in notes) or "'MARIO'" in str(notes), notes


def test_an_id_equal_under_full_case_folding_is_named(searcher) -> None:
    """`straße` folds to `strasse`: the index's `STRASSE@EXAMPLE.COM` is the same id but for case."""
    searcher.entries.insert_one(_entry("SS", customers=["STRASSE@EXAMPLE.COM"]))
    assert _notes(searcher, customer="stra\u00dfe@example.com") == [
        "--customer 'straße@example.com' matched nothing: ids are compared exactly; the index has "
        "'STRASSE@EXAMPLE.COM'"]


def test_a_hold_that_covers_nothing_now_names_the_similar_ids(make_config, tmp_path, capsys) -> None:
    """A hold by a mistyped id protects nothing: placing it says so, and which ids the index has (on stderr
    alone: the audit log keeps what was asked for, never another person's id it suggested)."""
    from archiver.cli import main
    from test_cli_contract import cli_toml

    config = cli_toml(tmp_path, make_config)
    index(make_config()).insert_many([dict(e) for e in ENTRIES])
    assert main(["--config", str(config), "hold", "place", "--customer", "mario.rossi@example.com", "--case", "C1",
                 "--reason", "dispute"]) == 0
    out, err = capsys.readouterr()
    assert "0 archived room(s) covered now, and any archived later" in out, out
    assert ("note: --customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
            "'Mario.Rossi@Example.COM'") in err, err
    assert not any("Mario.Rossi@Example.COM" in json.dumps(a, default=str) for a in audit(make_config())
                   if a["action"] == "hold_place")
    assert main(["--config", str(config), "hold", "place", "--customer", "Mario.Rossi@Example.COM", "--case", "C2",
                 "--reason", "dispute"]) == 0
    out, err = capsys.readouterr()
    assert "2 archived room(s) covered now" in out and "note:" not in err, (out, err)  # R1 by author, R4 opener


def _keyed_search(make_config, tmp_path):
    """A configuration file with a search key, the index holding ENTRIES, and Mario's chat erased at another
    customer's request (a tombstone keeping only his keyed trace)."""
    from archiver.search import load_search_key, person_trace
    from retrieval_helpers import search_key

    key = search_key(tmp_path)
    toml = write_toml(tmp_path / "k.toml", {**{k: make_config()[k] for k in (
        "mongodb.uri", "index.database", "source.database")}, "search.key_file": str(key)})
    index(make_config()).insert_many([dict(e) for e in ENTRIES] + [{
        "room": "GONE", "version": 1, "status": "deleted",
        "deletion": {"run": "erasure-1", "at": dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),
                     "state": "done", "shared_with": [person_trace("Mario.Rossi@Example.COM",
                                                                   load_search_key(str(key)))]}}])
    return toml


def test_chats_erased_at_another_customers_request_are_said_beside_those_found(make_config, tmp_path,
                                                                              capsys) -> None:
    """A customer who still has chats is told of the one erased at another customer's request too: not only
    when the search finds nothing."""
    from archiver.cli import main

    toml = _keyed_search(make_config, tmp_path)
    assert main(["--config", str(toml), "search", "--customer", "Mario.Rossi@Example.COM"]) == 0
    out, err = capsys.readouterr()
    assert "R1" in out and "R4" in out, out
    assert ("note: 1 chat of this customer was erased at another customer's request (erasure run erasure-1 on "
            "2026-11-02); its content is gone") in err, err


def test_the_erased_note_reads_the_tombstone_on_either_server(searcher) -> None:
    """On nx-27017 too (newuser3 F2: it answers a projection of nested fields flattened, and the note failed with
    a KeyError)."""
    from archiver.search import person_trace

    searcher.key = bytes(32)
    searcher.entries.insert_one({"room": "GONE", "version": 1, "status": "deleted", "deletion": {
        "run": "erasure-1", "at": dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc), "state": "done",
        "shared_with": [person_trace("Mario.Rossi@Example.COM", searcher.key)]}})
    assert searcher.erased_note("Mario.Rossi@Example.COM") == [
        "1 chat of this customer was erased at another customer's request (erasure run erasure-1 on 2026-11-02); "
        "its content is gone"]
    assert searcher.erased_note("someone else") == []


def test_an_id_that_matches_where_other_filters_find_nothing_is_said_to(searcher) -> None:
    notes = _notes(searcher, customer="Mario.Rossi@Example.COM", room="R2")
    assert notes == ["--customer 'Mario.Rossi@Example.COM' has entries: the other filters exclude them all"], notes


def test_a_hold_that_covers_nothing_now_says_how_to_put_it_right(make_config, tmp_path, capsys) -> None:
    from archiver.cli import main
    from test_cli_contract import cli_toml

    config = cli_toml(tmp_path, make_config)
    assert main(["--config", str(config), "hold", "place", "--customer", "nobody-at-all", "--case", "C9",
                 "--reason", "dispute"]) == 0
    err = capsys.readouterr().err
    assert ("note: this hold covers no archived chat now (it covers those archived later that match): if a value "
            "is mistyped, release it (archiver hold release --case C9 --reason ...) and place it again") in err, err


def test_a_similar_id_the_other_filters_exclude_is_said_to_be(searcher) -> None:
    """A similar id offered beside other filters: one whose chats those filters exclude is marked, so that the reader
    is not sent to a second search that finds nothing either; a filter that itself matches nothing (a second typo)
    is left out of that check, as the reader will correct it too."""
    assert _notes(searcher, customer="mario.rossi@example.com", room="R1") == [
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM'"]
    assert _notes(searcher, customer="mario.rossi@example.com", room="R2") == [
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM' (no entry of it with the other filters)"]
    assert _notes(searcher, customer="mario.rossi@example.com", agent="anna") == [  # both mistyped: R1 has both
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM'",
        "--agent 'anna' matched nothing: ids are compared exactly; the index has 'USER_anna'"]
    assert _notes(searcher, customer="mario.rossi@example.com", agent="carl") == [
        "--customer 'mario.rossi@example.com' matched nothing: ids are compared exactly; the index has "
        "'Mario.Rossi@Example.COM' (no entry of it with the other filters)",
        "--agent 'carl' has entries: the other filters exclude them all"]

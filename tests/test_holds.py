"""`archiver hold` and `archiver erase` from the command line; what holds and locks mean in a local store."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from bson import json_util

from archiver.cli import main
from archiver.mongo import connect
from archiver.store import ObjectLocked, open_store
from conftest import write_toml
from retention_helpers import (age, agent_of, archive, customer_of, erase, index, jobs, retention, retention_config,
                               source)
from retrieval_helpers import stored_path

KEYS = ("mongodb.uri", "source.database", "index.database", "storage.url", "storage.object_lock_mode",
        "signing.certificate", "signing.key", "encryption.recipients")


def _toml(config, tmp_path):
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in KEYS})
    toml.write_text(toml.read_text() + "[retention.rules.default]\nsource_days = 30\narchive_days = 365\n")
    return str(toml)


def _audit(config):
    return list(connect(config["mongodb.uri"])[config["index.database"]][config["index.audit"]].find().sort("seq", 1))


def test_hold_place_list_release_from_the_cli_are_audited_and_protect(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    chats = archive(config, 2)
    age(config, 40)
    toml = _toml(config, tmp_path)
    customer = customer_of(chats[0])
    assert main(["--config", toml, "hold", "place", "--customer", customer, "--case", "ACME v. Shop",
                 "--reason", "litigation"]) == 0
    assert "1 archived room(s) covered now" in capsys.readouterr().out
    assert main(["--config", toml, "hold", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["case"] == "ACME v. Shop" and listed["filters"] == {"customer": customer}
    assert listed["reason"] == "litigation" and listed["active"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", listed["placed_at"]), listed  # ISO 8601, as search
    assert main(["--config", toml, "retention", "run"]) == 0
    assert {c["room"] for c in source(config).find()} == {chats[0]["room"]}
    assert main(["--config", toml, "hold", "release", "--case", "ACME v. Shop", "--reason", "settled"]) == 0
    assert main(["--config", toml, "hold", "release", "--case", "ACME v. Shop", "--reason", "again"]) == 2
    assert main(["--config", toml, "hold", "list"]) == 0
    assert "0 hold(s)" in capsys.readouterr().out
    assert main(["--config", toml, "retention", "run"]) == 0
    assert source(config).count_documents({}) == 0
    actions = [(a["action"], a["outcome"], a["reason"]) for a in _audit(config)]
    assert actions[:5] == [("hold_place", "started", "litigation"), ("hold_place", "ok", "litigation"),
                           ("retention_run", "ok", ""), ("hold_release", "started", "settled"),
                           ("hold_release", "ok", "settled")], actions  # the release of no hold: not recorded
    assert _audit(config)[0]["filters"]["customer"] == customer == _audit(config)[1]["filters"]["customer"]


@pytest.mark.parametrize("argv, message", [
    (["hold", "place", "--case", "C", "--reason", "r"], "a hold needs a scope"),
    (["hold", "place", "--room", "R", "--reason", "r"], "--case NAME and --reason TEXT are required"),
    (["hold", "place", "--text", "refund", "--case", "C", "--reason", "r"], "search.key_file"),
    (["erase", "--customer", " ", "--reason", "r"], "must not be empty"),
    (["hold", "place", "--room", "R", "--case", " \t", "--reason", "r"], "--case and --reason must not be empty"),
    (["hold", "place", "--room", "R", "--case", "C", "--reason", "  "], "--case and --reason must not be empty"),
])
def test_bad_hold_and_erase_requests_are_usage_errors_that_change_nothing(make_config, tmp_path, capsys,
                                                                        argv, message) -> None:
    config = retention_config(make_config)
    assert main(["--config", _toml(config, tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert connect(config["mongodb.uri"])[config["index.database"]][config["index.holds"]].count_documents({}) == 0


@pytest.mark.parametrize("argv, named", [
    (["release", "--case", "K", "--room", "A", "--reason", "room A no longer relevant"], "--room"),
    (["release", "--case", "K", "--customer", "1", "--from", "2026-01-01", "--reason", "r"], "--customer, --from"),
    (["release", "--case", "K", "--reason", "r", "--all"], "--all"),
    (["release", "--case", "K", "--reason", " "], "--reason must not be empty"),
    (["list", "--room", "A"], "--room"),
    (["list", "--case", "K", "--text", "refund"], "--case, --text"),
    (["place", "--room", "A", "--case", "K", "--reason", "r", "--json"], "--json"),
])
def test_options_of_another_hold_action_are_refused_and_release_nothing(make_config, tmp_path, capsys, argv,
                                                                       named) -> None:
    """`hold release --case K --room A` released every hold of case K, room B's too: an option the action does
    not take is refused (exit 2, named) rather than ignored."""
    config = retention_config(make_config)
    toml = _toml(config, tmp_path)
    for room in ("A", "B"):
        assert main(["--config", toml, "hold", "place", "--room", room, "--case", "K", "--reason", "court order"]) == 0
    capsys.readouterr()
    assert main(["--config", toml, "hold", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    holds = connect(config["mongodb.uri"])[config["index.database"]][config["index.holds"]]
    assert sorted((h["filters"]["room"], h["active"]) for h in holds.find()) == [("A", True), ("B", True)]
    assert [(a["action"], a["outcome"]) for a in _audit(config)] == [("hold_place", "started"), ("hold_place", "ok")] * 2


def test_hold_place_prints_a_hostile_room_id_with_placeholders(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    assert main(["--config", _toml(config, tmp_path), "hold", "place", "--room", "R1\nFORGED\x1b[2K\u202eX",
                 "--agent", "a\u2066b", "--case", "K", "--reason", "r"]) == 0
    out = capsys.readouterr().out
    assert "room=R1[U+000A]FORGED[U+001B][2K[U+202E]X" in out and "agent=a[U+2066]b" in out, out
    assert not [raw for raw in ("\x1b", "\u202e", "\u2066", "\nFORGED") if raw in out], out


def test_erase_from_the_cli_dry_run_then_real_with_tombstones_without_personal_data(make_config, tmp_path,
                                                                                    capsys) -> None:
    config = retention_config(make_config)
    chats = archive(config, 3)
    customer = customer_of(chats[1])
    toml = _toml(config, tmp_path)
    argv = ["--config", toml, "erase", "--customer", customer, "--reason", "GDPR art. 17, request 77"]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"PLANNED  delete_source  {chats[1]['room']}" in out and source(config).count_documents({}) == 3
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "NOT ERASED" not in out
    assert {c["room"] for c in source(config).find()} == {chats[0]["room"], chats[2]["room"]}
    tomb = index(config).find_one({"room": chats[1]["room"]})
    assert tomb["status"] == "deleted" and tomb["deletion"]["rule"] == "erasure"
    assert tomb["deletion"]["reason"] == "erasure request: GDPR art. 17, request 77"
    assert "customers" not in tomb and "participants" not in tomb and tomb["objects"]["pdf"]["sha256"]
    assert not stored_path(config, tomb["objects"]["pdf"]["key"]).exists()
    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    assert contacts.count_documents({"id": chats[1]["room"]}) == 0
    audit = [a for a in _audit(config) if a["action"] == "erase"]
    assert [a["reason"] for a in audit] == ["GDPR art. 17, request 77"] and audit[0]["filters"]["customer"] == customer
    assert audit[0]["rooms"] == [chats[1]["room"]]
    # The id stays only where the erasure itself is proved (docs/decisions.md): the audit entry and the run.
    db = connect(config["mongodb.uri"])[config["index.database"]]
    holding = {name for name in db.list_collection_names()
               if any(customer in json_util.dumps(doc) for doc in db[name].find())}
    assert holding == {config["index.audit"], config["index.retention_runs"]}, holding


@pytest.mark.parametrize("scope, held", [
    ("customer", True), ("room", True), ("agent", True),  # matched against the chat's own messages
    ("service", True), ("channel", True), ("ctlive_type", True), ("ended_from", True),  # cannot be ruled out
    ("another room", False), ("another agent", False),
])
def test_erasure_of_a_chat_never_archived_respects_holds_that_may_cover_it(make_config, scope, held) -> None:
    """docs/retention.md (Erasure): a chat never archived has no index entry; holds by room, customer or agent
    are matched against its messages, and a hold on any other filter is assumed to cover it."""
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config)
    chats = archive(config, 1)
    customer = customer_of(chats[0])
    entry = index(config).find_one()
    index(config).delete_many({})  # as if never archived: only the source knows the chat
    filters = {"customer": {"customer": customer}, "room": {"room": chats[0]["room"]},
               "agent": {"agent": agent_of(chats[0])}, "service": {"service": entry["service"]},
               "channel": {"channel": entry["channel"]}, "ctlive_type": {"ctlive_type": entry["ctlive_type"]},
               "ended_from": {"ended_from": dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)},
               "another room": {"room": "CHAT_ANOTHER"}, "another agent": {"agent": "USER_another@acd.example.com"}}
    open_holds(config).place(SearchFilters(**filters[scope]), "Case N", "r", {"user": "t", "host": "h"})
    result = erase(config, customer)
    (item,) = result.report["items"]
    if held:
        assert item["action"] == "skip" and item["reason"] == "source chat kept: held by case 'Case N'"
    else:
        assert item["action"] == "delete_source" and item["outcome"] == "deleted", item
    assert source(config).count_documents({}) == (1 if held else 0)


def test_local_store_records_locks_and_holds_and_honours_them_in_its_own_deletions(make_config) -> None:
    """A directory has no Object Lock: retain-until and legal holds live in each object's metadata file
    and the archiver's deletions obey them (a person with write access to the directory is not stopped)."""
    config = retention_config(make_config, storage__object_lock_mode="COMPLIANCE", storage__retain_days=3,
                              retention__rules={"default": {"source_days": 0, "archive_days": 5}})
    chats = archive(config, 1)
    entry = index(config).find_one()
    store = open_store(config)
    obj = entry["objects"]["pdf"]
    with pytest.raises(ObjectLocked, match="locked until"):
        store.delete(obj["key"])
    age(config, 30)  # the index says expired; the object's own record still says 3 days from now
    result = retention(config)
    refused = [i for i in result.report["items"] if i["action"] == "delete_archive"]
    assert [i["outcome"] for i in refused] == ["refused"] and "locked until" in refused[0]["detail"]
    assert stored_path(config, obj["key"]).exists() and index(config).find_one()["status"] == "archived"
    unlocked = retention_config(make_config, storage__object_lock_mode="")
    other = open_store(unlocked)
    key = f"{chats[0]['room']}/extra.p7m"
    other.put(key, b"x", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", None)
    other.set_legal_hold(key, "", True)
    with pytest.raises(ObjectLocked, match="legal hold"):
        other.delete(key)
    other.set_legal_hold(key, "", False)
    other.delete(key)
    other.delete(key)  # gone already: no error
    assert not stored_path(config, key).exists()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=9)
    assert store.extend_retention(obj["key"], "", later) == later
    assert store.extend_retention(obj["key"], "", later - dt.timedelta(days=8)) == later, "never shortened"


def test_erasure_names_a_version_still_being_archived(make_config) -> None:
    config = retention_config(make_config)
    chats = archive(config, 1)
    customer = customer_of(chats[0])
    entry = index(config).find_one()
    index(config).insert_one({**{k: v for k, v in entry.items() if k != "_id"}, "version": 2,
                              "status": "uploading", "source_sha256": "in-flight"})
    result = erase(config, customer)
    kept = [i for i in result.report["items"] if i["version"] == 2]
    assert [i["action"] for i in kept] == ["skip"] and "being archived right now" in kept[0]["reason"]
    assert index(config).find_one({"version": 1})["status"] == "deleted"


def test_an_erasure_interrupted_earlier_is_finished_before_the_new_request(make_config) -> None:
    from archiver.retention import Deletions

    config = retention_config(make_config)
    chats = archive(config, 2)
    first, second = customer_of(chats[0]), customer_of(chats[1])
    deletions = Deletions(config)
    run = deletions.ledger.begin("erasure", dt.datetime.now(dt.timezone.utc), {"customer": first, "reason": "old"})
    deletions.ledger.record_plan(run, deletions.plan_erasure(first, "old")(run["as_of"]),
                                 deletions.signer())  # then the process died
    result = erase(config, second, reason="new")
    assert result.report["params"] == {"customer": second, "reason": "new", "include_shared": False}
    assert {c["room"] for c in source(config).find()} == set()
    runs = deletions.ledger.runs.find({"kind": "erasure"})
    assert sorted(r["params"]["reason"] for r in runs) == ["new", "old"]
    audit = [a for a in _audit(config) if a["action"] == "erase"]
    assert [(a["reason"], a["filters"]["resumed"]) for a in audit] == [("old", True), ("new", False)]


def test_erase_from_the_cli_names_what_it_kept_and_its_json_stays_json(make_config, tmp_path, capsys) -> None:
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config)
    chats = archive(config, 2)
    customer = customer_of(chats[0])
    open_holds(config).place(SearchFilters(customer=customer), "Case K", "r", {"user": "t", "host": "h"})
    argv = ["--config", _toml(config, tmp_path), "erase", "--customer", customer, "--reason", "request 9"]
    assert main([*argv, "--dry-run"]) == 0
    captured = capsys.readouterr()
    kept = sum(1 for line in captured.out.splitlines() if line.startswith("SKIPPED"))
    assert kept >= 1 and f"NOT ERASED: {kept} item(s)" in captured.out
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)  # nothing but the report on standard output
    assert sum(i["outcome"] == "skipped" for i in printed["items"]) == kept
    assert f"NOT ERASED: {kept} item(s)" in captured.err


# -- what happens while a run is under way ------------------------------------------------------------------

def _during_first_deletion(monkeypatch, action) -> None:
    """Run ACTION once, while the run deletes its first source chat (the others are in the same batch)."""
    from archiver.source import ChatSource

    real, done = ChatSource.delete_checked, []

    def delete_checked(self, *args, **kwargs):
        if not done:
            done.append(action())
        return real(self, *args, **kwargs)
    monkeypatch.setattr(ChatSource, "delete_checked", delete_checked)


def test_a_hold_placed_while_a_batch_runs_keeps_the_rest_of_that_batch(make_config, monkeypatch) -> None:
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config)
    rooms = sorted(c["room"] for c in archive(config, 3))
    age(config, 40)  # the sources are due (30 days), the archives not
    _during_first_deletion(monkeypatch, lambda: open_holds(config).place(
        SearchFilters(room=rooms[-1]), "Case X", "court order", {"user": "legal", "host": "test"}))
    result = retention(config)
    assert source(config).count_documents({"room": rooms[-1]}) == 1
    held = [i for i in result.report["items"] if i["room"] == rooms[-1]]
    assert [(i["action"], i["outcome"]) for i in held] == [("delete_source", "skipped")]
    assert "Case X" in held[0]["detail"]


def test_a_chat_changed_while_a_batch_runs_is_queued_not_deleted(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    rooms = sorted(c["room"] for c in archive(config, 3))
    age(config, 40)

    def late_message() -> None:
        doc = source(config).find_one({"room": rooms[-1]})
        late = {**doc["messages"][-1], "_id": "late-correction"}
        source(config).update_one({"_id": doc["_id"]}, {"$push": {"messages": late}})
    _during_first_deletion(monkeypatch, late_message)
    result = retention(config)
    assert source(config).count_documents({"room": rooms[-1]}) == 1, "the change was never archived"
    changed = [i for i in result.report["items"] if i["room"] == rooms[-1]]
    assert [(i["action"], i["outcome"]) for i in changed] == [("delete_source", "skipped")]
    assert "changed after the plan" in changed[0]["detail"]
    assert jobs(config).find_one({"_id": rooms[-1]})["state"] == "pending"


# -- holds by words ------------------------------------------------------------------------------------------

def _shared_word(chats) -> str:
    texts = [" ".join(m["data"]["content"].get("text", "") for m in c["messages"]) for c in chats]
    return next(w for w in texts[0].split() if w.isalpha() and len(w) > 4 and all(w in t for t in texts))


def test_a_hold_by_words_keeps_the_chats_archived_before_word_hashes_were_written(make_config, tmp_path,
                                                                                   capsys) -> None:
    """A chat archived before search.key_file was set has no word hashes: a hold by words cannot tell whether it
    mentions them, so it is held (fail closed), and hold place says so."""
    from retrieval_helpers import search_key

    plain = retention_config(make_config)
    before = archive(plain, 2, rng_seed=7)
    config = plain.with_overrides(**{"search.key_file": str(search_key(tmp_path))})
    after = archive(config, 2, rng_seed=8)
    word = _shared_word(before + after)
    path = write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*KEYS, "search.key_file")})
    assert main(["--config", str(path), "hold", "place", "--text", word, "--case", "Case T", "--reason", "r"]) == 0
    assert "have no word hashes" in capsys.readouterr().out
    age(config, 40)
    retention(config)
    assert {c["room"] for c in source(config).find()} == {c["room"] for c in before + after}


@pytest.mark.parametrize("command", ["retention", "erase"])
@pytest.mark.parametrize("key, message", [("another", "not the key the index's word hashes were made with"),
                                          ("none", "text search needs the search key (not set)")],
                         ids=["another key", "no key"])
def test_a_run_with_another_search_key_stops_rather_than_match_a_hold_by_words_to_nothing(
        make_config, tmp_path, capsys, command, key, message) -> None:
    """A retention run or an erasure under another search key, or none, while a hold by words is active: the
    words would match nothing, so it stops with exit 2 naming search.key_file, nothing deleted."""
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config, search__key_file=str(search_key_at(tmp_path / "one")))
    chats = archive(config, 2)
    open_holds(config).place(SearchFilters(text=_shared_word(chats)), "Case K", "litigation", {"user": "legal"})
    other = config.with_overrides(**{"search.key_file": str(search_key_at(tmp_path / "two")) if key == "another"
                                     else ""})
    age(other, 40)
    toml = write_toml(tmp_path / "other.toml", {k: other[k] for k in (*KEYS, "search.key_file")})
    toml.write_text(toml.read_text() + "[retention.rules.default]\nsource_days = 30\narchive_days = 365\n")
    argv = (["retention", "run"] if command == "retention" else
            ["erase", "--customer", customer_of(chats[0]), "--reason", "GDPR request 9"])
    assert main(["--config", str(toml), *argv]) == 2
    err = capsys.readouterr().err
    assert "search.key_file" in err and message in err, err
    assert source(config).count_documents({}) == 2
    assert index(config).count_documents({"status": "archived"}) == 2


def search_key_at(folder):
    from retrieval_helpers import search_key

    folder.mkdir()
    return search_key(folder)


def test_a_hold_by_words_is_refused_before_it_is_stored_when_it_could_hold_nothing(make_config, tmp_path) -> None:
    from archiver.config import ConfigError
    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config, search__key_file=str(search_key_at(tmp_path / "one")))
    archive(config, 1)
    with pytest.raises(ValueError, match="no word to hold by"):
        open_holds(config).place(SearchFilters(text="?!"), "Case P", "r", {"user": "legal"})
    other = config.with_overrides(**{"search.key_file": str(search_key_at(tmp_path / "two"))})
    with pytest.raises(ConfigError, match="not the key"):
        open_holds(other).place(SearchFilters(text="refund"), "Case K", "r", {"user": "legal"})
    assert open_holds(config).listing(everything=True) == []


def test_a_hold_by_words_covers_only_archives_that_could_have_had_word_hashes(make_config, tmp_path) -> None:
    """Entries that never have words of their own (an attempt that did not complete, one being uploaded, an
    erased tombstone) must not put their room under every hold by words."""
    import datetime as dt

    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config, search__key_file=str(search_key_at(tmp_path / "one")))
    rooms = [c["room"] for c in archive(config, 3)]
    at = dt.datetime.now(dt.timezone.utc)
    for status, room in zip(("superseded", "uploading", "deleted"), rooms):
        index(config).insert_one({"room": room, "version": 9, "status": status, "created_at": at,
                                  "superseded_objects": [], "archived_at": at - dt.timedelta(days=400)})
    holds = open_holds(config)
    holds.place(SearchFilters(text="xylophonequux"), "Case Z", "a word no chat has", {"user": "legal"})
    assert holds.held_rooms(rooms) == {}


def test_the_checks_right_before_each_deletion_do_not_grow_with_the_number_of_holds(make_config,
                                                                                    monkeypatch) -> None:
    """Holds are read per batch, and right before each deletion only holds placed since are asked for (one
    query, whatever the number of holds): 20 holds must not multiply a run's queries."""
    import mongomock
    from pymongo.collection import Collection

    from archiver.holds import open_holds
    from archiver.search import SearchFilters
    from retention_helpers import outcomes

    def queries_per_deletion(holds: int) -> tuple[int, int]:
        config = retention_config(make_config, source__database=f"source{holds}", index__database=f"index{holds}")
        archive(config, 6)
        for n in range(holds):
            placed = open_holds(config).place(SearchFilters(room=f"elsewhere-{n}"), f"Case {n}", "r", {"user": "legal"})
            open_holds(config).holds.update_one({"_id": placed["_id"]}, {"$set": {  # long before the run
                "placed_at": placed["placed_at"] - dt.timedelta(days=1)}})
        age(config, 40)
        from archiver.retention import Deletions

        counted = []
        real_execute = Deletions._execute

        def execute(self, run_id, batch):
            calls = [0]
            for kind in (Collection, mongomock.collection.Collection):  # a real MongoDB, or the stand-in
                for name in ("find", "find_one", "count_documents", "distinct"):
                    real = getattr(kind, name)

                    def counting(coll, *a, _real=real, **k):
                        calls[0] += 1
                        return _real(coll, *a, **k)
                    monkeypatch.setattr(kind, name, counting)
            try:
                return real_execute(self, run_id, batch)
            finally:
                monkeypatch.undo()
                counted.append((calls[0], len(batch)))
        monkeypatch.setattr(Deletions, "_execute", execute)
        result = retention(config)
        monkeypatch.undo()
        assert outcomes(result) and all(o == "deleted" for o, _ in outcomes(result).values())
        assert len(counted) == 1  # one batch
        return counted[0]

    (few, steps), (many, same) = queries_per_deletion(0), queries_per_deletion(20)
    assert steps == same == 6  # a source deletion each (the archives are not due)
    assert many - few <= 20 + 1, (few, many)  # a query per hold per batch, not per deletion
    # the source read again (and the chat once more, by its bytes, right before its deletion), holds placed since,
    # the job: a few per deletion; and once per batch its run's policy
    assert few <= 8 * steps + 1, few


def test_a_hold_placed_mid_batch_from_a_machine_whose_clock_is_behind_still_counts(make_config,
                                                                                  monkeypatch) -> None:
    import datetime as dt

    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    config = retention_config(make_config)
    rooms = sorted(c["room"] for c in archive(config, 3))
    age(config, 40)

    def place_with_a_slow_clock() -> None:
        holds = open_holds(config)
        hold = holds.place(SearchFilters(room=rooms[-1]), "Case S", "court order", {"user": "legal"})
        holds.holds.update_one({"_id": hold["_id"]}, {"$set": {"placed_at": hold["placed_at"] - dt.timedelta(hours=1)}})
    _during_first_deletion(monkeypatch, place_with_a_slow_clock)
    retention(config)
    assert source(config).count_documents({"room": rooms[-1]}) == 1


def test_a_hold_by_words_covers_archives_without_word_hashes_whenever_made_and_deletions_cut_short(
        make_config, tmp_path) -> None:
    """An archiver of the fleet without the key archived chats with no word hashes after the key was first
    used (before an archive pass without it was refused: test_not_archived.py); an archive without them whose
    deletion was cut short still has objects: a hold by words covers both."""
    import datetime as dt

    from archiver.holds import open_holds
    from archiver.search import SearchFilters

    keyed = retention_config(make_config, search__key_file=str(search_key_at(tmp_path / "one")))
    hashed = archive(keyed, 1, rng_seed=7)
    unkeyed = keyed.with_overrides(**{"search.key_file": ""})
    state = index(keyed).database[keyed["index.state"]]
    recorded = state.find_one({"_id": "search_key"})
    state.delete_one({"_id": "search_key"})  # as the release that did not refuse such a pass had it
    later = archive(unkeyed, 2, rng_seed=8)
    state.replace_one({"_id": "search_key"}, recorded, upsert=True)
    cut_short = later[1]["room"]
    index(keyed).update_one({"room": cut_short}, {"$set": {"status": "deleted", "deletion": {
        "run": "r", "state": "deleting", "at": dt.datetime.now(dt.timezone.utc)}}})
    holds = open_holds(keyed)
    holds.place(SearchFilters(text=_shared_word(hashed + later)), "Case W", "litigation", {"user": "legal"})
    assert set(holds.held_rooms([c["room"] for c in hashed + later])) == {c["room"] for c in hashed + later}


def test_a_hold_by_dates_covers_the_whole_to_day_in_basic_iso_format_and_a_reversed_window_is_refused(
        make_config, tmp_path, capsys) -> None:
    """`hold place --to 20261126` covered 0 rooms (read as midnight), so retention could delete what the team
    believed held; `--from` after `--to` was stored as a hold that covers nothing."""
    config = retention_config(make_config)
    archive(config, 2)
    toml = _toml(config, tmp_path)
    day = index(config).find_one()["ended_at"].date()
    that_day = index(config).count_documents({"ended_at": {"$gte": dt.datetime.combine(day, dt.time.min),
                                                           "$lt": dt.datetime.combine(day, dt.time.min)
                                                           + dt.timedelta(days=1)}})
    assert that_day >= 1
    assert main(["--config", toml, "hold", "place", "--from", day.strftime("%Y%m%d"), "--to", day.strftime("%Y%m%d"),
                 "--case", "C-1", "--reason", "litigation"]) == 0
    assert f"{that_day} archived room(s) covered now" in capsys.readouterr().out
    assert index(config).count_documents({"legal_hold": True}) == that_day
    after = (day + dt.timedelta(days=1)).isoformat()
    assert main(["--config", toml, "hold", "place", "--from", after, "--to", day.isoformat(),
                 "--case", "C-2", "--reason", "litigation"]) == 2
    assert f"--from {after!r} is after --to {day.isoformat()!r}" in capsys.readouterr().err
    holds = connect(config["mongodb.uri"])[config["index.database"]][config["index.holds"]]
    assert [h["case"] for h in holds.find()] == ["C-1"]


@pytest.mark.parametrize("action", ["place", "release"])
def test_a_hold_is_placed_or_released_only_once_the_audit_log_has_taken_its_entry(make_config, tmp_path, capsys,
                                                                                  monkeypatch, action) -> None:
    """A release lets retention delete what the case kept; a placement keeps data past its policy: neither may
    happen unrecorded. The log refusing the entry (a full disk) leaves the holds as they were, exit 1."""
    import archiver.audit
    from archiver.holds import open_holds

    config = retention_config(make_config)
    chats = archive(config, 1)
    toml = _toml(config, tmp_path)
    place = ["hold", "place", "--room", chats[0]["room"], "--case", "K", "--reason", "litigation"]
    if action == "release":
        assert main(["--config", toml, *place]) == 0
    before = [(h["_id"], h["active"]) for h in open_holds(config).listing(everything=True)]

    def refused(*args, **kwargs):
        raise archiver.audit.AuditError("the audit log could not be written: disk full")

    monkeypatch.setattr(archiver.audit.AuditLog, "record", refused)
    argv = place if action == "place" else ["hold", "release", "--case", "K", "--reason", "settled"]
    assert main(["--config", toml, *argv]) == 1
    assert "disk full" in capsys.readouterr().err
    assert [(h["_id"], h["active"]) for h in open_holds(config).listing(everything=True)] == before


def test_hold_list_reads_back_times_and_flags_as_the_stand_in_returns_them(make_config, tmp_path, capsys) -> None:
    """nx-27017 returns a date set with $set as text ("2026-11-26 18:12:27.429000") and may return true as 1:
    `hold list --all` crashed on a released hold, and --json printed that text and 0 as they came."""
    config = retention_config(make_config)
    archive(config, 1)
    toml = _toml(config, tmp_path)
    assert main(["--config", toml, "hold", "place", "--room", "R", "--case", "K", "--reason", "r"]) == 0
    assert main(["--config", toml, "hold", "release", "--case", "K", "--reason", "done"]) == 0
    holds = connect(config["mongodb.uri"])[config["index.database"]][config["index.holds"]]
    holds.update_many({}, {"$set": {"released_at": "2026-11-26 18:12:27.429000", "active": 0}})
    capsys.readouterr()
    assert main(["--config", toml, "hold", "list", "--all"]) == 0
    assert "released 2026-11-26" in capsys.readouterr().out
    assert main(["--config", toml, "hold", "list", "--all", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["active"] is False and listed["released_at"] == "2026-11-26T18:12:27.429Z", listed


@pytest.mark.parametrize("server", ["mongomock", "nx-27017"])
def test_the_record_of_a_room_held_through_its_source_is_written_once_honoured_and_pulled_on_release(
        server, mongo_uri, nx_uri, db_names) -> None:
    """Holds.record on every entry of the room (one without the field, one with another hold's), idempotent;
    held_rooms and rooms_of honour it for the active hold only; a release pulls it. On nx-27017 too, which
    adds nothing with $addToSet to an array that does not exist yet."""
    from archiver.holds import RECORD, Holds
    from archiver.search import SearchFilters

    actor = {"user": "t", "host": "h"}
    db = connect(nx_uri if server == "nx-27017" else mongo_uri)[db_names["index.database"]]
    holds = Holds(db["holds"], db["entries"], None)
    holds.ensure_indexes()
    db["entries"].insert_many([{"room": "A", "version": 1, "status": "archived"},
                               {"room": "A", "version": 2, "status": "deleted", RECORD: ["other"]},
                               {"room": "B", "version": 1, "status": "archived"}])
    hold = holds.place(SearchFilters(service="Nobody's"), "Case O", "litigation", actor)
    assert holds.held_rooms(["A", "B"]) == {} and list(holds.rooms_of(hold)) == []
    for _ in range(2):
        holds.record({hold["_id"]: {"A"}})
    assert [sorted(e.get(RECORD, [])) for e in db["entries"].find().sort([("room", 1), ("version", 1)])] == [
        [hold["_id"]], sorted(["other", hold["_id"]]), []]
    assert holds.held_rooms(["A", "B"]) == {"A": ["Case O"]} and list(holds.rooms_of(hold)) == [["A"]]
    holds.release("Case O", "settled", actor)
    assert holds.held_rooms(["A", "B"]) == {} and [e.get(RECORD) for e in db["entries"].find().sort(
        [("room", 1), ("version", 1)])] == [[], ["other"], None]


def test_a_case_released_while_another_hold_s_case_is_not_text(make_config, tmp_path, capsys) -> None:
    """Review of the change: a hold whose case is a document (a hand edit) made `hold release` of any case die
    (a set of unhashable values); such a case is named by no --case, and the others are released."""
    config = retention_config(make_config)
    chats = archive(config, 1)
    toml = _toml(config, tmp_path)
    assert main(["--config", toml, "hold", "place", "--customer", customer_of(chats[0]), "--case", "C1",
                 "--reason", "litigation"]) == 0
    holds = connect(config["mongodb.uri"])[config["index.database"]][config["index.holds"]]
    odd = holds.find_one({"case": "C1"})
    holds.insert_one({**{k: v for k, v in odd.items() if k != "_id"}, "case": {"x": 1}})
    age(config, 40)  # due for deletion: the odd hold, still active, keeps it
    assert main(["--config", toml, "hold", "release", "--case", "C1", "--reason", "settled"]) == 0
    assert holds.count_documents({"case": "C1", "active": True}) == 0
    assert main(["--config", toml, "retention", "run"]) == 0
    assert source(config).count_documents({}) == 1
    capsys.readouterr()
    assert main(["--config", toml, "hold", "list"]) == 0
    assert "1 hold(s)" in capsys.readouterr().out

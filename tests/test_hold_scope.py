"""What a legal hold covers when the index does not show the link: deletions match holds against the source
chat's current people too, a hold by customer covers chats the customer opened without writing in them (and one
by agent those the agent handled), and a date bound outside years 1-9999 in UTC is refused (review "retention",
findings 1, 2 and 7)."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import random
import uuid

import pytest

from archiver import artifacts
from archiver.cli import main
from archiver.holds import open_holds
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.retention import Deletions
from archiver.samples import make_chat
from archiver.search import SearchFilters, open_search
from archiver.store import StoreError
from retention_helpers import (age, agent_of, archive, assert_erasure_drops, customer_of, erase, index, jobs, retention,
                               retention_config, source, undecodable)
from test_holds import _toml
from test_pipeline import build_failing_record_puts, recent_ms, seed

LEGAL = {"user": "legal", "host": "h"}


def _place(config, case="ACME v. Shop", **filters):
    return open_holds(config).place(SearchFilters(**filters), case, "litigation", LEGAL)


def _kept_by(result, case):
    """The erasure's items for the source chat: kept, saying by which case."""
    items = [i for i in result.report["items"] if i["version"] is None]
    assert items and all(i["action"] == "skip" and f"held by case {case!r}" in i["reason"] for i in items), items


# -- finding 1: an erasure matches holds against the source chat, not only the index -----------------------

def test_an_erasure_keeps_a_held_chat_whose_only_entry_is_a_failed_attempt(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(40), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "archive_in_worker",
                      functools.partial(build_failing_record_puts, StoreError("connection reset")))
        Archiver(config).run_pass()
    (entry,) = list(index(config).find())
    assert entry["status"] == "uploading" and "customers" not in entry and jobs(config).find_one()["state"] == "failed"
    _place(config, customer=customer_of(chat))
    result = erase(config, customer_of(chat))
    _kept_by(result, "ACME v. Shop")
    assert source(config).count_documents({}) == 1


def _agent_wrote(config, chat, agent: str) -> None:
    """AGENT writes in CHAT's source after it was archived (an agent message of its own, copied)."""
    doc = source(config).find_one({"room": chat["room"]})
    message = copy.deepcopy(next(m for m in doc["messages"] if m["data"]["content"]["user"]["isAgent"]))
    message["data"]["content"]["user"]["id"] = agent
    source(config).update_one({"_id": doc["_id"]}, {"$push": {"messages": message}})


def test_an_erasure_keeps_a_chat_held_by_an_agent_who_wrote_in_it_after_it_was_archived(make_config) -> None:
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    _agent_wrote(config, chat, "USER_agent_A@acd.example.com")
    _place(config, "HR 12", agent="USER_agent_A@acd.example.com")
    assert "USER_agent_A@acd.example.com" not in index(config).find_one()["agents"]
    result = erase(config, customer_of(chat))
    _kept_by(result, "HR 12")
    assert [(i["action"], i["version"]) for i in result.report["items"] if i["action"] != "skip"] == []
    assert source(config).count_documents({}) == 1 and index(config).find_one()["status"] == "archived"


def test_a_hold_placed_during_an_erasure_on_an_agent_who_wrote_since_keeps_source_and_archive(make_config,
                                                                                                  monkeypatch) -> None:
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    _agent_wrote(config, chat, "USER_agent_A@acd.example.com")
    real = Deletions._execute

    def hold_first(self, run_id, batch):
        if not open_holds(config).active():
            _place(config, "HR 12", agent="USER_agent_A@acd.example.com")
        return real(self, run_id, batch)
    monkeypatch.setattr(Deletions, "_execute", hold_first)
    result = erase(config, customer_of(chat))
    done = {(i["action"], i["version"]): (i["outcome"], i.get("detail", "")) for i in result.report["items"]}
    assert set(done) == {("delete_source", None), ("delete_archive", 1)}, done
    assert all(outcome == "skipped" and "held by case 'HR 12'" in detail for outcome, detail in done.values()), done
    assert source(config).count_documents({}) == 1 and index(config).find_one()["status"] == "archived"


def test_an_erasure_keeps_a_held_chat_kept_from_the_archive_by_a_messages_field_of_its_own(make_config) -> None:
    config = retention_config(make_config, source__messages="messages")
    chat, contact = make_chat(random.Random(3), messages=6)
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db.messages.insert_many(copy.deepcopy(chat["messages"]))
    db.chats.insert_one({**{k: v for k, v in chat.items() if k != "messages"}, "messages": 6})
    db.contacts.insert_one(copy.deepcopy(contact))
    _place(config, "HR 12", agent=agent_of(chat))
    result = erase(config, customer_of(chat))
    (item,) = [i for i in result.report["items"] if i["version"] is None]
    assert item["action"] == "skip" and "held by case 'HR 12' (the source chat cannot be read" in item["reason"], item
    assert "a field 'messages' of its own" in item["reason"]
    assert db.chats.count_documents({}) == 1 and db.messages.count_documents({}) == 6


def test_an_erasure_keeps_a_chat_that_cannot_be_decoded_for_any_hold_not_by_another_room(make_config,
                                                                                          monkeypatch) -> None:
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    index(config).delete_many({})  # never archived (an undecodable chat never is: it is quarantined)
    undecodable(monkeypatch, chat["room"])
    _place(config, "Other room", room="CHAT_ANOTHER")  # rules nothing in: its room is another
    _place(config, "HR 12", agent=agent_of(chat))
    result = erase(config, customer_of(chat))
    (item,) = [i for i in result.report["items"] if i["version"] is None]
    assert item["action"] == "skip" and item["reason"].startswith(
        "source chat kept: held by case 'HR 12' (the source chat cannot be read, so it cannot be ruled out: "), item
    assert "MongoDB cannot decode it" in item["reason"]
    assert source(config).count_documents({}) == 1


def test_a_hold_placed_during_an_erasure_keeps_a_chat_never_archived(make_config, monkeypatch) -> None:
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    index(config).delete_many({})  # never archived: only the source knows it
    customer = customer_of(chat)
    real = Deletions._execute

    def hold_first(self, run_id, batch):
        _place(config, customer=customer)
        return real(self, run_id, batch)
    monkeypatch.setattr(Deletions, "_execute", hold_first)
    result = erase(config, customer)
    (item,) = result.report["items"]
    assert item["action"] == "delete_source" and item["outcome"] == "skipped", item
    assert "held by case 'ACME v. Shop'" in item["detail"], item
    assert source(config).count_documents({}) == 1


def test_a_hold_on_another_agent_or_room_does_not_stop_an_erasure_of_an_archived_chat(make_config) -> None:
    """The source check holds what may be held, not everything: the erasure still erases."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    _place(config, "HR 12", agent="USER_someone_else@acd.example.com")
    _place(config, "Subpoena", room="CHAT_ANOTHER")
    result = erase(config, customer_of(chat))
    assert source(config).count_documents({}) == 0 and index(config).find_one()["status"] == "deleted", \
        result.report["items"]


# -- holds by dates, type, channel, service and words: matched against the source chat as it is now too --------

FILTERS = ("service", "ctlive_type", "channel", "dates", "text")
HELD_WORD = "xylophonequux"


def _make_held(config, chat, name: str) -> dict:
    """CHAT's source changed since it was archived (re-opened and continued, moved to another service...) so
    that the hold by NAME returned matches it now; its index entry says otherwise."""
    contacts = _contacts(config)
    if name == "service":
        contacts.update_many({"id": chat["room"]}, {"$set": {"serv_name": "Held service"}})
        return {"service": "Held service"}
    if name == "ctlive_type":
        source(config).update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "held-type"}})
        return {"ctlive_type": "held-type"}
    if name == "channel":
        contact = contacts.find_one({"id": chat["room"]})
        users = {user: {**info, "channel": "held-channel"} for user, info in contact["users"].items()}
        contacts.update_one({"_id": contact["_id"]}, {"$set": {"users": users}})
        return {"channel": "held-channel"}
    doc = source(config).find_one({"room": chat["room"]})
    if name == "dates":  # continued: it ended days later than when it was archived
        end = doc["messages"][-1]
        assert end["data"]["messageType"] == "endChat"
        later = end["data"]["ts"] + 3 * 86_400_000
        source(config).update_one({"_id": doc["_id"]}, {"$set": {f"messages.{len(doc['messages']) - 1}.data.ts": later}})
        at = dt.datetime.fromtimestamp(later / 1000, dt.timezone.utc)
        return {"ended_from": at - dt.timedelta(minutes=1), "ended_to": at + dt.timedelta(minutes=1)}
    message = copy.deepcopy(next(m for m in doc["messages"] if m["data"]["messageType"] == "TEXT"))
    message["data"]["content"]["text"] = f"Please keep the {HELD_WORD.upper()} file."  # (case-folded, as search does)
    source(config).update_one({"_id": doc["_id"]}, {"$push": {"messages": {"$each": [message], "$position": 0}}})
    return {"text": HELD_WORD}


def _keyed(make_config, tmp_path):
    from retrieval_helpers import search_key

    return retention_config(make_config, search__key_file=str(search_key(tmp_path)))


@pytest.mark.parametrize("name", FILTERS)
def test_an_erasure_keeps_a_chat_whose_source_matches_a_hold_its_index_entry_does_not(make_config, tmp_path,
                                                                                         name) -> None:
    """The index describes the room (an archived version), but the source chat changed since: the hold's
    filters match the source as it is now, so the chat is held (either may match)."""
    config = _keyed(make_config, tmp_path)
    (chat,) = archive(config, 1)
    filters = _make_held(config, chat, name)
    holds = open_holds(config)
    hold = holds.place(SearchFilters(**filters), "Case F", "litigation", LEGAL)
    assert holds.held_rooms([chat["room"]], [hold]) == {}, "the index alone does not show it"
    result = erase(config, customer_of(chat))
    _kept_by(result, "Case F")
    assert source(config).count_documents({}) == 1 and index(config).find_one()["status"] == "archived"


@pytest.mark.parametrize("name", FILTERS)
def test_a_hold_on_other_filters_keeps_a_chat_never_archived_only_if_its_source_matches(make_config, tmp_path,
                                                                                         name) -> None:
    """A chat with no archived version (only a failed attempt's entry, or none) is decided by its source: held
    by a hold its source matches, erased under one it does not (not every such hold holds every such chat)."""
    config = _keyed(make_config, tmp_path)
    held, free = archive(config, 2)
    index(config).update_many({}, {"$set": {"status": "uploading"}, "$unset": {
        k: "" for k in ("service", "ctlive_type", "channel", "ended_at", "terms", "terms_format")}})
    open_holds(config).place(SearchFilters(**_make_held(config, held, name)), "Case F", "litigation", LEGAL)
    _kept_by(erase(config, customer_of(held)), "Case F")
    erased = erase(config, customer_of(free))
    assert {(i["action"], i["outcome"]) for i in erased.report["items"] if i["version"] is None} == \
        {("delete_source", "deleted")}, erased.report["items"]
    assert [c["room"] for c in source(config).find()] == [held["room"]]


def test_a_hold_by_people_and_other_filters_is_decided_by_all_of_them_on_the_source(make_config) -> None:
    """A hold by agent and service: the source chat's agent matches, its service does not (nor the index's):
    it is not held, rather than held whenever its people match."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    _place(config, "HR 12", agent=agent_of(chat), service="Another service")
    erase(config, customer_of(chat))
    assert source(config).count_documents({}) == 0 and index(config).find_one()["status"] == "deleted"


def test_a_chat_whose_source_cannot_be_normalised_is_kept_by_a_hold_on_other_filters(make_config) -> None:
    """Its service, type or words cannot be told (a message longer than archive.max_message_chars: the archive
    pass refuses it too): it cannot be ruled out. A hold by another room still rules it out."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    index(config).delete_many({})  # never archived
    _place(config, "Other room", room="CHAT_ANOTHER", service="Another service")
    _place(config, "Case F", service="Another service")
    result = erase(config.with_overrides(**{"archive.max_message_chars": 5}), customer_of(chat))
    _kept_by(result, "Case F")
    assert "Other room" not in str(result.report["items"])
    assert source(config).count_documents({}) == 1


def test_matching_holds_on_other_filters_against_the_source_reads_no_chat_twice(make_config, monkeypatch) -> None:
    """The source check uses the chats read for the plan and right before each deletion: an erasure under a hold
    by service (which normalises the chat) reads the source as often as one under no hold."""
    from archiver.source import ChatSource

    reads = []
    real = ChatSource.load_many
    monkeypatch.setattr(ChatSource, "load_many", lambda self, rooms: reads.append(list(rooms)) or real(self, rooms))

    def erasure_reads(db: str, hold: bool) -> list[list[str]]:
        config = retention_config(make_config, source__database=f"source_{db}", index__database=f"index_{db}")
        (chat,) = archive(config, 1)
        if hold:
            _place(config, "Case F", service="Another service")
        reads.clear()
        erase(config, customer_of(chat))
        assert source(config).count_documents({}) == 0, "not held: erased"
        return [[chat["room"]] == r for r in reads]

    assert erasure_reads("plain", False) == erasure_reads("held", True) == [True, True]  # the plan, the source deletion


def test_a_retention_runs_repair_reads_the_source_chats_of_unheld_archives_only_under_holds_not_by_room(
        make_config, monkeypatch) -> None:
    """Its S3 legal-hold repair matches holds against source chats (rooms held through them alone): under holds
    that each name a room it reads none but those rooms'; under a hold by customer, each archived room's the
    index does not show held by every case (once; a room held by the index under another case too: the hold
    may cover it through its source, which is then recorded); a chat held through its source alone gets the
    legal hold (in a local store, its metadata) and keeps its source."""
    from archiver.source import ChatSource

    reads = []
    real = ChatSource.load_many
    monkeypatch.setattr(ChatSource, "load_many", lambda self, rooms: reads.extend(rooms) or real(self, rooms))
    config = retention_config(make_config, retention__rules={})  # nothing due: only the repair reads
    first, second = archive(config, 2)
    _place(config, "Subpoena", room=first["room"])
    reads.clear()
    retention(config)
    assert reads == [] and index(config).find_one({"room": first["room"]})["legal_hold"] is True
    _contacts(config).update_one({"id": second["room"]}, {"$set": {"userID": "1234567890123456"}})  # opened since
    _place(config, "ACME", customer="1234567890123456")
    retention(config)
    assert reads == sorted([first["room"], second["room"]]), reads
    assert index(config).find_one({"room": second["room"]})["legal_hold"] is True


def test_a_source_chat_is_normalised_only_for_a_hold_whose_room_and_people_match_it() -> None:
    from types import SimpleNamespace

    from archiver.holds import SourceHolds

    chat, contact = make_chat(random.Random(5), messages=4)
    applied = []

    class Counting:  # a redactor that redacts nothing, counting its calls
        def apply(self, chat, contact):
            applied.append(chat["room"])
            return SimpleNamespace(chat=chat, contact=contact)
    sources = SourceHolds(None, Counting(), 1_000_000)  # (no read: the chat is given)

    def hold(**filters):
        return {"case": "C", "filters": filters}
    assert sources.cases(chat["room"], (chat, contact), [hold(room="CHAT_ANOTHER", service="x"),
                                                         hold(customer="1234567890123456", service="x"),
                                                         hold(customer=contact["userID"])]) == ["C"]
    assert applied == []
    assert sources.cases(chat["room"], (chat, contact), [hold(customer=contact["userID"], service="x"),
                                                         hold(service="x", channel="y")]) == []
    assert applied == [chat["room"]], "once per chat, whatever the number of holds"


# -- finding 2: a hold by customer covers the chats the customer opened ------------------------------------

def _opened_only(config, rng_seed=1):
    """A chat whose customer opened the contact (its userID) but wrote nothing, archived."""
    chat, contact = make_chat(random.Random(rng_seed), messages=4, start_ms=recent_ms(30))
    chat["messages"] = [m for m in chat["messages"] if m["data"]["content"]["user"]["isAgent"]]
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    assert index(config).find_one({"room": chat["room"]})["customers"] == []
    return chat, contact["userID"]


def _contacts(config):
    return connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]


def test_a_hold_by_customer_keeps_a_chat_they_opened_without_writing_in_it(make_config) -> None:
    config = retention_config(make_config, retention__delete_contacts=True)
    chat, customer = _opened_only(config)
    assert index(config).find_one()["opened_by"] == customer
    _place(config, customer=customer)
    age(config, 400)
    result = retention(config)
    assert source(config).count_documents({}) == 1 and _contacts(config).count_documents({}) == 1
    assert index(config).find_one()["status"] == "archived", result.report["items"]


@pytest.mark.parametrize("contact_left", [True, False])
def test_a_hold_by_customer_keeps_an_entry_indexed_before_opened_by_was(make_config, contact_left) -> None:
    """An entry archived before the index kept `opened_by`: matched by the source contact while it is there
    (and the field re-derived from it), held by every customer hold once it is gone (cannot be ruled out)."""
    config = retention_config(make_config)
    chat, customer = _opened_only(config)
    index(config).update_many({}, {"$unset": {"opened_by": ""}})
    source(config).delete_many({})  # the source chat is gone already (retention deleted it)
    if not contact_left:
        _contacts(config).delete_many({})
    _place(config, customer=customer)
    age(config, 400)
    result = retention(config)
    entry = index(config).find_one()
    assert entry["status"] == "archived", result.report["items"]
    assert entry.get("opened_by") == (customer if contact_left else None)
    if contact_left:  # re-derived: another customer's hold no longer holds it
        open_holds(config).release("ACME v. Shop", "settled", LEGAL)
        _place(config, "Other", customer="1234567890123456")
        retention(config)
        assert index(config).find_one()["status"] == "deleted"


def test_search_by_customer_finds_the_chats_they_opened(make_config) -> None:
    config = retention_config(make_config)
    chat, customer = _opened_only(config)
    found = list(open_search(config).find(SearchFilters(customer=customer)))
    assert [(e["room"], e["opened_by"]) for e in found] == [(chat["room"], customer)]
    assert list(open_search(config).find(SearchFilters(customer="1234567890123456"))) == []


def test_an_erasure_removes_opened_by_from_its_tombstones(make_config) -> None:
    config = retention_config(make_config)
    chat, customer = _opened_only(config)
    erase(config, customer)
    entry = index(config).find_one()
    assert entry["status"] == "deleted" and "opened_by" not in entry
    assert "opened_by" in entry["deletion"]["personal_data_removed"]


# -- the same for agents: a hold by agent covers the chats the agent handled (the contact's agentID) ---------

def _handled_only(config, rng_seed=2):
    """A chat the contact says an agent handled (its agentID) who wrote nothing in it (the customer closed it
    while waiting: assigned, then abandoned), archived."""
    chat, contact = make_chat(random.Random(rng_seed), messages=4, start_ms=recent_ms(30))
    chat["messages"] = [m for m in chat["messages"] if not m["data"]["content"]["user"]["isAgent"]
                        or m["data"]["messageType"] == "endChat"]
    chat["messages"][-1]["data"]["content"]["user"] = {"isAgent": False, "id": contact["userID"]}
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    assert index(config).find_one({"room": chat["room"]})["agents"] == []
    return chat, contact["agentID"]


@pytest.mark.parametrize("source_left", [True, False])
def test_a_hold_by_agent_keeps_a_chat_they_handled_without_writing_in_it(make_config, source_left) -> None:
    """Matched by the source contact while it is there, by the index's `handled_by` once it is gone."""
    config = retention_config(make_config, retention__delete_contacts=True)
    chat, agent = _handled_only(config)
    if not source_left:
        source(config).delete_many({})
        _contacts(config).delete_many({})
    _place(config, "HR 12", agent=agent)
    age(config, 400)
    result = retention(config)
    assert source(config).count_documents({}) == (1 if source_left else 0), result.report["items"]
    assert _contacts(config).count_documents({}) == (1 if source_left else 0)
    assert index(config).find_one()["status"] == "archived", result.report["items"]


def test_an_erasure_keeps_a_chat_held_by_the_agent_who_handled_it(make_config) -> None:
    config = retention_config(make_config)
    chat, agent = _handled_only(config)
    index(config).update_many({}, {"$unset": {"handled_by": ""}})  # the source is what tells, not the index
    _contacts(config).update_many({}, {"$set": {"agentID": "USER_agent_A@acd.example.com"}})  # reassigned since
    _place(config, "HR 12", agent="USER_agent_A@acd.example.com")
    result = erase(config, customer_of(chat))
    _kept_by(result, "HR 12")
    assert source(config).count_documents({}) == 1 and index(config).find_one()["status"] == "archived"


@pytest.mark.parametrize("contact_left", [True, False])
def test_a_hold_by_agent_keeps_an_entry_indexed_before_handled_by_was(make_config, contact_left) -> None:
    """As for `opened_by`: re-derived from the source contact while it is there, held by every agent hold
    once it is gone (cannot be ruled out)."""
    config = retention_config(make_config)
    chat, agent = _handled_only(config)
    index(config).update_many({}, {"$unset": {"handled_by": ""}})
    source(config).delete_many({})
    if not contact_left:
        _contacts(config).delete_many({})
    _place(config, "HR 12", agent=agent)
    age(config, 400)
    result = retention(config)
    entry = index(config).find_one()
    assert entry["status"] == "archived", result.report["items"]
    assert entry.get("handled_by") == (agent if contact_left else None)
    assert entry.get("opened_by") == customer_of(chat)  # (derived in the same step, not unset)
    if contact_left:  # re-derived: another agent's hold no longer holds it
        open_holds(config).release("HR 12", "settled", LEGAL)
        _place(config, "Other", agent="USER_someone_else@acd.example.com")
        retention(config)
        assert index(config).find_one()["status"] == "deleted"


def test_hold_place_by_agent_derives_handled_by_before_it_protects(make_config, tmp_path) -> None:
    """`hold place --agent` takes `handled_by` from the source contact first: an entry without it would be
    held (and its objects given the legal hold) by every hold by agent, another agent's too."""
    config = retention_config(make_config)
    chat, agent = _handled_only(config)
    index(config).update_many({}, {"$unset": {"handled_by": ""}})
    toml = _toml(config, tmp_path)
    assert main(["--config", toml, "hold", "place", "--agent", "USER_someone_else@acd.example.com",
                 "--case", "HR 12", "--reason", "r"]) == 0
    entry = index(config).find_one()
    assert entry["handled_by"] == agent and not entry.get("legal_hold"), entry
    assert main(["--config", toml, "hold", "place", "--agent", agent, "--case", "HR 13", "--reason", "r"]) == 0
    assert index(config).find_one()["legal_hold"] is True


def test_search_by_agent_finds_the_chats_they_handled(make_config) -> None:
    config = retention_config(make_config)
    chat, agent = _handled_only(config)
    found = list(open_search(config).find(SearchFilters(agent=agent)))
    assert [(e["room"], e["handled_by"]) for e in found] == [(chat["room"], agent)]
    assert list(open_search(config).find(SearchFilters(agent="USER_someone_else@acd.example.com"))) == []
    both = SearchFilters(agent=agent, customer=customer_of(chat))  # (two people: both must match)
    assert [e["room"] for e in open_search(config).find(both)] == [chat["room"]]
    assert list(open_search(config).find(SearchFilters(agent=agent, customer="1234567890123456"))) == []


def test_an_erasure_removes_handled_by_from_its_tombstones(make_config) -> None:
    config = retention_config(make_config)
    chat, _ = _handled_only(config)
    assert_erasure_drops(config, chat, "handled_by")


# -- finding 7: a date bound of year 10000 in UTC -----------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--to", "9999-12-31T23:59:59-01:00"),
                                           ("--from", "0001-01-01T00:30:00+01:00")])
def test_hold_place_refuses_a_date_outside_years_1_to_9999_in_utc(make_config, tmp_path, capsys, option,
                                                                    value) -> None:
    config = retention_config(make_config)
    archive(config, 1)
    toml = _toml(config, tmp_path)
    capsys.readouterr()
    assert main(["--config", toml, "hold", "place", option, value, "--case", "C", "--reason", "r"]) == 2
    err = capsys.readouterr().err
    assert option in err and value in err, err
    db = connect(config["mongodb.uri"])[config["index.database"]]
    assert db[config["index.holds"]].count_documents({}) == 0 and db[config["index.audit"]].count_documents({}) == 0
    assert main(["--config", toml, "search", option, value]) == 2


def test_a_hold_whose_query_cannot_be_encoded_is_refused_before_it_is_stored(make_config) -> None:
    config = retention_config(make_config)
    late = dt.datetime.fromisoformat("9999-12-31T23:59:59-01:00")
    audited = []
    with pytest.raises(ValueError, match="ended_to"):
        open_holds(config).place(SearchFilters(ended_to=late), "C", "r", LEGAL, audited.append)
    assert audited == [] and open_holds(config).listing(everything=True) == []


def test_a_hold_stored_with_a_year_10000_bound_holds_rather_than_crash_every_run(make_config) -> None:
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    age(config, 400)
    open_holds(config).holds.insert_one({  # as `hold place` stored it before dates were checked
        "_id": uuid.uuid4().hex, "case": "C", "reason": "r", "filters": {"ended_to": "9999-12-31T23:59:59-01:00"},
        "active": True, "placed_at": dt.datetime.now(dt.timezone.utc), "placed_by": LEGAL})
    result = retention(config)
    assert result.ok and source(config).count_documents({}) == 1, result.report["items"]
    assert index(config).find_one()["status"] == "archived"
    assert any("held by case 'C'" in i["reason"] for i in result.report["items"])
    erased = erase(config, customer_of(chat))
    _kept_by(erased, "C")
    assert source(config).count_documents({}) == 1


@pytest.mark.parametrize("field, made, other", [("opened_by", "_opened_only", "1234567890123456"),
                                                 ("handled_by", "_handled_only", "USER_someone_else@acd.example.com")])
def test_verify_names_a_contact_person_edited_in_the_index(make_config, keys, field, made, other) -> None:
    """`opened_by` and `handled_by` are what holds and search by customer and agent select by: edited, they
    would hide a chat from them. Each is checked against the signed record's contact (an entry without it,
    from before, is held by every hold by customer or agent instead)."""
    from archiver.envelope import RecipientKey
    from archiver.integrity import verify_archive

    config = retention_config(make_config)
    chat, person = globals()[made](config)
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    assert verify_archive(config, None, key).ok
    index(config).update_one({}, {"$set": {field: other}})
    (problem,) = verify_archive(config, None, key).problems
    assert f"{field} {other!r} (record {person!r})" in problem.problem, problem
    index(config).update_one({}, {"$unset": {field: ""}})
    assert verify_archive(config, None, key).ok


# -- review "today", finding 1: a hold by words matches the source as it stands, not only as redaction masks it ---

AMOUNT = "I was charged 1500 for the pin reset, please refund it"  # an amount the pin rule may read as a PIN
PIN = "I changed it today, my pin is 4821, please unlock the card"  # masked in the archive, clear in the source
SAID = [(AMOUNT, "1500"), (PIN, "4821")]


def _chat_saying(text: str, seed_no: int = 40):
    chat, contact = make_chat(random.Random(seed_no), messages=6, start_ms=recent_ms(30))
    msg = next(m for m in chat["messages"] if not m["data"]["content"]["user"]["isAgent"]
               and isinstance(m["data"]["content"].get("text"), str))
    msg["data"]["content"]["text"] = text
    return chat, contact


def _masked(config, text: str, word: str) -> bool:
    """Whether the configured redaction masks WORD in TEXT (as the archive indexes it)."""
    from archiver.redaction import Redactor
    from archiver.search import words

    chat, _ = _chat_saying(text)
    redacted = Redactor.from_config(config).apply(chat, None).chat
    return not any(word in words(m["data"]["content"].get("text") or "") for m in redacted["messages"]
                   if isinstance(m["data"]["content"].get("text"), str))


@pytest.mark.parametrize("said, held", SAID)
def test_a_hold_by_words_redaction_masks_keeps_a_chat_never_archived(make_config, tmp_path, monkeypatch, said,
                                                                      held) -> None:
    """Only a failed attempt's entry. The source says the held words in clear; the archive pass would mask them
    (a PIN): the erasure must not delete the chat (the hold is decided on the source as it stands too)."""
    config = _keyed(make_config, tmp_path)
    assert held != "4821" or _masked(config, said, held), "the PIN is masked as the archive indexes it"
    chat, contact = _chat_saying(said)
    seed(config, [(chat, contact)])
    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "archive_in_worker",
                      functools.partial(build_failing_record_puts, StoreError("connection reset")))
        Archiver(config).run_pass()
    assert index(config).find_one()["status"] != "archived"
    _place(config, "Refund dispute", text=held)
    _kept_by(erase(config, customer_of(chat)), "Refund dispute")
    assert source(config).count_documents({}) == 1, "the held chat's source was erased"


@pytest.mark.parametrize("said, held", SAID)
def test_retention_keeps_an_archived_chat_whose_source_says_the_held_words_the_archive_masks(
        make_config, tmp_path, said, held) -> None:
    """Archived: its index words lack the masked number, so `search --text` cannot find it; the source still
    says it in clear, so the hold keeps the source and (the source still there) the archive."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(said)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    hold = _place(config, "Refund dispute", text=held)
    if _masked(config, said, held):
        assert open_holds(config).held_rooms([chat["room"]], [hold]) == {}, "the index cannot match masked words"
    age(config, 400)
    result = retention(config)
    assert any("held by case 'Refund dispute'" in i["reason"] for i in result.report["items"]), result.report
    assert source(config).count_documents({}) == 1, "the held chat's source was deleted"
    assert index(config).find_one()["status"] == "archived", "the held chat's archive was deleted"


def test_a_hold_by_words_the_source_does_not_say_either_way_does_not_keep_it(make_config, tmp_path) -> None:
    """Not every hold by words keeps every chat: words said neither in clear nor redacted rule it out."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    index(config).delete_many({})
    _place(config, "Other", text="9999")
    erase(config, customer_of(chat))
    assert source(config).count_documents({}) == 0


# -- review "today", finding 2: people and other filters split between the index and the source -------------

@pytest.mark.parametrize("other", ["service", "dates"])
def test_a_hold_by_agent_and_another_filter_split_between_index_and_source_keeps_the_chat(make_config,
                                                                                           other) -> None:
    """v1 archived in service S, ended at T, without agent A. Then agent A writes in the chat, and it is moved to
    "Escalations" (or continued: it ends days after T). A hold "agent A, service S" (or "agent A, ended around
    T"): the index has S (T) without A, the source A without S (T). Each filter is matched by the source as it
    is now or by a version in the index, so the chat is held, though neither matches the hold whole."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    entry = index(config).find_one()
    assert entry["service"] and entry["service"] != "Escalations"
    if other == "service":
        _contacts(config).update_many({"id": chat["room"]}, {"$set": {"serv_name": "Escalations"}})
        filters = {"service": entry["service"]}
    else:
        _make_held(config, chat, "dates")  # (the source's end moved 3 days on)
        end = entry["ended_at"].replace(tzinfo=dt.timezone.utc)
        filters = {"ended_from": end - dt.timedelta(minutes=1), "ended_to": end + dt.timedelta(minutes=1)}
    _agent_wrote(config, chat, "USER_agent_A@acd.example.com")
    hold = _place(config, "HR 12", agent="USER_agent_A@acd.example.com", **filters)
    assert open_holds(config).held_rooms([chat["room"]], [hold]) == {}, "no version matches it whole"
    _kept_by(erase(config, customer_of(chat)), "HR 12")
    assert source(config).count_documents({}) == 1, "deleted"
    assert index(config).find_one()["status"] == "archived", "archive deleted"


def test_a_hold_split_between_index_and_source_is_not_matched_by_a_filter_neither_has(make_config) -> None:
    """Agent A is in the source only, the service the hold names neither in the source nor the index: erased."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    _agent_wrote(config, chat, "USER_agent_A@acd.example.com")
    _place(config, "HR 12", agent="USER_agent_A@acd.example.com", service="Nobody's service")
    erase(config, customer_of(chat))
    assert source(config).count_documents({}) == 0 and index(config).find_one()["status"] == "deleted"


# -- review "today", finding 9: a date bound finer than a millisecond ---------------------------------------

def test_a_sub_millisecond_from_bound_is_applied_alike_by_the_index_and_the_source(make_config) -> None:
    """BSON keeps milliseconds: the index's query truncates `--from …000500` to the chat's end, which it then
    matches; the source check truncates it alike (it compared the chat's end with the finer bound: no match)."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    end = index(config).find_one()["ended_at"].replace(tzinfo=dt.timezone.utc)
    hold = _place(config, "C", ended_from=end + dt.timedelta(microseconds=500))
    by_source = Deletions(config).sources.held([chat["room"]], [hold])
    assert open_holds(config).held_rooms([chat["room"]], [hold]) == by_source == {chat["room"]: ["C"]}


def test_a_split_hold_is_looked_up_in_the_index_once_per_filter_for_a_batch_and_gets_the_s3_legal_hold(
        make_config, monkeypatch) -> None:
    """Three chats split so (agent A in the source, service S in the index): one index query for the batch (the
    service: the agent is matched on the sources), not one per room; the retention run's repair gives their
    archives the legal hold (their rooms held through the source and the index together)."""
    from archiver.holds import Holds

    config = retention_config(make_config, retention__rules={})  # nothing due: only the repair
    chats = archive(config, 3)
    service = index(config).find_one()["service"]
    for chat in chats:
        _agent_wrote(config, chat, "USER_agent_A@acd.example.com")
        _contacts(config).update_many({"id": chat["room"]}, {"$set": {"serv_name": "Escalations"}})
    hold = _place(config, "HR 12", agent="USER_agent_A@acd.example.com", service=service)
    asked, real = [], Holds.rooms_matching
    monkeypatch.setattr(Holds, "rooms_matching", lambda self, hold, group, rooms: asked.append((group, rooms))
                        or real(self, hold, group, rooms))
    rooms = sorted(c["room"] for c in chats)
    assert Deletions(config).sources.held(rooms, [hold]) == {room: ["HR 12"] for room in rooms}
    assert asked == [("service", rooms)]
    retention(config)
    assert index(config).count_documents({"legal_hold": True}) == 3


# -- review "two", finding 1: a hold keeps covering a room once the live system purges its source chat ---------

AGENT_A = "USER_agent_A@acd.example.com"


def _two_versions(config):
    """v1 archived in service S without agent A; agent A then writes and the chat moves to "Escalations": v2
    (A, Escalations). The room's service S, the hold's other filter."""
    (chat,) = archive(config, 1)
    service = index(config).find_one()["service"]
    _agent_wrote(config, chat, AGENT_A)
    _contacts(config).update_many({"id": chat["room"]}, {"$set": {"serv_name": "Escalations"}})
    assert Archiver(config).archive_room(chat["room"], "ended")[0].archived == 1
    v1, v2 = index(config).find({"room": chat["room"]}).sort("version", 1)
    assert AGENT_A not in v1["agents"] and AGENT_A in v2["agents"] and v2["service"] == "Escalations"
    return chat, service


def _purge(config, chat) -> None:
    """The live system deletes CHAT (chat and contact), out of band: the archiver is not told."""
    source(config).delete_many({"room": chat["room"]})
    _contacts(config).delete_many({"id": chat["room"]})


def _deleted(result) -> list:
    return [(i["room"], i["version"]) for i in result.report["items"]
            if i["action"] == "delete_archive" and i["outcome"] == "deleted"]


def test_a_split_hold_is_matched_filter_by_filter_by_the_index_alone(make_config) -> None:
    """The source went at source_days before the hold came; v1 shows service S, v2 agent A: each filter is
    matched by some version, so the index alone holds the room and nothing is deleted at archive_days."""
    config = retention_config(make_config)
    chat, service = _two_versions(config)
    age(config, 40)
    retention(config)
    assert source(config).count_documents({}) == 0, "the source went at source_days (no hold yet)"
    hold = _place(config, "HR 12", agent=AGENT_A, service=service)
    assert open_holds(config).held_rooms([chat["room"]], [hold]) == {chat["room"]: ["HR 12"]}
    assert open_holds(config).held_rooms([chat["room"]], [_place(config, "Other", agent=AGENT_A,
                                                                 service="Nobody's")]) == {}
    age(config, 400)
    result = retention(config)
    assert _deleted(result) == [] and index(config).count_documents({"status": "archived"}) == 2, \
        result.report["items"]
    assert index(config).count_documents({"legal_hold": True}) == 2


def test_a_split_hold_keeps_the_room_once_its_source_is_purged(make_config) -> None:
    """Held through the source and v1 at the first run (which sets the legal hold); the live system then purges
    the chat: the next runs keep both versions and their legal hold, while the hold is active."""
    config = retention_config(make_config)
    chat, service = _two_versions(config)
    _place(config, "HR 12", agent=AGENT_A, service=service)
    retention(config)  # nothing due yet: the repair
    assert index(config).count_documents({"legal_hold": True}) == 2
    _purge(config, chat)
    age(config, 400)
    result = retention(config)
    assert _deleted(result) == [] and index(config).count_documents({"status": "archived", "legal_hold": True}) == 2


MASKED = ["service", "ctlive_type", "channel", "dates", "text", "masked words"]


def _held_through_source(config, chat, name: str) -> dict:
    """A hold only CHAT's source matches (the index cannot show it), placed: by a filter the chat changed on
    since it was archived, or by words redaction masks in the archive."""
    if name == "masked words":
        assert _masked(config, PIN, "4821")
        return _place(config, "Refund dispute", text="4821")
    return _place(config, "Case F", **_make_held(config, chat, name))


@pytest.mark.parametrize("name", MASKED)
def test_a_room_held_through_its_source_alone_stays_held_once_the_source_is_purged(make_config, tmp_path,
                                                                                   name) -> None:
    """Found held through its source (the run's repair sets the legal hold and records it on the room's entries,
    `held_by_source`): purged by the live system, it stays held (the archive kept, the legal hold on) for as
    long as the hold is active; once released, the record goes and the next run deletes the archive."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    hold = _held_through_source(config, chat, name)
    assert open_holds(config).held_rooms([chat["room"]], [hold]) == {}, "the index alone does not show it"
    retention(config)
    entry = index(config).find_one()
    assert entry["legal_hold"] is True and entry["held_by_source"] == [hold["_id"]]
    _purge(config, chat)
    age(config, 400)
    result = retention(config)
    assert _deleted(result) == [], result.report["items"]
    entry = index(config).find_one()
    assert entry["status"] == "archived" and entry["legal_hold"] is True
    assert any(f"held by case {hold['case']!r}" in i["reason"] for i in result.report["items"]), result.report
    open_holds(config).release(hold["case"], "settled", LEGAL)
    assert "held_by_source" not in index(config).find_one() or index(config).find_one()["held_by_source"] == []
    assert _deleted(retention(config)) == [(chat["room"], 1)]


def test_hold_place_records_a_room_it_finds_held_through_its_source(make_config, tmp_path, capsys) -> None:
    """`hold place` finds the room through its source (and says so): recorded at once, so a purge before the
    next retention run does not free it."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    from conftest import write_toml
    from test_holds import KEYS

    toml = str(write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*KEYS, "search.key_file")}))
    assert main(["--config", toml, "hold", "place", "--text", "4821", "--case", "Refund dispute",
                 "--reason", "litigation"]) == 0
    assert "(1 of them through the source chat only)" in capsys.readouterr().out
    (hold,) = open_holds(config).active()
    assert index(config).find_one()["held_by_source"] == [hold["_id"]]
    _purge(config, chat)
    age(config, 400)
    assert _deleted(retention(config)) == [] and index(config).find_one()["status"] == "archived"


def test_a_dry_run_records_nothing(make_config, tmp_path) -> None:
    """A dry run writes nothing, the record neither (the real run's plan and repair write it)."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    _place(config, "Refund dispute", text="4821")
    age(config, 400)
    result = retention(config, dry_run=True)
    assert any("held by case 'Refund dispute'" in i["reason"] for i in result.report["items"]), result.report
    assert "held_by_source" not in index(config).find_one()


def test_a_chat_held_only_because_it_cannot_be_read_is_not_recorded(make_config, monkeypatch) -> None:
    """A chat that cannot be decoded is kept by any hold while it cannot be read (failing closed), but that is no
    match: it is not recorded, so the hold does not keep the room for good once the chat is gone."""
    config = retention_config(make_config)
    (chat,) = archive(config, 1)
    undecodable(monkeypatch, chat["room"])
    _place(config, "HR 12", agent="USER_nobody@acd.example.com")
    age(config, 400)
    result = retention(config)
    assert _deleted(result) == [] and "held_by_source" not in index(config).find_one(), result.report["items"]
    monkeypatch.undo()
    _purge(config, chat)
    assert _deleted(retention(config)) == [(chat["room"], 1)]


def test_an_erasure_keeps_a_room_recorded_held_through_its_source_once_the_source_is_gone(make_config,
                                                                                           tmp_path) -> None:
    """The erasure asks the index, the record included: the room stays, its personal metadata too; the record
    names the hold alone (no case, no words)."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    hold = _place(config, "Refund dispute", text="4821")
    retention(config)
    _purge(config, chat)
    result = erase(config, customer_of(chat))
    assert [i["reason"] for i in result.report["items"]] == ["archive kept: held by case 'Refund dispute'"]
    entry = index(config).find_one()
    assert entry["status"] == "archived" and entry["customers"] and entry["held_by_source"] == [hold["_id"]]
    open_holds(config).release(hold["case"], "settled", LEGAL)
    erase(config, customer_of(chat))
    entry = index(config).find_one()
    assert entry["status"] == "deleted" and "customers" not in entry and not entry.get("held_by_source")


def test_a_room_held_by_the_index_under_one_case_is_recorded_held_through_its_source_under_another(
        make_config, tmp_path) -> None:
    """Case R holds the room by its room (the index), case O through its source alone (masked words): the repair
    reads its source for O all the same and records it, so that once the source is purged and R released, O
    still keeps the room."""
    config = _keyed(make_config, tmp_path)
    chat, contact = _chat_saying(PIN)
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    _place(config, "Case R", room=chat["room"])
    retention(config)
    assert index(config).find_one()["legal_hold"] is True
    hold = _place(config, "Case O", text="4821")
    retention(config)
    assert hold["_id"] in index(config).find_one()["held_by_source"]
    _purge(config, chat)
    open_holds(config).release("Case R", "settled", LEGAL)
    age(config, 400)
    result = retention(config)
    assert _deleted(result) == [] and index(config).find_one()["legal_hold"] is True, result.report["items"]


def test_the_source_check_reads_an_author_s_roles_as_the_index_does() -> None:
    """Review "lossless" F2: the source check put every author of a message without a boolean isAgent under both
    roles, the index only by their first message: the two disagreed. Both now use transcript.roles_by_sender."""
    from archiver.holds import _source_people
    from archiver.transcript import normalise

    def message(user):
        return {"data": {"messageType": "TEXT", "content": {"text": "hi", "user": user}}}
    chat = {"room": "R", "messages": [message(u) for u in (
        {"id": "late agent"}, {"id": "late agent", "isAgent": True}, {"id": "ghost", "isAgent": "true"},
        {"id": "late customer", "isAgent": 1}, {"id": "late customer", "isAgent": False},
        {"id": "twofaced", "isAgent": False}, {"id": "twofaced", "isAgent": True},
        "bare id", {"id": 42, "isAgent": True}, 7, ["in a list"], None)]}
    chat["messages"].append({"data": {"messageType": "TEXT", "content": "text as the content"}})
    people = _source_people(chat, {})
    t = normalise(chat)
    assert people == {"agent": set(t.agents), "customer": set(t.customers)}
    # (review "today2": a user given as the bare id, which the transcript reads as the sender, was unseen here)
    assert people == {"agent": {"late agent", "ghost", "twofaced", "bare id", "42"},
                      "customer": {"ghost", "late customer", "twofaced", "bare id"}}


def test_a_hold_by_words_reads_a_content_given_as_text_in_the_clear_too() -> None:
    """The transcript shows a `data.content` given as text as the message's text (review "lossless" F1): a hold by
    words matches its words in the source, redacted or not (review "today2")."""
    from archiver.holds import _raw_texts

    chat = {"messages": [{"data": {"content": "my pin is 4821"}}, {"data": {"content": {"text": "hi"}}},
                         {"data": {"content": 5}}, {"data": None}, "not a message"]}
    assert list(_raw_texts(chat)) == ["my pin is 4821", "hi"]

"""Who the contact names beside the messages' authors and its own people (userID, agentID): the agents a chat was
transferred to, or who joined it, without a word of theirs, kept in the index as `present` and found by `--agent`
(search, bundles, holds, the source check), review "court", finding C4."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from archiver.cli import main
from archiver.config import DEFAULT_TEMPLATE
from archiver.render import pdf as pdf_module
from archiver.render.pdf import PdfRenderer
from archiver.render.record import build_record
from archiver.transcript import normalise
from archiver.holds import _source_people
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.mongo import stored_time
from archiver.retention import Deletions
from archiver.search import SearchFilters, build_query, open_search
from conftest import write_toml
from retention_helpers import (age, agent_of, assert_erasure_drops, customer_of, erase, index, retention,
                               retention_config, source)
from retrieval_helpers import CLI_KEYS
from test_header_rows import _header_texts
from test_hold_scope import _contacts, _kept_by, _place
from test_holds import _toml
from test_pipeline import recent_ms, seed

BOB = "USER_bob@acd.example.com"  # transferred to: in the contact's users and its transfer event, wrote nothing
CAROL = "USER_carol@acd.example.com"  # the origin of an event alone
OTHER = "USER_someone_else@acd.example.com"


def _transferred(config, users=(BOB,), origins=(BOB,), rng_seed=3):
    """An archived chat between a customer and an agent (both wrote) that the contact says was also transferred
    (USERS added to its `users`, an event from each of ORIGINS)."""
    chat, contact = make_chat(random.Random(rng_seed), messages=6, start_ms=recent_ms(30))
    for user in users:
        contact["users"][user] = {"nickname": "Bob", "channel": "web"}
    contact["contact_events"] += [{"event": "contactTransferred", "ts": contact["endTime"] - 1000, "origin": origin}
                                  for origin in origins]
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    return chat, contact


def retention_run_aged(config):
    age(config, 400)
    return retention(config)


def _cli(config, tmp_path, *argv: str) -> int:
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in CLI_KEYS + ("source.database",)})
    return main(["--config", str(toml), *argv])


def _found(capsys) -> list[str]:
    return [e["room"] for e in json.loads(capsys.readouterr().out)]


def test_agent_in_contact_users_is_found_by_agent(make_config, tmp_path, capsys) -> None:
    """The court's reproduction: `search --agent` finds the chat transferred to an agent who wrote nothing."""
    config = make_config()
    chat, _ = _transferred(config)
    capsys.readouterr()
    assert _cli(config, tmp_path, "search", "--agent", BOB, "--json") == 0
    assert _found(capsys) == [chat["room"]]
    assert _cli(config, tmp_path, "search", "--agent", OTHER, "--json") == 0
    assert _found(capsys) == []
    # the contact does not say Bob is a customer: --customer reads the authors and userID alone (docs/search.md)
    assert _cli(config, tmp_path, "search", "--customer", BOB, "--json") == 0
    assert _found(capsys) == []


def test_present_is_who_the_contact_names_beside_the_authors_and_its_own_people(make_config, tmp_path,
                                                                                 capsys) -> None:
    """Its `users` and the agents' ids (USER_...) among its events' origins; not the messages' authors, userID,
    agentID, nor an origin such as "acd" (the platform's, no person)."""
    config = make_config()
    chat, contact = _transferred(config, users=(BOB,), origins=(CAROL, "acd", "12345"))
    entry = index(config).find_one()
    assert entry["present"] == [BOB, CAROL], entry["present"]
    assert entry["agents"] == [agent_of(chat)] and entry["customers"] == [customer_of(chat)]
    assert [e["room"] for e in open_search(config).find(SearchFilters(agent=CAROL))] == [chat["room"]]
    assert list(open_search(config).find(SearchFilters(agent="acd"))) == []
    assert _cli(config, tmp_path, "search", "--agent", CAROL, "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["present"] == [BOB, CAROL]  # --json says why it matched


def test_a_chat_the_contact_names_nobody_else_in_has_present_empty(make_config) -> None:
    config = make_config()
    _transferred(config, users=(), origins=())
    assert index(config).find_one()["present"] == []


@pytest.mark.parametrize("source_left", [True, False])
def test_a_hold_by_agent_keeps_a_chat_transferred_to_them(make_config, source_left) -> None:
    """By the source contact while it is there, by the index's `present` once it is gone."""
    config = retention_config(make_config, retention__delete_contacts=True)
    _transferred(config)
    if not source_left:
        source(config).delete_many({})
        _contacts(config).delete_many({})
    _place(config, "HR 12", agent=BOB)
    result = retention_run_aged(config)
    assert index(config).find_one()["status"] == "archived", result.report["items"]
    assert source(config).count_documents({}) == (1 if source_left else 0), result.report["items"]


def test_a_hold_on_another_agent_does_not_keep_a_transferred_chat(make_config) -> None:
    config = retention_config(make_config)
    _transferred(config)
    source(config).delete_many({})
    _place(config, "HR 12", agent=OTHER)
    retention_run_aged(config)
    assert index(config).find_one()["status"] == "deleted"


def test_the_source_check_finds_an_agent_the_contact_names_since_it_was_archived(make_config) -> None:
    """The index names nobody else (present []), the source contact now names Carol (transferred since): an erasure
    keeps the chat under a hold on Carol, by the source alone."""
    config = retention_config(make_config)
    chat, _ = _transferred(config, users=(), origins=())
    _contacts(config).update_many({}, {"$push": {"contact_events": {"event": "contactTransferred", "ts": recent_ms(1),
                                                                    "origin": CAROL}}})
    _place(config, "HR 12", agent=CAROL)
    result = erase(config, customer_of(chat))
    _kept_by(result, "HR 12")
    assert index(config).find_one()["present"] == []  # (the index did not hold it)


def test_the_source_check_reads_the_contacts_users_and_agents_origins_as_agents() -> None:
    chat, contact = make_chat(random.Random(4), messages=4)
    contact["users"][BOB] = {"nickname": "Bob"}
    contact["contact_events"].append({"event": "contactTransferred", "ts": 1, "origin": CAROL})
    people = _source_people(chat, contact)
    assert {BOB, CAROL} <= people["agent"] and "acd" not in people["agent"]
    assert not {BOB, CAROL} & people["customer"]


@pytest.mark.parametrize("contact_left", [True, False])
def test_an_entry_indexed_before_present_was(make_config, tmp_path, capsys, contact_left) -> None:
    """Without `present`: `search --agent` says how many such entries it may miss and what records it; a retention
    run takes it from the source contact while that is there; once it is gone every hold by agent covers the entry
    (cannot be ruled out)."""
    config = retention_config(make_config)
    chat, _ = _transferred(config)
    index(config).update_many({}, {"$unset": {"present": ""}})
    capsys.readouterr()
    assert _cli(config, tmp_path, "search", "--agent", BOB, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == []
    assert ("note: 1 archived entry was indexed before `present` (who the contact names beside the messages' "
            "authors) was") in err, err
    source(config).delete_many({})
    if not contact_left:
        _contacts(config).delete_many({})
    _place(config, "HR 12", agent=OTHER)  # another agent's hold
    result = retention_run_aged(config)
    entry = index(config).find_one()
    if contact_left:  # derived, so another agent's hold does not hold it
        assert entry.get("present") == [BOB] and entry["status"] == "deleted", result.report["items"]
    else:
        assert "present" not in entry and entry["status"] == "archived", result.report["items"]


def test_hold_place_by_agent_derives_present_before_it_protects(make_config, tmp_path, capsys) -> None:
    config = retention_config(make_config)
    chat, _ = _transferred(config)
    index(config).update_many({}, {"$unset": {"present": ""}})
    toml = _toml(config, tmp_path)
    assert main(["--config", toml, "hold", "place", "--agent", OTHER, "--case", "HR 12", "--reason", "r"]) == 0
    entry = index(config).find_one()
    assert entry["present"] == [BOB] and not entry.get("legal_hold"), entry
    capsys.readouterr()
    assert main(["--config", toml, "search", "--agent", BOB, "--json"]) == 0
    out, err = capsys.readouterr()
    assert [e["room"] for e in json.loads(out)] == [chat["room"]] and "before `present`" not in err


def test_verify_names_present_edited_in_the_index(make_config, keys) -> None:
    """`present` is what holds and search by agent select by: checked against the signed record's contact and
    participants (an entry without it, from before, is held by every hold by agent instead)."""
    from archiver.envelope import RecipientKey
    from archiver.integrity import verify_archive

    config = retention_config(make_config)
    _transferred(config)
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    assert verify_archive(config, None, key).ok
    index(config).update_one({}, {"$set": {"present": []}})
    (problem,) = verify_archive(config, None, key).problems
    assert f"present [] (record {[BOB]!r})" in problem.problem, problem
    index(config).update_one({}, {"$unset": {"present": ""}})
    assert verify_archive(config, None, key).ok


def test_an_erasure_removes_present_from_its_tombstones(make_config) -> None:
    config = retention_config(make_config)
    chat, _ = _transferred(config)
    assert_erasure_drops(config, chat, "present")


def test_a_bundle_by_agent_holds_the_chat_transferred_to_them(make_config, keys, tmp_path, capsys) -> None:
    """A bundle by --agent selects as search does; for entries from before `present`, it says what it may miss (on
    stdout and in the bundle beside what else it does not hold, or in the error when it selects nothing)."""
    import zipfile

    config = make_config()
    chat, _ = _transferred(config)
    argv = ("retrieve", "--key", str(keys["legal.key.pem"]), "--reason", "HR 12", "--no-progress", "--agent", BOB)
    assert _cli(config, tmp_path, *argv, "--bundle", str(tmp_path / "a.zip")) == 0
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        custody = json.loads(zf.read("chain-of-custody.json"))
    assert [r["room"] for r in custody["rooms"]] == [chat["room"]]
    assert "before `present`" not in capsys.readouterr().out
    index(config).update_many({}, {"$unset": {"present": ""}})
    assert _cli(config, tmp_path, *argv, "--bundle", str(tmp_path / "b.zip")) == 1  # (nothing selected: as before)
    assert "indexed before `present`" in capsys.readouterr().err and not (tmp_path / "b.zip").exists()
    later, _ = _transferred(config, rng_seed=5)  # one archived since: selected, and the note on stdout
    assert _cli(config, tmp_path, *argv, "--bundle", str(tmp_path / "c.zip")) == 0
    assert "  --agent: 1 archived entry was indexed before `present`" in capsys.readouterr().out  # (its README's)


def test_an_origin_redaction_masks_is_not_indexed(make_config) -> None:
    """Under the `email` rule an agent's login in an event's origin is masked in the archive: not in `present`
    (the index holds nothing the archive masks); a key of `users` is an identifier, kept."""
    config = make_config(redaction__rules=["card", "cvv", "pin", "email"])
    _transferred(config, users=(BOB,), origins=(CAROL,))
    assert index(config).find_one()["present"] == [BOB]


def test_search_by_agent_names_a_chat_not_archived_whose_contact_names_them(make_config, tmp_path, capsys) -> None:
    """A quarantined chat is not in the index: its source is read as holds read it, `users` included."""
    config = make_config()
    chat, contact = make_chat(random.Random(6), messages=4, start_ms=recent_ms(30))
    chat["messages"][0]["data"]["content"]["text"] = "x" * 1_000_001  # over archive.max_message_chars
    contact["users"][BOB] = {"nickname": "Bob"}
    seed(config, [(chat, contact)])
    assert list(Archiver(config).run_pass().quarantined) == [chat["room"]]
    capsys.readouterr()
    assert _cli(config, tmp_path, "search", "--agent", BOB, "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and f"{chat['room']}: quarantined (needs a person)" in err, err
    assert _cli(config, tmp_path, "search", "--agent", OTHER, "--json") == 0
    assert chat["room"] not in capsys.readouterr().err


def test_the_pdf_and_the_record_name_whom_else_the_contact_names() -> None:
    """An agent the chat was transferred to who wrote nothing is a row of the PDF's header and `present` in the record's
    view, not only an event's origin; more than PRESENT_SHOWN are counted, the record lists them all."""
    chat, contact = make_chat(random.Random(5), messages=3)
    contact["users"][BOB] = {"nickname": "Bob"}
    renderer = PdfRenderer(DEFAULT_TEMPLATE)
    rows = _header_texts(renderer, normalise(chat, contact))
    assert any(line.startswith("Others named by the contact") and f'"{BOB}"' in line for line in rows), rows
    view = json.loads(build_record(normalise(chat, contact), chat, contact, version=1,
                                   generated_at=dt.datetime.now(dt.timezone.utc))[0])["transcript"]
    assert view["present"] == [BOB]
    many = [f"USER_{i}@acd.example.com" for i in range(pdf_module.PRESENT_SHOWN + 3)]
    contact["users"].update({user: {} for user in many})
    text = "\n".join(_header_texts(renderer, normalise(chat, contact)))
    assert f'"{many[pdf_module.PRESENT_SHOWN - 2]}"' in text and f'"{many[-1]}"' not in text
    assert "and 4 more: the attached JSON record lists them all" in text
    alone, _ = make_chat(random.Random(6), messages=2)
    assert any(line.startswith("Others named by the contact") and line.endswith(renderer.template.labels["none"])
               for line in _header_texts(renderer, normalise(alone, {"id": alone["room"]})))


def _verify(config, keys):
    from archiver.envelope import RecipientKey
    from archiver.integrity import verify_archive

    return verify_archive(config, None, RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"]))


def _held_by_agent(config, agent: str) -> list[str]:
    """The rooms a hold by AGENT selects in the index (an entry without a contact field cannot be ruled out)."""
    return [e["room"] for e in index(config).find(build_query(SearchFilters(agent=agent), None, unknown_contact=True))]


def test_present_is_not_derived_under_other_redaction_rules(make_config, keys) -> None:
    """Review today3 #4: derived under today's rules (the `email` rule added since) `present` would differ from
    the signed record's (redacted under the rules of then) and fail `verify` on an honest archive. It is derived
    only where the entry's redaction version is today's; else left missing (every hold by agent covers the entry),
    while `opened_by`/`handled_by` (identifiers no rule masks) are still derived."""
    config = retention_config(make_config)  # archived under the card/cvv/pin rules of then
    _transferred(config, users=(), origins=(CAROL,))
    assert index(config).find_one()["present"] == [CAROL]
    index(config).update_many({}, {"$unset": {"present": "", "handled_by": ""}})  # as entries from before
    today = config.with_overrides(redaction__rules=["card", "cvv", "pin", "email"])  # a rule added since
    Deletions(today).derive_contact_people()
    entry = index(today).find_one()
    assert "present" not in entry and entry["handled_by"], entry
    report = _verify(today, keys)
    assert report.ok, [str(p) for p in report.problems]
    # a hold by carol covers it (cannot be ruled out), as one by another agent does
    assert _held_by_agent(today, CAROL) == _held_by_agent(today, OTHER) == [entry["room"]]
    Deletions(config).derive_contact_people()  # under the rules it was archived by: derived, and verified
    assert index(config).find_one()["present"] == [CAROL]
    assert _verify(config, keys).ok


def test_verify_says_a_derived_field_was_derived_and_a_mark_silences_nothing(make_config, keys) -> None:
    """A contact changed after archiving makes a derived `present` differ from the record: still a problem, but
    named as derived from the source contact on its date, not as an edit. The mark changes the wording only."""
    config = retention_config(make_config)
    _transferred(config)
    index(config).update_many({}, {"$unset": {"present": ""}})
    dan = "USER_dan"  # (no dot: a key MongoDB would read as a path)
    _contacts(config).update_many({}, {"$set": {f"users.{dan}": {"nickname": "Dan", "channel": "web"}}})
    assert Deletions(config).derive_contact_people() == 1
    entry = index(config).find_one()
    assert entry["present"] == [BOB, dan] and set(entry["derived_from_contact"]) == {"present"}, entry
    (problem,) = _verify(config, keys).problems
    day = stored_time(entry["derived_from_contact"]["present"]).strftime("%Y-%m-%d")  # (nx-27017: text)
    assert f"present {[BOB, dan]!r} (record {[BOB]!r}: derived from the source contact on {day}" in \
        problem.problem, problem
    index(config).update_many({}, {"$set": {"present": [BOB]}})  # as the record: no problem, mark or not
    assert _verify(config, keys).ok
    index(config).update_many({}, {"$set": {"present": []}, "$unset": {"derived_from_contact": ""}})
    (problem,) = _verify(config, keys).problems  # an edit, unmarked
    assert "derived" not in problem.problem and f"present [] (record {[BOB]!r})" in problem.problem, problem


def test_derivation_pages_through_rooms_and_skips_those_whose_contact_is_gone(make_config, monkeypatch) -> None:
    """Review today3 #8: rooms are read page by page (no `distinct` over the archive: 16 MB), and an entry whose
    source contact is gone is marked, so later runs do not read it again; holds by agent still cover it."""
    from archiver import retention as retention_module

    monkeypatch.setattr(retention_module, "ROOM_BATCH", 2)
    config = retention_config(make_config)
    rooms = [_transferred(config, rng_seed=seed_)[0]["room"] for seed_ in (3, 5, 7)]
    index(config).update_many({}, {"$unset": {"present": "", "opened_by": ""}})
    _contacts(config).delete_many({"id": rooms[0]})
    deletions = Deletions(config)
    read: list[str] = []
    find = deletions.source.contacts.find

    def spy(query, *args, **kwargs):
        read.extend(query["id"]["$in"])
        return find(query, *args, **kwargs)

    monkeypatch.setattr(deletions.source.contacts, "find", spy, raising=False)
    assert deletions.derive_contact_people() == 4  # present and opened_by of the two rooms whose contact is there
    assert sorted(read) == sorted(rooms)
    gone = index(config).find_one({"room": rooms[0]})
    assert "present" not in gone and gone.get("contact_gone_at"), gone
    assert all(index(config).find_one({"room": room})["present"] == [BOB] for room in rooms[1:])
    read.clear()
    assert deletions.derive_contact_people() == 0 and read == []  # nothing left to read
    assert _held_by_agent(config, OTHER) == [rooms[0]]


def test_the_table_lists_the_agents_the_contact_names_who_wrote_nothing(make_config, tmp_path, capsys) -> None:
    """A chat found by `--agent BOB` (transferred to, wrote nothing) lists BOB in the table's AGENTS column, marked
    `+` and explained under the table: before, the row found for BOB did not show him."""
    config = make_config()
    chat, contact = _transferred(config)
    capsys.readouterr()
    assert _cli(config, tmp_path, "search", "--agent", BOB) == 0
    table = capsys.readouterr().out.splitlines()
    agents = next(line for line in table if line.startswith(chat["room"])).split()[-1].split(",")
    assert f"{BOB}+" in agents and contact["agentID"] in agents, agents  # the agent who wrote: not marked
    assert not any(a.endswith("+") for a in agents if a != f"{BOB}+"), agents
    assert table[-1] == ("+ named by the contact, who wrote nothing: its agentID, or an agent it names in `users` or "
                         "as an event's origin (transferred to, joined)"), table

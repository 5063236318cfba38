"""Seal leaves cover the contact's people (opened_by, handled_by, present) of entries archived with them.

Legal search finds a chat by the agent who handled it or was transferred to it (`--agent`) and by the
customer who opened it (`--customer`): an index writer who edits those fields on a sealed day hides a
chat from such a search. An entry archived since leaf format /2 is marked so (`archive_leaf_format`)
and its archive leaf holds them; an older entry keeps its /1 leaf, so the seals made of it still
recompute.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from archiver import seals
from retrieval_helpers import index
from test_seals import DAY, _problems, seal_cli, seal_four, seal_records


@pytest.fixture
def sealed(make_config, tsa, tmp_path):
    return seal_four(make_config, tsa, tmp_path)


def test_a_new_entry_is_marked_and_its_leaf_holds_the_contacts_people(sealed) -> None:
    for entry in index(sealed).find({}):
        assert entry["archive_leaf_format"] == "archiver-seal-leaf/2"
        body = json.loads(seals.leaf(entry))
        assert body["format"] == "archiver-seal-leaf/2"
        assert (body["opened_by"], body["handled_by"], body["present"]) == (
            entry["opened_by"], entry["handled_by"], entry["present"])
    assert _problems(sealed) == []


@pytest.mark.parametrize("edit", [
    {"$set": {"handled_by": "someone-else"}},
    {"$set": {"opened_by": "someone-else"}},
    {"$set": {"present": ["someone-else"]}},
    {"$push": {"present": "someone-else"}},
    {"$unset": {"handled_by": ""}},
    {"$unset": {"archive_leaf_format": ""}},  # back to a /1 leaf, which leaves the people out: named too
])
def test_an_edit_of_the_contacts_people_on_a_sealed_day_is_named(sealed, tmp_path, capsys, edit) -> None:
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": victim["_id"]}, edit)
    assert any(p.startswith(f"{victim['room']} v1: its archived index entry was changed after")
               for p in _problems(sealed))
    assert seal_cli(sealed, tmp_path, "verify", "--all") == 3
    assert victim["room"] in capsys.readouterr().out


def test_an_entry_archived_before_format_2_keeps_its_leaf_and_its_seal(make_config, tsa, tmp_path) -> None:
    """Entries without the mark (archived before it) are sealed, and re-verified, with /1 leaves: the people
    fields they may carry (derived later) are not in them, and adding the mark to one is an edit."""
    config = seal_four(make_config, tsa, tmp_path)
    entries = index(config)
    for entry in entries.find({}):  # as an older archiver left them: no mark, sealed under /1 leaves
        entries.update_one({"_id": entry["_id"]}, {"$unset": {"archive_leaf_format": ""}})
    next_day = (DAY + dt.timedelta(days=1)).isoformat()
    entries.update_many({}, {"$set": {"archived_at": dt.datetime.fromisoformat(f"{next_day}T10:00:00+00:00")}})
    assert seal_cli(config, tmp_path, "seal", "--from", next_day, "--to", next_day) == 0
    entry = entries.find_one({}, sort=[("room", 1)])
    body = json.loads(seals.leaf(entry))
    assert body["format"] == "archiver-seal-leaf/1"
    assert not {"opened_by", "handled_by", "present"} & set(body)
    assert [r["day"] for r in seal_records(config) if r["day"] == next_day]
    assert not [p for p in _problems(config) if next_day in p or "changed after" in p]
    # a /1 entry's people are not covered (docs/seals.md says so): verify --key compares them with the record
    entries.update_one({"_id": entry["_id"]}, {"$set": {"handled_by": "someone-else"}})
    assert not [p for p in _problems(config) if "changed after" in p]
    entries.update_one({"_id": entry["_id"]}, {"$set": {"archive_leaf_format": "archiver-seal-leaf/2"}})
    assert any(p.startswith(f"{entry['room']} v1: its archived index entry was changed after")
               for p in _problems(config))


def test_a_tombstone_of_a_format_2_entry_keeps_its_archive_leaf() -> None:
    archived = {"room": "R", "version": 1, "status": "archived", "archive_leaf_format": "archiver-seal-leaf/2",
                "objects": {}, "archived_at": dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc),
                "opened_by": "USER_1", "handled_by": "agent-7", "present": ["agent-9"]}
    original = seals.leaf_hash(archived)
    erased = {k: v for k, v in archived.items() if k not in ("opened_by", "handled_by", "present")}
    assert seals.leaf_hash(erased) != original  # the people are in the leaf...
    tombstone = {**erased, "status": "deleted", "archived_leaf_sha256": original.hex(),
                 **seals.tombstone_fields(archived, "erasure", dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc))}
    assert seals.leaf_hash(tombstone, "archived") == original  # ...and an erased tombstone keeps its hash


def _retyped(value, who):
    from bson.code import Code

    if isinstance(value, list):
        return [Code(v) if v == who else v for v in value]
    return Code(value) if value == who else value


def test_a_marked_entrys_agent_stored_as_another_type_of_the_same_text_is_named(make_config, tsa, tmp_path) -> None:
    """Review today5 MEDIUM-1: `handled_by` (and the same id in `agents`, `present`) set from "agent-7" to
    Code("agent-7") hides the chat from `search --agent` and from holds by that agent (MongoDB's $eq tells the two
    apart), while a leaf that wrote any value as its text stayed the same. A /2 leaf writes each value's type."""
    from archiver.integrity import verify_archive
    from archiver.search import Search, SearchFilters

    config = seal_four(make_config, tsa, tmp_path)
    entries = index(config)
    victim = entries.find_one({"handled_by": {"$type": "string"}}, sort=[("room", 1)])
    who = victim["handled_by"]
    before = seals.leaf_hash(victim)
    entries.update_one({"_id": victim["_id"]}, {"$set": {
        field: _retyped(victim.get(field), who) for field in ("handled_by", "agents", "present")}})
    assert victim["room"] not in {e["room"] for e in Search(entries, None).find(SearchFilters(agent=who))}
    assert seals.leaf_hash(entries.find_one({"_id": victim["_id"]})) != before
    assert any(str(p).startswith(f"{victim['room']} v1: its archived index entry was changed after")
               for p in verify_archive(config, None).problems)


def test_a_format_2_leaf_tells_each_type_apart() -> None:
    from bson import Int64, ObjectId
    from bson.code import Code

    at = dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    base = {"room": "R", "version": 1, "archive_leaf_format": seals.LEAF_FORMAT_2, "objects": {}, "archived_at": at}
    values = ["agent-7", Code("agent-7"), at, seals._time(at), {"$type": "Code", "value": "Code('agent-7')"},
              {"$date": seals._time(at)}, 7, Int64(7), 7.0, True, None, ["agent-7"], [Code("agent-7")],
              "5f0c2b9e8c1d4a3b2a1f0e9d", ObjectId("5f0c2b9e8c1d4a3b2a1f0e9d"), {"a": 1}, {"$a": 1}]
    leaves = {seals.leaf({**base, "handled_by": value}) for value in values}
    assert len(leaves) == len(values)  # no two stored values give one leaf
    body = json.loads(seals.leaf({**base, "handled_by": Code("agent-7")}))
    assert body["handled_by"] == {"$type": "Code", "value": "Code('agent-7', None)"}
    assert body["archived_at"] == {"$date": "2026-01-01T10:00:00.000Z"}
    # a /1 leaf is written as before (its seals made so far must recompute): a date as its text
    assert json.loads(seals.leaf({**base, "archive_leaf_format": None}))["archived_at"] == "2026-01-01T10:00:00.000Z"


def test_a_day_sealed_by_a_sealer_before_format_2_stays_in_format_1(make_config, tsa, tmp_path, monkeypatch) -> None:
    """Review today5 MEDIUM-2: workers upgraded before a sealer. The old sealer signs /1 leaves for marked entries
    (its document says /1); the day keeps that format: today's verify, a seal that extends the day, retrieval's
    proof and a tombstone written since all read it in /1, with no false alarm of tampering."""
    from retention_helpers import erase, retention_config
    from retrieval_helpers import archive_samples
    from test_seals import backdate, built_on

    config = retention_config(make_config, signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=3)
    backdate(config)
    with monkeypatch.context() as old:  # a sealer of before format 2: /1 leaves, a document that says so
        old.setattr(seals, "LEAF_FORMAT", seals.LEAF_FORMAT_1)
        assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    (record,) = seal_records(config)
    assert record["leaf_format"] == seals.LEAF_FORMAT_1
    assert _problems(config) == []  # nothing edited: nothing named
    entries = index(config)
    victim = entries.find_one({}, sort=[("room", 1)])
    assert seals.leaf_format(victim, "archived", seals.day_format(record)) == seals.LEAF_FORMAT_1
    proof = seals.inclusion_proof(config, victim)
    assert proof["in_seal"] and proof["matches_index"] and proof["leaf_format"] == seals.LEAF_FORMAT_1
    # a late entry: the day's next seal (today's sealer) keeps the day's format
    before = {e["room"] for e in entries.find({})}
    with built_on():
        archive_samples(config, count=1, rng_seed=9)
    (late,) = {e["room"] for e in entries.find({})} - before
    backdate(config, [late])
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    assert [r["leaf_format"] for r in seal_records(config)] == [seals.LEAF_FORMAT_1] * 2
    assert _problems(config) == []
    # an erasure now (today's retention): the tombstone keeps the archive leaf in the day's format
    result = erase(config, victim["customers"][0])
    assert ("delete_archive", victim["room"], 1) in {(i["action"], i["room"], i["version"])
                                                    for i in result.report["items"]}, result.report["items"]
    tombstone = entries.find_one({"_id": victim["_id"]})
    assert tombstone["status"] == "deleted" and "handled_by" not in tombstone
    assert tombstone["archived_leaf_sha256"] == seals.leaf_hash(victim, newest=seals.LEAF_FORMAT_1).hex()
    problems = [p for p in _problems(config) if "changed after" in p or "no longer hashes" in p]
    assert problems == [], problems


def test_a_seal_left_pending_by_a_sealer_before_format_2_is_completed_in_its_format(make_config, tsa, tmp_path,
                                                                                     monkeypatch) -> None:
    """A sealer from before format 2 signed and stored a day's first seal, in /1, and was killed before completing
    it (an upgrade restarting it, say); today's sealer takes it over and seals the day in that seal's format, as
    the day would have been, instead of refusing the take-over as if sealed entries had changed."""
    from retention_helpers import retention_config
    from retrieval_helpers import archive_samples
    from test_seal_race import ACTOR, _expire_pending, _puts_then
    from test_seals import backdate, built_on

    config = retention_config(make_config, signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=2)  # by upgraded workers: marked /2
    backdate(config)
    day = DAY.isoformat()
    with monkeypatch.context() as old:
        old.setattr(seals, "LEAF_FORMAT", seals.LEAF_FORMAT_1)
        with _puts_then(config, monkeypatch, SystemExit("killed")), pytest.raises(SystemExit):
            seals.seal_days(config, [day], ACTOR)  # killed after storing the document and its signature
    _expire_pending(config)
    (outcome,) = seals.seal_days(config, [day], ACTOR)
    assert outcome.action == "sealed" and not outcome.problems, str(outcome)
    assert "kept as abandoned (seal 1: 2 entries" in str(outcome), str(outcome)
    (record,) = [r for r in seal_records(config) if r["day"] == day]
    assert record["leaf_format"] == seals.LEAF_FORMAT_1 and "pending" not in record
    assert [p for p in _problems(config) if day in p] == []


def test_an_erasure_while_a_seal_before_format_2_is_left_pending_leaves_the_day_sealable(make_config, tsa, tmp_path,
                                                                                         monkeypatch) -> None:
    """A sealer from before format 2 signed the day's first seal in /1 and stopped; an erasure before the take-over
    writes the tombstone's archived_leaf_sha256 in /2 (the day has no complete seal to say /1). Its /1 hash, kept
    beside it, lets the take-over complete the day in /1 (it refused the day at every run, naming the chat as
    changed); verify then finds nothing, and the archive leaf's proof reads /1."""
    from retention_helpers import erase, retention_config
    from retrieval_helpers import archive_samples
    from test_seal_race import ACTOR, _expire_pending, _puts_then
    from test_seals import backdate, built_on

    config = retention_config(make_config, signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    day = DAY.isoformat()
    with monkeypatch.context() as old:
        old.setattr(seals, "LEAF_FORMAT", seals.LEAF_FORMAT_1)
        with _puts_then(config, monkeypatch, SystemExit("killed")), pytest.raises(SystemExit):
            seals.seal_days(config, [day], ACTOR)
    victim = index(config).find_one({}, sort=[("room", 1)])
    erase(config, victim["customers"][0])
    tombstone = index(config).find_one({"_id": victim["_id"]})
    assert tombstone["status"] == "deleted" and "handled_by" not in tombstone
    assert tombstone["archived_leaf_sha256"] == seals.leaf_hash(victim).hex()  # /2: no complete seal says otherwise
    assert tombstone[seals.ARCHIVED_LEAF_1] == seals.leaf_hash(victim, newest=seals.LEAF_FORMAT_1).hex()
    _expire_pending(config)
    (outcome,) = seals.seal_days(config, [day], ACTOR)
    assert outcome.action == "sealed" and not outcome.problems, str(outcome)
    (record, *_) = [r for r in seal_records(config) if r["day"] == day]
    assert record["leaf_format"] == seals.LEAF_FORMAT_1
    assert [p for p in _problems(config) if day in p] == []
    proof = seals.inclusion_proof(config, tombstone)
    assert proof["in_seal"] and proof["matches_index"] and proof["leaf_format"] == seals.LEAF_FORMAT_1


def test_a_tombstone_written_before_its_days_first_seal_reads_its_hash_in_that_seals_format() -> None:
    """The /1 hash is read only in a /1 day; a /2 day (the usual case) reads archived_leaf_sha256 as before, and a
    tombstone whose /1 and /2 leaves are the same (an entry archived before the mark) gets no second hash."""
    archived = {"room": "R", "version": 1, "status": "archived", "archive_leaf_format": "archiver-seal-leaf/2",
                "objects": {}, "archived_at": dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc),
                "opened_by": "USER_1", "handled_by": "agent-7", "present": ["agent-9"]}
    at = dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)
    fields = seals.tombstone_fields(archived, "erasure", at)
    erased = {k: v for k, v in archived.items() if k not in ("opened_by", "handled_by", "present")}
    tombstone = {**erased, "status": "deleted", **fields}
    assert seals.leaf_hash(tombstone, "archived") == seals.leaf_hash(archived)
    assert seals.leaf_hash(tombstone, "archived", seals.LEAF_FORMAT_2) == seals.leaf_hash(archived)
    in_1 = seals.leaf_hash(archived, newest=seals.LEAF_FORMAT_1)
    assert in_1 != seals.leaf_hash(archived) and seals.leaf_hash(tombstone, "archived", seals.LEAF_FORMAT_1) == in_1
    # the day's format known at erasure: one hash, in it
    assert seals.ARCHIVED_LEAF_1 not in seals.tombstone_fields(archived, "erasure", at, seals.LEAF_FORMAT_1)
    assert seals.ARCHIVED_LEAF_1 not in seals.tombstone_fields(archived, "erasure", at, seals.LEAF_FORMAT_2)
    unmarked = {k: v for k, v in archived.items() if k != "archive_leaf_format"}
    assert seals.ARCHIVED_LEAF_1 not in seals.tombstone_fields(unmarked, "erasure", at)
    # the second hash is outside the tombstone's own leaf: tombstones sealed before it existed still recompute
    assert seals.leaf(tombstone, "deleted") == seals.leaf({k: v for k, v in tombstone.items()
                                                           if k != seals.ARCHIVED_LEAF_1}, "deleted")

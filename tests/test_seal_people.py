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

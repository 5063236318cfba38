"""An index entry relabelled, hand-edited, or on a day the seal job no longer reaches (seal review HIGH-4,
MEDIUM-2 entry half, MEDIUM-3): each is named by `verify`, never hidden, never a crash.

Threat: an insider with write access to the index and the store, no private keys; and honest mistakes.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from archiver import seals
from archiver.integrity import verify_archive
from archiver.mongo import connect
from retrieval_helpers import archive_samples, index, remove_stored
from test_seals import DAY, backdate, built_on, seal_cli, seal_four, seal_records


@pytest.fixture
def sealed(make_config, tsa, tmp_path):
    """Four chats archived on DAY and DAY sealed with a timestamp."""
    return seal_four(make_config, tsa, tmp_path)


@pytest.mark.parametrize("edit", [
    {"status": "superseded"},
    {"status": "uploading", "created_at": dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)},
])
def test_a_sealed_archived_version_relabelled_and_its_objects_removed_is_named(sealed, tmp_path, capsys,
                                                                              edit) -> None:
    """An archived version only ever becomes a tombstone (`deleted`); relabelled `superseded` or `uploading`
    (a created_at in year 9999: 'within its lease' forever), it left search and retrieve, and its objects were
    no longer checked. It reads as removed from its sealed day, and verify names its state."""
    victim = index(sealed).find_one({}, sort=[("room", 1)])
    index(sealed).update_one({"_id": victim["_id"]}, {"$set": edit})
    for obj in victim["objects"].values():
        remove_stored(sealed, obj["key"])
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", "--all")
    out = capsys.readouterr().out
    assert code == 3 and victim["room"] in out, out
    assert f"its archived entry was removed from the index after {DAY} was sealed" in out, out
    assert f"status is {edit['status']!r}, but it has an archived_at" in out, out
    assert "missing from the store" in out, out  # its objects are checked as the archive it was
    # named for the room alone too, and sealing the day again refuses
    assert seal_cli(sealed, tmp_path, "verify", victim["room"]) == 3
    assert f"status is {edit['status']!r}" in capsys.readouterr().out
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 3
    assert f"{DAY}: refused: {victim['room']} v1: its archived entry was removed" in capsys.readouterr().out


def test_on_s3_under_object_lock_a_sealed_version_relabelled_superseded_is_named(
        make_config, moto_endpoint, bucket, tsa) -> None:
    """Nothing deleted (COMPLIANCE lock): the index alone relabels a sealed version `superseded`."""
    config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=moto_endpoint,
                         signing__timestamp_url=tsa.url)
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    (outcome,) = seals.seal_days(config, [DAY.isoformat()], seals.Actor("test", "host"))
    assert outcome.action == "sealed" and verify_archive(config, None).ok
    victim = index(config).find_one({}, sort=[("room", 1)])
    index(config).update_one({"_id": victim["_id"]}, {"$set": {"status": "superseded"}})
    problems = [str(p) for p in verify_archive(config, None).problems]
    assert any(p.startswith(f"{victim['room']} v1: its archived entry was removed") for p in problems), problems
    assert any(p.startswith(f"{victim['room']} v1: failed: the entry is archived") for p in problems), problems


def test_an_unsealed_archive_relabelled_an_attempt_is_named_by_its_objects(make_config, tmp_path, capsys) -> None:
    """An attempt's entry records no objects (they are set, with status archived and archived_at, as an upload
    completes): an archive relabelled `superseded` with its archived_at removed, on a day no seal covers yet,
    is still named, and its objects checked."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"status": "superseded"}, "$unset": {"archived_at": ""}})
    remove_stored(config, entry["objects"]["pdf"]["key"])
    capsys.readouterr()
    assert seal_cli(config, tmp_path, "verify", "--all") == 3
    out = capsys.readouterr().out
    assert (f"{entry['room']} v1: failed: the entry is archived (status is 'superseded', but it has stored objects, "
            "as only a completed archive has") in out, out
    assert f"{entry['room']} v1: failed: pdf: " in out, out


def test_an_uploading_entry_begun_in_the_future_is_named_not_in_progress(make_config, tmp_path, capsys) -> None:
    """An unsealed attempt whose created_at is ahead of the clock (beyond a few minutes' skew) is no attempt
    'within its lease': verify names it, whatever it holds."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"status": "uploading", "created_at": later,
                                                              "objects": {}, "superseded_objects": []},
                                                     "$unset": {"archived_at": ""}})  # an attempt's stub
    for obj in entry["objects"].values():
        remove_stored(config, obj["key"])
    capsys.readouterr()
    assert seal_cli(config, tmp_path, "verify", "--all") == 3
    out = capsys.readouterr().out
    assert f"{entry['room']} v1: created_at {later.isoformat(timespec='seconds')}" in out, out
    assert "still being archived" not in out, out
    # a minute ahead (clocks differ by that much) is still an attempt in progress
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "created_at": dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)}})
    assert seal_cli(config, tmp_path, "verify", "--all") == 0
    assert "1 entr(ies) still being archived" in capsys.readouterr().out


def test_a_tombstone_dated_in_the_future_is_named(make_config) -> None:
    """A deleted_at ahead of the clock would date a seal not made yet: named (a minute's skew is not)."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    for obj in entry["objects"].values():
        remove_stored(config, obj["key"])
    now = dt.datetime.now(dt.timezone.utc)

    def named(deleted_at: dt.datetime) -> list[str]:
        index(config).update_one({"_id": entry["_id"]}, {"$set": {
            "status": "deleted", "deleted_at": deleted_at,
            "deletion": {"run": "made-up", "rule": "default", "state": "done", "at": deleted_at}}})
        return [str(p) for p in verify_archive(config, None).problems if "deleted_at" in str(p)]

    assert named(now + dt.timedelta(days=2)) == [
        f"{entry['room']} v1: failed: the tombstone's deleted_at is not in the future "
        f"(deleted_at {(now + dt.timedelta(days=2)).isoformat(timespec='seconds')})"]
    assert named(now + dt.timedelta(minutes=1)) == []


def test_an_entry_on_a_day_the_seal_job_no_longer_covers_is_named(make_config, tmp_path, capsys) -> None:
    """A day older than schedule.seal_lookback_days that was never sealed (serve down for over a week, a writer
    whose clock was behind) is never sealed by the job: verify --all and status name it with the command that
    seals it, once the archive has any seal; sealed, it is named no more."""
    from archiver.jobs import Service

    config = make_config(schedule__seal_lookback_days=7)
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)).date()
    with built_on(old):
        (entry,) = archive_samples(config, count=1)
    backdate(config, day=old)
    assert seal_cli(config, tmp_path, "verify", "--all") == 0  # no seal at all yet: sealing not in use
    service = Service(config, threading.Event())
    service.seal()
    assert service.seal_error == "" and service.healthy()
    assert old.isoformat() not in [r["day"] for r in seal_records(config)]
    capsys.readouterr()
    assert seal_cli(config, tmp_path, "verify", "--all") == 3
    line = (f"{old}: 1 entry not sealed ({entry['room']} v1), and the seal job covers only the last 7 days "
            f"(schedule.seal_lookback_days): run archiver seal --from {old} --to {old}")
    out = capsys.readouterr().out
    assert line in out, out
    assert seal_cli(config, tmp_path, "status") == 0
    assert f"warning: {line}" in capsys.readouterr().out
    assert [str(p.subject) + ": " + p.problem for p in seals.check_unsealed(config, limit=0)] == [
        "days not sealed: stopped counting after 0 entries not sealed: `archiver verify --all` names every such day"]
    assert seal_cli(config, tmp_path, "seal", "--from", old.isoformat(), "--to", old.isoformat()) == 0
    assert seal_cli(config, tmp_path, "verify", "--all") == 0
    # its deletion on an unsealed old day is an event too; a relabelled archive is none (named otherwise)
    index(config).update_one({"_id": entry["_id"]}, {"$set": {
        "deleted_at": dt.datetime.combine(old + dt.timedelta(days=1), dt.time(9), dt.timezone.utc),
        "status": "deleted"}})
    assert [p.subject for p in seals.check_unsealed(config)] == [(old + dt.timedelta(days=1)).isoformat()]
    index(config).update_one({"_id": entry["_id"]}, {"$set": {"status": "superseded"}, "$unset": {"deleted_at": ""}})
    assert seals.check_unsealed(config) == []


@pytest.mark.parametrize("edit, named", [
    ({"$unset": {"room": ""}}, "malformed index entry: room None"),
    ({"$set": {"objects": "x"}}, "malformed index entry: objects 'x' is not a document"),
    ({"$set": {"objects.pdf": "x"}}, "malformed index entry: objects.pdf 'x' is not a document"),
    ({"$set": {"objects.pdf.size": "12"}}, "malformed index entry: objects.pdf.size '12' is not a whole number"),
    ({"$set": {"superseded_objects": [1, "a"]}}, "malformed index entry: superseded_objects [1, 'a'] is not a list "
                                                 "of keys"),
    ({"$set": {"agents": {"$oops": 1}}}, "its archived index entry was changed"),
])
def test_an_index_entry_edited_by_hand_on_a_sealed_day_is_named_not_a_crash(sealed, tmp_path, capsys, edit,
                                                                            named) -> None:
    """One hand-edited entry of a sealed day is that entry's problem (exit 3), never a traceback that stops
    verify --all for the whole archive or the seal job for its days; the other entries are still checked."""
    victim, other = index(sealed).find({}, sort=[("room", 1)]).limit(2)
    index(sealed).update_one({"_id": victim["_id"]}, edit)
    remove_stored(sealed, other["objects"]["pdf"]["key"])  # a problem found beside it
    capsys.readouterr()
    code = seal_cli(sealed, tmp_path, "verify", "--all")
    out, err = capsys.readouterr()
    assert code == 3 and named in out, (code, out, err[-2000:])
    assert f"{other['room']} v1: failed: pdf" in out, out
    assert "Traceback" not in err, err[-2000:]
    assert seal_cli(sealed, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 3
    out = capsys.readouterr().out
    assert f"{DAY}: refused: {victim['room']} v1: its archived " in out, out  # changed (or, its room gone, removed)


def test_a_leaf_is_made_of_any_stored_value() -> None:
    """leaf() never raises on what an index may hold; a list of keys keeps the order it always had."""
    odd = {"room": None, "objects": {"pdf": "x", "record": {"key": 1}}, "superseded_objects": [1, "a", {"b": 2}, None]}
    for entry in (odd, {**odd, "objects": "x", "superseded_objects": "ab"}, {}):
        assert seals.leaf(entry) and seals.leaf({**entry, "archived_leaf_sha256": "zz"}, "deleted")
        assert seals.leaf_hash({**entry, "status": "deleted", "archived_leaf_sha256": "not hex"})
    keys = ['a"b/1', "a#b/1", "B/1", "a/2"]
    assert seals.leaf({"superseded_objects": keys}) == seals.leaf({"superseded_objects": sorted(keys)})
    import json
    assert json.loads(seals.leaf({"superseded_objects": keys}))["superseded_objects"] == sorted(keys)
    assert json.loads(seals.leaf(odd))["superseded_objects"] == [1, "a", None, {"b": 2}]  # as docs/seals.md says


@pytest.fixture(params=["mongo_uri", "nx_uri"])
def any_uri(request) -> str:
    """The in-process stand-in (or a real MongoDB), and the wire-protocol server."""
    return request.getfixturevalue(request.param)


def test_old_unsealed_days_are_found_whatever_the_type_of_their_times(make_config, any_uri) -> None:
    """Dates and ISO text alike (nx-27017 returns a date written with $set as text), archive and deletion
    events; a day with only a pending seal is not sealed; a relabelled entry holds no archive event (verify
    names it otherwise); a day sealed, or within the seal job's window, is not named."""
    config = make_config(mongodb__uri=any_uri, schedule__seal_lookback_days=7)
    today = dt.datetime.now(dt.timezone.utc).date()
    x1, x2, x3, x4 = (today - dt.timedelta(days=n) for n in (20, 19, 18, 17))

    def at(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(10), dt.timezone.utc)

    index(config).insert_many([{"room": room, "version": 1, "objects": {}, "superseded_objects": [], **fields}
                               for room, fields in [
        ("A", {"status": "archived", "archived_at": at(x1)}),
        ("B", {"status": "archived", "archived_at": f"{x2}T10:00:00Z"}),
        ("C", {"status": "superseded", "archived_at": at(x1)}),
        ("D", {"status": "deleted", "archived_at": at(x3), "deleted_at": f"{x4} 09:00:00"}),
        ("E", {"status": "archived", "archived_at": at(today - dt.timedelta(days=2))}),
        ("F", {"status": "archived", "archived_at": at(x3)})]])
    records = connect(config["mongodb.uri"])[config["index.database"]][config["index.seals"]]
    assert seals.check_unsealed(config) == []  # no seal at all: sealing not in use
    records.insert_many([{"day": x3.isoformat(), "seq": 1, "count": 2},
                         {"day": x1.isoformat(), "seq": 1, "pending": {"owner": "x", "at": 0}}])
    found = [(p.subject, p.problem.split(", and")[0]) for p in seals.check_unsealed(config)]
    assert found == [(x1.isoformat(), "1 entry not sealed (A v1)"), (x2.isoformat(), "1 entry not sealed (B v1)"),
                     (x4.isoformat(), "1 entry not sealed (D v1)")], found


def test_an_archived_at_ahead_of_the_clock_is_named_as_an_iso_time(make_config) -> None:
    """Review "seal" LOW-4: an archived_at in year 9999 was named with a Python repr (datetime.datetime(9999, ...,
    tzinfo=FixedOffset(...))); one that reads as no time is quoted as stored."""
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    future = dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone.utc)

    def named(archived_at) -> list[str]:
        index(config).update_one({"_id": entry["_id"]}, {"$set": {"archived_at": archived_at}})
        return [str(p) for p in verify_archive(config, [entry["room"]]).problems if "archived_at" in str(p)]

    assert f"{entry['room']} v1: failed: the entry's archived_at is not in the future (archived_at " \
           f"9999-12-31T23:59:00+00:00)" in named(future)
    assert f"{entry['room']} v1: failed: the entry's archived_at reads as a time (archived_at 'soon')" in named("soon")


def test_a_sealed_day_whose_record_carries_a_forged_pending_is_not_named_unsealed(make_config, tmp_path) -> None:
    """Review of the change: check_unsealed (status) read a record without `pending` as a seal, the seal book a
    completed one whatever it carries: a `pending` added by hand to a complete seal made status name its day
    unsealed (verify names the mark itself)."""
    config = make_config()
    old = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=20)
    with built_on(old):
        archive_samples(config, count=1)
    backdate(config, day=old)
    assert seal_cli(config, tmp_path, "seal", "--from", old.isoformat(), "--to", old.isoformat()) == 0
    assert seals.check_unsealed(config) == []
    db = connect(config["mongodb.uri"])[config["index.database"]]
    db[config["index.seals"]].update_one({"day": old.isoformat()}, {"$set": {"pending": {"owner": "x", "at": 0,
                                                                                          "folder": "f"}}})
    assert seals.check_unsealed(config) == []

"""Evidence gaps: the archive keeps matching the source as chats change, collide or arrive late."""

from __future__ import annotations

import copy
import functools
import random
import time

from archiver import artifacts
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from test_pipeline import build_failing_record_puts, entries, index_db, job, recent_ms, seed


def source_db(config):
    return connect(config["mongodb.uri"])[config["source.database"]]


def message(room: str, kind: str, ts: float, text: str = "") -> dict:
    content = {"user": {"id": "USER_late", "isAgent": True}, **({"text": text} if text else {})}
    return {"data": {"id": f"late-{ts}", "messageType": kind, "ts": ts, "content": content}, "room": room}


def versions(config, room: str) -> list[tuple[int, str]]:
    return [(e["version"], e["status"]) for e in entries(config, room=room)]


def count_builds(monkeypatch) -> list[str]:
    built: list[str] = []
    real = artifacts.archive_here

    def counting(chat, *args):
        built.append(chat["room"])
        return real(chat, *args)
    monkeypatch.setattr(artifacts, "archive_here", counting)
    return built


def test_a_reopened_chat_is_archived_again_at_the_next_pass(make_config) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(31), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    chats = source_db(config)[config["source.chats"]]
    chats.update_one({"room": chat["room"]}, {"$push": {"messages": {"$each": [
        message(chat["room"], "TEXT", recent_ms(2), "one more thing"), message(chat["room"], "endChat", recent_ms(1))]}}})
    report = archiver.run_pass()
    assert (report.discovered, report.archived) == (1, 1)
    assert versions(config, chat["room"]) == [(1, "archived"), (2, "archived")]
    assert entries(config, room=chat["room"])[1]["message_count"] == 6


def test_a_late_message_without_a_new_end_is_archived_at_the_next_pass(make_config) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(32), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    archiver.run_pass()
    source_db(config)[config["source.chats"]].update_one(
        {"room": chat["room"]}, {"$push": {"messages": message(chat["room"], "TEXT", recent_ms(1), "sorry, one more")}})
    assert archiver.run_pass().archived == 1
    assert versions(config, chat["room"]) == [(1, "archived"), (2, "archived")]


def test_edits_and_contact_changes_are_archived_by_the_rescan(make_config) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(33), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    archiver.run_pass()
    db = source_db(config)
    db[config["source.chats"]].update_one({"room": chat["room"]},
                                          {"$set": {"messages.0.data.content.text": "edited"}})
    assert archiver.run_pass().archived == 0, "an edit carries no new time: the next pass cannot see it"
    report = archiver.run_pass(full=True)
    assert (report.discovered, report.archived) == (1, 1)
    db[config["source.contacts"]].update_one({"id": chat["room"]}, {"$set": {"title": "Complaint"}})
    assert archiver.run_pass(full=True).archived == 1
    assert versions(config, chat["room"]) == [(1, "archived"), (2, "archived"), (3, "archived")]
    assert entries(config, room=chat["room"])[2]["title"] == "Complaint"


def test_unchanged_chats_are_neither_requeued_nor_rebuilt(make_config, monkeypatch) -> None:
    config = make_config(archive__batch_size=50)
    rng = random.Random(34)
    chats = [make_chat(rng, messages=6, start_ms=recent_ms(20)) for _ in range(200)]
    seed(config, chats)
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 200
    built = count_builds(monkeypatch)
    again = archiver.run_pass()  # every chat ended inside the discovery overlap
    started = time.perf_counter()
    full = archiver.run_pass(full=True)
    rescan = time.perf_counter() - started
    assert (again.discovered, again.handled, full.discovered, full.handled, built) == (0, 0, 0, 0, [])
    assert {job(config, c["room"])["attempts"] for c, _ in chats} == {1}, "no chat was claimed again"
    print(f"rescan of 200 unchanged chats: {rescan:.2f} s")


def test_export_by_an_id_whose_chat_has_another_room_stores_nothing_and_passes_go_on(make_config) -> None:
    from archiver.offline import export_room
    from archiver.store import open_store

    config = make_config()
    chat, contact = make_chat(random.Random(35), messages=4, start_ms=recent_ms(30), room="CHAT_B")
    chat["_id"] = "CHAT_A"  # the chat document's _id names another room
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    outcome = export_room(config, "CHAT_A", None, force=False)
    assert not outcome.ok and "'CHAT_A': not found" in outcome.problems[0]
    assert len(open_store(config).keys()) == 3 and [e["room"] for e in entries(config)] == ["CHAT_B"]
    later = Archiver(config).run_pass(full=True)
    assert later.ok and later.handled == 0


def test_a_chat_whose_room_is_not_the_jobs_is_quarantined(make_config, monkeypatch) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(36), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    real = archiver.source.load_many

    def misfiled(rooms):  # as if the source answered for the wrong room
        loaded = real(rooms)
        return {room: ({**chat_, "room": "SOMEONE_ELSE"}, contact_) for room, (chat_, contact_) in loaded.items()}
    monkeypatch.setattr(archiver.source, "load_many", misfiled)
    report = archiver.run_pass()
    assert "room 'SOMEONE_ELSE'" in report.quarantined[chat["room"]] and entries(config) == []


REAL_ARCHIVE = artifacts.archive_in_worker


def build_as_other_room(chat, *args, **kwargs):
    """In the worker process: a build whose transcript is another room's (a renderer bug, say, which
    leaves the source as it is: so neither the source the pass handed over nor its digest is used here)."""
    return REAL_ARCHIVE({**chat, "room": "OTHER"}, *args, **{**kwargs, "source_sha256": "", "source_json": None})


def build_from_another_source(chat, contact, *args, **kwargs):
    """In the worker process: a build of other source documents than the pass hashed for the index (handed
    over with their own serialisation, which the worker stores as the record's source)."""
    from archiver.render.record import source_json

    other = {**chat, "room": "OTHER"}
    return REAL_ARCHIVE(other, contact, *args, **{**kwargs, "source_json": source_json(other, contact)})


def test_a_build_whose_source_differs_from_what_the_pass_hashed_is_not_archived(make_config, monkeypatch) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(38), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    monkeypatch.setattr(artifacts, "archive_in_worker", build_from_another_source)
    report = Archiver(config).run_pass()
    assert report.archived == 0 and "the archive pass computed" in report.failed[chat["room"]]
    assert [e["status"] for e in entries(config)] != ["archived"]


def test_a_build_for_another_room_is_quarantined_and_its_objects_set_aside(make_config, monkeypatch) -> None:
    from archiver.store import open_store

    config = make_config()
    chat, contact = make_chat(random.Random(37), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    monkeypatch.setattr(artifacts, "archive_in_worker", build_as_other_room)
    report = Archiver(config).run_pass()
    assert "built a transcript of room 'OTHER'" in report.quarantined[chat["room"]]
    (entry,) = entries(config)
    assert entry["room"] == chat["room"] and entry["status"] != "archived"
    assert sorted(entry["superseded_objects"]) == sorted(open_store(config).keys())


def test_a_duplicate_key_while_completing_one_entry_fails_only_that_entry(mongo_uri, db_names) -> None:
    from archiver.index import ArchiveIndex

    index = ArchiveIndex(connect(mongo_uri)[db_names["index.database"]]["entries"])
    index.ensure_indexes()
    (clash, fine), _ = index.begin([("room-1", 2, "new"), ("room-2", 1, "abc")])
    index.entries.insert_one({"room": "room-1", "version": 1, "source_sha256": "old", "status": "archived"})

    def built(room: str, version: int, digest: str) -> dict:
        return {"room": room, "version": version, "source_sha256": digest,
                "objects": {"pdf": {"key": f"{room}/v{version}/transcript-1.pdf.p7m"}}}
    lost, refused = index.complete([(clash, built("room-1", 2, "old"), 1, ""), (fine, built("room-2", 1, "abc"), 1, "")], "w")
    assert lost == [] and list(refused) == ["room-1"] and "duplicate key" in refused["room-1"]
    assert index.entries.find_one({"_id": fine["_id"]})["status"] == "archived"
    stuck = index.entries.find_one({"_id": clash["_id"]})
    assert stuck["superseded_objects"] == ["room-1/v2/transcript-1.pdf.p7m"] and stuck["status"] == "uploading"


def test_export_after_a_revert_reports_and_writes_the_version_with_that_content(make_config, tmp_path) -> None:
    import json

    from archiver.offline import export_room

    config = make_config()
    chat, contact = make_chat(random.Random(38), messages=4, start_ms=recent_ms(30))
    original = chat["ctlive_type"]
    seed(config, [(chat, contact)])
    Archiver(config).run_pass()
    chats = source_db(config)[config["source.chats"]]
    chats.update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "changed"}})
    assert export_room(config, chat["room"], None, force=False).ok
    chats.update_one({"room": chat["room"]}, {"$set": {"ctlive_type": original}})  # back to version 1's content
    outcome = export_room(config, chat["room"], tmp_path / "out", force=False)
    v1, v2 = entries(config, room=chat["room"])
    assert outcome.ok and any("unchanged as version 1 " in line for line in outcome.lines), outcome.lines
    record = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert (record["version"], record["source_sha256"]) == (1, v1["source_sha256"]) != (2, v2["source_sha256"])
    assert any(v1["objects"]["pdf"]["key"] in line for line in outcome.lines)


def test_a_second_chat_document_with_the_same_room_is_reported_not_dropped(make_config) -> None:
    config = make_config()
    rng = random.Random(39)
    chat, contact = make_chat(rng, messages=4, start_ms=recent_ms(30))
    twin = copy.deepcopy(chat)
    twin["_id"] = "TWIN_OF_" + chat["room"]
    twin["messages"][0]["data"]["content"] = {"text": "another conversation", "user": {"id": "x", "isAgent": False}}
    other = make_chat(rng, messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact), (twin, None), other])
    report = Archiver(config).run_pass()
    reason = report.quarantined[chat["room"]]
    assert repr(chat["_id"]) in reason and repr(twin["_id"]) in reason and "2 chat documents" in reason
    assert report.archived == 1 and [e["room"] for e in entries(config)] == [other[0]["room"]]
    assert job(config, chat["room"])["state"] == "quarantined"


def test_an_upload_left_half_way_is_closed_when_the_source_changes(make_config, monkeypatch) -> None:
    from archiver.store import StoreError, open_store

    config = make_config()
    chat, contact = make_chat(random.Random(40), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    monkeypatch.setattr(artifacts, "archive_in_worker",
                        functools.partial(build_failing_record_puts, StoreError("connection reset")))
    assert chat["room"] in archiver.run_pass().failed
    monkeypatch.undo()
    source_db(config)[config["source.chats"]].update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "call"}})
    index_db(config)[config["index.jobs"]].update_one({"_id": chat["room"]}, {"$set": {"available_at": 0}})
    assert archiver.run_pass().archived == 1
    assert versions(config, chat["room"]) == [(1, "superseded"), (2, "archived")]
    explained = {key for e in entries(config) for key in e["superseded_objects"]}
    explained |= {o["key"] for e in entries(config, status="archived") for o in e["objects"].values()}
    assert set(open_store(config).keys()) == explained and len(explained) == 5

    # the first content comes back: its version is completed after all, not left or duplicated
    source_db(config)[config["source.chats"]].update_one({"room": chat["room"]},
                                                        {"$set": {"ctlive_type": chat["ctlive_type"]}})
    assert archiver.run_pass(full=True).archived == 1
    assert versions(config, chat["room"]) == [(1, "archived"), (2, "archived")]


def test_messages_waiting_for_their_chat_document_are_retried_then_quarantined(make_config) -> None:
    config = make_config(source__messages="messages", archive__retry_backoff_seconds=0, archive__max_attempts=3)
    rng = random.Random(41)
    (late, _), (never, _) = make_chat(rng, messages=4, start_ms=recent_ms(30)), make_chat(rng, messages=3, start_ms=recent_ms(30))
    db = source_db(config)
    db.messages.insert_many(copy.deepcopy(late["messages"] + never["messages"]))
    archiver = Archiver(config)
    first = archiver.run_pass()
    assert set(first.failed) == {late["room"], never["room"]} and not first.quarantined
    assert "no chat document with this room yet" in first.failed[late["room"]]
    db.chats.insert_one({k: v for k, v in late.items() if k != "messages"})
    second = archiver.run_pass()
    assert second.archived == 1 and versions(config, late["room"]) == [(1, "archived")]
    third = archiver.run_pass()
    assert "gave up after 3 attempts: no chat document with this room yet" in third.quarantined[never["room"]]


YEAR_10000_MS = 253402300800000 + 86_400_000  # 10000-01-02, past datetime.max
YEAR_0_MS = -62167219200000 + 86_400_000  # 0000-01-02, before datetime.min


def test_the_source_decodes_dates_out_of_pythons_range() -> None:
    # nx-27017 cannot hold such a date (its own decoder raises InvalidBSON on the insert), so the
    # bytes a MongoDB server would send are decoded with the source's codec options directly.
    import pymongo
    from bson import decode, encode
    from bson.datetime_ms import DatetimeMS

    from archiver.source import ChatSource

    source = ChatSource(pymongo.MongoClient(connect=False).db, "chats", "contacts", "messages")
    raw = encode({"ts": DatetimeMS(YEAR_10000_MS), "begin": DatetimeMS(YEAR_0_MS), "ok": DatetimeMS(0)})
    for collection in (source.chats, source.contacts, source.messages):
        decoded = decode(raw, collection.codec_options)
        assert decoded["ts"] == DatetimeMS(YEAR_10000_MS) and decoded["begin"] == DatetimeMS(YEAR_0_MS)
        assert decoded["ok"].year == 1970


def test_dates_out_of_pythons_range_are_archived_as_given(make_config, keys) -> None:
    import json

    from bson.datetime_ms import DatetimeMS

    from test_pipeline import open_object

    config = make_config()
    odd, contact = make_chat(random.Random(42), messages=4, start_ms=recent_ms(30))
    odd["messages"][1]["data"]["messageSeen"] = DatetimeMS(YEAR_10000_MS)  # as the driver now returns them
    contact["beginTime"] = DatetimeMS(YEAR_0_MS)
    seed(config, [(odd, contact)])
    report = Archiver(config).run_pass()
    assert report.ok and report.archived == 1
    (entry,) = entries(config)
    assert entry["started_at"] is not None, "an unreadable beginTime falls back to the first message"
    record = json.loads(open_object(config, keys, entry["objects"]["record"]))
    assert record["source"]["chat"]["messages"][1]["data"]["messageSeen"] == {"$date": {"$numberLong": str(YEAR_10000_MS)}}
    assert record["source"]["contact"]["beginTime"] == {"$date": {"$numberLong": str(YEAR_0_MS)}}


def test_a_room_the_driver_cannot_decode_is_quarantined_and_the_batch_goes_on(make_config) -> None:
    from bson.errors import InvalidBSON

    config = make_config()
    rng = random.Random(43)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(30)) for _ in range(4)]
    seed(config, chats)
    archiver = Archiver(config)
    bad = chats[2][0]["room"]
    real = archiver.source.chats

    class Undecodable:  # as the driver fails a whole batch holding one undecodable document
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def with_options(self, **kwargs):  # (the chats are read as the server's bytes: archiver/lossless.py)
            return Undecodable(self.real.with_options(**kwargs))

        def find(self, query, *args, **kwargs):
            if bad in str(query.get("room", "")) and "$in" in query.get("room", {}):
                raise InvalidBSON("year 10000 is out of range")
            return self.real.find(query, *args, **kwargs)
    archiver.source.chats = Undecodable(real)
    report = archiver.run_pass()
    assert report.archived == 3 and set(report.quarantined) == {bad}
    assert report.quarantined[bad] == f"room {bad!r}: MongoDB cannot decode it: year 10000 is out of range"
    assert job(config, bad)["state"] == "quarantined"


def test_the_cli_reports_a_bson_error_without_a_traceback(make_config, tmp_path, monkeypatch, capsys) -> None:
    from bson.errors import InvalidBSON

    from archiver.cli import main
    from test_cli import _toml

    toml = _toml(tmp_path, make_config)

    def undecodable(*args, **kwargs):
        raise InvalidBSON("year 0 is out of range")
    monkeypatch.setattr(Archiver, "run_pass", undecodable)
    assert main(["--config", str(toml), "run"]) == 1
    err = capsys.readouterr().err
    assert "MongoDB: year 0 is out of range" in err and "Traceback" not in err


def test_fractional_message_times_do_not_look_newer_than_themselves(make_config) -> None:
    config = make_config()
    rng = random.Random(44)
    chats = [make_chat(rng, messages=5, start_ms=recent_ms(30)) for _ in range(20)]
    for chat, _ in chats:
        for m in chat["messages"]:
            m["data"]["ts"] += rng.choice([0.1, 0.123, 0.7])  # floats a datetime cannot hold exactly
    seed(config, chats)
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 20
    again = archiver.run_pass()
    assert (again.discovered, again.handled) == (0, 0)

"""The archive pass end to end on the in-process stand-in (or a real MongoDB) and a local store."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bson import ObjectId

from archiver import artifacts
from archiver.config import Config
from archiver.envelope import decrypt
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.source import SourceProblem
from archiver.store import StoreError, open_store

REAL_ARCHIVE = artifacts.archive_in_worker  # what the hooks below call, in whichever process they run


def seed(config: Config, chats: list[tuple[dict, dict | None]]) -> None:
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for chat, contact in chats:
        db[config["source.chats"]].insert_one(copy.deepcopy(chat))
        if contact:
            db[config["source.contacts"]].insert_one(copy.deepcopy(contact))


def index_db(config: Config):
    return connect(config["mongodb.uri"])[config["index.database"]]


def entries(config: Config, **query: Any) -> list[dict]:
    return list(index_db(config)[config["index.entries"]].find(query).sort([("room", 1), ("version", 1)]))


def archived_rooms(config: Config) -> list[str]:
    return sorted(e["room"] for e in entries(config, status="archived"))


def job(config: Config, room: str) -> dict:
    return index_db(config)[config["index.jobs"]].find_one({"_id": room})


def recent_ms(minutes_ago: float = 5) -> float:
    return (time.time() - minutes_ago * 60) * 1000


def open_object(config: Config, keys: dict[str, Path], obj: dict) -> bytes:
    sealed = open_store(config).get(obj["key"], obj["version_id"])
    assert hashlib.sha256(sealed).hexdigest() == obj["sha256"]
    plain = decrypt(sealed, keys["legal.crt.pem"].read_bytes(), keys["legal.key.pem"].read_bytes())
    assert hashlib.sha256(plain).hexdigest() == obj["plaintext_sha256"]
    return plain


def test_pass_archives_each_ended_chat_once(make_config, keys) -> None:
    config = make_config()
    rng = random.Random(1)
    ended = [make_chat(rng, messages=8, start_ms=recent_ms()) for _ in range(5)]
    running = make_chat(rng, messages=4, ended=False, start_ms=recent_ms())
    seed(config, ended + [running])

    report = Archiver(config).run_pass()
    assert report.archived == 5 and archived_rooms(config) == sorted(c["room"] for c, _ in ended)
    assert report.ok and report.discovered == 5
    archived = entries(config)
    assert [e["status"] for e in archived] == ["archived"] * 5
    assert len(open_store(config).keys()) == 15

    again = Archiver(config).run_pass()
    assert again.archived == 0 and again.discovered == 0
    full = Archiver(config).run_pass(full=True)
    assert full.archived == 0 and len(entries(config)) == 5


def test_index_entry_has_what_retrieval_needs(make_config, keys) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(2), messages=12, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    Archiver(config).run_pass()
    (entry,) = entries(config)
    assert entry["room"] == chat["room"] and entry["version"] == 1 and entry["kind"] == "ended"
    assert entry["message_count"] == 12 and entry["ctlive_type"] == chat["ctlive_type"]
    assert entry["channel"] == contact["users"][contact["userID"]]["channel"]
    assert entry["agents"] == [contact["agentID"]] and entry["customers"] == [contact["userID"]]
    assert entry["started_at"] < entry["ended_at"]
    assert entry["attempts"] == 1 and entry["last_error"] == ""
    assert len(entry["recipients"]) == 1 and len(entry["signing_certificate_sha256"]) == 64
    assert set(entry["objects"]) == {"pdf", "record", "record_signature"}
    pdf = open_object(config, keys, entry["objects"]["pdf"])
    record = json.loads(open_object(config, keys, entry["objects"]["record"]))
    assert pdf.startswith(b"%PDF-")
    assert record["room"] == chat["room"] and record["source_sha256"] == entry["source_sha256"]
    assert record["source"]["chat"]["messages"][0]["_id"] == {"$oid": str(chat["messages"][0]["_id"])}


def test_changed_chat_becomes_a_new_version_and_keeps_the_old(make_config, keys) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(3), messages=6, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    archiver.run_pass()
    first = entries(config)[0]
    chats = connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]
    chats.update_one({"room": chat["room"]}, {"$set": {"ctlive_type": "call"}})

    report, plain = archiver.archive_room(chat["room"], "ended")
    assert report.archived == 1 and plain is not None
    v1, v2 = entries(config, room=chat["room"])
    assert (v1["version"], v2["version"]) == (1, 2) and v2["ctlive_type"] == "call"
    assert v1["objects"] == first["objects"]
    assert not set(o["key"] for o in v1["objects"].values()) & set(o["key"] for o in v2["objects"].values())
    same, _ = archiver.archive_room(chat["room"], "ended")
    assert same.unchanged == 1 and len(entries(config)) == 2


def test_interim_export_then_end_gives_an_ended_version(make_config) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(4), messages=5, ended=False, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 0
    report, _ = archiver.archive_room(chat["room"], "interim")
    assert report.archived == 1 and entries(config)[0]["kind"] == "interim"

    end = {"data": {"id": "end-1", "messageType": "endChat", "ts": recent_ms(1),
                    "content": {"user": {"id": "USER_x", "isAgent": True}}}, "room": chat["room"]}
    chats = connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]
    chats.update_one({"room": chat["room"]}, {"$push": {"messages": end}})
    assert archiver.run_pass().archived == 1
    assert [(e["version"], e["kind"]) for e in entries(config)] == [(1, "interim"), (2, "ended")]


def test_abandoned_chats_are_archived_after_the_idle_time(make_config) -> None:
    config = make_config(source__abandoned_after_hours=1.0)
    rng = random.Random(5)
    idle = make_chat(rng, messages=4, ended=False, start_ms=recent_ms(180))
    active = make_chat(rng, messages=4, ended=False, start_ms=recent_ms(10))
    seed(config, [idle, active])
    report = Archiver(config).run_pass()
    assert report.archived == 1 and archived_rooms(config) == [idle[0]["room"]]
    assert entries(config)[0]["kind"] == "abandoned"


def test_abandoned_chats_are_found_when_this_machine_s_clock_is_behind(make_config, monkeypatch) -> None:
    """The idle bound is the database server's clock less the idle time: taken from a local clock 3 days
    behind, a chat idle for 3 hours was not abandoned for 3 more days."""
    from archiver import claims

    config = make_config(source__abandoned_after_hours=1.0)
    idle = make_chat(random.Random(5), messages=4, ended=False, start_ms=recent_ms(180))
    seed(config, [idle])
    behind = claims.now_ms() - 3 * 86_400_000
    monkeypatch.setattr("archiver.pipeline.now_ms", lambda: behind)
    assert Archiver(config).run_pass().archived == 1


def test_discovery_reads_only_recent_ends_unless_full(make_config) -> None:
    config = make_config()
    rng = random.Random(6)
    seed(config, [make_chat(rng, messages=3, start_ms=recent_ms())])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    late = make_chat(rng, messages=3, start_ms=recent_ms(3 * 24 * 60))  # ended days ago, written only now
    seed(config, [late])
    assert archiver.run_pass().discovered == 0
    assert archiver.run_pass(full=True).archived == 1 and late[0]["room"] in archived_rooms(config)


@pytest.mark.parametrize("full", [False, True], ids=["first-discovery", "rescan"])
def test_a_stop_between_discovery_batches_ends_discovery_without_advancing_the_watermark(
        full, make_config, monkeypatch) -> None:
    """A full rediscovery (a new deployment's first, the nightly rescan) reads every ended chat, hours over
    millions, and never looked at the stop event: a SIGTERM'd serve went on until it ended (and was killed).
    It stops between batches; the watermark stays where it was, so the next discovery reads them all again."""
    import archiver.pipeline as pipeline

    config = make_config()
    rng = random.Random(21)
    seed(config, [make_chat(rng, messages=3, start_ms=recent_ms(10 + n)) for n in range(5)])
    monkeypatch.setattr(pipeline, "ENQUEUE_BATCH", 2)
    archiver = Archiver(config)
    enqueue_batch = archiver._enqueue_batch

    def stop_after_the_first(*args: Any, **kwargs: Any) -> int:
        archiver.stop.set()  # SIGTERM while the first batch is queued
        return enqueue_batch(*args, **kwargs)
    monkeypatch.setattr(archiver, "_enqueue_batch", stop_after_the_first)
    with pytest.raises(pipeline.DiscoveryStopped):
        archiver.run_pass(full=full)
    jobs = index_db(config)[config["index.jobs"]]
    assert jobs.count_documents({}) == 2, "the batch in hand was queued, no later one"
    assert index_db(config)[config["index.state"]].find_one({"_id": pipeline.DISCOVERY_STATE}) is None
    last = index_db(config)[config["index.state"]].find_one({"_id": "last_rescan" if full else "last_pass"})
    assert last["outcome"] == "error" and last["error"].startswith("DiscoveryStopped: "), last
    monkeypatch.undo()
    assert Archiver(config).run_pass().archived == 5, "the next discovery read them all"


def test_serve_stops_within_seconds_of_a_sigterm_during_a_full_discovery(make_config, monkeypatch, caplog) -> None:
    import threading

    import archiver.jobs as jobs
    import archiver.pipeline as pipeline
    from archiver.source import ChatSource

    caplog.set_level(logging.INFO, logger="archiver")
    read: list[int] = []

    def a_large_platform(self: Any, since_ms: Any) -> Any:  # each batch of rooms takes a while to read
        for i in range(1000):
            time.sleep(0.01)
            read.append(i)
            yield f"ROOM-{i:05}"
    monkeypatch.setattr(ChatSource, "ended_since", a_large_platform)
    monkeypatch.setattr(pipeline, "ENQUEUE_BATCH", 50)  # half a second per batch here
    stop, exited = threading.Event(), []
    serving = threading.Thread(target=lambda: exited.append(jobs.serve(make_config(metrics__port=0), stop)),
                               daemon=True)
    serving.start()
    deadline = time.monotonic() + 30
    while len(read) < 100 and time.monotonic() < deadline:  # the first pass's discovery is under way
        time.sleep(0.05)
    stop.set()  # SIGTERM
    stopped_at = time.monotonic()
    serving.join(20)
    assert exited == [0] and time.monotonic() - stopped_at < 3, f"{len(read)} of 1000 rooms read"
    events = [r.msg for r in caplog.records]
    assert "discovery_stopped" in events and "pass_failed" not in events, "a stop, not a failure"


def test_bad_chats_are_quarantined_and_the_rest_go_on(make_config) -> None:
    config = make_config()
    rng = random.Random(7)
    good = [make_chat(rng, messages=5, start_ms=recent_ms()) for _ in range(3)]
    end = {"data": {"messageType": "endChat", "ts": recent_ms(2), "content": {"user": {"id": "USER_a"}}}}
    huge = copy.deepcopy(good[0][0])
    huge.update(_id="HUGE", room="HUGE")
    huge["messages"][0]["data"]["content"] = {"text": "x" * (10 * 1024 * 1024)}
    bad = [
        {"_id": "TYPES", "room": "TYPES", "messages": [{"data": {"content": {"text": {"$gt": ""}}}}, end]},
        {"_id": "NO_ROOM", "messages": [end]},
        {"_id": "BADDATA", "room": "BADDATA", "messages": ["nonsense", end]},
        {"_id": "ARRAY", "room": [good[1][0]["room"]], "messages": [end]},  # `$in` matches it for that room
        huge,
    ]
    seed(config, good + [(b, None) for b in bad])
    report = Archiver(config).run_pass()
    assert report.archived == len(good) and archived_rooms(config) == sorted(c["room"] for c, _ in good)
    assert set(report.quarantined) == {"TYPES", "NO_ROOM", "BADDATA", "ARRAY", "HUGE"}
    assert "data.content.text: is dict" in report.quarantined["TYPES"]
    assert "field 'room' is missing" in report.quarantined["NO_ROOM"]
    assert "message 1: the message is str, not an object" in report.quarantined["BADDATA"]
    assert "10,485,760 characters" in report.quarantined["HUGE"]
    assert job(config, "HUGE")["state"] == "quarantined"
    assert {e["room"] for e in entries(config)} == {c["room"] for c, _ in good}, "no entries for quarantined chats"
    assert Archiver(config).run_pass(full=True).handled == 0, "quarantined chats wait for a person"


def test_invalid_utf8_in_the_source_is_quarantined_with_its_place(make_config, monkeypatch) -> None:
    # pymongo decodes the platform's invalid UTF-8 as lone surrogates (see ChatSource); a
    # stand-in cannot store such bytes, so the decoded form is handed to the pass directly.
    config = make_config()
    chat, contact = make_chat(random.Random(8), messages=3, start_ms=recent_ms())
    good, _ = make_chat(random.Random(9), messages=3, start_ms=recent_ms())
    seed(config, [(chat, contact), (good, None)])
    archiver = Archiver(config)
    real_load = archiver.source.load_many

    def load_many(rooms: list[str]):
        loaded = real_load(rooms)
        if chat["room"] in loaded:
            loaded[chat["room"]][0]["messages"][1]["data"]["content"]["text"] = "ciao \udcff"
        return loaded
    monkeypatch.setattr(archiver.source, "load_many", load_many)
    report = archiver.run_pass()
    assert report.archived == 1
    assert report.quarantined[chat["room"]] == (
        "chat.messages.1.data.content.text: invalid UTF-8 (unpaired surrogate); cannot be archived as text")


def test_a_field_name_that_is_not_utf8_quarantines_its_chat_alone(make_config, nx_uri, monkeypatch) -> None:
    """A field NAME with invalid UTF-8 (a lone surrogate once decoded) went raw into the quarantine reason,
    which the driver could not encode: every pass raised, the job stayed claimed, nothing else archived.
    On nx-27017, which (unlike the stand-in) BSON-encodes what is written, as a real MongoDB does."""
    config = make_config(index__uri=nx_uri)
    chat, contact = make_chat(random.Random(8), messages=3, start_ms=recent_ms())
    good = [make_chat(random.Random(9 + i), messages=3, start_ms=recent_ms()) for i in range(3)]
    seed(config, [(chat, contact), *good])
    archiver = Archiver(config)
    real_load = archiver.source.load_many

    def load_many(rooms: list[str]):
        loaded = real_load(rooms)
        if chat["room"] in loaded:
            loaded[chat["room"]][0]["messages"][1]["data"]["form\udcff"] = "x"  # b"form\xff", surrogateescape
        return loaded
    monkeypatch.setattr(archiver.source, "load_many", load_many)
    report = archiver.run_pass()
    index = connect(nx_uri)[config["index.database"]]
    archived = sorted(e["room"] for e in index[config["index.entries"]].find({"status": "archived"}))
    assert report.archived == 3 and archived == sorted(c["room"] for c, _ in good)
    reason = "chat.messages.1.data.form\\xff: invalid UTF-8 (unpaired surrogate); cannot be archived as text"
    assert report.quarantined == {chat["room"]: reason}
    bad_job = index[config["index.jobs"]].find_one({"_id": chat["room"]})
    assert bad_job["state"] == "quarantined" and bad_job["reason"] == reason


def test_source_reads_invalid_utf8_without_failing() -> None:
    import pymongo
    from bson import decode, encode

    from archiver.source import ChatSource

    source = ChatSource(pymongo.MongoClient(connect=False).db, "chats", "contacts")
    raw = encode({"text": "ciao X"}).replace(b"ciao X", b"ciao \xff")
    assert decode(raw, source.chats.codec_options) == {"text": "ciao \udcff"}


def test_messages_in_their_own_collection(make_config, keys) -> None:
    config = make_config(source__messages="messages")
    chat, contact = make_chat(random.Random(9), messages=7, start_ms=recent_ms())
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db.messages.insert_many(copy.deepcopy(chat["messages"]))
    db.chats.insert_one({k: v for k, v in chat.items() if k != "messages"})
    report = Archiver(config).run_pass()
    assert report.archived == 1
    record = json.loads(open_object(config, keys, entries(config)[0]["objects"]["record"]))
    assert record["transcript"]["message_count"] == 7


def _chats_with_own_messages_field(config, own: Any) -> tuple[dict, dict]:
    """Two chats of a messages collection: the first's document has a `messages` field OWN, the other none."""
    rng = random.Random(19)
    (chat, _), (other, _) = make_chat(rng, messages=4, start_ms=recent_ms()), make_chat(rng, messages=4, start_ms=recent_ms())
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for doc, fields in ((chat, {"messages": own}), (other, {})):
        db.messages.insert_many(copy.deepcopy(doc["messages"]))
        db.chats.insert_one({**{k: v for k, v in doc.items() if k != "messages"}, **fields})
    return chat, other


@pytest.mark.parametrize("own", [4, [{"note": "the platform's own"}], {"count": 4, "note": "the platform's own"}],
                         ids=["a count", "a non-empty list", "a document"])
def test_a_chat_document_with_its_own_messages_field_is_not_overwritten_by_the_messages_collection(
        make_config, own) -> None:
    """The record's source is what the platform held: a `messages` field of the chat document's own that holds
    something (a count, a note) is never replaced by the messages collection's; such a chat is quarantined,
    naming the field, and readable (an erasure deletes it)."""
    config = make_config(source__messages="messages")
    chat, other = _chats_with_own_messages_field(config, own)
    archiver = Archiver(config)
    report = archiver.run_pass()
    assert report.archived == 1 and list(report.quarantined) == [chat["room"]]
    reason = report.quarantined[chat["room"]]
    assert "field 'messages' of its own" in reason and "source.messages" in reason
    assert [e["room"] for e in entries(config)] == [other["room"]]
    problem = archiver.source.load(chat["room"])[0]
    assert isinstance(problem, SourceProblem) and problem.readable["_id"] == chat["_id"]
    assert problem.readable["messages"] == own


@pytest.mark.parametrize("own", [[], None], ids=["an empty list", "null"])
def test_an_empty_or_null_messages_field_holds_the_messages_collection_s(make_config, keys, own) -> None:
    """`messages: []` or `messages: null` (a platform's schema default) holds nothing to lose: the record's chat
    carries the collection's messages there, as for a chat document without the field."""
    config = make_config(source__messages="messages")
    chat, _ = _chats_with_own_messages_field(config, own)
    report = Archiver(config).run_pass()
    assert report.archived == 2 and report.quarantined == {}
    (entry,) = entries(config, room=chat["room"])
    record = json.loads(open_object(config, keys, entry["objects"]["record"]))
    assert [m["_id"] for m in record["source"]["chat"]["messages"]] == [
        {"$oid": str(m["_id"])} for m in chat["messages"]]
    assert record["transcript"]["message_count"] == 4


def test_hostile_room_ids_stay_inside_the_store(make_config, tmp_path) -> None:
    config = make_config()
    rng = random.Random(10)
    rooms = ["../../etc/passwd", "a/b", "a_b", "..", "x" * 400]
    seed(config, [make_chat(rng, messages=3, start_ms=recent_ms(), room=room) for room in rooms])
    report = Archiver(config).run_pass()
    assert report.archived == len(rooms) and archived_rooms(config) == sorted(rooms)
    store_root = (tmp_path / "store").resolve()
    files = [p for p in store_root.rglob("*") if p.is_file()]
    assert all(store_root in p.resolve().parents for p in files)
    folders = {e["objects"]["pdf"]["key"].split("/")[0] for e in entries(config)}
    assert len(folders) == len(rooms)
    assert not (tmp_path.parent / "etc").exists()


def test_retention_date_is_recorded_from_configuration(make_config) -> None:
    config = make_config(storage__retain_days=30)
    seed(config, [make_chat(random.Random(11), messages=3, start_ms=recent_ms())])
    Archiver(config).run_pass()
    (entry,) = entries(config)
    held = entry["retain_until"] - entry["generated_at"]
    assert held == dt.timedelta(days=30)


def test_storage_failure_is_recorded_and_the_next_pass_archives(make_config, keys, moto_endpoint, bucket) -> None:
    from faulty_s3 import FaultyS3

    with FaultyS3() as proxy:
        config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=proxy.url,
                             storage__max_attempts=2, archive__retry_backoff_seconds=0)
        chat, contact = make_chat(random.Random(12), messages=5, start_ms=recent_ms())
        seed(config, [(chat, contact)])
        archiver = Archiver(config)
        proxy.always = 503
        report = archiver.run_pass()
        assert report.archived == 0 and "SlowDown" in report.failed[chat["room"]]
        state = job(config, chat["room"])
        assert state["state"] == "failed" and "SlowDown" in state["last_error"]
        assert [e["status"] for e in entries(config)] == ["uploading"]

        proxy.always = None
        assert archiver.run_pass().archived == 1
        (entry,) = entries(config)
        assert entry["status"] == "archived" and entry["attempts"] == 2 and "SlowDown" in entry["last_error"]
        stored = set(open_store(config).keys())
        assert stored == {o["key"] for o in entry["objects"].values()} | set(entry["superseded_objects"])
        assert open_object(config, keys, entry["objects"]["pdf"]).startswith(b"%PDF-")


class _PutByPut:
    """A store used object by object, as a remote one is (not the local store's all-or-none put_many),
    whose put of the record fails with ERROR."""

    def __init__(self, store: Any, error: Exception) -> None:
        self._store, self._error = store, error

    def put(self, key, data, sha256, retain_until):
        if key.endswith(".json.p7m"):
            raise self._error
        return self._store.put(key, data, sha256, retain_until)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def build_failing_record_puts(error: Exception, *args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """In a worker process: a build whose record put fails with ERROR while the others are stored."""
    store = artifacts._WORKER_STORE
    artifacts._WORKER_STORE = _PutByPut(store, error)
    try:
        return REAL_ARCHIVE(*args, **kwargs)
    finally:
        artifacts._WORKER_STORE = store


@pytest.mark.parametrize("error", [StoreError("connection reset"), OSError(28, "No space left on device")])
def test_objects_of_an_interrupted_upload_are_set_aside_not_lost(error, make_config, keys, monkeypatch) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(13), messages=4, start_ms=recent_ms())
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    monkeypatch.setattr(artifacts, "archive_in_worker", functools.partial(build_failing_record_puts, error))
    assert str(error) in archiver.run_pass().failed[chat["room"]]
    stored = open_store(config).keys()
    assert len(stored) == 2 and not any(key.endswith(".json.p7m") for key in stored), "the others were stored"
    (entry,) = entries(config)
    assert sorted(entry["superseded_objects"]) == sorted(stored), "set aside at once, not left to a retry"
    assert job(config, chat["room"])["attempts"] == 1 and job(config, chat["room"])["state"] == "failed"
    monkeypatch.undo()
    index_db(config)[config["index.jobs"]].update_one({"_id": chat["room"]}, {"$set": {"available_at": 0}})
    assert archiver.run_pass().archived == 1
    (entry,) = entries(config)
    assert sorted(entry["superseded_objects"]) == sorted(stored), "what the failed attempt stored is accounted for"
    assert set(open_store(config).keys()) == {o["key"] for o in entry["objects"].values()} | set(stored)


def build_without_syncs(*args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """In a worker process: a build and put during which any sync of the local store fails."""
    from archiver import files

    def synced(*_: Any) -> None:
        raise AssertionError("a worker synced the store")
    saved = files._SYNCFS, files._sync_folder, os.fsync
    files._SYNCFS = files._sync_folder = os.fsync = synced
    try:
        return REAL_ARCHIVE(*args, **kwargs)
    finally:
        files._SYNCFS, files._sync_folder, os.fsync = saved


def test_the_pass_syncs_the_local_store_once_for_each_batch_it_indexes(make_config, monkeypatch) -> None:
    from archiver.index import ArchiveIndex
    from archiver.store.local import LocalStore

    config = make_config()
    chats = [make_chat(random.Random(n), messages=3, start_ms=recent_ms()) for n in range(6)]
    seed(config, chats)
    real_sync, real_complete, calls = LocalStore.sync, ArchiveIndex.complete, []

    def sync(store: LocalStore) -> None:
        calls.append(("sync", [e["status"] for e in entries(config)].count("uploading")))
        real_sync(store)

    def complete(index: ArchiveIndex, done: list, owner: str) -> Any:
        calls.append(("complete", len(done)))
        return real_complete(index, done, owner)
    monkeypatch.setattr(LocalStore, "sync", sync)
    monkeypatch.setattr(ArchiveIndex, "complete", complete)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_without_syncs)
    report = Archiver(config).run_pass()
    assert report.archived == 6 and not report.failed
    assert [e["status"] for e in entries(config)] == ["archived"] * 6
    # Each batch the index completes was synced just before, with its chats still `uploading`; no sync per chat.
    calls = [call for call in calls if call != ("complete", 0)]  # a last call with nothing left to index
    steps = [step for step, _ in calls]
    assert steps == ["sync", "complete"] * (len(calls) // 2), calls
    assert all(uploading >= indexed > 0 for (_, uploading), (_, indexed) in zip(calls[::2], calls[1::2]))
    assert sum(indexed for _, indexed in calls[1::2]) == 6


def test_a_failed_sync_fails_the_batch_and_the_next_pass_archives_it(make_config, monkeypatch) -> None:
    from archiver.store.local import LocalStore

    config = make_config()
    chats = [make_chat(random.Random(n), messages=3, start_ms=recent_ms()) for n in range(2)]
    seed(config, chats)

    def sync(store: LocalStore) -> None:
        raise StoreError(f"sync {store.url}: syncfs: Input/output error")
    monkeypatch.setattr(LocalStore, "sync", sync)
    archiver = Archiver(config)
    report = archiver.run_pass()
    assert report.archived == 0 and sorted(report.failed) == sorted(c["room"] for c, _ in chats)
    assert all("syncfs: Input/output error" in error for error in report.failed.values())
    assert [e["status"] for e in entries(config)] == ["uploading"] * 2, "never indexed as archived"
    first = set(open_store(config).keys())
    assert len(first) == 6
    monkeypatch.undo()
    index_db(config)[config["index.jobs"]].update_many({}, {"$set": {"available_at": 0}})
    assert archiver.run_pass().archived == 2
    for entry in entries(config):
        assert entry["status"] == "archived" and len(entry["superseded_objects"]) == 3, "the first attempt's"
        assert not set(o["key"] for o in entry["objects"].values()) & first


def test_a_fixed_quarantined_chat_is_archived_by_export(make_config) -> None:
    config = make_config()
    chat, contact = make_chat(random.Random(14), messages=4, start_ms=recent_ms())
    broken = copy.deepcopy(chat)
    broken["messages"][0]["data"] = "garbage"
    seed(config, [(broken, contact)])
    archiver = Archiver(config)
    assert chat["room"] in archiver.run_pass().quarantined
    chats = connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]
    chats.replace_one({"room": chat["room"]}, chat)
    report, _ = archiver.archive_room(chat["room"], "ended")
    assert report.archived == 1 and job(config, chat["room"])["state"] == "done"
    assert [e["status"] for e in entries(config)] == ["archived"]


def build_then_signal(*args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """In a worker process: its first build sends SIGUSR1 to the archiver (standing in for a SIGTERM)
    and takes a while, so the stop arrives while that chat is being built."""
    global _SIGNALLED
    if not _SIGNALLED:
        _SIGNALLED = True
        os.kill(int(os.environ["TEST_ARCHIVER_PID"]), signal.SIGUSR1)  # its parent is the fork server
        time.sleep(2)
    return REAL_ARCHIVE(*args, **kwargs)


_SIGNALLED = False


def test_stopping_finishes_the_chats_in_hand_and_hands_back_the_rest(make_config, monkeypatch) -> None:
    config = make_config(archive__batch_size=4)
    rng = random.Random(21)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(12)]
    seed(config, chats)
    archiver = Archiver(config)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_then_signal)
    monkeypatch.setenv("TEST_ARCHIVER_PID", str(os.getpid()))
    previous = signal.signal(signal.SIGUSR1, lambda *_: archiver.stop.set())  # as serve's SIGTERM handler does
    try:
        report = archiver.run_pass()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # The chat being built, and the one a process pool hands its worker ahead of time, are finished.
    assert report.archived == 2 and report.ok
    assert [e["status"] for e in entries(config)] == ["archived"] * 2, "no stubs left for chats never built"
    handed_back = [job(config, c["room"]) for c, _ in chats if c["room"] not in archived_rooms(config)]
    assert {(j["state"], j["attempts"]) for j in handed_back} == {("pending", 0)}
    monkeypatch.undo()
    assert Archiver(config).run_pass().archived == 10


def test_the_help_says_what_a_stop_does_as_the_test_above_finds(capsys) -> None:
    """`archiver --help` said serve's SIGTERM 'finishes the chat in hand': it finishes every chat being built
    (one per worker) and hands the queued ones back (README, the test above)."""
    from archiver.cli import main

    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "serve run the scheduled jobs until stopped (SIGTERM finishes the chats being built and hands the " \
           "queued ones back)" in out, out


def test_a_message_of_newlines_is_shown_shortened_and_a_huge_url_is_archived_in_full(make_config, keys) -> None:
    config = make_config()
    rng = random.Random(9)
    newlines, long_url, good = (make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3))
    newlines[0]["messages"][0]["data"]["content"]["text"] = "a\n" * 500_000  # 1 MB, within max_message_chars
    url = "https://example.com/" + "q" * (1_000_000 - 20)
    long_url[0]["messages"][0]["data"].update(messageType="LINK")
    long_url[0]["messages"][0]["data"]["content"]["url"] = url
    seed(config, [newlines, long_url, good])
    report = Archiver(config).run_pass()
    room = newlines[0]["room"]
    assert report.archived == 3 and not report.quarantined, report  # a customer cannot keep a chat out
    assert entries(config, room=room)[0]["shortened_fields"] == 1
    record = json.loads(open_object(config, keys, entries(config, room=room)[0]["objects"]["record"]))
    assert record["transcript"]["messages"][0]["text"] == "a\n" * 500_000, "the JSON record keeps it all"
    entry = entries(config, room=long_url[0]["room"])[0]
    assert entry["shortened_fields"] == 1
    record = json.loads(open_object(config, keys, entry["objects"]["record"]))
    assert record["transcript"]["messages"][0]["url"] == url, "the JSON record keeps the full value"


def test_an_unconfirmed_s3_put_fails_the_chat_and_the_index_pins_each_locked_version(
        make_config, keys, moto_endpoint, bucket) -> None:
    import boto3

    from faulty_s3 import FaultyS3

    with FaultyS3() as proxy:
        config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=proxy.url,
                             archive__retry_backoff_seconds=0)
        chat, contact = make_chat(random.Random(15), messages=5, start_ms=recent_ms())
        seed(config, [(chat, contact)])
        archiver = Archiver(config)
        proxy.rewrite_headers = {"x-amz-checksum-sha256": None}  # S3 acknowledges without proving what it got
        report = archiver.run_pass()
        assert "acknowledged with checksum 'none'" in report.failed[chat["room"]]
        (entry,) = entries(config)
        assert entry["status"] == "uploading"
        assert sorted(entry["superseded_objects"]) == sorted(open_store(config).keys()), "unverified, set aside"

        proxy.rewrite_headers = {}
        assert archiver.run_pass().archived == 1
    (entry,) = entries(config)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for obj in entry["objects"].values():
        head = s3.head_object(Bucket=bucket, Key=f"archive/{obj['key']}")
        assert obj["version_id"] and obj["version_id"] == head["VersionId"]
        assert head["ObjectLockMode"] == "COMPLIANCE"


def test_a_retry_finds_what_an_attempt_under_the_old_naming_stored(make_config, keys, monkeypatch) -> None:
    """Entries begun before issue 8 record no folder, and their room's folder was named with a 64-bit hash:
    the retry must still find (and account for) what such an attempt stored."""
    from archiver import artifacts

    config = make_config()
    chat, contact = make_chat(random.Random(24), messages=4, start_ms=recent_ms(), room="team/a")
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    monkeypatch.setattr(artifacts, "archive_in_worker", functools.partial(build_failing_record_puts, StoreError("down")))
    assert "down" in archiver.run_pass().failed["team/a"]
    monkeypatch.undo()
    old_folder = "team_a~" + hashlib.sha256(b"team/a").hexdigest()[:16] + "/v1"  # the naming before issue 8
    left = f"{old_folder}/transcript-0123456789abcdef.pdf.p7m"
    open_store(config).put(left, b"sealed", hashlib.sha256(b"sealed").hexdigest(), None)
    index_db(config)[config["index.entries"]].update_one({"room": "team/a"}, {"$unset": {"folder": ""}})
    index_db(config)[config["index.jobs"]].update_one({"_id": "team/a"}, {"$set": {"available_at": 0}})
    assert archiver.run_pass().archived == 1
    (entry,) = entries(config)
    assert left in entry["superseded_objects"]
    explained = {o["key"] for o in entry["objects"].values()} | set(entry["superseded_objects"])
    assert set(open_store(config).keys()) == explained, "every stored object, old folder included, is accounted for"


def _source(config: Config):
    return connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]]


def test_a_reopened_chat_is_archived_as_not_ended_never_as_ended(make_config) -> None:
    """The endChat removed and a new message written (the chat re-opened): its next version must not claim
    an end; the end it once had is in the version before."""
    config = make_config()
    chat, contact = make_chat(random.Random(11), messages=6, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    late = copy.deepcopy(chat["messages"][0])
    late["data"].update(id="late-1", ts=recent_ms(1))
    _source(config).update_one({"room": chat["room"]}, {"$pop": {"messages": 1}})
    _source(config).update_one({"room": chat["room"]}, {"$push": {"messages": late}})
    assert archiver.run_pass().archived == 1
    first, second = entries(config)
    assert first["kind"] == "ended" and second["kind"] == "interim" and second["closed_by"] == ""
    # (the index's ended_at of an interim version is its last message, for searches by time: the late one)
    assert second["ended_at"] > first["ended_at"]


@pytest.mark.parametrize("own_collection", [False, True], ids=["embedded", "messages collection"])
def test_the_rescan_notices_a_chat_whose_end_message_was_deleted(make_config, own_collection) -> None:
    """An archived chat that no longer looks ended (its endChat deleted, a message edited) is still compared:
    the archive must not silently differ from the source."""
    config = make_config(source__messages="messages" if own_collection else "")
    chat, contact = make_chat(random.Random(11), messages=6, start_ms=recent_ms(30))
    db = connect(config["mongodb.uri"])[config["source.database"]]
    if own_collection:
        db.messages.insert_many(copy.deepcopy(chat["messages"]))
        db.chats.insert_one({k: v for k, v in chat.items() if k != "messages"})
        db.contacts.insert_one(copy.deepcopy(contact))
    else:
        seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    if own_collection:
        db.messages.delete_one({"room": chat["room"], "data.messageType": "endChat"})
        db.messages.update_one({"room": chat["room"], "data.id": chat["messages"][0]["data"]["id"]},
                               {"$set": {"data.content.text": "EDITED"}})
    else:
        _source(config).update_one({"room": chat["room"]}, {"$pop": {"messages": 1}})
        _source(config).update_one({"room": chat["room"]}, {"$set": {"messages.0.data.content.text": "EDITED"}})
    assert archiver.run_pass(full=True).archived == 1
    assert [(e["version"], e["kind"]) for e in entries(config)] == [(1, "ended"), (2, "interim")]
    assert archiver.run_pass(full=True).archived == 0  # compared again: unchanged now


def test_a_worker_whose_clock_runs_ahead_does_not_hide_chats_from_the_others(make_config, monkeypatch) -> None:
    """Discovery's watermark is shared by every archiver: taken from one whose clock ran 3 hours ahead, the
    chats that ended meanwhile were hidden from all of them until the nightly rescan."""
    config = make_config()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3 * 3600)  # this process's clock; the server's is right
    Archiver(config).run_pass()
    monkeypatch.setattr(time, "time", real)
    seed(config, [make_chat(random.Random(31), messages=4, start_ms=recent_ms(10))])
    assert Archiver(config).run_pass().archived == 1


def test_a_database_clock_that_runs_ahead_does_not_hide_chats_from_discovery(make_config, monkeypatch) -> None:
    """The platform stamps messages with its own clock: a watermark taken from a database server 3 hours
    ahead hid the chats that ended meanwhile until the nightly rescan. The earlier of the two clocks is taken."""
    from archiver.claims import WorkQueue

    config = make_config()
    real = WorkQueue.server_ms
    monkeypatch.setattr(WorkQueue, "server_ms", lambda self: real(self) + 3 * 3_600_000)
    Archiver(config).run_pass()
    seed(config, [make_chat(random.Random(32), messages=4, start_ms=recent_ms(10))])
    assert Archiver(config).run_pass().archived == 1


def test_a_second_contact_document_for_a_room_is_reported_not_silently_left_out(make_config) -> None:
    """Two contact documents with one room's id: archiving one of them would leave the other's data out of
    the archive without a word (and its later edits unseen); the chat waits for a person, as with two chats."""
    config = make_config()
    chat, contact = make_chat(random.Random(11), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1
    contacts = connect(config["mongodb.uri"])[config["source.database"]][config["source.contacts"]]
    first = contacts.find_one({"id": chat["room"]})
    second = {"_id": ObjectId(), "id": chat["room"], "title": "SECOND", "dataCollections": {"note": "only here"}}
    contacts.insert_one(second)
    report = archiver.run_pass(full=True)
    assert report.archived == 0 and list(report.quarantined) == [chat["room"]]
    reason = report.quarantined[chat["room"]]
    assert "2 contact documents" in reason and repr(second["_id"]) in reason and repr(first["_id"]) in reason


def test_a_mongodb_outage_after_indexing_is_the_pass_s_error_not_a_legal_hold_failure(make_config, monkeypatch,
                                                                                     caplog) -> None:
    """No hold exists, yet an outage just after a batch was indexed was logged as `legal_hold_failed` (the
    holds' seam swallows every error), and the pass went on into the outage."""
    from pymongo.errors import ServerSelectionTimeoutError

    config = make_config()
    seed(config, [make_chat(random.Random(31), messages=3, start_ms=recent_ms())])
    archiver = Archiver(config)
    monkeypatch.setattr(archiver.holds.holds, "find", lambda *a, **k: (_ for _ in ()).throw(
        ServerSelectionTimeoutError("127.0.0.1:27017: [Errno 111] Connection refused")))
    with pytest.raises(ServerSelectionTimeoutError):
        archiver.run_pass()
    assert "legal_hold_failed" not in caplog.text

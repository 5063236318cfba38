"""`archiver status`, and the outcomes of passes and rescans it reports (also in metrics and /healthz)."""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
import threading
import time
from pathlib import Path

from prometheus_client import generate_latest
import pymongo
import pytest
from pymongo.errors import (AutoReconnect, ConnectionFailure, NetworkTimeout, NotPrimaryError, OperationFailure,
                            ServerSelectionTimeoutError)

from archiver.cli import main
from archiver.jobs import Service
from archiver.mongo import connect
from archiver.samples import make_chat
from archiver.status import QUARANTINE_SHOWN, collect
from conftest import write_toml


def _toml_values(make_config) -> dict:
    config = make_config().as_dict()
    wanted = ["mongodb.uri", "storage.url", "storage.object_lock_mode", "signing.certificate", "signing.key",
              "encryption.recipients", "source.database", "index.database", "archive.workers", "logging.format"]
    return {k: config[k] for k in wanted}


def _toml(tmp_path: Path, make_config) -> Path:
    return write_toml(tmp_path / "archiver.toml", _toml_values(make_config))


def _db(make_config, which: str):
    config = make_config()
    return connect(config["mongodb.uri"])[config[f"{which}.database"]]


def _seed_good_and_broken(make_config) -> str:
    start = (time.time() - 600) * 1000
    chat, contact = make_chat(random.Random(18), messages=4, start_ms=start)
    broken = {"_id": "BROKEN", "room": "BROKEN",
              "messages": [{"data": {"messageType": "endChat", "ts": start, "content": {"text": []}}}]}
    source = _db(make_config, "source")
    source.chats.insert_many([chat, broken])
    source.contacts.insert_one(contact)
    return chat["room"]


def _status(config: Path, capsys) -> dict:
    assert main(["--config", str(config), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_after_run_shows_jobs_quarantine_and_the_last_pass(tmp_path, make_config, capsys) -> None:
    config = _toml(tmp_path, make_config)
    before = _status(config, capsys)
    assert before["last_pass"] is None and before["last_rescan"] is None and before["oldest_unarchived"] is None
    _seed_good_and_broken(make_config)
    assert main(["--config", str(config), "run", "--full", "--no-progress"]) == 1
    capsys.readouterr()
    status = _status(config, capsys)
    assert status["jobs"] == {"pending": 0, "claimed": 0, "failed": 0, "quarantined": 1, "done": 1}
    assert status["quarantined_total"] == 1
    (shown,) = status["quarantined"]
    assert shown["room"] == "BROKEN" and "data.content.text: is list" in shown["reason"]
    assert status["oldest_unarchived"]["room"] == "BROKEN" and status["oldest_unarchived"]["state"] == "quarantined"
    last = status["last_pass"]
    assert last["outcome"] == "items_failed" and last["archived"] == 1 and last["quarantined"] == 1
    assert last["worker"].startswith(socket.gethostname() + ":") and last["error"] == ""
    assert dt.datetime.fromisoformat(last["ended_at"]) >= dt.datetime.fromisoformat(last["started_at"])
    assert status["last_rescan"]["outcome"] == "ok" and status["last_rescan"]["queued"] == 2

    assert main(["--config", str(config), "status"]) == 0
    text = capsys.readouterr().out
    assert "quarantined 1" in text and "BROKEN:" in text and "last pass" in text and "items_failed" in text


def test_quarantine_is_bounded_most_recent_first_and_oldest_has_an_age(tmp_path, make_config, capsys) -> None:
    jobs = _db(make_config, "index")["archive_jobs"]
    now = dt.datetime.now(dt.timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    jobs.insert_many([{"_id": f"Q{i:02}", "state": "quarantined", "reason": f"reason {i}", "last_error": f"reason {i}",
                       "attempts": 1, "kind": "ended", "available_at": now_ms, "finished_at": now_ms - (30 - i) * 1000,
                       "discovered_at": now - dt.timedelta(minutes=30 - i)} for i in range(25)])
    jobs.insert_one({"_id": "OLD", "state": "pending", "attempts": 0, "kind": "ended", "last_error": "",
                     "available_at": now_ms, "discovered_at": now - dt.timedelta(hours=2)})
    jobs.insert_one({"_id": "F", "state": "failed", "attempts": 2, "kind": "ended", "last_error": "put: SlowDown",
                     "available_at": now_ms + 60_000, "finished_at": now_ms, "discovered_at": now})
    status = _status(_toml(tmp_path, make_config), capsys)
    assert status["jobs"]["quarantined"] == 25 and status["quarantined_total"] == 25
    assert [q["room"] for q in status["quarantined"]] == [f"Q{i:02}" for i in range(24, 24 - QUARANTINE_SHOWN, -1)]
    assert status["failed"] == [{"room": "F", "error": "put: SlowDown", "attempts": 2,
                                 "failed_at": status["failed"][0]["failed_at"],
                                 "retry_at": status["failed"][0]["retry_at"]}]
    oldest = status["oldest_unarchived"]
    assert oldest["room"] == "OLD" and oldest["state"] == "pending" and 7100 < oldest["age_seconds"] < 7300


def _service(make_config) -> Service:
    return Service(make_config(), threading.Event())


def test_a_failed_rescan_shows_in_status_metrics_and_healthz(make_config, monkeypatch) -> None:
    service = _service(make_config)
    service.archive_pass()
    assert service.healthy()

    def broken(since):
        raise OperationFailure("not authorized on ctlive to execute command { find: \"chats\" }")
    monkeypatch.setattr(service.archiver.source, "ended_since", broken)
    service.rescan()  # never raises into APScheduler, where it used to vanish
    assert not service.healthy()
    status = collect(make_config())
    assert status.last_rescan["outcome"] == "error" and "not authorized" in status.last_rescan["error"]
    metrics = generate_latest(service.metrics.registry).decode()
    assert "archiver_rescan_failures_total 1.0" in metrics and "archiver_last_rescan_ok 0.0" in metrics

    monkeypatch.undo()
    service.rescan()
    assert service.healthy() and collect(make_config()).last_rescan["outcome"] == "ok"
    assert "archiver_last_rescan_ok 1.0" in generate_latest(service.metrics.registry).decode()


def test_serve_records_a_failed_pass(make_config, monkeypatch) -> None:
    service = _service(make_config)
    monkeypatch.setattr(service.archiver.queue, "claim_batch",
                        lambda *a, **k: (_ for _ in ()).throw(OperationFailure("claim refused")))
    service.archive_pass()
    last = collect(make_config()).last_pass
    assert last["outcome"] == "error" and "claim refused" in last["error"]
    assert not service.healthy()


@pytest.mark.parametrize("error", [NotPrimaryError("not primary"), NetworkTimeout("timed out"),
                                   ServerSelectionTimeoutError("source.example:27017: [Errno 111] Connection refused")],
                         ids=["stepped-down", "socket-timeout", "source-down"])
def test_a_pass_a_connection_error_ends_is_recorded_when_the_index_answers(error, make_config, monkeypatch) -> None:
    """A connection error (a primary stepping down, a socket timeout, the source cluster down while the index
    answers) was never recorded: status showed the pass before, `ok`, for as long as such passes lasted."""
    service = _service(make_config)
    service.archive_pass()
    assert collect(make_config()).last_pass["outcome"] == "ok"

    def fails(since):
        raise error
    monkeypatch.setattr(service.archiver.source, "active_since", fails)
    service.archive_pass()
    assert not service.healthy()
    last = collect(make_config()).last_pass
    assert (last["outcome"], last["error"]) == ("error", f"{type(error).__name__}: {error}")


def test_recording_an_outcome_on_an_index_that_is_down_takes_a_few_seconds_not_the_selection_timeout(
        tmp_path, caplog) -> None:
    """The outcome is always saved, and a save the database cannot take is bounded (RECORD_SECONDS), so
    a pass on an unreachable index does not wait the whole server selection timeout again to record it."""
    from nxserver import start_nx

    from archiver.status import RECORD_SECONDS, recorded

    uri, server = start_nx(tmp_path)
    state = connect(uri + "&serverSelectionTimeoutMS=15000")["idx"]["state"]
    state.find_one()
    server.terminate()
    server.wait(10)
    with pytest.raises(ConnectionFailure), pymongo.timeout(0.5):  # the pass's own error: the pooled connection
        state.find_one()  # breaks, and the driver looks for a server from now on
    started = time.monotonic()
    with pytest.raises(AutoReconnect, match="gone"), recorded(state, "last_pass", "me"):
        raise AutoReconnect("gone")  # and no server is found to record it
    assert time.monotonic() - started < RECORD_SECONDS + 2
    assert [r.fields["kind"] for r in caplog.records if r.msg == "outcome_not_recorded"] == ["last_pass"]


def test_a_pass_with_a_broken_chat_on_the_wire_protocol_stand_in_is_recorded(make_config, nx_uri) -> None:
    """Over the wire (nx-27017, or a real MongoDB): a chat that fails to build drops its `uploading` entry
    without failing the pass, and the pass's outcome is found by status."""
    from archiver.pipeline import Archiver

    config = make_config(mongodb__uri=nx_uri)
    start = (time.time() - 600) * 1000
    chat, contact = make_chat(random.Random(19), messages=4, start_ms=start)
    broken = {"_id": "BROKEN-NX", "room": "BROKEN-NX",
              "messages": [{"data": {"messageType": "endChat", "ts": start, "content": {"text": []}}}]}
    source = connect(nx_uri)[config["source.database"]]
    source[config["source.chats"]].insert_many([chat, broken])
    source[config["source.contacts"]].insert_one(contact)
    report = Archiver(config).run_pass()
    assert report.archived == 1 and set(report.quarantined) == {"BROKEN-NX"}, report
    from archiver.status import LAST_PASS, recorded
    with recorded(connect(nx_uri)[config["index.database"]][config["index.state"]], LAST_PASS, "tester") as fields:
        fields.update(archived=report.archived)
    last = collect(config).last_pass
    assert last is not None and last["archived"] == 1 and last["worker"] == "tester"


def test_the_oldest_unarchived_chat_is_aged_from_its_end_not_from_its_discovery(make_config, tmp_path,
                                                                                 capsys) -> None:
    """After an outage a chat that ended days ago is found now: status said "0.0 h ago", the metric 0."""
    config = make_config()
    chat, contact = make_chat(random.Random(4), messages=4, start_ms=(time.time() - 5 * 86400) * 1000)
    source = _db(make_config, "source")
    source.chats.insert_one(chat)
    source.contacts.insert_one(contact)
    service = Service(config, threading.Event())
    assert service.archiver.discover(full=True) == 1  # found, not archived yet
    oldest = _status(_toml(tmp_path, make_config), capsys)["oldest_unarchived"]
    assert oldest["room"] == chat["room"] and oldest["ended_at"] and 4.9 * 86400 < oldest["age_seconds"] < 5.1 * 86400
    service.refresh_gauges()
    assert 4.9 * 86400 < service.metrics.oldest_pending._value.get() < 5.1 * 86400


def test_end_times_are_read_from_the_contact_whatever_type_its_end_time_has(make_config) -> None:
    """A NumberLong endTime comes back as Int64: it was skipped, and the chat aged from its discovery."""
    from bson.int64 import Int64
    from archiver.source import ChatSource
    db = _db(make_config, "source")
    db.contacts.insert_many([{"id": "a", "endTime": Int64(1_700_000_000_000)}, {"id": "b", "endTime": 1.7e12},
                             {"id": "c", "endTime": "1700000000000"}, {"id": "d", "endTime": "soon"}])
    assert ChatSource(db, "chats", "contacts").end_times(["a", "b", "c", "d", "e"]) == {
        "a": 1.7e12, "b": 1.7e12, "c": 1.7e12}


def test_the_status_line_says_the_age_counts_from_the_chats_end(make_config, tmp_path, capsys) -> None:
    """It said "discovered <time>, 120.0 h ago": hours that count from the end, printed beside the discovery."""
    import re
    from archiver.commands.status import _oldest

    chat, contact = make_chat(random.Random(4), messages=4, start_ms=(time.time() - 5 * 86400) * 1000)
    source = _db(make_config, "source")
    source.chats.insert_one(chat)
    source.contacts.insert_one(contact)
    assert Service(make_config(), threading.Event()).archiver.discover(full=True) == 1
    assert main(["--config", str(_toml(tmp_path, make_config)), "status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("oldest not archived"))
    assert re.fullmatch(rf"oldest not archived: {re.escape(chat['room'])} \(pending\), ended \S+ \(1(19|20)\.\d h ago\), "
                        r"discovered \S+", line), line
    unknown = {"room": "R", "state": "pending", "ended_at": None, "discovered_at": "2026-01-01T00:00:00Z",
               "age_seconds": 7200.0}
    assert _oldest(unknown) == "R (pending), end not known, discovered 2026-01-01T00:00:00Z (2.0 h ago)"


def _seed_chats(make_config, count: int, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    chats = [make_chat(rng, messages=4, start_ms=(time.time() - 600) * 1000) for _ in range(count)]
    source = _db(make_config, "source")
    source.chats.insert_many([chat for chat, _ in chats])
    source.contacts.insert_many([contact for _, contact in chats])
    return [chat["room"] for chat, _ in chats]


def test_healthz_is_unhealthy_while_passes_handle_chats_and_archive_none(make_config, monkeypatch) -> None:
    """A pass whose every chat failed answered 200 "ok": progress was counted per indexed batch, failed
    ones included, and every pass that ended counted as activity (a TSA outage: 0 archived, 10 failed)."""
    from archiver.store import StoreError

    service = Service(make_config(archive__retry_backoff_seconds=0), threading.Event())
    rooms = _seed_chats(make_config, 3)
    service.last_activity -= service.config["metrics.stale_after_minutes"] * 60  # the last progress is old
    monkeypatch.setattr(service.archiver.store, "sync", lambda: (_ for _ in ()).throw(StoreError("disk full")))
    service.archive_pass()
    assert service.last_error == "" and not service.healthy()
    notes = service.health_notes()
    assert any("archived none of the 3 chats it handled" in line and "3 failed" in line and "disk full" in line
               for line in notes), notes
    assert collect(make_config()).jobs["failed"] == len(rooms)

    service.archive_pass()  # nothing due (retried by a later pass only): no verdict either way
    assert not service.healthy()

    monkeypatch.undo()
    service.archiver.queue.jobs.update_many({}, {"$set": {"available_at": 0}})
    service.archive_pass()  # the store is back: the chats are archived
    assert service.healthy(), service.health_notes()
    assert service.health_notes() == []


def test_healthz_is_unhealthy_while_the_last_retention_run_failed(make_config, monkeypatch) -> None:
    """docs/retention.md: "a failure shows in /healthz"; it showed in the body only, with 200 "ok"."""
    from archiver.retention import Deletions

    service = Service(make_config(retention__rules={"default": {"source_days": 30, "archive_days": 365}},
                                  storage__object_lock_mode=""), threading.Event())
    service.archive_pass()
    assert service.healthy()
    monkeypatch.setattr(Deletions, "run", lambda *a, **k: (_ for _ in ()).throw(OperationFailure("not authorized")))
    service.retention()
    assert not service.healthy()
    assert any(line.startswith("retention error:") and "not authorized" in line for line in service.health_notes())
    monkeypatch.undo()
    service.retention()
    assert service.retention_error == "" and service.healthy()


def test_the_jobs_gauge_drops_a_state_to_zero_once_no_job_is_in_it(make_config) -> None:
    """archiver_jobs{state="failed"} kept its old count after the last failed job was archived."""
    from archiver.store import StoreError

    service = Service(make_config(archive__retry_backoff_seconds=0), threading.Event())
    _seed_chats(make_config, 2)
    real_sync = service.archiver.store.sync
    service.archiver.store.sync = lambda: (_ for _ in ()).throw(StoreError("disk full"))
    service.archive_pass()

    def gauge() -> dict[str, float]:
        samples = service.metrics.queue.collect()[0].samples
        return {sample.labels["state"]: sample.value for sample in samples}
    assert gauge()["failed"] == 2
    service.archiver.store.sync = real_sync
    service.archiver.queue.jobs.update_many({}, {"$set": {"available_at": 0}})
    service.archive_pass()
    assert gauge() == {"pending": 0, "claimed": 0, "failed": 0, "quarantined": 0, "done": 2}


def test_healthz_gives_a_mongodb_outage_in_one_line(make_config, tmp_path) -> None:
    """During an outage /healthz showed pymongo's whole topology dump (every server's state, on one long line)."""
    from nxserver import start_nx

    (tmp_path / "nx").mkdir()
    uri, server = start_nx(tmp_path / "nx")
    try:
        config = make_config(mongodb__uri=uri + "&serverSelectionTimeoutMS=500")
        connect(config["mongodb.uri"])[config["source.database"]].create_collection("chats")  # no warning of it
        service = Service(config, threading.Event())
    finally:
        server.terminate()
        server.wait(10)
    seen = []
    for _ in range(2):  # the pooled connection breaks (AutoReconnect), then no server is found
        service.archive_pass()
        assert not service.healthy()
        (note,) = service.health_notes()
        assert "Topology Description" not in note and "configured timeouts" not in note, note
        seen.append(note)
    assert seen[-1].startswith("error: ServerSelectionTimeoutError: 127.0.0.1:"), seen


def test_a_pass_whose_only_chat_was_quarantined_leaves_healthz_healthy(make_config) -> None:
    """A chat that needs a person (quarantined, counted by archiver_jobs{state="quarantined"}) says nothing of
    whether chats can be archived: /healthz stayed 503 through every quiet pass until another chat came."""
    config = make_config()
    db = _db(make_config, "source")
    from bson import Code

    end = {"data": {"messageType": "endChat", "ts": time.time() * 1000}}
    db.chats.insert_one({"room": "R-bad", "messages": [{"data": {"id": Code("x()"), "messageType": "text"}}, end]})
    service = Service(config, threading.Event())
    service.archive_pass()
    assert collect(config).jobs.get("quarantined") == 1
    assert service.healthy(), service.health_notes()


def test_an_error_that_is_not_utf8_is_recorded_escaped_and_raised_as_it_was(nx_uri, db_names) -> None:
    """An exception whose message holds a lone surrogate (bytes that were not UTF-8) could not be stored:
    the driver's UnicodeEncodeError replaced the pass's own error."""
    import pytest

    from archiver.status import recorded

    state = connect(nx_uri)[db_names["index.database"]]["state"]
    with pytest.raises(ValueError, match="bad name"), recorded(state, "pass", "me"):
        raise ValueError("bad name form\udcff")
    assert state.find_one({"_id": "pass"})["error"] == "ValueError: bad name form\\xff"


def test_a_source_collection_that_does_not_exist_is_warned_of_in_status_and_healthz(make_config, tmp_path,
                                                                                     capsys, caplog) -> None:
    """A mistyped source.database (or source.chats) made every pass idle: /healthz 200 "ok" and status "ok" for
    ever, with nothing archived and nothing said. Still healthy (a new deployment may have no chats yet), but
    warned of, naming the setting."""
    config = make_config()
    chat, contact = make_chat(random.Random(7), messages=3, start_ms=(time.time() - 300) * 1000)
    _db(make_config, "source").chats.insert_one(chat)  # where the platform keeps it
    typo = config["source.database"] + "_typo"
    path = write_toml(tmp_path / "typo.toml", {**_toml_values(make_config), "source.database": typo})
    with caplog.at_level("WARNING", logger="archiver"):
        service = Service(make_config(source__database=typo), threading.Event())
        service.archive_pass()
    assert [r.getMessage() for r in caplog.records].count("source_missing") == 1  # at start-up, once
    assert service.healthy()  # a warning, not a failure
    (note,) = service.health_notes()
    assert note.startswith(f"warning: source.chats: no collection 'chats' in source.database '{typo}'"), note
    shown = _status(path, capsys)
    assert shown["warnings"] == [note[len("warning: "):]]
    assert main(["--config", str(path), "status"]) == 0
    assert f"warning: source.chats: no collection 'chats' in source.database '{typo}'" in capsys.readouterr().out

    service = Service(make_config(source__chats="chat"), threading.Event())  # the right database, a wrong name
    assert service.health_notes()[0].startswith("warning: source.chats: no collection 'chat' in source.database")
    _db(make_config, "source").chat.insert_one({"room": "R"})  # it exists now: the next pass drops the warning
    _db(make_config, "source").contacts.insert_one({"id": "R"})  # (chats without contacts are warned of)
    service.archive_pass()
    assert service.health_notes() == []


def test_an_empty_or_existing_source_collection_is_not_warned_of(make_config, tmp_path, capsys) -> None:
    db = _db(make_config, "source")
    db.create_collection("chats")  # a new deployment: no chat yet, nor contacts
    service = Service(make_config(), threading.Event())
    service.archive_pass()
    assert service.healthy() and service.health_notes() == []
    assert _status(_toml(tmp_path, make_config), capsys)["warnings"] == []
    # messages in a collection of their own (source.messages): that one is checked too
    notes = Service(make_config(source__messages="messages"), threading.Event()).health_notes()
    assert [n.split(":", 2)[1] for n in notes] == [" source.messages"], notes


def test_the_source_check_works_on_the_wire_protocol(nx_uri, db_names, make_config) -> None:
    from archiver.source import missing_collections

    config = make_config(mongodb__uri=nx_uri)
    assert missing_collections(config) == [
        f"source.chats: no collection 'chats' in source.database '{db_names['source.database']}'"
        " (a mistyped name? nothing there is ever archived)"]
    connect(nx_uri)[db_names["source.database"]].create_collection("chats")
    assert missing_collections(config) == []  # a new deployment: no chat, no contact yet
    connect(nx_uri)[db_names["source.database"]].chats.insert_one({"room": "R"})
    assert missing_collections(config) == [
        f"source.contacts: no collection 'contacts' in source.database '{db_names['source.database']}'"
        " (a mistyped name? every chat is archived without its contact)"]
    connect(nx_uri)[db_names["source.database"]].create_collection("contacts")
    assert missing_collections(config) == []


def test_status_says_at_once_that_a_source_that_does_not_answer_could_not_be_asked(make_config, mongo_uri) -> None:
    """Review "today2": with the index on its own cluster and the source down (when an operator runs status),
    the source check waited its server selection timeout (10 s) and then said nothing."""
    import socket
    import time

    from archiver.status import collect

    with socket.socket() as s:  # a port on 127.0.0.1 nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = make_config(mongodb__uri=f"mongodb://127.0.0.1:{port}/", index__uri=mongo_uri)
    started = time.monotonic()
    warnings = collect(config).warnings
    assert time.monotonic() - started < 5
    assert warnings == [f"source.database {config['source.database']!r}: could not be asked which collections it "
                        "has within 2 s (ServerSelectionTimeoutError; mongodb.uri)"], warnings


def test_a_contacts_collection_that_does_not_exist_beside_the_chats_is_warned_of(make_config, tmp_path,
                                                                               capsys) -> None:
    """A mistyped source.contacts archived every chat without its contact (its customer, channel and service
    gone from the record, the PDF and the index), with nothing said. Warned of once chats exist (a new
    deployment has neither), naming the setting; gone once the collection exists."""
    chat, contact = make_chat(random.Random(8), messages=3, start_ms=(time.time() - 300) * 1000)
    source = _db(make_config, "source")
    source.chats.insert_one(chat)
    source.contacts.insert_one(contact)
    service = Service(make_config(source__contacts="contact"), threading.Event())
    (note,) = service.health_notes()
    assert note == (f"warning: source.contacts: no collection 'contact' in source.database "
                    f"'{make_config()['source.database']}' (a mistyped name? every chat is archived without its "
                    "contact)"), note
    path = write_toml(tmp_path / "typo.toml", {**_toml_values(make_config), "source.contacts": "contact"})
    assert _status(path, capsys)["warnings"] == [note[len("warning: "):]]
    assert Service(make_config(), threading.Event()).health_notes() == []  # the right name
    source.drop_collection("chats")
    source.drop_collection("contacts")
    assert Service(make_config(source__contacts="contact"), threading.Event()).health_notes() == [
        f"warning: source.chats: no collection 'chats' in source.database '{make_config()['source.database']}' "
        "(a mistyped name? nothing there is ever archived)"]  # nothing yet: the chats' warning alone

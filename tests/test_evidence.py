"""Evidence gaps: the archive keeps matching the source as chats change, collide or arrive late."""

from __future__ import annotations

import copy
import random
import time

from archiver import artifacts
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from test_pipeline import entries, index_db, job, recent_ms, seed


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

"""An archiver that stalls past its lease (a VM pause, SIGSTOP, a slow worker) while another archiver or an
erasure decides the chat's fate: when it comes back it must not archive what was quarantined or erased
meanwhile, nor report as failed what another archived, and everything it stored stays explained by the
index (mongomock, or a real MongoDB)."""

from __future__ import annotations

import random
import types
from typing import Any, Callable

import pytest

from archiver import claims, pipeline
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.store import open_store
from retention_helpers import customer_of, erase, retention_config, source
from test_pipeline import entries, index_db, job, recent_ms, seed
from test_takeover import queue_as, watch_between_waits

STALLS = ["before its index entry", "while it builds"]  # between reading the chat and its entry; or after


def _stall_once(stalls: str, monkeypatch: pytest.MonkeyPatch, a: Archiver, meanwhile: Callable[[], Any]) -> list:
    """Archiver A, in this process, stalls once at STALLS past its leases (its clock moves on by a lease, and
    they run out), while MEANWHILE (another process's work) runs; what that returned, once it has."""
    real, ahead, done = pipeline.time, [0.0], []
    monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(
        monotonic=lambda: real.monotonic() + ahead[0], perf_counter=real.perf_counter))

    def stall() -> None:
        if not done:
            ahead[0] += a.config["archive.lease_seconds"]
            jobs = index_db(a.config)[a.config["index.jobs"]]  # run out just now: A's pass is not due to take them
            jobs.update_many({"state": "claimed"}, {"$set": {"available_at": queue_as(a.config, "x").server_ms() - 1}})
            done.append(meanwhile())
    if stalls == "while it builds":
        watch_between_waits(monkeypatch, a, stall)
    else:
        begin = a.index.begin
        monkeypatch.setattr(a.index, "begin", lambda *args: (stall(), begin(*args))[1])
    return done


def _explained(config: Any) -> bool:
    """Whether every archived object in the store is named by an index entry (its archive, or set aside)."""
    named = set()
    for entry in entries(config):
        named |= {o["key"] for o in (entry.get("objects") or {}).values()} | set(entry.get("superseded_objects", []))
    stored = {k for k in open_store(config).keys() if not k.startswith(".reports/")}  # deletion runs' reports
    return stored <= named


@pytest.mark.parametrize("stalls", STALLS)
def test_a_stalled_archiver_does_not_archive_a_chat_another_quarantined_meanwhile(stalls, make_config,
                                                                                   monkeypatch) -> None:
    """A holds a chat claimed alone (it lapsed before) and stalls past its lease; B gives up on the chat (its
    lapses reached archive.max_attempts) and quarantines it without loading it. A came back and completed
    the entry: an archived version of a quarantined chat, A's pass counting it archived."""
    config = make_config(archive__max_attempts=1)
    chat, contact = make_chat(random.Random(21), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    room = chat["room"]
    a = Archiver(config)
    a.discover()
    jobs = index_db(config)[config["index.jobs"]]
    jobs.update_one({"_id": room}, {"$set": {"state": "failed", "lapses": claims.ALONE_AFTER, "available_at": 0}})
    rival = _stall_once(stalls, monkeypatch, a, lambda: Archiver(config).run_pass(discover=False))
    report = a.run_pass(discover=False)
    assert list(rival[0].quarantined) == [room] and job(config, room)["state"] == "quarantined"
    # Built: its entry closed, what A stored set aside on it. Not begun yet: A drops the entry it then began.
    assert [e["status"] for e in entries(config, room=room)] == (["superseded"] if stalls == "while it builds" else [])
    assert report.archived == 0 and report.leases_lost == [room] and report.ok
    assert _explained(config)


@pytest.mark.parametrize("stalls", STALLS)
def test_an_erasure_while_an_archiver_stalls_past_its_lease_is_not_undone_by_it(stalls, make_config,
                                                                                 monkeypatch) -> None:
    """A has claimed and read the chat, then stalls past its lease; an erasure found the claim run out and
    deleted the source, reporting it erased. A came back and archived what it had read: an erased chat's
    archive, after an erasure that said it was done. The source is kept, named as being archived (as for a
    live claim), and the next request erases what A archived."""
    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(22), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    a = Archiver(config)
    during = _stall_once(stalls, monkeypatch, a, lambda: erase(config, customer_of(chat)))
    a.run_pass()
    monkeypatch.undo()
    [item] = [i for i in during[0].report["items"] if i["action"] == "delete_source"]
    if item["outcome"] == "deleted":  # then nothing of the chat may be archived after it
        assert [e["status"] for e in entries(config) if e["status"] == "archived"] == [], "the erasure undone"
    assert item["outcome"] == "skipped" and "being archived" in item["detail"], item
    assert source(config).count_documents({}) == 1
    erase(config, customer_of(chat))  # again, once the pass is done
    assert source(config).count_documents({}) == 0
    assert [e["status"] for e in entries(config)] == ["deleted"]
    assert _explained(config)


@pytest.mark.parametrize("stalls", STALLS)
def test_a_stalled_archiver_whose_chat_another_archived_meanwhile_adds_nothing_but_set_aside_objects(
        stalls, make_config, monkeypatch) -> None:
    """A stalls past its lease; B takes the chat over and archives it; then A comes back: the chat is archived
    once, and A's pass reported it failed when A had not begun its entry before the stall."""
    config = make_config()
    chat, contact = make_chat(random.Random(23), messages=3, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    room = chat["room"]
    a = Archiver(config)
    rival = _stall_once(stalls, monkeypatch, a, lambda: Archiver(config).run_pass(discover=False))
    report = a.run_pass()
    assert rival[0].archived == 1
    assert [e["status"] for e in entries(config)] == ["archived"] and job(config, room)["state"] == "done"
    # Not a failure of A's pass (exit 1, `items_failed` in status): A's begin found B's entry, its failure
    # found the job B's and closed nothing.
    assert report.archived == 0 and report.failed == {} and report.leases_lost == [room]
    assert _explained(config), "what A stored (while it built) is set aside on B's entry"


@pytest.mark.parametrize("stalls", ["between its plan and its deletions", "between its job check and the deletion"])
def test_an_erasure_that_stalls_while_the_pass_archives_the_chat_does_not_say_it_is_erased(stalls, make_config,
                                                                                           monkeypatch) -> None:
    """The erasure stalls (or is just slow) after its plan, or after finding the chat's job not claimed; a pass
    claims, reads and archives the chat meanwhile; the erasure deletes the source and reported the chat
    erased (exit 0), its archive left whole. Now it says the source went but an archive made meanwhile did
    not (NOT ERASED, exit 1), and the next request erases it."""
    from archiver.retention import Deletions
    from archiver.source import ChatSource

    config = retention_config(make_config)
    chat, contact = make_chat(random.Random(24), messages=4, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    where = (Deletions, "_execute") if stalls.startswith("between its plan") else (ChatSource, "delete_room")
    real, passes = getattr(*where), []

    def archive_meanwhile(self, *args):
        if not passes:
            passes.append(Archiver(config).run_pass())
        return real(self, *args)
    monkeypatch.setattr(*where, archive_meanwhile)
    result = erase(config, customer_of(chat))
    monkeypatch.undo()
    assert passes[0].archived == 1 and source(config).count_documents({}) == 0
    [item] = [i for i in result.report["items"] if i["action"] == "delete_source"]
    assert [e["status"] for e in entries(config)] == ["archived"]
    assert item["outcome"] == "failed" and "erase again" in item["detail"] and not result.ok, item
    erase(config, customer_of(chat))
    assert [e["status"] for e in entries(config)] == ["deleted"]
    assert _explained(config)

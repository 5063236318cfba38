"""Lost leases, completion races and dead worker processes: each chat archived once,
every stored object explained by the index (mongomock, or a real MongoDB)."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import hashlib
import multiprocessing
import os
import random
import signal
import threading
import time
from typing import Any

from pymongo.errors import AutoReconnect

from archiver import artifacts
from archiver.claims import WorkQueue, now_ms
from archiver.index import ArchiveIndex
from archiver.mongo import connect
from archiver.pipeline import WORKER_DIED, Archiver
from archiver.samples import make_chat
from archiver.store import open_store
from test_pipeline import archived_rooms, entries, index_db, job, recent_ms, seed

REAL_ARCHIVE = artifacts.archive_in_worker  # what the hooks below call, in whichever process they run


def queue_as(config, owner: str) -> WorkQueue:
    return WorkQueue(index_db(config)[config["index.jobs"]], owner)


def expire_all_claims(config) -> None:
    index_db(config)[config["index.jobs"]].update_many({"state": "claimed"}, {"$set": {"available_at": 0}})


def assert_each_archived_once_and_the_store_explained(config, rooms: list[str], unfinished: list[str] = ()
                                                       ) -> None:
    assert archived_rooms(config) == sorted(rooms)
    assert [e["room"] for e in entries(config, status="uploading")] == list(unfinished)
    explained = set()
    for entry in entries(config):
        explained |= {o["key"] for o in entry["objects"].values()} | set(entry["superseded_objects"])
    assert set(open_store(config).keys()) == explained


def build_slowly(chat: dict[str, Any], *args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """A build of a room named *-slow that takes TEST_BUILD_SECONDS (worker processes inherit the environment)."""
    if chat["room"].endswith("-slow"):
        time.sleep(float(os.environ.get("TEST_BUILD_SECONDS", "0")))
    return REAL_ARCHIVE(chat, *args, **kwargs)


def watch_between_waits(monkeypatch, archiver: Archiver, look: Any) -> None:
    """Call LOOK each time the pass comes back from waiting for builds (in this process)."""
    settle = archiver._settle

    def settle_then_look(*args: Any):
        result = settle(*args)
        look()
        return result
    monkeypatch.setattr(archiver, "_settle", settle_then_look)


def test_one_worker_keeps_its_claims_while_it_builds_a_long_queue(make_config, monkeypatch) -> None:
    config = make_config(archive__lease_seconds=2, archive__batch_size=4)
    chats = [make_chat(random.Random(i), messages=3, start_ms=recent_ms(), room=f"room-{i}-slow")
             for i in range(10)]
    seed(config, chats)
    archiver = Archiver(config)
    jobs, lapsed = index_db(config)[config["index.jobs"]], []
    monkeypatch.setenv("TEST_BUILD_SECONDS", "0.4")  # ten of these outlast the lease twice over
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)
    watch_between_waits(monkeypatch, archiver,
                        lambda: lapsed.extend(jobs.find({"state": "claimed", "available_at": {"$lt": now_ms()}})))
    assert archiver.run_pass().archived == 10
    assert lapsed == [], "no claim lapsed while the chats waited their turn"


def test_one_worker_renews_its_leases_while_a_build_outlasts_them(make_config, monkeypatch) -> None:
    config = make_config(archive__workers=1, archive__lease_seconds=2)
    rng = random.Random(3)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(), room="room-slow"),
             make_chat(rng, messages=3, start_ms=recent_ms())]
    seed(config, chats)
    archiver = Archiver(config)
    rival, tries, taken = queue_as(config, "rival"), [], []
    monkeypatch.setenv("TEST_BUILD_SECONDS", "5")  # two and a half leases
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)

    def rival_tries() -> None:  # a second worker polling for lapsed claims
        tries.append(1)
        taken.extend(rival.claim_batch(60, 100))
    watch_between_waits(monkeypatch, archiver, rival_tries)
    report = archiver.run_pass()
    assert taken == [] and len(tries) >= 6, "the rival looked all through the build and found nothing to take"
    assert report.ok and report.archived == 2 and report.leases_lost == []
    assert {job(config, c["room"])["state"] for c, _ in chats} == {"done"}


def test_a_lost_lease_leaves_the_chat_to_the_worker_that_took_it(make_config, monkeypatch) -> None:
    config = make_config(archive__lease_seconds=1, archive__batch_size=4)
    chats = [make_chat(random.Random(i), messages=3, start_ms=recent_ms(), room=f"room-{i}-slow") for i in range(8)]
    seed(config, chats)
    archiver = Archiver(config)
    taken: list = []
    # Builds slower than a renewal period (lease / 3), so the loss is noticed between two of them.
    monkeypatch.setenv("TEST_BUILD_SECONDS", "0.4")
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)

    def pause_and_lose_everything() -> None:
        if not taken:  # this worker stalls past its lease, and another takes every chat over
            expire_all_claims(config)
            taken.extend(queue_as(config, "other").claim_batch(60, 100))
    watch_between_waits(monkeypatch, archiver, pause_and_lose_everything)
    report = archiver.run_pass()
    # The builds already handed to the worker process (a pool queues one ahead) finish; the rest are left.
    assert len(taken) == 8 and 1 <= report.archived <= 2
    assert report.ok and len(report.leases_lost) == 8 - report.archived
    first = archived_rooms(config)
    assert {job(config, room)["owner"] for room in first} == {"other"}, "the taken-over jobs are not closed by us"
    monkeypatch.undo()
    expire_all_claims(config)  # "other" dies too; a third worker finishes
    again = Archiver(config).run_pass()
    assert again.archived == 8 - len(first) and again.unchanged == len(first)
    assert_each_archived_once_and_the_store_explained(config, [c["room"] for c, _ in chats])


def test_the_attempt_that_lost_the_entry_records_its_objects_as_superseded(mongo_uri, db_names) -> None:
    index = ArchiveIndex(connect(mongo_uri)[db_names["index.database"]]["entries"])
    index.ensure_indexes()
    (first,), _ = index.begin([("room-1", 1, "abc")])
    second = index.replan(first, ["room-1/v1/transcript-1.pdf.p7m"])  # first's lease ran out

    def built(tag: str) -> dict[str, Any]:
        return {"room": "room-1", "version": 1, "source_sha256": "abc", "message_count": 3,
                "objects": {"pdf": {"key": f"room-1/v1/transcript-{tag}.pdf.p7m"}}}
    assert index.complete([(first, built("late"), 1, "")], "first") == (["room-1"], {})
    assert index.complete([(second, built("2"), 2, "")], "second") == ([], {})
    (entry,) = index.entries.find({"room": "room-1"})
    assert entry["status"] == "archived" and entry["archived_by"] == "second"
    assert entry["objects"]["pdf"]["key"] == "room-1/v1/transcript-2.pdf.p7m"
    assert sorted(entry["superseded_objects"]) == ["room-1/v1/transcript-1.pdf.p7m", "room-1/v1/transcript-late.pdf.p7m"]


def test_an_entry_taken_over_is_never_dropped(mongo_uri, db_names) -> None:
    index = ArchiveIndex(connect(mongo_uri)[db_names["index.database"]]["entries"])
    (first,), _ = index.begin([("room-1", 1, "abc")])
    second = index.replan(first, [])  # nothing stored yet; then the new owner stops before building
    index.abandon(second)
    index.set_aside(first, ["room-1/v1/transcript-late.pdf.p7m"])  # the stalled first attempt stored something
    (entry,) = index.entries.find({"room": "room-1"})
    assert entry["superseded_objects"] == ["room-1/v1/transcript-late.pdf.p7m"]
    (fresh,), _ = index.begin([("room-2", 1, "def")])
    index.abandon(fresh)
    assert index.entries.count_documents({"room": "room-2"}) == 0, "an entry only we ever held is dropped"


def build_or_die(chat: dict[str, Any], *args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """In a worker process: a chat that kills the process building it (as the OOM killer would); and one
    that does so too, then never ends in processes started once TEST_HANG_BUILDS is set."""
    if multiprocessing.parent_process() is None:  # never kill the test run itself
        raise RuntimeError("built in the archiver's own process, not in a worker process")
    if chat["room"].endswith("-hang") and os.environ.get("TEST_HANG_BUILDS"):
        time.sleep(3600)
    if chat["room"].endswith(("-poison", "-hang")):
        os.kill(os.getpid(), signal.SIGKILL)
    return REAL_ARCHIVE(chat, *args, **kwargs)


def test_a_chat_that_kills_its_worker_fails_alone(make_config, monkeypatch) -> None:
    config = make_config(archive__workers=2, archive__max_attempts=2)
    rng = random.Random(5)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(7)]
    chats.insert(3, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-poison"))
    seed(config, chats)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)  # looked up by reference in the workers
    archiver = Archiver(config)
    report = archiver.run_pass()
    assert report.archived == 7
    assert archived_rooms(config) == sorted(c["room"] for c, _ in chats if c["room"] != "room-poison")
    assert report.failed == {"room-poison": WORKER_DIED} and not report.quarantined
    assert report.worker_deaths == 2, "once in the pool, once alone"
    assert job(config, "room-poison")["state"] == "failed"
    index_db(config)[config["index.jobs"]].update_one({"_id": "room-poison"}, {"$set": {"available_at": 0}})
    report = archiver.run_pass()
    assert report.quarantined == {"room-poison": f"gave up after 2 attempts: {WORKER_DIED}"}
    # The poison's entry stays `uploading`: a worker that died mid-put may have stored part of it.
    assert_each_archived_once_and_the_store_explained(
        config, [c["room"] for c, _ in chats if c["room"] != "room-poison"], unfinished=["room-poison"])


def test_stopping_after_a_worker_died_hands_its_chats_back(make_config, monkeypatch) -> None:
    config = make_config(archive__workers=2)
    rng = random.Random(6)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(5)]
    chats.insert(2, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-poison"))
    seed(config, chats)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver = Archiver(config)
    rebuild_alone = archiver._rebuild_alone

    def stop_then_rebuild(*args: Any, **kwargs: Any):
        archiver.stop.set()  # SIGTERM arrives just as the worker dies
        return rebuild_alone(*args, **kwargs)
    monkeypatch.setattr(archiver, "_rebuild_alone", stop_then_rebuild)
    report = archiver.run_pass()
    assert report.ok and report.worker_deaths == 1
    handed_back = [job(config, c["room"]) for c, _ in chats if c["room"] not in archived_rooms(config)]
    assert handed_back and {(j["state"], j["attempts"]) for j in handed_back} == {("pending", 0)}
    monkeypatch.undo()  # the next worker builds every chat, the poisoned one included
    assert Archiver(config).run_pass().archived == len(handed_back)
    assert_each_archived_once_and_the_store_explained(config, [c["room"] for c, _ in chats])


def test_a_chat_that_kills_the_only_worker_is_quarantined(make_config, monkeypatch) -> None:
    config = make_config(archive__workers=1, archive__max_attempts=2)
    rng = random.Random(7)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3)]
    chats.insert(1, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-poison"))
    seed(config, chats)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver = Archiver(config)
    report = archiver.run_pass()
    assert report.failed == {"room-poison": WORKER_DIED} and report.archived == 3
    assert report.worker_deaths == 2, "once in the pass's worker process, once alone"
    index_db(config)[config["index.jobs"]].update_one({"_id": "room-poison"}, {"$set": {"available_at": 0}})
    report = archiver.run_pass()
    assert report.quarantined == {"room-poison": f"gave up after 2 attempts: {WORKER_DIED}"}
    assert job(config, "room-poison")["state"] == "quarantined"


def test_an_export_whose_chat_kills_its_worker_is_quarantined(make_config, monkeypatch) -> None:
    config = make_config(archive__max_attempts=2)
    rng = random.Random(8)
    good = make_chat(rng, messages=3, start_ms=recent_ms())
    seed(config, [good, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-poison")])
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver = Archiver(config)
    report, plain = archiver.archive_room("room-poison", "ended")
    assert report.failed == {"room-poison": WORKER_DIED} and report.worker_deaths == 1 and plain is None
    report, plain = archiver.archive_room("room-poison", "ended")
    assert report.quarantined == {"room-poison": f"gave up after 2 attempts: {WORKER_DIED}"} and plain is None
    report, plain = archiver.archive_room(good[0]["room"], "ended")
    (entry,) = entries(config, room=good[0]["room"])
    assert report.archived == 1 and plain is not None
    assert hashlib.sha256(plain.pdf).hexdigest() == entry["objects"]["pdf"]["plaintext_sha256"], \
        "the plaintext handed back is the one archived"


def test_a_rebuild_that_never_ends_is_stopped_and_the_pass_goes_on(make_config, monkeypatch) -> None:
    config = make_config(archive__workers=1, archive__build_timeout_seconds=10, archive__lease_seconds=1)
    rng = random.Random(9)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3)]
    chats.insert(1, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-hang"))
    seed(config, chats)
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver = Archiver(config)
    rebuild_alone = archiver._rebuild_alone

    def hang_from_now_on(*args: Any, **kwargs: Any):  # the chat killed its worker; built again alone, it hangs
        monkeypatch.setenv("TEST_HANG_BUILDS", "1")
        return rebuild_alone(*args, **kwargs)
    monkeypatch.setattr(archiver, "_rebuild_alone", hang_from_now_on)
    started = time.monotonic()
    report = archiver.run_pass()
    assert time.monotonic() - started < 60, report
    assert report.failed == {"room-hang": "the build did not finish within 10 seconds; its worker process was stopped"}
    assert report.archived == 3 and report.worker_deaths == 1
    assert report.leases_lost == [], "leases were renewed while the rebuild hung"
    assert job(config, "room-hang")["state"] == "failed"


def kill_every_pool() -> None:
    """Kill the worker processes of every pool of this process (to unstick a pass a test found stuck)."""
    for pool in [p for p in gc.get_objects() if isinstance(p, cf.ProcessPoolExecutor)]:
        for process in list((pool._processes or {}).values()):
            process.kill()


def test_a_build_that_never_ends_in_the_pool_is_stopped_and_the_pass_goes_on(make_config, monkeypatch,
                                                                              caplog) -> None:
    """The first build of a chat hangs (not only a rebuild): the pass stops it after
    archive.build_timeout_seconds, archives the others and fails that chat, instead of waiting forever."""
    config = make_config(archive__workers=2, archive__build_timeout_seconds=4, archive__lease_seconds=2,
                         archive__max_attempts=2)
    rng = random.Random(10)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(5)]
    chats.insert(2, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-hang"))
    seed(config, chats)
    monkeypatch.setenv("TEST_HANG_BUILDS", "1")  # from the first build on
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver = Archiver(config)
    outcome: list[Any] = []
    passing = threading.Thread(target=lambda: outcome.append(archiver.run_pass()), daemon=True)
    started = time.monotonic()
    passing.start()
    passing.join(90)
    if passing.is_alive():  # unstick it, so the suite goes on, and fail
        kill_every_pool()
        passing.join(30)
        raise AssertionError("the pass was still waiting for the build after 90 seconds")
    (report,) = outcome
    timed_out = "the build did not finish within 4 seconds; its worker process was stopped"
    assert report.failed == {"room-hang": timed_out}, report
    assert report.archived == 5 and report.worker_deaths == 0 and report.leases_lost == [], report
    assert "build_overdue" in caplog.text and "worker_died" not in caplog.text
    assert time.monotonic() - started < 60
    assert job(config, "room-hang")["state"] == "failed"
    assert_each_archived_once_and_the_store_explained(config, [c["room"] for c, _ in chats if c["room"] != "room-hang"],
                                                      unfinished=["room-hang"])


def test_a_slow_build_within_the_bound_is_not_stopped(make_config, monkeypatch, caplog) -> None:
    """The bound is counted per build: chats queued behind a slow one are not stopped for its time."""
    config = make_config(archive__workers=1, archive__build_timeout_seconds=3)
    rng = random.Random(11)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(), room=f"room-{i}-slow") for i in range(3)]
    seed(config, chats)
    monkeypatch.setenv("TEST_BUILD_SECONDS", "2")
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)
    report = Archiver(config).run_pass()
    assert report.archived == 3 and report.ok and report.worker_deaths == 0, report
    assert "build_overdue" not in caplog.text


def build_slowly_or_hang(chat: dict[str, Any], *args: Any, **kwargs: Any) -> artifacts.Artifacts:
    """build_slowly, and a room named *-hang never ends."""
    if chat["room"].endswith("-hang"):
        time.sleep(3600)
    return build_slowly(chat, *args, **kwargs)


def test_chats_built_or_waiting_keep_their_leases_while_a_hanging_chat_is_rebuilt(make_config, monkeypatch) -> None:
    """The rebuild alone of a hanging chat lasts the whole bound, longer than a lease: the chats already
    built are indexed before it, and those still in flight keep their leases, so no other archiver takes
    them over meanwhile."""
    config = make_config(archive__workers=2, archive__build_timeout_seconds=3, archive__lease_seconds=1,
                         archive__batch_size=200, archive__max_attempts=2)
    rng = random.Random(12)
    chats = [make_chat(rng, messages=3, start_ms=recent_ms(), room=f"room-{i:03d}-slow") for i in range(40)]
    chats.insert(0, make_chat(rng, messages=3, start_ms=recent_ms(), room="room-hang"))
    seed(config, chats)
    monkeypatch.setenv("TEST_BUILD_SECONDS", "0.15")
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly_or_hang)
    archiver, rival, taken = Archiver(config), queue_as(config, "rival"), []
    await_alone = archiver._await_alone

    def await_then_look(p: Any, report: Any, waiting: Any = ()) -> bool:
        done = await_alone(p, report, waiting)
        if p.job.room == "room-hang":  # its rebuild timed out: more than a lease since the pool was killed
            taken.extend(j.room for j in rival.claim_batch(60, 1000))
        return done
    monkeypatch.setattr(archiver, "_await_alone", await_then_look)
    report = archiver.run_pass()
    assert taken == [], "another archiver took over chats this pass had claimed"
    assert report.archived == 40 and report.leases_lost == [] and set(report.failed) == {"room-hang"}, report
    assert_each_archived_once_and_the_store_explained(config, [c["room"] for c, _ in chats[1:]],
                                                      unfinished=["room-hang"])


def _failover_once_building(monkeypatch, archiver: Archiver, failed_at: list[float]) -> None:
    """The primary steps down a second after the first lease renewal (the build under way by then): every
    later renewal raises, as the pass's renewals of a hanging build's lease will."""
    renew = archiver.queue.renew
    renewed: list[float] = []

    def renew_or_fail(rooms: list[str], lease: int) -> list[str]:
        renewed.append(time.monotonic())
        if time.monotonic() - renewed[0] < 1:
            return renew(rooms, lease)
        failed_at.append(time.monotonic())
        raise AutoReconnect("127.0.0.1:27017: connection closed (primary stepped down)")
    monkeypatch.setattr(archiver.queue, "renew", renew_or_fail)


def _ended_after_failure(run: Any, failed_at: list[float]) -> tuple[BaseException | None, float]:
    """What RUN raised, and how long after the first failure in FAILED_AT it ended. A run still going after
    10 s (stuck waiting for a hanging build) is unstuck, so that the suite goes on, and the test fails."""
    outcome: list[tuple[BaseException | None, float]] = []

    def call() -> None:
        try:
            run()
        except BaseException as exc:
            outcome.append((exc, time.monotonic() - failed_at[0]))
        else:
            outcome.append((None, 0.0))
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)  # the failure comes after two or three seconds
    stuck = thread.is_alive()
    if stuck:
        kill_every_pool()
        thread.join(30)
    assert not stuck, "the error raised out of the pass waited for the hanging build (for ever)"
    return outcome[0]


def test_a_pass_an_outage_ends_while_a_build_hangs_ends_at_once_and_hands_its_claims_back(
        make_config, monkeypatch) -> None:
    """archive.build_timeout_seconds is enforced while the pass waits for builds. An error raised out of the
    pass (a primary stepping down as leases are renewed, a bug) shut the worker processes down waiting for the
    hanging build with no bound: the pass never ended, its claims were never handed back, `serve` skipped every
    later pass and could not stop. Those processes are killed instead, and the next attempt goes on."""
    config = make_config(archive__workers=1, archive__build_timeout_seconds=600, archive__lease_seconds=3)
    seed(config, [make_chat(random.Random(13), messages=3, start_ms=recent_ms(), room="room-1-slow")])
    monkeypatch.setenv("TEST_BUILD_SECONDS", "3600")  # a renderer stuck on hostile input
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)
    archiver, failed_at = Archiver(config), []
    _failover_once_building(monkeypatch, archiver, failed_at)
    raised, seconds = _ended_after_failure(archiver.run_pass, failed_at)
    assert isinstance(raised, AutoReconnect) and seconds < 5, (raised, seconds)
    assert (job(config, "room-1-slow")["state"], job(config, "room-1-slow").get("lapses") or 0) == ("pending", 0)
    assert [e["status"] for e in entries(config)] == ["uploading"], "left as a crash leaves it"
    monkeypatch.undo()
    report = Archiver(config).run_pass()
    assert report.archived == 1 and report.ok, report
    assert_each_archived_once_and_the_store_explained(config, ["room-1-slow"])


def test_an_export_an_outage_ends_while_its_build_hangs_ends_at_once(make_config, monkeypatch) -> None:
    """The same for an on-demand export, whose build runs alone."""
    config = make_config(archive__build_timeout_seconds=600, archive__lease_seconds=3)
    seed(config, [make_chat(random.Random(14), messages=3, start_ms=recent_ms(), room="room-2-slow")])
    monkeypatch.setenv("TEST_BUILD_SECONDS", "3600")
    monkeypatch.setattr(artifacts, "archive_in_worker", build_slowly)
    archiver, failed_at = Archiver(config), []
    _failover_once_building(monkeypatch, archiver, failed_at)
    raised, seconds = _ended_after_failure(lambda: archiver.archive_room("room-2-slow", "ended"), failed_at)
    assert isinstance(raised, AutoReconnect) and seconds < 5, (raised, seconds)
    assert job(config, "room-2-slow")["state"] == "pending"


def test_a_pass_an_outage_ends_while_a_rebuild_hangs_ends_at_once(make_config, monkeypatch) -> None:
    """The same while a chat that killed its worker is built again alone, and that rebuild hangs."""
    config = make_config(archive__workers=1, archive__build_timeout_seconds=600, archive__lease_seconds=3)
    seed(config, [make_chat(random.Random(15), messages=3, start_ms=recent_ms(), room="room-hang")])
    monkeypatch.setattr(artifacts, "archive_in_worker", build_or_die)
    archiver, failed_at = Archiver(config), []
    rebuild_alone = archiver._rebuild_alone

    def hang_then_fail_over(*args: Any, **kwargs: Any):
        monkeypatch.setenv("TEST_HANG_BUILDS", "1")
        _failover_once_building(monkeypatch, archiver, failed_at)
        return rebuild_alone(*args, **kwargs)
    monkeypatch.setattr(archiver, "_rebuild_alone", hang_then_fail_over)
    raised, seconds = _ended_after_failure(archiver.run_pass, failed_at)
    assert isinstance(raised, AutoReconnect) and seconds < 5, (raised, seconds)
    assert job(config, "room-hang")["state"] == "pending"

"""`serve` keeps one pool of worker processes across passes; a broken one is replaced, stop ends it."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from archiver.jobs import Service
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from test_pipeline import archived_rooms, recent_ms, seed


def _workers(archiver: Archiver) -> set[int]:
    assert archiver._kept is not None, "no worker processes kept after the pass"
    return set(archiver._kept._processes)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _gone(pids: set[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def _keeping_workers(config) -> Iterator[Archiver]:
    """An archiver that keeps its worker processes between passes (as serve does); once closed, none is left."""
    archiver = Archiver(config)
    archiver.keep_workers = True
    try:
        yield archiver
    finally:
        kept = set(archiver._kept._processes) if archiver._kept else set()
        archiver.close()
    assert archiver._kept is None and _gone(kept), "close() left worker processes running"


def test_passes_share_their_worker_processes_and_a_broken_pool_is_replaced(make_config) -> None:
    config = make_config(archive__workers=2)
    rng = random.Random(31)
    with _keeping_workers(config) as archiver:
        seed(config, [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3)])
        assert archiver.run_pass().archived == 3
        first = _workers(archiver)
        seed(config, [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3)])
        assert archiver.run_pass().archived == 3
        assert _workers(archiver) == first, "the second pass started new worker processes"
        os.kill(next(iter(first)), signal.SIGKILL)  # dies between passes (the OOM killer, say)
        time.sleep(1)
        seed(config, [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(3)])
        report = archiver.run_pass()
        assert report.archived == 3 and not report.failed and report.worker_deaths == 0
        assert not _workers(archiver) & first, "the broken pool was used again"
        assert len(archived_rooms(config)) == 9


def test_a_pass_without_keep_workers_leaves_no_worker_processes(make_config) -> None:
    config = make_config(archive__workers=1)
    seed(config, [make_chat(random.Random(32), messages=3, start_ms=recent_ms())])
    archiver = Archiver(config)
    assert archiver.run_pass().archived == 1 and archiver._kept is None


def test_the_service_keeps_workers_and_a_stopped_pass_does_not(make_config) -> None:
    config = make_config(archive__workers=1)
    seed(config, [make_chat(random.Random(33), messages=3, start_ms=recent_ms())])
    stop = threading.Event()
    service = Service(config, stop)
    try:
        service.archive_pass()
        assert service.last_error == "" and service.archiver._kept is not None
        kept = _workers(service.archiver)
        stop.set()  # SIGTERM: the pass hands its pool back rather than keeping it
        service.archive_pass()
        assert service.archiver._kept is None and _gone(kept)
    finally:
        service.archiver.close()


def test_worker_processes_leave_interrupts_to_the_archiver(make_config) -> None:
    """Ctrl-C reaches the workers too (the terminal's whole process group): they must keep building the
    chats in hand while the archiver finishes them and stops (one that died of it left its chat uploading)."""
    config = make_config(archive__workers=2)
    rng = random.Random(32)
    with _keeping_workers(config) as archiver:
        seed(config, [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(2)])
        assert archiver.run_pass().archived == 2
        workers = _workers(archiver)
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        time.sleep(1)
        assert all(_alive(pid) for pid in workers), "a worker process died of a signal meant for the archiver"
        seed(config, [make_chat(rng, messages=3, start_ms=recent_ms()) for _ in range(2)])
        report = archiver.run_pass()
        assert report.archived == 2 and report.worker_deaths == 0 and _workers(archiver) == workers

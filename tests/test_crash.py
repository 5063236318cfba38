"""Real processes against a shared MongoDB endpoint (nx-27017, or ARCHIVER_TEST_MONGODB_URI).

A pass is SIGKILLed half-way (with its worker processes, as an OOM kill or a
lost container would), then run again: every ended chat must end up archived
exactly once, and every object in the store must be accounted for by the index.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from archiver.samples import make_chat
from conftest import write_toml

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def _seed(uri: str, database: str, count: int, messages: int = 20) -> list[str]:
    rng = random.Random(42)
    now_ms = time.time() * 1000
    chats = [make_chat(rng, messages=messages, start_ms=now_ms - 600_000) for _ in range(count)]
    db = pymongo.MongoClient(uri)[database]
    db.chats.insert_many([c for c, _ in chats])
    db.contacts.insert_many([k for _, k in chats])
    return [c["room"] for c, _ in chats]


def _config(tmp_path: Path, uri: str, db_names: dict[str, str], keys: dict[str, Path], **extra) -> Path:
    return write_toml(tmp_path / "archiver.toml", {
        "mongodb.uri": uri,
        "storage.url": f"file://{tmp_path / 'store'}",
        "signing.certificate": str(keys["signing.crt.pem"]),
        "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"])],
        "logging.level": "WARNING",
        **db_names,
        **extra,
    })


def _archived(uri: str, db_names: dict[str, str]) -> pymongo.collection.Collection:
    return pymongo.MongoClient(uri)[db_names["index.database"]]["archive_index"]


def _assert_each_archived_once(uri: str, db_names: dict[str, str], rooms: list[str], store: Path) -> None:
    entries = list(_archived(uri, db_names).find())
    archived = [e for e in entries if e["status"] == "archived"]
    assert sorted(e["room"] for e in archived) == sorted(rooms), "each room archived exactly once"
    assert [e for e in entries if e["status"] != "archived"] == []
    jobs = pymongo.MongoClient(uri)[db_names["index.database"]]["archive_jobs"]
    assert {j["state"] for j in jobs.find()} == {"done"}
    referenced = set()
    for entry in archived:
        for obj in entry["objects"].values():
            assert hashlib.sha256((store / obj["key"]).read_bytes()).hexdigest() == obj["sha256"]
            referenced.add(obj["key"])
        referenced.update(entry.get("superseded_objects", []))
    on_disk = {p.relative_to(store).as_posix() for p in store.rglob("*.p7m")}
    assert on_disk <= referenced, f"objects nobody accounts for: {sorted(on_disk - referenced)[:5]}"


def test_sigkill_half_way_then_rerun_archives_each_chat_once(nx_uri, keys, tmp_path, db_names) -> None:
    rooms = _seed(nx_uri, db_names["source.database"], 120)
    config = _config(tmp_path, nx_uri, db_names, keys, **{"archive.workers": 2, "archive.lease_seconds": 3})
    first = subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    entries = _archived(nx_uri, db_names)
    deadline = time.monotonic() + 180
    while entries.count_documents({"status": "archived"}) < 30:
        assert first.poll() is None, f"the pass ended before it could be killed: {first.stderr.read()!r}"
        assert time.monotonic() < deadline, "no progress within 3 minutes"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = entries.count_documents({"status": "archived"})
    assert done_before < len(rooms), "the kill came too late to test anything"

    time.sleep(3)  # the killed worker's leases run out
    second = subprocess.run([ARCHIVER, "--config", str(config), "run", "--no-progress"],
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_each_archived_once(nx_uri, db_names, rooms, tmp_path / "store")
    again = subprocess.run([ARCHIVER, "--config", str(config), "run", "--no-progress", "--full"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "archived 0," in again.stdout


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whatever PID 1 is, maybe never)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_processes_do_not_outlive_a_killed_archiver(nx_uri, keys, tmp_path, db_names) -> None:
    rooms = _seed(nx_uri, db_names["source.database"], 600)  # a pass of seconds: its workers are there to see
    config = _config(tmp_path, nx_uri, db_names, keys, **{"archive.workers": 2, "archive.lease_seconds": 2})
    main = subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    entries = _archived(nx_uri, db_names)
    deadline = time.monotonic() + 120
    while True:  # some chats archived, and both workers seen at work (a fast machine ended 60 chats' pass first)
        assert main.poll() is None and time.monotonic() < deadline, "no progress, or no two workers seen"
        # Workers are forked by the archiver's fork server (multiprocessing's forkserver), its child.
        servers = [pid for pid in _children(main.pid) if "forkserver" in Path(f"/proc/{pid}/cmdline").read_text()]
        workers = [pid for server in servers for pid in _children(server)]
        if len(workers) == 2 and entries.count_documents({"status": "archived"}) >= 5:
            break
        time.sleep(0.05)
    assert len(servers) == 1
    workers += servers  # the fork server goes too
    main.kill()  # the main process only, as an OOM kill would pick it
    main.wait()
    deadline = time.monotonic() + 30  # they notice within a second, then finish any fsync in progress
    while any(_running(pid) for pid in workers):
        if time.monotonic() > deadline:
            for pid in filter(_running, workers):
                os.kill(pid, signal.SIGKILL)
            pytest.fail("worker processes outlived their archiver")
        time.sleep(0.1)
    time.sleep(2)  # the leases run out
    rerun = subprocess.run([ARCHIVER, "--config", str(config), "run", "--no-progress"], capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_each_archived_once(nx_uri, db_names, rooms, tmp_path / "store")


@pytest.mark.parametrize("workers", [2, 3])
def test_concurrent_workers_archive_each_of_5000_chats_once(workers, nx_uri, keys, tmp_path, db_names) -> None:
    rooms = _seed(nx_uri, db_names["source.database"], 5000, messages=4)
    config = _config(tmp_path, nx_uri, db_names, keys, **{"archive.workers": 1})
    procs = [subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    outputs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, outputs
    counts = [int(out.split("archived ")[1].split(",")[0]) for out, _ in outputs]
    assert sum(counts) == len(rooms) and min(counts) > 0, f"each worker's share: {counts}"
    _assert_each_archived_once(nx_uri, db_names, rooms, tmp_path / "store")
    assert len(list((tmp_path / "store").rglob("*.p7m"))) == 3 * len(rooms), "nothing built twice"


@pytest.mark.slow
def test_a_chat_that_keeps_killing_the_archiver_is_quarantined_alone(nx_uri, keys, tmp_path, db_names) -> None:
    """A chat whose handling kills the archiver's main process (an OOM kill: it holds every chat in flight)
    was claimed again after every lease, for ever, its batch-mates with it; nothing quarantined it."""
    rooms = _seed(nx_uri, db_names["source.database"], 12, messages=6)
    poison = _seed_poison(nx_uri, db_names["source.database"])
    config = _config(tmp_path, nx_uri, db_names, keys, **{
        "archive.workers": 1, "archive.lease_seconds": 2, "archive.batch_size": 4, "archive.max_attempts": 1})
    jobs = pymongo.MongoClient(nx_uri)[db_names["index.database"]]["archive_jobs"]
    kills = 0
    for _ in range(8):
        run = subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"], start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while run.poll() is None:  # the poison chat kills the archiver as soon as it is taken in hand
            held = jobs.find_one({"_id": poison, "state": "claimed"})
            if held and held["owner"].split(":")[1] == str(run.pid):
                os.killpg(run.pid, signal.SIGKILL)
                kills += 1
                break
            assert time.monotonic() < deadline, "the run neither took the chat nor ended"
            time.sleep(0.005)
        run.wait()
        if run.returncode != -signal.SIGKILL:
            break
        time.sleep(2.5)  # its leases run out
    out, err = run.communicate()
    assert run.returncode == 1 and "quarantined 1" in out, out + err
    # Twice with its batch in hand, then max_attempts times alone; then quarantined without being taken again.
    assert kills == 3
    job = jobs.find_one({"_id": poison})
    assert job["state"] == "quarantined" and job["reason"].startswith(
        "the archiver died (or stalled past its lease) 3 times while holding this chat, the last 1 of them")
    assert jobs.count_documents({"state": "quarantined"}) == 1, "no batch-mate of the poison chat is quarantined"
    assert sorted(e["room"] for e in _archived(nx_uri, db_names).find({"status": "archived"})) == sorted(rooms)


def _seed_poison(uri: str, database: str) -> str:
    """A chat long enough that the watcher sees it claimed before its build ends."""
    chat, contact = make_chat(random.Random(7), messages=400, start_ms=time.time() * 1000 - 900_000, room="POISON")
    db = pymongo.MongoClient(uri)[database]
    db.chats.insert_one(chat)
    db.contacts.insert_one(contact)
    return chat["room"]


@pytest.mark.slow
def test_a_sigstopped_archiver_cannot_archive_a_chat_another_quarantined_meanwhile(nx_uri, keys, tmp_path,
                                                                                    db_names) -> None:
    """A (a real process) holds a chat claimed alone and building when it is SIGSTOPped past its lease; B gives
    up on the chat and quarantines it; A is continued: it completed the entry, an archived version of a
    quarantined chat (tests/test_stalls.py has the same in one process)."""
    from archiver.claims import ALONE_AFTER

    chat, contact = make_chat(random.Random(9), messages=1500, start_ms=time.time() * 1000 - 900_000, room="SLOW")
    db = pymongo.MongoClient(nx_uri)[db_names["source.database"]]
    db.chats.insert_one(chat)
    db.contacts.insert_one(contact)
    jobs = pymongo.MongoClient(nx_uri)[db_names["index.database"]]["archive_jobs"]
    jobs.insert_one({"_id": "SLOW", "state": "failed", "kind": "ended", "attempts": ALONE_AFTER, "last_error": "",
                     "lapses": ALONE_AFTER, "available_at": 0})  # its archiver died with it in hand twice
    config = _config(tmp_path, nx_uri, db_names, keys, **{
        "archive.workers": 1, "archive.lease_seconds": 2, "archive.max_attempts": 1})
    entries = _archived(nx_uri, db_names)
    a = subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"], start_new_session=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while entries.find_one({"room": "SLOW", "status": "uploading"}) is None:  # begun: its build about to start
        assert a.poll() is None and time.monotonic() < deadline, "A neither began the chat nor ran on"
        time.sleep(0.005)
    time.sleep(0.05)  # handed to the worker, mostly: the build itself takes over 0.1 s of CPU
    os.killpg(a.pid, signal.SIGSTOP)  # with its worker process
    try:
        assert entries.find_one({"room": "SLOW"})["status"] == "uploading", "A finished before it was stopped"
        time.sleep(2.5)  # A's lease runs out
        b = subprocess.run([ARCHIVER, "--config", str(config), "run", "--no-progress"], capture_output=True,
                           text=True, timeout=300)
        assert b.returncode == 1 and "quarantined 1" in b.stdout, b.stdout + b.stderr
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0 and "archived 0" in out, out + err
    assert jobs.find_one({"_id": "SLOW"})["state"] == "quarantined"
    [entry] = entries.find({"room": "SLOW"})
    assert entry["status"] == "superseded", "no archive of a quarantined chat"
    on_disk = {p.relative_to(tmp_path / "store").as_posix() for p in (tmp_path / "store").rglob("*.p7m")}
    assert on_disk <= set(entry["superseded_objects"]), "what A stored is set aside on the entry"
    if not on_disk:  # stopped (on a loaded machine) before it handed the chat to its worker: dropped on waking
        assert "left to other workers after this one's lease ran out" in out, out + err

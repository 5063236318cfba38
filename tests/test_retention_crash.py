"""A real `archiver retention run` SIGKILLed half-way, then run again, against nx-27017.

The final state (source, index, store) and the report must be those of an uninterrupted
run over an identical archive, and nothing may be deleted twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo

from archiver import config as config_module
from conftest import write_toml
from retention import fabricate  # bench/retention.py: archived chats without rendering them

ARCHIVER = str(Path(sys.executable).parent / "archiver")
CHATS = 150
RULES = '\n[retention.rules.default]\nsource_days = 30\narchive_days = 365\n'


def _dataset(tmp_path: Path, uri: str, keys: dict[str, Path], tag: str) -> Path:
    values = {"mongodb.uri": uri, "source.database": f"src_{tag}", "index.database": f"idx_{tag}",
              "storage.url": f"file://{tmp_path / ('store_' + tag)}", "storage.object_lock_mode": "",
              "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
              "encryption.recipients": [str(keys["legal.crt.pem"])], "logging.level": "WARNING"}
    toml = write_toml(tmp_path / f"{tag}.toml", values)
    toml.write_text(toml.read_text() + RULES)
    config = config_module.load(toml, environ={})
    fabricate(config, CHATS, days_old=400, messages=4,
              object_bytes={"pdf": 2000, "record": 1000, "record_signature": 500})
    db = pymongo.MongoClient(uri)[f"src_{tag}"]
    db["chats"].create_index("room")  # as `archiver indexes --create` would
    return toml


def _run(toml: Path) -> dict:
    done = subprocess.run([ARCHIVER, "--config", str(toml), "retention", "run", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])


def _state(uri: str, tag: str, store: Path) -> tuple:
    index = pymongo.MongoClient(uri)[f"idx_{tag}"]["archive_index"]
    entries = sorted((e["room"], e["status"], e["deletion"]["state"], e["deletion"]["rule"], e["deletion"]["run"])
                     for e in index.find())
    left = sorted(p.relative_to(store).as_posix() for p in store.rglob("*.p7m"))
    return pymongo.MongoClient(uri)[f"src_{tag}"]["chats"].count_documents({}), entries, left


def test_sigkill_half_way_then_again_gives_the_uninterrupted_state_and_report(nx_uri, keys, tmp_path) -> None:
    killed, whole = (_dataset(tmp_path, nx_uri, keys, tag) for tag in ("killed", "whole"))
    chats = pymongo.MongoClient(nx_uri)["src_killed"]["chats"]
    first = subprocess.Popen([ARCHIVER, "--config", str(killed), "retention", "run"], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while chats.count_documents({}) > CHATS - 40:
        assert first.poll() is None, f"the run ended before it could be killed: {first.stderr.read()!r}"
        assert time.monotonic() < deadline, "no deletion within 5 minutes"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert chats.count_documents({}) > 0, "the kill came too late to test anything"

    resumed = _run(killed)
    reference = _run(whole)
    assert resumed["run"] != reference["run"]
    for key in ("counts", "items", "rooms_affected", "policy"):
        assert resumed[key] == reference[key], key
    assert reference["counts"] == {"default": {"delete_source:deleted": CHATS, "delete_archive:deleted": CHATS}}
    (sources_k, entries_k, left_k), (sources_w, entries_w, left_w) = (
        _state(nx_uri, "killed", tmp_path / "store_killed"), _state(nx_uri, "whole", tmp_path / "store_whole"))
    assert sources_k == sources_w == 0 and left_k == left_w == []
    assert [e[:4] for e in entries_k] == [e[:4] for e in entries_w]
    assert {e[4] for e in entries_k} == {resumed["run"]}, "each archive deleted once, by the one run"
    runs = pymongo.MongoClient(nx_uri)["idx_killed"]["retention_runs"]
    assert [r["_id"] for r in runs.find({"kind": "retention"})] == [resumed["run"]]
    audit = pymongo.MongoClient(nx_uri)["idx_killed"]["archive_audit"]
    assert [a["filters"]["run"] for a in audit.find({"action": "retention_run"})] == [resumed["run"]]
    assert _run(killed)["items"] == [], "a third run finds nothing left to do"

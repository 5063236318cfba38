"""Benchmark: one retention run over N eligible chats (source and archive both due).

Seeds N chats (30 messages) into the source and, for each, an archived index entry
whose three objects (random bytes of realistic size) are in a local store, with the
source digest the archiver computes, so every chat is verified (`check_stored`) and
deleted in the source and the archive by one run. MongoDB is nx-27017 in its own
process (or --mongodb-uri). Prints the run's time, its counts, this process's peak
RSS, and the first items of the report.

    python bench/retention.py --chats 10000

--report-only ITEMS measures the report alone: a finished run of ITEMS steps
(deleted chats, two steps each) is written straight into the ledger, then the
run's report is made, signed and stored; prints the time and this process's
peak RSS before and after (run it from another tree's copy to compare).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import random
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bson import ObjectId

from archiver import config as config_module
from archiver.artifacts import OBJECTS, configured_identity
from archiver.audit import Actor
from archiver.config import Config
from archiver.keys import create_development_keys
from archiver.logs import configure
from archiver.mongo import connect
from archiver.names import version_folder
from archiver.redaction import Redactor
from archiver.render.record import source_digest
from archiver.retention import Deletions
from archiver.runs import Step
from archiver.signing import Signer
from archiver.samples import make_chat
from archiver.store import open_store, store_location

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxserver import start_nx  # noqa: E402

OBJECT_BYTES = {"pdf": 60_000, "record": 25_000, "record_signature": 3_000}  # about a 30-message chat
RULES = {"default": {"source_days": 30, "archive_days": 365}}


def bench_config(work: Path, uri: str, tag: str = "") -> Config:
    keys = create_development_keys(work / "keys") if not (work / "keys").exists() else {
        name: work / "keys" / name for name in ("signing.crt.pem", "signing.key.pem", "legal.crt.pem")}
    tag = tag or uuid.uuid4().hex[:8]
    return config_module.load(None, environ={}).with_overrides(**{
        "mongodb.uri": uri, "source.database": f"src_{tag}", "index.database": f"idx_{tag}",
        "storage.url": f"file://{work / ('store-' + tag)}", "storage.object_lock_mode": "",
        "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"])], "retention.rules": RULES,
        "logging.level": "WARNING"})


def fabricate(config: Config, count: int, days_old: float, rng_seed: int = 1, messages: int = 30,
              object_bytes: dict[str, int] | None = None) -> list[str]:
    """COUNT chats in the source, each archived DAYS_OLD days ago (objects in the store); their rooms."""
    rng = random.Random(rng_seed)
    sizes = object_bytes or OBJECT_BYTES
    redactor = Redactor.from_config(config)
    store = open_store(config)
    src = connect(config["mongodb.uri"])[config["source.database"]]
    idx = connect(config["mongodb.uri"])[config["index.database"]]
    archived_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=days_old)
    rooms = []
    for start in range(0, count, 500):
        chats, contacts, entries, jobs = [], [], [], []
        for _ in range(min(500, count - start)):
            chat, contact = make_chat(rng, messages=messages, start_ms=archived_at.timestamp() * 1000 - 600_000)
            contact = {"_id": ObjectId(), **contact}  # as MongoDB returns it: the digest covers _id, in order
            redacted = redactor.apply(chat, contact)
            entries.append(_entry(chat, contact, source_digest(redacted.chat, redacted.contact), archived_at,
                                  _objects(store, chat["room"], rng, sizes), store_location(store)))
            chats.append(chat)
            contacts.append(contact)
            jobs.append({"_id": chat["room"], "state": "done", "kind": "ended", "attempts": 1, "last_error": ""})
            rooms.append(chat["room"])
        src[config["source.chats"]].insert_many(chats)
        src[config["source.contacts"]].insert_many(contacts)
        idx[config["index.entries"]].insert_many(entries)
        idx[config["index.jobs"]].insert_many(jobs)
    return rooms


def _objects(store: Any, room: str, rng: random.Random, sizes: dict[str, int]) -> dict[str, dict[str, Any]]:
    objects = {}
    for name in OBJECTS:
        data = rng.randbytes(sizes[name])
        digest = hashlib.sha256(data).hexdigest()
        key = f"{version_folder(room, 1)}/{name}-{digest[:16]}.p7m"
        store.put(key, data, digest, None)
        objects[name] = {"key": key, "sha256": digest, "size": len(data), "version_id": ""}
    return objects


def _entry(chat: dict[str, Any], contact: dict[str, Any], digest: str, archived_at: dt.datetime,
           objects: dict[str, Any], store: dict[str, str]) -> dict[str, Any]:
    users = [m["data"]["content"]["user"] for m in chat["messages"]]
    return {"room": chat["room"], "version": 1, "status": "archived", "source_sha256": digest,
            "ctlive_type": chat["ctlive_type"], "channel": "web", "service": contact["serv_name"],
            "customers": sorted({u["id"] for u in users if not u["isAgent"]}),
            "agents": sorted({u["id"] for u in users if u["isAgent"]}),
            "objects": objects, "archived_at": archived_at, "generated_at": archived_at,
            "retain_until": archived_at + dt.timedelta(days=30), "store": store}


def report_only(config: Config, items: int) -> None:
    """A finished run of ITEMS steps in the ledger, then its report made, signed and stored (timed)."""
    deletions = Deletions(config)
    deletions.ledger.acquire("retention")  # held while a run reports (its parts renew it)
    run = deletions.ledger.begin("retention", dt.datetime.now(dt.timezone.utc), {})
    for start in range(0, items, 1000):
        deletions.ledger.steps.insert_many([
            {"_id": f"{run['_id']}:{seq:09d}", "run": run["_id"], "seq": seq, "state": "done", "outcome": "deleted",
             **asdict(Step("delete_source" if seq % 2 else "delete_archive", f"CHAT_DEFAULT_{seq // 2:012d}",
                           1, "default", "source_days 30 passed since v1 was archived and verified"))}
            for seq in range(start + 1, min(items, start + 1000) + 1)])
    deletions.ledger.runs.update_one({"_id": run["_id"]}, {"$set": {"state": "reporting", "steps": items}})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    signer = Signer(configured_identity(config), None)
    started = time.perf_counter()
    result = deletions._finish(deletions.ledger.runs.find_one({"_id": run["_id"]}), signer, False)
    seconds = time.perf_counter() - started
    print(f"report of {items:,} items: {seconds:.1f} s; peak RSS {before:.0f} MiB before it, "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB after; "
          f"{len(result.report.get('parts', []))} parts; counts {json.dumps(result.report['counts'])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--report-only", type=int, default=0, metavar="ITEMS")
    parser.add_argument("--mongodb-uri", default="")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    server, uri = None, args.mongodb_uri
    if not uri:
        (work / "nx").mkdir()
        uri, server = start_nx(work / "nx")
    try:
        configure("WARNING", "text")
        config = bench_config(work, uri)
        if args.report_only:
            report_only(config, args.report_only)
            return
        started = time.perf_counter()
        fabricate(config, args.chats, days_old=400)
        print(f"seeded {args.chats} archived chats in {time.perf_counter() - started:.1f} s")
        deletions = Deletions(config)
        deletions.source.create_indexes()  # what `archiver indexes --create` makes: loading a chat by room
        started = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats
            profile = cProfile.Profile()
            result = profile.runcall(deletions.run, "retention", deletions.plan_retention, {}, False,
                                     Actor("bench", "bench"))
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        else:
            result = deletions.run("retention", deletions.plan_retention, {}, False, Actor("bench", "bench"))
        seconds = time.perf_counter() - started
        print(f"retention run over {args.chats} eligible chats: {seconds:.1f} s "
              f"({seconds / args.chats * 1000:.2f} ms per chat, source and archive deleted)")
        print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        print(f"counts: {json.dumps(result.report['counts'])}; report {result.location['key']} "
              f"({len(json.dumps(result.report)) / 1e6:.1f} MB), SHA-256 {result.location['sha256']}")
        example = {**result.report, "items": list(itertools.islice(result.items(), 3))}
        print(json.dumps(example, indent=1, default=str))
    finally:
        if server:
            server.terminate()


if __name__ == "__main__":
    main()

"""Benchmark: `verify --all` over N archived chats, without and with the legal team's key.

Archives N chats (30 messages) into a local store, with the index on nx-27017 in
its own process (or --mongodb-uri), then times `verify_archive` both ways and
reports peak memory (RSS) of this process (the workers' own is not counted).
The keyed run goes in one process and in --workers processes.

    python bench/verify.py --chats 1000
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

from archiver import config as config_module
from archiver.envelope import RecipientKey
from archiver.integrity import verify_archive
from archiver.keys import create_development_keys
from archiver.logs import configure
from archiver.mongo import connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxserver import start_nx  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--mongodb-uri", default="")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="for the keyed run in processes")
    parser.add_argument("--no-single", action="store_true", help="skip the keyed run in one process")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    server = None
    uri = args.mongodb_uri
    if not uri:
        (work / "nx").mkdir()
        uri, server = start_nx(work / "nx")
    try:
        run(work, uri, args.chats, args.workers, not args.no_single)
    finally:
        if server:
            server.terminate()


def archive_chats(work: Path, uri: str, count: int):
    """COUNT chats of 30 messages archived into a local store under WORK; (config, development keys)."""
    configure("WARNING", "text")
    keys = create_development_keys(work / "keys")
    tag = uuid.uuid4().hex[:8]
    config = config_module.load(None, environ={}).with_overrides(**{
        "mongodb.uri": uri, "source.database": f"src_{tag}", "index.database": f"idx_{tag}",
        "storage.url": f"file://{work / 'store'}", "signing.certificate": str(keys["signing.crt.pem"]),
        "signing.key": str(keys["signing.key.pem"]), "encryption.recipients": [str(keys["legal.crt.pem"])],
        "logging.level": "WARNING", "logging.format": "text"})
    rng = random.Random(1)
    start = (time.time() - 3600) * 1000
    db = connect(uri)[config["source.database"]]
    chats = [make_chat(rng, messages=30, start_ms=start) for _ in range(count)]
    db.chats.insert_many([c for c, _ in chats])
    db.contacts.insert_many([k for _, k in chats])
    started = time.monotonic()
    report = Archiver(config).run_pass()
    print(f"archived {report.archived} chats in {time.monotonic() - started:.1f} s")
    return config, keys


def run(work: Path, uri: str, count: int, workers: int, single: bool) -> None:
    config, keys = archive_chats(work, uri, count)
    plain = verify_archive(config, None)
    print(f"verify --all without a key: {plain.seconds:.1f} s ({plain.entries} entries, {plain.listed} objects, "
          f"{plain.problem_count} problems, {1000 * plain.seconds / count:.1f} ms per chat)")
    key = RecipientKey.load(str(keys["legal.key.pem"]), config["encryption.recipients"])
    for n in ([1] if single else []) + [workers]:
        full = verify_archive(config, None, key, workers=n)
        print(f"verify --all --key --workers {n}: {full.seconds:.1f} s ({full.problem_count} problems, "
              f"{1000 * full.seconds / count:.1f} ms per chat)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

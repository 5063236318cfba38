"""Scale-out and memory: several `archiver run` processes against one MongoDB and one store.

Seeds CHATS ended chats, then for each process count runs that many `archiver run`
processes at once (fresh databases and store each time) and prints the pass time,
chats/s, the speed-up over one process, peak memory of the largest archiver and
worker process, and checks that every chat was archived exactly once.

    python bench/scaleout.py --chats 2000 --messages 30 --processes 1 2 3
    python bench/scaleout.py --chats 100000 --messages 5 --processes 1 --workers 2   # memory
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pymongo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxserver import start_nx  # noqa: E402
from pipeline import generate  # noqa: E402

from archiver.keys import create_development_keys  # noqa: E402
from archiver.store.local import LocalStore  # noqa: E402

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def seed(uri: str, database: str, chats: list[tuple[dict, dict]]) -> None:
    db = pymongo.MongoClient(uri)[database]
    for start in range(0, len(chats), 1000):
        part = chats[start:start + 1000]
        db.chats.insert_many([dict(c) for c, _ in part])
        db.contacts.insert_many([dict(k) for _, k in part])


def config_file(folder: Path, uri: str, keys: dict[str, Path], workers: int, batch: int) -> tuple[Path, dict]:
    tag = uuid.uuid4().hex[:8]
    names = {"source": f"scale_src_{tag}", "index": f"scale_idx_{tag}", "store": str(folder / f"store-{tag}")}
    path = folder / f"archiver-{tag}.toml"
    path.write_text(f"""
[mongodb]
uri = "{uri}"
[source]
database = "{names['source']}"
[index]
database = "{names['index']}"
[storage]
url = "file://{names['store']}"
[signing]
certificate = "{keys['signing.crt.pem']}"
key = "{keys['signing.key.pem']}"
[encryption]
recipients = ["{keys['legal.crt.pem']}"]
[archive]
workers = {workers}
batch_size = {batch}
[logging]
level = "WARNING"
""", encoding="utf-8")
    return path, names


class PeakMemory:
    """Samples the peak resident memory (VmHWM) of processes and their children, in MB."""

    def __init__(self, pids: list[int]) -> None:
        self.roots = set(pids)
        self.main = 0.0
        self.worker = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid, parent in _processes():
                hwm = _hwm_mb(pid)
                if pid in self.roots:
                    self.main = max(self.main, hwm)
                elif parent in self.roots:
                    self.worker = max(self.worker, hwm)


def _processes() -> list[tuple[int, int]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found.append((int(entry), int(stat.rsplit(")", 1)[1].split()[1])))
    return found


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(count: int, config: Path) -> tuple[float, list[str], PeakMemory]:
    started = time.perf_counter()
    procs = [subprocess.Popen([ARCHIVER, "--config", str(config), "run", "--no-progress"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    memory = PeakMemory([p.pid for p in procs])
    outputs = [p.communicate() for p in procs]
    seconds = time.perf_counter() - started
    memory.stop()
    for p, (out, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"archiver run failed ({p.returncode}): {out}{err}")
    return seconds, [out.strip() for out, _ in outputs], memory


def check(uri: str, names: dict, chats: list[tuple[dict, dict]]) -> str:
    """Each chat archived once, no entry left half-way, and every stored object in the index."""
    entries = list(pymongo.MongoClient(uri)[names["index"]]["archive_index"].find())
    rooms = [e["room"] for e in entries if e["status"] == "archived"]
    recorded = {key for e in entries for key in [*(o["key"] for o in e["objects"].values()), *e["superseded_objects"]]}
    stored = set(LocalStore(Path(names["store"])).keys())
    problems = [f"{len(rooms)} archived entries for {len(set(rooms))} of {len(chats)} rooms"] * (
        not len(rooms) == len(set(rooms)) == len(chats))
    problems += [f"{len(entries) - len(rooms)} entries not archived"] * (len(entries) != len(rooms))
    problems += [f"{len(stored - recorded)} stored objects not in the index"] * bool(stored - recorded)
    problems += [f"{len(recorded - stored)} indexed objects missing"] * bool(recorded - stored)
    return "WRONG: " + "; ".join(problems) if problems else "each chat archived exactly once, every object indexed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=1, help="worker processes per `archiver run`")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mongodb-uri", default="", help="a MongoDB (default: start nx-27017)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="archiver-scale-"))
    keys = create_development_keys(folder / "keys")
    uri, server = (args.mongodb_uri, None) if args.mongodb_uri else start_nx(folder)
    chats = generate(args.chats, args.messages)
    print(f"{args.chats} chats of {args.messages} messages, {args.workers} worker(s) per process, "
          f"{os.cpu_count()} cores, MongoDB: {'nx-27017' if server else uri}")
    first = None
    try:
        for count in args.processes:
            config, names = config_file(folder, uri, keys, args.workers, args.batch_size)
            seed(uri, names["source"], chats)
            subprocess.run([ARCHIVER, "--config", str(config), "indexes", "--create"], check=True,
                           stdout=subprocess.DEVNULL)
            seconds, summaries, memory = run(count, config)
            rate = args.chats / seconds
            first = first or rate
            print(f"{count} process(es): {seconds:7.1f} s, {rate:6.1f} chats/s, x{rate / first:.2f}; "
                  f"peak memory: archiver {memory.main:.0f} MB, worker {memory.worker:.0f} MB; "
                  f"{check(uri, names, chats)}")
            for summary in summaries:
                print(f"    {summary.splitlines()[-1] if summary else ''}")
    finally:
        if server:
            server.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Old and new code side by side: bench/pipeline.py of two revisions in alternating rounds.

    python bench/compare.py --old 6eee9dc -- --chats 500 --messages 30 --no-s3

Each round runs the old revision's benchmark, then this tree's, on the same
machine at nearly the same moment, so load and disk caches hit both alike. It
prints, per revision and round, the bare render+sign+encrypt rate, the end to
end rate into the local store, and the CPU time of the whole benchmark process
tree (archiver, workers, MongoDB stand-in) per chat, and the end-to-end CPU per
chat of the main process, the workers and the database apart; then the medians
and spreads. Both revisions run this tree's bench/ scripts (copied over the old
one), so both are measured the same way and options added since (--signing-key)
work for both.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
BARE = re.compile(r"bare render\+sign\+encrypt ([\d.]+) chats/s")
LOCAL = re.compile(r"local: +([\d.]+) chats/s")
CHATS = re.compile(r"^(\d+) chats ", re.M)
FORK_SERVER = re.compile(r"fork server's own CPU so far: ([\d.]+) s")
PROCESSES = re.compile(r"local CPU per chat: main ([\d.]+) ms, workers ([\d.]+) ms, archiver ([\d.]+) ms, "
                       r"database ([\d.]+) ms")


def become_subreaper() -> None:
    """Orphaned descendants (worker processes whose fork server exits after the benchmark) become our
    children, so that their CPU time is counted when we reap them (Linux's PR_SET_CHILD_SUBREAPER)."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def reap_orphans(timeout: float = 30.0) -> None:
    """Wait for every descendant left behind by a run, so their CPU time lands in RUSAGE_CHILDREN."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        if pid == 0:
            if time.monotonic() > deadline:
                raise SystemExit("a benchmark left processes running")
            time.sleep(0.05)


def run_once(tree: Path, bench_args: list[str]) -> dict[str, float]:
    """One benchmark run of TREE's code; its rates and the CPU seconds of its process tree per chat."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, str(tree / "bench" / "pipeline.py"), *bench_args], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: benchmark failed\n{done.stdout}\n{done.stderr}")
    chats = int(CHATS.search(done.stdout).group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    main, workers, archiver, database = (float(v) for v in PROCESSES.search(done.stdout).groups())
    return {"bare": float(BARE.search(done.stdout).group(1)), "local": float(LOCAL.search(done.stdout).group(1)),
            "cpu_ms_per_chat": 1000 * cpu / (2 * chats),  # each run builds every chat twice: bare, then local
            "main": main, "workers": workers, "archiver": archiver, "database": database,
            "fork_server_s": float(FORK_SERVER.search(done.stdout).group(1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the git revision to compare with this tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("bench_args", nargs="*", help="arguments for bench/pipeline.py (after --)")
    args = parser.parse_args(argv)
    bench_args = args.bench_args or ["--chats", "500", "--messages", "30", "--no-s3"]
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="archiver-old-") as scratch:
        old = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(old), args.old], check=True)
        shutil.copytree(HERE / "bench", old / "bench", dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for round_ in range(1, args.rounds + 1):
                for label, tree in (("old", old), ("new", HERE)):
                    result = run_once(tree, bench_args)
                    results[label].append(result)
                    print(f"round {round_} {label}: bare {result['bare']:.1f} chats/s, local {result['local']:.1f} "
                          f"chats/s, CPU {result['cpu_ms_per_chat']:.1f} ms per chat built; end to end per chat: "
                          f"main {result['main']:.2f} ms, workers {result['workers']:.2f}, archiver "
                          f"{result['archiver']:.2f}, database {result['database']:.2f}; fork server's own "
                          f"{result['fork_server_s']:.2f} s", flush=True)
        finally:
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old)], check=False)
    for label, runs in results.items():
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"median {label} ({args.old if label == 'old' else 'this tree'}): bare {medians['bare']:.1f} chats/s, "
              f"local {medians['local']:.1f} chats/s, CPU {medians['cpu_ms_per_chat']:.1f} ms per chat built")
        for k in runs[0]:
            values = [r[k] for r in runs]
            print(f"  {label} {k}: median {statistics.median(values):.2f}, spread {min(values):.2f}-{max(values):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

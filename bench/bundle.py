"""Benchmark: a case bundle of N archived chats (`archiver retrieve --bundle`), time and peak memory.

Archives N chats (30 messages) into a local store, with the index on nx-27017 in
its own process (or --mongodb-uri), then runs `archiver retrieve --bundle` over
all of them in a child process (as a legal team would run it) and reports its
wall time, its peak RSS (the child's alone) and the bundle's tree.

    python bench/bundle.py --chats 1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nxserver import start_nx  # noqa: E402
from verify import archive_chats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--mongodb-uri", default="")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    server = None
    uri = args.mongodb_uri
    if not uri:
        (work / "nx").mkdir()
        uri, server = start_nx(work / "nx")
    try:
        run(work, uri, args.chats)
    finally:
        if server:
            server.terminate()


def run(work: Path, uri: str, count: int) -> None:
    config, keys = archive_chats(work, uri, count)
    toml = work / "archiver.toml"
    toml.write_text("\n".join([
        f'[mongodb]\nuri = "{uri}"', f'[index]\ndatabase = "{config["index.database"]}"',
        f'[storage]\nurl = "{config["storage.url"]}"',
        f'[signing]\ncertificate = "{keys["signing.crt.pem"]}"\nkey = "{keys["signing.key.pem"]}"',
        f'[encryption]\nrecipients = ["{keys["legal.crt.pem"]}"]', '[logging]\nlevel = "WARNING"']) + "\n")
    bundle = work / "case.zip"
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "archiver.cli", "--config", str(toml), "retrieve", "--bundle",
                              str(bundle), "--key", str(keys["legal.key.pem"]), "--reason", "benchmark",
                              "--from", "2000-01-01", "--no-progress"], stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # the command's own rusage, nobody else's
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"bundle failed ({os.waitstatus_to_exitcode(status)}): {out}")
    peak = usage.ru_maxrss / 1024
    print(out.strip())
    print(f"bundle of {count} rooms: {seconds:.1f} s ({1000 * seconds / count:.1f} ms per room), "
          f"peak RSS of the command {peak:.0f} MiB, {bundle.stat().st_size / 2**20:.1f} MiB zip")
    print(tree(bundle))


def tree(path: Path) -> str:
    """The bundle's layout: top-level files, and the rooms/ folder with its first room expanded."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    rooms = Counter(i.filename.split("/")[1] for i in infos if i.filename.startswith("rooms/"))
    first = min(rooms)
    lines = [f"{path.name}", f"├── rooms/  ({len(rooms)} folders, {sum(rooms.values())} files)",
             f"│   ├── {first}/"]
    lines += [f"│   │   ├── {i.filename.rsplit('/', 1)[1]}  ({i.file_size} bytes)"
              for i in infos if i.filename.startswith(f"rooms/{first}/")]
    lines.append(f"│   └── ... {len(rooms) - 1} more, each with the same {rooms[first]} files")
    lines += [f"├── {i.filename}  ({i.file_size} bytes)" for i in infos if "/" not in i.filename]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Start nx-27017, the SQLite-backed MongoDB wire-protocol stand-in (tests and benchmarks)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pymongo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nx(folder: Path) -> tuple[str, subprocess.Popen]:
    """A running server with its data in FOLDER: (URI, process); stop it with terminate()."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "nx-27017"), "--data-dir", str(folder), "-p", str(port),
         "--log-file", str(folder / "nx.log"), "--pid-file", str(folder / "nx.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    deadline = time.monotonic() + 30
    while True:
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return uri, server
        except pymongo.errors.PyMongoError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"nx-27017 did not start; see {folder / 'nx.log'}") from None
            time.sleep(0.2)

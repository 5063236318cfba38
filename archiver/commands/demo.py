"""`archiver demo`: keys, sample chats, an archive pass and an export, in one directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from archiver.commands.common import UsageError

HELP = "make keys, seed sample chats, archive them into a local store and show the result"
EXAMPLE = "archiver demo --dir /tmp/archiver-demo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="demo", help="where keys, store and exports go (default: ./demo)")


def run(args: argparse.Namespace) -> int:
    from archiver.demo import run_demo

    return run_demo(_folder(Path(args.dir)))


def _folder(path: Path) -> Path:
    """--dir as an existing or new folder; anything else there is a usage error, before any work."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--dir {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {path}: cannot create it ({exc.strerror or exc})") from None
    return path

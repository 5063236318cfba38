"""`archiver demo`: keys, sample chats, an archive pass and an export, in one directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from archiver.commands.common import folder_option

HELP = ("make keys, seed sample chats, archive them into a local store and show the result; self-contained: "
        "every step ignores --config, ARCHIVER_CONFIG and ARCHIVER_* settings")
EXAMPLE = "archiver demo --dir /tmp/archiver-demo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="demo", help="where keys, store and exports go (default: ./demo)")


def run(args: argparse.Namespace) -> int:
    from archiver.demo import run_demo

    return run_demo(folder_option(Path(args.dir), "--dir"))

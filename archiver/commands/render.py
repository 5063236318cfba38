"""`archiver render INPUT --out DIR [--contacts FILE]`: offline signed PDF and JSON from chat documents in a file."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config, out_folder, outside_store

HELP = "render chat documents from a file to signed PDF and JSON, offline"
EXAMPLE = "archiver --config archiver.toml render chats.jsonl --out ./out --contacts contacts.jsonl"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="chat documents: JSON, JSON lines, Extended JSON or mongo shell")
    p.add_argument("--out", required=True, metavar="DIR", help="where <room>.pdf, <room>.json(.p7s) go")
    p.add_argument("--contacts", metavar="FILE",
                   help="contact documents (same formats), joined to the chats by id = room")


def run(args: argparse.Namespace) -> int:
    from archiver.offline import render_file

    config = load_config(args)
    if not config["signing.pkcs12"]:
        config.require("signing.certificate", "signing.key")
    source = _readable_file("INPUT", Path(args.input))
    contacts = _readable_file("--contacts", Path(args.contacts)) if args.contacts else None
    out = out_folder(outside_store(Path(args.out), config, "--out"))
    results = render_file(config, source, out, contacts, on_line=lambda line: print(line, flush=True))
    print(f"{results.rendered} rendered, {len(results.problems)} failed")
    for problem in results.problems:
        print(f"  FAILED {problem}")
    return ITEMS_FAILED if results.problems else OK


def _readable_file(option: str, path: Path) -> Path:
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {path}: not readable (permission denied)")
    return path

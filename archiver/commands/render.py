"""`archiver render INPUT --out DIR`: offline signed PDF and JSON from chat documents in a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config

HELP = "render chat documents from a file to signed PDF and JSON, offline"
EXAMPLE = "archiver --config archiver.toml render chats.jsonl --out ./out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="chat documents: JSON, JSON lines, Extended JSON or mongo shell")
    p.add_argument("--out", required=True, metavar="DIR", help="where <room>.pdf, <room>.json(.p7s) go")


def run(args: argparse.Namespace) -> int:
    from archiver.offline import render_file

    config = load_config(args)
    if not config["signing.pkcs12"]:
        config.require("signing.certificate", "signing.key")
    if not Path(args.input).is_file():
        raise UsageError(f"INPUT {args.input}: no such file")
    results = render_file(config, Path(args.input), Path(args.out))
    for line in results.lines:
        print(line)
    print(f"{results.rendered} rendered, {len(results.problems)} failed")
    for problem in results.problems:
        print(f"  FAILED {problem}")
    return ITEMS_FAILED if results.problems else OK

"""`archiver export ROOM`: archive one room now, optionally writing its plaintext files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from archiver.commands.common import ITEMS_FAILED, OK, load_config, out_folder, outside_store
from archiver.commands.search import add_actor

if TYPE_CHECKING:
    from archiver.config import Config

HELP = "archive one room now; optionally also write its plaintext files"
EXAMPLE = "archiver --config archiver.toml export CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a --out ./case-42"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("room", metavar="ROOM", help="the chat's room id")
    p.add_argument("--out", metavar="DIR", help="also write the plaintext signed PDF and JSON here")
    p.add_argument("--force", action="store_true", help="archive a chat that has not ended, marked interim")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    from archiver.offline import export_room

    config = load_config(args)
    # before archiving: a bad --out is a usage error
    out = out_folder(outside_store(Path(args.out), config, "--out")) if args.out else None
    outcome = export_room(config, args.room, out, args.force, _recorder(config, args) if out else None)
    for line in outcome.lines:
        print(line)
    return OK if outcome.ok else ITEMS_FAILED


def _recorder(config: "Config", args: argparse.Namespace) -> Callable[[str, str], None]:
    """What records an export's plaintext in the audit log (as a retrieval's): AuditError if it cannot."""
    from archiver.audit import Actor, open_audit_log

    log, actor = open_audit_log(config), Actor.current(args.actor)

    def record(outcome: str, detail: str) -> None:
        log.record("export", actor, outcome=outcome, rooms=[args.room], detail=detail)

    return record

"""`archiver seal [--from DATE --to DATE]`: seal the days' index entries (Merkle root, signed, timestamped, locked)."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from archiver.commands.common import ITEMS_FAILED, OK, VERIFY_FAILED, UsageError, load_config
from archiver.commands.search import add_actor
from archiver.redact import redact
from archiver.visible import visible

HELP = ("seal the index entries archived on each day (UTC) as a signed, timestamped Merkle root, stored under "
        "Object Lock and in the index; default: the last schedule.seal_lookback_days days that have ended")
EXAMPLE = "archiver --config archiver.toml seal --from 2026-01-01 --to 2026-01-31"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="first", metavar="DATE", help="first day to seal (YYYY-MM-DD, UTC)")
    p.add_argument("--to", dest="last", metavar="DATE", help="last day to seal (YYYY-MM-DD, UTC; must have ended)")
    p.add_argument("--json", action="store_true", help="print one JSON object per day")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor
    from archiver.seals import SealingRefused, default_days, seal_days, sealable_days

    if bool(args.first) != bool(args.last):
        raise UsageError("give both --from and --to, or neither")
    config = load_config(args)
    config.require("mongodb.uri", "storage.url")
    try:
        days = (sealable_days(config, _day(args.first, "--from"), _day(args.last, "--to")) if args.first
                else default_days(config))
    except SealingRefused as exc:
        raise UsageError(str(exc)) from None
    outcomes = seal_days(config, days, Actor.current(args.actor))
    for outcome in outcomes:
        print_outcome(outcome, args.json)
    if any(o.action == "refused" for o in outcomes):
        return VERIFY_FAILED
    return ITEMS_FAILED if any(o.action == "failed" for o in outcomes) else OK


def print_outcome(outcome, as_json: bool) -> None:
    """OUTCOME as a line (or a JSON object); a failure's message with any URI's credentials hidden."""
    if as_json:
        print(redact(json.dumps({"day": outcome.day, "action": outcome.action, "seal": outcome.seal,
                                 "problems": outcome.problems, **({"detail": outcome.detail} if outcome.detail else {})},
                                ensure_ascii=False)))
    else:
        print(visible(redact(("PROBLEM " if outcome.problems else "") + str(outcome))))


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a date (YYYY-MM-DD)") from None

"""`archiver run`: one archive pass over ended chats."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config, progress_line
from archiver.redact import redact
from archiver.visible import visible

HELP = "one archive pass over ended chats"
EXAMPLE = "archiver --config archiver.toml run --limit 5000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, metavar="N", help="archive at most N chats in this pass")
    p.add_argument("--full", action="store_true", help="rediscover every ended chat, not only recent ones")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run(args: argparse.Namespace) -> int:
    from archiver.pipeline import Archiver

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    archiver = Archiver(load_config(args))
    for warning in (archiver.lock_warning, archiver.nat64_warning):
        if warning:
            print(f"warning: {warning}")
    progress = None if args.no_progress or not sys.stderr.isatty() else _progress_line()
    report = archiver.run_pass(args.limit, full=args.full, progress=progress)
    if progress:
        sys.stderr.write("\n")
    print_report(report)
    return OK if report.ok else ITEMS_FAILED


def _progress_line() -> Callable[[Any], None]:
    return progress_line(lambda r: r.handled, lambda r: f"{r.handled} chats ({r.archived} archived, "
                         f"{len(r.failed)} failed, {len(r.quarantined)} quarantined)", "chats")


def print_report(report) -> None:
    rate = report.archived / report.seconds if report.seconds else 0.0
    print(f"discovered {report.discovered}, archived {report.archived}, unchanged {report.unchanged}, "
          f"failed {len(report.failed)}, quarantined {len(report.quarantined)} "
          f"in {report.seconds:.1f} s ({rate:.1f} chats/s)")
    for room, error in report.failed.items():
        print(visible(f"  FAILED {room}: {redact(error)}"))  # room ids and errors come from chats
    for room, reason in report.quarantined.items():
        print(visible(f"  QUARANTINED {room}: {redact(reason)}"))
    if report.leases_lost:
        print(f"  {len(report.leases_lost)} chat(s) left to other workers after this one's lease ran out "
              "(a stall longer than archive.lease_seconds)")
    if report.worker_deaths:
        print(f"  {report.worker_deaths} worker process(es) died during the pass (killed by the system: memory?)")

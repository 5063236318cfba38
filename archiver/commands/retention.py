"""`archiver retention run [--dry-run]`: apply the retention policy and report what it deleted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Iterator

from archiver.commands.common import ITEMS_FAILED, OK, load_config
from archiver.commands.search import add_actor
from archiver.visible import visible

HELP = ("apply the retention policy: delete verified source chats and expired archives (never held or locked "
        "ones), and write a signed report; --dry-run prints exactly what a run would do")
EXAMPLE = "archiver --config archiver.toml retention run --dry-run --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["run"], help="run: one retention run (or finish one a crash interrupted)")
    p.add_argument("--dry-run", action="store_true", help="plan only: print every item the run would do, change nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor
    from archiver.retention import Deletions
    from archiver.runs import PlanNotSigned, ReportUnsigned, RunBusy

    config = load_config(args)
    deletions = Deletions(config)
    try:
        result = deletions.run("retention", deletions.plan_retention, {}, args.dry_run, Actor.current(args.actor))
    except (RunBusy, ReportUnsigned, PlanNotSigned) as exc:
        print(f"archiver: error: {exc}", file=sys.stderr)
        return ITEMS_FAILED
    print_report(result, args.json)
    return OK if result.ok else ITEMS_FAILED


def print_report(result, as_json: bool) -> None:
    _print_report(result, as_json)
    if result.unaudited:  # what it did is above and in its signed report; the audit log lacks it for now
        print(f"archiver: error: {result.unaudited}", file=sys.stderr)


def _print_report(result, as_json: bool) -> None:
    from archiver.retention import retention_summary

    report = result.report
    if as_json:
        print_json({**report, **({"stored": result.location} if result.location else {})}, result.items())
        return
    if result.resumed:
        print(f"resumed run {report['run']}, interrupted earlier")
    if report.get("interrupted_run_first"):
        print(f"NOTE: run {report['interrupted_run_first']} was interrupted; a real run finishes it first "
              "(its plan was made then), and this plan applies to the run after it")
    for item in result.items():
        version = f" v{item['version']}" if item["version"] is not None else ""
        detail = f" ({item['detail']})" if item.get("detail") else ""
        print(visible(f"{item['outcome'].upper():<8} {item['action']:<14} {item['room']}{version} [{item['rule']}] "
                      f"{item['reason']}{detail}"))  # room ids come from chats
    print(retention_summary(report))
    if result.location:
        print(f"report {result.location['key']} (SHA-256 {result.location['sha256']}), "
              f"signature {result.location['signature_key']}")


def print_json(report: dict[str, Any], items: Iterator[dict[str, Any]]) -> None:
    """REPORT as JSON with every item, written one item at a time (a report in parts is read from its
    ledger as it is printed, never held whole)."""
    marker = f"items {os.urandom(16).hex()}"  # stands for the items in the JSON of the rest
    head, _, tail = json.dumps({**report, "items": marker}, indent=1, ensure_ascii=False,
                               default=str).partition(json.dumps(marker))
    sys.stdout.write(head + "[")
    written = 0
    for item in items:
        text = json.dumps(item, indent=1, ensure_ascii=False, default=str).replace("\n", "\n  ")
        sys.stdout.write(("," if written else "") + "\n  " + text)
        written += 1
    sys.stdout.write(("\n " if written else "") + "]" + tail + "\n")

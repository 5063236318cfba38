"""`archiver erase --customer ID --reason TEXT [--dry-run]`: a data-protection erasure request."""

from __future__ import annotations

import argparse
import sys

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config
from archiver.commands.retention import print_report
from archiver.commands.search import add_actor

HELP = ("erase a customer's chats from the source and the archive where no legal hold or lock prevents it, "
        "nor another customer's part in the chat (unless --include-shared); reports what could not be erased "
        "and why; audited")
EXAMPLE = 'archiver --config archiver.toml erase --customer 4747235938674011 --reason "GDPR art. 17 request #1234" --dry-run'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--customer", required=True, metavar="ID", help="the customer's user id")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (the request), for the report and audit log")
    p.add_argument("--include-shared", action="store_true",
                   help="erase also the chats other customers wrote in or opened (their statements go with them; "
                        "without it such a chat is kept and listed as NOT ERASED); recorded in the audit log")
    p.add_argument("--dry-run", action="store_true", help="print what would be erased and what not, change nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor
    from archiver.retention import Deletions
    from archiver.runs import PlanNotSigned, ReportUnsigned, RunBusy

    if not args.customer.strip() or not args.reason.strip():
        raise UsageError("--customer and --reason must not be empty")
    config = load_config(args)
    deletions = Deletions(config)
    try:
        result = deletions.run("erasure", deletions.plan_erasure(args.customer, args.reason, args.include_shared),
                               {"customer": args.customer, "reason": args.reason,
                                "include_shared": args.include_shared}, args.dry_run, Actor.current(args.actor))
    except (RunBusy, ReportUnsigned, PlanNotSigned) as exc:
        print(f"archiver: error: {exc}", file=sys.stderr)
        return ITEMS_FAILED
    print_report(result, args.json)
    kept = sum(n for per_rule in result.report["counts"].values() for label, n in per_rule.items()
               if label.rpartition(":")[2] in ("skipped", "refused", "failed"))
    said = sys.stderr if args.json else sys.stdout  # beside --json's report, not in it: stdout stays one document
    if kept:
        print(f"NOT ERASED: {kept} item(s), each listed above with the reason", file=said)
    untraced = deletions.unreadable_traces()
    if untraced:
        print(f"WARNING: {untraced} erased chat(s) keep keyed traces of the other customers of a shared chat; without "
              "search.key_file this erasure cannot tell whether one is this customer's: erase again with the key",
              file=said)
    return OK if result.ok else ITEMS_FAILED

"""`archiver verify [ROOM ... | --all] [--key PEM]`: prove archived chats present and unaltered (no ROOM and no
--all: everything, as --all)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable

from archiver.commands.common import (OK, VERIFY_FAILED, UsageError, add_key_password_option, load_config,
                                     progress_line, recipient_key)
from archiver.commands.retrieve import load_trust
from archiver.pins import NO_TIMESTAMP_ANCHOR, SIGNER_SETTINGS, configured_pins
from archiver.commands.search import add_actor
from archiver.visible import visible

if TYPE_CHECKING:
    from archiver.completeness import CompletenessReport
    from archiver.integrity import VerifyReport

HELP = ("check archived objects against the index (present, size, SHA-256, nothing unexplained) and recompute "
        "the seals; "
        "with --key also decrypt and check both signatures and the record; without ROOMs, everything (as --all); "
        "exit 3 naming each problem")
EXAMPLE = "archiver --config archiver.toml verify --key legal.key.pem --json   # everything, as --all"
PROBLEMS_IN_AUDIT = 100
UNCHAINED = ("signers NOT checked against a trust anchor (give --ca PEM or set signing.trust_anchors): every "
             f"signature is still checked as made by one of this configuration's signing certificates ({SIGNER_SETTINGS})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rooms", nargs="*", metavar="ROOM", help="rooms to check (none: everything, as --all)")
    p.add_argument("--all", action="store_true", help="every entry, and every object in the stores (the default without ROOMs)")
    p.add_argument("--key", metavar="PEM", help="the legal team's private key: also decrypt and check content")
    add_key_password_option(p)
    p.add_argument("--cert", action="append", default=[], metavar="PEM",
                   help="the key's recipient certificate (default: found in --key or encryption.recipients)")
    p.add_argument("--ca", action="append", default=[], metavar="PEM",
                   help="with --key: the signatures must chain to this CA (repeatable)")
    p.add_argument("--redaction", action="store_true",
                   help="with --key: also name every version whose record holds what the [redaction] rules of "
                        "this configuration mask (archived with redaction off, or before a rule found it)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="with --key: check content in N processes (default 0: one per CPU; 1: in this one)")
    p.add_argument("--completeness", action="store_true",
                   help="every chat that ended in the source between --from and --to is archived, failed or "
                        "quarantined (the others are named)")
    p.add_argument("--from", dest="ended_from", metavar="DATE", help="with --completeness: ended on or after DATE")
    p.add_argument("--to", dest="ended_to", metavar="DATE",
                   help="with --completeness: ended on or before DATE (a bare date: that whole day)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    if args.completeness or args.ended_from or args.ended_to:
        if not (args.rooms or args.all):
            return run_completeness(args)
        verification = prepare_verification(args)  # its usage errors before the completeness check does any work
        if args.json:  # one document: the verification's, the completeness check's under "completeness"
            complete, (verified, _) = completeness_report(args), verification()
            both = {**verified.as_dict(), "completeness": complete.as_dict(), "ok": verified.ok and complete.ok}
            print(json.dumps(both, indent=2, default=str))
            return OK if both["ok"] else VERIFY_FAILED
        return max(run_completeness(args), _print_verification(args, *verification()))
    return _print_verification(args, *prepare_verification(args)())


def _print_verification(args: argparse.Namespace, report: VerifyReport, warnings: list[str]) -> int:
    print(json.dumps(report.as_dict(), indent=2) if args.json else _text(report))
    for warning in [] if args.json else warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return OK if report.ok else VERIFY_FAILED


def prepare_verification(args: argparse.Namespace) -> Callable[[], tuple[VerifyReport, list[str]]]:
    """The verification ARGS ask for, its usage and settings checked (exit 2 before any work): called, it verifies
    the archive (recorded in the audit log) and returns the report, not printed, and what it could not check."""
    from archiver.audit import Actor, open_audit_log
    from archiver.integrity import verify_archive
    from archiver.store import unreachable

    if args.rooms and args.all:
        raise UsageError("name the rooms to verify, or give --all (not both)")
    args.all = not args.rooms  # no ROOM: everything, as --all (the contract's ROOM ... | --all is optional)
    if args.workers < 0:
        raise UsageError("--workers: must be 0 (one per CPU) or more")
    if args.redaction and not args.key:
        raise UsageError("--redaction needs --key: the records it reads are encrypted")
    config = load_config(args)
    if args.redaction and not config["redaction.enabled"]:
        raise UsageError("--redaction: redaction.enabled is false in this configuration: no rules to check against")
    log, actor = open_audit_log(config), Actor.current(args.actor)
    trust = list(load_trust(args.ca, config))
    pinned = configured_pins(config)  # a bad setting: exit 2, before any work
    scope = {"rooms": args.rooms, "all": args.all, "with_key": bool(args.key), "ca": bool(trust),
             **({"redaction": True} if args.redaction else {})}
    key = recipient_key(args, config) if args.key else None
    progress = None if args.no_progress or args.json or not sys.stderr.isatty() else _progress_line()

    def verification() -> tuple[VerifyReport, list[str]]:
        try:
            report = verify_archive(config, None if args.all else args.rooms, key, trust, progress,
                                    workers=args.workers or os.cpu_count() or 1, redaction=args.redaction,
                                    pinned=pinned)
        except Exception as exc:
            log.record("verify", actor, outcome="unreachable" if unreachable(exc) else "failed", filters=scope,
                       rooms=args.rooms, detail=str(exc))
            raise
        if progress:
            sys.stderr.write("\n")
        rooms = sorted({p.room for p in report.problems if p.room is not None})[:PROBLEMS_IN_AUDIT]
        log.record("verify", actor, outcome="ok" if report.ok else "problems", filters=scope, rooms=rooms,
                   detail=_summary(report))
        return report, [*([] if trust else [UNCHAINED]), *([] if pinned.timestamp_anchors else [NO_TIMESTAMP_ANCHOR])]

    return verification


def _summary(report) -> str:
    return (f"{report.entries} entries, {report.objects} objects checked, {report.listed} stored objects listed, "
            f"{report.seals} seal(s) recomputed, {report.problem_count} problem(s){' (content checked with a key)' if report.with_key else ''} "
            f"in {report.seconds:.1f} s")


def _text(report) -> str:
    lines = [visible(f"PROBLEM {p}") for p in report.problems]  # room ids come from chats
    if report.problem_count > len(report.problems):
        lines.append(f"... and {report.problem_count - len(report.problems)} more")
    lines.extend(visible(f"KEPT {kept}") for kept in report.kept)  # a deletion begun, then kept by a hold
    lines.append(("OK: " if report.ok else "FAILED: ") + _summary(report))
    if report.in_progress:
        lines.append(f"{report.in_progress} entr(ies) still being archived (within their lease): not checked")
    if report.awaiting_retry:  # a failed attempt (a store outage, say) that the job queue retries: no problem
        lines.append(f"{report.awaiting_retry} interrupted archive(s) wait for their job's retry: not checked")
        lines += [visible(f"  RETRY {r}") for r in report.retries]
    return "\n".join(lines)


def _progress_line() -> Callable[[Any], None]:
    return progress_line(lambda r: r.entries, lambda r: f"{r.entries} entries, {r.listed} objects listed, "
                         f"{r.problem_count} problem(s)", "entries")


def run_completeness(args: argparse.Namespace) -> int:
    """`--completeness --from --to`: ended chats in the source that are neither archived nor accounted for."""
    report = completeness_report(args)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return OK if report.ok else VERIFY_FAILED
    lines = [visible(f"MISSING {m}") for m in report.missing]
    if report.missing_count > len(report.missing):
        lines.append(f"... and {report.missing_count - len(report.missing)} more")
    lines += [visible(f"failed (recorded, retried) {f['room']}: {f['why']}") for f in report.failed]
    lines += [visible(f"quarantined (recorded, needs a person) {q['room']}: {q['why']}") for q in report.quarantined]
    lines += [visible(f"archive deleted (a tombstone) {d['room']}: {d['why']}") for d in report.deleted]
    lines.append(("OK: " if report.ok else "FAILED: ") + _completeness_summary(report))
    print("\n".join(lines))
    return OK if report.ok else VERIFY_FAILED


def completeness_report(args: argparse.Namespace) -> CompletenessReport:
    """The completeness check ARGS ask for (recorded in the audit log), not printed."""
    from archiver.audit import Actor, open_audit_log
    from archiver.commands.search import date_window
    from archiver.completeness import check_completeness

    if not (args.completeness and args.ended_from and args.ended_to):
        raise UsageError("--completeness needs --from DATE and --to DATE (and --from/--to need --completeness)")
    start, end = date_window(args)
    config = load_config(args)
    log, actor = open_audit_log(config), Actor.current(args.actor)
    scope = {"completeness": True, "from": start.isoformat(), "to": end.isoformat()}
    progress = None if args.no_progress or args.json or not sys.stderr.isatty() else progress_line(
        lambda r: r.ended, lambda r: f"{r.ended} ended chats, {r.missing_count} missing", "chats")
    try:
        report = check_completeness(config, start, end, progress)
    except Exception as exc:
        log.record("verify", actor, outcome="failed", filters=scope, detail=str(exc))
        raise
    if progress:
        sys.stderr.write("\n")
    log.record("verify", actor, outcome="ok" if report.ok else "problems", filters=scope,
               rooms=[m.room for m in report.missing[:PROBLEMS_IN_AUDIT]], detail=_completeness_summary(report))
    return report


def _completeness_summary(report: CompletenessReport) -> str:
    window = report.window
    return (f"{report.ended} chats ended in the source from {window['from']} to {window['to']}: "
            f"{report.archived} archived, {report.failed_count} failed, {report.quarantined_count} quarantined, "
            f"{report.missing_count} missing" + (f", {report.deleted_count} deleted by policy"
                                                  if report.deleted_count else "")
            + (f"; {report.abandoned} went idle without an end (source.abandoned_after_hours), counted alike"
               if report.abandoned else ""))

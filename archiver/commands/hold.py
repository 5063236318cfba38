"""`archiver hold place|release|list`: legal holds by room, customer, agent or search filters."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config
from archiver.commands.search import OVERLAPPING_HELP, add_actor, date_window, iso_time
from archiver.visible import visible

HELP = ("legal holds: place one (by --room, --customer, --agent or search filters, with --case and --reason), "
        "release a case's holds, or list them; the archiver deletes no held chat (one limit: docs/retention.md)")
EXAMPLE = ('archiver --config archiver.toml hold place --customer 4747235938674011 --case "ACME v. Shop" --reason "litigation"'
           '\n  archiver --config archiver.toml hold place --from 2025-03-01 --to 2025-03-31 --overlapping '
           '--case "ACME v. Shop" --reason "every chat of March"'
           '\n  archiver --config archiver.toml hold list --json'
           '\n  archiver --config archiver.toml hold release --case "ACME v. Shop" --reason "settled"')


# Each option's flag and the actions that take it (by dest): another action refuses it rather than ignore it
# (`release --case K --room A` would release every hold of case K, room B's too).
_TAKEN_BY: dict[str, tuple[str, tuple[str, ...]]] = {}


def _option(p: argparse.ArgumentParser, flag: str, actions: tuple[str, ...], **kwargs: Any) -> None:
    _TAKEN_BY[p.add_argument(flag, **kwargs).dest] = (flag, actions)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["place", "release", "list"])
    case, place, listing = ("place", "release"), ("place",), ("list",)
    _option(p, "--case", case, metavar="NAME", help="place/release: the case name")
    _option(p, "--reason", case, metavar="TEXT", help="place/release: why")
    _option(p, "--room", place, help="place: this room")
    _option(p, "--customer", place, metavar="ID", help="place: every chat this customer wrote in or opened")
    _option(p, "--agent", place, metavar="ID", help="place: every chat this agent wrote in, handled or was transferred to")
    _option(p, "--from", place, dest="ended_from", metavar="DATE", help="place: chats that ended on or after DATE")
    _option(p, "--to", place, dest="ended_to", metavar="DATE", help="place: chats that ended on or before DATE")
    _option(p, "--overlapping", place, action="store_true", default=None, help=f"place: {OVERLAPPING_HELP}")
    _option(p, "--type", place, dest="ctlive_type", metavar="T", help="place: ctlive_type")
    _option(p, "--channel", place, metavar="C", help="place: channel")
    _option(p, "--service", place, metavar="S", help="place: service name")
    _option(p, "--text", place, metavar="WORDS",
            help="place: chats with these words in their messages' text (needs search.key_file)")
    _option(p, "--all", listing, action="store_true", help="list: released holds too")
    _option(p, "--json", listing, action="store_true", help="list: as JSON")
    add_actor(p)


def _check_options(args: argparse.Namespace) -> None:
    foreign = [flag for dest, (flag, actions) in _TAKEN_BY.items()
               if args.action not in actions and getattr(args, dest) not in (None, False)]
    if foreign:
        raise UsageError(f"hold {args.action} does not take {', '.join(foreign)} (release takes --case and "
                         "--reason only, and releases every hold of the case; list takes --all and --json); "
                         "nothing done")
    if args.action == "list":
        return
    if not args.case or not args.reason:
        raise UsageError(f"hold {args.action}: --case NAME and --reason TEXT are required")
    if args.action == "place" and not (args.case.strip() and args.reason.strip()):
        raise UsageError("hold place: --case and --reason must not be empty")
    if not args.reason.strip():  # (a blank case placed before this check can still be released)
        raise UsageError("hold release: --reason must not be empty")


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor, open_audit_log
    from archiver.holds import describe, open_holds
    from archiver.search import SearchFilters, open_search

    _check_options(args)
    config = load_config(args)
    actor = Actor.current(args.actor)
    if args.action == "list":
        return _list(open_holds(config).listing(args.all), args.json)
    from archiver.retention import Deletions

    deletions = Deletions(config)
    holds, store_of = deletions.holds, deletions.store_of  # (holds that match source chats too)
    log = open_audit_log(config)
    if args.action == "release":  # recorded first: a release lets retention delete what the case kept
        cases = _cases_named(args.case, [hold["case"] for hold in holds.active()], config)
        if not cases:
            raise UsageError(f"no active hold for case {args.case!r}")
        log.record("hold_release", actor, outcome="started", reason=args.reason, filters={"case": args.case},
                   detail="every active hold of the case to be released")
        released = [hold for case in cases  # (none: another released them)
                    for hold in holds.release(case, args.reason, actor.as_dict())]
        return _release(holds, released, store_of, log, actor, args)
    ended_from, ended_to = date_window(args)
    filters = SearchFilters(room=args.room, ended_from=ended_from, ended_to=ended_to, agent=args.agent,
                            customer=args.customer,
                            ctlive_type=args.ctlive_type, channel=args.channel, service=args.service, text=args.text,
                            overlapping=args.overlapping)
    if args.customer is not None or args.agent is not None:  # entries that predate `opened_by`/`handled_by`
        deletions.derive_contact_people()  # get them first, rather than all be held
    try:
        hold = holds.place(filters, args.case, args.reason, actor.as_dict(), lambda hold: log.record(
            "hold_place", actor, outcome="started", reason=args.reason,
            filters={"case": args.case, "hold": hold["_id"], **hold["filters"]}, detail="to be placed"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rooms, failures = 0, []
    for batch in holds.rooms_of(hold):
        rooms += len(batch)
        holds.protect(batch, store_of, failures)
    through = len(holds.protect_through_sources(store_of, [hold], failures)[1])  # the index does not show them
    failed = len(failures)
    via = f" ({through} of them through the source chat only)" if through else ""
    log.record("hold_place", actor, outcome="ok" if not failed else "items_failed", reason=args.reason,
               filters={"case": args.case, "hold": hold["_id"], **hold["filters"]},
               detail=f"{rooms + through} room(s) held now{via}; S3 legal hold not set on {failed} entr(ies)")
    print(visible(f"placed hold {hold['_id']}: {describe(hold)}; {rooms + through} archived room(s) covered "
                  f"now{via}, and any archived later"))
    covers_nothing = not rooms + through
    search = open_search(config) if covers_nothing or args.text is not None else None
    if search is not None and covers_nothing:
        # a mistyped id protects nothing: said as search says it, on stderr alone (never audited)
        print(visible(f"note: this hold covers no archived chat now (it covers those archived later that match): if "
                      f"a value is mistyped, release it (archiver hold release --case {shlex.quote(args.case)} "
                      "--reason ...) and place it again"), file=sys.stderr)
        for note in search.exact_notes(filters):
            print(f"note: {note}", file=sys.stderr)
    if search is not None and args.text is not None:
        note = search.text_note()
        if note:  # those entries are held whatever they say (Holds.query)
            print(f"note: {note}; this hold covers them all (within its other filters), whatever they say")
    if failed:
        print(f"the S3 legal hold could not be set on {failed} archived version(s): the next retention run retries")
    return OK if not failed else ITEMS_FAILED


def _cases_named(case: str, active: list[str], config: Any) -> list[str]:
    """The ACTIVE cases CASE (--case, masked by commands.stated) names: itself, or one placed before --case was
    masked, whose stored name masks to it (a case typed with a card number can still be released)."""
    from archiver.redaction import Redactor
    from archiver.transcript import InvalidChat

    redactor = None
    named = set()
    for stored in dict.fromkeys(c for c in active if isinstance(c, str)):  # (a case stored as other than text,
        if stored != case:                                                  # by hand, is named by no --case)
            redactor = redactor or Redactor.for_stated_text(config)
            try:
                if redactor.screened(stored)[0] != case:
                    continue
            except InvalidChat:
                continue
        named.add(stored)
    return sorted(named)


def _release(holds: Any, released: list[dict], store_of: Any, log: Any, actor: Any,
             args: argparse.Namespace) -> int:
    """Clear the S3 legal holds no active hold applies to any more (every room that has one: the released
    holds may have held some through their source chats alone); the release is audited whatever happens
    (each version the store refused named; the next retention run's sync clears those)."""
    cleared, failures, outcome = 0, [], "items_failed"
    try:
        cleared = holds.unprotect_unheld(store_of, failures)
        outcome = "ok" if not failures else "items_failed"
    except Exception as exc:  # the holds are released already: the record says what was left undone
        failures.append(f"stopped: {type(exc).__name__}: {exc}")
        raise
    finally:
        log.record("hold_release", actor, outcome=outcome, reason=args.reason, filters={"case": args.case},
                   detail=f"released {len(released)} hold(s); S3 legal hold cleared on {cleared} entr(ies)"
                          + (f"; not cleared: {'; '.join(failures)}" if failures else ""))
    print(f"released {len(released)} hold(s) of case {args.case!r}; legal hold cleared on {cleared} "
          "archived version(s) no other hold covers")
    if failures:
        print(f"the S3 legal hold could not be cleared on {len(failures)} archived version(s) (the next "
              "retention run retries): " + "; ".join(failures))
        return ITEMS_FAILED
    return OK


def _list(found: list[dict], as_json: bool) -> int:
    from archiver.holds import describe

    found = [_read_back(hold) for hold in found]
    if as_json:
        print(json.dumps(found, indent=1, default=iso_time, ensure_ascii=False))  # times as search prints them
        return OK
    for hold in found:
        state = "active" if hold["active"] else f"released {hold['released_at']:%Y-%m-%d}"
        print(visible(f"{hold['_id']}  {hold['placed_at']:%Y-%m-%d %H:%M}  {state:<20} {describe(hold)}  "
                      f"reason={hold['reason']!r}"))
    print(f"{len(found)} hold(s)")
    return OK


def _read_back(hold: dict[str, Any]) -> dict[str, Any]:
    """HOLD with its times as datetimes and `active` a boolean, whatever the server returned (nx-27017: a date
    set with $set comes back as text)."""
    from archiver.mongo import stored_time

    times = {k: stored_time(v) for k, v in hold.items() if k.endswith("_at") and stored_time(v) is not None}
    return {**hold, **times, "active": bool(hold.get("active"))}

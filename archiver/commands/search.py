"""`archiver search`: list index entries by room, date, agent, customer, type, channel, service, status, words."""

from __future__ import annotations

import argparse
import sys
import datetime as dt
import json
import tempfile
from typing import TYPE_CHECKING, Any

import bson
from bson.codec_options import CodecOptions

from archiver.commands.common import ITEMS_FAILED, OK, UsageError, load_config
from archiver.mongo import stored_time
from archiver.visible import visible

if TYPE_CHECKING:
    from archiver.config import Config
    from archiver.search import SearchFilters
    from archiver.unarchived import NotArchived

HELP = "list archived chats matching filters (metadata and keyed word hashes; nothing is decrypted)"
EXAMPLE = ("archiver --config archiver.toml search --customer 4747235938674011 --from 2024-01-01 --text refund --json\n"
           "  archiver --config archiver.toml search --from 2025-03-01 --to 2025-03-31 --overlapping   "
           "# every chat of March, begun or ended in it or across it")
SPOOLED = CodecOptions(tz_aware=True)  # times read back as the UTC they were written as
BOTH_MARK = "*"  # after an AGENTS id that is also a customer, explained under the table
NAMED_MARK = "+"  # after an AGENTS id the contact names who wrote nothing (handled_by, present), explained too
NAMED_NOTE = (f"{NAMED_MARK} named by the contact, who wrote nothing: its agentID, or an agent it names in `users` or "
              "as an event's origin (transferred to, joined)")
STATUSES = ("archived", "uploading", "superseded", "deleted")  # what an index entry's status can be (archiver/index.py)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--room", help="exactly this room id")
    add_filter_arguments(p)
    p.add_argument("--json", action="store_true", help="a JSON array of entries (fields in docs/search.md)")
    add_actor(p)


def add_filter_arguments(p: argparse.ArgumentParser) -> None:
    """Every filter but --room (also used by `retrieve --bundle`)."""
    p.add_argument("--from", dest="ended_from", metavar="DATE", help="ended on or after DATE (ISO, UTC)")
    p.add_argument("--to", dest="ended_to", metavar="DATE", help="ended on or before DATE (a bare date: that whole day)")
    add_overlapping(p)
    p.add_argument("--agent", metavar="ID", help="an agent's user id wrote in, handled or was transferred to the chat")
    p.add_argument("--customer", metavar="ID", help="a customer's user id wrote in or opened the chat")
    p.add_argument("--type", dest="ctlive_type", metavar="T", help="ctlive_type (chat, cbn, call...)")
    p.add_argument("--channel", metavar="C", help="the customer's channel (web, whatsapp...)")
    p.add_argument("--service", metavar="S", help="the service name")
    p.add_argument("--status", metavar="S", choices=STATUSES,
                   help="index status: archived, uploading, superseded (an interrupted attempt taken over) or deleted "
                        "(a tombstone)")
    p.add_argument("--text", metavar="WORDS", help="every one of these words occurs in the text of the chat's "
                   "messages (not in URLs, file names or the contact's fields; needs search.key_file)")


OVERLAPPING_HELP = ("with --from/--to: chats whose span, from their start (else first message) to their end, "
                    "overlaps that period, not only those that ended in it (one without a start: by its end)")


def add_overlapping(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    p.add_argument("--overlapping", action="store_true", default=None, help=OVERLAPPING_HELP, **kwargs)


def add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default="",
                   help="on whose behalf, for the audit log (beside the OS user and host, which are always recorded)")


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor, AuditError, open_audit_log
    from archiver.search import open_search

    config = load_config(args)
    filters = filters_from(args, args.room)
    searcher, log = open_search(config), open_audit_log(config)
    actor = Actor.current(args.actor)
    with tempfile.TemporaryFile() as spool:
        try:  # every result is found before any is shown, so that the entry names what is shown
            rooms = _spool(searcher.find(filters), spool)
            missing = unarchived_of(config, filters)
        except Exception as exc:
            log.record("search", actor, outcome="failed", filters=filters.given(), detail=str(exc))
            raise
        try:
            log.record("search", actor, outcome="ok", filters=filters.given(), rooms=rooms,
                       detail=f"{len(rooms)} entr{'y' if len(rooms) == 1 else 'ies'}" + (
                           f"; {missing.count} chat(s) of the window not archived" if missing and missing.count else ""))
        except AuditError as exc:
            print(f"archiver: error: {exc}; nothing was shown", file=sys.stderr)
            return ITEMS_FAILED
        spool.seek(0)
        _print(bson.decode_file_iter(spool, SPOOLED), args.json)
    for line in missing.lines() if missing else []:  # on stderr: --json's stdout stays the entries alone
        print(f"WARNING: {line}" if not line.startswith(" ") else line, file=sys.stderr)
    for note in _without_start(searcher, filters) if rooms else []:
        print(f"note: {note}", file=sys.stderr)
    note = searcher.text_note() if filters.text is not None else ""  # (a count over the index: asked once)
    for note in (note, searcher.agent_note(filters)):
        if note:
            print(f"note: {note}", file=sys.stderr)
    if not rooms:
        notes = searcher.exact_notes(filters)  # "0 entries" must not read as "no such chats"
    else:  # chats of the customer erased at another customer's request are not in the list: said beside it
        notes = searcher.erased_note(filters.customer) if filters.customer is not None else []
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return OK


def _without_start(searcher, filters: SearchFilters) -> list[str]:
    """With --overlapping: the entries found that have no recorded start, so were placed by their end alone."""
    count, rooms = searcher.without_start(filters)
    if not count:
        return []
    more = f", and {count - len(rooms)} more" if count > len(rooms) else ""
    return [visible(f"{count} of these entries {'has' if count == 1 else 'have'} no recorded start: placed by their end "
                    f"time alone: {', '.join(rooms)}{more}")]


def unarchived_of(config: Config, filters: SearchFilters) -> NotArchived | None:
    """The chats of FILTERS' window the archive does not hold (unarchived.not_archived); None for a search of
    index statuses other than archived (tombstones, unfinished uploads), which asks of the index alone."""
    from archiver.unarchived import not_archived

    return None if filters.status not in (None, "archived") else not_archived(config, filters)


def _spool(found, spool) -> list[str]:
    """FOUND's entries into SPOOL (BSON, on disk: a broad search is not held in memory); their rooms."""
    rooms = []
    for entry in found:
        rooms.append(entry["room"])
        spool.write(bson.encode(entry, codec_options=SPOOLED))
    return rooms


def filters_from(args: argparse.Namespace, room: str | None = None):
    """The SearchFilters of ARGS (options of `add_filter_arguments`)."""
    from archiver.search import SearchFilters

    ended_from, ended_to = date_window(args)  # (free text was screened by load_config: commands.stated)
    return SearchFilters(room=room, ended_from=ended_from, ended_to=ended_to, agent=args.agent,
                         customer=args.customer, ctlive_type=args.ctlive_type, channel=args.channel,
                         service=args.service, status=args.status, text=args.text, overlapping=args.overlapping)


def date_window(args: argparse.Namespace) -> tuple[dt.datetime | None, dt.datetime | None]:
    """--from and --to as datetimes; --from after --to holds no time at all, so it is a usage error
    rather than an empty answer (or a hold that covers nothing), and so is --overlapping without either."""
    start, end = _date(args.ended_from, "--from", end=False), _date(args.ended_to, "--to", end=True)
    if getattr(args, "overlapping", None) and start is None and end is None:
        raise UsageError("--overlapping needs --from and/or --to: it says how a chat is placed in that period")
    if start is not None and end is not None and start > end:
        raise UsageError(f"--from {args.ended_from!r} is after --to {args.ended_to!r}: that window holds no time "
                         "(a date without a time as --to covers that whole day)")
    return start, end


def _date(text: str | None, option: str, *, end: bool) -> dt.datetime | None:
    from archiver.search import parse_date

    if text is None:
        return None
    try:
        return parse_date(text, end=end)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _print(found, as_json: bool) -> None:
    """Print entries as they stream in."""
    count = 0
    if as_json:
        print("[", end="")
    else:
        print(f"{'ROOM':<49} {'VER':>3}  {'STATUS':<9} {'KIND':<9} {'ENDED/LAST (UTC)':<19}  {'TYPE':<6} "
              f"{'CHANNEL':<10} {'SERVICE':<20} AGENTS")
    marks: set[str] = set()
    for entry in found:
        count += 1
        if as_json:
            print(("," if count > 1 else "") + json.dumps(_jsonable(entry), ensure_ascii=False, sort_keys=True))
        else:
            agents = _agents(entry)
            print(visible(_row(entry, agents)))  # a room id or service name with a newline would forge a row
            marks.update(a[-1] for a in agents if a.endswith((BOTH_MARK, NAMED_MARK)))
    print("]" if as_json else f"{count} entr{'y' if count == 1 else 'ies'}")
    if BOTH_MARK in marks:
        print(f"{BOTH_MARK} also among the chat's customers: its messages state no role for this id, or both")
    if NAMED_MARK in marks:
        print(NAMED_NOTE)


def _row(e: dict[str, Any], agents: list[str]) -> str:
    # KIND: whether the chat had ended (else its time is its last message's: an interim or abandoned chat)
    ended_at = stored_time(e.get("ended_at"))
    ended = ended_at.strftime("%Y-%m-%d %H:%M:%S") if ended_at else "-"
    return (f"{e['room']:<49} {e['version']:>3}  {e.get('status', '-'):<9} {e.get('kind', '-'):<9} {ended:<19}  "
            f"{e.get('ctlive_type', '-'):<6} {e.get('channel', '-'):<10} {e.get('service', '-')[:20]:<20} "
            f"{','.join(agents)}")


def _agents(e: dict[str, Any]) -> list[str]:
    """The AGENTS column: the agents who wrote (BOTH_MARK if also customers), then those the contact names who wrote
    nothing (NAMED_MARK): whom --agent also finds the chat by."""
    authors, both = _ids(e.get("agents")), _both(e)
    named = [a for a in dict.fromkeys([*_ids([e.get("handled_by")]), *_ids(e.get("present"))])
             if a and a not in authors]
    return [a + BOTH_MARK if a in both else a for a in authors] + [a + NAMED_MARK for a in named]


def _both(e: dict[str, Any]) -> set[str]:
    """The ids in both AGENTS and CUSTOMERS: role not stated, or stated as both (docs/search.md)."""
    return set(_ids(e.get("agents"))) & set(_ids(e.get("customers")))


def _ids(value: Any) -> list[str]:
    """The text ids of an entry's people field (a list of text, unless edited by hand)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    # the entry's own times (a stand-in may return them as text) in one format: ISO 8601 UTC
    times = {k: iso_time(stored_time(v)) for k, v in entry.items() if k.endswith(("_at", "_until")) and stored_time(v)}
    return json.loads(json.dumps({**entry, **times}, default=iso_time))


def iso_time(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(value)

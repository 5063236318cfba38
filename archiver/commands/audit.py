"""`archiver audit verify|list`: check the hash chain of the audit log, or show it."""

from __future__ import annotations

import argparse
import json

from archiver.commands.common import OK, VERIFY_FAILED, load_config
from archiver.visible import visible

HELP = "the hash-chained audit log of searches, retrievals and verifications: check it or list it"
EXAMPLE = "archiver --config archiver.toml audit verify"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["verify", "list"], help="verify: check the chain; list: show the entries")
    p.add_argument("--json", action="store_true",
                   help="list: a JSON array of entries; verify: a JSON object {ok, entries, head, problems}")


def run(args: argparse.Namespace) -> int:
    from archiver.audit import open_audit_log

    log = open_audit_log(load_config(args))
    if args.action == "list":
        return _list(log, args.json)
    problems = log.verify()
    head = log.head()
    if args.json:
        print(json.dumps({"ok": not problems, "entries": head["seq"] if head else 0,
                          "head": {"seq": head["seq"], "hash": head["hash"]} if head else None,
                          "problems": [{"seq": p.seq, "problem": p.problem} for p in problems]}))
        return VERIFY_FAILED if problems else OK
    for problem in problems:
        print(f"BROKEN {problem}")
    if problems:
        return VERIFY_FAILED
    print(f"audit log intact: {head['seq'] if head else 0} entries, head {head['hash'] if head else '-'}")
    return OK


def _list(log, as_json: bool) -> int:
    if as_json:
        print("[", end="")
        for n, entry in enumerate(log.entries()):  # streamed: the log may be long
            print(("," if n else "") + json.dumps(entry, ensure_ascii=False), end="\n")
        print("]")
        return OK
    for e in log.entries():
        rooms = ",".join(e["rooms"][:5]) + ("…" if len(e["rooms"]) > 5 else "")
        print(visible(f"{e['seq']:>6}  {e['at']}  {e['actor']['user']}@{e['actor']['host']}  {e['action']:<9} "
                      f"{e['outcome']:<7} reason={e['reason']!r} rooms={rooms} {e['detail']}"))  # one line each
    return OK

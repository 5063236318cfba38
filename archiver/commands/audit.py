"""`archiver audit verify|list`: check the hash chain of the audit log, or show it."""

from __future__ import annotations

import argparse
import json

from archiver.commands.common import OK, VERIFY_FAILED, load_config
from archiver.visible import visible

HELP = "the hash-chained audit log of searches, retrievals and verifications: check it or list it"
EXAMPLE = ("archiver --config archiver.toml audit verify"
           "\n  archiver --config archiver.toml audit list --json")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["verify", "list"], help="verify: check the chain; list: show the entries")
    p.add_argument("--json", action="store_true",
                   help="list: a JSON array of entries; verify: a JSON object {ok, entries, head, sealed_heads, last_sealed_seq, "
                        "problems}")


def run(args: argparse.Namespace) -> int:
    from archiver.audit import read_audit_log
    from archiver.seals import sealed_audit_heads

    config = load_config(args)
    log = read_audit_log(config)  # reads only: an auditor's read-only role suffices
    if args.action == "list":
        return _list(log, args.json)
    sealed = sealed_audit_heads(config)
    problems = log.verify(sealed)
    head = log.head()
    last = max((h.seq for h in sealed), default=0)
    if args.json:
        print(json.dumps({"ok": not problems, "entries": head.get("seq") if head else 0,
                          "head": {"seq": head.get("seq"), "hash": head.get("hash")} if head else None,
                          "sealed_heads": len(sealed), "last_sealed_seq": last or None,
                          "problems": [{"seq": p.seq, "problem": p.problem} for p in problems]}, default=str))
        return VERIFY_FAILED if problems else OK
    for problem in problems:
        print(visible(f"BROKEN {problem}"))
    if problems:
        return VERIFY_FAILED
    print(f"audit log intact: {head['seq'] if head else 0} entries, head {head['hash'] if head else '-'}")
    print(f"  {len(sealed)} sealed head(s) checked" + (
        f"; entries up to {last} are vouched for by the seals, entries after {last} by the chain alone (an "
        "edit with every later hash recomputed, or removed newest entries, cannot be told there)"
        if last else "; no seal vouches for any entry: an edit with every later hash recomputed, or removed "
        "newest entries, cannot be told (`archiver seal` records the head)"))
    return OK


def _list(log, as_json: bool) -> int:
    if as_json:
        print("[", end="")
        for n, entry in enumerate(log.entries()):  # streamed: the log may be long
            print(("," if n else "") + json.dumps(entry, ensure_ascii=False, default=str), end="\n")
        print("]")
        return OK
    for e in log.entries():
        rooms = ",".join(e["rooms"][:5]) + ("…" if e.get("rooms_total", len(e["rooms"])) > 5 else "")
        who = f"{e['actor']['user']}@{e['actor']['host']}" + (
            f" for {e['actor']['on_behalf_of']}" if e["actor"].get("on_behalf_of") else "")
        total = e.get("rooms_total", len(e["rooms"]))
        print(visible(f"{e['seq']:>6}  {e['at']}  {who}  {e['action']:<9} "
                      f"{e['outcome']:<7} reason={e['reason']!r} rooms={rooms} ({total}) {e['detail']}"))  # one line each
    return OK

"""`archiver retrieve ROOM`: fetch, decrypt, verify and write one archived chat, for a stated reason."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from archiver.commands.common import ITEMS_FAILED, OK, USAGE, VERIFY_FAILED, UsageError, load_config
from archiver.commands.search import add_actor

HELP = "fetch, decrypt and verify one archived chat; write its files and verification.json (audited)"
EXAMPLE = ("archiver --config archiver.toml retrieve CHAT_DEFAULT_8857106a --key legal.key.pem "
           "--out ./case-42 --reason 'case 42: customer complaint'")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("room", metavar="ROOM", help="the chat's room id")
    p.add_argument("--key", required=True, metavar="PEM", help="the legal team's private key (PEM)")
    p.add_argument("--out", required=True, metavar="DIR", help="files go to DIR/<room>-v<N>/ (nothing on failure)")
    p.add_argument("--reason", metavar="TEXT", help="why (required; recorded in the audit log)")
    p.add_argument("--version", type=int, metavar="N", help="this version (default: the latest archived)")
    p.add_argument("--cert", action="append", default=[], metavar="PEM",
                   help="the key's recipient certificate (default: found in --key or encryption.recipients)")
    p.add_argument("--ca", action="append", default=[], metavar="PEM",
                   help="trust anchor: the signatures must chain to it (repeatable)")
    add_actor(p)


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor, open_audit_log
    from archiver.envelope import EnvelopeError, RecipientKey
    from archiver.retrieval import NotFound, Request, VerificationFailed, retrieve

    config = load_config(args)
    log, actor = open_audit_log(config), Actor.current(args.actor)
    reason = (args.reason or "").strip()

    def audited(outcome: str, detail: str, code: int) -> int:
        log.record("retrieve", actor, outcome=outcome, reason=reason, rooms=[args.room],
                   filters={"version": args.version}, detail=detail)
        if code:
            print(f"archiver: error: {detail}", file=sys.stderr)
        return code

    if not reason:
        return audited("refused", "--reason is required: say why this chat is retrieved (case, request)", USAGE)
    try:
        request = Request(args.room, RecipientKey.load(args.key, [*args.cert, *config["encryption.recipients"]]),
                          Path(args.out), reason, actor, args.version, load_trust(args.ca))
        folder = retrieve(config, request)
    except NotFound as exc:
        return audited("failed", str(exc), ITEMS_FAILED)
    except (EnvelopeError, FileExistsError, UsageError) as exc:
        return audited("failed", str(exc), USAGE)
    except VerificationFailed as exc:
        return audited("failed", str(exc), VERIFY_FAILED)
    except Exception as exc:
        audited("failed", f"{type(exc).__name__}: {exc}", 0)
        raise
    audited("ok", f"written to {folder}", OK)
    print(f"{args.room}: verified and written to {folder}")
    for name in sorted(p.name for p in folder.iterdir()):
        print(f"  {folder / name}")
    return OK


def load_trust(paths: list[str]) -> tuple:
    from cryptography import x509

    certs = []
    for path in paths:
        try:
            certs.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise UsageError(f"--ca {path}: not a readable PEM certificate ({exc})") from None
    return tuple(certs)

"""`archiver retrieve ROOM`: fetch, decrypt, verify and write one archived chat, for a stated reason;
`--bundle FILE.zip`: many (rooms or search filters) in a case bundle."""

from __future__ import annotations

import argparse
import json
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from archiver.commands.common import (ITEMS_FAILED, OK, RETRY, UNREACHABLE, USAGE, VERIFY_FAILED, UsageError,
                                      add_key_password_option, load_config, outside_store, progress_line,
                                      recipient_key)
from archiver.commands.search import add_actor, add_filter_arguments, filters_from
from archiver.visible import visible

if TYPE_CHECKING:
    from archiver.config import Config
    from archiver.search import Search, SearchFilters

HELP = ("fetch, decrypt and verify one archived chat; write its files and verification.json; "
        "or, with --bundle, many chats in a case bundle (audited)")
EXAMPLE = ("archiver --config archiver.toml retrieve CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a --key legal.key.pem "
           "--out ./case-42 --reason 'case 42: customer complaint'\n"
           "  archiver --config archiver.toml retrieve --bundle case-42.zip --key legal.key.pem "
           "--reason 'case 42' --customer 4747235938674011 --from 2024-01-01\n"
           "  archiver --config archiver.toml retrieve --bundle march.zip --key legal.key.pem "
           "--reason 'production request' --from 2025-03-01 --to 2025-03-31 --overlapping")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rooms", nargs="*", metavar="ROOM", help="the chat's room id (with --bundle: one or more)")
    p.add_argument("--key", required=True, metavar="PEM", help="the legal team's private key (PEM)")
    add_key_password_option(p)
    p.add_argument("--out", metavar="DIR", help="files go to DIR/<room>-v<N>/ (nothing on failure)")
    p.add_argument("--bundle", metavar="FILE.zip",
                   help="a case bundle of the ROOMs (or of the search filters' entries) instead of --out")
    p.add_argument("--reason", metavar="TEXT", help="why (required; recorded in the audit log, and written into "
                   "verification.json and a bundle's chain-of-custody.json: the files handed over)")
    p.add_argument("--version", type=version_number, metavar="N", help="this version (default: the latest archived)")
    p.add_argument("--cert", action="append", default=[], metavar="PEM",
                   help="the key's recipient certificate (default: found in --key or encryption.recipients)")
    p.add_argument("--ca", action="append", default=[], metavar="PEM",
                   help="trust anchor: the signatures must chain to it (repeatable)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="with --bundle: check content in N processes (default 0: one per CPU; 1: in this one)")
    p.add_argument("--no-progress", action="store_true", help="with --bundle: no progress line on stderr")
    add_actor(p)
    filters = p.add_argument_group("search filters, with --bundle instead of ROOMs (as `archiver search`)")
    add_filter_arguments(filters)


def version_number(text: str) -> int:
    """--version N: a positive 64-bit integer (what the index can hold), else a usage error."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number < 2**63:
        raise argparse.ArgumentTypeError(f"a version number from 1 to {2**63 - 1}, not {text!r}")
    return number


def unaudited(exc: Exception, what: str) -> int:
    """The audit log refused an entry: WHAT was (not) done instead, and exit 1."""
    print(f"archiver: error: {exc}; {what}", file=sys.stderr)
    return ITEMS_FAILED


def run(args: argparse.Namespace) -> int:
    from archiver.audit import Actor, AuditError, open_audit_log
    from archiver.retrieval import NOT_PINNED, Request, retrieve, signer_pins

    if args.bundle:
        return run_bundle(args)
    if len(args.rooms) != 1 or not args.out or _filters_given(args):
        raise UsageError("give one ROOM and --out DIR (or --bundle FILE.zip with ROOMs or search filters)")
    args.room = args.rooms[0]
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
    try:  # the intent first: a retrieval the log cannot hold is not made
        audited("started", "to be fetched, decrypted and verified", OK)
    except AuditError as exc:
        return unaudited(exc, "nothing was fetched or decrypted")
    try:
        request = Request(args.room, recipient_key(args, config),
                          _out_folder(outside_store(Path(args.out), config, "--out")), reason, actor, args.version,
                          load_trust(args.ca, config),
                          signer_pins(config))
        folder = retrieve(config, request, lambda target: audited("ok", f"verified; released to {target}", OK))
    except AuditError as exc:
        return unaudited(exc, "nothing was released: the decrypted files were removed")
    except Exception as exc:
        return _failed(exc, audited)
    print(visible(f"{args.room}: verified and written to {folder}"))
    written = json.loads((folder / "verification.json").read_text(encoding="utf-8"))
    versions = written["versions"]
    if written.get("note"):  # a version whose deletion was begun, then kept by a hold
        print(visible(f"  NOTE: {written['note']}"))
    if len(versions) > 1:  # a version is a content, not "the" chat: say which others there are
        listed = ", ".join(f"v{v['version']} {v.get('status')}" + (f" ({v['kind']})" if v.get("kind") else "")
                           for v in versions)
        print(f"  the room has {len(versions)} versions: {listed}; another with --version N")
    if not request.trust:
        print(f"WARNING: {UNTRUSTED}")
    if request.pinned is None:
        print(f"WARNING: signers NOT pinned: {NOT_PINNED}")
    for name in sorted(p.name for p in folder.iterdir()):
        print(f"  {folder / name}")
    return OK


def _out_folder(path: Path) -> Path:
    """--out as a folder that is there or can be made (made when the files are written): a file in the
    way is a usage error, said before anything is fetched."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--out {path}: not a directory" + ("" if existing == path else f" ({existing} is a file)"))
    return path


def load_trust(paths: list[str], config: Config) -> tuple:
    """The trust anchors: the --ca PATHS and the configured signing.trust_anchors."""
    from cryptography import x509

    from archiver.certificates import private_key_refusal
    from archiver.redact import key_material_refusal

    certs = []
    for setting, path in [*(("--ca", p) for p in paths), *(("signing.trust_anchors", p) for p in
                                                           config["signing.trust_anchors"])]:
        unreadable = key_material_refusal(setting, path)  # a PEM (of a key, even) instead of a path: not quoted
        try:
            data = Path(path).read_bytes()
            certs.extend(x509.load_pem_x509_certificates(data))
        except (OSError, ValueError) as exc:
            raise UsageError(unreadable or f"{setting} {path}: not a readable PEM certificate ({exc})") from None
        refusal = private_key_refusal(data, f"{setting} {path}")
        if refusal:  # a CA's key has no business beside its certificate here
            raise UsageError(refusal)
    return tuple(certs)


UNTRUSTED = ("signers NOT checked against a trust anchor (give --ca PEM or set signing.trust_anchors): the "
             "signatures are intact and made by the certificates the index names, but anyone can make such a "
             "signature")


_FILTERS = ("ended_from", "ended_to", "agent", "customer", "ctlive_type", "channel", "service", "status", "text")


def _failed(exc: Exception, audited: Callable[[str, str, int], int]) -> int:
    """The exit code of a failed retrieval or bundle, audited; an unforeseen error is audited and raised."""
    from pymongo.errors import ConnectionFailure

    from archiver.audit import AuditError
    from archiver.bundle import NothingSelected
    from archiver.certificates import NotValidNow
    from archiver.mongo import unreachable_reason
    from archiver.envelope import EnvelopeError
    from archiver.retrieval import NotFound, VerificationFailed
    from archiver.signing import SigningError
    from archiver.store import StoreUnreachable

    if isinstance(exc, StoreUnreachable):  # an outage, not a verdict on the chat: retry when the store is back
        return audited("unreachable", f"{exc}; {RETRY}", UNREACHABLE)
    if isinstance(exc, ConnectionFailure):  # MongoDB lost half-way: the audit log, there too, may not take it
        lost = (f"MongoDB could not be reached (index.uri, else mongodb.uri: {unreachable_reason(exc)}); nothing "
                f"was released; {RETRY}")
        try:
            return audited("unreachable", lost, UNREACHABLE)
        except AuditError:
            print(f"archiver: error: {lost} (the audit log could not record this either)", file=sys.stderr)
            return UNREACHABLE
    for kinds, code in (((NotFound, NothingSelected), ITEMS_FAILED),
                        ((EnvelopeError, FileExistsError, UsageError, SigningError, NotValidNow), USAGE),
                        ((VerificationFailed,), VERIFY_FAILED)):
        if isinstance(exc, kinds):
            return audited("failed", str(exc), code)
    audited("failed", f"{type(exc).__name__}: {exc}", 0)
    raise exc


def _filters_given(args: argparse.Namespace) -> bool:
    """Whether ARGS set a search filter (--overlapping, which needs --from or --to, counts: not silently dropped)."""
    return any(getattr(args, name) is not None for name in (*_FILTERS, "overlapping"))


def _filters_as_given(args: argparse.Namespace) -> str:
    """The search filters as the user typed them (`--from 2030-01-01 --service 'Billing desk'`)."""
    options = {"ended_from": "--from", "ended_to": "--to", "ctlive_type": "--type"}
    return " ".join([f"{options.get(name, '--' + name)} {shlex.quote(getattr(args, name))}"
                     for name in _FILTERS if getattr(args, name) is not None] + ["--overlapping"] * bool(args.overlapping))


def run_bundle(args: argparse.Namespace) -> int:
    """`--bundle FILE.zip`: every selected chat verified into one zip, or nothing written (audited either way)."""
    from archiver.audit import Actor, AuditError, open_audit_log
    from archiver.bundle_signer import NOT_SIGNED_WARNING, configured_bundle_signer, transcript_key_configured
    from archiver.bundle import BundleRequest, NothingSelected, build, gaps_text, left_out, select
    from archiver.retrieval import Request, signer_pins
    from archiver.search import open_search

    if bool(args.rooms) == _filters_given(args) or args.out or args.version is not None:
        raise UsageError("--bundle takes ROOMs (every archived version of each) or search filters (not both, not "
                         "neither), and no --out or --version")
    if args.workers < 0:
        raise UsageError("--workers: must be 0 (one per CPU) or more")
    config = load_config(args)
    log, actor = open_audit_log(config), Actor.current(args.actor)
    reason = (args.reason or "").strip()
    filters = None if args.rooms else filters_from(args)
    scope = {"bundle": args.bundle, **({"rooms": len(args.rooms)} if args.rooms else filters.given())}
    rooms: list[str] = list(args.rooms)

    def audited(outcome: str, detail: str, code: int) -> int:
        log.record("retrieve", actor, outcome=outcome, reason=reason, rooms=rooms, filters=scope, detail=detail)
        if code:
            print(f"archiver: error: {detail}", file=sys.stderr)
        return code

    if not reason:
        return audited("refused", "--reason is required: say why these chats are retrieved (case, request)", USAGE)
    show = None if args.no_progress or not sys.stderr.isatty() else progress_line(
        lambda n: n[0], lambda n: f"bundle: {n[0]}/{n[1]} rooms verified and written", "rooms")
    try:
        request = Request("", recipient_key(args, config),
                          outside_store(Path(args.bundle), config, "--bundle").parent, reason, actor, None,
                          load_trust(args.ca, config),
                          signer_pins(config))
        # never the transcript signing key, nor a certificate of its CA (bundle_signer.py)
        signer = configured_bundle_signer(config, request.trust)
        bundle = BundleRequest(Path(args.bundle), request, tuple(args.rooms), filters,
                               args.workers or os.cpu_count() or 1)
        search = open_search(config)
        try:
            targets = select(config, search, bundle)
        except NothingSelected:
            if filters is not None:  # as search says them, on stderr alone: they may name others' ids, never audited
                for note in search.exact_notes(filters):
                    print(f"note: {visible(note)}", file=sys.stderr)
            note = search.agent_note(filters) if filters is not None else ""
            raise NothingSelected(f"no archived entry matches {_filters_as_given(args)}"
                                  + (f"; note: {note}" if note else "")) from None
        bundle = dataclasses.replace(bundle, left_out=left_out(config, search, bundle), **_gaps(config, search, filters))
        rooms = [room for room, _ in targets]
        try:  # the intent first: a bundle the log cannot hold is not made
            audited("started", f"bundle {args.bundle}: {len(set(rooms))} chat(s) in {len(rooms)} version(s) to be "
                    "fetched, decrypted and verified", OK)
        except AuditError as exc:
            return unaudited(exc, "nothing was fetched or decrypted")
        made = build(config, bundle, targets, log, signer, (lambda done, total: show((done, total))) if show else None,
                     lambda complete: audited("ok", _bundle_detail(complete), OK))
    except AuditError as exc:
        return unaudited(exc, f"nothing was released: the bundle was removed, nothing is at {args.bundle}")
    except Exception as exc:
        return _failed(exc, audited)
    finally:
        if show:
            sys.stderr.write("\n")
    print(f"bundle written: {made.path}  ({made.counted()}, {made.files} files verified)")
    for line in made.kinds_said() + made.versions_said:  # interim copies; chats with several versions
        print(f"  {line}")
    print(f"  SHA256SUMS sha256 {made.sums_sha256}  manifest {_signed(made)}")
    print("  verify it with openssl, pdfsig, certutil and sha256sum alone: see README.txt inside")
    for kept in made.kept:  # a version whose deletion was begun, then kept by a hold (as `retrieve` prints)
        print(visible(f"  NOTE: {kept}"))
    if bundle.left_out:
        print(f"  {len(bundle.left_out)} matching entr{'y' if len(bundle.left_out) == 1 else 'ies'} not archived, so "
              "not in the bundle (named in chain-of-custody.json):")
        for e in bundle.left_out:
            why = f"deleted by run {e['deleted_by_run']} under rule {e['rule']}" if e.get("deleted_by_run") else e["status"]
            print(visible(f"    {e['room']} v{e['version']}: {why}"))
    # What it cannot hold (with --agent: the entries it may miss, as search says), as its README.txt says
    for n, line in enumerate(gaps_text(bundle).splitlines()):
        print(visible(f"WARNING: {line}" if n == 0 else f"  {line}"))
    if not request.trust:
        print(f"WARNING: {UNTRUSTED}")
    for warning in (NOT_SIGNED_WARNING if signer is None else "", transcript_key_configured(config)):
        if warning:
            print(f"WARNING: {warning}")
    return OK


def _signed(made) -> str:
    """How the bundle's manifest is signed, as stdout and its audit entry say it."""
    from archiver.bundle_signer import BUNDLE_KEYS

    return (f"signed (SHA256SUMS.p7s) by the bundle signer {made.signed_by}" if made.signed else
            f"NOT signed (no bundle signing identity: {BUNDLE_KEYS})")


def _gaps(config: Config, search: Search, filters: SearchFilters | None) -> dict[str, Any]:
    """A bundle by FILTERS: the chats of its window the archive does not hold, with --overlapping the entries
    placed by their end alone, with --text what --text cannot see, and with --agent the entries it may miss
    (bundle.BundleRequest's not_archived, without_start, text_note, text_unsearchable, agent_unindexed)."""
    from archiver.commands.search import unarchived_of

    if filters is None:
        return {}
    unsearchable = search.unsearchable() if filters.text else 0  # (a count over the index: asked once)
    text = {"text_note": search.text_note(unsearchable), "text_unsearchable": unsearchable} if filters.text else {}
    unindexed = search.agent_unindexed(filters)
    agent = {"agent_unindexed": (unindexed, search.agent_note(filters, unindexed))} if unindexed else {}
    return {"not_archived": unarchived_of(config, filters), "without_start": search.without_start(filters), **text,
            **agent}


def _bundle_detail(made) -> str:
    """What the audit entry of a complete bundle says of it."""
    kept = "".join(f"; kept after its deletion was begun: {k}" for k in made.kept[:KEPT_NAMED])
    more = f"; and {len(made.kept) - KEPT_NAMED} more kept (chain-of-custody.json)" if len(made.kept) > KEPT_NAMED else ""
    return (f"bundle {made.path}: {made.counted()}, {made.files} files, {made.bytes} bytes; "
            f"SHA256SUMS sha256 {made.sums_sha256}, manifest {_signed(made)}{kept}{more}")


KEPT_NAMED = 100  # kept versions named in a bundle's audit entry (each with its note); the rest are counted

"""The `archiver` command line. `main(argv)` returns the exit code (see CONTRACT.md)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from pymongo.errors import PyMongoError

from archiver import config as config_module
from archiver import logs
from archiver.config import Config, ConfigError
from archiver.envelope import EnvelopeError
from archiver.render.pdf import TemplateError
from archiver.signing import SigningError
from archiver.store import StoreError

OK, ITEMS_FAILED, USAGE = 0, 1, 2  # 3 is for verification problems (CONTRACT.md)


class UsageError(Exception):
    """Bad arguments or settings: exit 2, nothing done."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archiver",
        description="Archive ended contact-centre chats as signed, encrypted, indexed evidence.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  archiver --config config/archiver.toml run --limit 1000",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration (default: $ARCHIVER_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (helptext, example, add_arguments) in _COMMANDS.items():
        sub = commands.add_parser(
            name, help=helptext, description=helptext, epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(sub)
    return parser


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="demo", help="where keys, store and exports go (default: ./demo)")


def _args_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["init"], help="init: create development keys")
    p.add_argument("dir", metavar="DIR", help="directory for the key and certificate files")


def _args_render(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="INPUT", help="chat documents: JSON, JSON lines, Extended JSON or mongo shell")
    p.add_argument("--out", required=True, metavar="DIR", help="where <room>.pdf, <room>.json(.p7s) go")


def _args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, metavar="N", help="archive at most N chats in this pass")
    p.add_argument("--full", action="store_true", help="rediscover every ended chat, not only recent ones")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def _args_serve(p: argparse.ArgumentParser) -> None:
    pass


def _args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("room", metavar="ROOM", help="the chat's room id")
    p.add_argument("--out", metavar="DIR", help="also write the plaintext signed PDF and JSON here")
    p.add_argument("--force", action="store_true", help="archive a chat that has not ended, marked interim")


def _args_indexes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--create", action="store_true", help="create the source indexes (they are only listed otherwise)")


def _load_config(args: argparse.Namespace) -> Config:
    config = config_module.load(args.config)
    logs.configure(config["logging.level"], config["logging.format"])
    return config


def cmd_keys(args: argparse.Namespace) -> int:
    from archiver.keys import config_lines, create_development_keys

    try:
        paths = create_development_keys(Path(args.dir).resolve())
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    print(f"Development keys written to {Path(args.dir).resolve()}:")
    for name, path in paths.items():
        print(f"  {path}")
    print("\nKeep legal.key.pem away from the archiver: it decrypts archives. Configuration lines:\n")
    print(config_lines(paths))
    return OK


def cmd_render(args: argparse.Namespace) -> int:
    from archiver.offline import render_file

    config = _load_config(args)
    if not config["signing.pkcs12"]:
        config.require("signing.certificate", "signing.key")
    if not Path(args.input).is_file():
        raise UsageError(f"INPUT {args.input}: no such file")
    results = render_file(config, Path(args.input), Path(args.out))
    for line in results.lines:
        print(line)
    print(f"{results.rendered} rendered, {len(results.problems)} failed")
    for problem in results.problems:
        print(f"  FAILED {problem}")
    return ITEMS_FAILED if results.problems else OK


def cmd_run(args: argparse.Namespace) -> int:
    from archiver.pipeline import Archiver

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be 1 or more")
    archiver = Archiver(_load_config(args))
    progress = None if args.no_progress or not sys.stderr.isatty() else _progress_line()
    report = archiver.run_pass(args.limit, full=args.full, progress=progress)
    if progress:
        sys.stderr.write("\n")
    _print_report(report)
    return OK if report.ok else ITEMS_FAILED


def _progress_line() -> Callable:
    started = time.monotonic()

    def show(report) -> None:
        rate = report.handled / max(time.monotonic() - started, 1e-6)
        sys.stderr.write(f"\r{report.handled} chats ({report.archived} archived, {len(report.failed)} failed, "
                         f"{len(report.quarantined)} quarantined)  {rate:.1f}/s ")
        sys.stderr.flush()
    return show


def _print_report(report) -> None:
    rate = report.archived / report.seconds if report.seconds else 0.0
    print(f"discovered {report.discovered}, archived {report.archived}, unchanged {report.unchanged}, "
          f"failed {len(report.failed)}, quarantined {len(report.quarantined)} "
          f"in {report.seconds:.1f} s ({rate:.1f} chats/s)")
    for room, error in report.failed.items():
        print(f"  FAILED {room}: {error}")
    for room, reason in report.quarantined.items():
        print(f"  QUARANTINED {room}: {reason}")
    if report.leases_lost:
        print(f"  {len(report.leases_lost)} chat(s) left to other workers after this one's lease ran out "
              "(a stall longer than archive.lease_seconds)")
    if report.worker_deaths:
        print(f"  {report.worker_deaths} worker process(es) died during the pass (killed by the system: memory?)")


def cmd_serve(args: argparse.Namespace) -> int:
    from archiver.jobs import serve

    return serve(_load_config(args))


def cmd_export(args: argparse.Namespace) -> int:
    from archiver.offline import export_room

    outcome = export_room(_load_config(args), args.room, Path(args.out) if args.out else None, args.force)
    for line in outcome.lines:
        print(line)
    return OK if outcome.ok else ITEMS_FAILED


def cmd_indexes(args: argparse.Namespace) -> int:
    from archiver.mongo import connect
    from archiver.source import ChatSource

    config = _load_config(args)
    config.require("mongodb.uri")
    db = connect(config["mongodb.uri"])[config["source.database"]]
    source = ChatSource(db, config["source.chats"], config["source.contacts"], config["source.messages"])
    for ix in source.required_indexes():
        keys = ", ".join(f"{k}: {d}" for k, d in ix.keys)
        print(f"{config['source.database']}.{ix.collection}  {{{keys}}}  name={ix.name}  ({ix.why})")
    if args.create:
        for name in source.create_indexes():
            print(f"created {name}")
    return OK


def cmd_demo(args: argparse.Namespace) -> int:
    from archiver.demo import run_demo

    return run_demo(Path(args.dir))


_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": ("make keys, seed sample chats, archive them into a local store and show the result",
             "archiver demo --dir /tmp/archiver-demo", _args_demo),
    "keys": ("create development signing and recipient keys", "archiver keys init ./keys", _args_keys),
    "render": ("render chat documents from a file to signed PDF and JSON, offline",
               "archiver --config archiver.toml render chats.jsonl --out ./out", _args_render),
    "run": ("one archive pass over ended chats", "archiver --config archiver.toml run --limit 5000", _args_run),
    "serve": ("run the scheduled jobs until stopped (SIGTERM finishes the chat in hand)",
              "archiver --config archiver.toml serve", _args_serve),
    "export": ("archive one room now; optionally also write its plaintext files",
               "archiver --config archiver.toml export CHAT_DEFAULT_8857106a --out ./case-42", _args_export),
    "indexes": ("list (or create) the source indexes the archiver relies on",
                "archiver --config archiver.toml indexes --create", _args_indexes),
}
_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo, "keys": cmd_keys, "render": cmd_render, "run": cmd_run, "serve": cmd_serve,
    "export": cmd_export, "indexes": cmd_indexes,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return int(exc.code or 0)
    try:
        return _HANDLERS[args.command](args)
    except (UsageError, ConfigError, SigningError, EnvelopeError, TemplateError) as exc:
        print(f"archiver: error: {exc}", file=sys.stderr)
        return USAGE
    except PyMongoError as exc:  # the database is down or refuses us: say so, no traceback
        print(f"archiver: error: MongoDB: {exc}", file=sys.stderr)
        return ITEMS_FAILED
    except (StoreError, OSError) as exc:
        print(f"archiver: error: {exc}", file=sys.stderr)
        return ITEMS_FAILED


def run_console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run_console()

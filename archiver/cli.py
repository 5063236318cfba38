"""The `archiver` command line. `main(argv)` returns the exit code (see docs/cli.md).

The commands live in `archiver/commands/`, one module each; this module builds the
parser and turns the errors every command can meet into exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn, Sequence

from bson.errors import BSONError
from pymongo.errors import ConfigurationError, ConnectionFailure, PyMongoError

from archiver.audit import AuditError
from archiver.commands import COMMANDS
from archiver.commands.common import BROKEN_PIPE, ITEMS_FAILED, RETRY, UNREACHABLE, USAGE, UsageError
from archiver.config import ConfigError
from archiver.envelope import EnvelopeError
from archiver.mongo import Unreachable, unreachable_reason
from archiver.redact import redact
from archiver.render.pdf import TemplateError
from archiver.signing import SigningError
from archiver.store import StoreError, StoreUnreachable, unreachable
from archiver.visible import utf8_safe, visible


class _ParserExit(Exception):
    """argparse is done (--help shown, or a usage error printed): exit with CODE."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse without sys.exit: main(argv) returns the exit code and never exits the caller's process."""

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _ParserExit(status)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own (of the same class: add_subparsers makes them so)."""
    parser = _Parser(
        prog="archiver",
        description="Archive ended contact-centre chats as signed, encrypted, indexed evidence.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  cp config/archiver.example.toml archiver.toml   # then edit it\n"
               "  archiver --config archiver.toml run --limit 1000",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration (default: $ARCHIVER_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subs = {}
    for name, module in COMMANDS.items():
        subs[name] = commands.add_parser(
            name, help=module.HELP, description=module.HELP, epilog=f"example:\n  {module.EXAMPLE}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(subs[name])
    return parser, subs


def main(argv: Sequence[str] | None = None) -> int:
    parser, subs = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no command: what there is to do, as a usage error
        print(parser.format_help(), end="", file=sys.stderr)
        return USAGE
    try:
        args = parser.parse_args(argv)
    except _ParserExit as exc:  # --help (0), bad usage (2)
        return exc.code
    try:
        _refuse_non_utf8(args, [*parser._actions, *subs[args.command]._actions])
        code = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a reader gone away is found here, not in the interpreter's last flush
        return code
    except BrokenPipeError:  # `archiver status | head -1`: stop quietly, as a tool stopped by SIGPIPE does
        _silence_stdout()
        return BROKEN_PIPE
    except (UsageError, ConfigError, SigningError, EnvelopeError, TemplateError) as exc:
        return _error(exc, USAGE)
    except ConfigurationError as exc:  # the driver refuses a URI or option (mongodb+srv, say)
        return _error(f"MongoDB configuration: {exc}", USAGE)
    except Unreachable as exc:
        return _unreachable(exc)
    except AuditError as exc:  # an entry the log refused: the command stopped where it could not record
        return _error(exc, ITEMS_FAILED)
    except ConnectionFailure as exc:  # lost during the command: one line, not the topology dump
        return _unreachable(f"MongoDB could not be reached ({unreachable_reason(exc)})")
    except (PyMongoError, BSONError) as exc:  # the database refuses us or sends what cannot be read
        return _error(f"MongoDB: {exc}", ITEMS_FAILED)
    except StoreUnreachable as exc:  # its message names the settings and where they point
        return _unreachable(exc)
    except StoreError as exc:  # an outage (storage.url or storage.endpoint_url down) is no item's failure
        if unreachable(exc):
            return _unreachable(f"the store could not be reached (storage.url, storage.endpoint_url): {exc}")
        return _error(exc, ITEMS_FAILED)
    except OSError as exc:
        return _error(exc, ITEMS_FAILED)


def _refuse_non_utf8(args: argparse.Namespace, actions: list[argparse.Action]) -> None:
    """Refuse an argument that is not valid UTF-8 before any work: argv bytes that are not UTF-8 arrive as
    surrogates (U+DC80-U+DCFF), which the audit log (UTF-8) could not record once the work was done."""
    names = {a.dest: a.option_strings[0] if a.option_strings else str(a.metavar or a.dest) for a in actions}
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not _is_utf8(text):
                raise UsageError(f"{names.get(dest, dest)}: '{visible(utf8_safe(text))}' is not valid UTF-8; "
                                 "arguments must be UTF-8 text (nothing done)")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for the reader that left is dropped on exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (called in-process, captured)
        pass


def _error(message: object, code: int) -> int:
    """Print MESSAGE (credentials in URIs redacted) as the command's error; CODE is the exit code."""
    print(f"archiver: error: {redact(str(message))}", file=sys.stderr)
    return code


def _unreachable(message: object) -> int:
    """A service the work needs did not answer (MESSAGE names it): the work was not all done, exit 1."""
    return _error(f"{message}; {RETRY}", UNREACHABLE)


def run_console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run_console()

"""What every command shares: exit codes, usage errors and loading the configuration."""

from __future__ import annotations

import argparse
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from archiver import config as config_module
from archiver import logs
from archiver.config import Config
from archiver.files import NoHardLinks, check_hard_links

if TYPE_CHECKING:
    from archiver.envelope import RecipientKey

OK, ITEMS_FAILED, USAGE, VERIFY_FAILED = 0, 1, 2, 3  # the exit codes the README documents
# A service the work needs (MongoDB, the store) could not be reached: the contract has exit codes 0-3 only, and
# the work asked was not (all) done, so exit 1, with a message naming the service that says so.
UNREACHABLE = ITEMS_FAILED
RETRY = "the command may be retried once it can be reached"
BROKEN_PIPE = 141  # the output's reader went away (`| head`): 128 + SIGPIPE, as a shell reports such a tool


class UsageError(Exception):
    """Bad arguments or settings: exit 2, nothing done."""


# The environment settings are read from (None: os.environ). `archiver demo` sets it empty for its steps, which
# run on the demo's own settings alone: no ARCHIVER_* override, no ARCHIVER_CONFIG.
SETTINGS_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environment", default=None)


def load_config(args: argparse.Namespace) -> Config:
    """The settings; and ARGS' free text through the redaction rules (commands.stated), since every command
    loads them before it records anything."""
    from archiver.commands import stated

    config = config_module.load(args.config, environ=SETTINGS_ENVIRONMENT.get())
    logs.configure(config["logging.level"], config["logging.format"])
    stated.screen(args, config)
    return config


def folder_option(path: Path, option: str) -> Path:
    """OPTION's PATH as an existing or new folder; anything else there is a usage error, before any work."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create it ({exc.strerror or exc})") from None
    return path


def out_folder(path: Path) -> Path:
    """--out as an existing or new folder where files can be added; anything else there is a usage error,
    not a chat's failure."""
    folder_option(path, "--out")
    try:
        check_hard_links(path)
    except NoHardLinks as exc:
        raise UsageError(f"--out {exc.strerror}") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write into it ({exc.strerror or exc})") from None
    return path



def outside_store(path: Path, config: Config, option: str) -> Path:
    """PATH, which a command writes plaintext into, unless it lies in the local store (storage.url file://):
    decrypted transcripts among the encrypted objects, read by operators and backups, which verify would
    name as unexplained. A usage error, said before anything is done."""
    url = config["storage.url"]
    if url.startswith("file://"):
        root = Path(url[len("file://"):]).resolve()
        target = path.resolve()
        if target == root or root in target.parents:
            raise UsageError(f"{option} {path}: inside the archive store (storage.url {url}): plaintext would sit "
                             "among its encrypted objects; choose a folder outside it (nothing done)")
    return path


def progress_line(count: Callable[[Any], int], describe: Callable[[Any], str], unit: str) -> Callable[[Any], None]:
    """A progress line on stderr, rewritten in place: DESCRIBE(report), then COUNT(report) per second."""
    started = time.monotonic()

    def show(report: Any) -> None:
        rate = count(report) / max(time.monotonic() - started, 1e-6)
        sys.stderr.write(f"\r{describe(report)}  {rate:.1f} {unit}/s ")
        sys.stderr.flush()
    return show


def add_key_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-password-file", metavar="FILE",
                        help="the password of an encrypted --key, on the first line of FILE (without it, a "
                             "terminal asks for it)")


def recipient_key(args: argparse.Namespace, config: Config) -> RecipientKey:
    """The legal team's key --key names (envelope.RecipientKey), opened with --key-password-file's password or,
    on a terminal, the one typed at the prompt."""
    import getpass

    from archiver.envelope import RecipientKey, read_password_file

    password = read_password_file(args.key_password_file) if args.key_password_file else None
    ask = ((lambda: getpass.getpass(f"password of --key {args.key}: ").encode("utf-8"))
           if password is None and sys.stdin.isatty() else None)
    return RecipientKey.load(args.key, args.cert, password, config["encryption.recipients"], ask)

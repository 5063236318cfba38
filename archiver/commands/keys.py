"""`archiver keys init DIR`: development signing and recipient keys."""

from __future__ import annotations

import argparse
from pathlib import Path

from archiver.commands.common import OK, UsageError, folder_option

HELP = "create development signing and recipient keys"
EXAMPLE = "archiver keys init ./keys"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["init"], help="init: create development keys")
    p.add_argument("dir", metavar="DIR", help="directory for the key and certificate files")


def run(args: argparse.Namespace) -> int:
    from archiver.keys import bundle_config_lines, config_lines, create_development_keys

    folder = folder_option(Path(args.dir), "DIR")  # not a folder, or cannot be made: a usage error naming DIR
    try:
        paths = create_development_keys(folder.resolve())
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"DIR {folder}: cannot write the keys into it ({exc.strerror or exc})") from None
    print(f"Development keys written to {Path(args.dir).resolve()}:")
    for path in paths.values():
        print(f"  {path}")
    print("\nKeep legal.key.pem away from the archiver: it decrypts archives. Configuration lines:\n")
    print(config_lines(paths))
    print(f"The legal team signs case bundles (retrieve --bundle) with its own identity, from a CA of its own "
          f"({paths['bundle-ca.crt.pem'].name}: the CA a bundle's reader checks it against); on the legal team's "
          "host only, whose configuration needs no signing.key (signing.certificate is enough there):\n")
    print(bundle_config_lines(paths))
    return OK

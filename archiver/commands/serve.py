"""`archiver serve`: the scheduled jobs until SIGTERM."""

from __future__ import annotations

import argparse

from archiver.commands.common import load_config

HELP = "run the scheduled jobs until stopped (SIGTERM finishes the chats being built and hands the queued ones back)"
EXAMPLE = "archiver --config archiver.toml serve"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from archiver.jobs import serve

    return serve(load_config(args))

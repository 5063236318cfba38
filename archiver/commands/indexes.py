"""`archiver indexes [--create]`: the source indexes discovery relies on."""

from __future__ import annotations

import argparse

from archiver.commands.common import OK, load_config

HELP = "list (or create) the source indexes the archiver relies on"
EXAMPLE = "archiver --config archiver.toml indexes --create"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--create", action="store_true", help="create the source indexes (they are only listed otherwise)")


def run(args: argparse.Namespace) -> int:
    from archiver.mongo import reachable
    from archiver.source import ChatSource

    config = load_config(args)
    config.require("mongodb.uri")
    db = reachable(config["mongodb.uri"], "mongodb.uri")[config["source.database"]]
    source = ChatSource(db, config["source.chats"], config["source.contacts"], config["source.messages"])
    for ix in source.required_indexes():
        keys = ", ".join(f"{k}: {d}" for k, d in ix.keys)
        print(f"{config['source.database']}.{ix.collection}  {{{keys}}}  name={ix.name}  ({ix.why}): "
              f"{'present' if source.has_index(ix) else 'MISSING'}")
    if args.create:
        for name in source.create_indexes():
            print(f"created {name}")
    return OK

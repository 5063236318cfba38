"""Benchmark: how fast `archiver render` reads chat documents from a file.

Writes N chats as JSON lines (relaxed Extended JSON, as mongoexport writes them),
as one JSON array, and in mongo shell notation, and times archiver.inputs on
each, printing documents/s. Reading must stay linear in the file's size.

    python bench/inputs.py                    # 40,000 chats of 1 message (an endChat), as in issue 8
    python bench/inputs.py --chats 5000 --messages 30
"""

from __future__ import annotations

import argparse
import random
import time

from bson import json_util

from archiver.inputs import ParsedDocument, read_documents
from archiver.samples import make_chat


def shell(chat: dict) -> str:
    """The chat as the mongo shell prints it: ObjectId(...), ISODate(...), NumberLong(...)."""
    text = json_util.dumps(chat, json_options=json_util.RELAXED_JSON_OPTIONS)
    return text.replace('{"$date": "', 'ISODate("').replace('Z"}', 'Z")')


def layouts(chats: list[dict]) -> dict[str, bytes]:
    relaxed = [json_util.dumps(c, json_options=json_util.RELAXED_JSON_OPTIONS) for c in chats]
    return {
        "JSON lines": "\n".join(relaxed).encode(),
        "JSON array": ("[" + ",\n".join(relaxed) + "]").encode(),
        "shell notation": "\n".join(shell(c) for c in chats).encode(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=40_000)
    parser.add_argument("--messages", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(1)
    chats = [make_chat(rng, messages=args.messages)[0] for _ in range(args.chats)]
    for name, data in layouts(chats).items():
        started = time.perf_counter()
        items = read_documents(data)
        seconds = time.perf_counter() - started
        parsed = sum(isinstance(i, ParsedDocument) for i in items)
        assert parsed == len(chats), f"{name}: {parsed} of {len(chats)} read"
        print(f"{name:15} {len(chats):>7,} documents, {len(data) / 1e6:6.1f} MB: {seconds:6.2f} s, "
              f"{len(chats) / seconds:9,.0f} documents/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

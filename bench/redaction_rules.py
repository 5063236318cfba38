"""CPU per chat of redaction under two rule sets, on the bench chats (bench/pipeline.py's generate).

Each chat is redacted under both settings back to back, round after round, so that a shared machine's load
falls on both alike; prints each setting's median and fastest round and the per-round difference.

    python bench/redaction_rules.py                          # ["card"] against the defaults, 300 chats of 30
    python bench/redaction_rules.py --rounds 30 --with-codes  # every chat's first text holds a card and its code
    python bench/redaction_rules.py --base card,cvv --new card,cvv,pin
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import generate

from archiver import config as config_module
from archiver.redaction import Redactor


def redactor(rules: list[str]) -> Redactor:
    return Redactor.from_config(config_module.load(None, environ={}).with_overrides(**{"redaction.rules": rules}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--base", default="card")
    parser.add_argument("--new", default="card,cvv,pin")
    parser.add_argument("--with-codes", action="store_true", help="put a card and its code in every chat")
    args = parser.parse_args()
    chats = generate(args.chats, args.messages)
    if args.with_codes:
        for chat, _ in chats:
            message = next(m for m in chat["messages"] if "text" in m["data"]["content"])
            message["data"]["content"]["text"] = "my card is 4111 1111 1111 1111 exp 12/27 cvv 123 " + \
                message["data"]["content"]["text"]
    settings = {name: redactor(name.split(",")) for name in (args.base, args.new)}
    rounds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        spent = dict.fromkeys(settings, 0.0)
        for chat, contact in chats:
            for name, r in settings.items():
                started = time.process_time()
                r.apply(chat, contact)
                spent[name] += time.process_time() - started
        for name in settings:
            rounds[name].append(spent[name] / len(chats) * 1000)
    for name, times in rounds.items():
        print(f"rules {name}: median {statistics.median(times):.3f} ms of CPU per chat, fastest round {min(times):.3f}")
    diff = [b - a for a, b in zip(rounds[args.base], rounds[args.new])]
    print(f"difference: median {statistics.median(diff):+.3f} ms per chat (rounds {min(diff):+.3f} to {max(diff):+.3f})")


if __name__ == "__main__":
    main()

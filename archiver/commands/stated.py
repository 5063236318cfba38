"""A command's own free text through the redaction rules, before anything records it.

The audit log is hash-chained and append-only, and holds, run reports, tombstones and the files handed over
(verification.json, a bundle's custody report) repeat a reason: what a user types there is kept for good. So
every free-text value a command records goes through the configured redaction rules, and the card rule always
(Redactor.for_stated_text), as a chat's text does:

- a filter (--text, --service, --channel, --type) holding what a rule masks is refused, exit 2, naming the option
  and never the value: the archive holds that only masked (a card number is never a word of the index), so it
  would find nothing or, split into words ("4111 1111 1111 1111"), chats that hold only its pieces;
- a statement (--reason, --case, --actor) is masked and the command goes on, saying so: refusing would make
  the user retype a reason that reads as well masked ("dispute on card 4111 11•• •••• 1111"), and masking is
  deterministic, so `hold release --case` finds a case placed with the same text.

Identifiers (--room, --customer, --agent) are not read: the archive keeps them as they are (redaction.KEPT),
and a customer's numeric id can pass Luhn.
"""

from __future__ import annotations

import argparse
import sys

from archiver.commands.common import UsageError
from archiver.config import Config

FILTERS = {"text": "--text", "service": "--service", "channel": "--channel", "ctlive_type": "--type"}
STATED = {"reason": "--reason", "case": "--case", "actor": "--actor"}
WHAT = {"card": "a card number", "cvv": "a card verification code", "pin": "a PIN", "iban": "an IBAN",
        "email": "an e-mail address"}


def screen(args: argparse.Namespace, config: Config) -> None:
    """Refuse a filter of ARGS that a redaction rule masks; mask what a rule finds in a statement (ARGS changed
    in place, a note on stderr). UsageError before anything is recorded."""
    from archiver.redaction import Redactor
    from archiver.search import has_card_number
    from archiver.transcript import InvalidChat

    given = {dest: getattr(args, dest) for dest in (*FILTERS, *STATED) if getattr(args, dest, None)}
    given = {dest: value for dest, value in given.items() if isinstance(value, str)}
    if not given:
        return
    redactor = Redactor.for_stated_text(config)
    for dest, value in given.items():
        option = FILTERS.get(dest) or STATED[dest]
        try:
            masked, rules = redactor.screened(value)
        except InvalidChat:
            raise UsageError(f"{option}: the redaction rules could not be applied to it, so it cannot be recorded; "
                             "nothing done") from None
        if dest == "text" and not rules and has_card_number(value):  # a card of a prefix not configured: no word
            rules = ["card"]
        if not rules:
            continue
        if dest in FILTERS:
            raise UsageError(f"{option} holds {_what(rules)}: the archive holds that only masked, so it would find "
                             "nothing (or chats holding only its pieces), and the audit log would keep it for good; "
                             "nothing done (the value is not repeated here); search by other words or by --customer")
        setattr(args, dest, masked)
        print(f"note: {option}: {_what(rules)} masked before it was recorded (audit log and what the command writes), "
              "as the archive masks it", file=sys.stderr)


def _what(rules: list[str]) -> str:
    return " and ".join(WHAT.get(rule, f"what redaction.patterns.{rule} matches") for rule in rules)

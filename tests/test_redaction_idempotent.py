"""The card rule finds in one pass every card a second pass would find: redact(redact(x)) == redact(x).

The mask (U+2022 BULLET) is also a separator people type between a card's groups, so masked digits leave a
group boundary where there was none and join the digits either side: a pass over the output sees windows the
first pass did not. `archiver verify --redaction` re-applies today's rules to the archived (redacted) source;
a rule that is not idempotent flags versions made under those very rules, and leaves a card in clear.
"""

from __future__ import annotations

import random
import re
import time
from itertools import pairwise

import pytest

from test_redaction import redactor, text_of

REVIEWED = "1234 5698 7654 324111 1111 1111 1111"  # the review's example: 4111 1111 1111 1111 was left in clear
SEPARATORS = " -.\t\u00b7\u2022"  # the property's checker reads exactly these (and the mask) between groups


def luhn_valid(digits: str) -> bool:  # written out again here: the check must not share the rule's code
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def cards_in_clear(text: str, prefixes: tuple[str, ...]) -> list[str]:
    """Every window of whole digit groups (13-19 digits, an accepted prefix, Luhn-valid) in TEXT's runs of digits
    and SEPARATORS: what the rule must have masked (a masked digit is a separator, so it splits groups)."""
    found = []
    for run in re.finditer(rf"[0-9{re.escape(SEPARATORS)}]+", text):
        groups = re.findall(r"[0-9]+", run.group())
        for i in range(len(groups)):
            window = ""
            for group in groups[i:]:
                window += group
                if len(window) > 19:
                    break
                if len(window) >= 13 and window.startswith(prefixes) and luhn_valid(window):
                    found.append(window)
    return found


def test_the_reviewed_card_is_masked_in_one_pass() -> None:
    out, matches = text_of(redactor(), REVIEWED)
    assert out == "1234 5698 •••• ••4111 11•• •••• 1111"
    assert matches == {"card": 2, "cvv": 0, "pin": 0}
    assert text_of(redactor(), out) == (out, {"card": 0, "cvv": 0, "pin": 0})
    assert cards_in_clear(out, ("2", "3", "4", "5", "6")) == []


SETTINGS = [(show, prefixes) for show in ("first6last4", "last4", "none")
            for prefixes in (("2", "3", "4", "5", "6"), ("1", "2", "3", "4", "5", "6", "8", "9"))]


def _texts(seed: int, count: int, extra: tuple[str, ...] = ()) -> list[str]:
    """Digit groups (some of them cards, some numbers before a card in its first group), separators
    including the mask character, now and then a letter."""
    rng = random.Random(seed)
    cards = ["4111111111111111", "5500000000000004", "378282246310005", "6011111111111117", "4222222222222",
             "6212345678901234569", "1100123456789010"]
    texts = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randrange(1, 10)):
            roll = rng.random()
            if roll < 0.25:
                card = rng.choice(cards)
                bounds = [0, *sorted(rng.sample(range(1, len(card)), rng.randrange(0, 4))), len(card)]
                groups = [card[a:b] for a, b in pairwise(bounds)]
                pieces.append(str(rng.randrange(100)) * rng.randrange(2) + rng.choice(" -.").join(groups))
            elif roll < 0.85:
                pieces.append(str(rng.randrange(10 ** rng.randrange(1, 9))))
            else:
                pieces.append(rng.choice("x" + "".join(extra)))
            pieces.append(rng.choice(SEPARATORS + "".join(extra)) * rng.randrange(1, 3))
        texts.append("".join(pieces))
    return texts


@pytest.mark.parametrize("show, prefixes", SETTINGS)
def test_one_pass_masks_every_card_a_second_pass_would(show: str, prefixes: tuple[str, ...]) -> None:
    r = redactor(card_show=show, card_prefixes=list(prefixes))
    started, found, changed_again, in_clear = time.process_time(), 0, [], []
    for text in _texts(5, 1200):
        out, matches = text_of(r, text)
        found += matches["card"]
        if text_of(r, out)[0] != out:
            changed_again.append(text)
        if cards_in_clear(out, prefixes):
            in_clear.append(text)
    assert changed_again == [] and in_clear == []
    assert found > 500  # the texts hold many cards: the property says something
    assert time.process_time() - started < 5.0


@pytest.mark.parametrize("show", ["first6last4", "last4", "none"])
def test_idempotent_with_plus_signs_encoded_spaces_and_other_rules(show: str) -> None:
    """'+' (a phone number's, or a space in a URL's query string) and "%20" change where runs and groups are."""
    r = redactor(rules=["card", "cvv", "iban", "email"], card_show=show, card_prefixes=["1", "2", "3", "4", "5", "6"])
    bad = []
    for text in _texts(9, 800, extra=("+", "%20", "?a=", "@b.example ", "GB82 WEST 1234 5698 7654 32", "cvv2 ")):
        out, _ = text_of(r, text)
        if text_of(r, out)[0] != out:
            bad.append(text)
    assert bad == []


@pytest.mark.parametrize("text, settings", [
    # the IBAN rule's mask takes the digits before "%20": a run then started at its "2", read as digits
    ("GB82 WEST 1234 5698 7654 32%2046673778533329", {"rules": ["card", "iban"]}),
    # masking the digits before "%20" did the same
    ("2041011410·.%204111 1111 1111 1111 80852253891", {"card_show": "last4"}),
])
def test_an_encoded_space_is_a_separator_wherever_a_run_starts(text: str, settings: dict) -> None:
    r = redactor(**settings)
    out, _ = text_of(r, text)
    assert text_of(r, out)[0] == out
    assert "%20" in out  # "%20" is never read as the digits 2 and 0


CVV_KEYWORDS = ("cvv ", "cvv2 ", "CVC2:", "cid ", "security code is ", "cvv=", "cvv%20", "codice di sicurezza ",
                " 12/27 ", " 01/2029 ", "•••• 1111 03/28 ",  # an expiry after a (masked) card: no keyword
                "my pin is ", "PIN: ", "pin", "pin. ", "the pin for my debit card is now ",
                "cvv for order ", "since ", "$",  # words before a number naming it another (ALGORITHM 8)
                "pin and ", "the pin of ", "pincode: ", "pin is 48 ", "cvv: ")  # weak links, groups (ALGORITHM 9)
AFTER_NUMBER = (" is the cvv ", " (cvc) ", " is my pin ", " cvv2 ", " ", " ",  # a code or PIN before its keyword
                " as my PIN ", " is the pin reset ", " model ", " € ", " characters ", " 21 ")


def _number(rng: random.Random) -> str:
    """A number of 2-5 digits, as one number or digit by digit."""
    digits = str(rng.randrange(10 ** rng.randrange(2, 6)))
    return rng.choice(" -.").join(digits) if rng.random() < 0.3 else digits


@pytest.mark.parametrize("show, prefixes", SETTINGS)
def test_one_pass_masks_every_code_and_card_a_second_pass_would(show: str, prefixes: tuple[str, ...]) -> None:
    """Verification codes among digit groups and cards: a code's mask is a separator the card rule reads (it
    joins the "2" of "cvv2" to the digits after the code), and a card's first group after a keyword is 3-4 digits."""
    r = redactor(rules=["card", "cvv", "pin"], card_show=show, card_prefixes=list(prefixes))
    codes, pins, changed_again, in_clear = 0, 0, [], []
    rng = random.Random(13)
    cards = ("4111 1111 1111 1111", "5500000000000004", "")
    texts = [rng.choice(cards) + rng.choice(CVV_KEYWORDS) + _number(rng) + rng.choice(AFTER_NUMBER)
             + _number(rng) + rng.choice(AFTER_NUMBER)
             + rng.choice(SEPARATORS) + text  # a code (or a 2- or 5-digit number) first, after a card or not
             for text in _texts(13, 1200, extra=CVV_KEYWORDS + AFTER_NUMBER)]
    for text in texts:
        out, matches = text_of(r, text)
        codes, pins = codes + matches["cvv"], pins + matches["pin"]
        if text_of(r, out)[0] != out:
            changed_again.append(text)
        if cards_in_clear(out.replace("%20", " "), prefixes):  # an encoded space, not the digits 2 and 0
            in_clear.append(text)
    assert changed_again == [] and in_clear == []
    assert codes > 300 and pins > 100  # the texts hold many codes and PINs: the property says something

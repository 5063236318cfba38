"""Redaction: sensitive data masked in the source documents before anything else reads them.

`Redactor.apply` returns copies of a chat and its contact document in which every
string (values, field names, URLs, contact fields) has been through the configured
rules, and a `RedactionNote` saying which rules ran, how often each matched and the
settings' version. The transcript, PDF, record, index entry, logs and error messages
are all made from the copies, so nothing downstream ever sees a redacted value.

Every rule runs in time linear in its input, whatever a customer types: card
numbers by a scan of digit runs with Luhn checked for all windows at once (big-integer
arithmetic, no per-window loop), then again only around what that masked, until a pass
over the output would find nothing more (each pass masks digits for good), IBANs by a
fixed-width start search plus a bounded check, card verification codes and PINs by regexes whose
every part is bounded (a keyword, at most CVV_GAP characters or a few linking words, a few digits) and a look at
the word either side of each match, e-mail addresses
and configured patterns with RE2 (no backtracking). A rule that fails raises InvalidChat: the chat is quarantined,
never archived unredacted.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import unicodedata
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Iterable, Mapping, Protocol

import re2
from bson import ObjectId
from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.regex import Regex

from archiver.config import SCHEMA, Config, ConfigError
from archiver.transcript import InvalidChat

ALGORITHM = 9  # bump when a detector changes what it finds: it is part of every settings version
# (the "cvv" rule came without a bump: its name in redaction.rules changes the version, and without it nothing does)
# 9: after "pin", "and", "of", "set" (and "account") link only with a linking verb, ":" or "=" too ("the pin of 1999",
#    "new pin and 3000 points" kept); "pincode"; a PIN in groups after such a link ("pin is 48 21"); an explicit
#    link or none ("cvv: 739 euro", "CVV 739 update") is not undone by the word after the digits, but for a length
#    ("pin is 1234 characters") or a year's version ("cvv 2024 update").
# 8: "cvv" and "pin" keep digits the words around them name as another number (an id, amount, time or unit: "CVV for
#    order 1234", "since 2023 my pin", "the pin is the 2024 model"); before its keyword no preposition links
#    ("charged 1500 for the pin"), and before "pin" a verb or punctuation must; after "pin" more linking words
#    ("changed to", "now", "debit"), a sentence's end or line break right after it ("pin. 4821"), "pin4821".
# 7: the "cvv" rule also masks a code typed digit by digit ("cvv 7 3 9") or just before its keyword ("739 is the
#    cvv"), and reads an expiry and a code after a masked code of four digits in the same pass; the "pin" rule.
# 6: the IBAN rule runs before the card rule, whatever the order of redaction.rules.
# 5: the card rule masks in one pass every card a pass over its output would find (the mask is a separator:
#    masked digits leave a group boundary and join the digits either side), so applying it twice changes nothing.
# 4: the fields of a DBRef (a sub-document {$ref, $id, $db, ...}), which were passed over.
# 3: every Luhn-valid window of a run is hidden, overlapping ones too (a number before a card made a window
#    that hid the wrong digits); every Unicode dash, full-width hyphen and full stop, middle dots, bullet,
#    hyphenation point and tab between groups; '+' in a URL's query string; a '+' makes a phone number only
#    of at most 15 digits; Binary (subtypes 0, 4) as UTF-8 text, Regex patterns, negative numbers.
# 2: more separators between a card's groups (spaces of other widths, format characters, and %20),
#    cards stored as doubles or Decimal128, identifiers and times kept whatever their type.
MASK = "•"
BUILTIN_RULES = ("card", "cvv", "pin", "iban", "email")
CARD_LENGTHS = range(13, 20)
SHORT_RUN = 48  # digits in a run up to which its windows are checked one by one (see CardRule._short_run_cards)
CARD_SHOW = {"first6last4": (6, 4), "last4": (0, 4), "none": (0, 0)}

# Platform-assigned identifiers and times, kept as they are, text or number: they join the chat to its
# contact and make the index searchable, and a customer never types them (a social channel's numeric id
# can pass Luhn, and so can an epoch-ms time once they start with a 2, in 2033). A tree of field names
# ("*": any array index; ANY_KEY: any field name of a map keyed by user id, the names kept too) whose
# leaves are KEEP (a text or a number) or TIME (a number: a time written as text is redacted like text).
KEEP, TIME, ANY_KEY = "keep", "keep a number", "(any field name)"
_TIMES = {"beginTime": TIME, "endTime": TIME}
KEPT: dict[str, Any] = {
    "chat": {"_id": KEEP, "room": KEEP, "messages": {"*": {
        "room": KEEP, "data": {"id": KEEP, "replyTo": KEEP, "ts": TIME, "messageSeen": TIME,
                               "content": {"user": {"id": KEEP}}}}}},
    "contact": {"_id": KEEP, "id": KEEP, "userID": KEEP, "agentID": KEEP, **_TIMES, "users": {ANY_KEY: _TIMES},
                "contact_events": {"*": {"ts": TIME}}},
}
# Values of these exact types hold no text (_walk returns them as they are): the walk passes them inline.
UNREDACTED = frozenset({bool, type(None), ObjectId, dt.datetime})
NUMBERS = frozenset({int, Int64, float, Decimal128})  # checked for a card stored as a number (not bool)
SCALARS = NUMBERS | {str}
CODE_NUMBERS = frozenset({int, Int64, float})  # a field named for a code or PIN may hold it as a number (or text)
CODE_VALUE_CHARS = 16  # a field's text longer than this is not a code or PIN with spaces around it
CODE_NUMBER_LIMIT = 10**12  # a field's number of more digits is neither (a PIN has at most 12)
CARD_RANGE = (10**12, 10**19)  # a whole number of 13 to 19 digits (either sign) may be a card stored as a number
TEXT_BINARY = (0, 4)  # Binary subtypes read as UTF-8 text (generic, UUID): a form may store typed text there
PHONE_DIGITS = 15  # E.164's longest number: a longer run after a '+' is not a phone number
CLEAN_KEYS_CACHED = 4096  # field names known to hold nothing to redact (they repeat in every message)


@dataclass(frozen=True)
class RedactionNote:
    """What the record, the index entry and the PDF header say about redaction."""
    enabled: bool
    version: str  # short hash of the effective settings
    rules: tuple[str, ...]
    matches: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "version": self.version, "rules": list(self.rules),
                "matches": dict(self.matches)}


@dataclass(frozen=True)
class Redacted:
    chat: Any
    contact: Any
    note: RedactionNote


class Rule(Protocol):
    name: str

    def redact(self, text: str) -> tuple[str, int]:
        """TEXT with every match masked, and the number of matches."""


# -- card numbers ---------------------------------------------------------------------------------

# Between the digit groups of a card number: spaces (of every width) and tabs, dots (full stops, middle dots,
# bullets, a hyphenation point), hyphens and every Unicode dash (category Pd), as people and input methods type
# them; and what pasting leaves there unseen (zero-width and other format characters, a soft hyphen) or a
# form's URL encoding of a space ("%20", and "+" in a URL's query string, below). Not slashes, plus signs
# elsewhere, commas, underscores or line breaks: they join unrelated numbers ("2023/100000000007",
# "orders:\n4021337\n100000002", a media URL's path or ids), which would pass as cards and be masked for good.
_DASHES = ("-\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2e17\u2e1a\u2e3a\u2e3b\u2e40\u2e5d"
           "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d\U00010ead")  # Unicode category Pd (a test checks)
_SEPARATOR_CHARS = (" \t.\u00a0\u00ad\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                    "\u200b\u200c\u200d\u2060\u202f\u205f\u2212\u3000\ufeff"
                    "\u00b7\u30fb\u2022\u2027\uff0e" + _DASHES)
_CLASS = "".join(re.escape(ch) for ch in _SEPARATOR_CHARS)
_RUN = re.compile(rf"\+?\d[\d{_CLASS}]*")  # one character class: a tight loop in the engine
_NOT_ENCODED = "(?!(?<=%)20)(?!(?<=%2)0)"  # a run never starts at the "2" or "0" of "%20" (a space, not digits)
_RUN_ENCODED = re.compile(rf"\+?{_NOT_ENCODED}\d(?:[\d{_CLASS}]|%20)*")  # only for texts with "%20" (slower)
_SPLIT = re.compile(rf"((?:[{_CLASS}]|%20)+)")
# In a URL's query string '+' is a space: there runs start with a digit and '+' joins groups.
_QUERY = re.compile(r"(?<=\S)\?[^\s#]*")
_RUN_QUERY = re.compile(rf"{_NOT_ENCODED}\d(?:[\d{_CLASS}+]|%20)*")
_SPLIT_QUERY = re.compile(rf"((?:[{_CLASS}+]|%20)+)")
_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_NOT_TENS = bytes(0 if i % 10 == 0 else 1 for i in range(256))
_NONZERO = bytes([0] + [1] * 255)
_VALID = bytes([255] + [0] * 255)
_HIDDEN = re.compile(b"[^\\0]+")
_DIGIT = re.compile(r"\d")
_DIGIT_OR_ENCODED = re.compile(r"%20|\d")


class CardRule:
    """Payment card numbers: 13-19 digits, Luhn-valid, starting with a configured prefix.

    A run of digits and separators may hold a card among other numbers (an expiry, a
    CVV, a quantity): every window of 13-19 digits that starts and ends at a group
    boundary is a candidate. A run with no separator is a card only as a whole.
    """

    name = "card"
    shortest = CARD_LENGTHS.start
    mask = MASK  # written for each hidden digit (see Redactor.masked)

    def __init__(self, show: str, prefixes: list[str]) -> None:
        self.first, self.last = CARD_SHOW[show]
        self.prefixes = tuple(p.encode() for p in prefixes)

    def redact(self, text: str, holding: list[int] | None = None) -> tuple[str, int]:
        """HOLDING: if given, only the runs that hold one of these (sorted) positions are read."""
        if len(text) < CARD_LENGTHS.start or not _DIGIT.search(text):  # every run starts at a digit
            return text, 0
        pieces, last, count = [], 0, 0
        for start, end, query in _segments(text):
            runs = _RUN_QUERY if query else _RUN_ENCODED if "%20" in text else _RUN
            for match in runs.finditer(text, start, end):
                if holding is not None and bisect_left(holding, match.start()) == bisect_left(holding, match.end()):
                    continue
                run, at = _without_trailing(match.group()), match.start()
                if run[0] == "+":  # after a '+' a run of at most 15 digits is a phone number
                    if sum(map(str.isdigit, run)) <= PHONE_DIGITS:
                        continue
                    run, at = run[1:], at + 1
                if len(run) < CARD_LENGTHS.start:
                    continue
                masked, found = self._mask_run(run, _SPLIT_QUERY if query else _SPLIT)
                if found:
                    pieces += [text[last:at], masked]
                    last, count = at + len(run), count + found
        return ("".join(pieces) + text[last:], count) if count else (text, 0)

    def redact_number(self, value: Any) -> tuple[Any, int]:
        """A card number stored as a number (int, Int64, a whole double or Decimal128) becomes its masked text."""
        digits = _whole_number(value)
        masked, found = self.redact(digits) if digits else ("", 0)
        return (masked, found) if found else (value, 0)

    def _mask_run(self, run: str, split: re.Pattern[str]) -> tuple[str, int]:
        parts = split.split(run)  # digit groups and the separators between them, alternating
        digits = _ascii("".join(parts[0::2])).encode()
        if len(digits) < CARD_LENGTHS.start:
            return run, 0
        sizes = list(map(len, parts))
        starts = list(accumulate(sizes[0::2], initial=0))  # digit index of each group, and the end
        bounds = b"".join(map(_group_bounds, sizes[0::2])) + b"\0"  # 0 where a group starts, and at the end
        if len(digits) <= SHORT_RUN:  # most runs: a few windows, checked one by one
            hidden = self._short_run_hidden(digits, starts)
        else:
            hidden = self._hidden(_luhn_windows(digits, bounds, self._prefix_misses(digits)), len(digits))
        if not hidden:
            return run, 0
        # The mask is also a separator: a pass over the output reads new group boundaries and joins digits
        # across masked ones. Mask here every card such passes would find, so that a second pass changes nothing.
        if len(digits) - sum(b - a for a, b in hidden) >= CARD_LENGTHS.start:  # else too few digits are left
            hidden = _Masking(digits, bounds).until_stable(hidden, self._found)
        return _hide(run, starts, list(accumulate(sizes, initial=0))[0::2], hidden), len(hidden)

    def _found(self, digits: bytes, bounds: bytes, near: list[int] | None = None) -> list[tuple[int, int]]:
        """The digits hidden by the valid windows of DIGITS (BOUNDS: 0 where a group starts, and at the end);
        NEAR: if given, a short run's windows that hold none of these digit indices are not read (all others
        are known not to be valid)."""
        if len(digits) < CARD_LENGTHS.start:
            return []
        if len(digits) <= SHORT_RUN:
            return self._short_run_hidden(digits, [i for i, flag in enumerate(bounds) if not flag], near)
        return self._hidden(_luhn_windows(digits, bounds, self._prefix_misses(digits)), len(digits))

    def _hidden_part(self, length: int) -> tuple[int, int]:
        """The digits of a card of LENGTH hidden: from its start+a to its start+b."""
        return min(self.first, length - 10), length - self.last

    def _short_run_hidden(self, digits: bytes, bounds: list[int],
                          near: list[int] | None = None) -> list[tuple[int, int]]:
        """What _hidden(_luhn_windows(...)) finds, for a short run: the union of what every window from a
        group's start to a group's end (13-19 digits, starting with a prefix, passing Luhn) hides, overlapping
        or not: a number typed before a card may make a valid window that overlaps it. Merged ranges, in
        order. A loop per window costs less than the big integers for a few of them."""
        ranges, sums, first = [], None, 0
        if near is not None:  # a window holding one of NEAR starts at most 19 digits before the first
            first = bisect_left(bounds, near[0] - CARD_LENGTHS.stop + 1) if near else len(bounds)
        for i in range(first, len(bounds) - 1):
            start = bounds[i]
            if not digits.startswith(self.prefixes, start):
                continue
            shortest = start + CARD_LENGTHS.start
            if near is not None:  # only windows from START to an end at or past the first of NEAR from START
                k = bisect_left(near, start)
                if k == len(near):
                    break
                shortest = max(shortest, near[k])
            for end in bounds[bisect_left(bounds, shortest, i + 1):]:
                if end - start >= CARD_LENGTHS.stop:
                    break
                sums = sums or _luhn_sums(digits)
                if (sums[end % 2][end] - sums[end % 2][start]) % 10 == 0:
                    a, b = self._hidden_part(end - start)
                    ranges.append((start + a, start + b))
        merged: list[tuple[int, int]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1]:  # overlapping or touching: one region, as _hidden sees it
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def _hidden(self, windows: dict[int, bytes], n: int) -> list[tuple[int, int]]:
        """The digits every valid window hides, as merged ranges: per length, the valid starts shifted over
        the hidden part by doubling (a few big-integer operations, no loop per window)."""
        covered = 0
        for length, ok in windows.items():
            valid = int.from_bytes(ok.translate(_VALID), "little") & int.from_bytes(b"\1" * len(ok), "little")
            if not valid:
                continue
            a, b = self._hidden_part(length)
            spread, width = valid << 8 * a, 1
            while 2 * width <= b - a:
                spread |= spread << 8 * width
                width *= 2
            covered |= spread | (spread << 8 * (b - a - width))
        marks = covered.to_bytes(n + 2 * CARD_LENGTHS.stop, "little")[:n]
        return [hit.span() for hit in _HIDDEN.finditer(marks)]

    def _prefix_misses(self, digits: bytes) -> int:
        """Byte i (little-endian) is 0 where a configured prefix starts at digit i, else 1."""
        number, n = int.from_bytes(digits, "little"), len(digits)
        misses = (1 << 8 * n) - 1 if n else 0  # all ones: 0xFF per byte
        for prefix in self.prefixes:
            differs = 0
            for k, ch in enumerate(prefix):  # byte i of `differs` is non-zero where digit i+k is not ch
                differs |= (number >> 8 * k) ^ int.from_bytes(bytes([ch]) * n, "little")
            miss = differs.to_bytes(n + len(prefix), "little")[:n].translate(_NONZERO)
            misses &= int.from_bytes(miss, "little")
        return misses


def _segments(text: str) -> list[tuple[int, int, bool]]:
    """TEXT cut where a URL's query string (from '?' to a space or '#', holding '=') starts and ends:
    (start, end, whether it is a query string)."""
    if "+" not in text or "?" not in text:
        return [(0, len(text), False)]
    cuts, last = [], 0
    for query in _QUERY.finditer(text):
        if "=" in query.group() and "+" in query.group():
            cuts += [(last, query.start(), False), (query.start(), query.end(), True)]
            last = query.end()
    return cuts + [(last, len(text), False)]


def luhn(digits: bytes) -> bool:
    """Whether DIGITS (ASCII) pass the Luhn check, as every card number does."""
    odd = digits[-1::-2].translate(_VALUE)  # from the right: the check digit and every second one
    even = digits[-2::-2].translate(_DOUBLED)
    return (sum(odd) + sum(even)) % 10 == 0


def _luhn_sums(digits: bytes) -> tuple[list[int], list[int]]:
    """Running sums of Luhn weights, for a window [s, e) of DIGITS: sums[e % 2][e] - sums[e % 2][s]. The
    window's last digit (its check digit) counts as it is, every second one before it doubled: digits of
    the other parity than e - 1 are doubled, which is the same for every window ending at an e of that parity."""
    value, doubled = digits.translate(_VALUE), digits.translate(_DOUBLED)
    odd_doubled, even_doubled = bytearray(value), bytearray(value)
    odd_doubled[1::2], even_doubled[0::2] = doubled[1::2], doubled[0::2]
    return (list(accumulate(even_doubled, initial=0)), list(accumulate(odd_doubled, initial=0)))


def _without_trailing(run: str) -> str:
    """RUN without the separators it ends with (those between its groups are kept)."""
    run = run.rstrip(_SEPARATOR_CHARS)
    while run.endswith("%20"):
        run = run[:-3].rstrip(_SEPARATOR_CHARS)
    return run


def _whole_number(value: Any) -> str:
    """VALUE's digits if it is a whole number of card length, else ""."""
    kind = type(value)  # negative too: "-" and the digits (the card is in the digits)
    if kind is float:
        whole = value.is_integer() and CARD_RANGE[0] <= abs(value) < CARD_RANGE[1]
        return str(int(value)) if whole else ""
    if kind is Decimal128:
        number = value.to_decimal()
        whole = number.is_finite() and number == number.to_integral_value()
        return str(int(number)) if whole and CARD_RANGE[0] <= abs(number) < CARD_RANGE[1] else ""
    return str(int(value)) if kind in (int, Int64) and CARD_RANGE[0] <= abs(value) < CARD_RANGE[1] else ""


def _ascii(digits: str) -> str:
    return digits if digits.isascii() else "".join(str(unicodedata.decimal(ch)) for ch in digits)


@functools.lru_cache(maxsize=64)
def _group_bounds(size: int) -> bytes:
    return b"\0" + b"\1" * (size - 1)


def _luhn_windows(digits: bytes, bounds: bytes, prefix_misses: int) -> dict[int, bytes]:
    """For each length L, a byte per start i that is 0 where digits[i:i+L] is a card candidate.

    Byte i of a little-endian integer holds digit i's Luhn weight; adding the integer
    shifted by 1..L-1 bytes sums every window of L weights at once (at most 19 x 9 = 171,
    so no byte carries into the next). Linear in the run, however hostile it is.
    """
    n = len(digits)
    boundary = int.from_bytes(bounds, "little")
    start_ok = boundary | prefix_misses
    value, doubled = digits.translate(_VALUE), digits.translate(_DOUBLED)
    weights = []
    for parity in (0, 1):  # Luhn doubles every second digit counted from the right end of the window
        w = bytearray(value)
        w[parity::2] = doubled[parity::2]
        weights.append(int.from_bytes(w, "little"))
    sums, found = list(weights), {}
    for length in range(2, min(n, CARD_LENGTHS.stop - 1) + 1):
        sums = [s + (w >> 8 * (length - 1)) for s, w in zip(sums, weights)]
        if length < CARD_LENGTHS.start:
            continue
        count = n - length + 1
        # The window [i, i+L) doubles the positions of parity (i+L) % 2.
        even, odd = (s.to_bytes(n, "little")[:count] for s in (sums[length % 2], sums[1 - length % 2]))
        total = bytearray(even)
        total[1::2] = odd[1::2]
        bad = int.from_bytes(total.translate(_NOT_TENS), "little") | start_ok | (boundary >> 8 * length)
        found[length] = bad.to_bytes(n + 1, "little")[:count]
    return found


_X = ord("x")  # a masked digit in _Masking.view
REACH = CARD_LENGTHS.stop - 1  # a window holding a new group boundary has at most this many digits either side
DENSE = 256  # a pass that masked a stretch per DENSE digits or more: the next one reads the whole run at once


class _Masking:
    """A run's digits as a later pass reads them once ranges are masked: each masked stretch gone, and a group
    boundary where it was (the mask is a separator). A window that is valid now but was not before holds such a
    boundary (inside, or at its start or end): every other window is unchanged and was checked. So each
    pass after the first reads only the REACH digits either side of the stretches it masked (or, when they are
    many, the whole run), and jumps over masked stretches without reading them: linear in the run overall,
    as each stretch masks digits for good."""

    def __init__(self, digits: bytes, bounds: bytes) -> None:
        self.n = len(digits)
        self.view = bytearray(digits)  # b"x" for a masked digit
        self.flags = bytearray(bounds)  # 0 where a group starts (and at the end), 1 inside a group, 2 masked
        self.end_of: dict[int, int] = {}  # start -> end of each masked stretch (entries inside one are stale)
        self.start_of: dict[int, int] = {}  # end -> start

    def until_stable(self, hidden: list[tuple[int, int]], found: Any) -> list[tuple[int, int]]:
        """HIDDEN masked, then what the passes over the result find, until they find nothing: the stretches."""
        while hidden:
            stretches = [self._mask(a, b) for a, b in hidden]
            view = self.view
            stretches = [(s, e) for s, e in stretches
                         if (s == 0 or view[s - 1] != _X) and (e == self.n or view[e] != _X)]  # grown: kept once
            if len(stretches) * DENSE > self.n:
                spans = [(0, self.n)]
            else:
                spans = []
                for lo, hi in sorted((self._left(s), self._right(e)) for s, e in stretches):
                    if spans and lo <= spans[-1][1]:
                        spans[-1] = (spans[-1][0], max(hi, spans[-1][1]))
                    else:
                        spans.append((lo, hi))
            hidden = [r for lo, hi in spans for r in self._found_in(lo, hi, found)]
        return [(s, e) for s, e in self._masked_stretches()]

    def _mask(self, a: int, b: int) -> tuple[int, int]:
        """Digits A to B masked (their ends unmasked until now); the masked stretch they are part of."""
        view = self.view
        s = self.start_of.pop(a) if a and view[a - 1] == _X else a
        e = self.end_of.pop(b) if b < self.n and view[b] == _X else b
        view[a:b] = b"x" * (b - a)
        self.flags[a:b] = b"\2" * (b - a)
        self.flags[e] = 0  # the digit after a masked stretch starts a group (at the end: already 0)
        self.end_of[s], self.start_of[e] = e, s
        return s, e

    def _left(self, at: int) -> int:
        """Where the REACH unmasked digits before AT start (or 0)."""
        need = REACH
        while at > 0:
            lo = max(0, at - need)
            x = self.view.rfind(b"x", lo, at)
            if x < 0:
                return lo
            need -= at - x - 1
            at = self.start_of[x + 1]
        return 0

    def _right(self, at: int) -> int:
        """Where the REACH unmasked digits from AT end (or the run's end)."""
        need = REACH
        while at < self.n:
            hi = min(self.n, at + need)
            x = self.view.find(b"x", at, hi)
            if x < 0:
                return hi
            need -= x - at
            at = self.end_of[x]
        return self.n

    def _unmasked(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The stretches of unmasked digits from LO to HI; masked ones are jumped over, not read."""
        stretches, at, view = [], lo, self.view
        while at < hi:
            if view[at] == _X:
                at = self.end_of[at]
                continue
            end = view.find(b"x", at, hi)
            end = hi if end < 0 else end
            stretches.append((at, end))
            at = end
        return stretches

    def _found_in(self, lo: int, hi: int, found: Any) -> list[tuple[int, int]]:
        """What FOUND finds in the unmasked digits from LO to HI, as ranges of the run's digits."""
        stretches = self._unmasked(lo, hi)
        digits = b"".join(self.view[a:b] for a, b in stretches)
        if len(digits) < CARD_LENGTHS.start:
            return []
        ends_group = hi == self.n or self.flags[hi] != 1
        bounds = b"".join(self.flags[a:b] for a, b in stretches) + (b"\0" if ends_group else b"\1")
        firsts = list(accumulate((b - a for a, b in stretches), initial=0))
        view, (first, _), (_, last) = self.view, stretches[0], stretches[-1]
        near = ([0] if first and view[first - 1] == _X else []) + firsts[1:-1] + (
            [firsts[-1]] if last < self.n and view[last] == _X else [])  # where masked stretches were
        pieces = []  # each hidden range's unmasked digits, as ranges of the run's (masked ones are not rewritten)
        for a, b in found(digits, bounds, near):
            for g in range(bisect_right(firsts, a) - 1, bisect_right(firsts, b - 1)):
                start = stretches[g][0] - firsts[g]
                pieces.append((start + max(a, firsts[g]), start + min(b, firsts[g + 1])))
        return pieces

    def _masked_stretches(self) -> list[tuple[int, int]]:
        return [(s, self.end_of[s]) for s in sorted(self.end_of)
                if (s == 0 or self.view[s - 1] != _X) and self.view[s] == _X]


def _hide(run: str, starts: list[int], offsets: list[int], hidden: list[tuple[int, int]]) -> str:
    """RUN with the digits in each HIDDEN range (digit indices) masked; separators stay as they are
    (digits in one, as in "%20", too).

    STARTS and OFFSETS: the digit index and the character index where each group starts.
    """
    def char(k: int) -> int:  # where digit K is in RUN
        g = bisect_right(starts, k) - 1
        return offsets[g] + k - starts[g]

    pieces, last = [], 0
    for a, b in hidden:
        first, end = char(a), char(b - 1) + 1
        covered = run[first:end]  # digits and, between groups, separators (no digit but those of "%20")
        masked = (_DIGIT.sub(MASK, covered) if "%20" not in covered
                  else _DIGIT_OR_ENCODED.sub(lambda m: MASK if len(m.group()) == 1 else m.group(), covered))
        pieces += [run[last:first], masked]
        last = end
    return "".join(pieces) + run[last:]


# -- IBANs, e-mail addresses, configured patterns -------------------------------------------------

# Lengths from the SWIFT IBAN registry; a country not listed is not checked.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")  # fixed width: no backtracking
_IBAN_BODY = re.compile(r"[A-Za-z0-9]{4}(?: ?[A-Za-z0-9]){11,30}")  # bounded: at most 64 characters


class IbanRule:
    """IBANs (compact or in groups of four), by country length and the mod-97 check."""

    name = "iban"
    shortest = min(IBAN_LENGTHS.values())

    def __init__(self, mask: str) -> None:
        self.mask = mask

    def redact(self, text: str) -> tuple[str, int]:
        pieces, last = [], 0
        for start in _IBAN_START.finditer(text):
            if start.start() < last:
                continue
            end = self._iban_end(text, start.start())
            if end:
                pieces += [text[last:start.start()], self.mask]
                last = end
        return ("".join(pieces) + text[last:], len(pieces) // 2) if pieces else (text, 0)

    @staticmethod
    def _iban_end(text: str, start: int) -> int:
        """Where the IBAN starting at START ends, or 0 if there is none."""
        length = IBAN_LENGTHS.get(text[start:start + 2].upper())
        body = _IBAN_BODY.match(text, start) if length else None
        if body is None:
            return 0
        taken, end = 0, start
        for end, ch in enumerate(body.group(), start + 1):
            taken += ch != " "
            if taken == length:
                break
        if taken < length or (end < len(text) and text[end].isalnum()):
            return 0
        compact = text[start:end].replace(" ", "").upper()
        number = "".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])
        return end if int(number) % 97 == 1 else 0


EMAIL_PATTERN = r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}"


class PatternRule:
    """A regular expression run by RE2: linear time, so no pattern or text can make it hang."""

    def __init__(self, name: str, pattern: str, mask: str) -> None:
        self.name, self.mask = name, mask
        try:
            self.regex = re2.compile(pattern)
        except re2.error as exc:
            raise ConfigError(f"redaction.patterns.{name}: not a valid RE2 pattern ({exc}); RE2 has no "
                              "look-around or back-references") from None
        if self.regex.search("") is not None:
            raise ConfigError(f"redaction.patterns.{name}: matches the empty string")

    def redact(self, text: str) -> tuple[str, int]:
        return self.regex.subn(lambda _: self.mask, text)


# -- card verification codes and PINs -------------------------------------------------------------

def _letters(word: str) -> str:
    """WORD as a pattern that also reads its Latin letters typed full-width (an input method's ＣＶＶ); words
    are separated by up to three spaces, dots, underscores or hyphens ("sec. code", "security_code") or none."""
    out = []
    for ch in word:
        if ch == " ":
            out.append(r"[\s._\-]{0,3}")  # none too: "securityCode=123" in a URL
        elif "a" <= ch <= "z":
            out.append(f"[{ch}{chr(ord(ch) - ord('a') + 0xFF41)}]")  # IGNORECASE reads the upper cases
        else:
            out.append("(?:" if ch == "(" else ch if ch in ")?|" else re.escape(ch))
    return "".join(out)


def _first_letters(words: tuple[str, ...]) -> str:
    """The letters WORDS can start with ("(karten)?pr..." starts with k or p), as a character class's body."""
    return "".join(sorted({_letters(ch)[1:-1] for word in words
                           for ch in ((word[1], word[word.index(")?") + 2]) if word[0] == "(" else word[0])}))


# What people call a card's verification code (CVV2, CVC2, CID, CAV2...), in the templates' languages (English,
# Italian) and in Spanish, French, German and Portuguese. Digits may touch the acronyms (CVV_GLUED: "cvv123");
# not "cid1234", which reads as a customer id. Generic words ("code", "verification code", "PIN") are not here:
# they name one-time passwords, tickets and order codes as often as the card's code.
CVV_GLUED = ("cvv2?", "cvc2?", "cvn2?", "cav2", "csc", "cvd")
CVV_WORDS = (*CVV_GLUED, "cid", "card verification", "verification value", "security code", "sec code",
             "codice (di )?sicurezza", "c(o|ó)digo de seguridad", "c(o|ó)digo de seguran(c|ç)a",
             "code de s(e|é)curit(e|é)", "cryptogramme", "(karten)?pr(ü|ue|u)f(nummer|ziffer|code)",
             "sicherheits(code|nummer|ziffer)")
# A card's PIN (the "pin" rule), in the same languages: "PIN" itself (any case; "codice PIN", "PIN-Nummer" hold
# it), Dutch and German "pincode", German "Geheimzahl", French "code confidentiel".
PIN_WORDS = ("pin(code)?", "geheimzahl", "code confidentiel", "personal identification number")
CVV_GAP = 24  # characters at most between the keyword and the code ("cvv number on the back is 123")
_GAP_UNIT = r"(?:[^\d%\u2022]|%[0-9A-Fa-f]{2}|%(?![0-9A-Fa-f]{2}))"  # no digit, no mask; "%3A" is one character
# Words that link a keyword and a number on its other side, in the same languages: a PIN's digits follow "pin" with
# at most LINKED_AFTER of them between ("my pin is 4821", "the pin for my debit card is 4821"), a code's or a PIN's
# digits precede its keyword with at most LINKED_BEFORE ("739 is the cvv", "4821 is my pin"). Closed lists, so
# that ordinary numbers near a keyword ("order 739 shipped, no cvv needed", "pin it to room 1234") are kept; no
# negation ("no", "not": "order 739, no cvv needed"). LINKS link either way; AFTER_LINKS (prepositions, "now",
# "changed"...) only a PIN after its keyword: before it they join an amount or a date ("charged 1500 for the pin").
LINKS = ("is", "was", "be", "would", "will", "should", "the", "my", "your", "its", "it's", "it’s", "that's",
         "that’s", "this", "as", "card", "card's", "card’s", "code", "number", "nr", "num",
         "è", "e'", "il", "la", "lo", "mio", "mia", "carta", "codice", "numero", "come",
         "es", "el", "mi", "su", "tarjeta", "código", "codigo", "número",
         "é", "o", "a", "meu", "minha", "cartão", "cartao",
         "est", "c'est", "c’est", "le", "mon", "ma", "carte", "numéro",
         "ist", "lautet", "der", "die", "das", "mein", "meine", "meiner", "karte", "nummer", "als")
AFTER_LINKS = ("for", "of", "to", "and", "now", "still", "new", "set", "changed", "i", "use", "debit", "credit",
               "bank", "atm", "no.", "nr.", "num.", "per", "di", "della", "del", "ora", "nuovo", "bancomat",
               "de", "para", "por", "ahora", "nuevo", "do", "da", "agora", "novo", "pour", "du", "maintenant",
               "nouveau", "für", "von", "zu", "jetzt", "neue", "neuer",
               "account", "conto", "cuenta", "conta", "compte", "konto")
# ... of which these link only with a linking verb, ":" or "=" too ("pin of my card: 4821", "I changed my pin and
# it's 4821", "the pin for my bank account is 4821"): alone they join a count or a year ("new pin and 3000 points",
# "the pin of 1999", "pin set for 2025", "pin for account 4821").
WEAK_LINKS = frozenset(("and", "of", "set", "account", "conto", "cuenta", "conta", "compte", "konto"))
LINKED_AFTER, LINKED_BEFORE = 6, 3
_LINK_PUNCT = r"[^\w\u2022.!?;\r\n]{1,3}+"  # around linking words: spaces, ":", "=", "(", "—"; no sentence's end
_FIRST_PUNCT = r"[^\w\u2022]{1,4}+"  # a PIN right after its keyword: a sentence's end too ("pin. 4821", "PIN\n4821")


def _linked(words: tuple[str, ...]) -> str:
    return rf"(?:{_LINK_PUNCT}(?:{'|'.join(map(re.escape, sorted(words, key=len, reverse=True)))})(?![^\W\d_]))"


# A code or PIN typed digit by digit ("7 3 9", "7-3-9", "7 - 3 - 9"): one digit, then 1-3 spaces, dots or dashes.
_SPACE_CHAR = r"[ \t\u00a0\u202f.\-\u2010-\u2015]"
_SPACING = rf"{_SPACE_CHAR}{{1,3}}+"
_ENDS = r"(?![^\W_]|\u2022)"  # the digits end no word and touch no mask
# Not a number's later digits or groups: no letter or digit right before, and no mask (a masked card's last group,
# "•••• 1111 is the cvv"), nor for digit by digit a digit, with separators between (its own earlier digits).
# Wherever a digit stops a match, a mask does too: a second pass (masks where the first found digits) then finds
# nothing the first did not.
_STARTS_ALONE = rf"(?<![^\W_])(?<!\u2022)(?<!\u2022{_SPACE_CHAR})"
_NO_DIGIT_BEFORE = "".join(rf"(?<![\d\u2022]{_SPACE_CHAR * n})" for n in (1, 2, 3))


def _digits(fewest: int, most: int) -> tuple[str, str]:
    """Patterns of FEWEST to MOST digits: typed as one number, and typed digit by digit."""
    return rf"\d{{{fewest},{most}}}", rf"\d(?:{_SPACING}\d){{{fewest - 1},{most - 1}}}"


def _keyword(words: tuple[str, ...]) -> str:
    return rf"(?:{'|'.join(map(_letters, words))})(?![^\W\d_])"


def _keyword_after(words: tuple[str, ...], glued: tuple[str, ...], fewest: int, most: int,
                   gap: str, groups: bool = False) -> re.Pattern[str]:
    """The digits after a keyword: touching one of GLUED (group "glued"), or after any of WORDS (_keyword) and GAP
    as one number, digit by digit or (GROUPS) in groups of two to four digits (group "groups"). No group around the
    gap: capturing it costs a quarter more on text full of keywords; _found reads it again where a match is."""
    number, spaced = _digits(fewest, most)
    grouped = rf"|(?P<groups>\d{{2,3}}(?:[ \u00a0]\d{{2,4}}){{1,3}}){_ENDS}(?![ \u00a0][\d\u2022])" if groups else ""
    code = rf"(?:{number}{_ENDS}|{spaced}{_ENDS}(?!{_SPACING}[\d\u2022]){grouped})"
    return re.compile(
        rf"(?=[{_first_letters(words)}])"  # first: the engine then skips to the next such letter (3-15 times faster)
        rf"(?<![^\W\d_])(?:(?:{'|'.join(map(_letters, glued))})(?![^\W\d_])(?P<glued>{number}){_ENDS}|"
        rf"{_keyword(words)}{gap}(?P<code>{code}))",  # or any keyword, then a gap
        re.IGNORECASE)


def _keyword_before(words: tuple[str, ...], fewest: int, most: int) -> re.Pattern[str]:
    """The digits (group "code") before one of WORDS (group "keyword"), with at most LINKED_BEFORE linking words
    between, unless the keyword has a masked code or PIN of its own after it ("card 1234, cvv •••": 1234 is not
    the code)."""
    number, spaced = _digits(fewest, most)
    return re.compile(
        rf"(?=\d){_STARTS_ALONE}(?P<code>{number}|{_NO_DIGIT_BEFORE}{spaced}){_linked(LINKS)}{{0,{LINKED_BEFORE}}}"
        rf"{_LINK_PUNCT}(?P<keyword>{'|'.join(map(_letters, words))})(?![^\W\d_])"
        rf"(?!{_GAP_UNIT}{{0,{CVV_GAP}}}+\u2022)",
        re.IGNORECASE)


# Code: within CVV_GAP characters with no digit or mask, the digits starting no word ("cvv abc123" holds none).
_CODE_GAP = rf"{_GAP_UNIT}{{1,{CVV_GAP}}}+(?:(?<![^\W\d_])|(?<=%[0-9A-Fa-f]{{2}}))"
# PIN, whose keyword is an everyday word: linking words only ("my pin is 4821", "my pin's 4821"), or punctuation.
_PIN_GAP = rf"(?:['’]s)?(?:{_linked(LINKS + AFTER_LINKS)}{{1,{LINKED_AFTER}}}{_LINK_PUNCT}|{_FIRST_PUNCT})"
_CVV = _keyword_after(CVV_WORDS, CVV_GLUED, 3, 4, _CODE_GAP)
_CVV_BEFORE = _keyword_before(tuple(w for w in CVV_WORDS if w != "cid"), 3, 4)  # "1234 is the cid": an id
_PIN = _keyword_after(PIN_WORDS, ("pin",), 4, 12, _PIN_GAP, True)  # ISO 9564: 4 to 12 digits; "pin4821"; "48 21"
_PIN_BEFORE = _keyword_before(PIN_WORDS, 4, 12)
_CVV_KEYWORD, _PIN_KEYWORD = (re.compile(_keyword(words), re.IGNORECASE) for words in (CVV_WORDS, PIN_WORDS))
# Whether the digits a pattern found are some other number, from the words around them (closed lists, mostly
# English, lower case; a currency sign is a word here). Right before the digits (at most three spaces or marks
# between, no sentence's end): an id, an amount or a time ("order 1234", "charged 1500", "since 2023", "$1500").
OTHER_NUMBER_BEFORE = frozenset((
    "since", "in", "from", "until", "till", "after", "before", "during", "by", "at", "on", "about", "over", "under",
    "around", "than", "year", "years", "order", "orders", "ticket", "invoice", "case", "room", "ref", "reference",
    "account", "acct", "booking", "tracking", "model", "version", "item", "flight", "page", "step", "phone", "tel",
    "charged", "paid", "pay", "cost", "costs", "fee", "fees", "price", "total", "amount", "refund", "refunded",
    "balance", "spent", "bill", "billed", "owe", "euro", "euros", "dollar", "dollars", "eur", "usd", "gbp", "chf",
    "$", "€", "£", "¥", "dal", "dalla", "nel", "anno", "ordine", "pagato", "costo", "prezzo", "totale", "importo",
    "desde", "año", "pedido", "pagado", "precio", "importe", "ano", "pago", "preço", "valor", "depuis", "année",
    "commande", "payé", "prix", "montant", "seit", "jahr", "bestellung", "bezahlt", "preis", "betrag"))
# ... and, before the keyword, the prepositions that link a PIN after it ("charged 1500 for the pin").
OTHER_NUMBER_BEFORE_KEYWORD = OTHER_NUMBER_BEFORE | {
    "for", "of", "to", "per", "di", "della", "del", "de", "para", "por", "do", "da", "pour", "du", "für", "von", "zu"}
# Right after the digits (spaces only between): what they count or name ("2024 model", "1234 characters", "1500 €").
# After an explicit link (":", "is", "="; _said) or none ("cvv 739 update"), only a length ("my pin is 1234
# characters long?") or a version word after a year ("the pin is the 2024 model", "cvv 2024 update") keeps them.
LENGTH_UNITS = frozenset(("characters", "chars", "letters", "digits", "%", "caratteri", "cifre", "caracteres",
                          "dígitos", "caractères", "chiffres", "zeichen", "stellen"))
VERSION_WORDS = frozenset(("model", "models", "edition", "version", "update", "release", "series", "standard",
                           "modello", "edizione", "versione", "modelo", "edición", "versión", "modèle", "édition",
                           "modell", "ausgabe"))
OTHER_NUMBER_AFTER = LENGTH_UNITS | VERSION_WORDS | frozenset((
    "times", "people", "pieces", "items", "points", "euro", "euros", "eur", "dollar", "dollars", "usd", "gbp", "chf",
    "pounds", "$", "€", "£", "¥"))
_YEAR = re.compile(r"(?:19|20)\d\d")
_GAP_MARKS = ":=,;()[]-—–>"  # around a word in a gap
# Right after a keyword with the number before it (spaces only between): "pin" naming something else ("1500 is the
# pin reset fee", "2024 was the pin change").
OTHER_KEYWORD_AFTER = frozenset((
    "reset", "resets", "change", "changes", "fee", "fees", "update", "updates", "year", "years", "model", "pad",
    "pads", "badge", "badges", "letter", "letters", "mailer", "reminder", "reminders", "request", "requests",
    "attempt", "attempts", "policy", "length", "limit", "limits", "lock", "unlock", "entry"))
# A PIN before its keyword needs one of these between (or punctuation: "4821 (PIN)", "4821 = my pin"): "4821 is my
# pin", "I chose 4821 as my PIN", not "2023 my pin".
LINKING_VERBS = frozenset(("is", "was", "be", "would", "will", "should", "it's", "it’s", "that's", "that’s", "as",
                           "è", "e'", "come", "es", "é", "est", "c'est", "c’est", "ist", "lautet", "als"))
_CURRENCY = "$€£¥"
_WORD_CHARS = 24  # a longer word is none of the lists'
_SENTENCE_END = ".!?;\r\n"
# Form fields named for the code (cvv, card_cvv, cardCvv, securityCode, cvc2, codice_sicurezza, "Your CVV?") or
# the PIN (pin, cardPin, pin_code): a value of 3-4 digits (4-12 for a PIN) is masked whole, text or number, as no
# keyword precedes it. Not "cid" (a customer or content id). The name ends with the keyword, a word such as "code"
# or "number" after it, and punctuation.
_FIELD_END = r"(?:[\s._\-]{1,3}(?:code|number|num|no|nr|value))?[\W_]*$"
_CVV_FIELD = re.compile(
    rf"(?:^|[^\w]|_)(?:{'|'.join(map(_letters, (w for w in CVV_WORDS if w != 'cid')))}){_FIELD_END}", re.IGNORECASE)
_PIN_FIELD = re.compile(rf"(?:^|[^\w]|_)(?:{'|'.join(map(_letters, PIN_WORDS))}){_FIELD_END}", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
# Three masks (and separators) before a card's last one: checked apart, at each match, as a regex starting with
# them would be tried at every mask of every card.
_MASKED_END = re.compile(r"(?:\u2022[ \-.]?){3}$")
# Card, expiry and code typed in one go with no keyword ("4111 1111 1111 1111 12/27 123"): 3-4 digits after a
# masked card (its last four masks, a bullet list's one is none, then at most four shown digits) and an expiry
# (MM/YY or MM/YYYY, "/", "-" or "."), each within 12 characters of no digit or mask. Every part is bounded: linear.
_AFTER_CARD_END = (
    r"(?![ \-.]?\u2022)(?:[ \-.]?\d{1,4})?(?![\d\u2022])[^\d\u2022]{1,12}+"  # from a card's last mask
    r"(?<!\d)(?:0?[1-9]|1[0-2])\s?[/\-.]\s?(?:20)?\d\d[^\d\u2022]{1,12}+"
    r"(?<![^\W\d_])(\d{3,4})(?![^\W_]|\u2022)")
_CARD_EXPIRY_CODE = re.compile("\u2022" + _AFTER_CARD_END)
# A code of four digits, once masked, is four masks: a card's last four to a later pass, which would read an
# expiry and a code after it. Read from its end in the same pass.
_AFTER_CODE = re.compile(_AFTER_CARD_END)


def _word_before(text: str, at: int) -> str:
    """The word or currency sign right before AT, past at most three spaces or marks (no sentence's end, no mask),
    in lower case; "" if there is none."""
    end, lo = at, max(0, at - 3)
    while end > lo and not text[end - 1].isalnum() and text[end - 1] not in _CURRENCY:
        if text[end - 1] in _SENTENCE_END or text[end - 1] == MASK:
            return ""
        end -= 1
    if end and text[end - 1] in _CURRENCY:
        return text[end - 1]
    start = end
    while start > 0 and end - start < _WORD_CHARS and text[start - 1].isalpha():
        start -= 1
    return "" if start and text[start - 1].isalpha() else _folded(text[start:end])


def _word_after(text: str, at: int) -> str:
    """The word, currency sign or "%" right after AT, past at most three spaces, in lower case; "" if none."""
    start, hi = at, min(len(text), at + 3)
    while start < hi and text[start] in " \t\u00a0\u202f":
        start += 1
    if start < len(text) and text[start] in _CURRENCY + "%":
        return text[start]
    end = start
    while end < len(text) and end - start < _WORD_CHARS and text[end].isalpha():
        end += 1
    return "" if end < len(text) and text[end].isalpha() else _folded(text[start:end])


def _folded(word: str) -> str:
    return word.lower() if word.isascii() else unicodedata.normalize("NFKC", word).lower()  # "ＯＲＤＥＲ"


def _words(gap: str) -> list[str]:
    return [_folded(word.strip(_GAP_MARKS)) for word in gap.split()]


def _said(gap: str, words: Iterable[str]) -> bool:
    """Whether GAP (its WORDS), between a keyword and the digits after it, links them explicitly: ":", "=", "'s" or
    a linking verb ("pin: 4821", "my pin's 4821", "the pin for my bank account is 4821")."""
    return ":" in gap or "=" in gap or gap[:2] in ("'s", "’s") or any(word in LINKING_VERBS for word in words)


def _linked_by_verb(gap: str) -> bool:
    """Whether GAP, between a number and its keyword, holds punctuation ("4821 (PIN)") or a linking verb."""
    return (any(not ch.isalnum() and not ch.isspace() and ch not in "'’" for ch in gap)
            or any(_folded(word) in LINKING_VERBS for word in gap.split()))


class CodeRule:
    """Digits a keyword names as secret (NAME: the rule), masked wherever they are typed: after the keyword, before
    it (PATTERNS), or as the value of a field named for it. The keyword stays; each digit becomes the card rule's
    mask (so these rules run after the card rule), separators between digits stay ("cvv • • •")."""

    mask = MASK

    def __init__(self, name: str, patterns: tuple[re.Pattern[str], ...], fewest: int, most: int,
                 shortest: int, verb_before: bool, keyword: re.Pattern[str]) -> None:
        self.name, self.patterns, self.shortest = name, patterns, shortest  # SHORTEST: a shorter text holds none
        self.verb_before = verb_before  # digits before the keyword need a linking verb or punctuation between
        self.keyword = keyword  # where the gap between a keyword and the digits after it starts
        self.fewest, self.largest = fewest, 10**most - 1  # (a field's number: its leading zeros are lost)
        self.value = re.compile(rf"\s*\d{{{fewest},{most}}}\s*")

    def redact(self, text: str) -> tuple[str, int]:
        return self.redact_codes(text)[:2]

    def redact_codes(self, text: str) -> tuple[str, int, list[int]]:
        """TEXT with every code masked, their number, and where the masked codes that join digits for the card
        rule start: a mask is a separator there, so a code with digits before it and nothing but separators
        between (after a keyword ending with a digit, "cvv2 123", or after an expiry, "12/27 123") joins them to
        the digits after it. Each pattern reads the output of the one before (masks keep every position)."""
        if len(text) < self.shortest or not _DIGIT.search(text):  # most texts hold no digit: a faster scan
            return text, 0, []
        count, joined = 0, []
        for pattern in self._patterns(text):
            pieces, last = [], 0
            for at, start, end in self._found(pattern, text):
                if _without_trailing(text[at:start].rstrip("+"))[-1:].isdigit():
                    joined.append(start)
                pieces += [text[last:start], _DIGIT.sub(MASK, text[start:end])]
                last = end
            if pieces:
                text, count = "".join(pieces) + text[last:], count + len(pieces) // 2
        return text, count, sorted(joined)

    def _patterns(self, text: str) -> Any:
        return self.patterns

    def _found(self, pattern: re.Pattern[str], text: str) -> Any:
        """(where the match starts, where its digits start, where they end) for each match of PATTERN whose digits
        the words around them do not name as another number (an amount, a year, an id)."""
        before = "keyword" in pattern.groupindex  # the digits before their keyword
        grouped = "groups" in pattern.groupindex  # (the PIN's digits in groups: "pin is 48 21")
        for match in pattern.finditer(text):
            start, end = match.span("code")
            if before:
                other = self._other_before(text, start, end, match.span("keyword"))
            elif start < 0:  # touching the keyword ("pin4821")
                start, end = match.span("glued")
                other = self._other_after(text, start, end, "", None)
            else:
                gap = text[self.keyword.match(text, match.start()).end():start]  # type: ignore[union-attr]
                other = self._other_after(text, start, end, gap, match["groups"] if grouped else None)
            if not other:
                yield match.start(), start, end

    @staticmethod
    def _other_after(text: str, start: int, end: int, gap: str, groups: str | None) -> bool:
        """Whether the digits from START to END after their keyword and GAP (bounded: the rule stays linear) are
        not the code or PIN: an id, amount or time by the word before them, a weak link (WEAK_LINKS) or groups with
        no explicit one, or a unit or version by the word after them, which an explicit link or none at all ("cvv:
        739 euro", "CVV 739 update") overrules but for a length ("pin is 1234 characters") or a year's version
        ("cvv 2024 update")."""
        if _word_before(text, start) in OTHER_NUMBER_BEFORE:
            return True
        blank = gap.isspace() or not gap  # touching the keyword, or spaces alone between
        words = () if blank else _words(gap)
        said = not blank and _said(gap, words)
        if not said and (groups or any(word in WEAK_LINKS for word in words)):
            return True
        if groups and sum(ch.isdigit() for ch in groups) > 12:
            return True
        after = _word_after(text, end)
        if not (said or blank):  # a weak link: any word naming another number
            return after in OTHER_NUMBER_AFTER
        return after in LENGTH_UNITS or after in VERSION_WORDS and _YEAR.fullmatch(text, start, end) is not None

    def _other_before(self, text: str, start: int, end: int, keyword: tuple[int, int]) -> bool:
        """Whether the digits from START to END before their keyword (at KEYWORD) are another number: a bounded look
        at a few characters either side, so the rule stays linear."""
        return (_word_after(text, end) in OTHER_NUMBER_AFTER
                or _word_before(text, start) in OTHER_NUMBER_BEFORE_KEYWORD
                or _word_after(text, keyword[1]) in OTHER_KEYWORD_AFTER
                or self.verb_before and not _linked_by_verb(text[end:keyword[0]]))

    def redact_value(self, value: Any) -> tuple[Any, int]:
        """A field's value: a code (text or a whole number) masked, anything else as it is."""
        if type(value) is str:
            return (_DIGIT.sub(MASK, value), 1) if self.value.fullmatch(value) else (value, 0)
        if type(value) in CODE_NUMBERS and 0 <= value <= self.largest and value == int(value):
            return MASK * max(self.fewest, len(str(int(value)))), 1  # 12: the code 012 stored as a number
        return value, 0


class CvvRule(CodeRule):
    """Card verification codes (PCI DSS 3.3.1.2: never stored after authorisation, even encrypted): the 3 or 4
    digits after a keyword (CVV, CVC2, CID, "security code"...) within CVV_GAP characters with no digit between,
    just before one, after a masked card and its expiry, and the value of a field named for one; as one number or
    digit by digit."""

    def __init__(self) -> None:
        super().__init__("cvv", (_CVV, _CVV_BEFORE), 3, 4, 6, False, _CVV_KEYWORD)  # "cvv123"; "739 cvv" too

    def _patterns(self, text: str) -> Any:
        yield from self.patterns
        yield _CARD_EXPIRY_CODE  # only in a text holding masks (the card rule's, the PIN rule's, the codes' above)

    def _found(self, pattern: re.Pattern[str], text: str) -> Any:
        if pattern is not _CARD_EXPIRY_CODE:
            yield from super()._found(pattern, text)
            return
        if "\u2022" not in text:
            return
        for match in pattern.finditer(text):
            at = match.start()
            if not _MASKED_END.search(text, max(0, at - 6), at):
                continue  # no card's masks before it (a bullet list's bullet)
            while match:
                start, end = match.span(1)
                yield at, start, end
                # no overlap with the next finditer match: a match holds no mask, which a match starts with
                at, match = end, _AFTER_CODE.match(text, end) if end - start == 4 else None


class PinRule(CodeRule):
    """PINs (PCI DSS 3.3.1.3: never stored after authorisation): 4 to 12 digits (ISO 9564) touching "PIN", after it
    and words linking it to them or punctuation, or just before it with a linking verb or punctuation between, and
    the value of a field named for one; as one number, digit by digit, or in groups after an explicit link; not
    digits the words around them name as another number (CodeRule._other_after, _other_before)."""

    def __init__(self) -> None:
        super().__init__("pin", (_PIN, _PIN_BEFORE), 4, 12, 7, True, _PIN_KEYWORD)  # "pin1234"; not "1000 pin badges"


@functools.lru_cache(maxsize=4096)
def _code_field(key: str) -> str | None:
    """The rule whose code a field named KEY holds, if any."""
    if len(key) >= 64:
        return None
    words = _CAMEL.sub(" ", key)
    return "cvv" if _CVV_FIELD.search(words) else "pin" if _PIN_FIELD.search(words) else None


# -- the redactor -----------------------------------------------------------------------------------


class Redactor:
    """Built once per process from `[redaction]`; `apply` is pure."""

    def __init__(self, enabled: bool, rules: list[Rule], version: str) -> None:
        self.enabled = enabled
        self.rules = rules
        self.version = version
        self.card = next((r for r in rules if isinstance(r, CardRule)), None)
        self.codes = {r.name: r for r in rules if isinstance(r, CodeRule)}  # cvv, pin: also read field values
        # Shorter texts cannot hold a match: most field values and names skip every rule.
        self.shortest = min((getattr(r, "shortest", 1) for r in rules), default=1)
        self.clean_keys: set[str] = set()

    def masked(self, text: str) -> bool:
        """Whether TEXT holds what a rule writes in place of a match (a card's masked digits, a mask)."""
        return any(r.mask in text for r in self.rules)

    def mask(self, text: str) -> str:
        """TEXT with what the rules find masked: for a message that quotes the source (a field's name)."""
        try:
            return self._text(text, ("(a message)",), {r.name: 0 for r in self.rules}) if self.enabled else text
        except InvalidChat:  # a rule failed on it: not quoted at all
            return "(a text not shown: the redaction rules could not be applied to it)"

    def screened(self, text: str) -> tuple[str, list[str]]:
        """TEXT with what the rules find masked, and the names of the rules that found something (a command's
        own text: see for_stated_text). InvalidChat if a rule cannot be applied."""
        matches = {r.name: 0 for r in self.rules}
        masked = self._text(text, ("(an argument)",), matches) if self.enabled else text
        return masked, [name for name, found in matches.items() if found]

    @classmethod
    def for_stated_text(cls, config: Config) -> "Redactor":
        """The rules a command's own text (--reason, --case, --actor, filters) goes through before anything records
        it: the configured ones, and the card rule whatever the settings say (the audit log can never be edited:
        a card number recorded there is kept for good)."""
        configured = cls.from_config(config)
        if configured.card is not None:
            return configured
        settings = {key: config[f"redaction.{key}"] for key in SCHEMA["redaction"]}
        if not settings["enabled"]:
            settings.update(rules=[], patterns={}, masks={})
        return cls(True, _rules({**settings, "rules": [*settings["rules"], "card"]}), configured.version)

    @property
    def note_rules(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    @classmethod
    def from_config(cls, config: Config) -> "Redactor":
        settings = {key: config[f"redaction.{key}"] for key in SCHEMA["redaction"]}
        for key, value in settings.items():  # again: overrides (tests, demo) skip the loader's checks
            problem = SCHEMA["redaction"][key].check(value) if SCHEMA["redaction"][key].check else None
            if problem:
                raise ConfigError(f"redaction.{key}: {problem} (got {value!r})")
        version = hashlib.sha256(json.dumps({"algorithm": ALGORITHM, **settings}, sort_keys=True).encode())
        if not settings["enabled"]:
            return cls(False, [], version.hexdigest()[:12])
        return cls(True, _rules(settings), version.hexdigest()[:12])

    def apply(self, chat: Mapping[str, Any], contact: Mapping[str, Any] | None) -> Redacted:
        """Redacted copies of CHAT and CONTACT; raises InvalidChat if a rule cannot be applied."""
        matches = {r.name: 0 for r in self.rules}
        if not self.enabled:
            return Redacted(chat, contact, RedactionNote(False, self.version, (), matches))
        chat = self._walk(chat, ("chat",), KEPT["chat"], matches)
        contact = None if contact is None else self._walk(contact, ("contact",), KEPT["contact"], matches)
        return Redacted(chat, contact, RedactionNote(True, self.version, self.note_rules, matches))

    def _walk(self, value: Any, path: tuple[Any, ...], kept: Any, matches: dict[str, int]) -> Any:
        """VALUE redacted; KEPT: where VALUE is in the tree of identifiers (None: outside it)."""
        if isinstance(value, Code):  # JavaScript (a str subclass re2 refuses) and its scope: text, kept Code
            scope = None if value.scope is None else self._walk(value.scope, (*path, "$scope"), None, matches)
            return Code(self._walk(str(value), path, kept, matches), scope)
        if isinstance(value, str):
            return value if kept == KEEP or len(value) < self.shortest else self._text(value, path, matches)
        if isinstance(value, dict):
            return self._map(value, path, kept, matches)
        if isinstance(value, DBRef):  # a sub-document {$ref, $id, $db, ...}: its values like any other's
            fields = value.as_doc()
            ref, ident = (self._walk(fields.pop(name), (*path, name), None, matches) for name in ("$ref", "$id"))
            db = self._walk(fields.pop("$db"), (*path, "$db"), None, matches) if "$db" in fields else None
            return DBRef(ref, ident, db, **self._map(fields, path, kept, matches))
        if isinstance(value, list):
            inner = kept.get("*") if type(kept) is dict else None
            return [self._walk(item, (*path, i), inner, matches) for i, item in enumerate(value)]
        if self.card and kept != KEEP and kept != TIME and type(value) in NUMBERS:
            masked, found = self.card.redact_number(value)
            matches["card"] += found
            return masked
        if isinstance(value, bytes) and kept != KEEP:
            return self._binary(value, path, matches)
        if isinstance(value, Regex) and isinstance(value.pattern, str) and len(value.pattern) >= self.shortest:
            pattern = self._text(value.pattern, path, matches)
            return value if pattern == value.pattern else Regex(pattern, value.flags)
        return value  # other numbers, dates, ObjectIds, other binaries: no text to redact

    def _binary(self, value: bytes, path: tuple[Any, ...], matches: dict[str, int]) -> bytes:
        """Bytes (BSON Binary subtype 0 as PyMongo reads it) or a Binary of subtype 0 or 4 that is UTF-8
        text, redacted as text and stored back as bytes of the same type; other bytes as they are."""
        subtype = value.subtype if isinstance(value, Binary) else 0
        if subtype not in TEXT_BINARY or len(value) < self.shortest:
            return value
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value  # not text (an image, a hash): nothing a rule can read
        redacted = self._text(text, path, matches)
        if redacted == text:
            return value
        return Binary(redacted.encode(), subtype) if isinstance(value, Binary) else redacted.encode()

    def _map(self, value: dict[Any, Any], path: tuple[Any, ...], kept: Any, matches: dict[str, int]) -> dict:
        # The hot loop (every field of every message): short names and texts skip the rules inline.
        out: dict[Any, Any] = {}
        tree = kept if type(kept) is dict else None
        each = tree.get(ANY_KEY) if tree else None  # a map keyed by user id: its names kept, its values alike
        shortest, clean, codes = self.shortest, self.clean_keys, self.codes
        for key, item in value.items():
            name = key
            if each is None and (type(key) is not str or len(key) >= shortest) and key not in clean:
                name = self._key(key, path, matches)
            if name in out:
                raise InvalidChat(f"{_where((*path, name))}: two field names are the same once redacted")
            kind = type(item)
            inner = each if each is not None else tree.get(key) if tree else None
            if kind in UNREDACTED or (inner == KEEP and kind in SCALARS) or (inner == TIME and kind in NUMBERS):
                out[name] = item  # (not a list or map where an identifier is kept, nor a time written as text)
            elif codes and (kind is str and len(item) < CODE_VALUE_CHARS and item.strip().isdecimal()
                            or kind in CODE_NUMBERS and 0 <= item < CODE_NUMBER_LIMIT) and type(key) is str \
                    and (rule := codes.get(_code_field(key))):
                out[name], found = rule.redact_value(item)
                matches[rule.name] += found
                if not found:
                    out[name] = self._walk(item, (*path, name), inner, matches)
            elif (kind is str and len(item) < shortest) or (kind is float and not CARD_RANGE[0] <= abs(item) < CARD_RANGE[1]):
                out[name] = item
            else:
                out[name] = self._walk(item, (*path, name), inner, matches)
        return out

    def _key(self, key: Any, path: tuple[Any, ...], matches: dict[str, int]) -> Any:
        if not isinstance(key, str) or len(key) < self.shortest or key in self.clean_keys:
            return key
        name = self._text(key, (*path, "(a field name)"), matches)
        if name == key and len(self.clean_keys) < CLEAN_KEYS_CACHED:
            self.clean_keys.add(key)
        return name

    def _text(self, text: str, path: tuple[Any, ...], matches: dict[str, int]) -> str:
        for rule in self.rules:
            try:
                if isinstance(rule, CodeRule):
                    text, found, joined = rule.redact_codes(text)
                else:
                    (text, found), joined = rule.redact(text), None
                matches[rule.name] += found
                if joined and self.card:
                    # A mask is a separator to the card rule: a code masked between digit groups joins them (the "2"
                    # of "cvv2 123 4..."). The card rule reads those runs again (the others are as it left them), so
                    # a second pass finds nothing.
                    rule = self.card  # (named if it fails)
                    text, found = rule.redact(text, holding=joined)
                    matches[rule.name] += found
            except Exception as exc:  # whatever went wrong, the chat must not be archived unredacted
                reason = "invalid UTF-8" if isinstance(exc, UnicodeError) else type(exc).__name__
                raise InvalidChat(f"{_where(path)}: redaction rule {rule.name!r} could not be applied "
                                  f"({reason}); not archived unredacted") from None
        return text


def _rules(settings: dict[str, Any]) -> list[Rule]:
    names, patterns, masks = settings["rules"], settings["patterns"], settings["masks"]
    for name in names:
        if name not in BUILTIN_RULES:
            raise ConfigError(f"redaction.rules: unknown rule {name!r} (built-in: {', '.join(BUILTIN_RULES)}; "
                              "add others under [redaction.patterns])")
    for name in patterns:
        if name in BUILTIN_RULES:
            raise ConfigError(f"redaction.patterns.{name}: the name of a built-in rule; choose another")
    for name in masks:
        if name not in patterns and name not in ("iban", "email"):
            raise ConfigError(f"redaction.masks.{name}: no such rule (masks are for iban, email and patterns)")

    def mask(name: str) -> str:
        return masks.get(name, f"[{name} redacted]")

    rules: list[Rule] = []
    # The IBAN rule first, whatever the order given: a Luhn-valid window inside an IBAN (8% of them) would
    # otherwise be masked as a card, leaving the IBAN rule nothing to match and most of the IBAN in clear.
    order = sorted(dict.fromkeys(names), key=lambda rule: rule != "iban")
    # The code rules right after the card rule: masking a card's first group as a code ("cvv 4111 1111 1111 1111")
    # would leave the card rule 12 digits, no card, in clear. The PIN first: a masked PIN of four digits looks like
    # a card's last four to the code rule, which reads masks (a card, an expiry, a code), so it must see them.
    codes = [name for name in ("pin", "cvv") if name in order]
    if codes:
        first = min(map(order.index, codes))
        order = [name for name in order if name not in codes]
        at = order.index("card") + 1 if "card" in order else first
        order[at:at] = codes
    for name in order:
        if name == "card":
            rules.append(CardRule(settings["card_show"], settings["card_prefixes"]))
        elif name == "cvv":
            rules.append(CvvRule())
        elif name == "pin":
            rules.append(PinRule())
        elif name == "iban":
            rules.append(IbanRule(mask("iban")))
        else:
            rules.append(PatternRule("email", EMAIL_PATTERN, mask("email")))
    rules.extend(PatternRule(name, pattern, mask(name)) for name, pattern in patterns.items())
    return rules


def _where(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)

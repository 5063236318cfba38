"""Right-to-left scripts for the PDF: Arabic letters joined, lines in visual order, text extractable.

A PDF draws glyphs left to right; readers and extractors (pdftotext, Acrobat's
search) put right-to-left runs back into logical order themselves. So the
renderer shapes Arabic (arabic-reshaper: each letter in its joining form, a
presentation-form character), wraps the line in logical order, then reorders
each drawn line with the Unicode bidirectional algorithm (python-bidi's
reference implementation, which keeps track of where each character came from,
so the runs keep their fonts and colours).

The ToUnicode map of every embedded font says which character each glyph
stands for. reportlab's own map writes a character beyond the Basic
Multilingual Plane as five hex digits (U+1F600 reads back as U+1F60) and maps a
presentation form to itself, so a search for the plain Arabic word finds
nothing. `to_unicode_cmap` replaces it: UTF-16 for every character, and each
Arabic presentation form mapped to its plain letter (NFKC).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Sequence, TypeVar

import arabic_reshaper
from bidi import algorithm
from reportlab.pdfbase import ttfonts

# Characters of the right-to-left scripts (Hebrew, Arabic, Syriac, Thaana, NKo ... and their presentation forms).
RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]|[\U00010800-\U00010fff\U0001e800-\U0001efff]")
ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff]")
ASCII_LETTER = re.compile("[A-Za-z]")  # in ASCII, the letters are the only strong (bidi class L) characters
NOT_ASCII = re.compile("[^\x00-\x7f]")
# Ligatures off: a lam-alef glyph standing for two letters comes back reversed from pdftotext.
# Harakat kept: the record and the page must say the same.
_RESHAPER = arabic_reshaper.ArabicReshaper({"delete_harakat": False, "support_ligatures": False})


class _Settings:
    """The reshaper's settings, read once: arabic_reshaper reads each through configparser on every call
    (six look-ups a call, most of its time for a short message). Same values, so the same shapes; a reshaper
    version that asks for anything else fails loudly (AttributeError) rather than shaping otherwise."""

    def __init__(self, section: Any) -> None:
        self.text = dict(section)
        self.flags: dict[str, bool] = {}
        for key in self.text:
            try:
                self.flags[key] = section.getboolean(key)
            except ValueError:  # not a flag ("language")
                pass

    def get(self, key: str, fallback: Any = None) -> Any:
        return self.text.get(key, fallback)

    def getboolean(self, key: str) -> bool | None:
        return self.flags.get(key)


_RESHAPER.configuration = _Settings(_RESHAPER.configuration)
T = TypeVar("T")


ZWJ = "\u200d"


def shape(text: str) -> str:
    """TEXT with its Arabic letters in their joining forms (logical order kept)."""
    if text.isascii():  # constant time in CPython: most text is never searched
        return text
    if not ARABIC.search(text):
        return text
    if ZWJ in text:  # the reshaper drops every zero-width joiner: shaped around them, they stay (shown as such)
        return ZWJ.join(_RESHAPER.reshape(piece) for piece in text.split(ZWJ))
    return _RESHAPER.reshape(text)


def has_rtl(text: str) -> bool:
    return not text.isascii() and RTL.search(text) is not None


def base_level(text: str) -> int | None:
    """1 when the first strong character of TEXT is right-to-left, 0 when left-to-right, None if it has none."""
    if text[:1].isascii() and text[:1].isalpha():
        return 0  # the common case, decided by the first character
    letter = ASCII_LETTER.search(text)  # the first ASCII character that is strong
    # Only the characters beyond ASCII before it need a look-up.
    for match in NOT_ASCII.finditer(text, 0, letter.start() if letter else len(text)):
        kind = unicodedata.bidirectional(match.group())
        if kind in ("R", "AL"):
            return 1
        if kind == "L":
            return 0
    return 0 if letter else None


def visual(chars: Sequence[tuple[str, T]], level: int) -> list[tuple[str, T]]:
    """CHARS (each with what it belongs to) in the order they are drawn, mirrored where right-to-left,
    for a line of a paragraph whose base level is LEVEL (0 left-to-right, 1 right-to-left)."""
    if level == 1 and all(_reversed_plainly(ch) for ch, _ in chars):
        return list(reversed(chars))  # the usual right-to-left line: what the algorithm does to it
    return visual_by_algorithm(chars, level)


def visual_by_algorithm(chars: Sequence[tuple[str, T]], level: int) -> list[tuple[str, T]]:
    """`visual` without its shortcut: every step of python-bidi's algorithm."""
    storage = algorithm.get_empty_storage()
    storage["base_level"], storage["base_dir"] = level, ("L", "R")[level]
    text = "".join(ch for ch, _ in chars)
    algorithm.get_embedding_levels(text, storage)
    for i, slot in enumerate(storage["chars"]):
        slot["at"] = i  # travels with the character through the reordering
    algorithm.explicit_embed_and_overrides(storage)
    algorithm.resolve_weak_types(storage)
    algorithm.resolve_neutral_types(storage, False)
    algorithm.resolve_implicit_levels(storage, False)
    algorithm.reorder_resolved_levels(storage, False)
    algorithm.apply_mirroring(storage, False)
    return [(slot["ch"], chars[slot["at"]][1]) for slot in storage["chars"]]


# In a right-to-left paragraph, a line of only these resolves to level 1 throughout (strong R, and weak or
# neutral types that rules W1-W7 and N1-N2 make R between R and the R of the line's start and end): the
# algorithm reverses it whole. A mirrored character (a bracket) is mirrored there, so it takes the long way.
PLAIN_RIGHT_TO_LEFT = frozenset({"R", "AL", "WS", "CS", "ES", "ET", "ON", "NSM"})


@functools.lru_cache(maxsize=4096)
def _reversed_plainly(ch: str) -> bool:
    return unicodedata.bidirectional(ch) in PLAIN_RIGHT_TO_LEFT and not unicodedata.mirrored(ch)


@functools.lru_cache(maxsize=65536)
def _unicode_of(code: int) -> str:
    if code < 0xFB50:
        return f"{code:04X}"  # reportlab's own map, right below the presentation forms
    ch = chr(code)
    if code <= 0xFDFF or 0xFE70 <= code <= 0xFEFC:
        ch = unicodedata.normalize("NFKC", ch)  # a joining form stands for its letter
    return ch.encode("utf-16-be").hex().upper()


def to_unicode_cmap(fontname: str, subset: Sequence[int]) -> str:
    """The ToUnicode CMap of one font subset (drop-in for reportlab's makeToUnicodeCMap)."""
    return "\n".join([
        "/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
        f"/CIDSystemInfo\n<< /Registry ({fontname})\n/Ordering ({fontname})\n/Supplement 0\n>> def",
        f"/CMapName /{fontname} def", "/CMapType 2 def",
        "1 begincodespacerange", f"<00> <{len(subset) - 1:02X}>", "endcodespacerange",
        f"{len(subset)} beginbfchar",
        *(f"<{i:02X}> <{_unicode_of(code)}>" for i, code in enumerate(subset)),
        "endbfchar", "endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end",
    ])


# reportlab looks the function up in its module when it embeds a subset.
ttfonts.makeToUnicodeCMap = to_unicode_cmap

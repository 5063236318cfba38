"""Text from chats (room ids, names, messages) shown safely: a control or format character (a newline, an
ANSI escape, a bidi override) or a letter that draws as nothing becomes a visible placeholder [U+XXXX],
in the PDF as on a terminal, so that hostile text can neither forge an output line nor hide."""

from __future__ import annotations

import re
import unicodedata

# Letters and marks Unicode counts as printable that fonts draw as nothing (default-ignorable ones: Hangul
# fillers, the combining grapheme joiner, Khmer inherent vowels, Mongolian variation selectors) and the
# blank braille cell: a message of them would read as an empty line. Shown as placeholders, like controls.
INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")


def hidden(ch: str) -> bool:
    """A control or format character (a bell, a bidi override), or an invisible letter: shown as a
    placeholder, never raw."""
    return (not ch.isprintable() and unicodedata.category(ch) != "Zs") or ch in INVISIBLE


def placeholder(ch: str) -> str:
    return f"[U+{ord(ch):04X}]"


def visible(text: object) -> str:
    """TEXT with its control and format characters as placeholders (for PDF metadata and printed lines)."""
    return "".join(placeholder(ch) if hidden(ch) else ch for ch in str(text))


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(text: str) -> str:
    """TEXT as it can be encoded as UTF-8 (and so stored in MongoDB): each byte that was not UTF-8, decoded
    with surrogateescape as U+DC80-U+DCFF, as \\xNN; any other lone surrogate as \\uNNNN; the rest as it is."""
    if text.isascii() or not LONE_SURROGATE.search(text):
        return text
    return LONE_SURROGATE.sub(_escaped_surrogate, text)


def _escaped_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def pdf_title(room: str, limit: int) -> str:
    """The PDF title the renderer writes for ROOM: shown safely, cut at LIMIT characters with an ellipsis."""
    return visible(room[:limit]) + ("…" if len(room) > limit else "")


def is_pdf_title(title: str, room: str) -> bool:
    """Whether TITLE is pdf_title(ROOM, limit) for some limit: the limit at render time (archive.max_field_chars
    then) need not be the checker's. visible() maps character by character, so each cut is a prefix."""
    if title == visible(room):
        return True
    if not title.endswith("…"):
        return False
    shown, prefix = title[:-1], ""
    for ch in room[:-1]:  # a cut keeps at least one character and drops at least one
        prefix += visible(ch)
        if len(prefix) >= len(shown):
            return prefix == shown
    return False

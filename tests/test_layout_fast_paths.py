"""The layout's shortcuts (issue 12) give what the long way gives: placeholders, fonts, directions, shapes."""

from __future__ import annotations

import random
import unicodedata

import arabic_reshaper
import pytest

from archiver.config import DEFAULT_TEMPLATE
from archiver.render import pdf
from archiver.render.pdf import PdfRenderer, Run, Style, wrap
from archiver.render.scripts import base_level, shape


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _base_level_by_every_character(text: str) -> int | None:
    """base_level as it was written before its shortcuts: every character looked up."""
    for ch in text:
        kind = unicodedata.bidirectional(ch)
        if kind in ("R", "AL"):
            return 1
        if kind == "L":
            return 0
    return None


ALPHABET = "aZ1 #·:«»-\t\u202e\u200fשאبم中😀é،"


@pytest.mark.parametrize("text", ["#1 · 12:00:00 +01:00 · ", "#1 · 12:00 · שלום abc", "#1 · 12:00 · abc שלום",
                                  "12 · 34", "", "«שלום» abc", "\u202eabc", "1.5 مرحبا", "é1", "!!! ?", "中文 abc"])
def test_base_level_is_the_first_strong_character_ascii_or_not(text) -> None:
    assert base_level(text) == _base_level_by_every_character(text)


def test_base_level_agrees_with_the_character_by_character_scan_on_random_text() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        assert base_level(text) == _base_level_by_every_character(text), repr(text)


def test_ascii_text_is_not_shaped_and_arabic_still_is() -> None:
    assert shape("plain ASCII, with digits 123 and a tab\t") == "plain ASCII, with digits 123 and a tab\t"
    assert shape("لا") != "لا" and shape("abc لا") != "abc لا"


@pytest.mark.parametrize("text", ["مرحبا، كيف يمكنني مساعدتك؟", "لا إله", "بِسْمِ اللَّهِ", "ـــتـــ", "ب\u200dب",
                                  "سفارش من هنوز نرسیده است", "میرا آرڈر ابھی تک نہیں پہنچا", "a ب 1 ج"])
def test_arabic_is_shaped_as_arabic_reshaper_shapes_it_with_its_settings_read_every_time(text) -> None:
    reference = arabic_reshaper.ArabicReshaper({"delete_harakat": False, "support_ligatures": False})
    # (around a zero-width joiner, which the reshaper would drop, each side is shaped on its own)
    assert shape(text) == "\u200d".join(reference.reshape(piece) for piece in text.split("\u200d"))


def test_ascii_text_with_control_characters_still_gets_placeholders(renderer) -> None:
    body = renderer.styles["body"]
    runs, missing = renderer.chain.runs("bell\x07 and escape\x1b[0m\tend", body)
    assert missing == 2
    assert [r.text for r in runs] == ["bell", "[U+0007]", " and escape", "[U+001B]", "[0m end"]
    assert runs[1].style == Style(body.font, body.size, renderer.palette["placeholder"])
    assert [r.style for r in runs[::2]] == [body] * 3
    # In a field a newline is a placeholder too; in a message it is kept.
    assert renderer.chain.runs("a\nb", body, newlines=False) == ([Run("a", body), Run("[U+000A]", runs[1].style),
                                                                  Run("b", body)], 1)
    assert renderer.chain.runs("a\nb", body) == ([Run("a\nb", body)], 0)


def test_fallback_fonts_are_the_same_whether_a_character_was_seen_before_or_not(renderer, monkeypatch) -> None:
    body = renderer.styles["body"]
    text = "a中b\x07\x07c中😀"
    first = renderer.chain.runs(text, body)
    assert first[1] == 2 and [r.text for r in first[0]][:4] == ["a", "中", "b", "[U+0007][U+0007]"]
    assert first[0][1].style.font != body.font and first[0][1].style.size == body.size
    assert renderer.chain.runs(text, body) == first  # now from what the chain remembers
    monkeypatch.setattr(pdf, "SEEN_CHARACTERS", 0)  # remembers nothing more
    fresh = pdf.FontChain(renderer.chain.covers, renderer.chain.fallbacks, renderer.chain.placeholder)
    assert fresh.runs(text, body) == first and fresh.seen == {body.font: {}}


def test_right_to_left_text_after_ascii_is_still_reordered(renderer) -> None:
    body = renderer.styles["body"]
    (line,) = wrap([Run("order 4711 ", body), Run("שלום", body)], renderer.width, body.leading)
    assert line.level == 0 and "".join(r.text for _, r in line.runs) == "order 4711 םולש"
    (line,) = wrap([Run("1. ", body), Run("שלום abc", body)], renderer.width, body.leading)
    assert line.level == 1 and "".join(r.text for _, r in line.runs) == "abc םולש .1"
    assert line.runs[0][0] > renderer.width / 2  # a right-to-left paragraph is aligned right


def test_a_right_to_left_line_reversed_whole_is_what_the_algorithm_makes_of_it() -> None:
    from archiver.render.scripts import PLAIN_RIGHT_TO_LEFT, visual, visual_by_algorithm

    kinds: dict[str, list[str]] = {}
    for code in range(0x20000):
        kinds.setdefault(unicodedata.bidirectional(chr(code)), []).append(chr(code))
    plain = sorted(PLAIN_RIGHT_TO_LEFT)
    others = ["L", "EN", "AN", "B", "S", "BN", "LRE", "RLO", "PDF"]  # isolates are placeholders before this
    rng = random.Random(3)
    for n in range(4000):
        chosen = plain + others if n % 2 else plain  # half only the kinds reversed whole, half any
        chars = [(rng.choice(kinds[rng.choice(chosen)]), rng.randint(0, 2)) for _ in range(rng.randint(1, 16))]
        chars += [("(", 3)] * (n % 7 == 0)  # a mirrored character: the long way
        for level in (0, 1):
            assert visual(chars, level) == visual_by_algorithm(chars, level), chars

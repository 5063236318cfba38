"""PDF objects formatted faster (render/pdfsyntax.py, render/fonts.py's widths) are the same bytes as reportlab's."""

from __future__ import annotations

import random
import re

import pytest
from reportlab import rl_config
from reportlab.pdfbase import pdfdoc, ttfonts

from archiver.config import DEFAULT_TEMPLATE
from archiver.render import fonts, pdfsyntax
from archiver.render.pdf import PdfRenderer
from archiver.samples import make_chat
from archiver.transcript import normalise


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _outcome(function, *args):
    try:
        return function(*args)
    except Exception as exc:  # the same kind of failure counts as the same outcome
        return type(exc)


def test_encoding_gives_reportlabs_bytes_or_failure_for_every_character() -> None:
    decoded = (_outcome(bytes.decode, bytes([b]), "extpdfdoc") for b in range(256))
    known = set(map(chr, range(0x3000))) | {ch for ch in decoded if isinstance(ch, str)}
    assert len(known) > 0x3000  # the codec writes characters beyond U+3000 too (€, ﬁ, ...)
    for ch in sorted(known):
        for text in (ch, f"/Name{ch}", f"{ch} 12 0 R\n"):
            assert _outcome(pdfsyntax.pdfdoc_enc, text) == _outcome(pdfsyntax._REPORTLAB_ENC, text), repr(text)
    assert pdfsyntax.pdfdoc_enc(b"\x00\xff as is") == b"\x00\xff as is"
    with pytest.raises(UnicodeEncodeError):  # what the codec cannot write still fails, as it did
        pdfsyntax.pdfdoc_enc("a\x1fb")


@pytest.mark.parametrize("name", ["Type", "FontDescriptor", "F1+0", "a b", "(x)", "#1", "<>[]{}%/", "é€",
                                  "\x00\x7f", ""])
def test_names_are_reportlabs(name) -> None:
    assert pdfsyntax.pdf_name(name) == pdfsyntax._REPORTLAB_NAME(name)
    assert pdfsyntax.pdf_name(name) == pdfsyntax._REPORTLAB_NAME(name)  # from the cache too
    assert pdfsyntax.pdf_name(name, "a", "z") == pdfsyntax._REPORTLAB_NAME(name, "a", "z")
    assert pdfsyntax.pdf_name(list(name)) == pdfsyntax._REPORTLAB_NAME(list(name))


def _chat(seed: int, language: str) -> dict:
    chat, contact = make_chat(random.Random(seed), messages=20, language=language)
    return normalise(chat, contact)


def test_a_transcript_is_the_same_bytes_as_with_reportlabs_own_formatting(renderer, monkeypatch) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)
    assert pdfdoc.pdfdocEnc is pdfsyntax.pdfdoc_enc and pdfdoc.PDFName is pdfsyntax.pdf_name  # installed
    transcripts = [_chat(1, "en"), _chat(2, "ar"), _chat(3, "zh")]
    faster = [renderer.render(t).data for t in transcripts]
    monkeypatch.setattr(pdfdoc, "pdfdocEnc", pdfsyntax._REPORTLAB_ENC)
    monkeypatch.setattr(pdfdoc, "PDFName", pdfsyntax._REPORTLAB_NAME)
    assert [renderer.render(t).data for t in transcripts] == faster


def test_font_widths_formatted_once_are_those_reportlab_writes(renderer, monkeypatch) -> None:
    """The /Widths of every subset, from the per-process cache (formatted once), against reportlab's own
    addObjects (which formats them for each PDF)."""
    transcripts = [_chat(4, "it"), _chat(5, "ru"), _chat(6, "ja"), _chat(4, "it")]
    fonts.subset_contents.cache_clear()
    cached = [renderer.render(t).data for t in transcripts]
    assert fonts.subset_contents.cache_info().hits > 0
    monkeypatch.setattr(ttfonts.TTFont, "addObjects", fonts._REPORTLAB_ADD_OBJECTS)
    own = [renderer.render(t).data for t in transcripts]
    for new, old in zip(cached, own):
        widths = re.findall(rb"/Widths \[[^\]]*\]", new)
        assert len(widths) >= 2 and widths == re.findall(rb"/Widths \[[^\]]*\]", old)

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


NUMBERS = [0, 1, -1, 1.0, True, 0.0, -0.0, 1e-8, -1e-8, 0.5, 0.25, 12.5, 595.2756, 841.8898, -240.2344, 10**20,
           1e20, 2**53 + 1, 123456789.123, -3.14159265, 1 / 3, 2 / 3, 99999.99999, 0.1 + 0.2]


def test_numbers_are_written_as_fp_str_writes_them_remembered_or_not(monkeypatch) -> None:
    from reportlab.lib.rl_accel import fp_str
    values = [*NUMBERS, *(random.Random(1).uniform(-1e4, 1e4) for _ in range(2000))]
    for round_ in range(2):  # made, then from memory; equal keys (1, 1.0, True; 0.0, -0.0) in either order
        for x in values if round_ == 0 else reversed(values):
            assert pdfsyntax.number(x) == fp_str(x), repr(x)
            assert pdfsyntax.pdf_format(x, pdfdoc.DummyDoc()) == pdfsyntax._REPORTLAB_FORMAT(x, pdfdoc.DummyDoc())
    with pytest.raises(Exception, match="number too large"):  # what fp_str refuses is still refused
        pdfsyntax.number(1e300)
    monkeypatch.setattr(pdfsyntax, "NUMBERS_KEPT", 100)
    for i in range(1000):
        pdfsyntax.number(i + 0.5)
    assert len(pdfsyntax._NUMBERS) <= 100  # bounded


@pytest.mark.parametrize("element", ["/Name", "ab\nc", "é", b"\x00raw", 7, 7.25, True, None, [1, 2],
                                     pdfdoc.PDFArray([1, 2.5, "x"]), pdfdoc.PDFString("a (b)")])
def test_any_element_is_formatted_as_reportlab_formats_it(element) -> None:
    doc = pdfdoc.PDFDocument()
    assert _outcome(pdfsyntax.pdf_format, element, doc) == _outcome(pdfsyntax._REPORTLAB_FORMAT, element, doc)


@pytest.mark.parametrize("multiline", [True, False, "forced"])
@pytest.mark.parametrize("size", [0, 1, 6, 7, 12, 13])
def test_dictionaries_are_formatted_as_reportlab_formats_them(monkeypatch, multiline, size) -> None:
    from collections import OrderedDict
    doc = pdfdoc.PDFDocument()
    entries = {f"K{(i * 7) % 13} x#": [i, 1.5 * i, f"v({i})", pdfdoc.PDFString("é")][i % 4] for i in range(size)}
    for made in (pdfdoc.PDFDictionary(entries), pdfdoc.PDFDictionary(OrderedDict(reversed(entries.items())))):
        made.multiline = multiline
        for wide in (0, 1):
            monkeypatch.setattr(rl_config, "pdfMultiLine", wide)
            assert pdfsyntax.dictionary_format(made, doc) == pdfsyntax._REPORTLAB_DICTIONARY_FORMAT(made, doc)
            assert pdfsyntax.dictionary_format(made, doc) == pdfsyntax._REPORTLAB_DICTIONARY_FORMAT(made, doc)


def _chat(seed: int, language: str) -> dict:
    chat, contact = make_chat(random.Random(seed), messages=20, language=language)
    return normalise(chat, contact)


def test_a_transcript_is_the_same_bytes_as_with_reportlabs_own_formatting(renderer, monkeypatch) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)
    assert pdfdoc.pdfdocEnc is pdfsyntax.pdfdoc_enc and pdfdoc.PDFName is pdfsyntax.pdf_name  # installed
    assert pdfdoc.format is pdfsyntax.pdf_format and pdfdoc.PDFDictionary.format is pdfsyntax.dictionary_format
    transcripts = [_chat(1, "en"), _chat(2, "ar"), _chat(3, "zh")]
    faster = [renderer.render(t).data for t in transcripts]
    monkeypatch.setattr(pdfdoc, "pdfdocEnc", pdfsyntax._REPORTLAB_ENC)
    monkeypatch.setattr(pdfdoc, "PDFName", pdfsyntax._REPORTLAB_NAME)
    monkeypatch.setattr(pdfdoc, "format", pdfsyntax._REPORTLAB_FORMAT)
    monkeypatch.setattr(pdfdoc.PDFDictionary, "format", pdfsyntax._REPORTLAB_DICTIONARY_FORMAT)
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

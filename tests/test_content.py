"""Page text written directly (render/content.py) draws exactly what reportlab's PDFTextObject draws."""

from __future__ import annotations

import io
import random
import re
import subprocess
from pathlib import Path

import pytest
from reportlab import rl_config
from reportlab.lib.colors import HexColor
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen import textobject
from reportlab.pdfgen.canvas import Canvas

from archiver.config import DEFAULT_TEMPLATE
from archiver.render import fonts
from archiver.render.content import TextWriter
from archiver.render import pdf as pdf_module
from archiver.render.pdf import PdfRenderer
from archiver.samples import make_chat
from archiver.transcript import normalise
from conftest import pdf_pages_and_text

TRICKY = [
    "Parentheses (a), unbalanced ) and (, a backslash \\ and \\\\, 100% \\(escaped\\)",
    "שלום, ההזמנה שלי (4711) לא הגיעה",
    "طلبي رقم 4711 لم يصل (بعد)",
    "a bell \x07 and an override \u202e here",
    "mid-line: Ελλάδα abc 我的订单 ありがとう ∑ 한국어 done",
    "no\u00a0break and\ttab",
]
MANY = "".join(chr(0x4E00 + 7 * i) for i in range(300))  # more than the 256 codes of one subset


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


class _ReferenceWriter:
    """TextWriter's calls carried out through reportlab's PDFTextObject, as page text was drawn before
    render/content.py: setTextOrigin, setFont and setFillColor when the style changes, textOut."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas

    def begin(self) -> None:
        self.text, self.current = self.canvas.beginText(), None

    def run(self, x: float, y: float, text: str, font: str, size: float, color: HexColor) -> None:
        self.text.setTextOrigin(x, y)
        if (font, size, color) != self.current:
            self.text.setFont(font, size)
            self.text.setFillColor(color)
            self.current = (font, size, color)
        self.text.textOut(text)

    def end(self) -> None:
        self.canvas.drawText(self.text)


def _runs(regular: str, bold: str, cjk: str) -> list[tuple[float, float, str, str, float, HexColor]]:
    """Runs that switch font, size and colour, repeat styles, and pass subset 0 of a font in mid-run."""
    blue, grey = HexColor("#1f4e79"), HexColor("#555555")
    runs = [(10 + i, 800 - 14 * i, text, regular, 10, blue) for i, text in enumerate(TRICKY)]
    runs += [(40, 600, "Bold (b) \\", bold, 10, blue), (90, 600, "same style", bold, 10, blue),
             (120, 600, "other colour", bold, 10, grey), (150, 600, "", regular, 10, grey),
             (12.345678, 580.5, MANY, cjk, 8.5, grey), (20, 560, "again 我的订单 " + MANY[::-3], cjk, 8.5, grey),
             (20, 540, "ASCII after () \\", regular, 7.5, blue)]
    return runs


def _canvas_bytes(draw) -> bytes:
    out = io.BytesIO()
    canvas = Canvas(out, initialFontName="Archiver-DejaVuSans", pageCompression=0)
    draw(canvas)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def test_text_is_written_byte_for_byte_as_pdftextobject_writes_it(renderer, monkeypatch) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)  # fixed dates and ID: whole files comparable
    cjk = next(name for name, cover in renderer.chain.covers.items() if cover.issuperset(MANY))
    runs = _runs(renderer.styles["body"].font, renderer.styles["title"].font, cjk)

    def draw(writer: TextWriter | _ReferenceWriter) -> None:
        writer.begin()
        for run in runs:
            writer.run(*run)
        writer.end()

    expected = _canvas_bytes(lambda canvas: draw(_ReferenceWriter(canvas)))
    written = _canvas_bytes(lambda canvas: draw(TextWriter(canvas)))
    assert re.search(rb"/F\d\+1 ", written) and b"\\\\" in written and b"\\(" in written  # the cases meant
    assert written == expected


def test_two_pages_of_one_document_share_codes_and_font_names(renderer, monkeypatch) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)
    font = renderer.styles["body"].font
    color = HexColor("#000000")

    def pages(canvas: Canvas, direct: bool) -> None:
        writer = TextWriter(canvas)
        for text in ("ab (c) é", "é ab ü", "ü ab"):
            if direct:
                writer.begin()
                writer.run(50, 700, text, font, 10, color)
                writer.end()
            else:
                t = canvas.beginText()
                t.setTextOrigin(50, 700)
                t.setFont(font, 10)
                t.setFillColor(color)
                t.textOut(text)
                canvas.drawText(t)
            canvas.showPage()

    assert _canvas_bytes(lambda c: pages(c, True)) == _canvas_bytes(lambda c: pages(c, False))


def _tricky_transcript():
    chat, contact = make_chat(random.Random(3), messages=14, language="en")
    texts = [*TRICKY, MANY, "See https://example.com/a_(b)?c=\\d for more"]
    for message, text in zip((m for m in chat["messages"] if m["data"].get("content", {}).get("text")), texts * 2):
        message["data"]["content"]["text"] = text
    chat["room"] = contact["id"] = "ROOM (1) \\ שלום"
    return normalise(chat, contact)


def _pdf_pages_text(pdf: bytes, folder: Path, name: str) -> tuple[list[bytes], str]:
    pages, text = pdf_pages_and_text(pdf, folder, name)
    check = subprocess.run(["qpdf", "--check", str(folder / f"{name}.pdf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    return pages, text


def test_a_transcript_looks_and_reads_as_through_pdftextobject(renderer, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(rl_config, "invariant", 1)
    transcript = _tricky_transcript()
    direct = renderer.render(transcript).data
    monkeypatch.setattr(pdf_module, "TextWriter", _ReferenceWriter)
    reference = renderer.render(transcript).data
    pages, text = _pdf_pages_text(direct, tmp_path, "direct")
    assert len(pages) >= 2
    assert (pages, text) == _pdf_pages_text(reference, tmp_path, "reference")
    assert direct == reference  # and the very same bytes


def test_tricky_text_reads_back_from_the_pdf(renderer, tmp_path) -> None:
    _, text = _pdf_pages_text(renderer.render(_tricky_transcript()).data, tmp_path, "tricky")
    flat = re.sub(r"\s+", " ", re.sub("[\u202a-\u202e\u200e\u200f]", "", text))
    for expected in ("Parentheses (a), unbalanced ) and (, a backslash \\ and \\\\, 100% \\(escaped\\)",
                     "[U+0007]", "[U+202E]", "mid-line: Ελλάδα abc 我的订单 ありがとう ∑ 한국어 done",
                     MANY[:40], MANY[-40:], "https://example.com/a_(b)?c=\\d", "ROOM (1) \\"):
        assert expected in flat
    for word in ("ההזמנה", "طلبي"):  # right to left: drawn in visual order, read back in logical order
        assert word in flat or word[::-1] in flat


def test_a_style_in_another_colour_space_is_refused_not_drawn_wrongly(renderer) -> None:
    from reportlab.lib.colors import CMYKColor
    writer = TextWriter(Canvas(io.BytesIO()))
    writer.begin()
    with pytest.raises(TypeError, match="opaque RGB colour"):
        writer.run(10, 10, "x", renderer.styles["body"].font, 10, CMYKColor(0, 0, 0, 1))
    with pytest.raises(TypeError, match="opaque RGB colour"):
        writer.run(10, 10, "x", renderer.styles["body"].font, 10, HexColor("#80000000", hasAlpha=True))
    with pytest.raises(TypeError, match="TrueType font"):
        writer.run(10, 10, "x", "Helvetica", 10, HexColor("#000000"))
    assert pdfmetrics.getFont("Helvetica")  # a font reportlab has: refused for its kind, not its absence


@pytest.mark.parametrize("owner, name", [(textobject.PDFTextObject, "_formatText"), (Canvas, "addLiteral")])
def test_a_missing_internal_that_direct_text_relies_on_is_refused(monkeypatch, owner, name) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(fonts.ReportlabMismatch, match=rf"lacks [\w.]*{name}, which archiver/render/fonts.py"):
        fonts.check_reportlab()

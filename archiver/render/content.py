"""Page text written straight into the content stream, as PDFTextObject writes it (reportlab internals, pinned).

Drawing through PDFTextObject costs, for every run, a font lookup, number
formatting, a colour dispatch and a Python loop over every character
(TTFont.splitString). `TextWriter` writes the same operators, byte for byte
(BT, Tm, rg, Tf/TL, Tj, ET), from what it works out once: per style its colour
and font operators, per font and subset its PDF name. A run is split into
font subsets by the font's own `splitString`, which assigns each new character
its code and records it for the embedded subset; a run whose characters have
all been given a code in subset 0 before is encoded from what splitString
said then, with no call (the same bytes: a character's code never changes
within a document). The codes a font's state gives before any text (printable
ASCII as itself, in subset 0) are known from the start: most runs are ASCII. The block goes onto the page with `Canvas.addLiteral`.

It relies on how reportlab 5.1.0 writes text (tests/test_content.py compares it
with PDFTextObject's own output), so `archiver.render.fonts.check_reportlab`
refuses any other version, or one that lacks the internals it names for this module.
"""

from __future__ import annotations

from reportlab.lib.colors import Color
from reportlab.lib.rl_accel import escapePDF, fp_str
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from archiver.render.pdfsyntax import number


class _Look:
    """What a style writes before its text, worked out once: its colour, and the size and leading of its font."""

    __slots__ = ("font", "color", "opaque", "size", "key")

    def __init__(self, font_name: str, size: float, color: Color) -> None:
        font = pdfmetrics.getFont(font_name)
        if not isinstance(font, TTFont) or type(color) is not Color or color.alpha not in (None, 1):
            raise TypeError(f"direct page text needs a TrueType font and an opaque RGB colour, not {font!r}, "
                            f"{color!r}")
        self.key = (font_name, size, color)  # as in _LOOKS
        self.font = font
        self.color = f"{fp_str((color.red, color.green, color.blue))} rg"  # PDFTextObject.setFillColor
        # setFillColor then sets the colour's alpha: for an opaque one only the file's version changes (to 1.4).
        self.opaque = color.alpha == 1
        # setFont(name, size) leaves the leading at 1.2 x size; _formatText writes both with each subset's name.
        self.size = f"{fp_str(size)} Tf {fp_str(size * 1.2)} TL"


_LOOKS: dict[tuple[str, float, Color], _Look] = {}  # one per style of the templates in use: a few dozen


def _look(font_name: str, size: float, color: Color) -> _Look:
    key = (font_name, size, color)
    look = _LOOKS.get(key)
    if look is None:
        look = _LOOKS[key] = _Look(font_name, size, color)
    return look


class _Coded:
    """One font's subset-0 codes in one document, as splitString assigned them."""

    __slots__ = ("chars", "table")

    def __init__(self, assigned: dict[int, int]) -> None:
        # ASSIGNED: the font state's code of each code point (subset * 256 + byte): those of subset 0 known now
        self.table: dict[int, int] = {point: code for point, code in assigned.items() if code < 256}
        self.chars: set[str] = set(map(chr, self.table))

    def learn(self, text: str, chunks: list[tuple[int, bytes]]) -> None:
        at = 0
        for subset, data in chunks:  # one byte per character, in order
            if subset == 0:
                for ch, code in zip(text[at:at + len(data)], data):
                    self.table[ord(ch)] = code
                    self.chars.add(ch)
            at += len(data)


class TextWriter:
    """Text runs of one page at a time, for one canvas (one document)."""

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.doc = canvas._doc
        self.names: dict[tuple[TTFont, int], str] = {}  # (font, subset) -> "/F1+0"
        self.coded: dict[TTFont, _Coded] = {}
        self.parts: list[str] = []
        self.look: _Look | None = None
        self.subset = -1  # of the current font, in the text block; -1: none chosen yet
        self.opaque = False  # an opaque colour was set: the file is PDF 1.4 already

    def begin(self) -> None:
        """A new text block: what canvas.beginText() starts with (its origin at 0, 0)."""
        self.parts = ["BT", "1 0 0 1 0 0 Tm"]
        self.look, self.subset = None, -1

    def run(self, x: float, y: float, text: str, font_name: str, size: float, color: Color) -> None:
        """TEXT at (X, Y): setTextOrigin, then setFont and setFillColor if the style changed, then textOut."""
        parts = self.parts
        parts.append(f"1 0 0 1 {number(x)} {number(y)} Tm")  # fp_str(x, y)
        look = self.look
        if look is None or look.key[0] != font_name or look.key[1] != size or look.key[2] is not color:
            look = _look(font_name, size, color)  # most runs keep the style of the run before: no lookup
        if look is not self.look:
            self.look, self.subset = look, -1
            parts.append(look.color)
            if look.opaque and not self.opaque:
                self.doc.ensureMinPdfVersion("transparency")
                self.opaque = True
        if not text:
            parts.append("")  # textOut("") writes an empty operator list: kept, so the bytes stay reportlab's
            return
        font = look.font
        coded = self.coded.get(font)
        if coded is None:
            # the state splitString would make on its first call, made now (the same constructor)
            coded = self.coded[font] = _Coded(font._assignState(self.doc).assignments)
        if coded.chars.issuperset(text):
            chunks = [(0, text.translate(coded.table))]
        else:
            chunks = font.splitString(text, self.doc)
            coded.learn(text, chunks)
        ops = []
        for subset, data in chunks:
            if subset != self.subset:
                ops.append(f"{self._name(font, subset)} {look.size}")
                self.subset = subset
            ops.append(f"({escapePDF(data)}) Tj")
        parts.append(" ".join(ops))

    def end(self) -> None:
        """Close the block and put it on the canvas's current page, where canvas.drawText would."""
        self.parts.append("ET")
        self.canvas.addLiteral(" ".join(self.parts))
        self.parts = []

    def _name(self, font: TTFont, subset: int) -> str:
        name = self.names.get((font, subset))
        if name is None:  # asked for at first use, as _formatText does: fonts are numbered in that order
            name = self.names[font, subset] = font.getSubsetInternalName(subset, self.doc)
        return name

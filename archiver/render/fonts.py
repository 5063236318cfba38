"""Embedded font subsets made once per process, and faster stream compression (reportlab internals, pinned).

reportlab embeds a TrueType font as subsets of up to 256 characters; subset 0
holds ASCII and the first other characters the document draws. The header of
every transcript draws the same characters first, so subset 0 of the regular
and bold fonts is usually the same from one PDF to the next, yet reportlab cuts
the font program, writes its ToUnicode map and its widths, and compresses them
again for each PDF. `add_font_objects` replaces `TTFont.addObjects`: the same
PDF objects, their contents taken from a per-process cache keyed by the font,
the subset's number and its exact characters (a subset with any other
character is made afresh). The ToUnicode map is scripts.to_unicode_cmap's.

The subset's widths are formatted once with the rest (what formatting them cost
for each PDF was the largest part of writing its font dictionaries).

Streams made per PDF (page content, subsets not in the cache) are deflated at
level 1 by ISA-L (`isal`), about four times as fast as zlib at its level 1 and
a little smaller: the same content once inflated, by any Flate reader.

This replaces reportlab internals, so reportlab is pinned (pyproject.toml) to
REPORTLAB_VERSION, the version checked here; `check_reportlab` refuses to
render with any other version or when a replaced internal is missing, rather
than risk a wrong PDF (tests/test_fonts.py). It checks those render/content.py
relies on as well.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import reportlab
from isal import isal_zlib
from reportlab.lib import rl_accel
from reportlab.pdfbase import pdfdoc, ttfonts
from reportlab.pdfgen import canvas, textobject

from archiver.render.scripts import to_unicode_cmap

REPORTLAB_VERSION = "5.1.0"  # the version whose internals this module was written against
# What this module and render/content.py use or replace (instance attributes: tests/test_fonts.py, test_content.py).
INTERNALS = (
    "ttfonts.TTFont.addObjects", "ttfonts.TTFont.getSubsetInternalName", "ttfonts.TTFont.State",
    "ttfonts.TTFontFace.makeSubset", "ttfonts.TTFontFace.getCharWidth", "ttfonts.SUBSETN",
    "ttfonts.FF_SYMBOLIC", "ttfonts.FF_NONSYMBOLIC", "pdfdoc.PDFTrueTypeFont", "pdfdoc.PDFStream",
    "pdfdoc.PDFArray", "pdfdoc.DummyDoc", "pdfdoc.pdfdocEnc", "pdfdoc.PDFName",  # and render/pdfsyntax.py
    "pdfdoc.format", "pdfdoc.PDFDictionary.format", "pdfdoc.PDFDictionary.multiline",
    "pdfdoc.PDFZCompress", "pdfdoc.PDFStreamFilterZCompress",
    # render/content.py writes page text as these write it, with these:
    "textobject.PDFTextObject._formatText", "textobject.PDFTextObject.setTextOrigin",
    "textobject.PDFTextObject.setFillColor", "ttfonts.TTFont.splitString", "ttfonts.TTFont._assignState",
    "canvas.Canvas.addLiteral",
    "pdfdoc.PDFDocument.ensureMinPdfVersion",
    "rl_accel.escapePDF", "rl_accel.fp_str",
)
CACHED_SUBSETS = 64  # at about 25 KB each


class ReportlabMismatch(RuntimeError):
    """The installed reportlab is not the one whose internals this module replaces."""


def _present(path: str) -> bool:
    owner: object = {"ttfonts": ttfonts, "pdfdoc": pdfdoc, "textobject": textobject, "canvas": canvas,
                     "rl_accel": rl_accel}
    for name in path.split("."):
        owner = owner.get(name) if isinstance(owner, dict) else getattr(owner, name, None)
        if owner is None:
            return False
    return True


def check_reportlab(version: str | None = None) -> None:
    """Raises ReportlabMismatch unless the installed reportlab (or VERSION) is the one checked here."""
    version = version or reportlab.Version
    if version != REPORTLAB_VERSION:
        raise ReportlabMismatch(
            f"reportlab {version} is installed, but archiver/render/fonts.py replaces internals of reportlab "
            f"{REPORTLAB_VERSION} (pinned in pyproject.toml): install reportlab=={REPORTLAB_VERSION}, or check "
            f"those internals against the new version, then update the pin and REPORTLAB_VERSION")
    missing = [path for path in INTERNALS if not _present(path)]
    if missing:
        raise ReportlabMismatch(f"reportlab {version} lacks {', '.join(missing)}, which archiver/render/fonts.py "
                                "replaces or uses")


class Formatted(pdfdoc.PDFObject):
    """PDF syntax formatted once by reportlab's own formatter, then written as it is into every PDF."""

    def __init__(self, obj: pdfdoc.PDFObject) -> None:
        self.data = obj.format(pdfdoc.DummyDoc())  # no references in OBJ: it needs no document

    def format(self, document: object) -> bytes:
        return self.data


@dataclass(frozen=True)
class Subset:
    """The contents of one font subset's PDF objects."""

    widths: Formatted  # up to 256 numbers: the longest part of the subset's font dictionary to format
    to_unicode: bytes  # Flate-compressed, as the font file
    font_file: bytes
    length1: int  # the font program's length before compression


@functools.lru_cache(maxsize=CACHED_SUBSETS)
def subset_contents(face: ttfonts.TTFontFace, base_font_name: str, codes: tuple[int, ...]) -> Subset:
    """FACE's subset of CODES (in this order), named BASE_FONT_NAME, its streams compressed; made once."""
    program = face.makeSubset(codes)
    cmap = to_unicode_cmap(base_font_name, codes).encode("utf8")
    widths = Formatted(pdfdoc.PDFArray(list(map(face.getCharWidth, codes))))
    return Subset(widths, zlib.compress(cmap, 9), zlib.compress(program, 9), len(program))


def _flate_stream(content: bytes, **entries: object) -> pdfdoc.PDFStream:
    stream = pdfdoc.PDFStream(content=content, filters=[])  # already compressed: no filter applied again
    stream.dictionary.dict.update(entries, Filter=pdfdoc.PDFArray([pdfdoc.PDFName("FlateDecode")]))
    return stream


def add_font_objects(font: ttfonts.TTFont, doc: pdfdoc.PDFDocument) -> None:
    """TTFont.addObjects of reportlab 5.1.0, with each subset's contents from `subset_contents`."""
    if not doc.compression:
        return _REPORTLAB_ADD_OBJECTS(font, doc)  # not used by the archiver: reportlab's own, uncached
    state = font.state[doc]
    state.frozen = 1
    face = font.face
    for n, codes in enumerate(state.subsets):
        internal_name = font.getSubsetInternalName(n, doc)[1:]
        base_font_name = b"".join((ttfonts.SUBSETN(n), b"+", face.name, face.subfontNameX)).decode("pdfdoc")
        made = subset_contents(face, base_font_name, tuple(codes))
        pdf_font = pdfdoc.PDFTrueTypeFont()
        pdf_font.__Comment__ = f"Font {font.fontName} subset {n}"
        pdf_font.Name, pdf_font.BaseFont = internal_name, base_font_name
        pdf_font.FirstChar, pdf_font.LastChar = 0, len(codes) - 1
        pdf_font.Widths = made.widths
        pdf_font.ToUnicode = doc.Reference(_flate_stream(made.to_unicode), "toUnicodeCMap:" + base_font_name)
        font_file = doc.Reference(_flate_stream(made.font_file, Length1=made.length1),
                                  f"fontFile:{face.filename}({base_font_name})")
        flags = face.flags & ~ttfonts.FF_NONSYMBOLIC | ttfonts.FF_SYMBOLIC
        pdf_font.FontDescriptor = doc.Reference(pdfdoc.PDFDictionary({
            "Type": "/FontDescriptor", "Ascent": face.ascent, "CapHeight": face.capHeight,
            "Descent": face.descent, "Flags": flags, "FontBBox": pdfdoc.PDFArray(face.bbox),
            "FontName": pdfdoc.PDFName(base_font_name), "ItalicAngle": face.italicAngle, "StemV": face.stemV,
            "FontFile2": font_file, "MissingWidth": face.defaultWidth,
        }), "fontDescriptor:" + base_font_name)
        doc.Reference(pdf_font, internal_name)
        doc.idToObject["BasicFonts"].dict[internal_name] = pdf_font
    font.state.pop(doc, None)


class FastFlate(pdfdoc.PDFStreamFilterZCompress):
    """reportlab's Flate filter, by ISA-L at level 1 (for the streams made anew for each PDF)."""

    def encode(self, text: str | bytes) -> bytes:
        return fast_deflate(text.encode("utf8") if isinstance(text, str) else text)


def fast_deflate(data: bytes) -> bytes:
    """DATA as a zlib (Flate) stream, made fast: ISA-L at level 1, 4 times zlib's speed at its level 1 on a
    record (0.03 against 0.12 ms for 20 KB), a little smaller."""
    return isal_zlib.compress(data, 1)


check_reportlab()
_REPORTLAB_ADD_OBJECTS = ttfonts.TTFont.addObjects
ttfonts.TTFont.addObjects = add_font_objects
pdfdoc.PDFZCompress = FastFlate()  # reportlab looks it up in pdfdoc each time it compresses a stream

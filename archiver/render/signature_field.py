"""A PAdES signature written into the PDF as reportlab makes it: signed in the original revision.

Since we generate the PDF, the signature field, its widget and the signature
dictionary go into reportlab's own output, with a fixed-size `/Contents`
placeholder and a padded `/ByteRange`. The signer then hashes the two byte
ranges around the placeholder and patches the CMS in (`archiver.signing`),
instead of parsing the file and writing an incremental update with pyHanko.
The dictionary is written by us, byte for byte, and found again through
reportlab's own table of object offsets, never by searching the file (whose
text, the room id in the title say, is hostile input).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFObject, PDFString
from reportlab.pdfgen.canvas import Canvas

SUBFILTER = "ETSI.CAdES.detached"
_NAME = "ArchiverSignatureValue"  # reportlab's internal name of the signature dictionary
# Room for four ten-digit integers: any PDF under 10 GB.
_RANGE = b"[0 0000000000 0000000000 0000000000]"


@dataclass(frozen=True)
class SignatureSlot:
    """What the signature dictionary says, and the room reserved for the CMS (in bytes)."""
    field_name: str
    reason: str
    contents_bytes: int
    signed_at: dt.datetime


@dataclass(frozen=True)
class Placeholder:
    """Where, in the finished PDF, the /ByteRange array and the /Contents hex string are."""
    byte_range: int  # offset of the padded array, len(_RANGE) bytes
    contents: int  # offset of "<"
    contents_end: int  # offset after ">"

    def ranges(self, size: int) -> bytes:
        """The /ByteRange array for a file of SIZE bytes, padded to the placeholder's length."""
        value = b"[0 %d %d %d]" % (self.contents, self.contents_end, size - self.contents_end)
        if len(value) > len(_RANGE):
            raise ValueError(f"a PDF of {size:,} bytes is too large for the signature's byte range")
        return value.ljust(len(_RANGE))


class _SignatureDictionary(PDFObject):
    """The /Sig dictionary, formatted by us so that its bytes and layout are known exactly."""

    def __init__(self, slot: SignatureSlot) -> None:
        moment = slot.signed_at.astimezone(dt.timezone.utc).strftime("D:%Y%m%d%H%M%SZ")
        reason = _literal(slot.reason)
        self.head = (b"<< /Type /Sig /Filter /Adobe.PPKLite /SubFilter /" + SUBFILTER.encode()
                     + b" /M (" + moment.encode() + b") /Reason " + reason + b" /ByteRange ")
        self.contents_bytes = slot.contents_bytes

    def format(self, document) -> bytes:
        return self.head + _RANGE + b" /Contents <" + b"0" * (2 * self.contents_bytes) + b"> >>"

    def locate(self, offset: int, data: bytes) -> Placeholder:
        """The placeholder in DATA, whose indirect object for this dictionary starts at OFFSET."""
        start = data.index(b" obj\n", offset, offset + 32) + len(b" obj\n")
        if data[start:start + len(self.head)] != self.head:
            raise ValueError("the signature dictionary is not where reportlab says it wrote it")
        byte_range = start + len(self.head)
        contents = byte_range + len(_RANGE) + len(b" /Contents ")
        return Placeholder(byte_range, contents, contents + 2 + 2 * self.contents_bytes)


class SignatureField:
    """An invisible signature field on the first page of a reportlab canvas, for one document."""

    def __init__(self, canvas: Canvas, slot: SignatureSlot) -> None:
        """Call while the canvas is on its first page (the widget is one of that page's annotations)."""
        doc = canvas._doc
        self._doc = doc
        self._value = _SignatureDictionary(slot)
        value = doc.Reference(self._value, _NAME)
        widget = PDFDictionary({
            "Type": PDFName("Annot"), "Subtype": PDFName("Widget"), "FT": PDFName("Sig"),
            "T": PDFString(slot.field_name), "V": value, "F": 132,  # print, locked
            "Rect": PDFArray([0, 0, 0, 0]), "P": doc.thisPageRef(),
        })
        canvas._addAnnotation(widget, "ArchiverSignatureField")
        doc.Catalog.AcroForm = PDFDictionary({
            "Fields": PDFArray([doc.refAnnotation("ArchiverSignatureField")]),
            "SigFlags": 3,  # signatures exist; append only
        })

    def placeholder(self, data: bytes) -> Placeholder:
        """Where the placeholder is in DATA, the canvas's saved output."""
        return self._value.locate(self._doc.idToOffset[_NAME], data)


def _literal(text: str) -> bytes:
    """TEXT as a PDF literal string (ASCII: the reason is our own wording)."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("ascii") + b")"

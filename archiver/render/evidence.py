"""Self-contained evidence: the JSON record inside the PDF, and the PDF/A-3b parts, written by reportlab.

Everything here is added to reportlab's own document before it is written, so
it sits in the original revision and the signature added afterwards covers it
(no post-processing of the finished file). What is added:

- the record as an embedded file (`record.json`, application/json) that is an
  associated file of the document (catalog `/AF`, `/AFRelationship /Data`) and
  listed in the `/EmbeddedFiles` name tree, so any PDF reader's attachment
  panel, `qpdf --show-attachment` or pikepdf gives back its exact bytes;
- XMP metadata with `pdfaid:part 3`, `pdfaid:conformance B`, mirroring the
  document information dictionary (title, author, subject, keywords, producer,
  creator tool, dates);
- an sRGB output intent (`/GTS_PDFA1`, the ICC profile from littlecms via Pillow).

docs/pdfa.md lists the PDF/A-3b rules the suite checks and how to run veraPDF.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from typing import Any
from xml.sax.saxutils import escape

import reportlab
from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFObject, PDFStream, PDFString
from reportlab.pdfgen.canvas import Canvas

from archiver.render.fonts import fast_deflate

RECORD_NAME = "record.json"
_CATALOG_KEYS = ("Metadata", "OutputIntents", "AF")


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile (littlecms's built-in one), made once per process."""
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@functools.cache
def _compressed_profile() -> bytes:
    return zlib.compress(srgb_profile())


def make_self_contained(canvas: Canvas, record: bytes | None, description: str) -> None:
    """Add the PDF/A-3b parts and, when RECORD is given, the record as an associated file, to CANVAS's
    document; call after the pages are drawn, before `canvas.save()`."""
    doc = canvas._doc
    # The file is signed in its original revision (render/signature_field.py): nothing rewrites it after
    # reportlab, so reportlab is named the producer, the same in /Producer and the XMP (PDF/A wants that).
    doc.info.producer = f"ReportLab {reportlab.Version}"
    catalog = doc.Catalog
    catalog.__NoDefault__ = [*catalog.__NoDefault__, *(k for k in _CATALOG_KEYS if k not in catalog.__NoDefault__)]
    catalog.__Refs__ = catalog.__NoDefault__
    catalog.Metadata = _xmp(canvas)
    catalog.OutputIntents = PDFArray([_output_intent()])
    if record is not None:
        spec = doc.Reference(_file_spec(record, description))
        catalog.AF = PDFArray([spec])
        catalog.Names = PDFDictionary({"EmbeddedFiles": PDFDictionary(
            {"Names": PDFArray([PDFString(RECORD_NAME), spec])})})


def _file_spec(record: bytes, description: str) -> PDFDictionary:
    params = PDFDictionary({"Size": len(record), "CheckSum": _Raw(b"<" + hashlib.md5(record).hexdigest().encode() + b">")})
    # Deflated here, fast (fonts.fast_deflate): the record is the largest stream made for each PDF.
    stream = PDFStream(PDFDictionary({"Type": PDFName("EmbeddedFile"), "Subtype": _Raw(b"/application#2Fjson"),
                                      "Params": params, "Filter": PDFName("FlateDecode")}), fast_deflate(record))
    return PDFDictionary({
        "Type": PDFName("Filespec"),
        "F": PDFString(RECORD_NAME),
        "UF": PDFString(RECORD_NAME),
        "Desc": PDFString(description),
        "AFRelationship": PDFName("Data"),
        "EF": PDFDictionary({"F": stream, "UF": stream}),
    })


class _Raw(PDFObject):
    """PDF syntax written as given (reportlab would escape the `#` of a name and has no hex strings)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def format(self, document: Any) -> bytes:
        return self.data


def _output_intent() -> PDFDictionary:
    # Compressed once per process: reportlab leaves a stream that names its filter as it is.
    profile = PDFStream(PDFDictionary({"N": 3, "Filter": PDFName("FlateDecode")}), _compressed_profile())
    return PDFDictionary({
        "Type": PDFName("OutputIntent"),
        "S": PDFName("GTS_PDFA1"),
        "OutputConditionIdentifier": PDFString("sRGB IEC61966-2.1"),
        "Info": PDFString("sRGB IEC61966-2.1"),
        "DestOutputProfile": profile,
    })


def _xmp(canvas: Canvas) -> PDFStream:
    doc = canvas._doc
    info = doc.info
    ts = doc._timeStamp
    date = "%04d-%02d-%02dT%02d:%02d:%02d" % tuple(ts.YMDhms) + "%+03d:%02d" % (ts.dhh, ts.dmm)
    packet = XMP.format(
        title=_x(info.title), author=_x(info.author), subject=_x(info.subject), keywords=_x(info.keywords),
        producer=_x(info.producer), creator=_x(info.creator), date=date,
    ).encode("utf-8")
    # Uncompressed, as PDF/A readers expect to find the metadata without decoding it.
    return PDFStream(PDFDictionary({"Type": PDFName("Metadata"), "Subtype": PDFName("XML")}), packet, filters=[])


def _x(text: str) -> str:
    return escape(text, {'"': "&quot;"})


XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
<pdfaid:part>3</pdfaid:part>
<pdfaid:conformance>B</pdfaid:conformance>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:format>application/pdf</dc:format>
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
<dc:creator><rdf:Seq><rdf:li>{author}</rdf:li></rdf:Seq></dc:creator>
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{subject}</rdf:li></rdf:Alt></dc:description>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
<pdf:Producer>{producer}</pdf:Producer>
<pdf:Keywords>{keywords}</pdf:Keywords>
</rdf:Description>
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
<xmp:CreatorTool>{creator}</xmp:CreatorTool>
<xmp:CreateDate>{date}</xmp:CreateDate>
<xmp:ModifyDate>{date}</xmp:ModifyDate>
</rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

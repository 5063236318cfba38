"""Faster formatting of reportlab's PDF objects, the same bytes (reportlab internals, pinned).

Writing a PDF, reportlab's pdfdoc encodes every name, number and keyword it
formats through its `extpdfdoc` codec (`pdfdocEnc`), and spells every
dictionary key out again character by character (`PDFName`). Per transcript
that is about a thousand calls, most of them for the same few dozen names.
`install` replaces both in pdfdoc, where its formatter looks them up:

- `pdfdoc_enc`: a string whose every character the codec writes as its own
  ASCII byte (all of ASCII but 0x18-0x1F, which it cannot write) is encoded as
  ASCII; anything else goes to reportlab's codec as before (and fails as before);
- `pdf_name`: PDFName's result remembered per name (bounded).

Both give the same bytes as reportlab's own (tests/test_pdfsyntax.py checks
every character the codec knows); render/fonts.py's check_reportlab checks that
what they replace is there.
"""

from __future__ import annotations

import functools
import re

from reportlab.pdfbase import pdfdoc

_REPORTLAB_ENC = pdfdoc.pdfdocEnc
_REPORTLAB_NAME = pdfdoc.PDFName
_NOT_AS_IS = re.compile("[^\x00-\x17\x20-\x7f]")  # what the extpdfdoc codec does not write as the same byte
_NAME_DEFAULTS = (chr(0x21), chr(0x7E))  # PDFName's lo and hi


def pdfdoc_enc(x: str | bytes) -> bytes:
    """reportlab's pdfdocEnc: a string in the PDFDocEncoding, bytes as they are."""
    if isinstance(x, str) and _NOT_AS_IS.search(x) is None:
        return x.encode("ascii")
    return _REPORTLAB_ENC(x)


@functools.lru_cache(maxsize=2048)
def _name(data: str) -> str:
    return _REPORTLAB_NAME(data)


def pdf_name(data, lo: str = _NAME_DEFAULTS[0], hi: str = _NAME_DEFAULTS[1]) -> str:
    """reportlab's PDFName, remembered for the usual case (a string, the default range)."""
    if type(data) is str and (lo, hi) == _NAME_DEFAULTS:
        return _name(data)
    return _REPORTLAB_NAME(data, lo, hi)


def install() -> None:
    """Put both into reportlab's pdfdoc (its formatter looks them up there at each call)."""
    pdfdoc.pdfdocEnc = pdfdoc_enc
    pdfdoc.PDFName = pdf_name

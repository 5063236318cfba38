"""Faster formatting of reportlab's PDF objects, the same bytes (reportlab internals, pinned).

Writing a PDF, reportlab's pdfdoc encodes every name, number and keyword it
formats through its `extpdfdoc` codec (`pdfdocEnc`), spells every dictionary
key out again character by character (`PDFName`), and writes every number with
rl_accel's `fp_str`, which costs microseconds a call. Per transcript that is
about a thousand calls, most of them for the same few dozen names and numbers.
`install` replaces these in pdfdoc, where its formatter looks them up:

- `pdfdoc_enc`: a string whose every character the codec writes as its own
  ASCII byte (all of ASCII but 0x18-0x1F, which it cannot write) is encoded as
  ASCII; anything else goes to reportlab's codec as before (and fails as before);
- `pdf_name`: PDFName's result remembered per name (bounded);
- `pdf_format`: pdfdoc's `format`, with a string, bytes or a number (exactly
  those types) written at once, the number by `number`: fp_str's result
  remembered per value (bounded); anything else goes to reportlab's `format`;
- `dictionary_format`: PDFDictionary.format as reportlab 5.1.0 writes it, each
  key's `/Name ` remembered (bounded).

All give the same bytes as reportlab's own (tests/test_pdfsyntax.py checks
every character the codec knows, and whole PDFs); render/fonts.py's
check_reportlab checks that what they replace is there. render/content.py
writes its positions with `number` too.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict

from reportlab import rl_config
from reportlab.lib.rl_accel import fp_str
from reportlab.pdfbase import pdfdoc

_REPORTLAB_ENC = pdfdoc.pdfdocEnc
_REPORTLAB_NAME = pdfdoc.PDFName
_REPORTLAB_FORMAT = pdfdoc.format
_REPORTLAB_DICTIONARY_FORMAT = pdfdoc.PDFDictionary.format
_KEYS: dict[str, bytes] = {}  # dictionary key -> b"/Key "
KEYS_KEPT = 10_000  # our dictionaries have a few dozen keys; any more are forgotten all at once
_NUMBERS: dict[float, str] = {}
NUMBERS_KEPT = 50_000  # then forgotten all at once (a few megabytes at most)
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


def number(x: float) -> str:
    """fp_str(X): at most six decimals, no trailing zeros ("12.5", ".25", "0")."""
    text = _NUMBERS.get(x)
    if text is None:
        if len(_NUMBERS) >= NUMBERS_KEPT:
            _NUMBERS.clear()
        text = _NUMBERS[x] = fp_str(x)  # equal keys (1 and 1.0, 0.0 and -0.0) have the same fp_str
    return text


def pdf_format(element: object, document: object, toplevel: int = 0) -> bytes:
    """reportlab's pdfdoc.format: ELEMENT as PDF syntax."""
    kind = type(element)
    if kind is float or kind is int:
        return number(element).encode("ascii")  # type: ignore[arg-type]
    if kind is str:
        return pdfdoc_enc(element)  # type: ignore[arg-type]
    if kind is bytes:
        return element  # type: ignore[return-value]
    return _REPORTLAB_FORMAT(element, document, toplevel)


def dictionary_format(self: pdfdoc.PDFDictionary, document: object, IND: bytes = b"\n ") -> bytes:
    """PDFDictionary.format of reportlab 5.1.0 (keys sorted unless ordered, a break every six entries unless
    multiline), with each key's formatted name remembered."""
    entries = self.dict
    keys = list(entries)
    if not isinstance(entries, OrderedDict):
        keys.sort()
    parts = []
    for key in keys:
        name = _KEYS.get(key)
        if name is None:
            if len(_KEYS) >= KEYS_KEPT:
                _KEYS.clear()
            name = _KEYS[key] = pdfdoc.format(pdfdoc.PDFName(key), document) + b" "
        parts.append(name + pdfdoc.format(entries[key], document))
    if (self.multiline and rl_config.pdfMultiLine) or self.multiline == "forced":
        joined = IND.join(parts)
    else:
        for i in reversed(range(6, len(parts), 6)):
            parts.insert(i, b"\n ")
        joined = b" ".join(parts)
    return b"<<\n" + joined + b"\n>>"


def install() -> None:
    """Put them into reportlab's pdfdoc (its formatter looks them up there at each call)."""
    pdfdoc.pdfdocEnc = pdfdoc_enc
    pdfdoc.PDFName = pdf_name
    pdfdoc.format = pdf_format
    pdfdoc.PDFDictionary.format = dictionary_format

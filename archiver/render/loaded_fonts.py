"""TrueType fonts parsed once per process, and the characters each one covers.

Parsing a font (reportlab's TTFont) is the bulk of a worker process's start: about
0.3 s of CPU for the bundled template's nine fonts, most of it in the large fallbacks
(CJK, symbols). `preload` parses the bundled template's fonts in the fork server the
worker processes are forked from (archiver/worker_preload.py), so a worker starts with
them; a template naming other fonts has them parsed in each worker, as before.

A font is known by its path and the file's identity (device, inode, size, modification
time): a file replaced since it was parsed (a font package upgraded) is parsed again,
and two files with the same name in different folders are two fonts.
"""

from __future__ import annotations

import os
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

_LOADED: dict[tuple[str, int, int, int, int], tuple[str, frozenset[str]]] = {}


def load(path: str) -> tuple[str, frozenset[str]]:
    """The name the font at PATH is registered under with reportlab (parsed on first use) and the
    characters it has (beyond the BMP too). Raises OSError or reportlab's TTFError."""
    found = os.stat(path)
    key = (path, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    if key not in _LOADED:
        font = TTFont(_free_name(path), path)
        pdfmetrics.registerFont(font)
        _LOADED[key] = font.fontName, frozenset(map(chr, font.face.charToGlyph))
    return _LOADED[key]


def _free_name(path: str) -> str:
    """"Archiver-" and the file's stem, made unique if another file took that name in this process."""
    base = "Archiver-" + Path(path).stem
    taken = set(pdfmetrics.getRegisteredFontNames())
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def preload(fonts: list[str]) -> int:
    """Parse FONTS ahead of use; how many could be. One that cannot be read is skipped: the
    renderer that needs it reports it."""
    loaded = 0
    for path in fonts:
        try:
            load(path)
            loaded += 1
        except Exception:  # never fatal here: the fork server must start
            continue
    return loaded

"""The PDF's lines for a message's attachment: what was archived (name, size, SHA-256, outcome) and,
for a PNG or JPEG, a bounded thumbnail.

The image is hostile input too: it is decoded here, fully, before it goes near the page, so a malformed
or hostile file becomes a note under the message, never a failed render. What a decode may cost is
bounded before it starts (docs/attachments.md, "Hostile images"): pixels, the pixels held whole in
memory, a JPEG's scans (each decoded over the whole image) and the segments Pillow walks one by one.
"""

from __future__ import annotations

import io
import re
import struct
from typing import TYPE_CHECKING, Iterator, NamedTuple

from PIL import Image
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader

from archiver.attachments import FETCHED, Attachment

if TYPE_CHECKING:
    from archiver.render.pdf import Line, PdfRenderer, _Counter

THUMBNAIL_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}
THUMBNAIL_BOX = 50 * mm  # widest and tallest a thumbnail is drawn
THUMBNAIL_PIXELS = 400  # pixels kept on the longer side: about 200 dpi at the largest size drawn
MAX_SOURCE_PIXELS = 50_000_000  # a larger image is not decoded (a decompression bomb costs nothing)
# A PNG is held whole while it decodes (4 bytes a pixel, copied once to shrink), and so is a JPEG libjpeg
# reads in several passes: progressive, of several scans, or whose first scan lacks a channel (libjpeg keeps
# 2 bytes a channel of every pixel), and a lossless one (libjpeg cannot shrink it while decoding); any other
# JPEG decodes at 1/8 of its size (draft).
MAX_WHOLE_PIXELS = 25_000_000
# libjpeg decodes each scan over the whole image (up to ~1 ns a pixel here), however few bytes the scan has:
# scans x pixels is capped (libjpeg's own progressive files have 10 scans: 20 are allowed at 25 M pixels).
MAX_SCAN_PIXELS = 500_000_000
# Both JPEG caps are for up to 3 channels: a CMYK pixel costs 4/3 as much, so its caps are 3/4.
CAP_CHANNELS = 3
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame (the others are tables)
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_LOSSLESS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
# Pillow reads a JPEG's markers before the first scan, and every PNG chunk, one by one in Python (~1 us each),
# and a stray byte between those JPEG markers one at a time. An ordinary JPEG has a few dozen markers (an ICC
# profile is split in at most 255) and no stray bytes; libpng writes 8 KB chunks, about 2,500 in a 20 MB file.
MAX_JPEG_MARKERS = 1_000
MAX_JPEG_STRAY_BYTES = 1_000
MAX_PNG_CHUNKS = 10_000
# The next marker as libjpeg finds it: 0xFF, any fill 0xFF, a code that is not a stuffed 0x00 or a restart.
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff\xd0-\xd7\x01])")


class UnshownImage(ValueError):
    """The image cannot be shown; the message says why."""


def attachment_lines(renderer: "PdfRenderer", a: Attachment, counter: "_Counter") -> Iterator["Line"]:
    """Lines under the message: the file's description, its outcome and its thumbnail (or why none)."""
    from archiver.render.pdf import Line

    labels = renderer.template.labels
    name = a.file_name or labels["none"]
    runs = [*renderer._runs(f"{labels['attachment_file']}: ", "label", counter),
            *renderer._field(name, "body", counter, quoted=True)]
    if a.outcome == FETCHED:
        details = labels["attachment_fetched"].format(size=f"{a.size:,}", type=a.content_type,
                                                      sha256=a.sha256, time=renderer._time(a.fetched_at))
        blocks = [runs, renderer._runs(details, "meta", counter)]
        if a.kept:  # copied from an earlier version, whose transcript showed its image: no bytes to show here
            kept = "attachment_kept_image" if a.content_type in THUMBNAIL_TYPES else "attachment_kept"
            blocks.append(renderer._runs(labels[kept].format(version=a.kept.version), "note", counter))
    else:
        missing = labels["attachment_missing"].format(outcome=a.outcome)
        blocks = [runs, [*renderer._runs(missing, "warning", counter),
                         *renderer._runs(": ", "note", counter), *renderer._field(a.reason, "note", counter)]]
    yield from renderer._noted(blocks)  # the archive's words on the file, not the message's
    if a.outcome != FETCHED or a.content_type not in THUMBNAIL_TYPES or a.kept:
        return
    try:
        reader, width, height = thumbnail(a.data, THUMBNAIL_TYPES[a.content_type])
    except UnshownImage as exc:
        yield from renderer._noted([renderer._runs(labels["attachment_no_preview"].format(reason=exc), "note",
                                                   counter)])
        return
    yield Line(height + 4, image=(reader, renderer.indent, width, height))


def thumbnail(data: bytes, kind: str) -> tuple[ImageReader, float, float]:
    """DATA decoded as KIND (PNG or JPEG) and shrunk: the reader, and its size on the page in points."""
    try:
        if kind == "PNG":
            _check_png_chunks(data)
        layout = _jpeg_layout(data) if kind == "JPEG" else None
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            _check_cost(image.width, image.height, layout)
            longer = max(image.width, image.height, 1)
            if layout is None or not layout.lossless:  # a JPEG decodes at a fraction of its size, but libjpeg
                size = (THUMBNAIL_PIXELS * image.width // longer,  # cannot shrink a lossless one
                        THUMBNAIL_PIXELS * image.height // longer)
                image.draft("RGB", size)
            image.load()  # every pixel decoded now: a truncated or corrupt file fails here, not on the page
            image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            shown = image.convert("RGB") if image.mode not in ("RGB", "L") else image
            encoded = io.BytesIO()
            shown.save(encoded, "JPEG", quality=85)  # embedded as it is (DCTDecode): small, and fast to write
            width, height = shown.size
    except UnshownImage:
        raise
    except Exception as exc:  # Pillow raises many kinds for hostile files; none may stop the render
        raise UnshownImage(f"{type(exc).__name__}: {exc}") from None
    scale = min(THUMBNAIL_BOX / width, THUMBNAIL_BOX / height, 1.0)  # a pixel at most a point
    return ImageReader(io.BytesIO(encoded.getvalue())), width * scale, height * scale


class _JpegLayout(NamedTuple):
    scans: int  # SOS markers up to EOI
    channels: int  # components the (first) frame names
    progressive: bool
    first_scan_channels: int  # components the first scan names (0: no scan)
    lossless: bool  # decoded at its full size


def _check_cost(width: int, height: int, jpeg: "_JpegLayout | None") -> None:
    """Refuse an image whose decode would cost more than the bounds above allow (JPEG is None for a PNG)."""
    pixels = width * height
    if pixels > MAX_SOURCE_PIXELS:
        raise UnshownImage(f"{width}x{height} pixels, over {MAX_SOURCE_PIXELS:,}")
    if jpeg is None:
        if pixels > MAX_WHOLE_PIXELS:
            raise UnshownImage(f"{width}x{height} pixels, over {MAX_WHOLE_PIXELS:,} for a PNG")
        return
    weight = max(jpeg.channels, CAP_CHANNELS)  # libjpeg's coefficients and work, per pixel
    whole_cap, scan_cap = (cap * CAP_CHANNELS // weight for cap in (MAX_WHOLE_PIXELS, MAX_SCAN_PIXELS))
    held = _held_whole(jpeg)
    if held and pixels > whole_cap:
        raise UnshownImage(f"{width}x{height} pixels, over {whole_cap:,} for {held}")
    if jpeg.scans * pixels > scan_cap:
        raise UnshownImage(f"{jpeg.scans} scans of {width}x{height} pixels, over {scan_cap:,} scanned pixels"
                           + (f" for a JPEG of {jpeg.channels} channels" if weight > CAP_CHANNELS else ""))


def _held_whole(jpeg: _JpegLayout) -> str:
    """What makes libjpeg hold every coefficient of the JPEG while it decodes ('' if nothing): its
    has_multiple_scans, set by the mode or the first scan (jdinput.c), and a later scan read all the same."""
    channels = f"{jpeg.channels} channel{'s' * (jpeg.channels != 1)}"
    of = f"a JPEG of {channels}"
    if jpeg.progressive:
        return f"a progressive JPEG of {channels}"
    if jpeg.lossless:
        return f"a lossless JPEG of {channels}"
    if jpeg.first_scan_channels < jpeg.channels:
        return f"{of} whose first scan names {jpeg.first_scan_channels}"
    if jpeg.scans > 1:
        return f"{of} and {jpeg.scans} scans"
    return ""


def _jpeg_layout(data: bytes) -> _JpegLayout:
    """How libjpeg would read DATA, up to its end (EOI): its scans (SOS markers), its first frame's channels
    and mode, and the channels its first scan names. More than MAX_JPEG_MARKERS markers, or
    MAX_JPEG_STRAY_BYTES bytes between those before the first scan, is refused. Segments are skipped by
    their length and scan data up to the next marker, as libjpeg does, so no scan is missed."""
    scans, stray, at = 0, 0, 2  # after SOI
    channels, progressive, first_scan, lossless = 0, False, 0, False
    for _ in range(MAX_JPEG_MARKERS + 1):
        found = _JPEG_MARKER.search(data, at)
        if found is None or found[1] == b"\xd9":  # EOI: libjpeg reads no further
            return _JpegLayout(scans, channels, progressive, first_scan, lossless)
        stray += (found.start(1) - 1 - at) if not scans else 0  # skipped (Pillow: a byte at a time)
        if stray > MAX_JPEG_STRAY_BYTES:
            raise UnshownImage(f"a JPEG of more than {MAX_JPEG_STRAY_BYTES:,} stray bytes between its markers")
        code, body = found[1][0], found.end() + 2  # the segment's body follows its 2-byte length
        if code in _SOF and not channels:  # libjpeg refuses a second frame
            channels, progressive, lossless = _byte(data, body + 5), code in _PROGRESSIVE, code in _LOSSLESS
        if code == 0xDA:
            first_scan = first_scan or _byte(data, body)
            scans += 1
        length = int.from_bytes(data[found.end():found.end() + 2], "big")
        at = found.end() + max(length, 2)
    raise UnshownImage(f"a JPEG of more than {MAX_JPEG_MARKERS:,} markers")


def _byte(data: bytes, at: int) -> int:
    """DATA's byte at AT, or 0 past its end (a truncated segment: Pillow or libjpeg refuses it)."""
    return data[at] if at < len(data) else 0


def _check_png_chunks(data: bytes) -> None:
    """Refuse DATA if Pillow could read more than MAX_PNG_CHUNKS chunks in it (up to IEND)."""
    at = 8  # after the signature
    for _ in range(MAX_PNG_CHUNKS + 1):
        if at + 8 > len(data):
            return
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind == b"IEND":
            return
        at += 12 + length  # length, type, data, CRC
    raise UnshownImage(f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks")

"""The PDF's lines for a message's attachment: what was archived (name, size, SHA-256, outcome) and,
for a PNG or JPEG, a bounded thumbnail.

The image is hostile input too: it is decoded here, fully and within a pixel cap, before it goes
near the page, so a malformed or hostile file becomes a note under the message, never a failed render.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Iterator

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
        with Image.open(io.BytesIO(data), formats=[kind]) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise UnshownImage(f"{image.width}x{image.height} pixels, over {MAX_SOURCE_PIXELS:,}")
            longer = max(image.width, image.height, 1)  # a JPEG decodes at a fraction of its size:
            image.draft("RGB", (THUMBNAIL_PIXELS * image.width // longer, THUMBNAIL_PIXELS * image.height // longer))
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

"""Attachments in the PDF: each listed under its message; PNG and JPEG as bounded thumbnails; a
malformed or hostile image becomes a note, never a failed render."""

from __future__ import annotations

import datetime as dt
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from archiver.attachments import FAILED, FETCHED, Attachment, sniff
from archiver.config import DEFAULT_TEMPLATE
from archiver.render.attachments import THUMBNAIL_BOX, thumbnail
from archiver.render.pdf import PdfRenderer
from archiver.samples import SEED_CHAT
from archiver.transcript import normalise
from attachment_server import jpeg, png
from conftest import require_tool

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def fetched(data: bytes, position: int = 2, name: str = "photo.png") -> Attachment:
    return Attachment(position, "m", f"https://media.example.com/{name}", name, FETCHED, "", data, sniff(data), WHEN)


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "t.pdf"
    path.write_bytes(pdf)
    subprocess.run([require_tool("qpdf"), "--check", str(path)], capture_output=True, check=True)
    return subprocess.run([require_tool("pdftotext"), str(path), "-"], capture_output=True, text=True, check=True).stdout


def image_count(pdf: bytes, tmp_path: Path) -> int:
    path = tmp_path / "i.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([require_tool("pdfimages"), "-list", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return len(out.splitlines()) - 2  # two header lines


def big_png_header(width: int, height: int) -> bytes:
    """A PNG that claims WIDTH x HEIGHT pixels but holds almost nothing (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(  # noqa: E731
        ">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_images_are_drawn_under_their_message_and_every_file_listed(renderer, tmp_path) -> None:
    image, photo = png((900, 300)), jpeg()
    document = b"%PDF-1.4\n%%EOF\n"
    attachments = [fetched(image, 1), fetched(photo, 2, "scan.jpg"), fetched(document, 3, "contract.pdf")]
    out = renderer.render(normalise(SEED_CHAT), attachments=attachments)
    text = pdf_text(out.data, tmp_path)
    assert image_count(out.data, tmp_path) == 2  # the PDF document is listed, not drawn
    for a in attachments:
        assert f'"{a.file_name}"' in text and f"{len(a.data):,} bytes" in text and a.content_type in text
    assert text.index('"photo.png"') < text.index("Buongiorno") < text.index('"scan.jpg"')  # under its message


def test_a_failed_file_is_named_with_its_reason(renderer, tmp_path) -> None:
    missing = Attachment(2, "m", "https://media.example.com/x.png", "x.png", FAILED, "HTTP 404 Not Found")
    text = pdf_text(renderer.render(normalise(SEED_CHAT), attachments=[missing]).data, tmp_path)
    assert "File not archived (failed): HTTP 404 Not Found" in text


@pytest.mark.parametrize("data, why", [
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, "image not shown"),
    (png((200, 200))[:300], "image not shown"),  # truncated
    (jpeg()[:120], "image not shown"),
    (big_png_header(8_000, 8_000), "8000x8000 pixels, over 50,000,000"),
    (big_png_header(20_000, 20_000), "DecompressionBombError"),  # Pillow's own guard, before ours
])
def test_a_malformed_image_becomes_a_note_not_a_crash(renderer, tmp_path, data, why) -> None:
    out = renderer.render(normalise(SEED_CHAT), attachments=[fetched(data)])
    text = pdf_text(out.data, tmp_path)
    assert why in text and image_count(out.data, tmp_path) == 0


def test_thumbnails_are_bounded() -> None:
    _, width, height = thumbnail(png((4000, 1000)), "PNG")
    assert width == pytest.approx(THUMBNAIL_BOX) and height == pytest.approx(THUMBNAIL_BOX / 4)
    _, width, height = thumbnail(png((20, 10)), "PNG")
    assert (width, height) == (20, 10)  # a small image is not blown up


def test_the_embedded_thumbnail_keeps_the_pixels_the_docs_state(renderer, tmp_path) -> None:
    """docs/attachments.md names the pixels a thumbnail keeps on its longer side: the image embedded in
    the PDF (pdfimages) has exactly that many, wide or tall, PNG or JPEG."""
    import re
    docs = (Path(__file__).parent.parent / "docs" / "attachments.md").read_text()
    (stated,) = {int(n) for n in re.findall(r"(\d+) pixels on the longer\s+side", docs)}
    attachments = [fetched(png((4000, 1000)), 1), fetched(jpeg((900, 1800)), 2, "scan.jpg")]
    path = tmp_path / "t.pdf"
    path.write_bytes(renderer.render(normalise(SEED_CHAT), attachments=attachments).data)
    listed = subprocess.run([require_tool("pdfimages"), "-list", str(path)], capture_output=True, text=True,
                            check=True).stdout.splitlines()[2:]  # two header lines
    sizes = [(int(row.split()[3]), int(row.split()[4])) for row in listed]  # width, height columns
    assert sizes == [(stated, stated // 4), (stated // 2, stated)]

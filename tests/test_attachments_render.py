"""Attachments in the PDF: each listed under its message; PNG and JPEG as bounded thumbnails; a
malformed or hostile image becomes a note, never a failed render."""

from __future__ import annotations

import datetime as dt
import io
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

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
    assert 'File: "x.png"' in text and "File not archived (failed): HTTP 404 Not Found" in text
    assert "Archived file" not in text  # (the label said so above the line saying it was not: review newuser2)


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


# Hostile images (docs/attachments.md, "Hostile images"): each thumbnail is made in a child process, killed
# after LIMIT seconds, which reports its CPU time and peak memory; the bounds the docs state are checked here.
LIMIT = 15.0
COST = """
import sys, time
from archiver.render.attachments import UnshownImage, thumbnail
data = sys.stdin.buffer.read()
start = time.process_time()
try:
    thumbnail(data, sys.argv[1])
    outcome = "thumbnail"
except UnshownImage as exc:
    outcome = f"note: {exc}"
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))  # ru_maxrss outlives exec
print(time.process_time() - start, int(peak.split()[1]) // 1024, outcome, sep="\\n")
"""


def thumbnail_cost(data: bytes, kind: str) -> tuple[float, int, str]:
    """The CPU seconds, peak MB (the process's whole, ~45 MB of it imports) and outcome of one thumbnail."""
    import sys
    try:
        done = subprocess.run([sys.executable, "-c", COST, kind], input=data, capture_output=True, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the thumbnail of a {len(data):,}-byte {kind} was still decoding after "
                             f"{LIMIT:g} s") from None
    assert done.returncode == 0, done.stderr.decode()
    cpu, mb, outcome = done.stdout.decode().splitlines()
    return float(cpu), int(mb), outcome


def encoded(image: "Image.Image", kind: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def scans(data: bytes) -> list[tuple[int, int]]:
    """Where each scan of a JPEG Pillow wrote starts (its SOS) and ends (the next marker)."""
    i, found = 2, []
    while data[i + 1] != 0xD9:
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        k = i + 2 + length
        while not (data[k] == 0xFF and data[k + 1] != 0x00 and not 0xD0 <= data[k + 1] <= 0xD7):
            k += 1
        found.append((i, k))
        i = k
    return found


def repeat_scan(data: bytes, which: int, times: int) -> bytes:
    """DATA with scan WHICH repeated TIMES more (libjpeg decodes each again, over the whole image)."""
    start, end = scans(data)[which]
    last = scans(data)[-1][1]
    return data[:last] + data[start:end] * times + data[last:]


def photo(size: tuple[int, int]) -> "Image.Image":
    """A noisy colour image: compresses like a photograph, not like a flat colour."""
    import os
    small = Image.frombytes("RGB", (size[0] // 4, size[1] // 4), os.urandom(size[0] // 4 * size[1] // 4 * 3))
    return small.resize(size)


@pytest.mark.parametrize("side, repeats, why", [
    (7000, 2000, "more than 1,000 markers"),  # the reviewer's 340 KB file: more than 15 s before
    (7000, 150, "over 25,000,000 for a progressive JPEG of 1 channel"),  # ~3 s before
    (3000, 150, "156 scans of 3000x3000 pixels, over 500,000,000 scanned pixels"),  # ~0.5 s before
])
def test_a_jpeg_of_many_scans_is_a_note_at_little_cost(side, repeats, why) -> None:
    bomb = repeat_scan(encoded(Image.new("L", (side, side), 128), "JPEG", progressive=True), -1, repeats)
    cpu, mb, outcome = thumbnail_cost(bomb, "JPEG")
    assert why in outcome and cpu < 0.1 and mb < 100


def test_a_jpeg_of_many_scans_up_to_the_size_cap_is_refused_as_fast() -> None:
    """attachments.max_bytes (20 MB) of repeated scans: ~270,000 of them, hours of decoding before."""
    one = encoded(Image.new("L", (7000, 7000), 128), "JPEG", progressive=True)
    start, end = scans(one)[-1]
    bomb = repeat_scan(one, -1, (20_000_000 - len(one)) // (end - start))
    cpu, _, outcome = thumbnail_cost(bomb, "JPEG")
    assert len(bomb) > 19_000_000 and "more than 1,000 markers" in outcome and cpu < 0.1


def test_segments_pillow_reads_one_by_one_are_bounded() -> None:
    """Pillow walks a JPEG's markers (and stray bytes) and a PNG's chunks in Python: 20 MB of them took
    2-3 s before."""
    import struct
    ordinary = jpeg((64, 48))
    comments = ordinary[:2] + b"\xff\xfe\x00\x02" * 4_500_000 + ordinary[2:]
    stray = ordinary[:2] + b"\0" * 15_000_000 + ordinary[2:]
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(  # noqa: E731
        ">I", zlib.crc32(kind + body))
    image = png((64, 48))
    empty_chunks = image[:33] + chunk(b"zzZz", b"") * 1_500_000 + image[33:]
    for data, kind, why in [(comments, "JPEG", "more than 1,000 markers"),
                            (stray, "JPEG", "more than 1,000 stray bytes"),
                            (empty_chunks, "PNG", "more than 10,000 chunks")]:
        cpu, _, outcome = thumbnail_cost(data, kind)
        # 15 MB of stray bytes cost 0.075-0.08 s (a regex scan to the next marker) on a quiet machine, 0.105 once
        # in CI beside other work: 0.25 s still tells that scan from Pillow's walk a byte at a time (2-3 s).
        assert why in outcome and cpu < 0.25, (kind, why, outcome, cpu)


CPU_BOUND = 0.75  # seconds: docs/attachments.md's "about 0.5 s", with room for a slower machine


@pytest.mark.parametrize("data, kind, shown", [
    (lambda: encoded(Image.new("RGBA", (5000, 5000)), "PNG"), "PNG", True),  # 25 M: the most a PNG may have
    (lambda: encoded(Image.new("RGBA", (5001, 5000)), "PNG"), "PNG", False),
    (lambda: encoded(Image.new("RGB", (7000, 7000), "blue"), "JPEG"), "JPEG", True),  # one scan: draft, 1/8
    (lambda: encoded(Image.new("RGB", (7000, 7000), "blue"), "JPEG", progressive=True), "JPEG", False),
    # scans x pixels at the cap, each an interleaved DC scan of three full-size components (the costliest)
    (lambda: repeat_scan(encoded(Image.new("RGB", (5000, 5000), (128, 60, 200)), "JPEG", progressive=True,
                                 subsampling=0), 0, 10), "JPEG", True),
])
def test_the_costliest_images_shown_stay_within_the_stated_bound(data, kind, shown) -> None:
    """docs/attachments.md: no image is decoded for more than about 0.5 s of CPU or 300 MB. The CPU bound allows
    half as much again: the costliest measured 0.38-0.40 s on the development machine and 0.50 s on a slower day of
    the same machine (CI), where a bound of exactly 0.5 s failed a build; memory does not vary so."""
    cpu, mb, outcome = thumbnail_cost(data(), kind)
    assert (outcome == "thumbnail") == shown, outcome
    assert cpu < CPU_BOUND and mb < 300, (cpu, mb)


def test_ordinary_photos_are_shown_at_the_stated_cost() -> None:
    """docs/attachments.md: a 12 M pixel photo, baseline or progressive, costs well under 0.3 s."""
    picture = photo((4000, 3000))
    for options in ({}, {"progressive": True}):
        cpu, mb, outcome = thumbnail_cost(encoded(picture, "JPEG", quality=90, **options), "JPEG")
        assert outcome == "thumbnail" and cpu < 0.3 and mb < 150, (options, cpu, mb)


def first_scan_only(data: bytes) -> bytes:
    """DATA cut after its first scan, then EOI: a JPEG of one scan."""
    return data[:scans(data)[0][1]] + b"\xff\xd9"


def non_interleaved(side: int, components: int = 3) -> bytes:
    """A baseline JPEG of SIDE x SIDE pixels whose COMPONENTS (full size each) are coded one per scan, as a
    grey JPEG's one is: its first scan names one component, so libjpeg holds every coefficient."""
    grey = encoded(Image.new("L", (side, side), 128), "JPEG")
    sof = grey.index(b"\xff\xc0")
    start, end = scans(grey)[0]
    frame = grey[sof + 4:sof + 10][:-1] + bytes([components]) + b"".join(
        bytes([c, 0x11, 0]) for c in range(1, components + 1))
    headers = (grey[:sof] + b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame
               + grey[sof + 2 + int.from_bytes(grey[sof + 2:sof + 4], "big"):start])
    data = grey[start + 2 + int.from_bytes(grey[start + 2:start + 4], "big"):end]
    return headers + b"".join(b"\xff\xda\x00\x08\x01" + bytes([c]) + b"\x00\x00\x3f\x00" + data
                              for c in range(1, components + 1)) + b"\xff\xd9"


@pytest.mark.parametrize("data, why", [
    # the reviewer's: progressive CMYK, 50 M pixels, cut to its first (DC) scan: 390 KB, ~430-640 MB before
    (lambda: first_scan_only(encoded(Image.new("CMYK", (7071, 7071)), "JPEG", progressive=True, quality=90)),
     "over 18,750,000 for a progressive JPEG of 4 channels"),
    (lambda: first_scan_only(encoded(Image.new("RGB", (7071, 7071)), "JPEG", progressive=True)),
     "over 25,000,000 for a progressive JPEG of 3 channels"),
    # baseline, but its one scan names one of three components: held whole all the same
    (lambda: first_scan_only(non_interleaved(7071)), "over 25,000,000 for a JPEG of 3 channels whose first scan"),
])
def test_a_jpeg_held_whole_is_capped_however_few_scans_it_has(data, why) -> None:
    """docs/attachments.md: libjpeg holds every coefficient of a progressive JPEG, or of one whose first scan
    does not name every channel, whatever its count of scans."""
    cpu, mb, outcome = thumbnail_cost(data(), "JPEG")
    assert why in outcome and cpu < 0.1 and mb < 100, (outcome, cpu, mb)


@pytest.mark.parametrize("data, kind, shown", [
    (lambda: non_interleaved(5000), "JPEG", True),  # 25 M pixels, one scan a component: held whole, shown
    # a CMYK pixel costs 4/3 of an RGB one: its caps are 3/4 (18,750,000 pixels; 375,000,000 scanned)
    (lambda: encoded(Image.new("CMYK", (4330, 4330)), "JPEG", progressive=True), "JPEG", True),
    (lambda: encoded(Image.new("CMYK", (4331, 4331)), "JPEG", progressive=True), "JPEG", False),
    (lambda: repeat_scan(encoded(Image.new("CMYK", (4330, 4330), (10, 60, 200, 30)), "JPEG", progressive=True),
                         0, 2), "JPEG", True),  # 20 scans of 18.7 M pixels: 375 M scanned, the cap
    (lambda: repeat_scan(encoded(Image.new("CMYK", (4330, 4330), (10, 60, 200, 30)), "JPEG", progressive=True),
                         0, 3), "JPEG", False),
])
def test_held_whole_and_cmyk_jpegs_shown_stay_within_the_stated_bound(data, kind, shown) -> None:
    """docs/attachments.md: no image is decoded for more than about 0.5 s of CPU or 300 MB. The CPU bound allows
    half as much again: the costliest measured 0.38-0.40 s on the development machine and 0.50 s on a slower day of
    the same machine (CI), where a bound of exactly 0.5 s failed a build; memory does not vary so."""
    cpu, mb, outcome = thumbnail_cost(data(), kind)
    assert (outcome == "thumbnail") == shown, outcome
    assert cpu < CPU_BOUND and mb < 300, (cpu, mb)


def lossless_jpeg(width: int, height: int, components: int = 1) -> bytes:
    """A lossless JPEG (SOF3, Huffman, predictor 1) of WIDTH x HEIGHT mid-grey pixels: one bit a sample."""
    dht = b"\xff\xc4" + struct.pack(">H", 19 + 1) + b"\x00" + bytes([1] + [0] * 15) + b"\x00"  # '0': no change
    frame = struct.pack(">BHHB", 8, height, width, components) + b"".join(
        bytes([c, 0x11, 0]) for c in range(1, components + 1))
    scan = bytes([components]) + b"".join(bytes([c, 0]) for c in range(1, components + 1)) + b"\x01\x00\x00"
    bits = width * height * components
    return (b"\xff\xd8" + dht + b"\xff\xc3" + struct.pack(">H", 2 + len(frame)) + frame
            + b"\xff\xda" + struct.pack(">H", 2 + len(scan)) + scan
            + b"\x00" * (bits // 8) + (b"\x7f" if bits % 8 else b"") + b"\xff\xd9")


@pytest.mark.parametrize("data, shown", [
    (lambda: lossless_jpeg(1000, 1000), "thumbnail"),  # libjpeg cannot shrink one while decoding (draft)
    (lambda: lossless_jpeg(5000, 5000, 3), "thumbnail"),  # decoded whole, as a PNG: up to 25 M pixels
    (lambda: lossless_jpeg(5001, 5000, 3), "note: 5001x5000 pixels, over 25,000,000 for a lossless JPEG of 3 "
                                           "channels"),
])
def test_a_lossless_jpeg_is_decoded_whole_within_the_stated_bound(data, shown) -> None:
    """docs/attachments.md: a lossless JPEG (SOF3) is decoded at its full size, so it has a PNG's cap; it was
    a note 'broken data stream' before (libjpeg refuses to scale one)."""
    cpu, mb, outcome = thumbnail_cost(data(), "JPEG")
    assert outcome == shown and cpu < 0.5 and mb < 300, (outcome, cpu, mb)

"""Same output: this tree's PDFs against an older revision's, over the bench set and some tricky chats.

    python bench/same_output.py --old fb31451
    python bench/same_output.py --old-tree /path/to/checkout --chats 100

Both trees render the same chats (bench/pipeline.py's generate: every sample
language, Arabic right to left and CJK among them, LINK and IMAGE messages; chats
of 5 to 120 messages over several pages; and chats of tricky text: parentheses
and backslashes, Hebrew and Arabic with digits, emoji and control characters as
placeholders, fonts changing mid-line, a word wider than the page, URLs, over
256 distinct characters in one font, PNG and JPEG attachments), each in its own
process, signed with the same development key at a fixed moment, in reportlab's
invariant mode. For every chat it checks that the page images (pdftoppm, PPM at
--dpi) and the extracted text (pdftotext) are identical, that `qpdf --check` is
clean and that pdfsig finds the new file's signature valid and covering the whole
document. It also says how many files are byte for byte identical apart from
the signature's byte range and value (the CMS is randomised; expected: all of them, as long as
the change meant no byte to differ). Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import datetime as dt
import io
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
MOMENT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
TRICKY = [
    "Parentheses (a), unbalanced ) and ( , a backslash \\ and \\\\ two, 100% (really) \\(escaped\\)",
    "שלום, ההזמנה שלי (מספר 4711) לא הגיעה — תודה",
    "طلبي رقم 4711 لم يصل (بعد)؛ شكرا جزيلا",
    "Emoji 👍🏽 🎉 ☃ and controls \x07bell \u202eRLO\u202c \u200b zero-width \ufeff",
    "Fonts change mid-line: Ελλάδα abc 我的订单 ありがとう ∑∫ ᚠᚢᚦ 한국어 Здравствуйте",
    "A word wider than the page: " + "Donaudampfschifffahrtsgesellschaftskapitän" * 12,
    "See https://example.com/path?q=(1)&r=\\x and mailto:someone@example.com, then www.example.org",
    "Tabs\tand no-break\u00a0spaces\u202fnarrow, and a\nnewline\n\nand an empty line",
    "".join(chr(0x4E00 + 7 * i) for i in range(420)),  # more than one 256-character subset of a font
    "".join(chr(c) for c in range(0x20, 0x7F)) + "".join(chr(c) for c in range(0xA1, 0x180)),
]


def _image(kind: str, seed: int) -> bytes:
    from PIL import Image
    rng = random.Random(seed)
    image = Image.new("RGB", (120, 80), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(200):
        image.putpixel((rng.randrange(120), rng.randrange(80)), (rng.randrange(256), 0, 255))
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def cases(chats: int, long_chats: int) -> list[tuple[dict, dict, bool]]:
    """(chat, contact, with attachments): the bench set, longer chats, and tricky ones."""
    sys.path.insert(0, str(HERE / "bench"))
    from pipeline import generate
    from archiver.samples import make_chat

    made = [(c, k, False) for c, k in generate(chats, 30)]
    made += [(c, k, False) for c, k in generate(long_chats, None, seed=2)]
    for i, text in enumerate(TRICKY):
        chat, contact = make_chat(random.Random(100 + i), messages=12, language=["en", "ar", "zh", "ja"][i % 4],
                                  start_ms=1_700_000_000_000.0)
        for n, message in enumerate(m for m in chat["messages"] if m["data"].get("content", {}).get("text")):
            message["data"]["content"]["text"] = TRICKY[(i + n) % len(TRICKY)]
        room = f"ROOM ({i}) \\ עברית {text[:12]}"
        chat["room"], contact["id"] = room, room
        made.append((chat, contact, True))
    return made


def render(out: Path, keys: Path, chats: Path) -> None:
    """In the tree under test: write NNN.pdf (signed) for every case in CHATS (pickled)."""
    from reportlab import rl_config
    rl_config.invariant = 1  # fixed dates and document ID: the bytes depend on the content only
    from archiver import artifacts
    from archiver.render import evidence
    from archiver.attachments import FETCHED, Attachment, sniff
    from archiver.render.record import build_record
    from archiver.transcript import normalise

    sys.path.insert(0, str(HERE / "bench"))
    from pipeline import _config

    # littlecms stamps its sRGB profile with the time it is made: both trees embed the one made by the parent.
    evidence._compressed_profile = lambda: zlib.compress((keys / "srgb.icc").read_bytes())
    paths = {name: keys / name for name in ("signing.crt.pem", "signing.key.pem", "legal.crt.pem")}
    builder = artifacts.ArtifactBuilder.from_config(_config(paths, f"file://{out}/store", 1))
    for n, (chat, contact, attach) in enumerate(pickle.loads(chats.read_bytes())):
        redacted = builder.redactor.apply(chat, contact)
        transcript = normalise(redacted.chat, redacted.contact, status="ended")
        fetched = []
        if attach:
            urls = [m for m in transcript.messages if m.url][:2]
            for kind, m in zip(("PNG", "JPEG"), urls):
                data = _image(kind, n)
                fetched.append(Attachment(m.position, m.message_id, m.url, f"x.{kind.lower()}", FETCHED, "", data,
                                          sniff(data), MOMENT))
        record, digest = build_record(transcript, redacted.chat, redacted.contact, version=1, generated_at=MOMENT,
                                      redaction=redacted.note.describe(),
                                      attachments=[a.describe() for a in fetched] or None)
        slot = dataclasses.replace(builder.signer.slot(), signed_at=MOMENT)
        rendered = builder.renderer.render(transcript, redaction=redacted.note, attachments=fetched,
                                           archive=builder.archive_info(1, MOMENT, digest, record), signature=slot)
        (out / f"{n:03d}.pdf").write_bytes(builder.signer.sign_rendered(rendered.data, rendered.signature))
        (out / f"{n:03d}.json").write_text(json.dumps({"signature": [rendered.signature.byte_range,
                                                                     rendered.signature.contents_end]}))


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, timeout=300)


def _pages(pdf: Path, dpi: int) -> list[bytes]:
    prefix = pdf.with_suffix("")
    _run("pdftoppm", "-r", str(dpi), str(pdf), str(prefix)).check_returncode()
    files = sorted(pdf.parent.glob(f"{prefix.name}-*.ppm"))
    pages = [f.read_bytes() for f in files]
    for f in files:
        f.unlink()
    return pages


def _unsigned(pdf: Path) -> bytes:
    """The file with its byte range and signature value blanked (the CMS differs at every signing)."""
    data = bytearray(pdf.read_bytes())
    start, end = json.loads(pdf.with_suffix(".json").read_text())["signature"]
    data[start:end] = b"0" * (end - start)
    return bytes(data)


def compare(old: Path, new: Path, name: str, dpi: int) -> tuple[list[str], bool]:
    """The problems found with NAME in NEW against OLD, and whether the files are identical but for the CMS."""
    problems = []
    a, b = old / name, new / name
    pages_old, pages_new = _pages(a, dpi), _pages(b, dpi)
    if not pages_new or pages_old != pages_new:
        problems.append(f"page images differ ({len(pages_old)} pages old, {len(pages_new)} new)")
    texts = [_run("pdftotext", "-enc", "UTF-8", str(p), "-").stdout for p in (a, b)]
    if texts[0] != texts[1] or not texts[1].strip():
        problems.append("extracted text differs")
    check = _run("qpdf", "--check", str(b))
    if check.returncode != 0 or b"No syntax or stream encoding errors" not in check.stdout:
        problems.append("qpdf --check: " + (check.stdout + check.stderr).decode(errors="replace")[-300:])
    sig = _run("pdfsig", str(b)).stdout.decode(errors="replace")
    if "Signature is Valid." not in sig or "Total document signed" not in sig:
        problems.append("pdfsig: " + re.sub(r"\s+", " ", sig)[-300:])
    return problems, _unsigned(a) == _unsigned(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--old", help="the git revision to compare this tree with")
    which.add_argument("--old-tree", type=Path, help="a checkout of the older code")
    parser.add_argument("--chats", type=int, default=80, help="bench chats of 30 messages")
    parser.add_argument("--long-chats", type=int, default=10, help="chats of 5 to 300 messages")
    parser.add_argument("--dpi", type=int, default=72)
    parser.add_argument("--render", type=Path, help=argparse.SUPPRESS)  # internal: render into this folder
    parser.add_argument("--keys", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        render(args.render, args.keys, args.cases)
        return 0
    for tool in ("pdftoppm", "pdftotext", "qpdf", "pdfsig"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (poppler-utils, qpdf)")
    with tempfile.TemporaryDirectory(prefix="same-output-") as scratch:
        work = Path(scratch)
        old_tree = args.old_tree
        if old_tree is None:
            old_tree = work / "old-tree"
            subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(old_tree), args.old],
                           check=True)
        try:
            from archiver.keys import create_development_keys
            create_development_keys(work / "keys")
            from archiver.render.evidence import srgb_profile
            (work / "keys" / "srgb.icc").write_bytes(srgb_profile())
            (work / "cases.pickle").write_bytes(pickle.dumps(cases(args.chats, args.long_chats)))  # chats have times
            for label, tree in (("old", old_tree), ("new", HERE)):
                (work / label).mkdir()
                env = {**os.environ, "PYTHONPATH": str(tree)}
                subprocess.run([sys.executable, str(Path(__file__).resolve()), "--old-tree", str(old_tree),
                                "--render", str(work / label), "--keys", str(work / "keys"),
                                "--cases", str(work / "cases.pickle")],
                               env=env, cwd=tree, check=True)
            names = sorted(p.name for p in (work / "new").glob("*.pdf"))
            failed, identical = 0, 0
            with cf.ThreadPoolExecutor(2) as pool:
                for name, (problems, same) in zip(names, pool.map(
                        lambda n: compare(work / "old", work / "new", n, args.dpi), names)):
                    identical += same
                    if problems:
                        failed += 1
                        print(f"{name}: " + "; ".join(problems))
            print(f"{len(names)} PDFs: {len(names) - failed} with identical page images and text, qpdf clean and a "
                  f"valid signature; {identical} byte for byte identical but for the signature")
            return 1 if failed or not names else 0
        finally:
            if args.old_tree is None:
                subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(old_tree)], check=False)


if __name__ == "__main__":
    sys.exit(main())

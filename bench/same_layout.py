"""Same output check: this tree's layout, record and redaction against another revision's, chat by chat.

Renders the bench chats (bench/pipeline.py's generate, with messages swapped for hard text: right-to-left,
CJK, emoji, control and bidi characters, long words, links, tabs, newlines, over-long fields, card
numbers, odd BSON types) with the code of REV (from `git archive`) and with this tree's, each in its own
process, and compares what they made:

- the laid-out lines of every page (each run's position, text, font, size, colour, link; line heights,
  levels, messages), the placeholder and shortened counts, and any InvalidChat message: identical;
- the JSON record's bytes (so the redacted source and the transcript view): identical;
- the PDF (unsigned, reportlab's invariant mode, one sRGB profile for both): pdftotext's text and pdftoppm's
  page images identical; how many PDFs are identical byte for byte is printed too (a change to the drawing
  may change the bytes and not the pages).

    python bench/same_layout.py --old fb31451                 # 200 chats of 30 messages
    python bench/same_layout.py --old fb31451 --chats 50 --no-images

Exit status 0 when all is the same, 1 when something differs (listed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent
GENERATED_AT = dt.datetime(2026, 11, 25, 20, 0, 0, 123000, tzinfo=dt.timezone.utc)

HARD_TEXTS = [
    "שלום, ההזמנה שלי לא הגיעה. מספר ההזמנה 4711.",  # Hebrew with digits
    "مرحبا، رقم الطلب 4711 and the English word inside.",  # Arabic mixed with English
    "Order 4711: لم يصل طلبي بعد (sent on 2026-01-02).",  # left-to-right paragraph with Arabic inside
    "\u202eevil override\u202c and a bell \x07 and a zero-width joiner \u200d here",
    "Emoji 😀👍🏽👨‍👩‍👧 and symbols ☃ ♞ ⌘ and a rare one \U0001f9ff.",
    "Supercalifragilisticexpialidocious" * 12,  # a word wider than a line
    "see https://example.com/" + "a" * 300 + " and mailto:someone@example.com",
    "tab\tseparated\tvalues\nsecond line\n\nafter an empty line\n",
    "您好" * 120,  # a long CJK run with no spaces
    "カタカナとひらがな、漢字の混ざった文章です。" * 6,
    "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, mail me at jane.doe@example.org",
    "a\u00a0no-break\u2007space\u202fthin and\u3000ideographic space",
    "e\u0301 combining accents and a lone combining mark \u0301",
    "Привет " * 60,
    "ALL CAPS " * 40 + "\n" + "x " * 200,
    "\x00\x01\x1b[31m control sequence \x7f\u0085",
    "Mixed עברית and English and العربية in one line that is rather long so that it wraps " * 3,
    "\u200f" + "right-to-left mark first, then English",
    "   leading spaces and trailing spaces   ",
    "a\u2028line separator\u2029paragraph separator",
    # every script of tests/test_scripts.py, and markup that must stay text
    "سفارش من هنوز نرسیده است", "میرا آرڈر ابھی تک نہیں پہنچا", "주문한 상품이 아직 도착하지 않았습니다",
    "คำสั่งซื้อของฉันยังไม่มาถึง", "मेरा ऑर्डर अभी तक नहीं आया", "👍 😀 🎉 ❤", "لا إله (قوس) [1] 12:30",
    "<b>bold</b> &amp; <script>alert(1)</script> %PDF-1.4 1 0 obj << >> endobj",
]


def chats(count: int, messages: int) -> list[tuple[dict, dict, list]]:
    """The bench chats with hard texts swapped in, a few odd fields, and attachments for some."""
    from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
    from bson.datetime_ms import DatetimeMS

    sys.path.insert(0, str(HERE))
    from pipeline import generate

    rng = random.Random(12)
    out = []
    for n, (chat, contact) in enumerate(generate(count, messages, seed=7)):
        for i, m in enumerate(chat["messages"]):
            content = m["data"].get("content", {})
            if "text" in content and rng.random() < 0.3:
                content["text"] = rng.choice(HARD_TEXTS)
            if rng.random() < 0.03:
                m["data"]["messageType"] = rng.choice(["STICKER\u202e", "x" * 1500, "QUICK_REPLY"])
            if rng.random() < 0.03:
                m["data"]["replyTo"] = str(uuid_like(rng))
        if n % 10 == 1:  # odd BSON types and values: the record must keep them exactly
            chat["odd"] = {"int64": Int64(2**40), "small": Int64(5), "dec": Decimal128("1.10"), "bin": Binary(b"\0\1", 0),
                           "uuid": Binary(b"0123456789abcdef", 4), "re": Regex("^a", "i"),
                           "ts": Timestamp(5, 1), "min": MinKey(), "max": MaxKey(), "oid": ObjectId("61e8277aef3d6b076066d287"),
                           "nan": float("nan"), "inf": float("-inf"), "neg0": -0.0, "float": 1.5e300, "big": 2**62,
                           "date": dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc), "far": DatetimeMS(2**50),
                           "nested": [[{"a": None, "b": True}], []], 7: "int key", "card": 4111111111111111,
                           "naive": dt.datetime(2020, 1, 2, 3, 4, 5, 678000)}
            if n % 20 == 1:  # a str subclass: the email rule refuses it (InvalidChat), on both sides
                chat["odd"]["code"] = Code("x=1")
            contact["users"]["x\u202e"] = {"nickname": "Eve\u202e\u0007", "channel": "web", "name": "E" * 1200}
        if n % 10 == 2:
            contact["title"] = "t" * 1500
            chat["messages"][0]["data"]["content"].setdefault("user", {})["name"] = "مريم العلي"
        if n % 10 == 3:
            contact["contact_events"].append({"event": "transferredTo\u202e", "ts": contact["beginTime"] + 5000,
                                              "origin": "acd", "to": "agent7"})
        attachments = []
        if n % 7 == 0:
            from archiver.attachments import Attachment
            for m_pos, m in enumerate(chat["messages"], 1):
                url = m["data"].get("content", {}).get("url")
                if url:
                    attachments.append(Attachment(m_pos, m["data"]["id"], url, url.rsplit("/", 1)[1], "failed",
                                                  reason="HTTP 404 Not Found"))
        out.append((chat, contact, attachments))
    return out


def uuid_like(rng: random.Random) -> str:
    return "%032x" % rng.getrandbits(128)


def dump(chats_file: Path, keys_dir: Path, out: Path) -> None:
    """Runs in the tree under test: what it makes of each chat, written to OUT."""
    from reportlab import rl_config

    rl_config.invariant = 1  # no creation date or random id: the same input gives the same bytes
    sys.path.insert(0, str(HERE))
    from pipeline import _config
    from archiver import artifacts
    from archiver.render import pdf
    from archiver.render.record import build_record
    from archiver.transcript import InvalidChat, has_ended, normalise

    keys = {p.name: p for p in keys_dir.iterdir()}
    config = _config(keys, f"file://{out / 'store'}", 1, **{"redaction.enabled": True,
                     "redaction.rules": ["card", "iban", "email"], "redaction.patterns": {"order": "INV-\\d{4}-\\d+"}})
    builder = artifacts.ArtifactBuilder.from_config(config)
    from archiver.render import evidence

    profile = (keys_dir.parent / "srgb.icc").read_bytes()  # else it carries the time it was made
    evidence.srgb_profile = lambda: profile
    pages_seen: list = []
    paginate = pdf._paginate

    def capture(*args, **kwargs):
        pages = paginate(*args, **kwargs)
        pages_seen.append(pages)
        return pages

    pdf._paginate = capture
    for n, (chat, contact, attached) in enumerate(pickle.loads(chats_file.read_bytes())):
        result: dict = {}
        pages_seen.clear()
        try:
            redacted = builder.redactor.apply(chat, contact)
            status = "ended" if has_ended(redacted.chat) else "interim"
            t = normalise(redacted.chat, redacted.contact, status=status, max_message_chars=builder.max_message_chars)
            record, digest = build_record(t, redacted.chat, redacted.contact, version=2, generated_at=GENERATED_AT,
                                          redaction=redacted.note.describe(),
                                          attachments=[a.describe() for a in attached] or None)
            (out / f"{n}.json").write_bytes(record)
            rendered = builder.renderer.render(t, redaction=redacted.note, attachments=attached,
                                               archive=builder.archive_info(2, GENERATED_AT, digest, record))
            (out / f"{n}.pdf").write_bytes(rendered.data)
            result.update(placeholders=rendered.placeholders, shortened=rendered.shortened)
        except InvalidChat as exc:
            result["invalid"] = str(exc)
        result["pages"] = [[_line(line) for line in page] for pages in pages_seen for page in pages]
        (out / f"{n}.layout").write_text(json.dumps(result, ensure_ascii=False))


def _line(line) -> list:
    runs = [[round(x, 6), r.text, r.style.font, r.style.size, r.style.color.hexval(), r.link] for x, r in line.runs]
    return [line.height, runs, line.rule, bool(line.image), line.level, line.message, line.keep]


def _tree_at(rev: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(TREE), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _pdf_views(path: Path, images: bool) -> tuple[str, list[str]]:
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, check=True).stdout
    pictures: list[str] = []
    if images:
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run(["pdftoppm", "-r", "50", "-gray", str(path), f"{folder}/p"], check=True)
            pictures = [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())]
    return hashlib.sha256(text).hexdigest(), pictures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", default="fb31451", help="the revision to compare with (default fb31451)")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--no-images", action="store_true", help="skip pdftoppm (text and layout only)")
    parser.add_argument("--dump", nargs=3, metavar=("CHATS", "KEYS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dump:
        dump(*map(Path, args.dump))
        return 0
    sys.path.insert(0, str(TREE))
    from archiver.keys import create_development_keys

    work = Path(tempfile.mkdtemp(prefix="same-layout-"))
    made = chats(args.chats, args.messages)
    (work / "chats.pickle").write_bytes(pickle.dumps(made))
    from archiver.render.evidence import srgb_profile

    (work / "srgb.icc").write_bytes(srgb_profile())
    keys_dir = work / "keys"
    create_development_keys(keys_dir)
    for p in list(keys_dir.iterdir()):
        if not p.name.endswith(".pem"):
            p.unlink()
    sides = {"old": _tree_at(args.old, work / "old-tree"), "new": TREE}
    for side, tree in sides.items():
        (work / side).mkdir()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--dump", str(work / "chats.pickle"),
                        str(keys_dir), str(work / side)], env=env, cwd=tree, check=True)
    differences: list[str] = []
    same_bytes = 0
    for n in range(len(made)):
        old, new = work / "old", work / "new"
        if (old / f"{n}.layout").read_text() != (new / f"{n}.layout").read_text():
            differences.append(f"chat {n}: layout or counts differ")
        for ext in ("json", "pdf"):
            a, b = old / f"{n}.{ext}", new / f"{n}.{ext}"
            if a.exists() != b.exists():
                differences.append(f"chat {n}: {ext} made on one side only")
            elif ext == "json" and a.exists() and a.read_bytes() != b.read_bytes():
                differences.append(f"chat {n}: record bytes differ")
        pdf_a, pdf_b = old / f"{n}.pdf", new / f"{n}.pdf"
        if pdf_a.exists() and pdf_b.exists():
            same_bytes += pdf_a.read_bytes() == pdf_b.read_bytes()
            (text_a, pics_a), (text_b, pics_b) = (_pdf_views(p, not args.no_images) for p in (pdf_a, pdf_b))
            if text_a != text_b:
                differences.append(f"chat {n}: pdftotext differs")
            if pics_a != pics_b:
                differences.append(f"chat {n}: page images differ")
    pdfs = sum(1 for _ in (work / "new").glob("*.pdf"))
    invalid = sum('"invalid"' in p.read_text() for p in (work / "new").glob("*.layout"))
    print(f"{len(made)} chats ({pdfs} PDFs, {invalid} refused as InvalidChat); PDF bytes identical for "
          f"{same_bytes} of {pdfs}; {'page images, ' if not args.no_images else ''}text, layout, counts and "
          f"record bytes: {'identical' if not differences else f'{len(differences)} differences'}  ({work})")
    for line in differences[:40]:
        print("  " + line)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())

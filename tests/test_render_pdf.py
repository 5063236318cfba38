"""The PDF transcript, checked with poppler (pdftotext, pdffonts) and qpdf."""

from __future__ import annotations

import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from archiver.config import DEFAULT_TEMPLATE
from reportlab.pdfbase import pdfmetrics

from archiver.render.pdf import PdfRenderer, Run, TemplateError, wrap
from archiver.samples import PHRASES, SEED_CHAT, make_chat
from archiver.transcript import normalise
from conftest import require_tool

ITALIAN = DEFAULT_TEMPLATE.with_name("transcript.it.toml")


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _chat(texts: list[str], **extra) -> dict:
    chat, _ = make_chat(random.Random(1), messages=len(texts) + 1)
    for message, text in zip(chat["messages"], texts):
        message["data"].update(messageType="TEXT", deliverySuccess=True)
        message["data"]["content"] = {"text": text, "user": message["data"]["content"]["user"]}
    chat.update(extra)
    return chat


def _text(pdf: bytes, tmp_path: Path) -> str:
    require_tool("pdftotext")
    path = tmp_path / "t.pdf"
    path.write_bytes(pdf)
    assert subprocess.run(["qpdf", "--check", str(path)], capture_output=True).returncode == 0
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, text=True).stdout


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_every_message_in_every_script_comes_back(renderer, tmp_path) -> None:
    texts = [t for lang, phrases in PHRASES.items() if lang != "ar" for t in phrases]
    out = renderer.render(normalise(_chat(texts)))
    extracted = _flat(_text(out.data, tmp_path))
    for text in texts:
        assert _flat(text) in extracted
    assert out.placeholders == 0


def test_arabic_characters_are_drawn_not_replaced(renderer, tmp_path) -> None:
    # No shaping or right-to-left layout (see docs/fonts.md); every letter is still drawn.
    out = renderer.render(normalise(_chat(PHRASES["ar"])))
    assert out.placeholders == 0
    extracted = _text(out.data, tmp_path)
    assert sum(1 for ch in extracted if "\u0600" <= ch <= "\u06ff") >= sum(len(t) - t.count(" ") - 1 for t in PHRASES["ar"]) // 2


def test_fonts_are_embedded(renderer, tmp_path) -> None:
    path = tmp_path / "f.pdf"
    path.write_bytes(renderer.render(normalise(_chat(["ciao", "您好", "Здравствуйте"]))).data)
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True).stdout.splitlines()[2:]
    assert fonts and all(line.split()[-5] == "yes" for line in fonts), fonts  # the "emb" column
    assert not any("Helvetica" in line for line in fonts)


def test_markup_in_messages_stays_literal(renderer, tmp_path) -> None:
    hostile = ['<img src="/etc/passwd"/> <font size=80>big</font>', '<a href="javascript:alert(1)">x</a> &amp; <b>b</b>',
               "<para>broken &lt; </para> ]]> <br/>", '"><script>alert(1)</script>']
    extracted = _flat(_text(renderer.render(normalise(_chat(hostile))).data, tmp_path))
    for text in hostile:
        assert _flat(text) in extracted


def test_missing_glyphs_become_counted_placeholders(renderer, tmp_path) -> None:
    out = renderer.render(normalise(_chat(["smile 😀 and bell \x07 end", "zero\u200bwidth"])))
    extracted = _text(out.data, tmp_path)
    assert "[U+1F600]" in extracted and "[U+0007]" in extracted and "[U+200B]" in extracted
    assert out.placeholders == 3
    assert re.search(r"shown as \[U\+XXXX\]\)\s+3", extracted)


def test_header_events_and_failures_are_visible(renderer, tmp_path) -> None:
    chat, contact = make_chat(random.Random(2), messages=6)
    chat["messages"][0]["data"].update(deliverySuccess=False, deliveryErrorReason="recipient unreachable")
    chat["messages"][1]["data"].update(messageType="LINK", content={"url": "https://example.com/a?b=1&c=2",
                                                                     "user": {"id": "x", "isAgent": False}})
    chat["messages"][2]["data"].update(messageType="IMAGE", content={"url": "javascript:alert(1)"})
    chat["messages"][3]["data"]["ts"] = None
    chat["messages"][4]["data"]["id"] = chat["messages"][3]["data"]["id"]
    pdf = renderer.render(normalise(chat, contact)).data
    text = _flat(_text(pdf, tmp_path))
    for expected in [chat["room"], "Messages 6", "NOT DELIVERED: recipient unreachable", "Failed deliveries 1",
                     "https://example.com/a?b=1&c=2", "javascript:alert(1)", "time unknown", "same id as message #4",
                     "Chat closed by USER_", "Page 1 of 1", contact["serv_name"]]:
        assert expected in text, expected
    assert b"/URI (https://example.com/a?b=1&c=2)" in pdf
    assert b"javascript" not in pdf.split(b"/URI")[-1][:40] or pdf.count(b"/URI") == 1


def test_interim_and_abandoned_are_unmistakable(renderer, tmp_path) -> None:
    chat = _chat(["still talking"])
    assert "INTERIM: this chat had not ended" in _text(renderer.render(normalise(chat, status="interim")).data, tmp_path)
    assert "ABANDONED" in _text(renderer.render(normalise(chat, status="abandoned")).data, tmp_path)


def test_long_words_long_texts_and_newlines(renderer, tmp_path) -> None:
    word = "x" * 10_000
    novel = ("Lorem ipsum dolor sit amet. " * 4000).strip()
    out = renderer.render(normalise(_chat([word, novel, "first line\nsecond line"])))
    text = _text(out.data, tmp_path)
    assert text.count("x") >= 10_000
    assert "first line\nsecond line" in text
    assert re.search(r"Page \d+ of (\d+)", text).group(1) == str(text.count("\f"))


def test_twenty_thousand_messages(renderer, tmp_path) -> None:
    chat, contact = make_chat(random.Random(3), messages=20_000)
    started = time.perf_counter()
    out = renderer.render(normalise(chat, contact))
    elapsed = time.perf_counter() - started
    text = _text(out.data, tmp_path)
    assert "#20000 ·" in text and "Messages 20000" in _flat(text)
    assert elapsed < 120, f"20,000 messages took {elapsed:.0f} s"


def test_italian_template_translates_without_code(tmp_path) -> None:
    text = _flat(_text(PdfRenderer(ITALIAN).render(normalise(SEED_CHAT)).data, tmp_path))
    assert "Trascrizione della chat" in text and "Chat chiusa da USER_gverde1@acd.enghouse.com" in text
    assert "Pagina 1 di 1" in text


def test_bad_template_and_missing_font_say_what_and_where(tmp_path) -> None:
    broken = tmp_path / "t.toml"
    broken.write_text(DEFAULT_TEMPLATE.read_text().replace("[labels]", "[labelz]"))
    with pytest.raises(TemplateError, match=r"section \[labels\] is missing"):
        PdfRenderer(broken)
    no_font = tmp_path / "f.toml"
    no_font.write_text(DEFAULT_TEMPLATE.read_text().replace("DejaVuSans-Bold.ttf", "Nope-Bold.ttf"))
    with pytest.raises(TemplateError, match=r"fonts.bold .*Nope-Bold.ttf: cannot load.*fonts-dejavu-core"):
        PdfRenderer(no_font)


def test_no_break_spaces_hold_words_together(renderer) -> None:
    style = renderer.styles["body"]
    for text in ["x 100\u00a0km", "x 5\u202f000"]:
        width = pdfmetrics.stringWidth(text, style.font, style.size) - 1  # just too narrow for the whole
        lines = wrap([Run(text, style)], width, style.leading)
        assert ["".join(run.text for _, run in line.runs) for line in lines] == ["x ", text[2:]]


def test_the_footer_draws_any_room_id_and_never_runs_into_the_page_number(renderer, tmp_path) -> None:
    room = "客服-" + "房间" * 200 + "\x07"
    pdf = renderer.render(normalise(_chat(["Lorem ipsum dolor sit amet. " * 400], room=room, _id=room))).data
    (tmp_path / "f.pdf").write_bytes(pdf)
    second = subprocess.run(["pdftotext", "-f", "2", "-l", "2", "-layout", "-enc", "UTF-8", str(tmp_path / "f.pdf"),
                             "-"], capture_output=True, text=True, check=True).stdout
    footer = [line for line in second.splitlines() if "Page 2 of" in line]
    assert footer and "客服-房间房间" in footer[0], "CJK room id drawn in a font that has it"
    assert re.search(r"房间\s+Page 2 of \d+$", footer[0].strip()), "cut before the page number"

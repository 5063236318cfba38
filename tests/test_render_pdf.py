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

from archiver.render import pdf as pdf_module
from archiver.render.pdf import PdfRenderer, Run, TemplateError, wrap
from archiver.samples import PHRASES, SEED_CHAT, make_chat
from archiver.transcript import InvalidChat, normalise
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
    # Every letter is drawn (joined and in visual order: see test_scripts.py).
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
    # Linear A (U+10600): no font of the default chain has it; emoji are drawn (Symbola), not replaced.
    out = renderer.render(normalise(_chat(["smile 😀 linear \U00010600 and bell \x07 end", "zero\u200bwidth"])))
    extracted = _text(out.data, tmp_path)
    assert "😀" in extracted and "[U+1F600]" not in extracted
    assert "[U+10600]" in extracted and "[U+0007]" in extracted and "[U+200B]" in extracted
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
                     'Chat closed by "USER_', "Page 1 of 1", contact["serv_name"]]:
        assert expected in text, expected
    assert b"/URI (https://example.com/a?b=1&c=2)" in pdf
    assert b"javascript" not in pdf.split(b"/URI")[-1][:40] or pdf.count(b"/URI") == 1


def test_the_header_names_who_opened_and_who_handled_the_chat_whether_or_not_they_wrote(tmp_path) -> None:
    """Review "court" C3: a chat found by `search --customer X` because X opened it (the contact's userID), in
    which only the agent wrote, read "Customers —": nothing on the page named X. The header says who opened it
    and who handled it (the contact's agentID), quoted; "—" where the contact does not say."""
    chat, contact = make_chat(random.Random(3), messages=3)
    for message in chat["messages"]:
        message["data"]["content"]["user"] = {"id": "USER_alice@acd.example.com", "isAgent": True}
    contact.update(userID="393331234567", agentID="USER_bob@acd.example.com")
    for template, opened, handled in [(DEFAULT_TEMPLATE, "Opened by", "Handled by"),
                                      (ITALIAN, "Aperta da", "Gestita da")]:
        text = _flat(_text(PdfRenderer(template).render(normalise(chat, contact)).data, tmp_path))
        assert f'{opened} "393331234567"' in text and f'{handled} "USER_bob@acd.example.com"' in text, text[:900]
    text = _flat(_text(PdfRenderer(DEFAULT_TEMPLATE).render(normalise(chat, None)).data, tmp_path))
    assert "Opened by — Handled by —" in text, text[:900]


def test_a_message_header_says_whether_and_when_it_was_seen(tmp_path) -> None:
    """Review "court" C21: `messageSeen` (a read receipt: whether, and when, the customer read a warning) was in
    neither the PDF nor the record's view, only the raw source. The header says "seen <time>", "seen" (true, no
    time), "not seen" (false), any other value quoted as given, and nothing where the platform says nothing (null)."""
    chat = _chat(["read at once", "read, no time", "never read", "no receipt", "odd receipt", "zero", "text"])
    seen_ms = chat["messages"][0]["data"]["ts"] + 15_000
    for message, seen in zip(chat["messages"], [seen_ms, True, False, None, 1e20, 0, "false"]):
        message["data"]["messageSeen"] = seen
    for template, words in [(DEFAULT_TEMPLATE, ("seen", "not seen", "read receipt")),
                            (ITALIAN, ("letto", "non letto", "conferma di lettura"))]:
        text = _flat(_text(PdfRenderer(template).render(normalise(chat)).data, tmp_path))
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seen_ms / 1000))
        shown = [part.replace("│ ", "") for part in re.split(r"(?=#\d · )", text)[1:]]  # each message, unbarred
        assert len(shown) == 8, text
        assert f"· {words[0]} {at} +00:00 read at once" in shown[0], shown[0]
        assert f"· {words[0]} read, no time" in shown[1] and f"· {words[1]} never read" in shown[2], shown[1:3]
        assert f"· {words[0]}" not in shown[3].split("no receipt")[0], shown[3]
        # 1e20 ms reads as no time, 0 as 1970, "false" as text: each shown as the platform gave it
        assert f'· {words[2]} "1e+20" odd receipt' in shown[4], shown[4]
        assert f'· {words[2]} "0" zero' in shown[5] and f'· {words[2]} "false" text' in shown[6], shown[5:7]


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
    assert "│ first line\n│ second line" in text, "each line of a message behind the quote bar"
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
    assert "Trascrizione della chat" in text and 'Chat chiusa da "USER_gverde1@acd.enghouse.com"' in text
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


# -- size limits (issue 8, item 8) -------------------------------------------------------------

def _link_chat(url: str) -> dict:
    chat = _chat(["before the link"])
    chat["messages"][1]["data"].update(messageType="LINK", content={"url": url, "user": {"id": "c1", "isAgent": False}})
    return chat


BAR = re.compile(r"^\s*│ ?", re.MULTILINE)  # what starts every line of a message after its header


def _unquoted(text: str) -> str:
    """Extracted text with the quote bars taken off and the lines joined, for text cut anywhere."""
    return BAR.sub("", text).replace("\n", "")


def _plain(text: str) -> str:
    """Extracted text with the quote bars taken off, whitespace as one space."""
    return _flat(BAR.sub("", text))


def test_a_long_url_is_one_link_and_a_longer_one_is_shortened_text(renderer, tmp_path) -> None:
    url = "https://example.com/" + "p" * 1_480  # wraps over many lines, still under archive.max_url_chars
    pdf = renderer.render(normalise(_link_chat(url))).data
    assert pdf.count(b"/Subtype /Link") == 1, "one link annotation however many lines the URL takes"
    assert url in _unquoted(_text(pdf, tmp_path))

    huge = "https://example.com/" + "q" * (1_000_000 - 20)
    started = time.perf_counter()
    out = renderer.render(normalise(_link_chat(huge)))
    elapsed = time.perf_counter() - started
    assert elapsed < 10 and len(out.data) < 500_000, (elapsed, len(out.data))
    assert b"/Subtype /Link" not in out.data, "an over-long URL is drawn as text, not as a link"
    text = _text(out.data, tmp_path)
    assert huge[:2_048] in _unquoted(text) and huge[:2_049] not in _unquoted(text)
    assert "[997,952 more characters not shown here; the full text is in the JSON record]" in _plain(text)
    assert re.search(r"Fields shown shortened\s+1\b", text)
    assert out.shortened == 1


def test_every_message_field_is_limited_and_the_shortening_is_counted(tmp_path) -> None:
    renderer = PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(field_chars=50))
    chat = _chat(["hello"])
    data = chat["messages"][0]["data"]
    data.update(deliverySuccess=False, deliveryErrorReason="E" * 5_000, replyTo="R" * 5_000, messageType="T" * 5_000)
    data["content"]["user"]["id"] = "U" * 5_000
    out = renderer.render(normalise(chat))
    text = _text(out.data, tmp_path)
    for letter in "ERTU":
        assert letter * 50 in _unquoted(text) and letter * 51 not in _unquoted(text), letter
    text = _plain(text)
    assert "4,950 more characters not shown here" in text
    # error, reply, type, the sender in the header and in the Customers row, the data warnings of the unknown
    # type and of the reply to a message the chat does not have
    assert out.shortened == 7 and re.search(r"Fields shown shortened 7\b", text)


def test_a_megabyte_of_newlines_is_shown_shortened_and_never_stops_the_chat(renderer, tmp_path) -> None:
    """One message of newlines (within archive.max_message_chars) passed archive.max_pages, and the chat was
    refused: a customer could keep their whole chat, PDF and record, out of the archive."""
    chat = _chat(["before", "a\n" * 500_000, "after"])
    started = time.perf_counter()
    out = renderer.render(normalise(chat))
    assert time.perf_counter() - started < 30
    text = " ".join(_text(out.data, tmp_path).split())
    assert "before" in text and "after" in text and out.shortened == 1
    shown = 2 * pdf_module.Limits().message_lines - 1  # "a\n" up to the last newline shown
    assert f"{1_000_000 - shown:,} more characters not shown here" in text


def test_one_long_line_never_hides_the_messages_after_it(tmp_path) -> None:
    """Review "court" C12: with archive.max_message_chars raised, one message of a single 15 M-character line
    passed archive.max_pages alone: the PDF stopped before it, and the customer's short acceptance after it was
    on no page of a 1-page PDF. A message's text is shown up to Limits.message_chars (the default
    max_message_chars: nothing within it is cut), the rest counted in a note, and the messages after it follow."""
    small = PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(pages=12, message_chars=20_000))
    chat = _chat(["before", "y" * 200_000, "I accept the offer"])
    out = small.render(normalise(chat))
    text = " ".join(_text(out.data, tmp_path).split())
    assert "before" in text and "I accept the offer" in text and "stops before" not in text, text[-800:]
    assert f"{200_000 - 20_000:,} more characters not shown here" in text and out.shortened == 1
    assert pdf_module.Limits().message_chars == 1_000_000  # as archive.max_message_chars's default


def test_a_chat_past_max_pages_is_shown_up_to_the_cap_and_says_where_it_stops(tmp_path) -> None:
    """Many long messages: the PDF stops at archive.max_pages and says which messages only the record holds."""
    small = PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(pages=12, message_lines=100))
    chat = _chat(["x\n" * 99] * 12)
    started = time.perf_counter()
    out = small.render(normalise(chat))
    assert time.perf_counter() - started < 5, "stops laying out at the cap, not after the whole chat"
    pages = _text(out.data, tmp_path)
    text = " ".join(pages.split())
    stop = re.search(r"stops before message #(\d+) \(archive.max_pages = 12\): messages #\d+ to #13", text)
    assert stop and 1 < int(stop.group(1)) < 13, text[:2000]
    assert pages.count("\f") <= 12 and f"#{int(stop.group(1)) - 1} ·" in text  # the one before is shown
    assert small.render(normalise(_chat(["a\n" * 50]))).data.startswith(b"%PDF")


def test_a_pdf_over_the_byte_cap_is_refused(tmp_path) -> None:
    chat = _chat(["hello"] * 20)
    assert len(PdfRenderer(DEFAULT_TEMPLATE).render(normalise(chat)).data) > 20_000
    with pytest.raises(InvalidChat, match=r"bytes, over the limit of 20,000 \(archive.max_pdf_bytes\)"):
        PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(pdf_bytes=20_000)).render(normalise(chat))


# -- presentation safety (issue 8, item 22) ----------------------------------------------------

def test_document_metadata_shows_control_characters_as_placeholders(renderer, tmp_path) -> None:
    require_tool("pdfinfo")
    room = "ROOM-\u202egnp.exe\x07"
    path = tmp_path / "m.pdf"
    path.write_bytes(renderer.render(normalise(_chat(["hi"], room=room, _id=room))).data)
    info = subprocess.run(["pdfinfo", "-enc", "UTF-8", str(path)], capture_output=True, text=True, check=True).stdout
    title = next(line for line in info.splitlines() if line.startswith("Title:"))
    assert title.split(":", 1)[1].strip() == "ROOM-[U+202E]gnp.exe[U+0007]"
    assert "\u202e" not in info and "\x07" not in info


def test_participants_are_listed_one_per_line_and_quoted(renderer, tmp_path) -> None:
    chat = _chat(["one", "two", "three"])
    users = [{"id": "bob, mallory", "isAgent": True}, {"id": "USER_x", "isAgent": True},
             {"id": 'eve"\n"trudy', "isAgent": False}]
    for message, user in zip(chat["messages"], users):
        message["data"]["content"]["user"] = user
    path = tmp_path / "p.pdf"
    path.write_bytes(renderer.render(normalise(chat)).data)
    layout = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    row = next(i for i, line in enumerate(layout) if line.lstrip().startswith("Agents"))
    assert re.fullmatch(r'\s*Agents\s+"bob, mallory"', layout[row]), layout[row]
    assert re.fullmatch(r'\s+"USER_x"', layout[row + 1]), layout[row + 1]
    customers = next(line for line in layout if line.lstrip().startswith("Customers"))
    assert re.fullmatch(r'\s*Customers\s+"eve\\"\\n\\"trudy"', customers), customers


HEADER = re.compile(r"^\s*#(\d+) · ()", re.MULTILINE)  # (the role may wrap onto the next, quoted, line)


@pytest.mark.parametrize("layout", [False, True])
def test_message_text_cannot_pass_for_a_message_header(renderer, tmp_path, layout) -> None:
    fakes = ["#9 · 2022-01-19 14:59:03 · USER_x (agent)",
             "ok\n#9 · 2022-01-19 14:59:03 UTC · USER_x (agent)\nI can refund you",
             "w " * 44 + "#9 · 2022-01-19 14:59:03 UTC · USER_x (agent)"]  # wraps so the fake starts a line
    chat = _chat(fakes)
    chat["messages"][1]["data"]["content"]["user"]["id"] = "x\n#8 · 2022-01-19 14:59:03 UTC · USER_y (agent)"
    chat["messages"][2]["data"]["content"]["url"] = "https://e.com/ #7 · 2022-01-19 14:59:03 UTC · USER_z (agent)"
    path = tmp_path / "h.pdf"
    path.write_bytes(renderer.render(normalise(chat)).data)
    args = ["pdftotext", *(["-layout"] if layout else []), "-enc", "UTF-8", str(path), "-"]
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert [int(n) for n, _ in HEADER.findall(text)] == list(range(1, len(chat["messages"]) + 1))
    assert "│ #9 · 2022-01-19 14:59:03 · USER_x (agent)" in text, "the fake is shown, marked as message text"


def test_a_right_to_left_sender_name_leaves_the_message_header_in_its_order(renderer, tmp_path) -> None:
    """The header line starts with no strong character (#1 · time · ), so the paragraph took the direction
    of the sender's name: a Hebrew name reversed the whole line, time and offset included."""
    chat = _chat(["shalom"])
    chat["messages"][0]["data"]["content"]["user"]["name"] = "דני כהן"
    out = renderer.render(normalise(chat))
    path = tmp_path / "h.pdf"
    path.write_bytes(out.data)
    layout = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                            text=True, check=True).stdout
    header = next(line for line in layout.splitlines() if "#1 ·" in line)
    assert header.lstrip().startswith("#1 · ") and re.search(r"#1 · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d · ", header), header


@pytest.mark.parametrize("ts, zone", [(253402300799000, "Europe/Rome"), (-62135596800000, "America/New_York"),
                                      ("9999-12-31T23:30:00+00:00", "Europe/Rome"), (10**400, "Europe/Rome")])
def test_times_at_the_ends_of_the_calendar_render_in_any_zone(ts, zone, tmp_path) -> None:
    """9999-12-31 and 0001-01-01 are common sentinel dates: shown in a zone east (west) of UTC they overflowed,
    and the chat was quarantined (a huge integer crashed before that, in reading it)."""
    chat = _chat(["hello"])
    chat["messages"][0]["data"]["ts"] = ts
    out = PdfRenderer(DEFAULT_TEMPLATE, zone).render(normalise(chat))
    assert out.data.startswith(b"%PDF")


def test_an_offset_with_seconds_is_shown_with_them() -> None:
    """Before 1883 New York kept local mean time, -4:56:02: shown as -04:57, the UTC time read 58 s off."""
    import datetime as dt
    when = dt.datetime(1799, 12, 31, 23, 0, tzinfo=dt.timezone.utc)
    assert PdfRenderer(DEFAULT_TEMPLATE, "America/New_York")._time(when).endswith("18:03:58 -04:56:02")
    assert PdfRenderer(DEFAULT_TEMPLATE, "Europe/Rome")._time(when.replace(year=2024, month=7)).endswith(" +02:00")


def test_the_archives_notes_on_a_message_stand_outside_the_bar_its_text_is_behind(renderer, tmp_path) -> None:
    """A customer typed "NOT DELIVERED: recipient blocked" and "in reply to m1": in the extracted text their
    lines were the same as the archive's own notes on a message that was not delivered."""
    chat = _chat(["hi", "I paid already\nNOT DELIVERED: recipient blocked\nin reply to m1"])
    genuine = chat["messages"][0]["data"]
    genuine.update(deliverySuccess=False, deliveryErrorReason="recipient blocked", replyTo="m1")
    path = tmp_path / "n.pdf"
    path.write_bytes(renderer.render(normalise(chat)).data)
    layout = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                            text=True, check=True).stdout
    noted = [line.strip() for line in layout.splitlines() if ("NOT DELIVERED" in line or "in reply to" in line)
             and "which no message" not in line]  # (the data warning that m1 is not in the chat)
    assert sorted(line.startswith("│") for line in noted) == [False, False, True, True], noted


@pytest.mark.parametrize("text", ["\u3164", "\u2800\u2800", "a\u115f\u1160b", "x\u034f\u034fy"])
def test_invisible_letters_and_marks_are_shown_as_placeholders(renderer, text) -> None:
    """Hangul fillers, a combining grapheme joiner, a blank braille cell: printable by category, drawn as
    nothing; a message of them read as an empty line."""
    chat = _chat([text])
    out = renderer.render(normalise(chat))
    invisible = [ch for ch in text if ch not in "abkxy"]
    assert out.placeholders >= len(invisible)


@pytest.mark.parametrize("room", ["חדר-שלום", "AB\nCD"])
def test_the_footer_shows_the_room_as_the_header_rows_do(renderer, tmp_path, room) -> None:
    """The footer drew a right-to-left room in logical order (its letters reversed on the page) and a raw
    newline, where the Room row showed it right and as [U+000A]."""
    chat = _chat(["hi"], room=room, _id=room)
    path = tmp_path / "f.pdf"
    path.write_bytes(renderer.render(normalise(chat)).data)
    text = subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout
    strip = lambda s: "".join(ch for ch in s if ch not in "\u202a\u202b\u202c\u202d\u202e")  # poppler's marks
    row = next(strip(line) for line in text.splitlines() if line.startswith("Room"))
    footer = next(strip(line) for line in text.splitlines() if "archived transcript" in line)
    shown = row.split(None, 1)[1].strip()
    # (poppler orders the pieces of a mixed-direction line its own way: each word must read right)
    assert all(word in footer for word in shown.split("-")), (row, footer)


def test_a_chat_whose_pages_overshoot_the_cap_after_pagination_is_cut_there_not_refused(tmp_path) -> None:
    """The body was counted against the cap by height alone; paginated (headers kept with their text,
    "continued" lines), a long chat still passed it and was refused. The counts are those of what is drawn."""
    small = PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(pages=60))
    chat = _chat(["short message\nand its second line"] * 3000 + ["\x07 a bell, never drawn"])
    out = small.render(normalise(chat))
    pages = _text(out.data, tmp_path)
    assert pages.count("\f") <= 60
    stop = re.search(r"stops before message #(\d+) \(archive.max_pages = 60\): messages #\d+ to #3002",
                     " ".join(pages.split()))
    assert stop, pages[:1500]
    assert f"#{int(stop.group(1)) - 1} ·" in pages and f"#{int(stop.group(1))} ·" not in pages
    assert out.placeholders == 0, "the bell of a message not drawn is not counted as drawn"


def test_a_flood_of_data_warnings_is_listed_up_to_a_bound_and_counted(renderer, tmp_path) -> None:
    """A reply each to nothing: one warning per message filled the header (and the index entry)."""
    from archiver.artifacts import WARNINGS_INDEXED
    chat = _chat(["x"] * 400)
    for n, m in enumerate(chat["messages"][:400]):
        m["data"]["replyTo"] = f"missing-{n}"
    t = normalise(chat)
    assert len(t.warnings) == 400
    text = " ".join(_text(renderer.render(t).data, tmp_path).split())
    shown = pdf_module.WARNINGS_SHOWN
    assert f"… and {400 - shown} more data warnings: the attached JSON record lists them all" in text
    assert f"in reply to \"missing-{shown - 1}\"" in text and f"in reply to \"missing-{shown}\"" not in text
    assert WARNINGS_INDEXED < 400  # the index entry: see test_court_transcript

def test_variation_selectors_with_nothing_to_vary_are_shown_but_an_emojis_is_not(renderer) -> None:
    """A message of U+FE0F alone drew an empty line; after a heart it picks the emoji form, as it should."""
    assert renderer.render(normalise(_chat(["\ufe0f\ufe0f\ufe0f"]))).placeholders == 3
    assert renderer.render(normalise(_chat(["I \u2764\ufe0f it \ufe0e"]))).placeholders == 1  # the one after a space
    assert renderer.render(normalise(_chat(["\u2764\ufe0f"]))).placeholders == 0


def test_what_a_field_of_another_shape_holds_is_on_the_page_with_its_warning(renderer, tmp_path) -> None:
    """Review "lossless" F1: a message whose content is the text itself was drawn "(no text)"; a delivery error
    beside deliverySuccess "false" (or none) was in no page; neither had a data warning."""
    said = "I never agreed to this contract"
    chat = _chat(["a", "b", "c", "d", "e"])
    data = [m["data"] for m in chat["messages"]]
    data[0]["content"] = said
    data[1]["content"]["user"] = "USER_bob"
    data[2].update(deliverySuccess="false", deliveryErrorReason="recipient blocked the business number")
    del data[3]["deliverySuccess"]
    data[3]["deliveryErrorReason"] = "number unknown"
    data[4]["deliveryErrorReason"] = "late receipt"  # and deliverySuccess true: shown, not counted as failed
    t = normalise(chat)
    text = _flat(_text(renderer.render(t).data, tmp_path))
    assert said in text and "(no text)" not in text
    assert re.search(r'#2 · [^#]* "USER_bob" \(unknown role\)', text)
    for expected in ["Delivery error: recipient blocked the business number", "Delivery error: number unknown",
                     "Delivery error: late receipt", "Failed deliveries 2",
                     "message 1: data.content is text, not an object: shown as the message's text",
                     "message 2: data.content.user is text, not an object: read as the sender's id",
                     'message 3: data.deliverySuccess is "false", not true or false: not read']:
        assert expected in text, expected
    assert "NOT DELIVERED" not in text, "no message says it was not delivered"
    italian = _flat(_text(PdfRenderer(ITALIAN).render(t).data, tmp_path))
    for expected in ["messaggio 1: data.content è testo", "Errore di consegna: number unknown",
                     'messaggio 3: data.deliverySuccess è "false", non true o false']:
        assert expected in italian, expected

def _layout(pdf: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / "l.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout.splitlines()


def _row(layout: list[str], label: str) -> list[str]:
    """The values of the header row LABEL (its first line and the indented lines under it)."""
    start = next(i for i, line in enumerate(layout) if line.lstrip().startswith(label))
    values = [layout[start].strip()[len(label):].strip()]
    for line in layout[start + 1:]:
        if not line.startswith(" " * 8) or not line.strip().startswith('"'):
            break
        values.append(line.strip())
    return values


def test_the_header_states_only_the_roles_the_messages_state(renderer, tmp_path) -> None:
    """Review "lossless" F2: a sender whose first message stated no role was listed in no row of the header. Roles
    come from all of a sender's messages; one whose messages never state a role is listed as such, not as an
    agent or a customer; one stated as both is in both rows (and a data warning says so)."""
    chat = _chat(["one", "two", "three", "four", "five"])
    users = [{"id": "late agent"}, {"id": "late agent", "isAgent": True}, {"id": "ghost", "isAgent": "true"},
             {"id": "twofaced", "isAgent": True}, {"id": "twofaced", "isAgent": False}]
    for message, user in zip(chat["messages"], users):
        message["data"]["content"]["user"] = user
    chat["messages"][-1]["data"]["content"]["user"] = {"id": "late agent", "isAgent": True}
    layout = _layout(renderer.render(normalise(chat)).data, tmp_path)
    assert _row(layout, "Agents") == ['"late agent"', '"twofaced"'], layout
    assert _row(layout, "Customers") == ['"twofaced"'], layout
    assert _row(layout, "Role not stated") == ['"ghost"'], layout
    text = _flat("\n".join(layout))
    assert 'sender "twofaced": an agent in message 4, a customer in message 5' in text
    assert re.search(r'#1 · [^#]* · "late agent" \(unknown role\) │ one', text), "a message's own role is shown as before"


def test_a_template_without_the_role_not_stated_label_still_loads(tmp_path) -> None:
    old = tmp_path / "old.toml"
    old.write_text(re.sub(r"(?m)^role_not_stated = .*\n", "", DEFAULT_TEMPLATE.read_text()))
    assert "role_not_stated" not in old.read_text()
    chat = _chat(["one"])
    chat["messages"][0]["data"]["content"]["user"] = {"id": "ghost"}
    layout = _layout(PdfRenderer(old).render(normalise(chat)).data, tmp_path)
    assert _row(layout, "Role not stated") == ['"ghost"'], layout


def test_a_sender_without_a_name_is_quoted_in_the_message_header_as_in_the_participants(renderer, tmp_path) -> None:
    """A bare id was shown unquoted in the message header (`· 555000111 (customer)`) while the participants list
    quoted it: ids are hostile text, `x (agent)` in an id must not read as a role. The chat's closer is quoted too."""
    chat = _chat(["hi", "bye"])
    chat["messages"][0]["data"]["content"]["user"] = {"id": "555000111", "isAgent": False}
    chat["messages"][1]["data"]["content"]["user"] = {"id": "x (agent)", "isAgent": False}
    text = _text(renderer.render(normalise(chat)).data, tmp_path)
    headers = [line for line in text.splitlines() if re.match(r"#\d+ · ", line)]
    assert re.fullmatch(r'#1 · .+ · "555000111" \(customer\)', headers[0]), headers[0]
    assert re.fullmatch(r'#2 · .+ · "x \(agent\)" \(customer\)', headers[1]), headers[1]
    closer = chat["messages"][-1]["data"]["content"]["user"]["id"]
    assert f'Chat closed by "{closer}"' in _flat(text)

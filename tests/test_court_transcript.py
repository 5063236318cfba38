"""Issue 11: the transcript a court reads: names, events, truthful status, warnings, archive block,
localisation, keep-together, and the signed record attached to a PDF/A-3b file."""

from __future__ import annotations

import json
import random
import re
import subprocess
from pathlib import Path

import pikepdf
import pytest

from archiver import config as config_module
from archiver.artifacts import ArtifactBuilder
from archiver.claims import now
from archiver.config import DEFAULT_TEMPLATE
from archiver.render.pdf import PdfRenderer
from archiver.render.record import build_record
from archiver.samples import make_chat
from archiver.transcript import normalise
from conftest import require_tool

ITALIAN = DEFAULT_TEMPLATE.with_name("transcript.it.toml")
MS = 1642604343631.0


@pytest.fixture(scope="module")
def renderer() -> PdfRenderer:
    return PdfRenderer(DEFAULT_TEMPLATE)


def _pdftotext(pdf: bytes, tmp_path: Path, *args: str) -> str:
    require_tool("pdftotext")
    path = tmp_path / "c.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", *args, "-enc", "UTF-8", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def _flat(text: str) -> str:
    """TEXT on one line; a message header that wrapped (onto a quoted line) joined again."""
    return re.sub(r"\s+", " ", re.sub(r"\n│ ", " ", text))


def _named_chat() -> tuple[dict, dict]:
    chat, contact = make_chat(random.Random(5), messages=5)
    agent = chat["messages"][1]["data"]["content"]["user"]["id"]
    customer = chat["messages"][0]["data"]["content"]["user"]["id"]
    contact["users"] = {customer: {"nickname": "Maria Rossi", "channel": "web"}}
    chat["messages"][1]["data"]["content"]["user"]["name"] = "Gabriele Verde"  # a name carried in a message
    contact["contact_events"] = [
        {"event": "newContactAccepted", "ts": MS + 1, "origin": "acd"},
        {"event": "contactTransferred", "ts": chat["messages"][1]["data"]["ts"] + 1, "origin": "acd",
         "to": "USER_x, USER_y"},
        {"event": "clientError", "ts": chat["messages"][2]["data"]["ts"] + 1, "origin": "widget"},
        {"event": "agentJoined", "ts": "not a time", "origin": "acd"},
    ]
    return chat, contact | {"agentID": agent}


def test_people_are_shown_by_name_and_id_in_the_header_and_each_message(renderer, tmp_path) -> None:
    chat, contact = _named_chat()
    t = normalise(chat, contact)
    text = _flat(_pdftotext(renderer.render(t).data, tmp_path))
    customer, agent = t.customers[0], t.agents[0]
    assert f'Customers "Maria Rossi" ("{customer}")' in text
    assert f'Agents "Gabriele Verde" ("{agent}")' in text
    assert f'Closed by "Gabriele Verde" ("{agent}")' in text
    assert f'· "Maria Rossi" ("{customer}") (customer)' in text
    assert f'· "Gabriele Verde" ("{agent}") (agent)' in text
    view = json.loads(build_record(t, chat, contact, version=1, generated_at=now())[0])["transcript"]
    assert {p["user_id"]: p["display_name"] for p in view["participants"]} == {customer: "Maria Rossi",
                                                                                 agent: "Gabriele Verde"}
    assert view["messages"][1]["sender_name"] == "Gabriele Verde" and view["messages"][0]["sender_name"] == ""


def test_a_name_or_id_with_separators_stays_one_unambiguous_person(renderer, tmp_path) -> None:
    chat, contact = make_chat(random.Random(6), messages=3)
    for m in chat["messages"]:
        if not m["data"]["content"]["user"]["isAgent"]:
            m["data"]["content"]["user"].update(id="bob, mallory", name='Eve ("x"), "y"')
    text = _flat(_pdftotext(renderer.render(normalise(chat, contact)).data, tmp_path))
    assert 'Customers "Eve (\\"x\\"), \\"y\\"" ("bob, mallory")' in text


def test_contact_events_are_system_lines_in_time_order_and_in_the_record(renderer, tmp_path) -> None:
    chat, contact = _named_chat()
    t = normalise(chat, contact)
    text = _flat(_pdftotext(renderer.render(t).data, tmp_path))
    order = [text.index(s) for s in ('Contact accepted "newContactAccepted" · origin "acd"', "#1 ·", "#2 ·",
                                     'Transferred "contactTransferred" · origin "acd" · to "USER_x, USER_y"', "#3 ·",
                                     'Event "clientError"', "#4 ·", "#5 ·", 'Joined "agentJoined"')]
    assert order == sorted(order), "events among the messages by time; one without a time at the end"
    assert "contact event 4: unreadable timestamp 'not a time'" in text
    events = json.loads(build_record(t, chat, contact, version=1, generated_at=now())[0])["transcript"]["events"]
    assert [(e["event"], e["kind"]) for e in events] == [
        ("newContactAccepted", "accepted"), ("contactTransferred", "transferred"), ("clientError", ""),
        ("agentJoined", "joined")]
    assert events[1]["details"] == {"to": "USER_x, USER_y"} and events[3]["at"] is None


@pytest.mark.parametrize("status", ["interim", "abandoned"])
def test_an_unfinished_chat_says_not_ended_never_ended(renderer, tmp_path, status) -> None:
    chat, contact = make_chat(random.Random(7), messages=4, ended=False)
    t = normalise(chat, contact, status=status)
    text = _flat(_pdftotext(renderer.render(t).data, tmp_path))
    assert re.search(r"Ended not ended; last message 2022-01-19 \d\d:\d\d:\d\d \+00:00", text)
    record = json.loads(build_record(t, chat, contact, version=1, generated_at=now())[0])["transcript"]
    assert record["ended_at"] is None and record["last_message_at"].startswith("2022-01-19T")
    ended = normalise(*make_chat(random.Random(7), messages=4))
    assert ended.ended_at is not None


def test_data_warnings_are_in_the_header(renderer, tmp_path) -> None:
    chat, contact = make_chat(random.Random(8), messages=7)
    msgs = chat["messages"]
    msgs[1] = {"_id": "no-data", "room": chat["room"]}
    msgs[3]["data"]["ts"] = msgs[2]["data"]["ts"] - 10_000
    msgs[4]["data"]["id"] = msgs[2]["data"]["id"]
    msgs[5]["data"].update(messageType="STICKER", content={"text": "zz \U00010600", "user": {"id": "c"}})
    contact["endTime"] = msgs[-1]["data"]["ts"] + 3_600_000
    text = _flat(_pdftotext(renderer.render(normalise(chat, contact)).data, tmp_path))
    for warning in ["Data warnings", "message 2: has no data", "message 4: sent before message 3",
                    "message 5: same id as message 3", 'message 6: unknown message type "STICKER"',
                    "the contact's endTime", "differs from the endChat message's time",
                    "1 characters drawn as placeholders"]:
        assert warning in text, warning


def test_every_word_of_the_italian_template_is_translated(tmp_path) -> None:
    import tomllib
    english = tomllib.loads(DEFAULT_TEMPLATE.read_text())["labels"]
    italian = tomllib.loads(ITALIAN.read_text())["labels"]
    same = {k for k in english if italian.get(k) == english[k]} - {"none", "event", "participant"}
    assert set(english) <= set(italian) and not same, same
    renderer = PdfRenderer(ITALIAN, "Europe/Rome")
    chat, contact = _named_chat()
    chat["messages"][2]["data"]["id"] = chat["messages"][1]["data"]["id"]
    text = _flat(_pdftotext(renderer.render(normalise(chat, contact)).data, tmp_path))
    for english_word in ["(agent)", "(customer)", "same id as", "Contact accepted", "Data warnings"]:
        assert english_word not in text, english_word
    assert "(operatore)" in text and "(cliente)" in text and "stesso id del messaggio 2" in text
    assert re.search(r"2022-01-19 15:59:\d\d \+01:00", text), "Rome in January: one hour ahead of UTC"


def test_a_header_never_ends_a_page_and_a_continued_message_says_so(renderer, tmp_path) -> None:
    chat, contact = make_chat(random.Random(9), messages=60)
    for i, m in enumerate(chat["messages"][:-1]):
        lines = "\n".join(f"line {n} of message {i + 1}" for n in range(1 + (i * 7) % 23))
        m["data"].update(messageType="TEXT", content={**m["data"]["content"], "text": lines})
    text = _pdftotext(renderer.render(normalise(chat, contact)).data, tmp_path, "-layout")
    pages = [p for p in text.split("\f") if p.strip()]
    assert len(pages) > 3
    continued = 0
    for page in pages:
        lines = [line.strip() for line in page.splitlines() if line.strip()][:-1]  # without the footer
        assert not re.match(r"#\d+ · ", lines[-1]), f"a page ends with a message header: {lines[-1]}"
        first = lines[0]
        if first.startswith("│"):
            continued += 1
            pytest.fail(f"a page starts inside a message without saying so: {first}")
        match = re.fullmatch(r"#(\d+) continued", first)
        if match:
            continued += 1
            assert f"of message {match.group(1)}" in lines[1]
    assert continued, "some message goes over a page break"


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory):
    config = config_module.load(None, environ={}).with_overrides(**{
        "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"]),
        "encryption.recipients": [str(keys["legal.crt.pem"])],
    })
    builder = ArtifactBuilder.from_config(config, encrypt=False)
    chat, contact = _named_chat()
    chat["messages"][0]["data"].update(messageType="LINK", content={**chat["messages"][0]["data"]["content"],
                                                                     "url": "https://example.com/receipt"})
    plain = builder.plaintext(chat, contact, "ended", 3, now())
    folder = tmp_path_factory.mktemp("signed")
    (folder / "t.pdf").write_bytes(plain.pdf)
    return {"plain": plain, "pdf": folder / "t.pdf", "builder": builder}


def test_the_archive_block_states_what_the_pdf_is(signed, tmp_path) -> None:
    plain, identity = signed["plain"], signed["builder"].signer.identity
    text = _flat(_pdftotext(plain.pdf, tmp_path))
    for expected in ["Archived at", "Version 3 (supersedes version 2)", f"Source SHA-256 {plain.source_sha256}",
                     "Archiver ctlive-archiver", f"Signed by {identity.certificate.subject.rfc4514_string()}",
                     f"Signer certificate SHA-256 {identity.fingerprint}", "To verify: `pdfsig`"]:
        assert expected in text, expected


def test_the_record_is_attached_byte_identical_and_signed_with_the_pdf(signed, tmp_path) -> None:
    require_tool("qpdf")
    require_tool("pdfsig")
    plain, path = signed["plain"], signed["pdf"]
    shown = subprocess.run(["qpdf", "--show-attachment=record.json", str(path)], capture_output=True, check=True)
    assert shown.stdout == plain.record
    with pikepdf.open(path) as pdf:
        [spec] = pdf.Root.AF
        assert spec.AFRelationship == pikepdf.Name.Data
        assert pdf.attachments["record.json"].get_file().read_bytes() == plain.record
        assert str(spec.EF.F.Subtype) == "/application/json"
    report = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout
    assert "Total document signed" in report and "Signature is Valid" in report
    assert subprocess.run(["qpdf", "--check", str(path)], capture_output=True).returncode == 0


def test_a_changed_attachment_breaks_the_signature(signed, tmp_path) -> None:
    data = signed["plain"].pdf
    at = data.index(b"/Type /EmbeddedFile")
    forged = data[:at] + data[at:].replace(b"stream\n", b"stream\n\x00", 1)[: len(data) - at]
    path = tmp_path / "forged.pdf"
    path.write_bytes(forged)
    report = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True).stdout
    assert "Signature is Valid" not in report


def test_pdfa_3b_rules_hold(signed) -> None:
    """The PDF/A-3b rules we can check without a validator (docs/pdfa.md)."""
    with pikepdf.open(signed["pdf"]) as pdf:
        assert "/Encrypt" not in pdf.trailer and len(pdf.trailer.ID) == 2
        meta = pdf.open_metadata()
        assert meta["pdfaid:part"] == "3" and meta["pdfaid:conformance"] == "B"
        info = pdf.docinfo
        assert meta["dc:title"] == str(info.Title) and meta["pdf:Producer"] == str(info.Producer)
        assert str(info.Producer).startswith("ReportLab ") and signed["pdf"].read_bytes().count(b"%%EOF") == 1, "one revision, by reportlab"
        assert meta["xmp:CreatorTool"] == str(info.Creator)
        assert not pdf.Root.Metadata.get("/Filter"), "XMP uncompressed"
        [intent] = pdf.Root.OutputIntents
        assert intent.S == pikepdf.Name.GTS_PDFA1 and intent.DestOutputProfile.N == 3
        assert intent.DestOutputProfile.read_bytes()[36:40] == b"acsp", "an ICC profile"
        fonts, links = 0, 0
        for page in pdf.pages:
            for _, font in page.Resources.get("/Font", {}).items():
                fonts += 1
                assert "/FontFile2" in font.FontDescriptor, f"{font.BaseFont} is not embedded"
            for annot in page.get("/Annots", []):
                links += annot.get("/Subtype") == pikepdf.Name.Link
                assert int(annot.get("/F", 0)) & 4, "annotations print"
            assert "/Group" not in page
        assert fonts and links == 1
        for obj in pdf.objects:
            if isinstance(obj, pikepdf.Dictionary):
                assert "/SMask" not in obj and float(obj.get("/CA", 1)) == 1 and float(obj.get("/ca", 1)) == 1
                assert obj.get("/S") != pikepdf.Name.JavaScript


def test_an_unfinished_chat_stays_findable_by_time_in_the_index(signed) -> None:
    """docs/record.md: the record's ended_at is null, the index entry keeps the last message's time."""
    from archiver.artifacts import index_entry
    chat, contact = make_chat(random.Random(10), messages=4, ended=False)
    plain = signed["builder"].plaintext(chat, contact, "interim", 1, now())
    assert json.loads(plain.record)["transcript"]["ended_at"] is None
    entry = index_entry(plain, 1, now(), 30)
    assert entry["ended_at"] == plain.transcript.last_message_at is not None


def test_an_index_entry_keeps_a_bounded_number_of_data_warnings_and_their_count(signed) -> None:
    """A flood of data warnings (a reply each to nothing) went whole into the index entry, toward 16 MB."""
    from archiver.artifacts import WARNINGS_INDEXED, index_entry
    chat, contact = make_chat(random.Random(10), messages=WARNINGS_INDEXED + 50)
    for n, m in enumerate(chat["messages"]):
        m["data"]["replyTo"] = f"missing-{n}"
    plain = signed["builder"].plaintext(chat, contact, "ended", 1, now())
    entry = index_entry(plain, 1, now(), 30)
    assert len(entry["warnings"]) == WARNINGS_INDEXED and entry["warnings_total"] == len(plain.transcript.warnings)
    assert len(json.loads(plain.record)["transcript"]["warnings"]) == entry["warnings_total"]  # all in the record


def test_a_flood_of_contact_events_counts_against_the_page_limit_and_is_named(tmp_path) -> None:
    from archiver.render import pdf as pdf_module
    renderer = PdfRenderer(DEFAULT_TEMPLATE, limits=pdf_module.Limits(pages=7))
    chat, contact = make_chat(random.Random(11), messages=2)
    contact["contact_events"] = [{"event": "ping", "ts": MS + i, "origin": "x"} for i in range(500)]
    out = renderer.render(normalise(chat, contact))  # never a refused chat: the record holds them all
    path = tmp_path / "e.pdf"
    path.write_bytes(out.data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    shown = text.count('"ping"')
    assert 0 < shown < 500 and f"{500 - shown} contact events are not shown (archive.max_pages = 7)" in " ".join(text.split())


def test_a_field_of_another_shape_is_warned_of_in_record_index_and_pdf_after_redaction(signed, tmp_path) -> None:
    """Review "lossless" F1, end to end: the warning is made from the redacted copies (a card in a field of
    another shape is masked in it too) and reaches the record, the index entry and the PDF; the message's
    text reaches only the PDF and record, never the index."""
    from archiver.artifacts import index_entry
    chat, contact = make_chat(random.Random(11), messages=4)
    said = "I never agreed to this contract"
    data = [m["data"] for m in chat["messages"]]
    data[0]["content"] = said
    data[1]["content"]["user"]["isAgent"] = "card 4111 1111 1111 1111"
    data[2].update(deliverySuccess="no", deliveryErrorReason="recipient blocked")
    plain = signed["builder"].plaintext(chat, contact, "ended", 1, now())
    record = json.loads(plain.record)["transcript"]
    codes = [(w["code"], w.get("field")) for w in record["warning_codes"]]
    assert codes == [("content_text", None), ("not_boolean", "data.content.user.isAgent"),
                     ("not_boolean", "data.deliverySuccess")]
    entry = index_entry(plain, 1, now(), 30)
    assert entry["warnings"] == record["warnings"] and entry["failed_deliveries"] == 1
    assert 'message 2: data.content.user.isAgent is "card 4111 11•• •••• 1111"' in entry["warnings"][1]
    assert "4111 1111 1111 1111" not in json.dumps(entry, default=str) and said not in json.dumps(entry, default=str)
    text = _flat(_pdftotext(plain.pdf, tmp_path))
    assert said in text and "message 1: data.content is text" in text and "Delivery error: recipient blocked" in text

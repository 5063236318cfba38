"""Redaction end to end: nothing of a card number reaches a stored byte, the index or the logs."""

from __future__ import annotations

import copy
import json
import logging
import random
import re
import subprocess
from pathlib import Path

import boto3
import pytest
from bson import json_util
from bson.int64 import Int64

from archiver.logs import LOGGER, JsonFormatter
from archiver.mongo import connect
from archiver.offline import render_file
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from conftest import require_tool
from test_pipeline import entries, recent_ms, seed
from test_redaction import luhn_ok

CARDS = ["4111111111111111", "378282246310005", "5555555555554444", "6011111111111117", "30569309025904"]
SEPARATORS = re.compile(r"(?<=\d)[ \-.\u00a0\u2013]+(?=\d)")


def chat_with_cards(room: str = "room-cards") -> tuple[dict, dict]:
    chat, contact = make_chat(random.Random(11), messages=7, start_ms=recent_ms(), room=room)
    visa, amex, mastercard, discover, diners = CARDS
    texts = [f"my card is {visa[:4]} {visa[4:8]} {visa[8:12]} {visa[12:]}", f"amex {amex[:4]}-{amex[4:10]}-{amex[10:]}",
             f"or {mastercard}", "order 4711 at 1642604343648"]
    for message, text in zip(chat["messages"], texts):
        message["data"]["messageType"] = "TEXT"
        message["data"]["content"]["text"] = text
    chat["messages"][4]["data"]["messageType"] = "LINK"
    chat["messages"][4]["data"]["content"] = {"url": f"https://pay.example.com/checkout?pan={discover}&step=2",
                                              "user": chat["messages"][4]["data"]["content"]["user"]}
    chat["messages"][5]["data"]["ts"] = f"{diners[:4]} {diners[4:]}"  # unreadable: quoted in a warning
    contact["title"] = f"Card {visa}"
    contact["dataCollections"] = {"card": f"{mastercard[:8]}.{mastercard[8:]}", "pan": Int64(int(discover))}
    contact["users"][contact["userID"]]["firstUri"] = f"https://shop.example.com/pay/{amex}"
    return chat, contact


def leaks(text: str) -> list[str]:
    """The card numbers found in TEXT, in any form: digits alone or with separators."""
    flat = SEPARATORS.sub("", text)
    return [card for card in CARDS if card in flat]


def decrypt(path: Path, keys: dict[str, Path]) -> bytes:
    require_tool("openssl")
    out = subprocess.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(path),
                          "-inkey", str(keys["legal.key.pem"]), "-recip", str(keys["legal.crt.pem"])],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def searchable(plain: bytes, tmp_path: Path) -> str:
    """Everything a reader can get out of PLAIN: its bytes, and its text when it is a PDF."""
    text = plain.decode("utf-8", "replace")
    if plain.startswith(b"%PDF"):
        require_tool("pdftotext")
        pdf = tmp_path / "object.pdf"
        pdf.write_bytes(plain)
        text += subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True,
                               timeout=60).stdout.decode()
    return text


@pytest.fixture
def log_lines():
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(JsonFormatter().format(record))  # type: ignore[method-assign]
    LOGGER.addHandler(handler)
    level = LOGGER.level
    LOGGER.setLevel(logging.DEBUG)
    yield lines
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


def archive(config, log_lines) -> tuple[Archiver, dict]:
    chat, contact = chat_with_cards()
    bad, _ = make_chat(random.Random(12), messages=3, start_ms=recent_ms(), room="room-bad")
    bad["_id"], bad["room"] = "room-bad", ["4111 1111 1111 1111"]  # quarantined, with the value quoted
    seed(config, [(chat, contact), (bad, None)])
    archiver = Archiver(config)
    report = archiver.run_pass()
    assert report.archived == 1 and list(report.quarantined) == ["room-bad"]
    assert "4111 11•• •••• 1111" in report.quarantined["room-bad"]
    return archiver, report


def index_text(config) -> str:
    db = connect(config["mongodb.uri"])[config["index.database"]]
    return "".join(json_util.dumps(list(db[name].find())) for name in db.list_collection_names())


@pytest.mark.parametrize("where", ["local", "s3"])
def test_no_card_number_reaches_any_stored_byte_the_index_or_the_logs(where, make_config, keys, tmp_path, log_lines,
                                                                       request) -> None:
    if where == "s3":
        bucket, endpoint = request.getfixturevalue("bucket"), request.getfixturevalue("moto_endpoint")
        config = make_config(storage__url=f"s3://{bucket}/archive", storage__endpoint_url=endpoint)
    else:
        config = make_config()
    archive(config, log_lines)
    if where == "s3":
        s3 = boto3.client("s3", endpoint_url=config["storage.endpoint_url"], region_name="us-east-1")
        versions = s3.list_object_versions(Bucket=bucket).get("Versions", [])
        objects = {}
        for v in versions:
            path = tmp_path / f"{len(objects)}.p7m"
            path.write_bytes(s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read())
            objects[v["Key"]] = path
    else:
        objects = {str(p): p for p in (tmp_path / "store").rglob("*.p7m")}
        sidecars = [p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.suffix != ".p7m"]
        assert sidecars and all(leaks(p.read_text()) == [] for p in sidecars)
    assert len(objects) == 3, objects
    plaintexts = {key: searchable(decrypt(path, keys), tmp_path) for key, path in objects.items()}
    for key, text in plaintexts.items():
        assert leaks(text) == [], f"{key} holds a card number"
    everything = "\n".join(plaintexts.values())
    assert "411111••••••1111" in everything and "37828••••••0005" in everything, "masked forms are kept"
    assert "1642604343648" in everything and "4711" in everything, "other numbers are left alone"
    assert leaks(index_text(config)) == []
    assert log_lines and leaks("\n".join(log_lines)) == []


def test_record_index_and_pdf_say_what_was_redacted(make_config, keys, tmp_path, log_lines) -> None:
    config = make_config()
    archive(config, log_lines)
    (entry,) = entries(config, status="archived")
    note = entry["redaction"]
    assert note["enabled"] is True and note["rules"] == ["card", "pin", "cvv"] and len(note["version"]) == 12
    # visa, amex, mastercard and discover twice each, diners once
    assert note["matches"] == {"card": 9, "cvv": 0, "pin": 0}
    objects = {name: decrypt(next((tmp_path / "store").rglob(obj["key"].rsplit("/", 1)[1])), keys)
               for name, obj in entry["objects"].items()}
    record = json.loads(objects["record"])
    assert record["redaction"] == note
    assert entry["title"] == record["transcript"]["title"] == "Card 411111••••••1111"
    text = re.sub(r"\s+", " ", searchable(objects["pdf"], tmp_path))
    assert f"Redaction card: 9, pin: 0, cvv: 0 (rules: card, pin, cvv; settings {note['version']})" in text
    assert "my card is 4111 11•• •••• 1111" in text and "pan=601111••••••1117" in text


def test_the_digest_is_over_the_redacted_source(make_config, log_lines) -> None:
    config = make_config()
    archiver, _ = archive(config, log_lines)
    (entry,) = entries(config, status="archived")
    # Another Luhn-valid card with the same first six and last four: only masked digits differ.
    other = next(c for c in (f"555555{n:06d}4444" for n in range(1, 10**6)) if luhn_ok(c))
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db[config["source.chats"]].update_one({"room": "room-cards"}, {"$set": {
        "messages.2.data.content.text": f"or {other}"}})
    report, _ = archiver.archive_room("room-cards", "ended")
    assert report.unchanged == 1 and report.archived == 0, "a change confined to masked digits is no new version"
    db[config["source.chats"]].update_one({"room": "room-cards"}, {"$set": {
        "messages.2.data.content.text": "or 5105105105105100"}})
    assert archiver.archive_room("room-cards", "ended")[0].archived == 1
    assert entry["source_sha256"] != entries(config, status="archived", version=2)[0]["source_sha256"]



def test_offline_render_redacts_as_the_archive_does(make_config, keys, tmp_path, log_lines) -> None:
    config = make_config()
    archive(config, log_lines)
    (entry,) = entries(config, status="archived")
    archived = json.loads(decrypt(next((tmp_path / "store").rglob(entry["objects"]["record"]["key"].rsplit("/", 1)[1])),
                                  keys))
    chat = connect(config["mongodb.uri"])[config["source.database"]][config["source.chats"]].find_one(
        {"room": "room-cards"})
    source = tmp_path / "chat.json"
    source.write_text(json_util.dumps(chat, json_options=json_util.CANONICAL_JSON_OPTIONS))
    outcome = render_file(config, source, tmp_path / "out")
    assert outcome.ok, outcome.problems
    rendered = json.loads((tmp_path / "out" / "room-cards.json").read_bytes())
    assert rendered["redaction"]["version"] == archived["redaction"]["version"]
    assert rendered["source"]["chat"] == archived["source"]["chat"]
    assert leaks(searchable((tmp_path / "out" / "room-cards.pdf").read_bytes(), tmp_path)) == []


def test_redaction_off_only_when_configured_off(make_config, keys, tmp_path, log_lines) -> None:
    config = make_config(redaction__enabled=False)
    chat, contact = chat_with_cards()
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config, status="archived")
    assert entry["redaction"]["enabled"] is False and entry["redaction"]["rules"] == []
    pdf = decrypt(next((tmp_path / "store").rglob(entry["objects"]["pdf"]["key"].rsplit("/", 1)[1])), keys)
    text = searchable(pdf, tmp_path)
    assert "OFF: archived unredacted" in re.sub(r"\s+", " ", text)
    assert sorted(leaks(text)) == sorted(CARDS), "unredacted, as configured"


def test_a_chat_whose_redaction_fails_is_quarantined_and_nothing_is_stored(make_config, monkeypatch, tmp_path,
                                                                           log_lines) -> None:
    from archiver.redaction import CardRule

    def broken(self, text: str):
        raise MemoryError("out of memory")
    monkeypatch.setattr(CardRule, "redact", broken)
    config = make_config()
    chat, contact = chat_with_cards()
    seed(config, [(copy.deepcopy(chat), contact)])
    report = Archiver(config).run_pass()
    assert report.archived == 0 and "redaction rule 'card' could not be applied" in report.quarantined["room-cards"]
    assert not (tmp_path / "store").exists() or not any(p.is_file() for p in (tmp_path / "store").rglob("*"))
    assert entries(config) == []


def test_the_pass_hands_the_worker_its_redacted_copies(make_config, monkeypatch, log_lines) -> None:
    """Redacted once per chat, by the pass (for its digest): no card number crosses to a worker process."""
    from archiver import pipeline
    from archiver.render.record import source_json
    from archiver.signing import sha256_hex

    submitted = []
    submit = pipeline._submit

    def capture(pool, build):
        submitted.append(build)
        return submit(pool, build)
    monkeypatch.setattr(pipeline, "_submit", capture)
    archive(make_config(), log_lines)
    assert len(submitted) == 2 and not leaks(json_util.dumps([b.args[:2] for b in submitted]))  # room-bad fails later
    (build,) = [b for b in submitted if b.args[0]["room"] == "room-cards"]
    assert build.keywords["redaction"].matches == {"card": 9, "cvv": 0, "pin": 0}
    # The worker gets the serialisation the digest was computed over (and stores it as the record's source).
    assert build.keywords["source_json"] == source_json(*build.args[:2])
    assert sha256_hex(build.keywords["source_json"]) == build.keywords["source_sha256"]
    assert not leaks(build.keywords["source_json"].decode())


def test_a_builder_given_the_pass_copies_checks_their_digest_and_settings_and_does_not_redact_again(
        make_config, monkeypatch) -> None:
    import dataclasses

    from archiver.artifacts import ArtifactBuilder
    from archiver.claims import now
    from archiver.render.record import source_digest

    builder = ArtifactBuilder.from_config(make_config(), encrypt=False)
    copies = builder.redactor.apply(*chat_with_cards())
    digest = source_digest(copies.chat, copies.contact)

    def redact_again(*args):
        raise AssertionError("redacted twice")
    monkeypatch.setattr(builder.redactor, "apply", redact_again)
    plain = builder.plaintext(copies.chat, copies.contact, "ended", 1, now(), source_sha256=digest,
                              redaction=copies.note)
    assert plain.source_sha256 == digest and plain.redaction == copies.note
    assert not leaks(plain.record.decode()) and json.loads(plain.record)["redaction"] == copies.note.describe()
    with pytest.raises(ValueError, match="the archive pass computed"):
        builder.plaintext(copies.chat, copies.contact, "ended", 1, now(), source_sha256="0" * 64,
                          redaction=copies.note)
    with pytest.raises(ValueError, match="redacted with settings 000000000000"):
        builder.plaintext(copies.chat, copies.contact, "ended", 1, now(), source_sha256=digest,
                          redaction=dataclasses.replace(copies.note, version="0" * 12))


def test_a_builder_given_the_pass_serialisation_stores_it_without_writing_it_again(make_config, monkeypatch) -> None:
    from archiver.artifacts import ArtifactBuilder
    from archiver.claims import now
    from archiver.render import record
    from archiver.signing import sha256_hex

    builder = ArtifactBuilder.from_config(make_config(), encrypt=False)
    copies = builder.redactor.apply(*chat_with_cards())
    source = record.source_json(copies.chat, copies.contact)

    def written_again(*args):
        raise AssertionError("the source was serialised again")
    monkeypatch.setattr(record, "source_json", written_again)
    plain = builder.plaintext(copies.chat, copies.contact, "ended", 1, now(), source_sha256=sha256_hex(source),
                              redaction=copies.note, source_json=source)
    assert plain.record.endswith(b',"source":' + source + b"}") and plain.source_sha256 == sha256_hex(source)
    # Bytes that are not what the pass hashed for the index are refused, not stored under its digest.
    other = source.replace(b'"room-cards"', b'"room-other"')
    assert other != source
    with pytest.raises(ValueError, match="the archive pass computed"):
        builder.plaintext(copies.chat, copies.contact, "ended", 1, now(), source_sha256=sha256_hex(source),
                          redaction=copies.note, source_json=other)


def test_cards_the_review_found_archived_whole_are_masked_in_the_pdf_and_record(make_config, keys, tmp_path) -> None:
    """A card after a phone number (an overlapping Luhn-valid window), after an em dash, after a '+', and in
    a URL's query string with '+' for spaces: none reaches the PDF text or the record."""
    from bson.binary import Binary
    config = make_config()
    chat, contact = make_chat(random.Random(11), messages=5, start_ms=recent_ms(), room="room-leaks")
    texts = ["6175551204 4111 1111 1111 1111", "5555—5555—5555—4444", "card: +6011111111111117"]
    for message, text in zip(chat["messages"], texts):
        message["data"]["messageType"] = "TEXT"
        message["data"]["content"]["text"] = text
    link = chat["messages"][3]["data"]
    link["messageType"] = "LINK"
    link["content"] = {"url": "https://pay.example.com/checkout?pan=3782+822463+10005&step=2",
                       "user": link["content"]["user"]}
    contact["dataCollections"] = {"raw": Binary(b"pan 30569309025904"), "signed": Int64(-4111111111111111)}
    entry, pdf, record = _archived_one(config, chat, contact, keys, tmp_path)
    for text in (pdf, record, json_util.dumps(json.loads(record))):
        assert leaks(re.sub(r"[+\u2014]", " ", text)) == [], "a card number is archived"
    assert "6175•••••• 4111 11•• •••• 1111" in pdf and "5555—55••—••••—4444" in pdf and "+601111••••••1117" in pdf
    assert "pan=3782+8•••••+•0005" in record and "-411111••••••1111" in record
    # the phone number's masked digits are a region too
    assert entry["redaction"]["matches"] == {"card": 7, "cvv": 0, "pin": 0}


def _archived_one(config, chat, contact, keys, tmp_path):
    """CHAT archived alone: its index entry, its PDF's text and its record, decrypted."""
    seed(config, [(chat, contact)])
    assert Archiver(config).run_pass().archived == 1
    (entry,) = entries(config, status="archived")
    objects = {name: decrypt(next((tmp_path / "store").rglob(obj["key"].rsplit("/", 1)[1])), keys)
               for name, obj in entry["objects"].items()}
    return entry, searchable(objects["pdf"], tmp_path), objects["record"].decode()


def test_a_card_verification_code_reaches_no_stored_byte_or_the_index(make_config, keys, tmp_path) -> None:
    """PCI DSS 3.3.1.2: a CVV2/CVC2/CID may not be stored after authorisation, even encrypted. Customers type it
    next to the card; the default rules mask its digits (the keyword stays) in the PDF, the record and the index."""
    config = make_config()  # the defaults
    chat, contact = make_chat(random.Random(11), messages=5, start_ms=recent_ms(), room="room-cvv")
    texts = ["my card is 4111 1111 1111 1111 exp 12/27 cvv 739", "security code is 4821", "order 7391 please",
             "5555 5555 5555 4444 03/28 246"]
    for message, text in zip(chat["messages"], texts):
        message["data"]["messageType"] = "TEXT"
        message["data"]["content"]["text"] = text
    contact["dataCollections"] = {"cardCvv": "582", "cvc2": 603}  # a payment form's fields
    entry, pdf, record = _archived_one(config, chat, contact, keys, tmp_path)
    held = re.compile(r"cvv 739|code is 4821|03/28 246|\"582\"|: ?603\b")  # the codes as typed (their digits alone are
    for where, text in {"pdf": pdf, "record": record, "index": index_text(config)}.items():  # in hashes too)
        assert not held.search(text), f"the {where} holds a verification code: {held.search(text).group()}"
    assert "cvv •••" in pdf and "security code is ••••" in pdf and "order 7391 please" in pdf
    assert "5555 55•• •••• 4444 03/28 •••" in pdf
    assert '"cardCvv": "•••"' in record.replace('":"', '": "') and entry["redaction"]["matches"]["cvv"] == 5

"""A chat is archived only when the driver's decoding keeps every byte MongoDB returned for its documents:
the record (and its digest) is written from the decoded values, so BSON that does not survive decoding
(a field written twice, undefined, a symbol, a NaN with a payload, ...) would be archived as another
document with that document's digest. Such a chat is quarantined, naming the first field that differs.

The stand-ins rewrite such documents when they are stored (nx-27017 keeps JSON; mongomock keeps Python
values), so the bytes a MongoDB server would send are built here and handed to the source where it reads
what the server returned (ChatSource._stored)."""

from __future__ import annotations

import copy
import random
import struct
from types import SimpleNamespace

import bson
import pytest
from bson import SON, Binary, Code, DBRef, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from archiver.mongo import STORED, TOLERANT, connect
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from archiver.source import ChatSource, SourceProblem
from test_pipeline import entries, job, recent_ms, seed


def elem(kind: int, name: str, payload: bytes) -> bytes:
    return bytes([kind]) + name.encode() + b"\0" + payload


def doc(*elems: bytes) -> bytes:
    body = b"".join(elems)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def string(s: bytes) -> bytes:
    return struct.pack("<i", len(s) + 1) + s + b"\0"


def chat_with(*x: bytes) -> bytes:
    return doc(elem(2, "room", string(b"R")), *x)


def read(raw: bytes):
    from archiver import lossless
    return lossless.read(RawBSONDocument(raw, STORED))


def why(raw: bytes, where: str = "chat") -> str:
    from archiver import lossless
    value, lost = read(raw)
    assert bson.encode(value) == bson.encode(bson.decode(raw, TOLERANT)), "still decoded (an erasure can delete it)"
    return lossless.loss(lost, where) if lost is not None else ""


NAN = "(a NaN with a sign or payload, or a coefficient of more than 34 digits)"
LOSSY = {
    "field written twice": (doc(elem(2, "room", string(b"R")), elem(0x10, "x", struct.pack("<i", 1)),
                                elem(0x10, "x", struct.pack("<i", 2))),
                            "chat.x: the field appears twice in one document; only its last value is read"),
    "undefined": (chat_with(elem(6, "x", b"")),
                  "chat.x: BSON undefined (type 0x06) has no lossless form (it reads as null)"),
    "symbol": (chat_with(elem(0x0E, "x", string(b"abc"))),
               "chat.x: BSON symbol (type 0x0e) has no lossless form (it reads as a string)"),
    "DBPointer": (chat_with(elem(0x0C, "x", string(b"coll") + ObjectId("61e8277aef3d6b076066d200").binary)),
                  "chat.x: BSON DBPointer (type 0x0c) has no lossless form (it reads as a DBRef)"),
    "DBRef $id first": (chat_with(elem(3, "x", bson.encode(SON([("$id", 1), ("$ref", "c")])))),
                        "chat.x: a DBRef whose fields are not in the order $ref, $id, $db, then the others reads "
                        "reordered (its fields: $id, $ref)"),
    "DBRef extra field first": (chat_with(elem(3, "x", bson.encode(SON([("note", "n"), ("$ref", "c"), ("$id", 1)])))),
                                "chat.x: a DBRef whose fields are not in the order $ref, $id, $db, then the others "
                                "reads reordered (its fields: note, $ref, $id)"),
    "DBRef $db null": (chat_with(elem(3, "x", bson.encode(SON([("$ref", "c"), ("$id", 1), ("$db", None)])))),
                       "chat.x.$db: a DBRef's $db that is null; the driver drops it (the DBRef reads without it)"),
    "DBRef $db null, extra after": (chat_with(elem(3, "x", bson.encode(SON([("$ref", "c"), ("$id", 1), ("$db", None),
                                                                          ("e", 1)])))),
                                    "chat.x.$db: a DBRef's $db that is null; the driver drops it (the DBRef reads "
                                    "without it)"),
    "Regex options mi": (chat_with(elem(0x0B, "x", b"^a\0mi\0")),
                         "chat.x: regular expression options 'mi' read as 'im'"),
    "Regex option g": (chat_with(elem(0x0B, "x", b"^a\0g\0")), "chat.x: regular expression options 'g' read as ''"),
    "double -NaN": (chat_with(elem(1, "x", bytes.fromhex("000000000000f8ff"))),
                    "chat.x: a double NaN with a sign or payload (bytes 000000000000f8ff) reads as the plain NaN"),
    "double NaN payload": (chat_with(elem(1, "x", bytes.fromhex("010000000000f87f"))),
                           "chat.x: a double NaN with a sign or payload (bytes 010000000000f87f) reads as the plain NaN"),
    "Decimal128 -NaN": (chat_with(elem(0x13, "x", Decimal128("-NaN").bid)),
                        f"chat.x: the Decimal128 with bytes {Decimal128('-NaN').bid.hex()} {NAN} reads as NaN"),
    "Decimal128 sNaN": (chat_with(elem(0x13, "x", Decimal128("sNaN").bid)),
                        f"chat.x: the Decimal128 with bytes {Decimal128('sNaN').bid.hex()} {NAN} reads as NaN"),
    "Decimal128 NaN payload": (chat_with(elem(0x13, "x", (7).to_bytes(8, "little") + bytes.fromhex("000000000000007c"))),
                               "chat.x: the Decimal128 with bytes 0700000000000000000000000000007c "
                               f"{NAN} reads as NaN"),
    "Decimal128 non-canonical": (chat_with(elem(0x13, "x", b"\xff" * 8 + bytes.fromhex("ffffffffffff4130"))),
                                 "chat.x: the Decimal128 with bytes ffffffffffffffffffffffffffff4130 "
                                 f"{NAN} reads as 0"),
    "array keys 5, a": (chat_with(elem(4, "x", bson.encode(SON([("5", 1), ("a", 2)])))),
                        "chat.x: an array whose index keys (5, a) are not 0, 1, 2, ...; it reads renumbered"),
    "deep in a message": (doc(elem(2, "room", string(b"R")), elem(4, "messages", bson.encode(
        {"0": {}, "1": {}, "2": {}, "3": {"data": {"ts": 1.0, "x": None}}}).replace(b"\x0ax\0", b"\x06x\0"))),
        "chat.messages.3.data.x: BSON undefined (type 0x06) has no lossless form (it reads as null)"),
    "in a Code scope": (chat_with(elem(0x0F, "x", struct.pack("<i", 4 + 8 + 8) + string(b"f()") + doc(elem(6, "u", b"")))),
                        "chat.x.$scope.u: BSON undefined (type 0x06) has no lossless form (it reads as null)"),
}


@pytest.mark.parametrize("name", list(LOSSY))
def test_bson_the_driver_cannot_decode_losslessly_is_named_with_its_place(name: str) -> None:
    raw, expected = LOSSY[name]
    assert why(raw) == expected


LOSSLESS = {
    "-0.0": struct.pack("<d", -0.0), "NaN": struct.pack("<d", float("nan")), "inf": struct.pack("<d", float("inf")),
    "int64 min": Int64(-2**63), "Decimal128 -0": Decimal128("-0"), "Decimal128 1.10": Decimal128("1.10"),
    "Decimal128 NaN": Decimal128("NaN"), "date year 10000": DatetimeMS(253402300800000),
    "date int64 min": DatetimeMS(-2**63), "Timestamp": Timestamp(1642604343, 7), "MinKey": MinKey(),
    "MaxKey": MaxKey(), "Binary 4": Binary(b"\x01" * 16, 4), "Binary 128": Binary(b"x", 128),
    "Regex imsx": Regex("^a.b$", "imsx"), "Code with scope": Code("f()", {"a": 1}),
    "DBRef": DBRef("c", 1), "DBRef $db and extra": DBRef("c", 1, "d", note="n"),
    "keys . $ empty": SON([("a.b", 1), ("", 2), ("$c", 3)]), "nested arrays": [[{"a": [1, {"b": Int64(2)}]}], {}],
}


@pytest.mark.parametrize("name", list(LOSSLESS))
def test_bson_that_survives_decoding_is_read_as_it_is(name: str) -> None:
    value = LOSSLESS[name]
    raw = (chat_with(elem(1, "x", value)) if type(value) is bytes
           else bson.encode(SON([("room", "R"), ("x", value)])))
    assert why(raw) == ""


def test_id_after_other_fields_is_no_loss() -> None:
    """bson.encode puts a top-level _id first; the record keeps the order given, so that is no difference."""
    assert why(bson.encode({"": SON([("room", "R"), ("_id", 5)])})[6:-1]) == ""


def test_invalid_utf8_is_left_to_the_record_which_names_its_place() -> None:
    """A value with invalid UTF-8 cannot be encoded at all: the record refuses it, as before (not this check)."""
    value, lost = read(chat_with(elem(2, "x", string(b"a\xffb"))))
    assert lost is None and value["x"] == "a\udcffb"


# Invalid UTF-8 wherever BSON holds text; the decoded value (lone surrogates) cannot be encoded again.
INVALID_UTF8 = {
    "a string": elem(2, "s", string(b"a\xffb")),
    "a field name": b"\x02a\xffb\0" + string(b"v"),
    "a nested field name": elem(3, "n", doc(b"\x02a\xffb\0" + string(b"v"))),
    "a regular expression": elem(0x0B, "r", b"a\xffb\0i\0"),
    "code": elem(0x0D, "c", string(b"a\xffb")),
    "code with scope": elem(0x0F, "c", struct.pack("<i", 4 + 8 + 5) + string(b"a\xffb") + doc()),
    "a DBRef's $ref": elem(3, "d", doc(elem(2, "$ref", string(b"a\xffb")), elem(0x10, "$id", struct.pack("<i", 1)))),
}


@pytest.mark.parametrize("name", list(LOSSY))
def test_invalid_utf8_beside_bson_without_a_lossless_form_is_left_to_the_record(name: str) -> None:
    """Beside invalid UTF-8 (which no encoding holds), a loss is not looked for: the record refuses the chat,
    naming the invalid UTF-8's place, whatever the loss (a NaN with a payload too, which the decode itself
    finds: it once came back as bytes that `loss` could not encode again, and the error left the pass)."""
    body = LOSSY[name][0][4:-1]
    for place, text in INVALID_UTF8.items():
        for raw in (doc(text, body), doc(body, text)):
            value, lost = read(raw)
            assert lost is None, place
            assert value.keys() >= bson.decode(LOSSY[name][0], TOLERANT).keys(), place


# -- end to end: the pass over the bytes a MongoDB server would send ----------------------------------------


def server_bytes(monkeypatch, replace: dict[object, bytes]) -> None:
    """ChatSource reads what a server returned, as RawBSONDocument: a document of the stand-in as BSON, or the
    bytes REPLACE gives for its _id (bytes the stand-ins cannot hold)."""
    class Server:
        def __init__(self, collection):
            self.collection = collection

        def find(self, *args, **kwargs):
            return Cursor(RawBSONDocument(replace.get(d["_id"]) or bson.encode(d), STORED)
                          for d in self.collection.find(*args, **kwargs))

    class Cursor(list):
        def __init__(self, docs):
            super().__init__(docs)

        def sort(self, key, direction):
            return Cursor(sorted(self, key=lambda d: bson.decode(d.raw, TOLERANT)[key], reverse=direction < 0))

    monkeypatch.setattr(ChatSource, "_stored", lambda self, collection: Server(collection), raising=False)


def with_undefined(document: dict, set_in: dict, name: str) -> bytes:
    """DOCUMENT's BSON with field NAME of SET_IN (a part of it) a BSON undefined (as the legacy shell wrote it)."""
    set_in[name] = None
    raw = bson.encode(document)
    del set_in[name]
    element = b"\x0a" + name.encode() + b"\0"
    assert raw.count(element) == 1
    return raw.replace(element, b"\x06" + name.encode() + b"\0")


def test_a_chat_whose_bson_does_not_survive_decoding_is_quarantined_and_the_rest_archived(make_config, monkeypatch):
    config = make_config()
    rng = random.Random(61)
    chats = [make_chat(rng, messages=30, start_ms=recent_ms(30)) for _ in range(3)]
    seed(config, chats)
    bad = chats[1][0]
    server_bytes(monkeypatch, {bad["_id"]: with_undefined(bad, bad["messages"][3]["data"], "legacyFlag")})
    archiver = Archiver(config)
    report = archiver.run_pass()
    reason = "chat.messages.3.data.legacyFlag: BSON undefined (type 0x06) has no lossless form (it reads as null)"
    assert report.quarantined == {bad["room"]: reason} and report.archived == 2
    assert job(config, bad["room"])["state"] == "quarantined"
    assert bad["room"] not in {e["room"] for e in entries(config)}
    problem = archiver.source.load(bad["room"])[0]
    assert isinstance(problem, SourceProblem) and problem.readable["_id"] == bad["_id"], "an erasure can still delete it"


def _seed_apart(config, rng_seed: int):
    """Three 30-message chats seeded with their messages in the messages collection; (chats, source db)."""
    rng = random.Random(rng_seed)
    chats = [make_chat(rng, messages=30, start_ms=recent_ms(30)) for _ in range(3)]
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for chat, contact in chats:
        db.messages.insert_many(copy.deepcopy(chat["messages"]))
        db.chats.insert_one({k: v for k, v in chat.items() if k != "messages"})
        db.contacts.insert_one(copy.deepcopy(contact))
    return chats, db


def test_a_message_of_a_messages_collection_and_a_contact_are_checked_too(make_config, monkeypatch):
    config = make_config(source__messages="messages")
    chats, db = _seed_apart(config, 62)
    (in_message, _), (_, in_contact), _ = chats
    message = in_message["messages"][7]
    contact_doc = db.contacts.find_one({"id": in_contact["id"]})
    server_bytes(monkeypatch, {message["_id"]: with_undefined(message, message["data"], "legacy"),
                               contact_doc["_id"]: with_undefined(contact_doc, contact_doc["users"], "flag")})
    report = Archiver(config).run_pass()
    assert report.quarantined == {
        in_message["room"]: "chat.messages.7.data.legacy: BSON undefined (type 0x06) has no lossless form (it reads as null)",
        in_contact["id"]: "contact.users.flag: BSON undefined (type 0x06) has no lossless form (it reads as null)",
    }
    assert report.archived == 1


def test_a_real_driver_reads_the_server_s_bytes(nx_uri) -> None:
    """Over the wire (nx-27017, or MongoDB): the source reads RawBSONDocument, and a chat comes back as stored."""
    db = connect(nx_uri)[f"src_bytes_{ObjectId()}"]
    chat, contact = make_chat(random.Random(63), messages=30)
    db.chats.insert_one(copy.deepcopy(chat))
    db.contacts.insert_one(copy.deepcopy(contact))
    try:
        source = ChatSource(db, "chats", "contacts")
        assert all(isinstance(d, RawBSONDocument) for d in source._stored(source.chats).find({}))
        loaded, joined = source.load(chat["room"])
        assert loaded == chat and {k: v for k, v in joined.items() if k != "_id"} == contact
    finally:
        db.client.drop_database(db.name)


def test_a_reason_that_names_a_field_is_redacted_as_the_record_would_be(make_config, monkeypatch):
    """The reason goes to the jobs collection and the logs: a field name holding a card is masked there, as
    every error message is made from redacted copies (a name is the source's text like any other)."""
    from archiver.redaction import Redactor

    config = make_config()
    chat, contact = make_chat(random.Random(64), messages=30, start_ms=recent_ms(30))
    seed(config, [(chat, contact)])
    name = "card 4111 1111 1111 1111"
    server_bytes(monkeypatch, {chat["_id"]: with_undefined(chat, chat["messages"][3]["data"], name)})
    report = Archiver(config).run_pass()
    masked = Redactor.from_config(config).mask(name)
    assert masked != name and "4111 1111 1111 1111" not in str(report.quarantined)
    assert report.quarantined == {chat["room"]: f"chat.messages.3.data.{masked}: BSON undefined (type 0x06) has "
                                                "no lossless form (it reads as null)"}


NAN_PAYLOAD = bytes.fromhex("010000000000f87f")


def with_invalid_utf8_and(document: dict, text_in: dict, number_in: dict, number: bytes) -> bytes:
    """DOCUMENT's BSON with invalid UTF-8 in a string of TEXT_IN and NUMBER (a double or Decimal128's bytes) in
    NUMBER_IN (parts of it)."""
    text_in["note"], number_in["score"] = "XQXQ", (1.5 if len(number) == 8 else Decimal128("1.5"))
    raw = bson.encode(document)
    del text_in["note"], number_in["score"]
    given = struct.pack("<d", 1.5) if len(number) == 8 else Decimal128("1.5").bid
    assert raw.count(b"XQXQ") == 1 and raw.count(given) == 1
    return raw.replace(b"XQXQ", b"\xff\xfeab").replace(given, number)


def test_a_chat_with_invalid_utf8_and_a_nan_payload_costs_only_that_chat(make_config, monkeypatch):
    """The NaN's payload is found while decoding; the invalid UTF-8 beside it once made naming the loss fail,
    an error that left the pass: no chat of it was archived. The record refuses the chat, naming the place."""
    config = make_config()
    rng = random.Random(65)
    chats = [make_chat(rng, messages=30, start_ms=recent_ms(30)) for _ in range(3)]
    seed(config, chats)
    bad = chats[1][0]
    messages = bad["messages"]
    server_bytes(monkeypatch, {bad["_id"]: with_invalid_utf8_and(bad, messages[3]["data"], messages[4]["data"],
                                                                 NAN_PAYLOAD)})
    report = Archiver(config).run_pass()
    assert report.archived == 2 and list(report.quarantined) == [bad["room"]]
    assert report.quarantined[bad["room"]] == ("chat.messages.3.data.note: invalid UTF-8 (unpaired surrogate); "
                                               "cannot be archived as text")
    assert job(config, bad["room"])["state"] == "quarantined"
    assert {e["room"] for e in entries(config)} == {chats[0][0]["room"], chats[2][0]["room"]}


def test_a_message_or_contact_with_invalid_utf8_and_an_inexact_number_costs_only_its_chat(make_config, monkeypatch):
    config = make_config(source__messages="messages")
    chats, db = _seed_apart(config, 66)
    (in_message, _), (_, in_contact), (good, _) = chats
    message = in_message["messages"][7]
    contact_doc = db.contacts.find_one({"id": in_contact["id"]})
    server_bytes(monkeypatch, {
        message["_id"]: with_invalid_utf8_and(message, message["data"], message, Decimal128("-NaN").bid),
        contact_doc["_id"]: with_invalid_utf8_and(contact_doc, contact_doc, contact_doc["users"], NAN_PAYLOAD)})
    report = Archiver(config).run_pass()
    assert report.archived == 1
    refused = "invalid UTF-8 (unpaired surrogate); cannot be archived as text"
    assert report.quarantined == {in_message["room"]: f"chat.messages.7.data.note: {refused}",
                                  in_contact["id"]: f"contact.note: {refused}"}
    assert [e["room"] for e in entries(config)] == [good["room"]]


def _encode_refusing_2_5(document, codec_options):
    """bson.encode, failing on a document that holds the double 2.5 as bson could on odd values, with an error
    that is no BSONError."""
    encoded = bson.encode(document, codec_options=codec_options)
    if struct.pack("<d", 2.5) in encoded:
        raise OverflowError("2.5 is out of range")
    return encoded


def _fails_as_an_index_would(*args) -> str:
    raise IndexError("list index out of range")


@pytest.mark.parametrize("fails", ["read", "loss"])
def test_whatever_the_check_raises_on_one_chat_s_bytes_costs_only_that_chat(make_config, monkeypatch, fails):
    """Not only BSONError: any error bson raises on a document's bytes (ValueError, OverflowError, ...) is that
    document's, its room quarantined; the pass goes on with the others."""
    from archiver import lossless

    config = make_config()
    rng = random.Random(67)
    chats = [make_chat(rng, messages=30, start_ms=recent_ms(30)) for _ in range(3)]
    bad = chats[1][0]
    bad["messages"][3]["data"]["score"] = 2.5
    seed(config, chats)
    if fails == "read":
        monkeypatch.setattr(lossless, "bson", SimpleNamespace(decode=bson.decode, encode=_encode_refusing_2_5))
        server_bytes(monkeypatch, {})
    else:
        monkeypatch.setattr(lossless, "_first_loss", _fails_as_an_index_would)
        server_bytes(monkeypatch, {bad["_id"]: with_undefined(bad, bad["messages"][3]["data"], "legacyFlag")})
    report = Archiver(config).run_pass()
    assert report.archived == 2 and list(report.quarantined) == [bad["room"]]
    error = "OverflowError: 2.5 is out of range" if fails == "read" else "IndexError: list index out of range"
    assert report.quarantined[bad["room"]] == f"room {bad['room']!r}: MongoDB cannot decode it: {error}"

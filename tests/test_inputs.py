from __future__ import annotations

import datetime as dt
from pathlib import Path

from bson import Decimal128, ObjectId, Timestamp, json_util
from bson.int64 import Int64
from bson.min_key import MinKey

from archiver.inputs import ParsedDocument, UnreadableDocument, describe, read_documents, read_file
from archiver.samples import SEED_CHAT

DATA = Path(__file__).parent / "data"


def _docs(items):
    return [i.document for i in items if isinstance(i, ParsedDocument)]


def test_seed_as_printed_points_at_the_missing_comma() -> None:
    (item,) = read_file(DATA / "seed-as-printed.txt")
    assert isinstance(item, UnreadableDocument)
    text = (DATA / "seed-as-printed.txt").read_text()
    assert text[item.column - 1:].startswith('"content"')  # the token right after the missing comma
    assert "expected ',' or '}' after the value of 'messageSeen'" in item.reason
    assert describe(item).startswith(f"document 1 (line 1, column {item.column}):")


def test_seed_with_the_comma_restored_parses_to_bson_types() -> None:
    (item,) = read_file(DATA / "seed-fixed.txt")
    assert isinstance(item, ParsedDocument)
    assert item.document == SEED_CHAT
    assert isinstance(item.document["messages"][0]["_id"], ObjectId)


def test_every_shell_constructor(tmp_path) -> None:
    source = (b"{ _id: ObjectId('61e8277aef3d6b076066d287'), room: 'it\\'s \"q\"', n: NumberLong(\"12\"), "
              b"d: new Date(1642604343631), iso: ISODate(\"2022-01-19T14:59:03.631Z\"), i: NumberInt(3), "
              b"dec: NumberDecimal(\"1.5\"), ts: Timestamp({ t: 1, i: 2 }), b: BinData(0, \"AAE=\"), k: MinKey, "
              b"s: \"ObjectId(\\\"x\\\") } \\\" ]\" }")
    (doc,) = _docs(read_documents(source))
    when = dt.datetime(2022, 1, 19, 14, 59, 3, 631000, tzinfo=dt.timezone.utc)
    assert doc["_id"] == ObjectId("61e8277aef3d6b076066d287") and doc["room"] == "it's \"q\""
    assert doc["n"] == Int64(12) and isinstance(doc["n"], Int64) and doc["i"] == 3
    assert doc["d"] == when and doc["iso"] == when
    assert doc["dec"] == Decimal128("1.5") and doc["ts"] == Timestamp(1, 2) and doc["b"] == b"\x00\x01"
    assert doc["k"] == MinKey()
    assert doc["s"] == 'ObjectId("x") } " ]', "text that looks like notation stays text"


def test_extended_json_lines_as_mongoexport_writes_them() -> None:
    chats = [dict(SEED_CHAT, room=f"R{i}", _id=f"R{i}") for i in range(3)]
    relaxed = json_util.dumps(chats[0], json_options=json_util.RELAXED_JSON_OPTIONS)
    canonical = json_util.dumps(chats[1], json_options=json_util.CANONICAL_JSON_OPTIONS)
    legacy = json_util.dumps(chats[2])
    docs = _docs(read_documents("\n".join([relaxed, canonical, legacy]).encode()))
    assert docs == chats


def test_array_and_concatenated_documents() -> None:
    assert [d["room"] for d in _docs(read_documents(b'[{"room": "a"}, {"room": "b"}]'))] == ["a", "b"]
    assert [d["room"] for d in _docs(read_documents(b'{"room": "a"}\n\n  {"room":\n "b"}'))] == ["a", "b"]


def test_a_broken_document_in_an_array_spares_the_others() -> None:
    items = read_documents(b'[{"room":"a"},\n {"room": "b" "x":1},\n {"room":"c"}, 5]')
    assert [type(i).__name__ for i in items] == ["ParsedDocument", "UnreadableDocument", "ParsedDocument",
                                                 "UnreadableDocument"]
    assert [i.position for i in items] == [1, 2, 3, 4]
    assert items[1].line == 2 and "expected ','" in items[1].reason
    assert "is a number, not a document" in items[3].reason


def test_an_unclosed_document_in_json_lines_does_not_swallow_the_next() -> None:
    items = read_documents(b'{"room":"a"}\n{"room": "b", "messages": [\n{"room":"c"}\n{"room": "d\n{"room":"e"}\n')
    assert [d["room"] for d in _docs(items)] == ["a", "c", "e"]
    broken = [i for i in items if isinstance(i, UnreadableDocument)]
    assert [i.position for i in broken] == [2, 4]


def test_invalid_utf8_is_reported_with_its_byte_offset() -> None:
    items = read_documents(b'{"room":"a\xff"}\n{"room":"b"}')
    assert isinstance(items[0], UnreadableDocument) and "invalid UTF-8 at byte offset 10" in items[0].reason
    assert _docs(items) == [{"room": "b"}]


def test_empty_input_and_non_objects() -> None:
    assert read_documents(b"") == [] and read_documents(b"  \n") == []
    (item,) = read_documents(b'"just text"')
    assert isinstance(item, UnreadableDocument) and "a string, not a document" in item.reason


def test_trailing_commas_and_duplicate_fields_are_refused() -> None:
    (trailing,) = read_documents(b"{a: 1,}")
    assert "trailing ','" in trailing.reason
    for source in (b"{a: 1, a: 2}", b'{"a": 1, "a": 2}'):
        (twice,) = read_documents(source)
        assert "field 'a' appears twice" in twice.reason

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import random
import re
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson import SON, Binary, Code, DBRef, DatetimeConversion, DatetimeMS, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp, json_util
from bson.int64 import Int64

from archiver.render.record import EXTJSON_OPTIONS, build_record, read_source, source_digest, source_json
from archiver.samples import SEED_CHAT, make_chat
from archiver.transcript import normalise

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_source_documents_survive_exactly() -> None:
    chat = {**SEED_CHAT, "__v": Int64(3), "extra": {"price": Decimal128(Decimal("1.10")), "blob": b"\x00\xff", "user_blob": Binary(b"\x01", 0x80),
                                                    "when": dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc),
                                                    "ratio": 1.0, "count": 1}}
    contact = {"_id": ObjectId("61e8277aef3d6b076066d200"), "id": chat["room"], "beginTime": 1642604300000.0}
    data, digest = build_record(normalise(chat, contact), chat, contact, version=2, generated_at=WHEN)
    record = json.loads(data)
    assert record["format"] == "ctlive-archive-record/5" and record["version"] == 2
    assert record["source_sha256"] == digest == source_digest(chat, contact)
    back = json_util.loads(json.dumps(record["source"]["chat"]), json_options=EXTJSON_OPTIONS)
    assert back == chat
    assert list(back) == list(chat), "field order is kept"
    assert isinstance(back["__v"], Int64) and isinstance(back["extra"]["ratio"], float)
    assert isinstance(back["extra"]["count"], int) and not isinstance(back["extra"]["count"], Int64)
    assert json_util.loads(json.dumps(record["source"]["contact"]), json_options=EXTJSON_OPTIONS) == contact


def test_normalised_view_and_determinism() -> None:
    t = normalise(SEED_CHAT)
    first, _ = build_record(t, SEED_CHAT, None, version=1, generated_at=WHEN)
    second, _ = build_record(t, SEED_CHAT, None, version=1, generated_at=WHEN)
    assert first == second
    view = json.loads(first)["transcript"]
    assert view["message_count"] == 3
    assert view["messages"][1]["text"].startswith("Buongiorno, sono l'operatore")
    assert view["messages"][2]["type"] == "endChat" and view["closed_by"] == "USER_gverde1@acd.enghouse.com"
    assert "prova1" in first.decode("utf-8")


def test_hostile_text_stays_data() -> None:
    chat = {"room": "R", "messages": [{"data": {"content": {"text": '"},"injected":true,{"<script>\\u0000'}}}]}
    data, _ = build_record(normalise(chat), chat, None, version=1, generated_at=WHEN)
    record = json.loads(data)
    assert "injected" not in record
    assert record["transcript"]["messages"][0]["text"] == '"},"injected":true,{"<script>\\u0000'


def test_digest_changes_with_content() -> None:
    other = json_util.loads(json_util.dumps(SEED_CHAT))
    other["messages"][0]["data"]["content"]["text"] = "prova2"
    assert source_digest(SEED_CHAT, None) != source_digest(other, None)


def _record_as_before(transcript, chat, contact, **options) -> bytes:
    """The record as it was written until issue 12: Extended JSON dumped, loaded and dumped again."""
    def plain(document):
        return None if document is None else json.loads(json_util.dumps(document, json_options=EXTJSON_OPTIONS))

    source = {"chat": plain(chat), "contact": plain(contact)}
    compact = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
    digest = hashlib.sha256(json.dumps(source, **compact).encode()).hexdigest()
    record = json.loads(build_record(transcript, chat, contact, **options)[0])
    record["source_sha256"] = digest
    record["source"] = source
    return json.dumps(record, **compact).encode()


def _odd_chat(seed: int) -> tuple[dict, dict]:
    chat, contact = make_chat(random.Random(seed), messages=12)
    chat["odd"] = {
        "int64": Int64(-2**63), "int32": -5, "big": 2**62, "double": -0.0, "nan": float("nan"),
        "inf": float("-inf"), "tiny": 5e-324, "decimal": Decimal128("-1.10E+6144"), "oid": ObjectId(),
        "bytes": b"\x00\xff", "uuid": Binary(b"\x01" * 16, 4), "user": Binary(b"x", 0x80),
        "date": dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=dt.timezone.utc),
        "far": DatetimeMS(253402300800000), "regex": Regex("^a.*b$", "imx"), "ts": Timestamp(1, 2),
        "min": MinKey(), "max": MaxKey(), "code": Code("f()", {"x": 1}), "none": None, "bools": [True, False],
        "text": "\u202e\u0000\"\\\n\u2028\U0001f600 é 中", "key.with.dots": {"": [[], {}]},
        # Where the record's own converter hands over to json_util's, or chooses between two forms:
        "int32_edges": [2**31 - 1, 2**31, -2**31, -2**31 - 1, 0], "floats": [1e300, 1.0, 0.1, -1e-300, 2.5e-8],
        "son": SON([("b", 1), ("a", Int64(2))]), 7: "an int key", "str_subclass": Code("g()"),
    }
    contact["nested"] = [[[{"a": Int64(1)}]], 1.5, "\t"]
    return chat, contact


@pytest.mark.parametrize("seed", range(6))
def test_the_record_is_byte_for_byte_what_the_round_trip_wrote(seed: int) -> None:
    chat, contact = _odd_chat(seed) if seed % 2 else make_chat(random.Random(seed), messages=30)
    options = {"version": 3, "generated_at": WHEN, "redaction": {"enabled": True, "version": "x"}}
    transcript = normalise(chat, contact)
    data, digest = build_record(transcript, chat, contact, **options)
    assert data == _record_as_before(transcript, chat, contact, **options)
    assert digest == source_digest(chat, contact) == json.loads(data)["source_sha256"]
    assert _record_as_before(transcript, chat, None, **options) == build_record(transcript, chat, None, **options)[0]


def test_a_record_whose_source_hashes_otherwise_than_the_pass_computed_is_refused() -> None:
    chat, contact = make_chat(random.Random(1), messages=3)
    digest = source_digest(chat, contact)
    build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN, expected_digest=digest)
    with pytest.raises(ValueError, match="the archive pass computed"):
        build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN, expected_digest="0" * 64)
    source = source_json(chat, contact)
    record, _ = build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN,
                             expected_digest=digest, source=source)
    assert record.endswith(b',"source":' + source + b"}")
    with pytest.raises(ValueError, match="without the digest"):
        build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN, source=source)


def test_a_document_with_dollar_keys_is_not_read_as_the_type_it_imitates() -> None:
    """MongoDB 5+ stores field names that start with $: {"$numberLong": "5"} is a subdocument there, not an
    Int64, and {"$oid": "x"} no ObjectId. Written as they are, the record could not tell them apart (the
    same bytes, the same source digest) or could not be read back at all."""
    imitations = {"$numberLong": "5"}, {"$oid": "not an id"}, {"$date": {"$numberLong": "0"}}, {"$regex": 1}
    originals = Int64(5), ObjectId("61e8277aef3d6b076066d200"), dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    for imitation, original in zip(imitations, originals):
        assert source_digest({"room": "R", "x": imitation}, None) != source_digest({"room": "R", "x": original}, None)
    chat = {"room": "R", "messages": [{"data": {"form": {"$oid": "not an id", "name": "Ann"}}}],
            "nested": [{"$ctlive.document": [["a", 1]]}, {"$": {"$numberInt": "7"}, "plain": {"a": Int64(1)}}],
            "outer": {"$where": [imitations[0], imitations[2]], "after": 1.5}}
    data, _ = build_record(normalise(chat), chat, None, version=1, generated_at=WHEN)
    back = read_source(data)["chat"]
    assert back == chat and list(back["outer"]) == ["$where", "after"]
    assert isinstance(back["nested"][1]["plain"]["a"], Int64) and isinstance(back["outer"]["after"], float)
    assert read_source(data)["contact"] is None


def test_records_without_dollar_keys_read_back_as_plain_extended_json() -> None:
    chat, contact = _odd_chat(1)
    data, _ = build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN)
    assert b"$ctlive.document" not in data
    options = EXTJSON_OPTIONS.with_options(datetime_conversion=DatetimeConversion.DATETIME_AUTO)
    plain = json_util.loads(json.dumps(json.loads(data)["source"]), json_options=options)
    def canonical(value):  # (NaN is not equal to itself)
        return json_util.dumps(value, json_options=EXTJSON_OPTIONS)
    assert canonical(read_source(data)) == canonical(plain) and plain["chat"]["odd"]["far"] == DatetimeMS(253402300800000)


def test_the_reading_docs_record_md_gives_reads_a_date_past_9999() -> None:
    """docs/record.md said plain bson.json_util.loads reads the source: it fails on a date past year 9999,
    which BSON holds and the record keeps. The snippet the docs give now is run here, as it is written."""
    from pathlib import Path

    docs = (Path(__file__).parent.parent / "docs" / "record.md").read_text()
    snippet = re.search(r"## Reading the source back\n.*?```python\n(.*?)```", docs, re.DOTALL).group(1)
    chat, contact = _odd_chat(1)
    data, _ = build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN)
    with pytest.raises(Exception, match="date value out of range"):
        json_util.loads(data)  # (what the docs said: so the record does hold a date plain loads cannot read)
    scope: dict[str, Any] = {"record_bytes": data}
    exec(snippet, scope)  # noqa: S102 (the docs' own code, as a reader would run it)
    assert scope["source"]["chat"]["odd"]["far"] == DatetimeMS(253402300800000)
    canonical = functools.partial(json_util.dumps, json_options=EXTJSON_OPTIONS)  # (NaN is not equal to itself)
    assert canonical(scope["source"]) == canonical(read_source(data)) == canonical({"chat": chat, "contact": contact})


def test_an_integer_beyond_64_bits_is_refused_not_written_as_a_number_long() -> None:
    from archiver.transcript import InvalidChat

    for value in (2**63, -2**63 - 1, 10**30):
        with pytest.raises(InvalidChat, match=rf"chat.__v: the integer {value} is beyond 64 bits"):
            source_json(dict(SEED_CHAT, __v=value), None)
        chat = dict(SEED_CHAT, messages=[dict(SEED_CHAT["messages"][0], n=[1, {"deep": value}])])
        with pytest.raises(InvalidChat, match=r"chat.messages.0.n.1.deep: the integer"):
            source_json(chat, None)
        with pytest.raises(InvalidChat, match=r"contact.x.1: the integer .* is beyond 64 bits"):
            source_json(SEED_CHAT, {"x": [1, value]})
    for value in (2**63 - 1, -2**63):  # the ends of the range are BSON int64 and read back as such
        source = json.loads(source_json(dict(SEED_CHAT, __v=value), None))
        assert source["chat"]["__v"] == {"$numberLong": str(value)}
        restored = json_util.loads(json.dumps(source), json_options=json_util.CANONICAL_JSON_OPTIONS)
        assert restored["chat"]["__v"] == value and isinstance(restored["chat"]["__v"], Int64)


def _read_back(x: Any) -> tuple[dict, str]:
    """{room, x} as the driver decodes it, read back from its record; and its source digest."""
    chat = bson.decode(bson.encode({"room": "R", "x": x}))
    data, digest = build_record(normalise(chat), chat, None, version=1, generated_at=WHEN)
    back = read_source(data)["chat"]
    assert bson.encode(back) == bson.encode(chat), f"{x!r} came back as {back['x']!r}"
    return back, digest


def test_dollar_keys_inside_a_dbref_or_a_code_scope_read_back_exactly() -> None:
    """The $ctlive.document form did not reach a DBRef's fields or a Code's scope, which json_util converted
    itself: {"$numberLong": "5"} there read back as Int64 5 (the same digest), {"$oid": "x"} not at all."""
    oid = ObjectId("61e8277aef3d6b076066d200")
    imitating = [  # (the value in the source, the value it would read back as)
        (SON([("$ref", "c"), ("$id", {"$numberLong": "5"})]), DBRef("c", Int64(5))),
        (SON([("$ref", "c"), ("$id", 1), ("meta", {"$oid": str(oid)})]), DBRef("c", 1, meta=oid)),
        (Code("f()", {"v": {"$numberLong": "5"}}), Code("f()", {"v": Int64(5)})),
        (SON([("$ref", "c"), ("$id", {"$oid": str(oid)}), ("$db", "d")]), DBRef("c", oid, "d")),
    ]
    for value, imitated in imitating:
        _, digest = _read_back(value)
        assert digest != source_digest({"room": "R", "x": imitated}, None), value
    unreadable = [Code("f()", {"$oid": "not an id"}), Code("f()", {"$numberLong": "5"}),
                  SON([("$ref", "c"), ("$id", [{"$date": 1}, {"$ctlive.document": []}]), ("$db", "d"),
                       ("n", Code("g()", {"a": [{"$x": Int64(1)}]})), ("m", {"$regex": 1})])]
    for value in unreadable:
        _read_back(value)
    back, _ = _read_back([DBRef("c", oid, "db", note={"a": Int64(1)}), Code("h()", {}), Code("k()")])
    assert isinstance(back["x"][0], DBRef) and isinstance(back["x"][0].note["a"], Int64)


def test_the_place_of_bad_text_or_a_huge_integer_is_named_inside_regexes_dbrefs_and_code() -> None:
    from archiver.transcript import InvalidChat

    bad = [(Regex("a\udcff", "i"), "chat.x.pattern"), (DBRef("c", "\udcff"), "chat.x.$id"),
           (DBRef("c\udcff", 1), "chat.x.$ref"), (DBRef("c", 1, note=["\udcff"]), "chat.x.note.0"),
           (Code("f()", {"v": "\udcff"}), "chat.x.$scope.v"), (Code("f()", {"k\udcff": 1}), r"chat.x.$scope.k\xff"),
           ({"form\udcff\n": 1}, r"chat.x.form\xff[U+000A]")]  # the name as text that can be shown and stored
    for value, where in bad:
        with pytest.raises(InvalidChat, match=rf"^{re.escape(where)}: invalid UTF-8 \(unpaired surrogate\)"):
            source_json({"room": "R", "x": value}, None)
    for value, where in [(DBRef("c", 2**70), "chat.x.$id"), (Code("f()", {"v": [2**64]}), "chat.x.$scope.v.0")]:
        with pytest.raises(InvalidChat, match=rf"^{re.escape(where)}: the integer \d+ is beyond 64 bits"):
            source_json({"room": "R", "x": value}, None)


def test_the_view_states_who_opened_and_handled_the_chat_and_each_read_receipt() -> None:
    """What the PDF's header and message lines state (review "court"), the record's view states too."""
    seen_at_ms = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    receipts = [None, True, False, seen_at_ms, 0, "read", {"at": 1}, float("nan")]
    chat = {"room": "R", "messages": [{"data": {"id": f"m{i}", "ts": 1_767_225_600_000 + i,
                                                "content": {"text": f"t{i}", "user": {"id": "c1", "isAgent": False}},
                                                "messageSeen": seen}} for i, seen in enumerate(receipts)]}
    contact = {"id": "R", "userID": "c1", "agentID": "USER_a@x"}
    view = json.loads(build_record(normalise(chat, contact), chat, contact, version=1, generated_at=WHEN)[0])
    assert view["format"] == "ctlive-archive-record/5"
    assert (view["transcript"]["opened_by"], view["transcript"]["handled_by"]) == ("c1", "USER_a@x")
    stated = [(m["seen"], m["seen_at"], m["seen_as_given"]) for m in view["transcript"]["messages"]]
    assert stated == [(None, None, None), (True, None, None), (False, None, None),
                      (True, "2026-01-01T00:00:00.000Z", None), (None, None, "0"), (None, None, "read"),
                      (None, None, "{'at': 1}"), (None, None, "nan")]
    alone = json.loads(build_record(normalise(chat), chat, None, version=1, generated_at=WHEN)[0])["transcript"]
    assert (alone["opened_by"], alone["handled_by"]) == ("", "")  # no contact: nobody stated

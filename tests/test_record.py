from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from bson import Binary, Decimal128, ObjectId, json_util
from bson.int64 import Int64

from archiver.render.record import EXTJSON_OPTIONS, build_record, source_digest
from archiver.samples import SEED_CHAT
from archiver.transcript import normalise

WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_source_documents_survive_exactly() -> None:
    chat = {**SEED_CHAT, "__v": Int64(3), "extra": {"price": Decimal128(Decimal("1.10")), "blob": b"\x00\xff", "user_blob": Binary(b"\x01", 0x80),
                                                    "when": dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc),
                                                    "ratio": 1.0, "count": 1}}
    contact = {"_id": ObjectId("61e8277aef3d6b076066d200"), "id": chat["room"], "beginTime": 1642604300000.0}
    data, digest = build_record(normalise(chat, contact), chat, contact, version=2, generated_at=WHEN)
    record = json.loads(data)
    assert record["format"] == "ctlive-archive-record/2" and record["version"] == 2
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

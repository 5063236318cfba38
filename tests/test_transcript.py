from __future__ import annotations

import copy
import datetime as dt

import pytest
from bson.code import Code
from bson.int64 import Int64

from archiver.samples import SEED_CHAT
from archiver.transcript import InvalidChat, has_ended, normalise, to_datetime

UTC = dt.timezone.utc
EXPECTED = dt.datetime(2022, 1, 19, 14, 59, 3, 631000, tzinfo=UTC)


@pytest.mark.parametrize("ts", [1642604343631.0, 1642604343631, Int64(1642604343631), "1642604343631",
                                "1642604343631.0", "2022-01-19T14:59:03.631Z", EXPECTED,
                                dt.datetime(2022, 1, 19, 14, 59, 3, 631000)])
def test_every_timestamp_shape_means_the_same_instant(ts) -> None:
    assert to_datetime(ts) == EXPECTED


@pytest.mark.parametrize("ts", [None, True, "yesterday", {"x": 1}, float("nan"), 1e30])
def test_unreadable_timestamps_are_none(ts) -> None:
    assert to_datetime(ts) is None


def test_seed_chat_normalises() -> None:
    t = normalise(SEED_CHAT)
    assert t.room == SEED_CHAT["room"] and t.status == "ended"
    assert [m.type for m in t.messages] == ["TEXT", "TEXT", "endChat"]
    assert t.closed_by == "USER_gverde1@acd.enghouse.com"
    assert t.agents == ["USER_gverde1@acd.enghouse.com"] and t.customers == ["4747235938674011"]
    assert t.messages[0].object_id == "61e8277aef3d6b076066d287"
    assert t.ended_at == dt.datetime(2022, 1, 19, 15, 0, 9, 492000, tzinfo=UTC)
    assert has_ended(SEED_CHAT)


def test_messy_messages_are_tolerated_and_flagged() -> None:
    chat = {"room": "R", "messages": [
        {"data": {"id": "a", "messageType": "TEXT", "ts": "garbage", "content": None}},
        {"data": {"id": "a", "messageType": "STICKER", "content": {"url": "https://x/y.webp"}}},
        {"data": None},
        {"data": {"messageType": "TEXT", "content": {"text": "hi", "user": {"id": 42, "isAgent": "yes"}},
                  "deliverySuccess": False, "deliveryErrorReason": "blocked"}},
    ]}
    t = normalise(chat)
    assert len(t.messages) == 4
    assert t.messages[0].sent_at is None and t.messages[0].text == ""
    assert t.messages[1].duplicate_of == 1 and t.messages[1].type == "STICKER"
    assert t.messages[3].sender_id == "42" and t.messages[3].role == "unknown"
    assert t.failed_deliveries == 1
    assert any("unreadable timestamp" in w for w in t.warnings)
    assert any("same id as message 1" in w for w in t.warnings)
    assert not has_ended(chat)


@pytest.mark.parametrize("chat, complaint", [
    ({"messages": []}, "field 'room' is missing"),
    ({"room": 12, "messages": []}, "field 'room' is missing or not a non-empty string"),
    ({"room": "R", "messages": "nope"}, "field 'messages' is str, not an array"),
    ({"room": "R", "messages": [5]}, "message 1: the message is int, not an object"),
    ({"room": "R", "messages": [{"data": "x"}]}, "message 1: field 'data' is str"),
    ({"room": "R", "messages": [{"data": {"content": {"text": ["a"]}}}]}, "message 1 data.content.text: is list"),
    ({"room": "R", "messages": [{}, {"data": {"content": {"text": "ok \udc80 bad"}}}]},
     "message 2 data.content.text: invalid UTF-8 .unpaired surrogate U\\+DC80 at character 3"),
    ({"room": "R\ud800", "messages": []}, "room: invalid UTF-8"),
])
def test_unarchivable_chats_say_where_and_why(chat, complaint) -> None:
    with pytest.raises(InvalidChat, match=complaint):
        normalise(chat)


def test_oversized_message_is_refused_with_its_size() -> None:
    chat = copy.deepcopy(SEED_CHAT)
    chat["messages"][0]["data"]["content"]["text"] = "x" * (10 * 1024 * 1024)
    with pytest.raises(InvalidChat, match=r"message 1: data.content.text has 10,485,760 characters"):
        normalise(chat, max_message_chars=1_000_000)


def test_contact_fills_in_the_header() -> None:
    contact = {"id": SEED_CHAT["room"], "serv_name": "Assistenza", "lang": "it", "title": "Ordine",
               "beginTime": 1642604300000, "users": {"4747235938674011": {"nickname": "Mario", "channel": "instagram"}}}
    t = normalise(SEED_CHAT, contact)
    assert (t.service, t.language, t.title, t.channel) == ("Assistenza", "it", "Ordine", "instagram")
    assert t.started_at == dt.datetime(2022, 1, 19, 14, 58, 20, tzinfo=UTC)
    assert t.participants[0].nickname == "Mario"


@pytest.mark.parametrize("field", ["url", "text", "user.id"])
def test_every_text_field_of_a_message_is_bounded(field) -> None:
    content: dict = {"user": {"id": "u"}}
    if field == "user.id":
        content["user"]["id"] = "x" * 101
    else:
        content[field] = "x" * 101
    chat = {"room": "R", "messages": [{"data": {"messageType": "TEXT", "content": content}}]}
    with pytest.raises(InvalidChat, match=rf"message 1: data.content.{field} has 101 characters, over the limit "
                                          r"of 100 \(archive.max_message_chars\)"):
        normalise(chat, max_message_chars=100)


def test_to_datetime_reads_dates_the_driver_returns_as_datetime_ms() -> None:
    import datetime as dt

    from bson.datetime_ms import DatetimeMS

    from archiver.transcript import to_datetime

    assert to_datetime(DatetimeMS(1642604343631)) == dt.datetime(2022, 1, 19, 14, 59, 3, 631000, tzinfo=dt.timezone.utc)
    assert to_datetime(DatetimeMS(253402387200000)) is None, "year 10000: unreadable, never an exception"
    assert to_datetime(DatetimeMS(-62167132800000)) is None, "year 0"


def test_messages_after_the_end_a_second_end_and_replies_to_nothing_are_data_warnings() -> None:
    """The header said "Ended 22:15" with messages at 22:16 and 22:20 below it, and nothing said so."""
    from archiver.samples import make_chat
    import random as random_
    chat, contact = make_chat(random_.Random(3), messages=5)
    end = chat["messages"].pop()
    chat["messages"].insert(1, copy.deepcopy(end))  # an end, then more
    chat["messages"].append(end)
    chat["messages"][2]["data"]["replyTo"] = "does-not-exist"
    t = normalise(chat, contact)
    codes = [(w.code, dict(w.values)) for w in t.notes]
    assert ("end_not_last", {"position": "2"}) in codes
    assert ("reply_missing", {"position": "3", "value": '"does-not-exist"'}) in codes
    last = len(chat["messages"])
    chat["messages"].append(copy.deepcopy(chat["messages"][0]))
    chat["messages"][-1]["data"]["id"] = "late"
    after = [dict(w.values) for w in normalise(chat, contact).notes if w.code == "after_end"]
    assert after == [{"position": str(last + 1), "other": str(last)}]
    for n in range(3):  # many after the end: one warning for them all, not one each
        chat["messages"].append(copy.deepcopy(chat["messages"][0]))
        chat["messages"][-1]["data"]["id"] = f"later-{n}"
    codes = [(w.code, dict(w.values)) for w in normalise(chat, contact).notes if w.code.startswith("after_end")]
    assert codes == [("after_end_many", {"position": str(last + 1), "last": str(last + 4), "other": str(last)})]


# A BSON JavaScript value (bson.Code) is a str subclass that cannot be hashed: text fields take only exact str.
@pytest.mark.parametrize("path, complaint", [
    (("room",), "field 'room' is missing or not a non-empty string .got Code"),
    (("messages", 0, "data", "id"), "message 1 data.id: is Code, expected text"),
    (("messages", 0, "data", "messageType"), "message 1 data.messageType: is Code, expected text"),
    (("messages", 0, "data", "replyTo"), "message 1 data.replyTo: is Code, expected text"),
    (("messages", 0, "data", "content", "user", "id"), "message 1 data.content.user.id: is Code, expected text"),
    (("messages", 0, "data", "content", "user", "name"), "message 1 data.content.user.name: is Code, expected text"),
    (("messages", 0, "data", "content", "text"), "message 1 data.content.text: is Code, expected text"),
])
def test_javascript_code_where_text_belongs_is_refused_with_its_field(path, complaint) -> None:
    chat = copy.deepcopy(SEED_CHAT)
    chat["messages"] = chat["messages"][:1]
    place = chat
    for key in path[:-1]:
        place = place[key]
    place[path[-1]] = Code("x")
    with pytest.raises(InvalidChat, match=complaint):
        normalise(chat)


# -- documented fields of another shape: shown or named, never dropped without a word (review "lossless" F1) ----

def test_content_given_as_the_text_itself_is_the_message_s_text_and_a_bare_user_its_sender() -> None:
    """`"content": "I never agreed to this contract"` was drawn "(no text)", and `"user": "USER_bob"` as nobody,
    with no data warning anywhere."""
    said = "I never agreed to this contract"
    chat = {"room": "R", "messages": [{"data": {"messageType": "TEXT", "content": said}},
                                      {"data": {"messageType": "TEXT", "content": {"text": "hi", "user": "USER_bob"}}}]}
    t = normalise(chat)
    assert t.messages[0].text == said and t.messages[1].sender_id == "USER_bob"
    assert t.messages[1].role == "unknown"  # a bare id says nothing of the role
    assert [(w.code, dict(w.values)) for w in t.notes] == [("content_text", {"position": "1"}),
                                                            ("user_text", {"position": "2"})]
    assert t.warnings == ("message 1: data.content is text, not an object: shown as the message's text",
                          "message 2: data.content.user is text, not an object: read as the sender's id")
    assert not any(said in w for w in t.warnings), "the index keeps the warnings: never the message's text"


def test_content_given_as_text_is_bounded_like_any_text() -> None:
    chat = {"room": "R", "messages": [{"data": {"content": "x" * 101}}]}
    with pytest.raises(InvalidChat, match=r"message 1: data.content has 101 characters, over the limit of 100"):
        normalise(chat, max_message_chars=100)


@pytest.mark.parametrize("path, value, code, shown", [
    (("content",), 42, "not_object", "42"),
    (("content",), ["I never agreed"], "not_object", "[…]"),
    (("content",), Code("f()"), "not_object", "Code"),
    (("content", "user"), 7, "not_object", "7"),
    (("content", "user"), ["u"], "not_object", "[…]"),
    (("content", "user", "isAgent"), "true", "not_boolean", '"true"'),
    (("content", "user", "isAgent"), 1, "not_boolean", "1"),
    (("deliverySuccess",), "false", "not_boolean", '"false"'),
    (("deliverySuccess",), {"ok": False}, "not_boolean", "{…}"),
    (("deliverySuccess",), 0.0, "not_boolean", "0.0"),
])
def test_a_documented_field_of_another_shape_is_a_data_warning_naming_it(path, value, code, shown) -> None:
    """isAgent "true", deliverySuccess "false": kept only when a bool, and nothing said they were not."""
    data: dict = {"messageType": "TEXT", "content": {"text": "hi", "user": {"id": "u", "isAgent": True}},
                  "deliverySuccess": True}
    *parents, name = path
    place = data
    for key in parents:
        place = place[key]
    place[name] = value
    t = normalise({"room": "R", "messages": [{"data": {"content": {"text": "a"}}}, {"data": data}]})
    field = "data." + ".".join(path)
    assert [(w.code, dict(w.values)) for w in t.notes] == [(code, {"position": "2", "field": field, "value": shown})]
    expected = "an object" if code == "not_object" else "true or false"
    assert t.warnings == (f"message 2: {field} is {shown}, not {expected}: not read (the record's source holds it)",)
    m = t.messages[1]
    assert (m.role, m.delivered) == ("unknown" if path[0] == "content" else "agent",
                                     None if path[0] == "deliverySuccess" else True)


def test_a_field_of_another_shape_is_quoted_short() -> None:
    """The value is hostile text (and may be personal): the warning, which the index keeps, quotes 40
    characters of it at most, as JSON (a newline escaped)."""
    value = "line\n" + "x" * 100
    t = normalise({"room": "R", "messages": [{"data": {"deliverySuccess": value}}]})
    assert dict(t.notes[0].values)["value"] == '"line\\n' + "x" * 35 + '"…'


def test_null_or_absent_fields_are_not_data_warnings() -> None:
    chat = {"room": "R", "messages": [
        {"data": {"content": None, "deliverySuccess": None}},
        {"data": {"content": {"text": "x", "user": None}}},
        {"data": {"content": {"text": "x", "user": {"id": "u", "isAgent": None}}, "deliveryErrorReason": None}},
        {"data": {"content": {"text": "x", "user": {"id": "u"}}}},
    ]}
    assert normalise(chat).notes == ()


def test_a_delivery_error_is_a_failed_delivery_unless_the_message_says_it_was_delivered() -> None:
    """deliverySuccess "false" (or absent) beside a deliveryErrorReason: the index counted no failed delivery."""
    shapes = [(False, ""), ("false", "recipient blocked"), (None, "number unknown"), (True, "late receipt"),
              ("false", ""), (True, "")]
    chat = {"room": "R", "messages": [{"data": {"content": {"text": "x"}, "deliveryErrorReason": reason,
                                                **({} if ok is None else {"deliverySuccess": ok})}}
                                      for ok, reason in shapes]}
    t = normalise(chat)
    assert [m.delivery_error for m in t.messages] == [reason for _, reason in shapes]
    assert t.failed_deliveries == 3  # 1: says so; 2 and 3: a reason, and no true; not 4 (it says delivered)

def _said(*senders: tuple[str, object]) -> dict:
    """A chat whose messages are by SENDERS: (id, isAgent as given, or ... for none)."""
    users = [{"id": who} if said is ... else {"id": who, "isAgent": said} for who, said in senders]
    return {"room": "R", "messages": [{"data": {"id": str(n), "messageType": "TEXT",
                                                "content": {"text": "hi", "user": user}}}
                                      for n, user in enumerate(users)]}


def test_a_sender_s_roles_come_from_all_their_messages_not_the_first() -> None:
    """Review "lossless" F2: a greeting sent under an agent's id with no isAgent made the agent 'unknown', in
    neither `agents` nor `customers`: search --agent, holds and erasure (by the index) missed the chat."""
    t = normalise(_said(("B", ...), ("C", "true"), ("B", True), ("C", False), ("N", 1), ("N", ...)))
    assert [(p.user_id, p.roles) for p in t.participants] == [("B", ("agent",)), ("C", ("customer",)), ("N", ())]
    assert [p.role for p in t.participants] == ["agent", "customer", "unknown"]
    # never stated: found under both roles (it cannot be ruled out), but no role is claimed for it
    assert t.agents == ["B", "N"] and t.customers == ["C", "N"]
    assert [m.role for m in t.messages] == ["unknown", "unknown", "agent", "customer", "unknown", "unknown"]
    assert [w.code for w in t.notes] == ["not_boolean", "not_boolean"]  # isAgent "true" and 1: named, not read


def test_a_sender_stated_as_both_agent_and_customer_is_under_both_with_a_data_warning() -> None:
    t = normalise(_said(("X", False), ("A", True), ("X", ...), ("X", True), ("X", False)))
    assert t.agents == ["X", "A"] and t.customers == ["X"]
    assert t.participant("X").roles == ("agent", "customer") and t.participant("X").role == "both"
    assert t.warnings == ('sender "X": an agent in message 4, a customer in message 1',)
    assert [(w.code, dict(w.values)) for w in t.notes] == [
        ("two_roles", {"value": '"X"', "position": "4", "other": "1"})]

"""The normalised transcript: what a chat says, independent of how it was stored.

`normalise` is pure and tolerant of real data (timestamps in five shapes, missing
content, unknown message types, nulls, duplicate ids). It refuses only what
cannot be archived faithfully, raising `InvalidChat` with the place and reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from collections.abc import Mapping  # isinstance checks against typing's alias cost ten times more
from typing import Any, Iterable

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

END_TYPE = "endChat"
KNOWN_TYPES = frozenset({"", "TEXT", "IMAGE", "DOCUMENT", "LINK", END_TYPE})
END_TIME_TOLERANCE = dt.timedelta(seconds=60)  # the contact's endTime and the endChat message may differ this much
# Contact events by kind: a raw name containing the key (case ignored) is of that kind; any other is shown raw.
EVENT_KINDS = (("accept", "accepted"), ("transfer", "transferred"), ("join", "joined"), ("left", "left"),
               ("leave", "left"), ("close", "closed"), ("end", "closed"))
# Data warnings in English, for the record and the index; the PDF words them from its template (warning_<code>).
WARNINGS = {
    "no_data": "message {position}: has no data",
    "unreadable_time": "message {position}: unreadable timestamp {value}",
    "duplicate_id": "message {position}: same id as message {other}",
    "out_of_order": "message {position}: sent before message {other}",
    "unknown_type": "message {position}: unknown message type {value}",
    "end_time_mismatch": "the contact's endTime {value} differs from the endChat message's time {other}",
    "event_time": "contact event {position}: unreadable timestamp {value}",
    "end_not_last": "message {position}: an end message, and the chat went on after it",
    "after_end": "message {position}: after the end message {other}",
    "after_end_many": "messages {position} to {last}: after the end message {other}",
    "reply_missing": "message {position}: in reply to {value}, which no message of this chat has",
    "content_text": "message {position}: data.content is text, not an object: shown as the message's text",
    "user_text": "message {position}: data.content.user is text, not an object: read as the sender's id",
    "not_object": "message {position}: {field} is {value}, not an object: not read (the record's source holds it)",
    "not_boolean": "message {position}: {field} is {value}, not true or false: not read (the record's source holds it)",
    "two_roles": "sender {value}: an agent in message {position}, a customer in message {other}",
}
SHOWN_CHARS = 40  # of a value quoted in a data warning: hostile text, and the index keeps the warnings
ROLES = ("agent", "customer")  # the roles a message states by isAgent true and false
# A participant's `role` in the record and the index, by the roles their messages state (record /4).
ROLE_NAMES = {("agent",): "agent", ("customer",): "customer", ROLES: "both", (): "unknown"}


class InvalidChat(ValueError):
    """The chat cannot be archived as it is; the message says where and why."""


@dataclass(frozen=True)
class Message:
    position: int  # 1-based position in the source array
    message_id: str  # data.id ("" when absent)
    object_id: str  # the message's own _id, as text
    type: str  # data.messageType as given ("" when absent)
    sent_at: dt.datetime | None  # None when ts is missing or unreadable
    sender_id: str
    is_agent: bool | None  # None when the source does not say
    text: str
    url: str
    delivered: bool | None
    delivery_error: str
    seen: Any  # null, bool or a timestamp, kept as given
    reply_to: str
    duplicate_of: int | None = None  # position of an earlier message with the same id
    sender_name: str = ""  # the name the message carries for its sender (content.user.name / nickname)

    @property
    def role(self) -> str:
        return {True: "agent", False: "customer", None: "unknown"}[self.is_agent]

    @property
    def is_end(self) -> bool:
        return self.type == END_TYPE


@dataclass(frozen=True)
class Participant:
    user_id: str
    roles: tuple[str, ...]  # the roles their messages state (ROLES order): one, both, or none
    nickname: str = ""  # from the contact's users
    channel: str = ""
    name: str = ""  # carried in the participant's messages

    @property
    def display_name(self) -> str:
        return self.nickname or self.name

    @property
    def role(self) -> str:
        """agent, customer, both or unknown (no message states one): as the record and the index write it."""
        return ROLE_NAMES[self.roles]


@dataclass(frozen=True)
class Event:
    """A contact event (contact_events[]): accepted, transferred, joined, left, closed, or any other by name."""
    position: int  # 1-based position in contact_events
    name: str  # as given
    kind: str  # accepted / transferred / joined / left / closed / "" (unknown: shown by its name)
    at: dt.datetime | None
    origin: str
    details: tuple[tuple[str, str], ...] = ()  # any other scalar fields, as text


@dataclass(frozen=True)
class DataWarning:
    code: str  # a key of WARNINGS
    values: tuple[tuple[str, str], ...]  # the fields its wording needs

    def __str__(self) -> str:
        return WARNINGS[self.code].format(**dict(self.values))


@dataclass(frozen=True)
class Transcript:
    room: str
    chat_id: str
    ctlive_type: str
    status: str  # "ended", "abandoned" or "interim"
    messages: tuple[Message, ...]
    participants: tuple[Participant, ...]
    channel: str
    service: str
    title: str
    language: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    closed_by: str  # user id from the endChat message, "" if none
    warnings: tuple[str, ...] = field(default=())  # the data warnings in English (str of each of `notes`)
    events: tuple[Event, ...] = field(default=())
    notes: tuple[DataWarning, ...] = field(default=())  # the data warnings, to be worded by a template
    last_message_at: dt.datetime | None = None  # the latest message time
    opened_by: str = ""  # the contact's userID: the customer who opened it, whether or not they wrote
    handled_by: str = ""  # the contact's agentID: the agent who handled it, whether or not they wrote
    present: tuple[str, ...] = ()  # whom else the contact names, who wrote nothing (contact_present)

    def participant(self, user_id: str) -> Participant | None:
        return next((p for p in self.participants if p.user_id == user_id), None)

    @property
    def agents(self) -> list[str]:
        return [p.user_id for p in self.participants if "agent" in found_as(p.roles)]

    @property
    def customers(self) -> list[str]:
        return [p.user_id for p in self.participants if "customer" in found_as(p.roles)]

    @property
    def failed_deliveries(self) -> int:
        """Messages that say they were not delivered, or give a reason and do not say they were."""
        return sum(1 for m in self.messages if m.delivered is False or (m.delivered is None and m.delivery_error))


def has_ended(chat: Mapping[str, Any]) -> bool:
    messages = chat.get("messages")
    if not isinstance(messages, list):
        return False
    return any(_data(m).get("messageType") == END_TYPE for m in messages if isinstance(m, Mapping))


def normalise(
    chat: Mapping[str, Any],
    contact: Mapping[str, Any] | None = None,
    *,
    status: str = "ended",
    max_message_chars: int = 1_000_000,
) -> Transcript:
    """Build the transcript of CHAT (with its optional CONTACT document)."""
    if not isinstance(chat, Mapping):
        raise InvalidChat(f"chat document is {type(chat).__name__}, not an object")
    room = chat.get("room")
    if type(room) is not str or not room.strip():  # exact str: bson.Code is a str that cannot be hashed
        raise InvalidChat(f"field 'room' is missing or not a non-empty string (got {type(room).__name__} {room!r:.80})")
    raw_messages = chat.get("messages", [])
    if raw_messages is None:
        raw_messages = []
    if not isinstance(raw_messages, list):
        raise InvalidChat(f"field 'messages' is {type(raw_messages).__name__}, not an array")
    _check_text(room, "room")
    contact = contact if isinstance(contact, Mapping) else {}
    warnings: list[DataWarning] = []
    messages = _messages(raw_messages, max_message_chars, warnings)
    warnings += _sequence_warnings(messages)
    participants = _participants(messages, contact, warnings)
    end = next((m for m in reversed(messages) if m.is_end), None)
    times = [m.sent_at for m in messages if m.sent_at is not None]
    events = _events(contact.get("contact_events"), warnings)
    _check_end_time(end, to_datetime(contact.get("endTime")), warnings)
    ended = status == "ended"  # an interim or abandoned chat has not ended: no end time is claimed for it
    return Transcript(
        room=room,
        chat_id=_text(chat.get("_id")) or room,
        ctlive_type=_text(chat.get("ctlive_type")) or _text(contact.get("ctlive_type")),
        status=status,
        messages=tuple(messages),
        participants=tuple(participants),
        channel=_channel(contact),
        service=_text(contact.get("serv_name")) or _text(contact.get("servid")),
        title=_text(contact.get("title")),
        language=_text(contact.get("lang")),
        started_at=to_datetime(contact.get("beginTime")) or (min(times) if times else None),
        ended_at=((end.sent_at if end else None) or to_datetime(contact.get("endTime")) or (max(times) if times else None)
                  if ended else None),
        closed_by=end.sender_id if end else "",
        warnings=tuple(str(w) for w in warnings),
        events=tuple(events),
        notes=tuple(warnings),
        last_message_at=max(times) if times else None,
        opened_by=contact_person(contact, "opened_by"),
        handled_by=contact_person(contact, "handled_by"),
        present=tuple(contact_present(contact, (p.user_id for p in participants))),
    )


# The contact's people the index keeps beside the messages' authors, whether or not they wrote (docs/search.md):
# index field -> (contact field, the role holds and search match it as).
CONTACT_PEOPLE = {"opened_by": ("userID", "customer"), "handled_by": ("agentID", "agent")}
# The index entry's {field: when} of the contact fields (CONTACT_PEOPLE, `present`) derived after it was archived,
# from the source contact as it was then (retention.Deletions.derive_contact_people): `verify` names one that
# differs from the record as derived (the contact changed since), still as a problem.
DERIVED_FROM_CONTACT = "derived_from_contact"


def contact_person(contact: Mapping[str, Any], field: str) -> str:
    """The contact's person the index keeps as FIELD (CONTACT_PEOPLE); "" if it does not say."""
    return _text(contact.get(CONTACT_PEOPLE[field][0]))


AGENT_ID_PREFIX = "USER_"  # the platform's agents' user ids (docs/source-schema.md)


def contact_present(contact: Mapping[str, Any], senders: Iterable[str]) -> list[str]:
    """Whom else CONTACT names as taking part, in order, once each: the keys of its `users` (a map keyed by user
    id) and the origins of its events that are agents' ids (a chat transferred to, or joined by, an agent), but
    for SENDERS (the messages' authors: their roles are the messages') and its own people (CONTACT_PEOPLE). The
    index keeps them as `present`, found by --agent (docs/search.md); their role is not stated."""
    users = contact.get("users")
    named = [_text(user) for user in users] if isinstance(users, Mapping) else []
    events = contact.get("contact_events")
    named += [origin for item in (events if isinstance(events, list) else []) if isinstance(item, Mapping)
              and (origin := _text(item.get("origin"))).startswith(AGENT_ID_PREFIX)]
    known = {*senders, *(contact_person(contact, field) for field in CONTACT_PEOPLE)}
    return [user for user in dict.fromkeys(named) if user and user not in known]


def _warning(code: str, **values: Any) -> DataWarning:
    return DataWarning(code, tuple((k, str(v)) for k, v in values.items()))


def _events(raw: Any, warnings: list[DataWarning]) -> list[Event]:
    """The contact's events, as given; one that is not an object is skipped (it is in the record's source)."""
    out: list[Event] = []
    for position, item in enumerate(raw if isinstance(raw, list) else [], start=1):
        if not isinstance(item, Mapping):
            continue
        name = _text(item.get("event"))
        at = to_datetime(item.get("ts"))
        if item.get("ts") is not None and at is None:
            warnings.append(_warning("event_time", position=position, value=f"{item.get('ts')!r:.60}"))
        lowered = name.lower()
        kind = next((k for key, k in EVENT_KINDS if key in lowered), "")
        details = tuple((str(k), _text(v)) for k, v in item.items()
                        if k not in ("event", "ts", "origin") and _text(v) and isinstance(k, str))
        out.append(Event(position, name, kind, at, _text(item.get("origin")), details))
    return out


def _check_end_time(end: Message | None, contact_end: dt.datetime | None, warnings: list[DataWarning]) -> None:
    if end and end.sent_at and contact_end and abs(end.sent_at - contact_end) > END_TIME_TOLERANCE:
        warnings.append(_warning("end_time_mismatch", value=_iso_text(contact_end), other=_iso_text(end.sent_at)))


def _iso_text(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sequence_warnings(messages: list[Message]) -> list[DataWarning]:
    """What the order of the messages says that their header would not: an end that is not the last,
    messages after the end, a reply to a message the chat does not have."""
    ends = [m.position for m in messages if m.is_end]
    found = [_warning("end_not_last", position=p) for p in ends[:-1]]
    after = [m.position for m in messages if ends and m.position > ends[-1]]  # one warning for them all
    if len(after) == 1:
        found.append(_warning("after_end", position=after[0], other=ends[-1]))
    elif after:
        found.append(_warning("after_end_many", position=after[0], last=after[-1], other=ends[-1]))
    ids = {m.message_id for m in messages if m.message_id}
    found += [_warning("reply_missing", position=m.position, value=json.dumps(m.reply_to[:80], ensure_ascii=False))
              for m in messages if m.reply_to and m.reply_to not in ids]
    return found


def _messages(raw: list[Any], max_chars: int, warnings: list[DataWarning]) -> list[Message]:
    out: list[Message] = []
    first_seen: dict[str, int] = {}
    latest: tuple[dt.datetime, int] | None = None  # the latest time so far, and its message
    for position, item in enumerate(raw, start=1):
        where = f"message {position}"
        if not isinstance(item, Mapping):
            raise InvalidChat(f"{where}: the message is {type(item).__name__}, not an object")
        data = _data(item)
        if item.get("data") is not None and not isinstance(item.get("data"), Mapping):
            raise InvalidChat(f"{where}: field 'data' is {type(item['data']).__name__}, not an object")
        if not data:
            warnings.append(_warning("no_data", position=position))
        # A documented field of another shape is read where it can be (text as the text, a bare user as its id)
        # and said so; else named, not read: nothing in it vanishes from the transcript without a word.
        given = data.get("content")
        content = _object(given, "content_text", "data.content", position, warnings)
        text = (_bounded(given, where, "data.content", max_chars) if type(given) is str
                else _bounded(content.get("text"), where, "data.content.text", max_chars))
        given = content.get("user")
        user = _object(given, "user_text", "data.content.user", position, warnings)
        sender_id = (_bounded(given, where, "data.content.user", max_chars) if type(given) is str
                     else _bounded(user.get("id"), where, "data.content.user.id", max_chars))
        is_agent = _boolean(user.get("isAgent"), "data.content.user.isAgent", position, warnings)
        delivered = _boolean(data.get("deliverySuccess"), "data.deliverySuccess", position, warnings)
        message_id = _bounded(data.get("id"), where, "data.id", max_chars)
        ts = data.get("ts")
        sent_at = to_datetime(ts)
        if ts is not None and sent_at is None:
            warnings.append(_warning("unreadable_time", position=position, value=f"{ts!r:.60}"))
        if sent_at is not None:
            if latest and sent_at < latest[0]:
                warnings.append(_warning("out_of_order", position=position, other=latest[1]))
            else:
                latest = (sent_at, position)
        duplicate_of = first_seen.get(message_id) if message_id else None
        if duplicate_of:
            warnings.append(_warning("duplicate_id", position=position, other=duplicate_of))
        elif message_id:
            first_seen[message_id] = position
        kind = _bounded(data.get("messageType"), where, "data.messageType", max_chars)
        if kind not in KNOWN_TYPES:
            warnings.append(_warning("unknown_type", position=position, value=json.dumps(kind[:80], ensure_ascii=False)))
        out.append(
            Message(
                position=position,
                message_id=message_id,
                object_id=_text(item.get("_id")),
                type=kind,
                sent_at=sent_at,
                sender_id=sender_id,
                is_agent=is_agent,
                text=text,
                url=_bounded(content.get("url"), where, "data.content.url", max_chars),
                delivered=delivered,
                delivery_error=_bounded(data.get("deliveryErrorReason"), where, "data.deliveryErrorReason",
                                        max_chars),
                seen=data.get("messageSeen"),
                reply_to=_bounded(data.get("replyTo"), where, "data.replyTo", max_chars),
                duplicate_of=duplicate_of,
                sender_name=_sender_name(user, where, max_chars),
            )
        )
    return out


def _object(value: Any, as_text: str, name: str, position: int, warnings: list[DataWarning]) -> Mapping[str, Any]:
    """VALUE, field NAME of message POSITION, when an object; else {}: text with the warning AS_TEXT (the caller
    reads it), any other value but null with `not_object`."""
    if isinstance(value, Mapping):
        return value
    if type(value) is str:
        warnings.append(_warning(as_text, position=position))
    elif value is not None:
        warnings.append(_warning("not_object", position=position, field=name, value=_shown(value)))
    return {}


def _boolean(value: Any, name: str, position: int, warnings: list[DataWarning]) -> bool | None:
    """VALUE, field NAME of message POSITION, when true or false; else None, with `not_boolean` but for null."""
    if value is None or isinstance(value, bool):
        return value
    warnings.append(_warning("not_boolean", position=position, field=name, value=_shown(value)))
    return None


def _shown(value: Any) -> str:
    """VALUE as a data warning quotes it: text as JSON, cut to SHOWN_CHARS; a number; else its shape or type."""
    if type(value) is str:  # (bson.Code, a str, by its type)
        cut = value[:SHOWN_CHARS]
        return json.dumps(cut, ensure_ascii=False) + ("…" if len(cut) < len(value) else "")
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)[:SHOWN_CHARS]
    if isinstance(value, (list, Mapping)):
        return "[…]" if isinstance(value, list) else "{…}"
    return type(value).__name__


def _sender_name(user: Mapping[str, Any], where: str, max_chars: int) -> str:
    """The sender's name as the message carries it, if it does (first of name, nickname, displayName)."""
    key = next((k for k in ("name", "nickname", "displayName") if isinstance(user.get(k), str) and user[k]), None)
    return _bounded(user[key], where, f"data.content.user.{key}", max_chars) if key else ""


def _data(message: Mapping[str, Any]) -> Mapping[str, Any]:
    data = message.get("data")
    return data if isinstance(data, Mapping) else {}


def stated_sender(data: Any) -> tuple[Any, Any]:
    """(sender id, isAgent) as a message's DATA gives them, as `_messages` reads them: content.user's id and
    isAgent, or content.user itself (no role) when it is text; (None, None) otherwise. For readers of the
    source that make no transcript (the source hold check)."""
    content = data.get("content") if isinstance(data, Mapping) else None
    user = content.get("user") if isinstance(content, Mapping) else None
    if type(user) is str:
        return user, None
    return (user.get("id"), user.get("isAgent")) if isinstance(user, Mapping) else (None, None)


def roles_by_sender(said: Iterable[tuple[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Each sender's roles from all their messages, SAID as (sender id, isAgent as given) per message: an agent
    if any says isAgent true, a customer if any says false (only a boolean states a role; none: ()). Senders in
    the order of their first message; "" is no sender. (The transcript's and the source hold check's rule.)"""
    values: dict[str, set[bool]] = {}
    for sender, is_agent in said:
        if sender:
            values.setdefault(sender, set()).update([is_agent] if isinstance(is_agent, bool) else [])
    return {sender: tuple(role for role, value in zip(ROLES, (True, False)) if value in stated)
            for sender, stated in values.items()}


def found_as(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The roles search, holds and erasure find a sender of stated ROLES under: those, or both where no message
    states one (it cannot be ruled out)."""
    return roles or ROLES


def _participants(messages: list[Message], contact: Mapping[str, Any],
                  warnings: list[DataWarning]) -> list[Participant]:
    users = contact.get("users") if isinstance(contact.get("users"), Mapping) else {}
    out: list[Participant] = []
    for sender, roles in roles_by_sender((m.sender_id, m.is_agent) for m in messages).items():
        if roles == ROLES:
            first = {role: next(m.position for m in messages if m.sender_id == sender and m.role == role)
                     for role in ROLES}
            warnings.append(_warning("two_roles", value=json.dumps(sender[:80], ensure_ascii=False),
                                     position=first["agent"], other=first["customer"]))
        info = users.get(sender) if isinstance(users.get(sender), Mapping) else {}
        out.append(Participant(
            user_id=sender,
            roles=roles,
            nickname=_text(info.get("nickname")),
            channel=_text(info.get("channel")),
            name=next((n.sender_name for n in messages if n.sender_id == sender and n.sender_name), ""),
        ))
    return out


def _channel(contact: Mapping[str, Any]) -> str:
    users = contact.get("users")
    if isinstance(users, Mapping):
        for info in users.values():
            if isinstance(info, Mapping) and _text(info.get("channel")):
                return _text(info.get("channel"))
    return ""


SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(value: str, where: str) -> None:
    bad = SURROGATE.search(value)
    if bad:
        raise InvalidChat(
            f"{where}: invalid UTF-8 (unpaired surrogate U+{ord(bad.group()):04X} at character {bad.start()})"
        )


def _bounded(value: Any, where: str, name: str, max_chars: int) -> str:
    """Text field NAME of a message, refused when longer than MAX_CHARS (archive.max_message_chars)."""
    if value is None:
        return ""
    if type(value) is str and (value.isascii() or not SURROGATE.search(value)) and len(value) <= max_chars:
        return value  # the common case, without making the place's name
    text = _field_text(value, f"{where} {name}")
    if len(text) > max_chars:
        raise InvalidChat(f"{where}: {name} has {len(text):,} characters, over the limit of {max_chars:,} "
                          "(archive.max_message_chars)")
    return text


def _field_text(value: Any, where: str) -> str:
    """A text field: strings pass (checked for bad UTF-8), None is "", other scalars as text. Only an exact
    str is text: a str subclass (bson.Code, JavaScript) would be read as text and cannot be hashed."""
    if value is None:
        return ""
    if type(value) is str:
        _check_text(value, where)
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise InvalidChat(f"{where}: is {type(value).__name__}, expected text")


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = str(value)
    return "" if SURROGATE.search(text) else text


_NUMERIC = re.compile(r"^\s*-?\d+(\.\d+)?\s*$")


def read_receipt(seen: Any) -> tuple[bool | None, dt.datetime | None, str | None]:
    """A message's `messageSeen` as stated: (seen, when, as given). Null says nothing (None, None, None); a
    boolean is itself; a positive number is the time it was seen, in milliseconds (True, that time); any other
    value (0, text, a document) is (None, None, its text), never read as a time it does not state."""
    if seen is None or isinstance(seen, bool):
        return seen, None, None
    when = to_datetime(seen) if isinstance(seen, (int, float)) and seen > 0 else None
    return (True, when, None) if when is not None else (None, None, str(seen))


def to_datetime(value: Any) -> dt.datetime | None:
    """A UTC datetime from ms-since-epoch (float, int, Int64, numeric text), ISO text or a Date
    (datetime or DatetimeMS); None when unreadable or outside Python's range."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, DatetimeMS):  # a BSON date the driver could not make a datetime (year 0, 10000)
        return _from_millis(float(int(value)))
    if isinstance(value, (int, float, Int64)):
        try:
            return _from_millis(float(value))
        except OverflowError:  # an integer no float holds: no time either
            return None
    if isinstance(value, str):
        if _NUMERIC.match(value):
            return _from_millis(float(value))
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    return None


def _from_millis(ms: float) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None

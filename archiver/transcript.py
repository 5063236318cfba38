"""The normalised transcript: what a chat says, independent of how it was stored.

`normalise` is pure and tolerant of real data (timestamps in five shapes, missing
content, unknown message types, nulls, duplicate ids). It refuses only what
cannot be archived faithfully, raising `InvalidChat` with the place and reason.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

END_TYPE = "endChat"


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

    @property
    def role(self) -> str:
        return {True: "agent", False: "customer", None: "unknown"}[self.is_agent]

    @property
    def is_end(self) -> bool:
        return self.type == END_TYPE


@dataclass(frozen=True)
class Participant:
    user_id: str
    role: str  # agent / customer / unknown
    nickname: str = ""
    channel: str = ""


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
    warnings: tuple[str, ...] = field(default=())

    @property
    def agents(self) -> list[str]:
        return [p.user_id for p in self.participants if p.role == "agent"]

    @property
    def customers(self) -> list[str]:
        return [p.user_id for p in self.participants if p.role == "customer"]

    @property
    def failed_deliveries(self) -> int:
        return sum(1 for m in self.messages if m.delivered is False)


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
    if not isinstance(room, str) or not room.strip():
        raise InvalidChat(f"field 'room' is missing or not a non-empty string (got {room!r:.80})")
    raw_messages = chat.get("messages", [])
    if raw_messages is None:
        raw_messages = []
    if not isinstance(raw_messages, list):
        raise InvalidChat(f"field 'messages' is {type(raw_messages).__name__}, not an array")
    _check_text(room, "room")
    contact = contact if isinstance(contact, Mapping) else {}
    warnings: list[str] = []
    messages = _messages(raw_messages, max_message_chars, warnings)
    end = next((m for m in reversed(messages) if m.is_end), None)
    times = [m.sent_at for m in messages if m.sent_at is not None]
    return Transcript(
        room=room,
        chat_id=_text(chat.get("_id")) or room,
        ctlive_type=_text(chat.get("ctlive_type")) or _text(contact.get("ctlive_type")),
        status=status,
        messages=tuple(messages),
        participants=tuple(_participants(messages, contact)),
        channel=_channel(contact),
        service=_text(contact.get("serv_name")) or _text(contact.get("servid")),
        title=_text(contact.get("title")),
        language=_text(contact.get("lang")),
        started_at=to_datetime(contact.get("beginTime")) or (min(times) if times else None),
        ended_at=(end.sent_at if end else None) or to_datetime(contact.get("endTime")) or (max(times) if times else None),
        closed_by=end.sender_id if end else "",
        warnings=tuple(warnings),
    )


def _messages(raw: list[Any], max_chars: int, warnings: list[str]) -> list[Message]:
    out: list[Message] = []
    first_seen: dict[str, int] = {}
    for position, item in enumerate(raw, start=1):
        where = f"message {position}"
        if not isinstance(item, Mapping):
            raise InvalidChat(f"{where}: is {type(item).__name__}, not an object")
        data = _data(item)
        if item.get("data") is not None and not isinstance(item.get("data"), Mapping):
            raise InvalidChat(f"{where}: field 'data' is {type(item['data']).__name__}, not an object")
        content = data.get("content") if isinstance(data.get("content"), Mapping) else {}
        user = content.get("user") if isinstance(content.get("user"), Mapping) else {}
        text = _bounded(content.get("text"), where, "data.content.text", max_chars)
        message_id = _bounded(data.get("id"), where, "data.id", max_chars)
        ts = data.get("ts")
        sent_at = to_datetime(ts)
        if ts is not None and sent_at is None:
            warnings.append(f"{where}: unreadable timestamp {ts!r:.60}")
        duplicate_of = first_seen.get(message_id) if message_id else None
        if duplicate_of:
            warnings.append(f"{where}: same id as message {duplicate_of}")
        elif message_id:
            first_seen[message_id] = position
        out.append(
            Message(
                position=position,
                message_id=message_id,
                object_id=_text(item.get("_id")),
                type=_bounded(data.get("messageType"), where, "data.messageType", max_chars),
                sent_at=sent_at,
                sender_id=_bounded(user.get("id"), where, "data.content.user.id", max_chars),
                is_agent=user.get("isAgent") if isinstance(user.get("isAgent"), bool) else None,
                text=text,
                url=_bounded(content.get("url"), where, "data.content.url", max_chars),
                delivered=data.get("deliverySuccess") if isinstance(data.get("deliverySuccess"), bool) else None,
                delivery_error=_bounded(data.get("deliveryErrorReason"), where, "data.deliveryErrorReason",
                                        max_chars),
                seen=data.get("messageSeen"),
                reply_to=_bounded(data.get("replyTo"), where, "data.replyTo", max_chars),
                duplicate_of=duplicate_of,
            )
        )
    return out


def _data(message: Mapping[str, Any]) -> Mapping[str, Any]:
    data = message.get("data")
    return data if isinstance(data, Mapping) else {}


def _participants(messages: list[Message], contact: Mapping[str, Any]) -> list[Participant]:
    users = contact.get("users") if isinstance(contact.get("users"), Mapping) else {}
    seen: dict[str, Participant] = {}
    for m in messages:
        if m.sender_id and m.sender_id not in seen:
            info = users.get(m.sender_id) if isinstance(users.get(m.sender_id), Mapping) else {}
            seen[m.sender_id] = Participant(
                user_id=m.sender_id,
                role=m.role,
                nickname=_text(info.get("nickname")),
                channel=_text(info.get("channel")),
            )
    return list(seen.values())


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
    text = _field_text(value, f"{where} {name}")
    if len(text) > max_chars:
        raise InvalidChat(f"{where}: {name} has {len(text):,} characters, over the limit of {max_chars:,} "
                          "(archive.max_message_chars)")
    return text


def _field_text(value: Any, where: str) -> str:
    """A text field: strings pass (checked for bad UTF-8), None is "", other scalars as text."""
    if value is None:
        return ""
    if isinstance(value, str):
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
        return _from_millis(float(value))
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

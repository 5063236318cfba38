"""The lossless JSON record: the normalised view beside the untouched source documents.

The source documents are written as canonical MongoDB Extended JSON (v2), so every
BSON type survives (ObjectId, Int64 vs double, dates, decimals, binaries) and the
original field order is kept. The bytes are deterministic for the same inputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from typing import Any, Callable, Mapping

from bson import Code, DatetimeConversion, DBRef, ObjectId, Regex, json_util

from archiver.transcript import SURROGATE, Event, InvalidChat, Message, Transcript, read_receipt
from archiver.visible import utf8_safe, visible

# /2 (issue 11) adds, keeping every field of /1: participants[].name and display_name, messages[].sender_name,
# events, last_message_at, warning_codes; and ended_at is null for a chat that has not ended (interim, abandoned).
# /3: a source document with a field name that starts with $ is written as DOLLAR_DOCUMENT (see _document).
# /4: participants[].role from all of a participant's messages (agent, customer, both, unknown), not the first's.
# /5 adds opened_by and handled_by (the contact's userID and agentID), present (whom else it names: contact_present)
# and each message's read receipt (seen, seen_at, seen_as_given), which the PDF states.
FORMAT = "ctlive-archive-record/5"
EXTJSON_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True, tzinfo=dt.timezone.utc)
# Reading: a date out of Python's range (before year 1, after 9999) comes back as a DatetimeMS, not an error.
_READ_OPTIONS = EXTJSON_OPTIONS.with_options(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def _first_invalid_text(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, if any."""
    return _first(value, path, lambda v: isinstance(v, str) and SURROGATE.search(v) is not None)


def _first(value: Any, path: str, bad: Callable[[Any], bool]) -> str | None:
    """The place of the first value (or key) in VALUE that is BAD, if any: its path, as text that can be
    shown and stored (a name's bytes that are not UTF-8 as \\xNN, control characters as [U+XXXX])."""
    found = _first_path(value, path, bad)
    return visible(utf8_safe(found)) if found is not None else None


def _first_path(value: Any, path: str, bad: Callable[[Any], bool]) -> str | None:
    if bad(value):
        return path
    for key, item in _parts(value):
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and bad(key):
            return where
        found = _first_path(item, where, bad)
        if found is not None:
            return found
    return None


def _parts(value: Any) -> Any:
    """The (name, value) pairs inside VALUE: a document's fields, a list's items, and those of the BSON
    values that hold others (a regex's pattern, a DBRef's fields, a code's scope)."""
    if isinstance(value, dict):
        return value.items()
    if isinstance(value, list):
        return enumerate(value)
    if isinstance(value, Regex):
        return [("pattern", value.pattern)]
    if isinstance(value, DBRef):
        return value.as_doc().items()
    if isinstance(value, Code) and value.scope is not None:
        return [("$scope", value.scope)]
    return ()


def source_digest(chat: Mapping[str, Any], contact: Mapping[str, Any] | None) -> str:
    """SHA-256 of the source documents; equal digests mean nothing changed in the source."""
    return hashlib.sha256(source_json(chat, contact)).hexdigest()


def source_json(chat: Mapping[str, Any], contact: Mapping[str, Any] | None) -> bytes:
    """The record's `source` as bytes: written once, straight from the documents (the same bytes as
    _dump of their extended_json, without the dumps, loads, dumps round trip)."""
    documents = {"chat": chat, "contact": contact}
    try:
        text = json.dumps(_extended(documents), **_COMPACT)
        return text.encode("utf-8")
    except UnicodeEncodeError:  # invalid UTF-8 in the source, decoded as lone surrogates
        raise _invalid_text(documents) from None
    except _TooBig as exc:
        where = _first(documents, "", lambda v: type(v) is int and not -INT64 <= v < INT64)
        raise InvalidChat(f"{where}: the integer {exc.args[0]} is beyond 64 bits; BSON has no such value, "
                          "so it cannot be archived as it is") from None


def build_record(
    transcript: Transcript,
    chat: Mapping[str, Any],
    contact: Mapping[str, Any] | None,
    *,
    version: int,
    generated_at: dt.datetime,
    redaction: Mapping[str, Any] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    expected_digest: str = "",
    source: bytes | None = None,
) -> tuple[bytes, str]:
    """The record as UTF-8 bytes (compact, fixed key order), and the source digest.

    REDACTION (archiver.redaction.RedactionNote.describe) says what was masked in CHAT and CONTACT;
    ATTACHMENTS (archiver.attachments.Attachment.describe) what became of each message's file.
    EXPECTED_DIGEST is the source digest the caller computed already (the archive pass, for the index):
    a record whose source hashes otherwise is refused rather than stored under a digest it does not have.
    SOURCE is source_json(CHAT, CONTACT) when the caller has it already (the archive pass wrote it for the
    digest): written once per chat, not again here.
    """
    if source is None:
        source = source_json(chat, contact)
    elif not expected_digest:
        raise ValueError("the source bytes came without the digest to check them against")
    digest = hashlib.sha256(source).hexdigest()
    if expected_digest and digest != expected_digest:
        raise ValueError(f"the source digest is {digest}, the archive pass computed {expected_digest}")
    record = {
        "format": FORMAT,
        "room": transcript.room,
        "version": version,
        "status": transcript.status,
        "generated_at": _iso(generated_at),
        "source_sha256": digest,
        **({"redaction": dict(redaction)} if redaction is not None else {}),
        "transcript": _transcript_view(transcript),
        **({"attachments": attachments} if attachments else {}),
    }
    # "source" is the last key: its bytes, written once above, close the record.
    return _dump(record)[:-1] + b',"source":' + source + b"}", digest


INT32 = 2**31  # a canonical int below it (and at least -INT32) is $numberInt, else $numberLong (as json_util)
INT64 = 2**63  # and beyond this, nothing: BSON has no larger integer


class _TooBig(ValueError):
    """An integer beyond 64 bits: source_json names where it is."""


def _extended(value: Any) -> Any:
    """VALUE as canonical Extended JSON values, as json_util.dumps converts it, with the types of almost every
    field (exact str, bool, None, dict, list, int, float, ObjectId) converted here without json_util's
    look-ups; any other value (Int64, dates, binaries ...) by json_util's own converter. A document with a
    field name that starts with $ is written as DOLLAR_DOCUMENT (see _document)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        return _document(value)
    if kind is list:
        return [_extended(item) for item in value]
    if kind is int:
        if -INT32 <= value < INT32:
            return {"$numberInt": str(value)}
        if not -INT64 <= value < INT64:  # checked only here, off the common path
            raise _TooBig(value)
        return {"$numberLong": str(value)}
    if kind is float and math.isfinite(value):
        return {"$numberDouble": repr(value)}
    if kind is ObjectId:
        return {"$oid": str(value)}
    if kind is DBRef:  # its fields as json_util writes them, each value converted here (see _document)
        return {name: _extended(item) for name, item in value.as_doc().items()}
    if kind is Code and value.scope is not None:
        return {"$code": str(value), "$scope": _document(value.scope)}
    if hasattr(value, "items"):  # SON, other mappings: documents, as json_util takes them
        return _document(value)
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        return [_extended(item) for item in value]
    return json_util._json_convert(value, EXTJSON_OPTIONS)


# MongoDB 5+ stores field names that start with $: written as they are, {"$numberLong": "5"} would read
# as Int64(5) (the same bytes, the same digest) and {"$oid": "x"} not at all. Such a document is written
# as {DOLLAR_DOCUMENT: [[name, value], ...]}, its fields in order; read_source undoes it. So are the
# documents inside a DBRef (its $id, its other fields) and a code's scope (the scope itself included).
DOLLAR_DOCUMENT = "$ctlive.document"


def _document(value: Mapping[Any, Any]) -> dict[Any, Any] | dict[str, list[list[Any]]]:
    converted = {key: _extended(item) for key, item in value.items()}
    for key in value:
        if type(key) is str and key[:1] == "$":
            return {DOLLAR_DOCUMENT: [[name, item] for name, item in converted.items()]}
    return converted


def read_source(record: bytes) -> dict[str, Any]:
    """The source documents of a record (UTF-8 bytes) as BSON values again: its Extended JSON read by bson's
    json_util, documents with $-prefixed field names (DOLLAR_DOCUMENT) restored."""
    source = json_util.loads(record, json_options=_READ_OPTIONS)["source"]
    return _restored(source)


def _restored(value: Any) -> Any:
    if isinstance(value, list):
        return [_restored(item) for item in value]
    if type(value) is DBRef:
        doc = value.as_doc()
        extra = {name: _restored(item) for name, item in doc.items() if name not in ("$ref", "$id", "$db")}
        return DBRef(value.collection, _restored(value.id), value.database, **extra)
    if type(value) is Code and value.scope is not None:
        return Code(str(value), _restored(value.scope))
    if type(value) is not dict:
        return value
    if list(value) == [DOLLAR_DOCUMENT] and isinstance(value[DOLLAR_DOCUMENT], list):
        return {name: _restored(item) for name, item in value[DOLLAR_DOCUMENT]}
    return {key: _restored(item) for key, item in value.items()}


_COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}


def _dump(value: Any) -> bytes:
    text = json.dumps(value, **_COMPACT)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # invalid UTF-8 in the source, decoded as lone surrogates
        raise _invalid_text(value) from None


def _invalid_text(value: Any) -> InvalidChat:
    where = _first_invalid_text(value, "")
    return InvalidChat(f"{where}: invalid UTF-8 (unpaired surrogate); cannot be archived as text")


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if value else None


def _transcript_view(t: Transcript) -> dict[str, Any]:
    return {
        "chat_id": t.chat_id,
        "ctlive_type": t.ctlive_type,
        "channel": t.channel,
        "service": t.service,
        "title": t.title,
        "language": t.language,
        "started_at": _iso(t.started_at),
        "ended_at": _iso(t.ended_at),
        "last_message_at": _iso(t.last_message_at),
        "closed_by": t.closed_by,
        "opened_by": t.opened_by,
        "handled_by": t.handled_by,
        "present": list(t.present),
        "participants": [
            {"user_id": p.user_id, "role": p.role, "nickname": p.nickname, "channel": p.channel, "name": p.name,
             "display_name": p.display_name}
            for p in t.participants
        ],
        "message_count": len(t.messages),
        "messages": [_message_view(m) for m in t.messages],
        "events": [_event_view(e) for e in t.events],
        "warnings": list(t.warnings),
        "warning_codes": [{"code": w.code, **dict(w.values)} for w in t.notes],
    }


def _event_view(e: Event) -> dict[str, Any]:
    return {"position": e.position, "event": e.name, "kind": e.kind, "at": _iso(e.at), "origin": e.origin,
            "details": dict(e.details)}


def _message_view(m: Message) -> dict[str, Any]:
    return {
        "position": m.position,
        "id": m.message_id,
        "type": m.type,
        "sent_at": _iso(m.sent_at),
        "sender_id": m.sender_id,
        "sender_name": m.sender_name,
        "role": m.role,
        "text": m.text,
        "url": m.url,
        "delivered": m.delivered,
        "delivery_error": m.delivery_error,
        "reply_to": m.reply_to,
        "duplicate_of": m.duplicate_of,
        **_seen_view(m.seen),
    }


def _seen_view(seen: Any) -> dict[str, Any]:
    stated, when, given = read_receipt(seen)
    return {"seen": stated, "seen_at": _iso(when), "seen_as_given": given}

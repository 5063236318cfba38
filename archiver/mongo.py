"""MongoDB clients: real ones through pymongo, or in-process stand-ins (mongomock://NAME)."""

from __future__ import annotations

import datetime as dt
import functools
import re
import threading
import time
from typing import Any

import mongomock
import pymongo
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database
from pymongo.errors import ConnectionFailure
from pymongo.mongo_client import MongoClient

from archiver.redact import redact

_STAND_INS: dict[str, mongomock.MongoClient] = {}
_CLIENTS: dict[str, MongoClient] = {}
_LOCK = threading.Lock()
MOCK_SCHEME = "mongomock://"


def _accept_sort(add: Any) -> Any:
    """mongomock 4.3 predates pymongo 4.11, whose bulk operations also pass `sort` (unused here)."""
    @functools.wraps(add)
    def without_sort(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        return add(self, *args, **kwargs)

    return without_sort


_BULK = mongomock.collection.BulkOperationBuilder
_BULK.add_replace = _accept_sort(_BULK.add_replace)
_BULK.add_update = _accept_sort(_BULK.add_update)


def connect(uri: str) -> MongoClient:
    """The client for URI, shared by everything in this process that asks for the same URI."""
    with _LOCK:
        if uri.startswith(MOCK_SCHEME):
            name = uri[len(MOCK_SCHEME):] or "default"
            if name not in _STAND_INS:
                _STAND_INS[name] = mongomock.MongoClient(tz_aware=True)
            return _STAND_INS[name]
        if uri not in _CLIENTS:
            # 10 s to find a server unless the URI says otherwise (pymongo's keywords would override it).
            timeout = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 10_000}
            _CLIENTS[uri] = pymongo.MongoClient(uri, tz_aware=True, **timeout)
        return _CLIENTS[uri]


class Unreachable(RuntimeError):
    """A MongoDB server that a setting points at did not answer (the CLI's exit 1, saying it may be retried)."""


def reachable(uri: str, setting: str) -> MongoClient:
    """The client for URI once a server has answered; Unreachable, naming SETTING, if none does
    within the server selection timeout (10 s unless the URI says otherwise)."""
    client = connect(uri)
    try:
        client.admin.command("ping")
    except ConnectionFailure as exc:
        raise Unreachable(f"{setting} ({redact(uri)}): could not be reached ({unreachable_reason(exc)})") from None
    return client


def index_uri(config: Any) -> tuple[str, str]:
    """Where the archive index lives, and the setting that says so (index.uri, else mongodb.uri)."""
    return (config["index.uri"], "index.uri") if config["index.uri"] else (config["mongodb.uri"], "mongodb.uri")


def unreachable_reason(exc: ConnectionFailure) -> str:
    """The driver's message in one line: what each server answered, without the topology dump."""
    text = str(exc).split(", Topology Description:")[0]
    return redact(re.sub(r" \(configured timeouts:[^)]*\)", "", text))


# Invalid UTF-8 as lone surrogates, dates outside Python's range as DatetimeMS (see tolerant).
TOLERANT = CodecOptions(tz_aware=True, unicode_decode_error_handler="surrogateescape",
                        datetime_conversion=DatetimeConversion.DATETIME_AUTO)
# Documents as the bytes the server returned (RawBSONDocument), decoded with TOLERANT by archiver.lossless.
STORED = TOLERANT.with_options(document_class=RawBSONDocument)


def tolerant(db: Database) -> Database:
    """DB decoding invalid UTF-8 as lone surrogates, and dates outside Python's range (year 0,
    year 10000) as DatetimeMS, instead of failing the read of a whole batch.

    The stand-in cannot hold such bytes (and rejects the options), so it is left as is.
    """
    if isinstance(db, mongomock.database.Database):
        return db
    return db.with_options(codec_options=TOLERANT)


def server_ms(db: Database) -> int:
    """The database server's clock in epoch milliseconds, for times that other workers compare.

    One cheap round trip (`hello` reports the server's `localTime`). The in-process
    stand-in has no such command, and its server is this process: its clock is ours.
    """
    if isinstance(db, mongomock.database.Database):
        return time.time_ns() // 1_000_000
    answer = db.command("hello", codec_options=CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS))
    return int(answer["localTime"])


def stored_time(value: Any) -> dt.datetime | None:
    """A time read back from the index (or a signed record) as an aware UTC datetime, None if VALUE is none:
    a datetime (naive ones are UTC, as MongoDB keeps them), or ISO 8601 text (a record's; and what the
    wire-protocol stand-in nx-27017 0.8.1 returns for a top-level date written with $set)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)

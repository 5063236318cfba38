"""Structured logs: one JSON object per line, events with fields, never message text or keys."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from archiver.redact import redact

LOGGER = logging.getLogger("archiver")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            **_fields(record),
        }
        # URIs in errors keep no password: hidden in each text before JSON escapes it (a password with a quote
        # is no longer itself once written as JSON), and in the line again
        return redact(json.dumps(_redacted(line), ensure_ascii=False, default=lambda value: redact(str(value))))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return redact(f"{record.levelname.lower()}: {record.getMessage()} {fields}".rstrip())


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """An event's fields; a library's record of an exception gives its type and message, not a traceback."""
    fields = dict(getattr(record, "fields", {}))
    if record.exc_info and record.exc_info[1] is not None:
        fields.setdefault("error", f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
    return fields


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def adopt(*names: str, level: int = logging.WARNING) -> None:
    """Send the records of other libraries' loggers NAMES (APScheduler, warnings) through our handler,
    so that every line on stderr has the same format."""
    logging.captureWarnings(True)
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = LOGGER.handlers
        logger.setLevel(level)
        logger.propagate = False


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    LOGGER.log(level, name, extra={"fields": fields})

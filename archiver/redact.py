"""Credentials never leave in a message: the userinfo of every URI in a text becomes `***`.

Used for every message that can hold a URI: configuration errors, the CLI's error line,
every log line, errors recorded in MongoDB and storage errors (endpoint URLs).
"""

from __future__ import annotations

import re

# MongoDB URIs: everything up to the last "@" of the URI, so that a password mistyped with
# an unescaped "/" is hidden too (the driver also splits there). Other schemes: userinfo as
# RFC 3986 has it (no "/"), so that "@" in an object key (s3://bucket/room@example.com) stays.
_MONGODB = re.compile(r"(mongodb(?:\+srv)?://)[^\s'\"<>]*@")
_OTHER = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>/@]*@")


def redact(text: str) -> str:
    """TEXT with the user name and password of every URI in it replaced by ***."""
    return _OTHER.sub(r"\1***@", _MONGODB.sub(r"\1***@", text))

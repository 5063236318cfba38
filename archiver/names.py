"""Room ids become file names and object keys: safe, bounded and one-to-one, even on a file system
that ignores case."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping

MAX_LENGTH = 120
HASH_CHARS = 32  # 128 bits
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(room: str) -> str:
    """ROOM itself when it is a safe name in canonical case, else a cleaned prefix, `~` and a hash of ROOM.

    Canonical case is upper case before the last `_` and lower case after it, as in the platform's
    CHAT_DEFAULT_<uuid>: a name kept as it is follows from its lower-case form, so two kept names never
    differ only in case, and a kept name has no `~`; hashed names differ in their lower-case hash.
    """
    cleaned = _UNSAFE.sub("_", room).lstrip(".")[:MAX_LENGTH] or "room"
    if cleaned == room and room == _canonical_case(room):
        return room
    return f"{cleaned}~{hashlib.sha256(room.encode('utf-8', 'surrogatepass')).hexdigest()[:HASH_CHARS]}"


def _canonical_case(name: str) -> str:
    head, sep, tail = name.rpartition("_")
    return head.upper() + sep + tail.lower()


def version_folder(room: str, version: int) -> str:
    """Where a version's objects live in the store: all of them, whatever attempt stored them."""
    return f"{safe_name(room)}/v{version}"


def recorded_folders(entry: Mapping[str, Any]) -> list[str]:
    """Every folder an index ENTRY's attempts may have stored objects in: the one recorded when it was
    begun (entries begun before folders were recorded: the naming of that time) and today's."""
    first = entry.get("folder") or f"{_safe_name_64(entry['room'])}/v{entry['version']}"
    return list(dict.fromkeys([first, version_folder(entry["room"], entry["version"])]))


def _safe_name_64(room: str) -> str:
    """safe_name as it was before issue 8 (64-bit hash, case-sensitive): old entries' folders."""
    cleaned = _UNSAFE.sub("_", room).lstrip(".")[:MAX_LENGTH] or "room"
    if cleaned == room and not re.search(r"~[0-9a-f]{16}$", room) and room not in (".", ".."):
        return room
    return f"{cleaned}~{hashlib.sha256(room.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"

"""Room ids become file names and object keys: safe, bounded and one-to-one, even on a file system
that ignores case."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Mapping

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
    return _hashed(room, cleaned)


def file_stem(room: str, present: Mapping[str, str] | None = None, suffixes: Iterable[str] = ("",)) -> str:
    """The stem of ROOM's files in an output folder (render and export --out: `<stem>.pdf`, ...; a retrieval's
    and a case bundle's `<stem>-v<N>`; SUFFIXES are what follows the stem): ROOM itself when it is a safe name,
    whatever its case, else safe_name's cleaned prefix, `~` and hash.

    PRESENT maps the names already in that folder, case-folded, to themselves (see folded). When one of ours
    equals one of them but for case (another room's: r1.pdf beside R1.pdf), ROOM gets the hashed name: a
    folder's names stay one-to-one on a file system that ignores case, and once copied or unzipped onto one.
    Its own name (the same room written before) is kept, and the writer refuses to overwrite it.
    """
    cleaned = _UNSAFE.sub("_", room).lstrip(".")[:MAX_LENGTH] or "room"
    if cleaned != room:
        return _hashed(room, cleaned)
    for suffix in suffixes:
        there = (present or {}).get((room + suffix).casefold())
        if there is not None and there != room + suffix:
            return _hashed(room, cleaned)
    return room


def folded(names: Iterable[str]) -> dict[str, str]:
    """NAMES (a folder's) by their case-folded form, for file_stem."""
    return {name.casefold(): name for name in names}


def _hashed(room: str, cleaned: str) -> str:
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

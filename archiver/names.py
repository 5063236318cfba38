"""Room ids become file names and object keys: safe, bounded and still one-to-one."""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_HASHED = re.compile(r"~[0-9a-f]{16}$")


def safe_name(room: str) -> str:
    """ROOM itself when it is already a safe name, else a cleaned prefix plus a hash of ROOM.

    The hash suffix keeps the mapping one-to-one: a name without one can only come
    from the identical room, and a room that merely looks hashed is hashed again.
    """
    cleaned = _UNSAFE.sub("_", room).lstrip(".")[:MAX_LENGTH] or "room"
    if cleaned == room and not _HASHED.search(room) and room not in (".", ".."):
        return room
    return f"{cleaned}~{hashlib.sha256(room.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"

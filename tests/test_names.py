from __future__ import annotations

import pytest

from archiver.names import MAX_LENGTH, safe_name

HOSTILE = ["../../etc/passwd", "a/b", "a\\b", "..", ".", "", "/abs", "a\x00b", "~", "x" * 5000,
           "CHAT DEFAULT", "ümlaut", "a_b", "a_b~0123456789abcdef", ".hidden"]


@pytest.mark.parametrize("room", HOSTILE)
def test_names_are_safe(room: str) -> None:
    name = safe_name(room)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert len(name) <= MAX_LENGTH + 17


def test_plain_room_ids_are_kept() -> None:
    room = "CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a"
    assert safe_name(room) == room


def test_different_rooms_never_share_a_name() -> None:
    rooms = HOSTILE + ["a_b~" + safe_name("a/b").split("~")[1], "a?b", "a*b", "x" * 5001, "x" * MAX_LENGTH]
    names = [safe_name(r) for r in rooms]
    assert len(set(names)) == len(set(rooms))

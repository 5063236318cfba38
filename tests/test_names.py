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
    assert len(name) <= MAX_LENGTH + 1 + 32  # "~" and a 128-bit hash


def test_plain_room_ids_are_kept() -> None:
    room = "CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a"
    assert safe_name(room) == room


def test_different_rooms_never_share_a_name() -> None:
    rooms = HOSTILE + ["a_b~" + safe_name("a/b").split("~")[1], "a?b", "a*b", "x" * 5001, "x" * MAX_LENGTH]
    names = [safe_name(r) for r in rooms]
    assert len(set(names)) == len(set(rooms))


CASES = ["A", "a", "Ab", "aB", "AB", "ab", "CHAT_DEFAULT_x", "chat_default_x", "Chat_Default_X", "CHAT_DEFAULT_X",
         "R1", "r1", "a_B", "A_b", "a~" + "0" * 16, "A~" + "0" * 16]


def test_names_differ_on_a_case_insensitive_file_system() -> None:
    folded = [safe_name(room).casefold() for room in CASES]
    assert len(set(folded)) == len(CASES), sorted(zip(folded, CASES))


def test_hashed_names_carry_at_least_128_bits() -> None:
    for room in ("a/b", "A", "x" * 500):
        suffix = safe_name(room).rsplit("~", 1)[1]
        assert len(suffix) * 4 >= 128 and int(suffix, 16) >= 0

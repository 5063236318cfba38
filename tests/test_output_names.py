"""Output files are named `<room>.pdf`, `<room>.json`, `<room>-v<N>/` (CONTRACT.md) for every room id that is
safe as a file name, whatever its case (R1, TEST_ROOM, an upper-case UUID); render, export --out, retrieve and
bundles name them with one function (names.file_stem), and a folder's names stay one-to-one when case is
ignored: a room whose name differs from one already in the folder only by case gets the hashed name."""

from __future__ import annotations

import hashlib
import random
import zipfile
from pathlib import Path

from bson import json_util

from archiver.cli import main
from archiver.names import MAX_LENGTH, safe_name
from archiver.pipeline import Archiver
from archiver.samples import make_chat
from conftest import write_toml
from retrieval_helpers import CLI_KEYS
from test_pipeline import recent_ms, seed

def hashed(room: str) -> str:
    return f"{room}~{hashlib.sha256(room.encode()).hexdigest()[:32]}"


SAFE = ["R1", "TEST_ROOM", "CHAT_DEFAULT_8857106A-55B8-4C47-A5AF-A3AAE7530E5A", "room-1", "a.b",
        "CHAT_DEFAULT_8857106a-55b8-4c47-a5af-a3aae7530e5a", "x" * MAX_LENGTH]


def test_a_safe_room_id_is_its_own_name_and_an_unsafe_one_is_hashed() -> None:
    from archiver.names import file_stem
    for room in SAFE:
        assert file_stem(room) == room
    for room in ("a/b", "..", ".hidden", "", "x" * (MAX_LENGTH + 1), "a b", "ümlaut", "a~b"):
        assert file_stem(room) == safe_name(room) and "~" in file_stem(room), room


def test_a_name_that_differs_from_one_in_the_folder_only_by_case_is_hashed() -> None:
    from archiver.names import file_stem, folded
    assert file_stem("r1", folded(["R1.pdf", "other.json"]), (".pdf", ".json")) == hashed("r1")
    assert file_stem("r1", folded(["R1-v1"]), ("-v1",)) == hashed("r1")
    assert file_stem("r1", folded(["R1-v2"]), ("-v1",)) == "r1"  # R1-v2 and r1-v1 do not collide
    assert file_stem("R1", folded(["R1.pdf"]), (".pdf",)) == "R1"  # its own file: the writer refuses to overwrite it
    assert file_stem("r1", folded(["R1.PDF.tmp"]), (".pdf",)) == "r1"


def _toml(tmp_path: Path, config) -> Path:
    return write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*CLI_KEYS, "source.database",
                                                                        "signing.certificate", "signing.key")})


def test_render_names_files_after_the_room_and_keeps_case_clashes_apart(tmp_path, make_config, capsys) -> None:
    rng = random.Random(3)
    rooms = ["R1", "TEST_ROOM", SAFE[2], "r1"]
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join(json_util.dumps(make_chat(rng, messages=3, room=r)[0]) for r in rooms) + "\n")
    toml = _toml(tmp_path, make_config())
    out = tmp_path / "out"
    assert main(["--config", str(toml), "render", str(source), "--out", str(out)]) == 0, capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    stems = ["R1", "TEST_ROOM", SAFE[2], hashed("r1")]
    assert names == sorted(s + x for s in stems for x in (".pdf", ".json", ".json.p7s")), names
    assert len({n.casefold() for n in names}) == len(names)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["--config", str(toml), "render", str(source), "--out", str(out)]) == 1  # nothing overwritten
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_export_retrieve_and_bundles_use_the_room_as_the_name(tmp_path, make_config, keys, capsys) -> None:
    config = make_config()
    rng = random.Random(5)
    rooms = ["R1", "r1"]
    seed(config, [make_chat(rng, messages=4, room=r, start_ms=recent_ms(30)) for r in rooms])
    assert Archiver(config).run_pass().archived == 2
    toml = _toml(tmp_path, config)
    key = str(keys["legal.key.pem"])

    def cli(*argv: str) -> int:
        return main(["--config", str(toml), *argv])

    assert cli("export", "R1", "--out", str(tmp_path / "exp")) == 0, capsys.readouterr()
    assert cli("export", "r1", "--out", str(tmp_path / "exp")) == 0, capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted(
        s + x for s in ("R1", hashed("r1")) for x in (".pdf", ".json", ".json.p7s"))

    for room in rooms:
        assert cli("retrieve", room, "--key", key, "--out", str(tmp_path / "ret"), "--reason", "case 5") == 0
    assert sorted(p.name for p in (tmp_path / "ret").iterdir()) == sorted(["R1-v1", f"{hashed('r1')}-v1"])

    bundle = tmp_path / "case.zip"
    assert cli("retrieve", "--bundle", str(bundle), *rooms, "--key", key, "--reason", "case 5", "--workers", "1",
               "--no-progress") == 0, capsys.readouterr()
    folders = {n.split("/")[1] for n in zipfile.ZipFile(bundle).namelist() if n.startswith("rooms/")}
    assert folders == {"R1-v1", f"{hashed('r1')}-v1"}, folders

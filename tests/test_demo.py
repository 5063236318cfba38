"""archiver demo goes on to search, retrieve, verify and bundle one of its chats, printing where every file is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from archiver.samples import SEED_CHAT
from test_bundle import _passes, _run_readme

ROOM = SEED_CHAT["room"]


def _demo(cwd: Path) -> subprocess.CompletedProcess:
    # In its own process: the demo's in-process stand-in must start empty.
    return subprocess.run([sys.executable, "-m", "archiver.cli", "demo", "--dir", "demo"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_demo_searches_retrieves_verifies_and_bundles_a_chat(tmp_path) -> None:
    run = _demo(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    demo = tmp_path / "demo"
    search = out[out.index("$ archiver --config"):out.index("entries\n")]
    assert "search --from 2022-01-01 --to 2022-01-31" in search and ROOM in search
    (folder,) = (demo / "retrieved").glob(f"*/{ROOM}-v1")
    for name in ("transcript.pdf", "record.json", "record.json.p7s", "verification.json"):
        assert str(folder / name) in out and (folder / name).is_file()
    assert json.loads((folder / "verification.json").read_text())["ok"] is True
    assert re.search(rf"verify {ROOM} --key \S+ --workers 1\nOK: 1 entries, 3 objects checked", out)
    (bundle,) = (demo / "bundles").glob("case-*.zip")
    assert f"bundle written: {bundle}  (2 room(s)" in out
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unzipped")
    assert all(f"  {name}" in out for name in names) and f"rooms/{ROOM}-v1/transcript.pdf" in names
    assert _passes(_run_readme(tmp_path / "unzipped", demo / "keys" / "ca.crt.pem"))
    assert "audit log intact: 6 entries" in out  # search, retrieve (started, ok), verify, bundle (started, ok)
    config = demo / "archiver.toml"
    assert f"$ archiver --config {config} retrieve {ROOM}" in out and config.is_file()
    # typed into a shell, the same commands see an empty stand-in: the file and the output say so
    assert "live\n# only inside the demo's own process" in config.read_text()
    assert "in-process stand-in, gone when it ends" in out


def test_demo_runs_again_in_the_same_directory_and_says_why_verify_objects(tmp_path) -> None:
    assert _demo(tmp_path).returncode == 0
    again = _demo(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "holds objects of an earlier demo run" in again.stdout
    assert len(list((tmp_path / "demo" / "bundles").glob("case-*.zip"))) == 2

"""archiver demo goes on to search, retrieve, verify and bundle one of its chats, printing where every file is."""

from __future__ import annotations

import json
import tomllib
import re
import subprocess
import sys
import uuid
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
    assert f"bundle written: {bundle}  (2 chat(s) in 2 version(s)" in out
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unzipped")
    assert all(f"  {name}" in out for name in names) and f"rooms/{ROOM}-v1/transcript.pdf" in names
    assert _passes(_run_readme(tmp_path / "unzipped", demo / "keys" / "ca.crt.pem"))
    assert "audit log intact: 6 entries" in out  # search, retrieve (started, ok), verify, bundle (started, ok)
    config = demo / "legal-team.toml"
    assert f"$ archiver --config {config} retrieve {ROOM}" in out and config.is_file()
    # typed into a shell, the same commands see an empty stand-in: the file and the output say so
    assert "live\n# only inside the demo's own process" in config.read_text()
    # The legal team's configuration: no transcript signing key (its host decrypts), its own bundle signer, which
    # signed the bundle's manifest; the archiving host's configuration keeps the signing key.
    legal, archiving = tomllib.loads(config.read_text()), tomllib.loads((demo / "archiver.toml").read_text())
    assert "key" not in legal["signing"] and "key" in archiving["signing"] and "bundle" not in archiving
    assert legal["bundle"] == {"signing_certificate": str(demo / "keys" / "bundle.crt.pem"),
                               "signing_key": str(demo / "keys" / "bundle.key.pem")}
    assert "manifest signed (SHA256SUMS.p7s) by the bundle signer CN=Case bundle signing (development)" in out
    assert "WARNING: the transcript signing key" not in out and "WARNING: the manifest" not in out
    assert "in-process stand-in, gone when it ends" in out


def test_demo_runs_again_in_the_same_directory_and_says_why_verify_objects(tmp_path) -> None:
    assert _demo(tmp_path).returncode == 0
    again = _demo(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "holds objects of an earlier demo run" in again.stdout
    assert len(list((tmp_path / "demo" / "bundles").glob("case-*.zip"))) == 2


def test_demo_ignores_archiver_settings_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    """Every step runs on the demo's own settings: an operator's ARCHIVER_* (as docker-compose sets them),
    ARCHIVER_CONFIG or --config neither breaks it nor lets it write into another database or store."""
    from archiver.cli import main
    from archiver.mongo import connect

    elsewhere = f"mongomock://elsewhere-{uuid.uuid4().hex}"
    monkeypatch.setenv("ARCHIVER_MONGODB__URI", elsewhere)
    monkeypatch.setenv("ARCHIVER_INDEX__URI", elsewhere)
    monkeypatch.setenv("ARCHIVER_STORAGE__URL", f"file://{tmp_path / 'other-store'}")
    monkeypatch.setenv("ARCHIVER_LOGGING__LEVEL", "DEBUG")
    monkeypatch.setenv("ARCHIVER_CONFIG", str(tmp_path / "missing.toml"))
    ignored = ["--config", str(tmp_path / "missing.toml")]
    assert main([*ignored, "demo", "--dir", str(tmp_path / "demo")]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert ROOM in out[out.index("search --from"):out.index("entries\n")], "the demo's search found its chats"
    assert "audit log intact: 6 entries" in out
    assert connect(elsewhere).list_database_names() == [], "nothing written into the environment's database"
    assert not (tmp_path / "other-store").exists()


def test_demo_runs_twice_in_one_process(tmp_path, capsys) -> None:
    from archiver.cli import main

    assert main(["demo", "--dir", str(tmp_path / "first")]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["demo", "--dir", str(tmp_path / "second")]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "Archive pass: 8 archived, 1 quarantined" in out
    assert "audit log intact: 6 entries" in out, "a fresh audit log: the first demo's entries are not in it"

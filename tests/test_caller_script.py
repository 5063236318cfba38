"""`archiver.cli.main` called from a script, as the contract allows: the worker processes (archive pass, export,
`verify --key`) never import the caller's main module. A script without an `if __name__ == "__main__"` guard runs
once, and a script fed on stdin (`python - <<EOF`, whose main module is no file) archives and verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import write_toml

ROOT = Path(__file__).resolve().parents[1]

# Seeds an ended chat and a running one, then drives the CLI in-process; each run of the body is logged.
BODY = """\
import os, random
from archiver.cli import main
from archiver.mongo import connect
from archiver.samples import SEED_CHAT, make_chat
with open("bodies.log", "a") as log:
    log.write(f"{{os.getpid()}}\\n")
chats = connect({uri!r})[{source!r}]["chats"]
chats.insert_one(dict(SEED_CHAT))
running, _ = make_chat(random.Random(5), messages=4, ended=False)
chats.insert_one(running)
config = ["--config", {config!r}]
codes = [main([*config, "run", "--no-progress"]),
         main([*config, "export", running["room"], "--force"]),
         main([*config, "verify", "--all", "--key", {key!r}, "--workers", "2", "--no-progress"])]
print("codes", codes)
"""


def _script(tmp_path: Path, make_config, keys, guarded: bool) -> str:
    config = make_config().as_dict()
    wanted = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format"]
    toml = write_toml(tmp_path / "archiver.toml", {k: config[k] for k in wanted})
    body = BODY.format(uri=config["mongodb.uri"], source=config["source.database"], config=str(toml),
                       key=str(keys["legal.key.pem"]))
    return 'if __name__ == "__main__":\n' + textwrap.indent(body, "    ") if guarded else body


def _run(tmp_path: Path, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or k == "ARCHIVER_TEST_MONGODB_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, *argv], input=stdin, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)


def _assert_all_done(tmp_path: Path, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "codes [0, 0, 0]" in done.stdout, done.stdout + done.stderr
    assert done.stdout.count("codes") == 1, "the script's output appears once"
    assert len((tmp_path / "bodies.log").read_text().splitlines()) == 1, "the script's body ran once"
    assert "archived 1" in done.stdout and "died" not in done.stdout + done.stderr
    assert len(list((tmp_path / "store").rglob("*.pdf.p7m"))) == 2, "both chats archived"


@pytest.mark.slow
def test_a_script_without_a_main_guard_runs_once(tmp_path, make_config, keys) -> None:
    (tmp_path / "checker.py").write_text(_script(tmp_path, make_config, keys, guarded=False))
    _assert_all_done(tmp_path, _run(tmp_path, ["checker.py"]))


@pytest.mark.slow
def test_a_script_fed_on_stdin_archives_and_verifies(tmp_path, make_config, keys) -> None:
    _assert_all_done(tmp_path, _run(tmp_path, ["-"], stdin=_script(tmp_path, make_config, keys, guarded=True)))

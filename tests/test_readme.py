"""The README's commands work as printed: what a new user copies must run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import require_tool

README = Path(__file__).resolve().parents[1] / "README.md"


def _shell_blocks_after(heading: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(heading)
    section = text[start:text.index("\n## ", start)]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_readme_opens_and_verifies_an_archive_with_outside_tools(tmp_path: Path) -> None:
    for tool in ("openssl", "pdfsig", "certutil"):
        require_tool(tool)
    # The demo in its own process: its in-process stand-in must start empty.
    demo = subprocess.run([sys.executable, "-m", "archiver.cli", "demo", "--dir", "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    blocks = _shell_blocks_after("Anyone holding a recipient key")
    assert len(blocks) == 2, "the README shows how to open an archive, then how to trust the CA"
    script = "set -euo pipefail\n" + "\n".join(blocks)
    stored = sorted((tmp_path / "demo" / "store").rglob("*"))
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted((tmp_path / "demo" / "store").rglob("*")) == stored, "nothing written into the store"
    assert "Signature is Valid" in run.stdout and "Total document signed" in run.stdout
    assert "Certificate is Trusted" in run.stdout
    assert "Verification successful" in run.stderr  # openssl cms -verify


def test_the_cli_contract_lists_every_command_and_exit_code() -> None:
    from archiver.commands import COMMANDS
    from archiver.commands import common

    contract = (README.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `archiver (\w+)", contract, re.M))
    assert listed == set(COMMANDS), "docs/cli.md lists exactly the commands there are"
    codes = {int(c) for c in re.findall(r"^\| (\d) \|", contract, re.M)}
    assert codes == {common.OK, common.ITEMS_FAILED, common.USAGE, common.VERIFY_FAILED} == {0, 1, 2, 3}, "the contract's"

"""A non-editable install works: templates ship inside the package, found wherever the config file is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from archiver import config as config_module
from archiver.samples import SEED_CHAT
from conftest import write_toml

ROOT = Path(__file__).resolve().parents[1]


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel pip builds from a clean copy of the sources (no build folders left in the checkout)."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ("archiver", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, f"(setuptools < 70.1 needs the `wheel` package: make test installs it)\n{built.stderr}"
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def _venv_with(wheel: Path, tmp_path: Path) -> Path:
    """A fresh venv holding the wheel; its dependencies come from this venv's site-packages (no download)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # A plain path line: this venv's own packages (the wheel) come first, and the editable
    # install of the checkout in the shared site-packages is not activated.
    Path(site, "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True)
    return venv


@pytest.mark.slow
def test_a_wheel_install_renders_from_another_folder(tmp_path: Path, keys) -> None:
    venv = _venv_with(_build_wheel(tmp_path), tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write_toml(elsewhere / "archiver.toml", {
        "signing.certificate": str(keys["signing.crt.pem"]), "signing.key": str(keys["signing.key.pem"])})
    chat = elsewhere / "chat.json"
    chat.write_text((ROOT / "tests" / "data" / "seed-fixed.txt").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ARCHIVER_CONFIG")}
    where = subprocess.run([venv / "bin" / "python", "-c", "import archiver; print(archiver.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), f"the installed wheel, not the checkout: {where}"
    done = subprocess.run([venv / "bin" / "archiver", "--config", str(config), "render", str(chat), "--out", "out"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (elsewhere / "out" / f"{SEED_CHAT['room']}.pdf").stat().st_size > 1000


def test_pyproject_packages_every_subpackage() -> None:
    """The package list is explicit (templates/ is mapped into the package): a new subpackage must be listed."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert sorted(setuptools["packages"]) == sorted(find_packages(str(ROOT), include=["archiver*"])
                                                    + ["archiver.templates"])
    assert setuptools["package-dir"]["archiver.templates"] == "templates"


def test_a_config_copied_elsewhere_still_finds_the_default_template(tmp_path: Path) -> None:
    copy = tmp_path / "etc" / "archiver.toml"
    copy.parent.mkdir()
    shutil.copy(ROOT / "config" / "archiver.example.toml", copy)
    template = Path(config_module.load(copy, environ={})["render.template"])
    assert template.is_file() and template.name == "transcript.toml"
    assert config_module.load(None, environ={})["render.template"] == str(template)
    assert Path(config_module.load(copy, environ={"ARCHIVER_RENDER__TEMPLATE": "mine.toml"})["render.template"]) \
        == copy.parent / "mine.toml", "a template that is set stays relative to the config file"

"""A legal team keeps its decryption key encrypted: `retrieve`, `retrieve --bundle` and `verify --key` open it with
--key-password-file (the first line of that file) or, on a terminal, the password typed at a prompt; without either
they stop with exit 2 saying how to give it (review "crypto", 2026-11-27: an encrypted key could not be used at all,
"not a usable PEM private key")."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from retrieval_helpers import archive_samples, run_cli

PASSWORD = "correct horse battery staple"


def _encrypted(keys, tmp_path: Path, form: serialization.PrivateFormat) -> Path:
    """The development legal key written encrypted under PASSWORD, its certificate beside it in the file."""
    key = serialization.load_pem_private_key(keys["legal.key.pem"].read_bytes(), None)
    path = tmp_path / f"legal-{'pkcs8' if form == serialization.PrivateFormat.PKCS8 else 'pkcs1'}.key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form,
                                       serialization.BestAvailableEncryption(PASSWORD.encode()))
                     + keys["legal.crt.pem"].read_bytes())
    path.chmod(0o600)
    return path


def _password_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.fixture
def archived(make_config, keys):
    config = make_config()
    (entry,) = archive_samples(config, count=1)
    return config, entry


@pytest.mark.parametrize("form", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL])
def test_an_encrypted_key_opens_with_its_password_file(archived, keys, tmp_path, form) -> None:
    config, entry = archived
    key = _encrypted(keys, tmp_path, form)
    assert b"ENCRYPTED" in key.read_bytes()
    password = _password_file(tmp_path, PASSWORD + "\n")  # a file's last line break is no part of it
    assert run_cli(config, tmp_path, "retrieve", entry["room"], "--key", str(key), "--key-password-file",
                   str(password), "--out", str(tmp_path / "out"), "--reason", "case 7") == 0
    assert any((tmp_path / "out").rglob("*.pdf"))
    assert run_cli(config, tmp_path, "verify", entry["room"], "--key", str(key), "--key-password-file",
                   str(password)) == 0
    assert run_cli(config, tmp_path, "retrieve", "--bundle", str(tmp_path / "case.zip"), entry["room"], "--key",
                   str(key), "--key-password-file", str(password), "--reason", "case 7", "--workers", "1") == 0


def test_an_encrypted_key_without_its_password_says_how_to_give_it(archived, keys, tmp_path, capsys) -> None:
    config, entry = archived
    key = _encrypted(keys, tmp_path, serialization.PrivateFormat.PKCS8)
    for argv in (["retrieve", entry["room"], "--out", str(tmp_path / "out"), "--reason", "case 7"], ["verify"]):
        assert run_cli(config, tmp_path, *argv, "--key", str(key)) == 2
        err = capsys.readouterr().err
        assert f"--key {key}: the key is encrypted: give its password with --key-password-file FILE" in err, err
    assert not (tmp_path / "out").exists()


def test_a_wrong_password_is_said_and_never_shown(archived, keys, tmp_path, capsys) -> None:
    config, entry = archived
    key = _encrypted(keys, tmp_path, serialization.PrivateFormat.PKCS8)
    wrong = _password_file(tmp_path, "Tr0ub4dor&3-not-it\n")
    assert run_cli(config, tmp_path, "verify", "--key", str(key), "--key-password-file", str(wrong)) == 2
    out = capsys.readouterr()
    assert f"--key {key}: the password given does not open it" in out.err, out.err
    assert "Tr0ub4dor" not in out.err + out.out


@pytest.mark.parametrize("text, complaint", [(None, "cannot read"), ("\nsecret\n", "its first line is empty")])
def test_an_unusable_password_file_is_exit_2_naming_it(archived, keys, tmp_path, capsys, text, complaint) -> None:
    config, _ = archived
    key = _encrypted(keys, tmp_path, serialization.PrivateFormat.PKCS8)
    path = tmp_path / "password.txt" if text is None else _password_file(tmp_path, text)
    assert run_cli(config, tmp_path, "verify", "--key", str(key), "--key-password-file", str(path)) == 2
    assert f"--key-password-file {path}: {complaint}" in capsys.readouterr().err


def test_a_terminal_is_asked_for_the_password(archived, keys, tmp_path, monkeypatch) -> None:
    config, entry = archived
    key = _encrypted(keys, tmp_path, serialization.PrivateFormat.PKCS8)
    asked = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or PASSWORD)
    assert run_cli(config, tmp_path, "verify", entry["room"], "--key", str(key)) == 0
    assert asked == [f"password of --key {key}: "]


def test_a_password_file_for_a_key_that_is_not_encrypted_is_no_error(archived, keys, tmp_path) -> None:
    config, entry = archived
    password = _password_file(tmp_path, "unused\n")
    assert run_cli(config, tmp_path, "verify", entry["room"], "--key", str(keys["legal.key.pem"]),
                   "--key-password-file", str(password)) == 0

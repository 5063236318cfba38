"""The command line as users and outside checks drive it (docs/cli.md)."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bson import json_util

from archiver.cli import main
from archiver.commands import COMMANDS
from archiver.mongo import connect
from archiver.samples import SEED_CHAT, make_chat
from conftest import write_toml

DATA = Path(__file__).parent / "data"


def _toml(tmp_path: Path, make_config, **overrides) -> Path:
    config = make_config(**overrides).as_dict()
    wanted = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format", "logging.level"]
    return write_toml(tmp_path / "archiver.toml", {k: config[k] for k in wanted})


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_options_and_an_example(command: str, capsys) -> None:
    assert main([*([command] if command else []), "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "usage: archiver" in out


def test_bad_usage_is_exit_2(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["run", "--limit", "0"]) == 2
    assert "--limit must be 1 or more" in capsys.readouterr().err


def test_command_line_bytes_that_are_not_utf8_are_refused_naming_the_option(tmp_path, make_config) -> None:
    """As a shell passes `search --room $'\\xff'` and `hold place --case $'\\xff'`: exit 2, the option named,
    nothing done (no search printed, no hold placed)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "LC_ALL": "C.UTF-8"}
    config = str(_toml(tmp_path, make_config)).encode()
    for argv, named in (([b"search", b"--room", b"\xff"], "--room: '\\xff'"),
                        ([b"hold", b"place", b"--room", b"R", b"--case", b"K\xfe", b"--reason", b"r"], "--case: 'K\\xfe'")):
        done = subprocess.run([sys.executable.encode(), b"-m", b"archiver.cli", b"--config", config, *argv],
                              capture_output=True, env=env, timeout=60)
        assert done.returncode == 2 and done.stdout == b"", done
        assert f"archiver: error: {named} is not valid UTF-8".encode() in done.stderr, done.stderr


def test_keys_init_prints_config_and_never_overwrites(tmp_path: Path, capsys) -> None:
    assert main(["keys", "init", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert 'recipients = ["' in out
    # README.md: the private keys are readable by their owner only (the certificates by anyone)
    written = {p.name: (b"PRIVATE KEY" in p.read_bytes(), p.stat().st_mode & 0o777) for p in (tmp_path / "k").iterdir()}
    assert {name for name, (private, _) in written.items() if private} == {"signing.key.pem", "legal.key.pem", "bundle.key.pem"}
    assert all(mode & 0o077 == 0 for private, mode in written.values() if private), written
    assert all(mode & 0o044 for private, mode in written.values() if not private), written
    assert main(["keys", "init", str(tmp_path / "k")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def _verify_outputs(out_dir: Path, room: str, keys) -> None:
    pdf, record, signature = (out_dir / f"{room}{s}" for s in (".pdf", ".json", ".json.p7s"))
    report = subprocess.run(["pdfsig", str(pdf)], capture_output=True, text=True).stdout
    assert "Signature is Valid." in report and "Total document signed" in report
    verified = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signature),
                               "-content", str(record), "-CAfile", str(keys["ca.crt.pem"]), "-out", "/dev/null"],
                              capture_output=True)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(record.read_bytes())["room"] == room


def test_render_the_seed_as_printed_names_the_broken_place(tmp_path, make_config, keys, capsys) -> None:
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "render", str(DATA / "seed-as-printed.txt"), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "0 rendered, 1 failed" in out
    assert re.search(r"document 1 \(line \d+, column \d+\): .*','", out), out
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_render_the_fixed_seed(tmp_path, make_config, keys, capsys) -> None:
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "render", str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "o")]) == 0
    assert "1 rendered, 0 failed" in capsys.readouterr().out
    _verify_outputs(tmp_path / "o", SEED_CHAT["room"], keys)


def test_render_skips_an_unreadable_document_and_renders_the_rest(tmp_path, make_config, keys, capsys) -> None:
    rng = random.Random(4)
    first, second = make_chat(rng, messages=4)[0], make_chat(rng, messages=4)[0]
    lines = [json_util.dumps(first), '{"room": "broken", "messages": [', json_util.dumps(second)]
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join(lines) + "\n")
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "render", str(source), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "2 rendered, 1 failed" in out and "document 2 (line 2" in out
    for chat in (first, second):
        _verify_outputs(tmp_path / "o", chat["room"], keys)


def test_render_refuses_to_overwrite(tmp_path, make_config, capsys) -> None:
    config = _toml(tmp_path, make_config)
    args = ["--config", str(config), "render", str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert main(args) == 1
    assert "already exist" in capsys.readouterr().out


def _seed(make_config, chats) -> None:
    config = make_config()
    db = connect(config["mongodb.uri"])[config["source.database"]]
    for chat, contact in chats:
        db.chats.insert_one(chat)
        if contact:
            db.contacts.insert_one(contact)


def test_run_reports_and_exit_codes(tmp_path, make_config, capsys) -> None:
    rng = random.Random(5)
    start = (time.time() - 600) * 1000
    good = make_chat(rng, messages=5, start_ms=start)
    broken = {"_id": "BROKEN", "room": "BROKEN",
              "messages": [{"data": {"messageType": "endChat", "ts": start, "content": {"text": []}}}]}
    _seed(make_config, [good, (broken, None)])
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "run", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "archived 1," in out and "quarantined 1" in out
    assert "QUARANTINED BROKEN: message 1 data.content.text: is list" in out
    assert main(["--config", str(config), "run"]) == 0
    assert "archived 0," in capsys.readouterr().out


def test_export_interim_and_plaintext(tmp_path, make_config, keys, capsys) -> None:
    chat, contact = make_chat(random.Random(6), messages=4, ended=False, start_ms=(time.time() - 60) * 1000)
    _seed(make_config, [(chat, contact)])
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "export", chat["room"]]) == 1
    assert "has not ended; --force" in capsys.readouterr().out
    assert main(["--config", str(config), "export", chat["room"], "--force", "--out", str(tmp_path / "case")]) == 0
    out = capsys.readouterr().out
    assert "archived as version 1 (interim)" in out
    _verify_outputs(tmp_path / "case", chat["room"], keys)
    assert main(["--config", str(config), "export", "NO_SUCH_ROOM"]) == 1
    assert "not found" in capsys.readouterr().out


def test_export_of_an_archived_room_states_its_archive_time_and_when_the_copy_was_signed(tmp_path, make_config, keys,
                                                                                        capsys) -> None:
    """Review "court" C10: `export --out` of a room archived earlier and unchanged signed a fresh copy whose PDF read
    "Version 1 / Archived at <the export's time>": two signed PDFs of version 1 stating two archive times. The copy
    states the version's own archive time, and apart, when this copy was signed."""
    from archiver.mongo import stored_time

    chat, contact = make_chat(random.Random(61), messages=3, start_ms=(time.time() - 600) * 1000)
    _seed(make_config, [(chat, contact)])
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "run"]) == 0
    entry = connect(make_config()["mongodb.uri"])[make_config()["index.database"]].archive_index.find_one(
        {"room": chat["room"]})
    time.sleep(1.1)  # the copy is signed later than the version was archived (days, in practice)
    assert main(["--config", str(config), "export", chat["room"], "--out", str(tmp_path / "copy")]) == 0
    out = capsys.readouterr().out
    assert "already archived, unchanged as version 1" in out and "a fresh signature" in out
    text = subprocess.run(["pdftotext", "-raw", str(tmp_path / "copy" / f"{chat['room']}.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    archived = stored_time(entry["archived_at"]).strftime("%Y-%m-%d %H:%M:%S")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Archived at")]
    assert archived in line, (archived, line)
    (signed,) = [ln for ln in text.splitlines() if ln.startswith("This copy signed at")]
    assert archived not in signed, signed
    _verify_outputs(tmp_path / "copy", chat["room"], keys)


def test_indexes_are_listed_and_created_only_when_asked(tmp_path, make_config, capsys) -> None:
    config = _toml(tmp_path, make_config)
    chats = connect(make_config()["mongodb.uri"])[make_config()["source.database"]].chats
    chats.create_index([("room", 1)], name="the_platforms_own")  # found by its keys, whatever its name
    assert main(["--config", str(config), "indexes"]) == 0
    out = capsys.readouterr().out
    assert "messages.data.messageType: 1, messages.data.ts: 1" in out
    assert out.count("MISSING") == 3 and "{room: 1}  name=archiver_room  (load a chat by room): present" in out, out
    assert "archiver_end_ts" not in chats.index_information()
    assert main(["--config", str(config), "indexes", "--create"]) == 0
    created = capsys.readouterr().out
    assert "archiver_end_ts" in chats.index_information() and "created chats.archiver_end_ts" in created
    assert "created chats.archiver_room" not in created, "its keys are indexed already, under another name"
    assert main(["--config", str(config), "indexes"]) == 0
    assert "MISSING" not in capsys.readouterr().out


def test_demo_runs_end_to_end(tmp_path, capsys) -> None:
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "quarantined CHAT_BROKEN" in out
    assert len(list((tmp_path / "demo" / "store").rglob("*.pdf.p7m"))) == 9, "8 ended chats and one interim export"
    (pdf,) = (tmp_path / "demo" / "export").rglob("*.pdf")
    assert "archived as version 1 (interim)" in out and str(pdf) in out



def test_render_keeps_hostile_room_ids_inside_out(tmp_path, make_config) -> None:
    rng = random.Random(8)
    rooms = ["../../escape", "a/b", "/etc/passwd"]
    source = tmp_path / "hostile.jsonl"
    source.write_text("\n".join(json_util.dumps(make_chat(rng, messages=3, room=r)[0]) for r in rooms) + "\n")
    config = _toml(tmp_path, make_config)
    out = tmp_path / "deep" / "out"
    assert main(["--config", str(config), "render", str(source), "--out", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(written) == 9 and all("/" not in name for name in written)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents and p.suffix in (".pdf", ".json")] == []


def test_unreachable_mongodb_is_a_clear_error(tmp_path, make_config, capsys) -> None:
    config = _toml(tmp_path, make_config, mongodb__uri="mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300")
    assert main(["--config", str(config), "run", "--no-progress"]) == 1  # see test_operations.py
    assert "archiver: error: mongodb.uri (mongodb://127.0.0.1:1/" in capsys.readouterr().err


# -- issue 8 items 13, 14, 23: render takes contacts, blames the right thing, never half-writes --------

def _render(tmp_path: Path, make_config, *args: str) -> int:
    return main(["--config", str(_toml(tmp_path, make_config)), "render", *args])


@pytest.mark.parametrize("setting, code", [("signing.chain", 2), ("encryption.recipients", 0)])
def test_render_refuses_a_private_key_in_signing_chain_and_needs_no_recipients(tmp_path, make_config, keys,
                                                                               capsys, setting, code) -> None:
    """README: render reads signing.chain (a private key there: exit 2, setting and file named); it encrypts
    nothing, so encryption.recipients is not checked (only compared with the signing key: test_certificates)."""
    combo = tmp_path / "combo.pem"
    combo.write_bytes(keys["ca.crt.pem"].read_bytes() + keys["legal.key.pem"].read_bytes())
    wanted = ("mongodb.uri", "storage.url", "signing.certificate", "signing.key", "source.database")
    toml = write_toml(tmp_path / "archiver.toml", {**{k: make_config()[k] for k in wanted}, setting: [str(combo)]})
    out = tmp_path / "o"
    assert main(["--config", str(toml), "render", str(DATA / "seed-fixed.txt"), "--out", str(out)]) == code
    err = capsys.readouterr().err
    if code:
        assert f"{setting}: {combo}: holds a private key" in err and not any(out.glob("*")), err
    else:
        assert len(list(out.glob("*.pdf"))) == 1, err


@pytest.mark.parametrize("content", [b"not a certificate\n", b""], ids=["garbage", "empty"])
def test_a_signing_chain_file_that_is_not_pem_is_a_config_error_naming_it(tmp_path, make_config, capsys,
                                                                           content) -> None:
    """Config errors exit 2 naming the setting and the file, not a traceback (exit 1)."""
    chain = tmp_path / "chain.pem"
    chain.write_bytes(content)
    wanted = ("mongodb.uri", "storage.url", "signing.certificate", "signing.key", "source.database")
    toml = write_toml(tmp_path / "archiver.toml", {**{k: make_config()[k] for k in wanted},
                                                   "signing.chain": [str(chain)]})
    out = tmp_path / "o"
    assert main(["--config", str(toml), "render", str(DATA / "seed-fixed.txt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"archiver: error: signing.chain {chain}: not a PEM certificate (" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_render_joins_contacts_by_id(tmp_path, make_config, keys, capsys) -> None:
    rng = random.Random(13)
    (chat, contact), (lonely, _) = make_chat(rng, messages=3, language="ja"), make_chat(rng, messages=3)
    chats, contacts = tmp_path / "chats.jsonl", tmp_path / "contacts.json"
    chats.write_text(json_util.dumps(chat) + "\n" + json_util.dumps(lonely) + "\n")
    contacts.write_text("[" + json_util.dumps(dict(contact, title="Reclamo 42", serv_name="Billing")) + "]")
    out = tmp_path / "o"
    assert _render(tmp_path, make_config, str(chats), "--out", str(out), "--contacts", str(contacts)) == 0
    assert "2 rendered, 0 failed" in capsys.readouterr().out
    record = json.loads((out / f"{chat['room']}.json").read_bytes())["transcript"]
    channel = contact["users"][contact["userID"]]["channel"]
    assert (record["title"], record["service"], record["language"], record["channel"]) == ("Reclamo 42", "Billing", "ja", channel)
    text = subprocess.run(["pdftotext", str(out / f"{chat['room']}.pdf"), "-"], capture_output=True, text=True).stdout
    assert "Reclamo 42" in text and "Billing" in text and channel in text
    assert json.loads((out / f"{lonely['room']}.json").read_bytes())["transcript"]["title"] == ""
    _verify_outputs(out, chat["room"], keys)


def test_render_reports_unreadable_and_duplicate_contacts(tmp_path, make_config, capsys) -> None:
    chat, contact = make_chat(random.Random(14), messages=3)
    chats, contacts = tmp_path / "chats.jsonl", tmp_path / "contacts.jsonl"
    chats.write_text(json_util.dumps(chat) + "\n")
    contacts.write_text(json_util.dumps(contact) + "\n{broken\n" + json_util.dumps(contact) + "\n")
    assert _render(tmp_path, make_config, str(chats), "--out", str(tmp_path / "o"), "--contacts", str(contacts)) == 1
    out = capsys.readouterr().out
    assert "contacts document 2 (line 2" in out
    assert f"room {chat['room']!r}: contact documents 1 and 3 both have this id" in out
    assert not (tmp_path / "o" / f"{chat['room']}.pdf").exists(), "never rendered with a contact picked at random"


def test_render_blames_the_out_path_and_the_input_not_a_document(tmp_path, make_config, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert _render(tmp_path, make_config, str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "file")) == 2
    assert f"--out {tmp_path / 'file'}: not a directory" in capsys.readouterr().err
    assert _render(tmp_path, make_config, str(tmp_path), "--out", str(tmp_path / "o")) == 2
    assert f"INPUT {tmp_path}: is a directory" in capsys.readouterr().err
    assert _render(tmp_path, make_config, str(tmp_path / "none"), "--out", str(tmp_path / "o")) == 2
    assert f"INPUT {tmp_path / 'none'}: no such file" in capsys.readouterr().err
    assert _render(tmp_path, make_config, str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "o"),
                   "--contacts", str(tmp_path)) == 2
    assert f"--contacts {tmp_path}: is a directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing done on a usage error"


@pytest.mark.parametrize("content", ["", " \n\n"])
def test_render_an_empty_input_says_so_and_fails(tmp_path, make_config, capsys, content: str) -> None:
    (tmp_path / "empty.json").write_text(content)
    assert _render(tmp_path, make_config, str(tmp_path / "empty.json"), "--out", str(tmp_path / "o")) == 1
    assert f"no document found in {tmp_path / 'empty.json'}" in capsys.readouterr().out


@pytest.mark.parametrize("name, dangling", [(".json.p7s", True), (".json", False), (".pdf", True)])
def test_render_leaves_nothing_beside_a_preplaced_symlink(tmp_path, make_config, capsys, name, dangling) -> None:
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere"
    out.mkdir()
    if not dangling:
        elsewhere.write_bytes(b"keep me")
    link = out / f"{SEED_CHAT['room']}{name}"
    link.symlink_to(elsewhere)
    assert _render(tmp_path, make_config, str(DATA / "seed-fixed.txt"), "--out", str(out)) == 1
    assert str(link) in capsys.readouterr().out
    assert sorted(out.iterdir()) == [link] and link.is_symlink(), "nothing written, no temporary file left"
    assert elsewhere.read_bytes() == b"keep me" if not dangling else not elsewhere.exists()


_FULL_DISK = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from archiver.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("limit", [500, 20_000])
def test_render_on_a_full_disk_leaves_no_partial_file(tmp_path, make_config, limit: int) -> None:
    out = tmp_path / "o"
    args = ["--config", str(_toml(tmp_path, make_config)), "render", str(DATA / "seed-fixed.txt"), "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(limit), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 rendered, 1 failed" in done.stdout and "File too large" in done.stdout
    assert list(out.iterdir()) == []


# -- one chat never stops the others: odd values, any error, and each line printed as it happens ---------

def test_render_refuses_javascript_code_values_and_renders_the_rest(tmp_path, make_config, keys, capsys) -> None:
    rng = random.Random(21)
    first, second = make_chat(rng, messages=2)[0], make_chat(rng, messages=2)[0]
    lines = [json_util.dumps(first), '{"room": {"$code": "x"}, "messages": []}',
             '{"room": "CODE_ID", "messages": [{"data": {"id": {"$code": "x"}}}]}', json_util.dumps(second)]
    chats, contacts = tmp_path / "chats.jsonl", tmp_path / "contacts.jsonl"
    chats.write_text("\n".join(lines) + "\n")
    contacts.write_text('{"id": {"$code": "x"}}\n')
    out = tmp_path / "o"
    assert _render(tmp_path, make_config, str(chats), "--out", str(out), "--contacts", str(contacts)) == 1
    printed = capsys.readouterr().out
    assert "2 rendered, 3 failed" in printed, printed
    assert "contacts document 1 (line 1): field 'id' is missing or not a string" in printed
    assert "document 2 (line 2): field 'room' is missing or not a non-empty string (got Code" in printed
    assert "document 3 (line 3): message 1 data.id: is Code, expected text" in printed
    for chat in (first, second):
        _verify_outputs(out, chat["room"], keys)


def test_render_names_any_error_of_one_chat_and_renders_the_rest(tmp_path, make_config, keys, capsys,
                                                                 monkeypatch) -> None:
    from archiver.artifacts import ArtifactBuilder

    plaintext = ArtifactBuilder.plaintext

    def failing(self, chat, *args, **kwargs):
        if chat["room"] == "BUGGY":
            raise RuntimeError("a renderer bug")
        return plaintext(self, chat, *args, **kwargs)

    monkeypatch.setattr(ArtifactBuilder, "plaintext", failing)
    rng = random.Random(22)
    first, second = make_chat(rng, messages=2)[0], make_chat(rng, messages=2)[0]
    source = tmp_path / "chats.jsonl"
    source.write_text("\n".join([json_util.dumps(first), '{"room": "BUGGY", "messages": []}',
                                 json_util.dumps(second)]) + "\n")
    assert _render(tmp_path, make_config, str(source), "--out", str(tmp_path / "o")) == 1
    printed = capsys.readouterr().out
    assert "2 rendered, 1 failed" in printed and "FAILED document 2 (line 2): RuntimeError: a renderer bug" in printed
    for chat in (first, second):
        _verify_outputs(tmp_path / "o", chat["room"], keys)


def test_render_prints_each_chat_as_it_is_done(tmp_path, make_config, capsys, monkeypatch) -> None:
    from archiver.artifacts import ArtifactBuilder

    plaintext = ArtifactBuilder.plaintext

    def interrupted(self, chat, *args, **kwargs):
        if chat["room"] == "SECOND":
            raise KeyboardInterrupt  # Ctrl-C during the second chat: the first one's line is out already
        return plaintext(self, chat, *args, **kwargs)

    monkeypatch.setattr(ArtifactBuilder, "plaintext", interrupted)
    source = tmp_path / "chats.jsonl"
    source.write_text(json_util.dumps(SEED_CHAT) + '\n{"room": "SECOND", "messages": []}\n')
    with pytest.raises(KeyboardInterrupt):
        _render(tmp_path, make_config, str(source), "--out", str(tmp_path / "o"))
    assert f"document 1 (line 1): room {SEED_CHAT['room']!r} -> " in capsys.readouterr().out


def test_render_a_chat_with_dates_outside_years_1_to_9999_keeps_them_exactly(tmp_path, make_config, keys,
                                                                              capsys) -> None:
    chat = json.loads(json_util.dumps(SEED_CHAT, json_options=json_util.CANONICAL_JSON_OPTIONS))
    chat["messages"][0]["data"]["messageSeen"] = {"$date": {"$numberLong": "1642604343631000"}}  # µs as ms
    chat["messages"][1]["data"]["ts"] = {"$date": {"$numberLong": "-62198755200000"}}  # year -1
    source = tmp_path / "chat.json"
    source.write_text(json.dumps(chat))
    assert _render(tmp_path, make_config, str(source), "--out", str(tmp_path / "o")) == 0, capsys.readouterr().out
    _verify_outputs(tmp_path / "o", SEED_CHAT["room"], keys)
    record = json.loads((tmp_path / "o" / f"{SEED_CHAT['room']}.json").read_bytes())
    assert record["source"]["chat"]["messages"][0]["data"]["messageSeen"] == {"$date": {"$numberLong": "1642604343631000"}}
    assert record["source"]["chat"]["messages"][1]["data"]["ts"] == {"$date": {"$numberLong": "-62198755200000"}}
    assert "message 2: unreadable timestamp" in " ".join(record["transcript"]["warnings"])


# -- export --out: checked before anything is archived; a later write failure is named after the archive lines --

def test_export_with_an_unusable_out_is_a_usage_error_before_archiving(tmp_path, make_config, capsys) -> None:
    chat, contact = make_chat(random.Random(23), messages=3)
    _seed(make_config, [(chat, contact)])
    config = _toml(tmp_path, make_config)
    (tmp_path / "afile").write_text("x")
    for out, why in ((tmp_path / "afile", "not a directory"), (tmp_path / "afile" / "sub", "cannot create it")):
        assert main(["--config", str(config), "export", chat["room"], "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert f"--out {out}: {why}" in captured.err and "archived" not in captured.out
    assert main(["--config", str(config), "export", chat["room"]]) == 0
    assert "archived as version 1 (ended)" in capsys.readouterr().out, "nothing was archived before"


def test_export_names_a_write_failure_after_the_archive_lines(tmp_path, make_config, capsys, monkeypatch) -> None:
    import errno

    import archiver.offline

    def full_disk(files, mode):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(archiver.offline, "publish", full_disk)
    chat, contact = make_chat(random.Random(24), messages=3)
    _seed(make_config, [(chat, contact)])
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "export", chat["room"], "--out", str(tmp_path / "case")]) == 1
    out = capsys.readouterr().out
    assert "archived as version 1 (ended)" in out and "  pdf: " in out
    assert f"cannot write the plaintext files into {tmp_path / 'case'}: No space left on device" in out
    assert out.index("archived as version 1") < out.index("cannot write")


def test_room_ids_reach_the_terminal_escaped(tmp_path, make_config, capsys) -> None:
    room = "CHAT_A\x1b[2K\r0 rendered, 0 failed\u202e\x07"
    chat = dict(SEED_CHAT, room=room, _id=room)
    source = tmp_path / "chat.json"
    source.write_text(json_util.dumps(chat))
    assert _render(tmp_path, make_config, str(source), "--out", str(tmp_path / "o")) == 0
    _seed(make_config, [(chat, None)])
    assert main(["--config", str(_toml(tmp_path, make_config)), "export", room]) == 0
    out = capsys.readouterr().out
    assert out.count(repr(room)) == 2, out
    assert not any(ch in out for ch in "\x1b\r\u202e\x07")


# -- --out on a file system without hard links (exFAT, FAT, some FUSE/SMB mounts): os.link fails there ------

def _no_hard_links(monkeypatch, error: int) -> None:
    def link(src, dst, *args, **kwargs):
        raise OSError(error, os.strerror(error), src, None, dst)

    monkeypatch.setattr(os, "link", link)


@pytest.mark.parametrize("error", [errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP])  # vfat/exfat, FUSE, SMB
def test_render_and_export_name_an_out_without_hard_links_before_any_work(tmp_path, make_config, capsys,
                                                                         monkeypatch, error: int) -> None:
    _no_hard_links(monkeypatch, error)
    out = tmp_path / "stick"
    assert _render(tmp_path, make_config, str(DATA / "seed-fixed.txt"), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: its file system does not allow hard links" in err, err
    assert "nothing already there is ever replaced" in err
    assert list(out.iterdir()) == [], "no probe file left behind"
    chat, contact = make_chat(random.Random(25), messages=2)
    _seed(make_config, [(chat, contact)])
    assert main(["--config", str(_toml(tmp_path, make_config)), "export", chat["room"], "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"--out {out}: its file system does not allow hard links" in captured.err and "archived" not in captured.out


def test_publish_names_the_folder_without_hard_links_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    from archiver.files import NoHardLinks, publish

    _no_hard_links(monkeypatch, errno.EPERM)
    with pytest.raises(NoHardLinks, match=f"{tmp_path}: its file system does not allow hard links"):
        publish([(tmp_path / "a.pdf", b"a"), (tmp_path / "a.json", b"b")], 0o640)
    assert list(tmp_path.iterdir()) == []


def test_render_and_export_name_a_read_only_out_before_any_work(tmp_path, make_config, capsys, monkeypatch) -> None:
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    out = tmp_path / "ro"
    out.mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # as root, a chmod would not stop the writes
    assert _render(tmp_path, make_config, str(DATA / "seed-fixed.txt"), "--out", str(out)) == 2
    assert f"--out {out}: cannot write into it (Read-only file system)" in capsys.readouterr().err
    chat, contact = make_chat(random.Random(26), messages=2)
    _seed(make_config, [(chat, contact)])
    assert main(["--config", str(_toml(tmp_path, make_config)), "export", chat["room"], "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert f"--out {out}: cannot write into it (Read-only file system)" in captured.err
    assert "archived" not in captured.out


def test_export_out_is_audited_before_its_plaintext_is_written(tmp_path, make_config, capsys, monkeypatch) -> None:
    """`export --out` writes a chat's plaintext (signed PDF and record) outside the archive, as a retrieval
    does: it is recorded in the audit log before the files appear, and written only if it could be; an
    export that only archives (no --out) discloses nothing and records nothing."""
    import archiver.audit
    from retrieval_helpers import audit

    chats = [make_chat(random.Random(seed), messages=3) for seed in (61, 62, 63)]
    _seed(make_config, chats)
    config = _toml(tmp_path, make_config)
    room = chats[0][0]["room"]
    assert main(["--config", str(config), "export", room, "--out", str(tmp_path / "case"), "--actor", "bob"]) == 0
    capsys.readouterr()
    started, done = audit(make_config())
    assert [started["action"], started["outcome"], done["outcome"]] == ["export", "started", "ok"]
    assert started["rooms"] == done["rooms"] == [room] and done["actor"]["on_behalf_of"] == "bob"
    assert str(tmp_path / "case") in started["detail"] and "version 1" in started["detail"]
    assert main(["--config", str(config), "export", chats[1][0]["room"]]) == 0
    assert len(audit(make_config())) == 2, "no --out: nothing disclosed, nothing recorded"

    def refused(*args, **kwargs):
        raise archiver.audit.AuditError("the audit log could not be written: disk full")

    monkeypatch.setattr(archiver.audit.AuditLog, "record", refused)
    refused_room = chats[2][0]["room"]
    assert main(["--config", str(config), "export", refused_room, "--out", str(tmp_path / "other")]) == 1
    out = capsys.readouterr().out
    assert "archived as version 1" in out and "disk full" in out and "not written" in out
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_export_out_whose_done_entry_is_refused_leaves_no_plaintext(tmp_path, make_config, capsys, monkeypatch) -> None:
    """The log takes the first entry (started) but refuses the second: the files written are removed, so no
    plaintext is out there without its entry saying it was written."""
    import archiver.audit

    real = archiver.audit.AuditLog.record

    def refuse_ok(self, action, actor, **fields):
        if fields.get("outcome") == "ok":
            raise archiver.audit.AuditError("the audit log could not be written: disk full")
        return real(self, action, actor, **fields)

    monkeypatch.setattr(archiver.audit.AuditLog, "record", refuse_ok)
    chat, contact = make_chat(random.Random(64), messages=3)
    _seed(make_config, [(chat, contact)])
    config = _toml(tmp_path, make_config)
    assert main(["--config", str(config), "export", chat["room"], "--out", str(tmp_path / "case")]) == 1
    assert "plaintext files were removed" in capsys.readouterr().out
    assert list((tmp_path / "case").iterdir()) == []

"""The command line against docs/cli.md and the contract: what it prints, and its exit codes, when things go wrong."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from bson import json_util

from archiver.cli import main
from archiver.mongo import connect
from archiver.samples import make_chat
from conftest import write_toml
from nxserver import free_port

CLI_KEYS = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
            "source.database", "index.database", "archive.workers", "logging.format", "logging.level"]


def cli_toml(tmp_path: Path, make_config, **overrides) -> Path:
    """A configuration file with the test's settings (and OVERRIDES, in section__key names)."""
    config = make_config(**overrides).as_dict()
    wanted = CLI_KEYS + [k.replace("__", ".") for k in overrides if k.replace("__", ".") not in CLI_KEYS]
    return write_toml(tmp_path / "archiver.toml", {k: config[k] for k in wanted})


def seed_chats(make_config, count: int = 1, seed: int = 11) -> list[str]:
    """COUNT ended chats in the source database; their rooms."""
    config = make_config()
    db = connect(config["mongodb.uri"])[config["source.database"]]
    rng, rooms = random.Random(seed), []
    for _ in range(count):
        chat, contact = make_chat(rng, messages=4, start_ms=(time.time() - 3600) * 1000)
        db.chats.insert_one(chat)
        if contact:
            db.contacts.insert_one(contact)
        rooms.append(chat["room"])
    return rooms


# -- the timestamp authority's credentials never reach the output ------------------------------------

TSA_SECRETS = ("tsauser", "tsapass", "abc123", "AK-9f8e7d6c", "s1gnatur3value")


@pytest.fixture
def leaky_tsa() -> str:
    """A timestamp authority URL with a user, a password, a token and API-key-style options, where nobody listens."""
    return f"http://tsauser:tsapass@127.0.0.1:{free_port()}/tsa?token=abc123&apikey=AK-9f8e7d6c&sig=s1gnatur3value"


def _no_tsa_secret(text: str) -> None:
    assert "timestamp authority" in text, text  # the failure is reported ...
    for secret in TSA_SECRETS:  # ... without the credentials
        assert secret not in text, text


@pytest.mark.parametrize("command", ["run", "export", "seal"])
def test_tsa_credentials_never_printed(command, tmp_path, make_config, leaky_tsa, capsys) -> None:
    (room,) = seed_chats(make_config)
    config = cli_toml(tmp_path, make_config, signing__timestamp_url=leaky_tsa, archive__max_attempts=1)
    argv = {"run": ["run", "--no-progress"], "export": ["export", room],
            "seal": ["seal", "--from", "2022-01-01", "--to", "2022-01-01"]}[command]
    assert main(["--config", str(config), *argv]) == 1
    captured = capsys.readouterr()
    _no_tsa_secret(captured.out)
    for secret in TSA_SECRETS:
        assert secret not in captured.err


def test_tsa_credentials_never_printed_by_render(tmp_path, make_config, leaky_tsa, capsys) -> None:
    chat, _ = make_chat(random.Random(3), messages=3)
    source = tmp_path / "one.json"
    source.write_text(json_util.dumps(chat))
    config = cli_toml(tmp_path, make_config, signing__timestamp_url=leaky_tsa)
    assert main(["--config", str(config), "render", str(source), "--out", str(tmp_path / "out")]) == 1
    _no_tsa_secret(capsys.readouterr().out)


def test_run_and_seal_print_their_failures_redacted(capsys) -> None:
    """Whatever error a chat or a day failed with, the printed line hides a URI's credentials."""
    from archiver.commands import run as run_command, seal as seal_command
    from archiver.pipeline import PassReport
    from archiver.seals import SealOutcome

    leaked = "put http://key:s3cret-pw@127.0.0.1:9/b/k: refused"
    run_command.print_report(PassReport(failed={"R1": leaked}, quarantined={"R2": leaked}))
    seal_command.print_outcome(SealOutcome("2022-01-01", "failed", problems=[leaked]), as_json=False)
    seal_command.print_outcome(SealOutcome("2022-01-01", "failed", problems=[leaked]), as_json=True)
    out = capsys.readouterr().out
    assert out.count("put http://***@127.0.0.1:9/b/k: refused") == 4, out
    assert "s3cret-pw" not in out


# -- a file meant for certificates that holds a private key is refused -----------------------------

def _with_key(tmp_path: Path, certificate: Path, key: Path, name: str) -> Path:
    """CERTIFICATE with KEY pasted after it, as a careless copy would leave it."""
    path = tmp_path / name
    path.write_bytes(certificate.read_bytes() + key.read_bytes())
    return path


def _main_within(argv: list[str], seconds: float = 30) -> int | None:
    """main(ARGV) in a thread; None if it is still running after SECONDS (`serve` not refused runs on)."""
    import threading

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    thread.join(seconds)
    return result[0] if result else None


@pytest.mark.parametrize("command", ["run", "export", "serve"])  # render: test_cli.py (it reads signing.chain only)
@pytest.mark.parametrize("setting, certificate, key", [
    ("encryption.recipients", "legal.crt.pem", "legal.key.pem"), ("signing.chain", "ca.crt.pem", "signing.key.pem")])
def test_a_certificates_file_holding_a_private_key_is_refused_by_run(command, setting, certificate, key, tmp_path,
                                                                     make_config, keys, capsys) -> None:
    """README.md: run, export and serve refuse it (exit 2 naming the setting and the file)."""
    combo = _with_key(tmp_path, keys[certificate], keys[key], "combo.pem")
    config = cli_toml(tmp_path, make_config, metrics__port=0, **{setting.replace(".", "__"): [str(combo)]})
    (room,) = seed_chats(make_config)
    argv = {"run": ["run", "--no-progress"], "export": ["export", room], "serve": ["serve"]}[command]
    assert _main_within(["--config", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert f"{setting}: {combo}: holds a private key" in err, err


@pytest.mark.parametrize("command", ["verify", "retrieve", "bundle"])
def test_a_trust_anchor_file_holding_a_private_key_is_refused(command, tmp_path, make_config, keys, capsys) -> None:
    """README.md: retrieve, verify and bundles refuse it (exit 2 naming the setting and the file)."""
    combo = _with_key(tmp_path, keys["ca.crt.pem"], keys["signing.key.pem"], "anchor-combo.pem")
    config = cli_toml(tmp_path, make_config, signing__trust_anchors=[str(combo)])
    key = str(keys["legal.key.pem"])
    argv = {"verify": ["verify", "--all", "--no-progress"],
            "retrieve": ["retrieve", "ROOM_1", "--key", key, "--out", str(tmp_path / "o"), "--reason", "case 1"],
            "bundle": ["retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", key, "--reason", "case 1", "ROOM_1",
                       "--no-progress"]}[command]
    assert main(["--config", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert f"signing.trust_anchors {combo}: holds a private key" in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("last", ["9999-12-31", "9999-12-30"])
def test_seal_to_the_last_days_of_the_calendar_is_refused_as_not_ended(tmp_path, make_config, capsys, last) -> None:
    config = cli_toml(tmp_path, make_config)
    assert main(["--config", str(config), "seal", "--from", "2022-01-01", "--to", last]) == 2
    assert f"{last}: the day has not ended yet" in capsys.readouterr().err


def test_keys_init_prints_configuration_lines_with_the_trust_anchor(tmp_path, capsys) -> None:
    import tomllib

    folder = tmp_path / 'keys "dev"'  # a quote in the path: the lines must still be TOML
    assert main(["keys", "init", str(folder)]) == 0
    out = capsys.readouterr().out
    archiving, legal_team = out[out.index("[signing]"):].split("The legal team signs case bundles")
    lines = tomllib.loads(archiving)
    assert lines["signing"]["trust_anchors"] == [str(folder.resolve() / "ca.crt.pem")]
    assert lines["signing"]["certificate"] == str(folder.resolve() / "signing.crt.pem")
    assert lines["encryption"]["recipients"] == [str(folder.resolve() / "legal.crt.pem")]
    assert "bundle" not in lines  # the bundle signer's lines are apart: for the legal team's host only
    bundle = tomllib.loads(legal_team[legal_team.index("[bundle]"):])["bundle"]
    assert bundle == {"signing_certificate": str(folder.resolve() / "bundle.crt.pem"),
                      "signing_key": str(folder.resolve() / "bundle.key.pem")}
    # from a CA of its own (README steps 4 and 5 accept any signer the archive's CA issued)
    from cryptography import x509
    issuer = x509.load_pem_x509_certificates((folder / "bundle.crt.pem").read_bytes())[0].issuer
    assert issuer == x509.load_pem_x509_certificate((folder / "bundle-ca.crt.pem").read_bytes()).subject
    assert issuer != x509.load_pem_x509_certificate((folder / "ca.crt.pem").read_bytes()).subject


# -- room ids are printed with their control and bidi characters as placeholders ----------------------

HOSTILE = "R1\nFORGED\x1b[2K\u202eX"  # a newline forging a line, an ANSI erase, a right-to-left override
SHOWN = "R1[U+000A]FORGED[U+001B][2K[U+202E]X"


def _no_raw_controls(out: str) -> None:
    assert SHOWN in out, out
    assert "\x1b" not in out and "\u202e" not in out and "\nFORGED" not in out, out


def test_search_prints_hostile_room_ids_visibly(tmp_path, make_config, capsys) -> None:
    from archiver.pipeline import Archiver

    config = make_config()
    chat, contact = make_chat(random.Random(4), messages=3, start_ms=(time.time() - 3600) * 1000, room=HOSTILE)
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(chat)
    assert Archiver(config).run_pass().archived == 1
    toml = cli_toml(tmp_path, make_config)
    assert main(["--config", str(toml), "search"]) == 0
    _no_raw_controls(capsys.readouterr().out)
    assert main(["--config", str(toml), "search", "--json"]) == 0  # JSON: the exact id, escaped by JSON itself
    assert [e["room"] for e in json.loads(capsys.readouterr().out)] == [HOSTILE]


def test_status_prints_hostile_room_ids_visibly(tmp_path, make_config, capsys) -> None:
    config = make_config()
    broken = {"_id": "B", "room": HOSTILE, "messages": [{"data": {"messageType": "endChat",
                                                                  "ts": (time.time() - 600) * 1000,
                                                                  "content": {"text": []}}}]}
    connect(config["mongodb.uri"])[config["source.database"]].chats.insert_one(broken)
    toml = cli_toml(tmp_path, make_config)
    assert main(["--config", str(toml), "run", "--no-progress"]) == 1  # quarantined
    _no_raw_controls(capsys.readouterr().out)
    assert main(["--config", str(toml), "status"]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert f"  {SHOWN}: " in out, out


# -- clear messages where a raw errno or a Python repr was printed -----------------------------------

def test_demo_dir_that_is_a_file_is_a_usage_error_naming_dir(tmp_path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["demo", "--dir", str(afile)]) == 2
    err = capsys.readouterr().err
    assert f"--dir {afile}: not a directory" in err and "Errno" not in err, err


@pytest.mark.parametrize("where, says", [("under a file", "cannot create it (Not a directory)"),
                                         ("a file", "not a directory"),
                                         ("/proc", "cannot write the keys into it")])  # no file can be made there
def test_keys_init_into_a_dir_that_cannot_be_made_is_a_usage_error_naming_dir(tmp_path, capsys, where, says) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    folder = {"under a file": afile / "keys", "a file": afile}.get(where, Path(where))
    assert main(["keys", "init", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"archiver: error: DIR {folder}" in err and says in err and "Errno" not in err, err


@pytest.mark.parametrize("command", [["search"], ["retrieve", "--bundle", "b.zip", "--key", "k.pem", "--reason", "r"]])
def test_an_unknown_status_filter_is_a_usage_error_naming_the_accepted_values(tmp_path, make_config, capsys,
                                                                           command) -> None:
    config = cli_toml(tmp_path, make_config)
    assert main(["--config", str(config), *command, "--status", "archivd"]) == 2
    err = capsys.readouterr().err
    assert "--status" in err and "'archivd'" in err, err
    assert all(f"'{status}'" in err for status in ("archived", "uploading", "superseded", "deleted")), err


def test_a_bundle_whose_filters_match_nothing_names_them_as_given(tmp_path, make_config, keys, capsys) -> None:
    config = cli_toml(tmp_path, make_config)
    argv = ["retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", str(keys["legal.key.pem"]), "--reason", "x",
            "--from", "2030-01-01", "--service", "Billing desk", "--no-progress"]
    assert main(["--config", str(config), *argv]) == 1
    err = capsys.readouterr().err
    assert "no archived entry matches --from 2030-01-01 --service 'Billing desk'" in err, err
    assert "datetime" not in err and "{" not in err, err


def test_a_reader_that_goes_away_stops_the_output_quietly(tmp_path, make_config) -> None:
    """`archiver status | head -1`: no "[Errno 32] Broken pipe", no traceback; 141 as for a tool SIGPIPE stopped."""
    import os
    import subprocess
    import sys

    config = cli_toml(tmp_path, make_config)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run([sys.executable, "-m", "archiver.cli", "--config", str(config), "status"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 141, (done.returncode, done.stderr)


@pytest.mark.parametrize("setting", ["signing.key", "render.template"])
def test_an_unreadable_file_is_named_by_its_setting(tmp_path, make_config, setting, capsys) -> None:
    missing = tmp_path / "gone" / "file"
    config = cli_toml(tmp_path, make_config, **{setting.replace(".", "__"): str(missing)})
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{setting} {missing}: cannot read (No such file or directory)" in err, err


def test_retrieve_out_that_is_a_file_is_a_usage_error_naming_out(tmp_path, make_config, keys, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    config = cli_toml(tmp_path, make_config)
    argv = ["retrieve", "SOME_ROOM", "--key", str(keys["legal.key.pem"]), "--out", str(afile), "--reason", "x"]
    assert main(["--config", str(config), *argv]) == 2
    err = capsys.readouterr().err
    assert f"--out {afile}: not a directory" in err and "Errno" not in err, err


def test_options_of_a_service_url_that_are_not_credentials_stay_readable(make_config) -> None:
    """Hiding every option value blanked ordinary words (an option `service=timestamp` hid "timestamp" in every
    message): only options named like credentials are hidden."""
    from archiver.redact import redact

    make_config(signing__timestamp_url="http://127.0.0.1:9/tsr?service=timestamp&profile=archival&apikey=AK-9f8e7d6c",
                storage__endpoint_url="http://127.0.0.1:9/?tenant=chat-archive&X-Amz-Signature=0a1b2c3d4e5f")
    line = redact("timestamp authority failed for the chat-archive bucket (archival profile), key AK-9f8e7d6c, "
                  "signature 0a1b2c3d4e5f")
    assert "timestamp" in line and "chat-archive" in line and "archival" in line
    assert "AK-9f8e7d6c" not in line and "0a1b2c3d4e5f" not in line


@pytest.mark.parametrize("option", ["sig=AbC%2Bdef%2Fghi%3D", "apiKey=Zk9+qrstu1", "pwd=hunter2222",
                                    "X-Amz-Credential=AKIAEXAMPLE%2F20261126%2Fus-east-1", "code=abc%3D%3Ddef"])
def test_a_credential_option_of_the_tsa_url_is_hidden_as_written_and_decoded(option, make_config) -> None:
    """parse_qsl decodes %XX and '+': the form remembered was not the one messages print."""
    from urllib.parse import unquote_plus

    from archiver.redact import redact

    make_config(signing__timestamp_url=f"http://127.0.0.1:9/tsr?service=timestamp&{option}")
    raw = option.partition("=")[2]
    for shown in (raw, unquote_plus(raw)):
        line = redact(f"timestamp authority http://127.0.0.1:9/tsr?service=timestamp&{option.partition('=')[0]}={shown}: "
                      "unreachable")
        assert shown not in line and "timestamp authority" in line, line


# -- --help of every sub-command shows an example of that sub-command ---------------------------------

@pytest.mark.parametrize("command, action", [("keys", "init"), ("audit", "verify"), ("audit", "list"),
                                             ("hold", "place"), ("hold", "release"), ("hold", "list"),
                                             ("retention", "run")])
def test_help_of_each_sub_command_shows_an_example_of_it(command, action, capsys) -> None:
    """CONTRACT.md: `--help` of every command must show its options and an example (`audit list`, `hold release`
    and `hold list` showed only another action's)."""
    assert main([command, action, "--help"]) == 0
    out = capsys.readouterr().out
    examples = out[out.index("\nexample:\n"):]
    assert f" {command} {action}" in examples, examples


# -- a MongoDB name MongoDB refuses is a configuration error naming the key ------------------------------

@pytest.mark.parametrize("setting, value", [("source.database", ""), ("source.database", "a.b"),
                                            ("index.database", ""), ("source.chats", ""), ("source.chats", "a$b"),
                                            ("source.contacts", ".x"), ("index.entries", ""), ("index.audit", ""),
                                            ("index.database", "a" * 64), ("source.chats", "system.chats")])
@pytest.mark.parametrize("command", [["run", "--no-progress"], ["status"], ["search"]])
def test_a_database_or_collection_name_mongodb_refuses_is_exit_2_naming_the_key(tmp_path, make_config, monkeypatch,
                                                                              capsys, setting, value, command) -> None:
    """CONTRACT.md: a wrong setting stops the command before any work, with a message naming the key (it was
    the driver's InvalidName at the first query, exit 1 without the key, or no error at all for `status`)."""
    config = cli_toml(tmp_path, make_config)
    monkeypatch.setenv(f"ARCHIVER_{setting.replace('.', '__').upper()}", value)
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert f"archiver: error: {setting}: " in err, err


# -- main(argv) returns the exit code and never calls sys.exit ----------------------------------------

@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["run", "--help"], 0), (["hold", "list", "--help"], 0),
                                        (["frobnicate"], 2), (["run", "--limit", "x"], 2), (["render"], 2),
                                        (["--config"], 2), ([], 2)])
def test_main_returns_the_code_without_calling_sys_exit(argv, code, monkeypatch, capsys) -> None:
    """CONTRACT.md: archiver.cli.main(argv) returns the exit code and does not call sys.exit, on --help and on
    usage errors too (argparse's own exit called sys.exit, caught as SystemExit: with sys.exit replaced, as a
    calling script or a harness may, --help went on to parse and failed with a KeyError)."""
    import sys

    calls: list[object] = []
    monkeypatch.setattr(sys, "exit", lambda *a: calls.append(a))
    assert main(argv) == code
    assert calls == []
    captured = capsys.readouterr()
    assert ("usage: archiver" in captured.out) if code == 0 else ("usage: archiver" in captured.err)


# -- a service URL that is no http(s) URL is a configuration error naming the key ------------------------

@pytest.mark.parametrize("setting, value", [("signing.timestamp_url", "notaurl"),
                                            ("signing.timestamp_url", "ftp://tsa.example/tsr"),
                                            ("storage.endpoint_url", "notaurl"), ("storage.endpoint_url", "http://"),
                                            # what the check read past and the clients refuse: a newline a secret
                                            # file ends with, a space in the host, a port that is no number
                                            ("storage.endpoint_url", "http://127.0.0.1:9000\n"),
                                            ("storage.endpoint_url", "http://minio .local:9000"),
                                            ("storage.endpoint_url", "http://127.0.0.1:abc"),
                                            ("signing.timestamp_url", "https://tsa.example.com/tsr\n"),
                                            ("signing.timestamp_url", "https://tsa.example.com:99999/tsr")])
def test_a_service_url_that_is_no_http_url_is_exit_2_naming_the_key(tmp_path, make_config, monkeypatch, capsys,
                                                                    setting, value) -> None:
    """CONTRACT.md: a wrong setting stops the command before any work, naming the key. A timestamp_url without
    a scheme failed each chat in turn (exit 1, every chat `failed`); an endpoint_url without one ended in a
    traceback (botocore's "Invalid endpoint")."""
    (room,) = seed_chats(make_config)
    overrides = {"storage__url": "s3://bucket/prefix"} if setting == "storage.endpoint_url" else {}
    config = cli_toml(tmp_path, make_config, **overrides)
    monkeypatch.setenv(f"ARCHIVER_{setting.replace('.', '__').upper()}", value)
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert f"archiver: error: {setting}: must be an http:// or https:// URL" in captured.err, captured.err
    assert "Traceback" not in captured.err and room not in captured.out

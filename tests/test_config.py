from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from archiver import config as config_module
from archiver.cli import main
from archiver.config import SCHEMA, ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "archiver.example.toml"


def test_example_documents_every_key_and_loads() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    for section, keys in SCHEMA.items():
        assert section in example, f"[{section}] missing from the example"
        assert set(keys) == set(example[section]), f"[{section}] keys differ from the schema"
    config = config_module.load(EXAMPLE, environ={})
    assert config["source.database"] == "ctlive"
    assert config["signing.key"] == str(EXAMPLE.parent / "keys/signing.key.pem")


def test_example_lists_every_key_with_its_default_or_marks_it_required() -> None:
    """Its header says "Every key is listed with its default": a value that is not the default (trimmed from a
    copy as a default, signing.trust_anchors would silently check against nothing) must be a required key's
    example, marked so on its line."""
    section, marked = "", set()
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and "# required: no default, an example" in line:
            marked.add(f"{section}.{line.split('=')[0].strip()}")
    example, defaults = config_module.load(EXAMPLE, environ={}), config_module.load(None, environ={})
    differ = {f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys if example[f"{s}.{k}"] != defaults[f"{s}.{k}"]}
    assert differ == marked, f"not the default, yet not marked required: {sorted(differ - marked)}; " \
                             f"marked but the default: {sorted(marked - differ)}"
    for name in marked:
        section, key = name.split(".")
        assert SCHEMA[section][key].default in ("", []), f"{name} has a default, so it is no required key"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[mongodb]\nuri = "mongodb://file"\n[archive]\nworkers = 3\n')
    config = config_module.load(path, environ={
        "ARCHIVER_MONGODB__URI": "mongodb://env", "ARCHIVER_ARCHIVE__WORKERS": "5",
        "ARCHIVER_ENCRYPTION__RECIPIENTS": "a.pem, b.pem",
    })
    assert config["mongodb.uri"] == "mongodb://env"
    assert config["archive.workers"] == 5
    assert config["encryption.recipients"] == [str(tmp_path / "a.pem"), str(tmp_path / "b.pem")]


def test_config_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    path.write_text('[source]\ndatabase = "other"\n')
    assert config_module.load(None, environ={"ARCHIVER_CONFIG": str(path)})["source.database"] == "other"


@pytest.mark.parametrize("text, environ, complaint", [
    ('[storage]\nurll = "x"\n', {}, "storage.urll: unknown key"),
    ('[storge]\nurl = "x"\n', {}, "[storge]: unknown section"),
    ('[archive]\nworkers = "two"\n', {}, "archive.workers: must be int"),
    ('[archive]\nworkers = -1\n', {}, "archive.workers: must be 0 or more"),
    ('[storage]\nurl = "ftp://x"\n', {}, "storage.url: must be s3://bucket/prefix"),
    ('[storage]\nobject_lock_mode = "SOMETIMES"\n', {}, "storage.object_lock_mode: must be one of"),
    ('[schedule]\narchive = "every hour"\n', {}, "schedule.archive: is not a crontab"),
    ('[mongodb]\nuri = "postgres://x"\n', {}, "mongodb.uri: must start with"),
    ("[mongodb\n", {}, "not valid TOML"),
    ("[metrics]\nport = 70000\n", {}, "metrics.port: must be a TCP port"),
    ("", {"ARCHIVER_ARCHIVE__WORKERS": "many"}, "ARCHIVER_ARCHIVE__WORKERS (archive.workers): must be int"),
    ("", {"ARCHIVER_ATTACHMENTS__PORTS": "80,abc"},
     "ARCHIVER_ATTACHMENTS__PORTS (attachments.ports): must be integers separated by commas"),
    ("", {"ARCHIVER_REDACTION__ENABLED": "maybe"}, "ARCHIVER_REDACTION__ENABLED (redaction.enabled): must be true or"),
    ("", {"ARCHIVER_REDACTION__PATTERNS": "[1]"}, "ARCHIVER_REDACTION__PATTERNS (redaction.patterns): must be a JSON"),
    ("", {"ARCHIVER_NOPE__X": "1"}, "ARCHIVER_NOPE__X: no such setting nope.x"),
])
def test_bad_settings_name_the_key(tmp_path: Path, text: str, environ: dict, complaint: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        config_module.load(path, environ=environ)


def test_missing_required_setting_stops_the_command_with_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[mongodb]\nuri = "mongomock://x"\n')
    monkeypatch.delenv("ARCHIVER_STORAGE__URL", raising=False)
    assert main(["--config", str(path), "run"]) == 2
    err = capsys.readouterr().err
    assert "storage.url: required but not set" in err and "ARCHIVER_STORAGE__URL" in err


def test_missing_config_file_is_exit_2(capsys) -> None:
    assert main(["--config", "/nonexistent/archiver.toml", "run"]) == 2
    assert "/nonexistent/archiver.toml: not found" in capsys.readouterr().err


def test_a_config_path_that_is_a_folder_is_exit_2_naming_it(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(tmp_path), "run"]) == 2
    assert f"config file {tmp_path}: cannot read it" in capsys.readouterr().err


def test_a_metrics_port_already_taken_stops_serve_with_exit_2_naming_the_keys(tmp_path: Path, make_config,
                                                                              capsys) -> None:
    import socket
    from conftest import write_toml
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config = make_config(metrics__port=taken.getsockname()[1])
    keys = ("mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
            "metrics.port")
    try:
        assert main(["--config", str(write_toml(tmp_path / "c.toml", {k: config[k] for k in keys})), "serve"]) == 2
    finally:
        taken.close()
    assert "metrics.host, metrics.port (127.0.0.1:" in capsys.readouterr().err


def test_secrets_are_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[signing]\nkey_password = 918273645\n")
    with pytest.raises(ConfigError) as caught:
        config_module.load(path, environ={})
    assert "signing.key_password: must be str" in str(caught.value) and "918273645" not in str(caught.value)


def test_trust_anchors_are_relative_to_the_config_file_like_every_path(tmp_path: Path, make_config, keys, capsys,
                                                                        monkeypatch) -> None:
    import shutil
    from conftest import write_toml

    (tmp_path / "conf").mkdir()
    shutil.copy(keys["ca.crt.pem"], tmp_path / "conf" / "ca.crt.pem")
    values = {k: make_config()[k] for k in ("mongodb.uri", "index.database", "storage.url")}
    toml = write_toml(tmp_path / "conf" / "archiver.toml", {**values, "signing.trust_anchors": ["ca.crt.pem"]})
    assert config_module.load(toml, environ={})["signing.trust_anchors"] == [str(tmp_path / "conf" / "ca.crt.pem")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the config file's folder: the anchor is found all the same
    assert main(["--config", str(toml), "verify", "--all", "--no-progress"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("setting", ["signing.timestamp_url", "storage.endpoint_url"])
@pytest.mark.parametrize("form", ["tsa.example.com/tsr?apikey={}", "user:{}@tsa.example.com/tsr",
                                  "//user:{}@tsa.example.com/tsr", "https:/user:{}@tsa.example.com/tsr"])
def test_a_service_url_refused_for_its_missing_scheme_never_echoes_its_credentials(setting, form, monkeypatch) -> None:
    """A URL refused for want of an http(s):// scheme (a typo, a copy without it) still carries its API key or
    password: the complaint, which reaches stderr and the service's log, names the key without them."""
    from archiver import redact

    monkeypatch.setattr(redact, "_KNOWN", set())  # (a secret another test made known would hide this one)
    secret = "S3cretValue9"
    env = {f"ARCHIVER_{setting.replace('.', '__').upper()}": form.format(secret)}
    with pytest.raises(ConfigError) as caught:
        config_module.load(None, environ=env)
    message = str(caught.value)
    assert message.startswith(f"{setting}: must be an http:// or https:// URL") and secret not in message, message


@pytest.mark.parametrize("value", ["http://127.0.0.1:9000", "https://s3.eu-central-1.amazonaws.com",
                                   "http://[::1]:9000/prefix", "https://user:p%40ss@tsa.example.com:8443/tsr?x=1",
                                   "http://minio:9000/"])
def test_a_service_url_with_port_ipv6_path_or_credentials_is_accepted(value) -> None:
    env = {"ARCHIVER_SIGNING__TIMESTAMP_URL": value, "ARCHIVER_STORAGE__ENDPOINT_URL": value}
    config = config_module.load(None, environ=env)
    assert (config["signing.timestamp_url"], config["storage.endpoint_url"]) == (value, value)


FLOATS = [f"{section}.{key}" for section, keys in SCHEMA.items() for key, spec in keys.items() if spec.type is float]


@pytest.mark.parametrize("dotted", FLOATS)
@pytest.mark.parametrize("text", ["inf", "-inf", "nan"])
def test_a_float_setting_that_is_no_finite_number_is_refused_naming_the_key(tmp_path: Path, dotted, text) -> None:
    """TOML and the environment both read inf and nan. The settings are spans of time the code adds to dates
    (attachments.retry_hours = inf: an OverflowError as soon as a chat's attachment fails) or waits for; nan was
    refused, as 'must be 0 or more'; -inf likewise."""
    name = "ARCHIVER_" + dotted.replace(".", "__").upper()
    with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}: must be a finite number"):
        config_module.load(None, environ={name: text})
    section, key = dotted.split(".")
    path = tmp_path / "f.toml"
    path.write_text(f"[{section}]\n{key} = {text}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}: must be a finite number"):
        config_module.load(path, environ={})


@pytest.mark.parametrize("dotted, limit", [("source.abandoned_after_hours", 876_000 + 24 * 366),
                                           ("source.discovery_overlap_minutes", 60 * (876_000 + 24 * 366)),
                                           ("metrics.stale_after_minutes", 60 * (876_000 + 24 * 366)),
                                           ("attachments.retry_hours", 876_000 + 24 * 366),
                                           ("attachments.timeout_seconds", 86_401),
                                           ("attachments.max_seconds_per_chat", 86_401)])
def test_a_time_span_beyond_what_any_setting_means_is_refused_naming_the_key(dotted, limit) -> None:
    name = "ARCHIVER_" + dotted.replace(".", "__").upper()
    with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}: must be at most"):
        config_module.load(None, environ={name: str(limit)})
    assert config_module.load(None, environ={name: "1000"})[dotted] == 1000.0  # a long but sane one passes


def test_a_discovery_overlap_of_a_thousand_centuries_stops_run_with_exit_2(tmp_path: Path, make_config,
                                                                           capsys) -> None:
    from conftest import write_toml
    config = make_config()
    keys = ("mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients")
    path = write_toml(tmp_path / "c.toml", {**{k: config[k] for k in keys},
                                            "source.discovery_overlap_minutes": 6e10})
    assert main(["--config", str(path), "run"]) == 2
    assert "source.discovery_overlap_minutes: must be at most" in capsys.readouterr().err

"""Files of secret material (signing.key, signing.pkcs12, search.key_file, --key): what is in them never reaches
a message, a log line or the audit log, even when a setting or option is given the key itself instead of a path."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from archiver.audit import read_audit_log
from archiver.cli import main
from archiver.envelope import EnvelopeError, RecipientKey
from archiver.logs import LOGGER
from archiver.search import load_search_key
from archiver.config import ConfigError
from archiver.signing import SigningError, load_identity
from conftest import write_toml

WITHHELD = "looks like key material, not a path; value withheld"
DATA = Path(__file__).parent / "data"


@pytest.fixture
def log_lines(monkeypatch) -> list[str]:
    """The archiver's log records while the test runs, with their fields (logs.configure replaces the
    archiver logger's handlers and stops propagation, so caplog sees none: every record is taken on its way)."""
    lines: list[str] = []
    original = logging.Logger.callHandlers

    def also_here(logger: logging.Logger, record: logging.LogRecord) -> None:
        if logger.name.split(".")[0] == LOGGER.name:
            lines.append(f"{record.getMessage()} {getattr(record, 'fields', {})}")
        original(logger, record)

    monkeypatch.setattr(logging.Logger, "callHandlers", also_here)
    return lines


def _secret_parts(text: str) -> list[str]:
    """Lines of TEXT long enough to be telling (a PEM's body lines, a hex key), never its BEGIN/END lines."""
    return [line for line in text.splitlines() if len(line) >= 24 and "-----" not in line]


def _nowhere(parts: list[str], *texts: str) -> None:
    assert parts
    for text in texts:
        for part in parts:
            assert part not in text, f"{part!r} shown in {text[:300]!r}"


# -- --key given the PEM text --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["retrieve", "bundle", "verify", "retrieve --ca"])
def test_key_option_given_the_pem_text_is_refused_and_never_shown(command, tmp_path, make_config, keys, capsys,
                                                                   log_lines) -> None:
    pem = keys["legal.key.pem"].read_text()
    option = "--ca" if command == "retrieve --ca" else "--key"  # --ca: the key given where its CA belongs
    config = make_config()
    values = {k: config[k] for k in ("mongodb.uri", "storage.url", "signing.certificate", "signing.key",
                                     "encryption.recipients", "source.database", "index.database",
                                     "logging.format")}
    toml = write_toml(tmp_path / "archiver.toml", values)
    argv = {"retrieve": ["retrieve", "ROOM_1", "--key", pem, "--out", str(tmp_path / "o"), "--reason", "case 1"],
            "bundle": ["retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", pem, "--reason", "case 1",
                       "ROOM_1", "--no-progress"],
            "verify": ["verify", "--all", "--key", pem, "--no-progress"],
            "retrieve --ca": ["retrieve", "ROOM_1", "--key", str(keys["legal.key.pem"]), "--ca", pem,
                              "--out", str(tmp_path / "o"), "--reason", "case 1"]}[command]
    assert main(["--config", str(toml), *argv]) == 2
    out = capsys.readouterr()
    assert f"archiver: error: {option}: {WITHHELD}" in out.err, out.err
    audit = [json.dumps(entry, default=str) for entry in read_audit_log(config).entries()]
    if command != "verify":  # retrieve records its refusal
        assert any(WITHHELD in entry for entry in audit), audit
    _nowhere(_secret_parts(pem), out.out, out.err, *log_lines, *audit)
    assert not (tmp_path / "o").exists() and not (tmp_path / "b.zip").exists()


# -- a setting given the key itself (container secrets as environment variables) -----------------------------------

def _pkcs12_base64(keys: dict[str, Path]) -> str:
    """The signing identity as a PKCS#12 file, base64 in one line, as a secrets store hands it out."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(keys["signing.key.pem"].read_bytes(), None)
    cert = x509.load_pem_x509_certificates(keys["signing.crt.pem"].read_bytes())[0]
    p12 = pkcs12.serialize_key_and_certificates(b"s", key, cert, None, BestAvailableEncryption(b"pw"))
    return base64.b64encode(p12).decode()


SETTINGS = {  # setting: (the key itself, a command that loads it)
    "signing.key": (lambda keys: keys["signing.key.pem"].read_text(), "render"),
    "signing.key (one line)": (lambda keys: "".join(keys["signing.key.pem"].read_text().splitlines()[1:-1]),
                               "render"),
    "signing.pkcs12": (_pkcs12_base64, "render"),
    "search.key_file": (lambda keys: secrets.token_hex(32), "search"),
    # certificate files, given a PEM of certificate and key as one secret: the key is not shown either
    "signing.certificate": (lambda keys: keys["signing.crt.pem"].read_text() + keys["signing.key.pem"].read_text(),
                            "render"),
    "encryption.recipients": (lambda keys: keys["legal.crt.pem"].read_text() + keys["legal.key.pem"].read_text(),
                              "run"),
}


@pytest.mark.parametrize("config_file", [True, False], ids=["with a config file", "environment only"])
@pytest.mark.parametrize("case", SETTINGS)
def test_a_setting_given_the_key_itself_is_refused_and_never_shown(case, config_file, tmp_path, make_config, keys,
                                                                    monkeypatch, capsys, log_lines) -> None:
    setting = case.split(" ")[0]
    secret, command = SETTINGS[case][0](keys), SETTINGS[case][1]
    config = make_config()
    values = {k: config[k] for k in ("mongodb.uri", "storage.url", "signing.certificate", "source.database",
                                     "index.database", "logging.format")}
    for name, value in values.items():  # ARCHIVER_SECTION__KEY, as a container's environment gives them
        monkeypatch.setenv("ARCHIVER_" + name.upper().replace(".", "__"), str(value))
    monkeypatch.setenv("ARCHIVER_" + setting.upper().replace(".", "__"), secret)
    monkeypatch.setenv("ARCHIVER_SIGNING__KEY_PASSWORD", "pw" if setting == "signing.pkcs12" else "")
    if setting != "signing.key":
        monkeypatch.setenv("ARCHIVER_SIGNING__KEY", str(keys["signing.key.pem"]))
    monkeypatch.delenv("ARCHIVER_CONFIG", raising=False)
    head = ["--config", str(write_toml(tmp_path / "archiver.toml", {"logging.level": "INFO"}))] if config_file else []
    argv = {"render": ["render", str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "o")],
            "search": ["search", "--text", "refund"], "run": ["run", "--no-progress"]}[command]
    assert main([*head, *argv]) == 2
    out = capsys.readouterr()
    assert f"archiver: error: {setting}: {WITHHELD}" in out.err, out.err
    _nowhere(_secret_parts(secret.partition("-----BEGIN PRIVATE KEY-----")[2] or secret) or [secret],
             out.out, out.err, *log_lines)
    assert not any((tmp_path / "o").glob("*"))  # nothing rendered


# -- the loaders themselves (a Config built in code, not read by config.load) ------------------------------------

def test_every_key_file_loader_refuses_key_material_without_showing_it(keys) -> None:
    pem = keys["signing.key.pem"].read_text()
    hex_key = secrets.token_hex(32)
    refusals = []
    for call, error in ((lambda: load_identity(str(keys["signing.crt.pem"]), pem), SigningError),
                        (lambda: load_identity(pkcs12_path=pem), SigningError),
                        (lambda: load_search_key(hex_key), ConfigError),
                        (lambda: RecipientKey.load(pem, [str(keys["legal.crt.pem"])]), EnvelopeError)):
        with pytest.raises(error) as refused:
            call()
        refusals.append(str(refused.value))
    assert refusals == [f"{name}: {WITHHELD}" for name in ("signing.key", "signing.pkcs12", "search.key_file", "--key")]


@pytest.mark.parametrize("path", ["keys/signing.key.pem", "/run/secrets/archiver-signing-key",
                                  "/etc/archiver/" + "0123456789abcdef" * 4 + ".hex",
                                  "/srv/" + "a" * 300 + "/key.pem",
                                  # relative, 64 characters or more of the base64 alphabet, no dot or dash:
                                  "keys/" + "3f9a" * 16,  # a content-addressed file name
                                  "KEYS/" + "3F9A" * 16,
                                  "secrets/archiver/signing/production/euwest1/current/signingkey/version2026",
                                  "/secrets/archiver/signing/production/euwest1/current/signingkey/version2026",
                                  "vault/secret/data/contactcentre/archiver/prod/signing/keyfile/searchkey"])
def test_ordinary_paths_are_not_taken_for_key_material(path: str) -> None:
    """A path that is not there is said to be missing, and named."""
    with pytest.raises(ConfigError, match=f"^search.key_file: {path}: cannot read"):
        load_search_key(path)


# -- a private key file others on the host can read is warned of --------------------------------------------------

def _signing_files(tmp_path: Path, keys: dict[str, Path], setting: str, mode: int) -> dict[str, str]:
    """load_identity's arguments for SETTING (signing.key or signing.pkcs12), its file copied with MODE."""
    if setting == "signing.key":
        key = tmp_path / "signing.key.pem"
        key.write_bytes(keys["signing.key.pem"].read_bytes())
        key.chmod(mode)
        return {"certificate": str(keys["signing.crt.pem"]), "key": str(key)}
    bundle = tmp_path / "signing.p12"
    bundle.write_bytes(base64.b64decode(_pkcs12_base64(keys)))
    bundle.chmod(mode)
    return {"pkcs12_path": str(bundle), "password": "pw"}


@pytest.mark.parametrize("setting", ["signing.key", "signing.pkcs12"])
@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o640, True), (0o604, True), (0o600, False),
                                          (0o400, False)], ids=["0644", "0640", "0604", "0600", "0400"])
def test_a_signing_key_file_others_can_read_is_warned_naming_setting_and_mode(setting, mode, warned, tmp_path, keys,
                                                                              log_lines) -> None:
    """Warned, not refused: containers often mount secrets 0644. Never the key's content."""
    files = _signing_files(tmp_path, keys, setting, mode)
    load_identity(**files)
    load_identity(**files)  # serve loads the keys before every pass: said once
    path = files.get("key") or files["pkcs12_path"]
    expected = [f"key_file_readable_by_others {{'setting': '{setting}', 'path': '{path}', 'mode': '{mode:04o}'}}"]
    said = [line for line in log_lines if line.startswith("key_file_readable_by_others")]
    assert said == (expected if warned else [])


def test_render_warns_of_a_world_readable_signing_key_on_stderr(tmp_path, make_config, keys, capsys) -> None:
    files = _signing_files(tmp_path, keys, "signing.key", 0o644)
    config = make_config()
    values = {k: config[k] for k in ("mongodb.uri", "storage.url", "signing.certificate", "source.database")}
    toml = write_toml(tmp_path / "archiver.toml", {**values, "signing.key": files["key"], "logging.format": "json"})
    assert main(["--config", str(toml), "render", str(DATA / "seed-fixed.txt"), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if "key_file_readable_by_others" in line]
    assert [{k: line[k] for k in ("level", "setting", "path", "mode")} for line in lines] == [
        {"level": "warning", "setting": "signing.key", "path": files["key"], "mode": "0644"}], err
    _nowhere(_secret_parts(keys["signing.key.pem"].read_text()), err)


def test_run_with_worker_processes_warns_once(nx_uri, db_names, tmp_path, keys) -> None:
    """Said by the process the operator started; its worker processes load the key again, silently (in a
    process of its own: a worker's stderr is the archiver's file descriptor 2, not a capture of this one)."""
    import subprocess

    from test_crash import ARCHIVER, _config, _seed

    _seed(nx_uri, db_names["source.database"], 6, messages=3)
    files = _signing_files(tmp_path, keys, "signing.key", 0o640)
    config = _config(tmp_path, nx_uri, db_names, keys, **{"archive.workers": 2, "signing.key": files["key"],
                                                          "logging.format": "json"})
    done = subprocess.run([ARCHIVER, "--config", str(config), "run", "--no-progress"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "archived 6," in done.stdout, done
    assert done.stderr.count("key_file_readable_by_others") == 1, done.stderr


# -- --cert given the PEM text of a certificate and its key ---------------------------------------------------------

def _other_key(tmp_path: Path) -> Path:
    """An RSA key no configured certificate belongs to: RecipientKey.load looks through every --cert for one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "other.key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _cli_config(tmp_path: Path, make_config) -> tuple[Path, object]:
    config = make_config()
    values = {k: config[k] for k in ("mongodb.uri", "storage.url", "signing.certificate", "signing.key",
                                     "encryption.recipients", "source.database", "index.database",
                                     "logging.format")}
    return write_toml(tmp_path / "archiver.toml", values), config


def _with_cert(command: str, tmp_path: Path, key: Path, cert: str) -> list[str]:
    return {"retrieve": ["retrieve", "ROOM_1", "--key", str(key), "--cert", cert, "--out", str(tmp_path / "o"),
                         "--reason", "case 1"],
            "bundle": ["retrieve", "--bundle", str(tmp_path / "b.zip"), "--key", str(key), "--cert", cert,
                       "--reason", "case 1", "ROOM_1", "--no-progress"],
            "verify": ["verify", "--all", "--key", str(key), "--cert", cert, "--no-progress"]}[command]


@pytest.mark.parametrize("command", ["retrieve", "bundle", "verify"])
def test_cert_option_given_the_pem_text_is_refused_and_never_shown(command, tmp_path, make_config, keys, capsys,
                                                                    log_lines) -> None:
    """A PEM of certificate and key pasted where --cert's path belongs: refused before anything is read, and
    neither the key nor the certificate is quoted (not even in 'none of the recipient certificates (...)')."""
    pem = keys["legal.crt.pem"].read_text() + keys["legal.key.pem"].read_text()
    toml, config = _cli_config(tmp_path, make_config)
    assert main(["--config", str(toml), *_with_cert(command, tmp_path, _other_key(tmp_path), pem)]) == 2
    out = capsys.readouterr()
    assert f"archiver: error: --cert: {WITHHELD}" in out.err, out.err
    audit = [json.dumps(entry, default=str) for entry in read_audit_log(config).entries()]
    _nowhere(_secret_parts(pem), out.out, out.err, *log_lines, *audit)
    assert not (tmp_path / "o").exists() and not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("command", ["retrieve", "verify"])
def test_cert_option_naming_a_missing_file_says_so(command, tmp_path, make_config, keys, capsys) -> None:
    """Not skipped in silence: the operator learns which --cert could not be read."""
    toml, _ = _cli_config(tmp_path, make_config)
    missing = str(tmp_path / "legal-2027.crt.pem")
    assert main(["--config", str(toml), *_with_cert(command, tmp_path, keys["legal.key.pem"], missing)]) == 2
    assert f"archiver: error: --cert {missing}: cannot read (No such file or directory)" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["encryption.recipients", "signing.chain", "signing.trust_anchors",
                                     "signing.certificate"])
def test_a_certificate_setting_of_the_wrong_type_holding_a_key_is_not_echoed(setting, tmp_path, keys) -> None:
    """A PEM of certificate and key written as one TOML string where a list belongs (or a list where a path
    belongs): the type error says so without quoting it."""
    from archiver.config import load

    pem = keys["legal.crt.pem"].read_text() + keys["legal.key.pem"].read_text()
    section, key = setting.split(".")
    value = f'["""{pem}"""]' if setting == "signing.certificate" else f'"""{pem}"""'
    toml = tmp_path / "archiver.toml"
    toml.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as refused:
        load(toml)
    assert str(refused.value).startswith(f"{setting}: must be "), refused.value
    assert "value withheld" in str(refused.value)
    _nowhere(_secret_parts(pem), str(refused.value))


def _base64_keys_with_a_slash() -> dict[str, str]:
    """One-line base64 keys (DER: PKCS#8 and SEC1 EC, PKCS#8 RSA, a PKCS#12) that hold a '/', as such keys mostly
    do: a '/' alone must not make them pass for a relative path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def first_with_slash(make) -> str:
        return next(text for text in (base64.b64encode(make()).decode() for _ in range(50)) if "/" in text)

    der = serialization.Encoding.DER
    none = serialization.NoEncryption()
    return {
        "EC P-256 PKCS#8": first_with_slash(lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            der, serialization.PrivateFormat.PKCS8, none)),
        "EC P-256 SEC1": first_with_slash(lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            der, serialization.PrivateFormat.TraditionalOpenSSL, none)),
        "RSA PKCS#8": first_with_slash(lambda: rsa.generate_private_key(65537, 2048).private_bytes(
            der, serialization.PrivateFormat.PKCS8, none)),
        "48 random bytes": first_with_slash(lambda: secrets.token_bytes(48)),  # 64 characters
    }


def test_one_line_base64_keys_holding_a_slash_are_still_refused() -> None:
    from archiver.redact import looks_like_key_material

    # one in 64 starts with it, and was taken for an absolute path (quoted in the error: the key shown)
    assert looks_like_key_material("/8+zr1Rvv4u8DfRpSTzvqbQXlJjw3AknFy11ae3AjkCNLG9qCSLQ+FUM7F65qcl+")
    assert looks_like_key_material("/y58/4fvYpIj0Yxb9UngO4kR5v0tt5K3t7S2vhMoAQZoPkBYCVJNo3+1DqibgDVn")

    keys = _base64_keys_with_a_slash()
    assert all("/" in text for text in keys.values())
    assert {name: looks_like_key_material(text) for name, text in keys.items()} == {name: True for name in keys}

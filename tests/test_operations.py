"""Operating it: the metrics server, secrets in errors, unreachable services, the store check, first use."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from archiver import config as config_module
from archiver import logs
from archiver.cli import main
from archiver.commands import COMMANDS
from archiver.config import ConfigError
from archiver.metrics import MAX_CONNECTIONS, Metrics, serve_http
from archiver.mongo import connect
from archiver.redact import redact
from archiver.samples import make_chat
from conftest import free_port, write_toml
from test_pipeline import seed

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cretPassw0rd"


def _toml(tmp_path: Path, make_config, **overrides) -> Path:
    config = make_config(**overrides).as_dict()
    wanted = ["mongodb.uri", "index.uri", "storage.url", "storage.endpoint_url", "storage.max_attempts",
              "storage.object_lock_mode", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format", "logging.level"]
    return write_toml(tmp_path / "archiver.toml", {k: config[k] for k in wanted})


def _seed_one(make_config) -> str:
    config = make_config()
    chat, contact = make_chat(random.Random(15), messages=4, start_ms=(time.time() - 600) * 1000)
    db = connect(config["mongodb.uri"])[config["source.database"]]
    db.chats.insert_one(chat)
    db.contacts.insert_one(contact)
    return chat["room"]


# -- 15. the metrics and health server ---------------------------------------------------------------

def test_metrics_server_binds_loopback_by_default() -> None:
    assert config_module.load(None, environ={})["metrics.host"] == "127.0.0.1"
    server = serve_http(Metrics(), free_port(), lambda: True)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        return answer.status


def _handler_threads() -> int:
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_half_open_connections_are_bounded_and_timed_out() -> None:
    port = free_port()
    server = serve_http(Metrics(), port, lambda: True, "127.0.0.1", timeout=0.5)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3 * MAX_CONNECTIONS)]  # send nothing
    try:
        time.sleep(0.2)
        assert 0 < _handler_threads() <= MAX_CONNECTIONS, "one thread per idle connection"
        for conn in idle:  # every idle connection is closed by the server once it has waited too long
            conn.settimeout(5)
            try:
                assert conn.recv(1) == b""
            except ConnectionResetError:
                pass
        assert _healthz(port) == 200
        deadline = time.monotonic() + 5
        while _handler_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _handler_threads() == 0, "handler threads left behind"
    finally:
        for conn in idle:
            conn.close()
        server.shutdown()
        server.server_close()


def test_a_client_dropping_mid_response_leaves_only_json_on_stderr(capfd) -> None:
    logs.configure("DEBUG", "json")
    port = free_port()
    server = serve_http(Metrics(), port, lambda: True, "127.0.0.1")
    try:
        for _ in range(20):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
            conn.close()
        time.sleep(0.5)
        assert _healthz(port) == 200
    finally:
        server.shutdown()
        server.server_close()
        logs.configure("INFO", "text")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    events = [json.loads(line)["event"] for line in lines]  # fails on any line that is not JSON
    assert "metrics_client_dropped" in events, lines


# -- 16. secrets in errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, shown", [
    (f"mongodb://bob:{SECRET}@db1:27017,db2/?replicaSet=rs0", "mongodb://***@db1:27017,db2/?replicaSet=rs0"),
    (f"error: mongodb+srv://bob:{SECRET}@cluster.example.net/x and http://k:{SECRET}@minio:9000 failed",
     "error: mongodb+srv://***@cluster.example.net/x and http://***@minio:9000 failed"),
    (f"'mongodb://bob:{SECRET}/x@host/'", "'mongodb://***@host/'"),  # a mistyped password with a slash
    ("put s3://bucket/prefix/room@example.com/v1: denied", "put s3://bucket/prefix/room@example.com/v1: denied"),
    ("no URI here: bob@example.com", "no URI here: bob@example.com"),
])
def test_redact_hides_the_userinfo_of_every_uri(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("password", ["Tr0ub'4dor", 'pa"ss', "correct horse", "pa<ss>"])
def test_a_configured_password_with_quotes_or_spaces_never_reaches_a_message(password, capsys) -> None:
    """The driver takes these unescaped; a pattern cannot tell where such a password ends, so the ones
    configured are hidden wherever they appear."""
    config = config_module.load(None, environ={"ARCHIVER_MONGODB__URI": f"mongodb://admin:{password}@127.0.0.1:1/",
                                               "ARCHIVER_STORAGE__URL": "file:///tmp/x"})
    text = f"archiver: error: mongodb.uri ({config['mongodb.uri']}): could not be reached"
    assert password not in redact(text) and "127.0.0.1:1" in redact(text)


@pytest.mark.parametrize("password", ['s3cr"et pw', "back\\slash pw"])
def test_a_configured_password_json_would_escape_never_reaches_a_json_log_line(password) -> None:
    """JSON writes a quote or a backslash escaped: hidden only after writing, the password was not itself."""
    import logging as logging_
    config_module.load(None, environ={"ARCHIVER_MONGODB__URI": f"mongodb://admin:{password}@127.0.0.1:1/"})
    record = logging_.LogRecord("archiver", logging_.ERROR, __file__, 1, "pass_failed", None, None)
    record.fields = {"error": f"ServerSelectionTimeoutError: mongodb://admin:{password}@127.0.0.1:1/ unreachable"}
    line = logs.JsonFormatter().format(record)
    assert json.dumps(password)[1:-1] not in line and password not in line and "127.0.0.1:1" in json.loads(line)["error"]


def test_secrets_in_uri_options_are_hidden() -> None:
    text = ("mongodb://db1/?tls=true&tlsCertificateKeyFilePassword=hunter2&authMechanism=MONGODB-AWS"
            "&authMechanismProperties=AWS_SESSION_TOKEN:FQoGZXIvYXdzEJr")
    shown = redact(text)
    assert "hunter2" not in shown and "FQoGZXIvYXdzEJr" not in shown and "tls=true" in shown


def test_a_mistyped_uri_is_named_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.load(None, environ={"ARCHIVER_MONGODB__URI": f"mongdb://bob:{SECRET}@db1/"})
    assert "mongodb.uri" in str(caught.value) and SECRET not in str(caught.value)
    assert "***@db1" in str(caught.value)


@pytest.mark.parametrize("key, uri, complaint", [
    ("mongodb.uri", f"mongodb://bob:{SECRET}@127.0.0.1:99999/", "Port must be an integer"),
    ("index.uri", f"mongodb://bob:{SECRET}@127.0.0.1/?serverSelectionTimeoutMS=soon", "must be an integer"),
    ("index.uri", f"mongodb://bob:{SECRET}@127.0.0.1/?replicaSett=rs0", "Unknown option"),
])
def test_a_bad_uri_is_exit_2_naming_the_key(tmp_path, make_config, capsys, key, uri, complaint) -> None:
    config = _toml(tmp_path, make_config, **{key: uri})
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"archiver: error: {key}:" in err and complaint in err, err
    assert SECRET not in err


def test_logs_never_carry_uri_passwords(capfd) -> None:
    logs.configure("INFO", "json")
    try:
        logs.event("pass_failed", error=f"mongodb://bob:{SECRET}@db1/ is down", url=f"http://k:{SECRET}@minio")
    finally:
        logs.configure("INFO", "text")
    err = capfd.readouterr().err
    assert SECRET not in err and json.loads(err)["error"] == "mongodb://***@db1/ is down"


def test_storage_endpoint_credentials_never_reach_output_or_the_queue(tmp_path, make_config, capsys,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    room = _seed_one(make_config)
    config = _toml(tmp_path, make_config, storage__url="s3://bucket/p",
                   storage__endpoint_url=f"http://key:{SECRET}@127.0.0.1:{free_port()}", storage__max_attempts=1)
    assert main(["--config", str(config), "run", "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"FAILED {room}" in captured.out and "***@127.0.0.1" in captured.out
    assert SECRET not in captured.out + captured.err
    loaded = make_config()
    jobs = connect(loaded["mongodb.uri"])[loaded["index.database"]]["archive_jobs"]
    assert SECRET not in json.dumps(list(jobs.find({}, {"_id": 0, "last_error": 1})))


# -- 17. a service that cannot be reached -------------------------------------------------------------

UNREACHABLE = 1  # the contract's "finished, but some items failed": the message says it may be retried
RETRY = "may be retried once it can be reached"


@pytest.mark.parametrize("key", ["mongodb.uri", "index.uri"])
def test_unreachable_mongodb_is_one_line_and_exit_1(tmp_path, make_config, capsys, key) -> None:
    uri = f"mongodb://bob:{SECRET}@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    config = _toml(tmp_path, make_config, **{key: uri})
    started = time.monotonic()
    assert main(["--config", str(config), "run", "--no-progress"]) == UNREACHABLE
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"archiver: error: {key} (mongodb://***@127.0.0.1:" in err and "could not be reached" in err
    assert RETRY in err
    assert SECRET not in err and "Topology" not in err


@pytest.mark.parametrize("argv", [
    ["search", "--from", "2022-01-01", "--to", "2022-01-31"], ["verify", "--all"], ["audit", "list"], ["hold", "list"],
    ["seal"], ["retrieve", "CHAT_X", "--key", "k.pem", "--reason", "r", "--out", "out"]])
def test_every_command_names_the_index_setting_it_could_not_reach(tmp_path, make_config, capsys, argv) -> None:
    uri = f"mongodb://bob:{SECRET}@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    config = _toml(tmp_path, make_config, index__uri=uri)
    (tmp_path / "k.pem").write_text("not read before the index is reached")
    assert main(["--config", str(config), *argv]) == UNREACHABLE
    err = capsys.readouterr().err
    assert "archiver: error: index.uri (mongodb://***@127.0.0.1:" in err and "could not be reached" in err, err
    assert RETRY in err, err
    assert SECRET not in err


def test_a_missing_key_file_is_named_before_waiting_on_mongodb(tmp_path, make_config, capsys) -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=5000"
    config = _toml(tmp_path, make_config, mongodb__uri=uri, signing__certificate=str(tmp_path / "none.crt.pem"))
    started = time.monotonic()
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    assert time.monotonic() - started < 4, "not after the server selection timeout"
    err = capsys.readouterr().err
    assert f"{tmp_path / 'none.crt.pem'}: cannot read (No such file or directory)" in err, err
    assert "not a PEM certificate" not in err


def test_readme_documents_an_unreachable_service_as_exit_1() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "a service the archiver needs could not be reached: `1`" in readme
    assert "`4`" not in readme


# -- 19. the local store is checked up front ----------------------------------------------------------

def _untouched(make_config) -> bool:
    config = make_config()
    index = connect(config["mongodb.uri"])[config["index.database"]]
    return index["archive_jobs"].count_documents({}) == 0 and index["archive_index"].count_documents({}) == 0


def test_an_unusable_store_directory_is_exit_2_before_any_chat(tmp_path, make_config, capsys) -> None:
    _seed_one(make_config)
    (tmp_path / "a-file").write_text("not a directory")
    config = _toml(tmp_path, make_config, storage__url=f"file://{tmp_path / 'a-file' / 'store'}")
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "archiver: error: storage.url: " in err and "a-file/store" in err and "cannot write" in err, err
    assert _untouched(make_config), "nothing discovered, claimed or rendered"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_a_read_only_store_directory_is_exit_2(tmp_path, make_config, capsys) -> None:
    _seed_one(make_config)
    store = tmp_path / "ro"
    store.mkdir(mode=0o555)
    config = _toml(tmp_path, make_config, storage__url=f"file://{store}")
    assert main(["--config", str(config), "run", "--no-progress"]) == 2
    assert "storage.url: " in capsys.readouterr().err and _untouched(make_config)


def test_object_lock_with_a_local_store_warns(tmp_path, make_config, capsys) -> None:
    _seed_one(make_config)
    config = _toml(tmp_path, make_config, storage__object_lock_mode="COMPLIANCE")
    assert main(["--config", str(config), "run", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: storage.object_lock_mode COMPLIANCE" in captured.out and "read-only file modes" in captured.out
    assert "warning: local_store_not_locked" in captured.err, "and a log event"
    unlocked = _toml(tmp_path, make_config, storage__object_lock_mode="")
    assert main(["--config", str(unlocked), "run", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().out


# -- 21. first use -----------------------------------------------------------------------------------

def test_no_arguments_lists_the_commands(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "usage: archiver" in err
    for name, module in COMMANDS.items():
        assert name in err and module.HELP[:30] in err


def test_a_missing_setting_without_a_config_file_says_how_to_give_one(tmp_path, capsys, monkeypatch) -> None:
    for name in [n for n in os.environ if n.startswith("ARCHIVER_") and not n.startswith("ARCHIVER_TEST_")]:
        monkeypatch.delenv(name)
    (tmp_path / "chat.json").write_text('{"room": "R", "messages": []}')
    assert main(["render", str(tmp_path / "chat.json"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "signing.certificate: required but not set" in err
    assert "--config PATH" in err and "ARCHIVER_CONFIG" in err


def test_the_help_example_names_a_file_that_exists(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    named = [word for word in out.split() if word.endswith(".toml")]
    assert "config/archiver.example.toml" in named
    assert (ROOT / "config" / "archiver.example.toml").is_file()
    assert "cp config/archiver.example.toml archiver.toml" in out, "says how to make the archiver.toml it uses"


def test_an_unreachable_s3_fails_listings_as_store_errors_that_hide_its_credentials(make_config) -> None:
    """Listing the store (setting aside what a stopped attempt left) raised botocore's own error: the whole
    pass died, its chats stranded, and the error, with the endpoint's password, reached /healthz."""
    from archiver.jobs import Service
    from archiver.store import StoreError, open_store
    from conftest import free_port
    config = make_config(storage__url="s3://archive/p", storage__max_attempts=1,
                         storage__endpoint_url=f"http://key:{SECRET}@127.0.0.1:{free_port()}")
    with pytest.raises(StoreError) as caught:
        open_store(config).keys("room/")
    assert "list s3://archive/p" in str(caught.value) and SECRET not in str(caught.value)
    with pytest.raises(StoreError) as caught:
        list(open_store(config).iter_versions("room/"))  # verify's listing, every version
    assert "list versions s3://archive/p" in str(caught.value) and SECRET not in str(caught.value)
    service = Service(make_config(), threading.Event())
    service.last_error = f"EndpointConnectionError: Could not connect to http://key:{SECRET}@127.0.0.1:1/archive"
    assert service.health_notes() and all(SECRET not in line for line in service.health_notes())


@pytest.mark.parametrize("problem", ["no such bucket", "no object lock"])
def test_a_bucket_that_cannot_take_the_archive_stops_the_run_before_any_chat_is_claimed(
        make_config, moto_endpoint, problem, capsys, tmp_path) -> None:
    """Each chat was claimed, rendered, signed and encrypted, then failed at its put, and retried for ever."""
    import boto3
    import uuid
    name = f"plain-{uuid.uuid4().hex[:12]}"
    if problem == "no object lock":
        boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    config = make_config(storage__url=f"s3://{name}/archive", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="COMPLIANCE")
    seed(config, [make_chat(random.Random(5), messages=3, start_ms=time.time() * 1000 - 60_000)])
    path = write_toml(tmp_path / "c.toml", {k: config[k] for k in (
        "mongodb.uri", "storage.url", "storage.endpoint_url", "storage.object_lock_mode", "signing.certificate",
        "signing.key", "encryption.recipients")})
    assert main(["--config", str(path), "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert ("storage.url: s3://" in err and "no such bucket" in err) if problem == "no such bucket" else \
        ("storage.object_lock_mode: COMPLIANCE, but bucket" in err)
    jobs = connect(config["mongodb.uri"])[config["index.database"]][config["index.jobs"]]
    assert jobs.count_documents({}) == 0

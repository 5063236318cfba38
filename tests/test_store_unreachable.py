"""A store that cannot be reached is an outage (exit 1, as the contract has it for work not done, saying it may be
retried), never a verification verdict (exit 3): retrieve, bundles and verify say which setting points where, and the
audit log records it as unreachable."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from archiver.cli import main
from conftest import write_toml
from nxserver import free_port
from retrieval_helpers import archive_samples, audit, index

RETRY = "may be retried once it can be reached"

KEYS = ("mongodb.uri", "index.database", "storage.url", "storage.endpoint_url", "storage.max_attempts",
        "encryption.recipients")


@pytest.fixture
def on_s3(make_config, moto_endpoint, bucket):
    """Two chats archived to moto (no Object Lock, so that a test may delete an object); their entries."""
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__object_lock_mode="", storage__max_attempts=1)
    return config, archive_samples(config, count=2)


def _endpoint_down(config):
    """The entries' store (and the configuration) moved to a 127.0.0.1 port nobody listens on: the same
    as the S3 service being down."""
    dead = f"http://127.0.0.1:{free_port()}"
    index(config).update_many({}, {"$set": {"store.endpoint_url": dead}})
    return config.with_overrides(**{"storage.endpoint_url": dead}), dead


def _cli(config, tmp_path: Path, *argv: str) -> int:
    toml = write_toml(tmp_path / "cli.toml", {k: config[k] for k in (*KEYS, "signing.certificate", "signing.key")})
    return main(["--config", str(toml), *argv])


def _says_unreachable(err: str, config, dead: str) -> None:
    assert "could not be reached" in err and RETRY in err, err
    assert f"storage.url {config['storage.url'].rstrip('/')}/" in err and f"storage.endpoint_url {dead}" in err, err
    assert "verification failed" not in err and "failed verification" not in err, err


def test_retrieve_with_the_store_down_is_exit_1_and_audited_as_unreachable(on_s3, keys, tmp_path, capsys) -> None:
    config, entries = on_s3
    down, dead = _endpoint_down(config)
    code = _cli(down, tmp_path, "retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]),
                "--out", str(tmp_path / "out"), "--reason", "case 4")
    assert code == 1
    _says_unreachable(capsys.readouterr().err, down, dead)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    last = audit(config)[-1]
    assert last["action"] == "retrieve" and last["outcome"] == "unreachable", last
    assert "verification failed" not in last["detail"]


def test_a_bundle_with_the_store_down_is_exit_1_and_audited_as_unreachable(on_s3, keys, tmp_path, capsys) -> None:
    config, entries = on_s3
    down, dead = _endpoint_down(config)
    bundle = tmp_path / "case.zip"
    code = _cli(down, tmp_path, "retrieve", "--bundle", str(bundle), entries[0]["room"], entries[1]["room"],
                "--key", str(keys["legal.key.pem"]), "--reason", "case 4", "--workers", "1", "--no-progress")
    assert code == 1
    _says_unreachable(capsys.readouterr().err, down, dead)
    assert not bundle.exists()
    assert audit(config)[-1]["outcome"] == "unreachable"


@pytest.mark.parametrize("scope", [["ROOM"], ["--all"]])
def test_verify_with_the_store_down_is_exit_1_and_audited_as_unreachable(on_s3, tmp_path, capsys, scope) -> None:
    config, entries = on_s3
    down, dead = _endpoint_down(config)
    code = _cli(down, tmp_path, "verify", *[entries[0]["room"] if s == "ROOM" else s for s in scope], "--no-progress")
    assert code == 1
    _says_unreachable(capsys.readouterr().err, down, dead)
    last = audit(config)[-1]
    assert last["action"] == "verify" and last["outcome"] == "unreachable", last


def test_an_object_gone_from_a_reachable_store_is_still_a_verification_failure(on_s3, keys, tmp_path, moto_endpoint,
                                                                               bucket, capsys) -> None:
    config, entries = on_s3
    obj = entries[0]["objects"]["record"]
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").delete_object(
        Bucket=bucket, Key=f"chats/{obj['key']}", VersionId=obj["version_id"])
    code = _cli(config, tmp_path, "retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]),
                "--out", str(tmp_path / "out"), "--reason", "case 4")
    assert code == 3
    assert "the object is missing from the store" in capsys.readouterr().err
    assert audit(config)[-1]["outcome"] == "failed"


def test_any_other_command_that_meets_the_store_down_is_exit_1_naming_the_settings(on_s3, tmp_path, capsys) -> None:
    config, entries = on_s3
    down, dead = _endpoint_down(config)
    code = _cli(down, tmp_path, "retention", "run")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "could not be reached (storage.url, storage.endpoint_url)" in err and dead in err and RETRY in err, err


def test_a_local_store_directory_gone_is_an_outage_not_missing_objects(make_config, keys, tmp_path, capsys) -> None:
    """An unmounted volume: retrieve, bundles and verify say the store cannot be reached (exit 1, audited as
    unreachable), never that every object is missing (exit 3), and do not create an empty directory there."""
    config = make_config()
    entries = archive_samples(config, count=2)
    root = Path(config["storage.url"].removeprefix("file://"))
    root.rename(root.with_name("unmounted"))
    runs = [("retrieve", entries[0]["room"], "--key", str(keys["legal.key.pem"]), "--out", str(tmp_path / "out"),
             "--reason", "case 4"),
            ("retrieve", "--bundle", str(tmp_path / "case.zip"), entries[0]["room"], "--key", str(keys["legal.key.pem"]),
             "--reason", "case 4", "--workers", "1", "--no-progress"),
            ("verify", entries[0]["room"], "--no-progress"), ("verify", "--all", "--no-progress")]
    for argv in runs:
        capsys.readouterr()
        assert _cli(config, tmp_path, *argv) == 1, argv
        err = capsys.readouterr().err
        assert "could not be reached" in err and "does not exist" in err and str(root) in err, err
        assert "missing" not in err, err
        assert audit(config)[-1]["outcome"] == "unreachable", (argv, audit(config)[-1])
        assert not root.exists(), f"{argv} created the store directory"

"""Which S3 endpoint retrieve, bundles and verify use for an index entry: the configured storage.endpoint_url
for the configured store (an endpoint that moved, or that another network reaches by another name, is
followed), the entry's recorded endpoint only for a store the configuration no longer names; and a message
that says which of the two could not be reached. All on moto over HTTP on 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from archiver.cli import main
from conftest import write_toml
from nxserver import free_port
from retrieval_helpers import archive_samples, index

KEYS = ("mongodb.uri", "index.database", "storage.url", "storage.endpoint_url", "storage.max_attempts",
        "storage.object_lock_mode", "encryption.recipients", "signing.certificate", "signing.key")


@pytest.fixture
def archived(make_config, moto_endpoint, bucket):
    config = make_config(storage__url=f"s3://{bucket}/chats", storage__endpoint_url=moto_endpoint,
                         storage__max_attempts=1)
    return config, archive_samples(config, count=1)[0]


def _cli(config, tmp_path: Path, *argv: str) -> int:
    toml = write_toml(tmp_path / f"cli-{uuid.uuid4().hex[:6]}.toml", {k: config[k] for k in KEYS})
    return main(["--config", str(toml), *argv])


def _commands(entry, keys, tmp_path: Path) -> dict[str, list[str]]:
    key = str(keys["legal.key.pem"])
    return {
        "retrieve": ["retrieve", entry["room"], "--key", key, "--out", str(tmp_path / "out"), "--reason", "case 7"],
        "bundle": ["retrieve", "--bundle", str(tmp_path / "case.zip"), entry["room"], "--key", key,
                   "--reason", "case 7", "--workers", "1", "--no-progress"],
        "verify ROOM": ["verify", entry["room"], "--key", key, "--no-progress"],
        "verify --all": ["verify", "--all", "--no-progress"],
    }


@pytest.mark.parametrize("command", ["retrieve", "bundle", "verify ROOM", "verify --all"])
def test_a_moved_endpoint_is_followed_for_the_configured_store(archived, keys, tmp_path, capsys, command) -> None:
    """Recorded while the archiver reached S3 at an address that no longer answers (as docker-compose's
    http://minio:9000 does outside its network); the configuration names the live one."""
    config, entry = archived
    moved = f"http://127.0.0.1:{free_port()}"  # nobody listens
    index(config).update_many({}, {"$set": {"store.endpoint_url": moved}})
    code = _cli(config, tmp_path, *_commands(entry, keys, tmp_path)[command])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert moved not in captured.out + captured.err


@pytest.mark.parametrize("command", ["retrieve", "bundle", "verify ROOM", "verify --all"])
def test_the_configured_endpoint_is_not_silently_ignored(archived, keys, tmp_path, capsys, command) -> None:
    """The entry's recorded endpoint is live, the configured one is dead: the command cannot succeed, and
    says that storage.endpoint_url (the dead one) could not be reached."""
    config, entry = archived
    dead = f"http://127.0.0.1:{free_port()}"
    code = _cli(config.with_overrides(**{"storage.endpoint_url": dead}), tmp_path,
                *_commands(entry, keys, tmp_path)[command])
    err = capsys.readouterr().err
    assert code not in (0, 3), err  # an outage, not a success and not a verification verdict
    assert "could not be reached" in err and dead in err and "storage.endpoint_url" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "case.zip").exists()


def _moved_to_another_bucket(config, moto_endpoint: str):
    """The configuration now names a new bucket (and no endpoint to speak of): ENTRY stays in the old one."""
    newer = f"archive-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=newer, ObjectLockEnabledForBucket=True)
    return config.with_overrides(**{"storage.url": f"s3://{newer}/chats",
                                    "storage.endpoint_url": f"http://127.0.0.1:{free_port()}"})


def test_an_entry_in_a_store_no_longer_configured_is_read_at_its_recorded_endpoint(
        archived, keys, tmp_path, capsys, moto_endpoint) -> None:
    config, entry = archived
    moved = _moved_to_another_bucket(config, moto_endpoint)
    for name in ("retrieve", "bundle"):  # verify also lists the configured (here dead) store for strays
        argv = _commands(entry, keys, tmp_path)[name]
        assert _cli(moved, tmp_path, *argv) == 0, (argv, capsys.readouterr())


def test_a_recorded_endpoint_that_cannot_be_reached_is_named_as_the_entrys_not_the_configurations(
        archived, keys, tmp_path, capsys, moto_endpoint) -> None:
    config, entry = archived
    moved = _moved_to_another_bucket(config, moto_endpoint)
    recorded = f"http://127.0.0.1:{free_port()}"
    index(config).update_many({}, {"$set": {"store.endpoint_url": recorded}})
    for name in ("retrieve", "bundle", "verify ROOM"):
        code = _cli(moved.with_overrides(**{"storage.endpoint_url": moto_endpoint}), tmp_path,
                    *_commands(entry, keys, tmp_path)[name])
        err = capsys.readouterr().err
        assert code not in (0, 3), (name, err)
        assert f"endpoint recorded in the index entry {recorded}" in err, (name, err)
        assert f"storage.endpoint_url {recorded}" not in err, (name, err)


@pytest.mark.parametrize("url", ["s3://b/p", "s3://b/p/", "s3://b", "s3://b/a/b/", "file:///{tmp}/x/../y"])
def test_the_configured_store_is_recognised_as_an_entry_records_it(make_config, tmp_path, url) -> None:
    """open_store_for compares the entry's store URL with storage.url as a store opened from it names itself,
    without opening it (a local store would be created on the way)."""
    from archiver.store import _configured_url, open_store, store_location

    config = make_config(storage__url=url.replace("/{tmp}", str(tmp_path)))
    assert not (tmp_path / "y").exists()
    assert _configured_url(config) == store_location(open_store(config, writable=False))["url"]

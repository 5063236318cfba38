from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from archiver.store import ObjectExists, ObjectLocked, ObjectMissing, StoreError
from archiver.store.local import LocalStore
from archiver.store.s3 import S3Store

from faulty_s3 import FaultyS3

RETAIN = dt.datetime(2036, 1, 1, tzinfo=dt.timezone.utc)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_s3_put_is_checksummed_locked_and_exact(moto_endpoint: str, bucket: str) -> None:
    store = S3Store(bucket, "transcripts", endpoint_url=moto_endpoint)
    data = b"\x00ciphertext\xff" * 100
    stored = store.put("room/v1/a.p7m", data, _sha(data), RETAIN)
    assert stored.version_id and stored.size == len(data)
    assert store.get("room/v1/a.p7m", stored.version_id) == data
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    head = s3.head_object(Bucket=bucket, Key="transcripts/room/v1/a.p7m", ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"].year == 2036
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == _sha(data)
    assert store.keys() == ["room/v1/a.p7m"]
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key="transcripts/room/v1/a.p7m", VersionId=stored.version_id)
    assert store.get("room/v1/a.p7m", stored.version_id) == data


def test_s3_never_overwrites(moto_endpoint: str, bucket: str) -> None:
    store = S3Store(bucket, "", endpoint_url=moto_endpoint)
    store.put("k", b"one", _sha(b"one"), RETAIN)
    with pytest.raises(ObjectExists):
        store.put("k", b"two", _sha(b"two"), RETAIN)
    assert store.get("k") == b"one"


def test_s3_throttling_and_5xx_are_retried(moto_endpoint: str, bucket: str) -> None:
    with FaultyS3() as proxy:
        store = S3Store(bucket, "", endpoint_url=proxy.url, max_attempts=5)
        proxy.failures = [503, 500, 503]
        store.put("k", b"data", _sha(b"data"), RETAIN)
        assert proxy.seen_puts == 4
        assert store.get("k") == b"data"


def test_s3_persistent_failure_is_reported(moto_endpoint: str, bucket: str) -> None:
    with FaultyS3() as proxy:
        store = S3Store(bucket, "", endpoint_url=proxy.url, max_attempts=3)
        proxy.always = 500
        with pytest.raises(StoreError, match="InternalError"):
            store.put("k", b"data", _sha(b"data"), RETAIN)
        assert proxy.seen_puts == 3


def test_local_store_is_write_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put("room/v1/a.p7m", b"abc", _sha(b"abc"), RETAIN)
    with pytest.raises(ObjectExists):
        store.put("room/v1/a.p7m", b"xyz", _sha(b"xyz"), RETAIN)
    with pytest.raises(StoreError, match="does not match"):
        store.put("room/v1/b.p7m", b"abc", _sha(b"other"), RETAIN)
    assert store.get("room/v1/a.p7m") == b"abc"
    assert store.keys() == ["room/v1/a.p7m"]
    assert (tmp_path / "s/room/v1/a.p7m").stat().st_mode & 0o222 == 0, "stored files are read-only"
    with pytest.raises(StoreError, match="would leave the store"):
        store.put("../escape", b"abc", _sha(b"abc"), None)
    with pytest.raises(ObjectMissing):
        store.get("room/v9/none")
    with pytest.raises(StoreError, match="put file://.*/room/v1/a.p7m/c.p7m: "):  # a file system error
        store.put("room/v1/a.p7m/c.p7m", b"abc", _sha(b"abc"), None)


@pytest.mark.parametrize("echoed", [base64.b64encode(hashlib.sha256(b"other").digest()).decode(), None])
def test_s3_put_acknowledged_without_our_checksum_is_a_failure(echoed, moto_endpoint: str, bucket: str) -> None:
    with FaultyS3() as proxy:
        store = S3Store(bucket, "p", endpoint_url=proxy.url)
        proxy.rewrite_headers = {"x-amz-checksum-sha256": echoed}  # a wrong echo, or none at all
        with pytest.raises(StoreError, match=r"put s3://.*/p/room/v1/a\.p7m: .*checksum") as raised:
            store.put("room/v1/a.p7m", b"data", _sha(b"data"), RETAIN)
        assert _sha(b"data") in str(raised.value)
        proxy.rewrite_headers = {}
        assert store.put("room/v1/b.p7m", b"data", _sha(b"data"), RETAIN).version_id


def test_s3_locked_put_acknowledged_without_a_version_id_is_a_failure(moto_endpoint: str, bucket: str) -> None:
    with FaultyS3() as proxy:
        store = S3Store(bucket, "", endpoint_url=proxy.url)
        proxy.rewrite_headers = {"x-amz-version-id": None}
        with pytest.raises(StoreError, match=r"put s3://.*/k: .*no version id"):
            store.put("k", b"data", _sha(b"data"), RETAIN)
        assert store.put("unlocked", b"data", _sha(b"data"), None).version_id == "", "nothing to pin without a lock"


# -- issue 8 item 23: a full disk or a failed write never leaves half a pair -------------------------

_PUT_ON_A_FULL_DISK = r"""
import hashlib, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from archiver.store import StoreError
from archiver.store.local import LocalStore
data = b"x" * 5000
try:
    LocalStore(Path(sys.argv[1])).put("room/v1/a.p7m", data, hashlib.sha256(data).hexdigest(), None)
except StoreError as exc:
    print(exc)
"""


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def test_local_store_on_a_full_disk_leaves_no_half_pair(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _PUT_ON_A_FULL_DISK, str(tmp_path / "s")], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0 and "File too large" in done.stdout, done.stdout + done.stderr
    assert _files(tmp_path / "s") == []


@pytest.mark.parametrize("fail_after", [0, 40, 2010])  # in the object, in its metadata
def test_local_store_no_space_after_n_bytes(tmp_path: Path, monkeypatch, fail_after: int) -> None:
    real_write, written = os.write, [0]

    def write(fd: int, data) -> int:
        if written[0] + len(data) > fail_after:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    store, data = LocalStore(tmp_path / "s"), b"y" * 2000
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put("room/v1/a.p7m", data, _sha(data), RETAIN)
    monkeypatch.undo()
    assert _files(tmp_path / "s") == [] and store.keys() == []
    store.put("room/v1/a.p7m", data, _sha(data), RETAIN)  # space again: nothing left over blocks the retry
    assert _files(tmp_path / "s") == ["room/v1/a.p7m", "room/v1/a.p7m.meta.json"]


def test_local_store_keys_skip_orphan_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put("room/v1/a.p7m", b"abc", _sha(b"abc"), RETAIN)
    (tmp_path / "s/room/v1/.tmp-crashed").write_bytes(b"half")
    assert store.keys() == ["room/v1/a.p7m"] and store.keys("room/v1/") == ["room/v1/a.p7m"]


# -- issue 12: a chat's objects are synced together ------------------------------------------------

def _chat_objects(*names: str, folder: str = "room/v1") -> list[tuple[str, bytes, str]]:
    return [(f"{folder}/{name}.p7m", name.encode() * 100, _sha(name.encode() * 100)) for name in names]


def _count_syncs(monkeypatch, seen_at_syncfs: Any = None) -> list[tuple[str, Any]]:
    """Each syncfs and fsync from here on, with the file synced (or what SEEN_AT_SYNCFS(fd) returns)."""
    from archiver import files

    calls: list[tuple[str, Any]] = []
    real_fsync = os.fsync

    def syncfs(fd: int) -> int:
        calls.append(("syncfs", seen_at_syncfs(fd) if seen_at_syncfs else os.readlink(f"/proc/self/fd/{fd}")))
        return 0

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(files, "_SYNCFS", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_local_put_many_syncs_the_data_once_before_linking_and_the_folder_once(tmp_path: Path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "s")
    calls = _count_syncs(monkeypatch, lambda fd: store.keys())  # nothing is linked before the data is durable
    stored = store.put_many(_chat_objects("pdf", "record", "sig"), RETAIN)
    assert [s.key for s in stored] == store.keys() == ["room/v1/pdf.p7m", "room/v1/record.p7m", "room/v1/sig.p7m"]
    assert calls == [("syncfs", []), ("fsync", str(tmp_path / "s/room/v1"))]
    for key, data, _ in _chat_objects("pdf", "record", "sig"):
        assert store.get(key) == data and (tmp_path / "s" / (key + ".meta.json")).exists()


def test_local_put_many_without_syncfs_syncs_each_file(tmp_path: Path, monkeypatch) -> None:
    from archiver import files

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(files, "_SYNCFS", None)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    LocalStore(tmp_path / "s").put_many(_chat_objects("pdf", "record"), RETAIN)
    assert len(synced) == 4 + 1, "two objects and their metadata, then the folder"


def test_local_put_many_left_to_a_later_sync_syncs_nothing_until_the_store_is_synced(
        tmp_path: Path, monkeypatch) -> None:
    """The archive pass: a chat's objects are linked unsynced, one syncfs of the store makes a batch durable."""
    calls = _count_syncs(monkeypatch)
    store = LocalStore(tmp_path / "s")
    for room in ("a", "b"):
        store.put_many(_chat_objects("pdf", "record", folder=f"{room}/v1"), RETAIN, sync=False)
    assert calls == [] and len(store.keys()) == 4 and store.get("b/v1/record.p7m") == b"record" * 100
    store.sync()
    assert calls == [("syncfs", str(tmp_path / "s"))]


def test_local_put_many_left_to_a_later_sync_still_syncs_what_that_sync_would_miss(
        tmp_path: Path, monkeypatch) -> None:
    from archiver import files

    calls = _count_syncs(monkeypatch)
    store = LocalStore(tmp_path / "s")
    store._device += 1  # as if the chat's folder were another file system mounted inside the store
    store.put_many(_chat_objects("pdf"), RETAIN, sync=False)
    assert [c for c, _ in calls] == ["syncfs", "fsync"], "synced here: the store's syncfs would not cover it"
    calls.clear()
    monkeypatch.setattr(files, "_SYNCFS", None)  # no syncfs: nothing can be left to a later one
    store = LocalStore(tmp_path / "t")
    store.put_many(_chat_objects("pdf"), RETAIN, sync=False)
    assert [c for c, _ in calls] == ["fsync"] * 3, "the object, its metadata, the folder"
    store.sync()
    assert len(calls) == 3


def test_the_store_syncs_through_one_descriptor_open_since_it_was_made(tmp_path: Path, monkeypatch) -> None:
    """Linux reports a write-back error once per open file: a descriptor opened for each sync would miss
    one that another process's sync reported first, and a batch whose data was lost would be indexed."""
    import pickle

    from archiver import files

    store, used = LocalStore(tmp_path / "s"), []
    monkeypatch.setattr(files, "_SYNCFS", lambda fd: used.append(os.readlink(f"/proc/self/fd/{fd}")) or 0)
    store.put_many(_chat_objects("pdf"), RETAIN, sync=False)
    real_open = os.open

    def no_new_files(path, *args, **kwargs):
        raise AssertionError(f"sync opened {path}")
    monkeypatch.setattr(os, "open", no_new_files)
    store.sync()
    store.sync()
    monkeypatch.setattr(os, "open", real_open)
    assert used == [str(tmp_path / "s")] * 2
    copy = pickle.loads(pickle.dumps(store))  # another process gets its own descriptor
    assert copy.root == store.root and copy._sync_fd != store._sync_fd


def test_a_metadata_file_a_power_cut_left_empty_records_no_lock_and_garbage_is_named(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_many(_chat_objects("pdf", "record"), RETAIN, sync=False)
    for name in ("pdf", "record"):
        meta = tmp_path / f"s/room/v1/{name}.p7m.meta.json"
        meta.chmod(0o644)
        meta.write_bytes(b"" if name == "pdf" else b'{"retain_until": "2036-')
    store.delete("room/v1/pdf.p7m")  # an unsynced leftover, never indexed: no lock was recorded for it
    assert store.keys() == ["room/v1/record.p7m"]
    with pytest.raises(StoreError, match=r"room/v1/record.p7m: its metadata \(record.p7m.meta.json\) is not JSON"):
        store.delete("room/v1/record.p7m")
    assert store.keys() == ["room/v1/record.p7m"]


def test_syncfs_is_used_only_where_it_reports_write_back_errors(monkeypatch) -> None:
    from archiver import files

    assert files._kernel_version("6.1.0-13-amd64") == (6, 1) and files._kernel_version("5.15.167.4-microsoft") == (5, 15)
    assert files._kernel_version("garbage") == (0, 0)
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "5.4.0-150-generic", "#1", "x86_64")))
    assert files._syncfs() is None, "before 5.8 syncfs returns 0 whatever failed: an fsync each instead"
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "5.8.0", "#1", "x86_64")))
    assert files._syncfs() is not None


def test_a_failed_store_sync_is_a_store_error(tmp_path: Path, monkeypatch) -> None:
    import ctypes

    from archiver import files

    monkeypatch.setattr(files, "_SYNCFS", lambda fd: -1)
    monkeypatch.setattr(ctypes, "get_errno", lambda: errno.EIO)
    with pytest.raises(StoreError, match=f"^sync file://{tmp_path}/s: syncfs: Input/output error$"):
        LocalStore(tmp_path / "s").sync()


def test_local_put_many_is_all_or_none(tmp_path: Path, monkeypatch) -> None:
    store = LocalStore(tmp_path / "s")
    store.put("room/v1/record.p7m", b"there", _sha(b"there"), RETAIN)
    with pytest.raises(ObjectExists, match="^room/v1/record.p7m: already in the store"):
        store.put_many(_chat_objects("pdf", "record", "sig"), RETAIN)
    assert store.keys() == ["room/v1/record.p7m"] and store.get("room/v1/record.p7m") == b"there"
    real_write, written = os.write, [0]

    def write(fd: int, data) -> int:  # the disk fills up in the third file (the second object)
        if written[0] > 400:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_many(_chat_objects("a", "b", "c"), RETAIN)
    monkeypatch.undo()
    assert _files(tmp_path / "s") == ["room/v1/record.p7m", "room/v1/record.p7m.meta.json"]
    with pytest.raises(StoreError, match="does not match"):
        store.put_many([("room/v1/x.p7m", b"x", _sha(b"y"))], RETAIN)


def test_local_put_many_checks_and_makes_each_folder_once(tmp_path: Path, monkeypatch) -> None:
    store, resolved, made = LocalStore(tmp_path / "s"), [], []
    (tmp_path / "s/other").mkdir(parents=True)  # a room archived before: its new version's folder is checked
    real_resolve, real_mkdir = Path.resolve, os.mkdir
    monkeypatch.setattr(Path, "resolve", lambda self, *a, **k: (resolved.append(self), real_resolve(self, *a, **k))[1])
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: (made.append(str(path)), real_mkdir(path, *a, **k))[1])
    objects = [*_chat_objects("pdf", "record", "sig"), ("other/v2/a.p7m", b"a", _sha(b"a")), ("top", b"t", _sha(b"t"))]
    store.put_many(objects, RETAIN)
    monkeypatch.undo()
    # room/v1 is made here, part by part: neither part can be a link out of the store, so it is not resolved
    assert resolved == [tmp_path / "s/other/v2"]
    assert made == [str(tmp_path / "s/room"), str(tmp_path / "s/room/v1"), str(tmp_path / "s/other"),
                    str(tmp_path / "s/other/v2")]


@pytest.mark.parametrize("key", ["../escape/a.p7m", "room/../../escape/a.p7m", "link/v1/a.p7m", "room/v1/..",
                                 "new/../../escape/a.p7m", "new/./../../escape/a.p7m", "/abs/a.p7m"])
def test_local_put_many_keeps_every_object_inside_the_store(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "s")
    (tmp_path / "escape").mkdir()
    (tmp_path / "s/link").symlink_to(tmp_path / "escape")  # a folder that leads out of the store
    with pytest.raises(StoreError):
        store.put_many([("room/v1/ok.p7m", b"ok", _sha(b"ok")), (key, b"x", _sha(b"x"))], RETAIN)
    assert _files(tmp_path / "escape") == [] and not (tmp_path / "s/room/v1/ok.p7m").exists()


# -- deletions: every version of an object recorded without one; a denied delete is a lock only where one is ---

def _plain_bucket(moto_endpoint: str) -> str:
    """A bucket made without versioning or Object Lock (one that had versioning turned on later, say)."""
    name = f"plain-{os.urandom(6).hex()}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _listed(moto_endpoint: str, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(key, version id) of every version and delete marker under PREFIX."""
    answer = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").list_object_versions(
        Bucket=bucket, Prefix=prefix)
    return sorted((v["Key"], v["VersionId"]) for v in [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])])


@pytest.mark.parametrize("versioning", [True, False], ids=["versioning turned on since", "never versioned"])
def test_s3_delete_of_an_object_stored_without_versioning_removes_every_version_of_that_key_alone(
        moto_endpoint: str, versioning: bool) -> None:
    """Recorded with version id "": once versioning is on, a delete without VersionId only adds a delete
    marker and the bytes stay readable as the "null" version. A key sharing its prefix is not touched."""
    bucket = _plain_bucket(moto_endpoint)
    store = S3Store(bucket, "chats", endpoint_url=moto_endpoint, lock_mode="")
    stored = store.put("room/v1/a.p7m", b"ciphertext", _sha(b"ciphertext"), None)
    store.put("room/v1/a.p7m.p7s", b"signature", _sha(b"signature"), None)
    assert stored.version_id == ""
    if versioning:
        boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store.delete("room/v1/a.p7m", stored.version_id)
    assert _listed(moto_endpoint, bucket, "chats/room/v1/a.p7m") == [("chats/room/v1/a.p7m.p7s", "null")]
    store.delete("room/v1/a.p7m", "")  # gone already: no error
    store.delete_versions("room/v1/a.p7m")
    assert store.get("room/v1/a.p7m.p7s") == b"signature"


def test_s3_versions_lists_the_versions_of_exactly_that_key(moto_endpoint: str) -> None:
    bucket = _plain_bucket(moto_endpoint)
    store = S3Store(bucket, "chats", endpoint_url=moto_endpoint, lock_mode="")
    store.put("room/v1/a.p7m", b"old", _sha(b"old"), None)
    store.put("room/v1/a.p7m.p7s", b"signature", _sha(b"signature"), None)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.delete_object(Bucket=bucket, Key="chats/room/v1/a.p7m")  # a delete marker over the "null" version
    assert store.versions("room/v1/a.p7m") == ["null"]
    store.delete_versions("room/v1/a.p7m")
    assert store.versions("room/v1/a.p7m") == [] and store.versions("room/v1/a.p7m.p7s") == ["null"]


def test_s3_iter_versions_names_each_key_once_with_every_version_and_delete_marker_a_page_per_1000(
        moto_endpoint: str, bucket: str, monkeypatch) -> None:
    """One ListObjectVersions request per page (LIST_PAGE entries: versions and delete markers), a key's
    versions gathered even where a page ends among them; which one is current (a plain GET's answer) named."""
    import archiver.store.s3 as s3

    monkeypatch.setattr(s3, "LIST_PAGE", 2)
    store = S3Store(bucket, "chats", endpoint_url=moto_endpoint, lock_mode="")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    a = [client.put_object(Bucket=bucket, Key="chats/r/a", Body=body)["VersionId"] for body in (b"1", b"2")]
    marker = client.delete_object(Bucket=bucket, Key="chats/r/a")["VersionId"]
    b = client.put_object(Bucket=bucket, Key="chats/r/b", Body=b"b")["VersionId"]
    c = [client.put_object(Bucket=bucket, Key="chats/r/c", Body=body)["VersionId"] for body in (b"1", b"2")]
    client.put_object(Bucket=bucket, Key="chats/rest", Body=b"x")  # outside the prefix "r/"
    requests = []
    store.client.meta.events.register("before-call.s3.ListObjectVersions", lambda **kw: requests.append(1))
    listed = list(store.iter_versions("r/"))
    assert [(item.key, sorted(item.versions), item.delete_markers, item.current) for item in listed] == [
        ("r/a", sorted(a), (marker,), marker), ("r/b", [b], (), b), ("r/c", sorted(c), (), c[1])]
    assert len(requests) == 3, "6 entries, 2 a page"


def test_local_versions_is_the_object_itself_while_it_is_there(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("room/v1/a.p7m", b"data", _sha(b"data"), None)
    assert store.versions("room/v1/a.p7m") == [""] and store.versions("room/v1/a") == []
    listed = [(item.key, item.versions, item.delete_markers) for item in store.iter_versions("room/")]
    assert listed == [("room/v1/a.p7m", ("",), ())]
    store.delete("room/v1/a.p7m")
    assert store.versions("room/v1/a.p7m") == []


def test_s3_delete_the_endpoint_denies_is_object_locked_only_where_a_lock_or_legal_hold_applies(
        moto_endpoint: str, bucket: str) -> None:
    """IAM answers a missing s3:DeleteObjectVersion with the same 403 AccessDenied as Object Lock: the object's
    own retention and legal hold tell them apart."""
    with FaultyS3() as proxy:
        store = S3Store(bucket, "chats", endpoint_url=proxy.url, max_attempts=1)
        free = store.put("room/v1/free.p7m", b"free", _sha(b"free"), None)
        held = store.put("room/v1/held.p7m", b"held", _sha(b"held"), None)
        store.set_legal_hold("room/v1/held.p7m", held.version_id, True)
        locked = store.put("room/v1/locked.p7m", b"locked", _sha(b"locked"), RETAIN)
        proxy.deny_deletes = True
        with pytest.raises(StoreError, match=r"room/v1/free.p7m.*AccessDenied.*no Object Lock.*no legal hold.*"
                                             r"s3:DeleteObjectVersion") as denied:
            store.delete("room/v1/free.p7m", free.version_id)
        assert not isinstance(denied.value, ObjectLocked)
        with pytest.raises(ObjectLocked, match="legal hold"):
            store.delete("room/v1/held.p7m", held.version_id)
        with pytest.raises(ObjectLocked, match="COMPLIANCE until 2036-01-01"):
            store.delete("room/v1/locked.p7m", locked.version_id)
        assert proxy.seen_deletes == 3
        proxy.deny_deletes = False
        store.delete("room/v1/free.p7m", free.version_id)  # once allowed, it goes
        with pytest.raises(ObjectMissing):
            store.get("room/v1/free.p7m", free.version_id)


# -- issue 12: files are written unnamed and linked into place -------------------------------------

_KILLED_INSIDE_PUBLISH = """
import os, signal, sys
from pathlib import Path
from archiver import files
folder = Path(sys.argv[1])
real_link = os.link
def link(*args, **kwargs):  # the data is written, nothing linked yet: a SIGKILL (the OOM killer, a deploy)
    os.kill(os.getpid(), signal.SIGKILL)
os.link = link
files.publish([(folder / "a.p7m", b"a" * 5000), (folder / "a.p7m.meta.json", b"{}")], 0o444)
"""


def test_a_process_killed_inside_publish_leaves_nothing_behind(tmp_path: Path) -> None:
    """Linux's unnamed files (O_TMPFILE): the data has no name until it is linked whole, so a killed
    worker leaves no temporary file (a ciphertext) for verify to report and retention to remove."""
    folder = tmp_path / "room"
    folder.mkdir()
    done = subprocess.run([sys.executable, "-c", _KILLED_INSIDE_PUBLISH, str(folder)], capture_output=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == -9, done.stderr
    assert list(folder.iterdir()) == []


def test_publish_without_unnamed_files_uses_named_temporaries_and_removes_them(tmp_path: Path, monkeypatch) -> None:
    """Where the file system has no O_TMPFILE (its open fails), each file is a named temporary first."""
    from archiver import files

    real_open, refused = os.open, []

    def open_(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            refused.append(path)
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real_open(path, flags, *args, **kwargs)

    seen_at_link: list[list[str]] = []
    real_link = os.link
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "link", lambda *a, **k: (seen_at_link.append(sorted(p.name for p in tmp_path.iterdir())),
                                                     real_link(*a, **k))[1])
    files.publish([(tmp_path / "a.pdf", b"a"), (tmp_path / "a.json", b"b")], 0o444)
    assert len(refused) == (2 if files._O_TMPFILE else 0)
    assert all(name.startswith(files.TEMP_PREFIX) for name in seen_at_link[0]) and len(seen_at_link[0]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.pdf"]
    assert (tmp_path / "a.pdf").read_bytes() == b"a" and (tmp_path / "a.pdf").stat().st_mode & 0o777 == 0o444


def test_publish_names_no_temporary_file_where_unnamed_files_exist(tmp_path: Path, monkeypatch) -> None:
    from archiver import files

    seen_at_link: list[list[str]] = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda *a, **k: (seen_at_link.append(sorted(p.name for p in tmp_path.iterdir())),
                                                     real_link(*a, **k))[1])
    os.umask(old := os.umask(0o077))
    try:
        files.publish([(tmp_path / "a.pdf", b"a" * 70000), (tmp_path / "a.json", b"b")], 0o444)
    finally:
        os.umask(old)
    assert seen_at_link == [[], ["a.pdf"]]
    assert (tmp_path / "a.pdf").read_bytes() == b"a" * 70000 and (tmp_path / "a.json").read_bytes() == b"b"
    assert {(tmp_path / n).stat().st_mode & 0o777 for n in ("a.pdf", "a.json")} == {0o444}, "whatever the umask"

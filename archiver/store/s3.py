"""S3-compatible storage through boto3: SHA-256 checked puts, Object Lock, no overwrites.

A put counts as stored only when S3 echoes our SHA-256 (the checksum it verified
on arrival) and, under Object Lock, names the version it locked.

Throttling and 5xx answers are retried by botocore's "standard" retry mode
(exponential backoff with jitter), up to storage.max_attempts.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
from typing import Iterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from archiver.config import ConfigError
from archiver.redact import redact
from archiver.store.base import (ListedKey, ObjectExists, ObjectLocked, ObjectMissing, StoredObject, StoreError,
                                 UnconfirmedPut)


LIST_PAGE = 1000  # entries a listing request asks for: S3's most


class S3Store:
    def __init__(
        self, bucket: str, prefix: str, *, endpoint_url: str = "", region: str = "us-east-1",
        lock_mode: str = "COMPLIANCE", max_attempts: int = 8,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url
        self.lock_mode = lock_mode
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            config=BotoConfig(
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                connect_timeout=10,
                read_timeout=60,
                # Checksums only where we ask for them: we send our own SHA-256.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def check_bucket(self) -> None:
        """ConfigError naming the setting when the bucket does not exist, or has no Object Lock while
        storage.object_lock_mode asks for it: found before any chat is claimed or rendered, not by every
        chat failing at its put. What cannot be told now (the network, a permission) is left to the puts."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            if self.lock_mode:
                answer = self.client.get_object_lock_configuration(Bucket=self.bucket)
                if answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
                    raise ConfigError(self._no_lock())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(f"storage.url: {self.url}: no such bucket") from None
            if code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(self._no_lock()) from None
        except BotoCoreError:
            pass

    def _no_lock(self) -> str:
        return (f"storage.object_lock_mode: {self.lock_mode}, but bucket {self.bucket} has no Object Lock "
                "(it can only be enabled when a bucket is created); use a bucket made with Object Lock, or set "
                'object_lock_mode = "" to archive without it')

    def put(self, key: str, data: bytes, sha256: str, retain_until: dt.datetime | None) -> StoredObject:
        extra = {}
        locked = bool(self.lock_mode and retain_until is not None)
        if locked:
            extra = {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                IfNoneMatch="*",
                ContentType="application/pkcs7-mime",
                **extra,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                raise ObjectExists(f"{self.url}{key}: already exists; refusing to overwrite") from None
            raise StoreError(f"put {self.url}{key}: {code or 'error'}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"put {self.url}{key}: {exc}")) from None  # the endpoint URL may hold a key
        return self._confirmed(key, answer, checksum, sha256, locked, len(data))

    def _confirmed(self, key: str, answer: dict, checksum: str, sha256: str, locked: bool, size: int
                   ) -> StoredObject:
        """The stored object, if S3's answer proves it holds our bytes (and, when LOCKED, which version)."""
        echoed = answer.get("ChecksumSHA256", "")
        if echoed != checksum:  # S3 verified something else, or nothing we can see
            raise UnconfirmedPut(f"put {self.url}{key}: acknowledged with checksum {echoed or 'none'!r}, "
                                 f"not our SHA-256 {sha256} ({checksum})")
        version_id = answer.get("VersionId", "") or ""
        if locked and not version_id:  # the index must name the locked version
            raise UnconfirmedPut(f"put {self.url}{key}: acknowledged with no version id under Object Lock")
        return StoredObject(key=key, version_id=version_id, size=size)

    def sync(self) -> None:
        """Nothing to do: a put returns once S3 has the object."""

    def get(self, key: str, version_id: str = "") -> bytes:
        args = {"Bucket": self.bucket, "Key": self.prefix + key}
        if version_id:
            args["VersionId"] = version_id
        try:
            return self.client.get_object(**args)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectMissing(f"{self.url}{key}: not found") from None
            raise StoreError(f"get {self.url}{key}: {code}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"get {self.url}{key}: {exc}")) from None

    def keys(self, prefix: str = "") -> list[str]:
        return list(self.iter_keys(prefix))

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(self.prefix):]
        except ClientError as exc:  # a StoreError, as from every other call: callers handle that one
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(redact(f"list {self.url}{prefix}: {code}: {_message(exc)}")) from None
        except BotoCoreError as exc:  # the endpoint down, say: its URL may carry credentials
            raise StoreError(redact(f"list {self.url}{prefix}: {exc}")) from None

    def iter_versions(self, prefix: str = "") -> Iterator[ListedKey]:
        """One ListObjectVersions listing (LIST_PAGE versions and delete markers a request), in key order: a
        key's versions may span two pages, so they are gathered by key over the whole stream."""
        for key, found in itertools.groupby(self._version_entries(prefix), key=lambda item: item[0]):
            items = list(found)
            yield ListedKey(key, tuple(v for _, v, marker, _ in items if not marker),
                            tuple(v for _, v, marker, _ in items if marker),
                            next((v for _, v, _, latest in items if latest), ""))

    def _version_entries(self, prefix: str) -> Iterator[tuple[str, str, bool, bool]]:
        """(key, version id, is a delete marker, is current) of everything under PREFIX, in key order."""
        paginator = self.client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix,
                                           PaginationConfig={"PageSize": LIST_PAGE}):
                found = [(v["Key"][len(self.prefix):], v["VersionId"], marker, bool(v.get("IsLatest")))
                         for field, marker in (("Versions", False), ("DeleteMarkers", True))
                         for v in page.get(field, [])]
                yield from sorted(found, key=lambda item: item[0])  # a page holds the two apart; both in key order
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(redact(f"list versions {self.url}{prefix}: {code}: {_message(exc)}")) from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"list versions {self.url}{prefix}: {exc}")) from None

    # -- retention and legal holds ----------------------------------------------------------

    def delete(self, key: str, version_id: str = "") -> None:
        """Delete that version for good (S3 refuses while it is locked or held: ObjectLocked). With no version id
        (stored while the bucket had no versioning) every version of KEY goes: once versioning is on, a delete
        without one only adds a delete marker, and the "null" version under it still holds the bytes."""
        if not version_id:
            return self.delete_versions(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "404"):
                return
            if code == "AccessDenied":
                raise self._denied(key, version_id, exc) from None
            raise StoreError(f"delete {self.url}{key}: {code}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"delete {self.url}{key}: {exc}")) from None

    def _denied(self, key: str, version_id: str, exc: ClientError) -> StoreError:
        """S3 answers Object Lock and a missing IAM permission alike (403 AccessDenied): the version's own
        retention and legal hold tell which. A lock only where one applies; else a StoreError (the run fails)."""
        refused = f"{self.url}{key}: the store refused to delete version {version_id} (AccessDenied: {_message(exc)})"
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id)
        except (ClientError, BotoCoreError) as lookup:
            return StoreError(redact(f"{refused}, and its Object Lock and legal hold cannot be read ({lookup}): check "
                                     "the credentials' s3:DeleteObjectVersion and s3:GetObjectRetention permissions"))
        mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return ObjectLocked(f"{refused}: under a legal hold")
        if mode and until is not None and until > dt.datetime.now(dt.timezone.utc):
            return ObjectLocked(f"{refused}: Object Lock {mode} until {until.astimezone(dt.timezone.utc).isoformat()}")
        return StoreError(f"{refused}, yet it shows no Object Lock in force and no legal hold: the credentials lack "
                          "a permission (s3:DeleteObject and s3:DeleteObjectVersion; s3:GetObjectRetention and "
                          "s3:GetObjectLegalHold to read a lock)")

    def versions(self, key: str) -> list[str]:
        """The ids of the stored versions of exactly KEY ("null" for one stored without versioning); delete
        markers, which only hide a version, are not counted."""
        return self._listed(key)[0]

    def stale_temporaries(self, prefix: str, older_than: dt.timedelta) -> list[str]:
        return []  # a put is whole or absent: S3 keeps no temporary files

    def remove_temporaries(self, names: list[str]) -> None:
        pass

    def delete_versions(self, key: str) -> None:
        """Every version (the "null" one too) and delete marker of exactly KEY, each deleted for good."""
        versions, markers = self._listed(key)
        for version_id in [*versions, *markers]:
            self.delete(key, version_id)

    def _listed(self, key: str) -> tuple[list[str], list[str]]:
        """The version ids and delete marker ids of exactly KEY (the prefix listing also holds longer keys)."""
        found: tuple[list[str], list[str]] = ([], [])
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                   Prefix=self.prefix + key):
                for ids, field in zip(found, ("Versions", "DeleteMarkers")):
                    ids.extend(v["VersionId"] for v in page.get(field, []) if v["Key"] == self.prefix + key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"list versions {self.url}{key}: {code}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"list versions {self.url}{key}: {exc}")) from None
        return found

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        try:
            self.client.put_object_legal_hold(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id,
                                              LegalHold={"Status": "ON" if on else "OFF"})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"legal hold {self.url}{key}: {code}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"legal hold {self.url}{key}: {exc}")) from None

    def extend_retention(self, key: str, version_id: str, until: dt.datetime) -> dt.datetime | None:
        """Extend only: the current retain-until is read first, and a later one is never replaced."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id)
            current, mode = head.get("ObjectLockRetainUntilDate"), head.get("ObjectLockMode") or self.lock_mode
            if not mode or (current is not None and current >= until):
                return current
            self.client.put_object_retention(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id,
                                             Retention={"Mode": mode, "RetainUntilDate": until})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise StoreError(f"retention {self.url}{key}: {code}: {_message(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(redact(f"retention {self.url}{key}: {exc}")) from None
        return until


def _message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message", "") or str(exc)

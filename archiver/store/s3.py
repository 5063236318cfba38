"""S3-compatible storage through boto3: SHA-256 checked puts, Object Lock, no overwrites.

Throttling and 5xx answers are retried by botocore's "standard" retry mode
(exponential backoff with jitter), up to storage.max_attempts.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Iterator

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from archiver.store.base import ObjectExists, ObjectMissing, StoredObject, StoreError


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

    def put(self, key: str, data: bytes, sha256: str, retain_until: dt.datetime | None) -> StoredObject:
        extra = {}
        if self.lock_mode and retain_until is not None:
            extra = {"ObjectLockMode": self.lock_mode, "ObjectLockRetainUntilDate": retain_until}
        try:
            answer = self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
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
            raise StoreError(f"put {self.url}{key}: {exc}") from None
        return StoredObject(key=key, version_id=answer.get("VersionId", "") or "", size=len(data))

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
            raise StoreError(f"get {self.url}{key}: {exc}") from None

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            found.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        return found

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix):]


def _message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message", "") or str(exc)

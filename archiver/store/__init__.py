"""Object stores: S3-compatible buckets and a local directory, one interface."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from archiver.config import Config
from archiver.store.base import (ObjectExists, ObjectMissing, ObjectStore, PutFailed, StoredObject, StoreError,
                                 UnconfirmedPut)
from archiver.store.local import LocalStore
from archiver.store.s3 import S3Store

__all__ = ["ObjectExists", "ObjectMissing", "ObjectStore", "PutFailed", "StoredObject", "StoreError",
           "UnconfirmedPut", "open_store"]


def open_store(config: Config) -> ObjectStore:
    url = config["storage.url"]
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    return S3Store(
        parsed.netloc,
        parsed.path,
        endpoint_url=config["storage.endpoint_url"],
        region=config["storage.region"],
        lock_mode=config["storage.object_lock_mode"],
        max_attempts=config["storage.max_attempts"],
    )

"""Object stores: S3-compatible buckets and a local directory, one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from botocore.exceptions import ConnectionError as BotoConnectionError

from archiver.config import Config, ConfigError
from archiver.redact import redact
from archiver.store.base import (ListedKey, ObjectExists, ObjectLocked, ObjectMissing, ObjectStore, PutFailed,
                                 StoredObject, StoreError, StoreUnreachable, UnconfirmedPut)
from archiver.store.local import LocalStore
from archiver.store.s3 import S3Store

__all__ = ["ListedKey", "ObjectExists", "ObjectLocked", "ObjectMissing", "ObjectStore", "PutFailed", "StoredObject",
           "StoreError", "StoreUnreachable", "UnconfirmedPut", "open_store", "raise_if_unreachable", "unreachable", "open_store_for", "store_location", "local_lock_warning"]


def open_store(config: Config, writable: bool = True) -> ObjectStore:
    url = config["storage.url"]
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return _writable_local_store(url, Path(parsed.path)) if writable else LocalStore(Path(parsed.path), create=False)
    return S3Store(
        parsed.netloc,
        parsed.path,
        endpoint_url=config["storage.endpoint_url"],
        region=config["storage.region"],
        lock_mode=config["storage.object_lock_mode"],
        max_attempts=config["storage.max_attempts"],
    )


def _writable_local_store(url: str, root: Path) -> LocalStore:
    """The local store at ROOT, once a file could be created there: a configuration error otherwise,
    raised before any chat is claimed or rendered."""
    try:
        store = LocalStore(root)
        store.check_writable()
    except OSError as exc:
        raise ConfigError(f"storage.url: {url}: cannot write there ({exc.strerror or exc})") from None
    return store


def local_lock_warning(config: Config) -> str | None:
    """What an Object Lock mode set for a local directory really gives, or None."""
    mode = config["storage.object_lock_mode"]
    if not mode or not config["storage.url"].startswith("file://"):
        return None
    return (f"storage.object_lock_mode {mode} has no effect on a local directory ({config['storage.url']}): "
            "it offers no lock beyond read-only file modes, which its owner or root can undo")


def store_location(store: ObjectStore) -> dict[str, str]:
    """Where STORE is, as recorded in each index entry: its URL and S3 endpoint, never credentials."""
    return {"url": _without_userinfo(store.url), "endpoint_url": _without_userinfo(getattr(store, "endpoint_url", ""))}


def open_store_for(entry: dict[str, Any], config: Config) -> ObjectStore:
    """The store holding ENTRY's objects (with today's credentials). The configured one (storage.url at
    storage.endpoint_url as set now, so that an endpoint that moved or goes by another name is followed)
    when ENTRY records the same store URL, or none (old entries); a store the configuration no longer
    names at the endpoint ENTRY recorded, the only address known for it."""
    where = entry.get("store") or {}
    if not where.get("url") or where["url"] == _configured_url(config):
        return open_store(config, writable=False)
    store = open_store(config.with_overrides(**{"storage.url": where["url"],
                                                "storage.endpoint_url": where.get("endpoint_url", "")}), writable=False)
    store.recorded = True  # messages name the entry's record as the source, not the settings
    return store


def _configured_url(config: Config) -> str:
    """storage.url as the store opened from it names itself (store_location), without opening it: a local
    one would be created."""
    url = config["storage.url"]
    parsed = urlparse(url)
    if not url:
        return ""
    if parsed.scheme == "file":
        return f"file://{Path(parsed.path).resolve()}"
    prefix = parsed.path.strip("/")
    return _without_userinfo(f"s3://{parsed.netloc}/{prefix + '/' if prefix else ''}")


def _without_userinfo(url: str) -> str:
    parsed = urlparse(url)
    if "@" not in parsed.netloc:
        return url
    return urlunparse(parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]))


def unreachable(exc: BaseException) -> bool:
    """Whether EXC (a StoreError) comes of not reaching the store at all (refused, no route, connect
    timeout), rather than of an answer the store gave."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes: S3Store raises its StoreError from botocore's
        if seen is None:
            return False
        if isinstance(seen, (StoreUnreachable, BotoConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def raise_if_unreachable(exc: StoreError, store: ObjectStore) -> None:
    """StoreUnreachable, naming storage.url and storage.endpoint_url as STORE has them, when EXC is an outage."""
    if isinstance(exc, StoreUnreachable):
        raise exc
    if unreachable(exc):
        raise StoreUnreachable(unreachable_message(store, exc)) from exc


def unreachable_message(store: ObjectStore, exc: BaseException) -> str:
    where = store_location(store)
    endpoint = where["endpoint_url"] or "(none: the AWS default for storage.region)"
    if getattr(store, "recorded", False):  # not the configured store: its address comes from the index
        return redact(f"the store could not be reached (store recorded in the index entry {where['url']}, "
                      f"endpoint recorded in the index entry {endpoint}; storage.url names another store, so "
                      f"storage.endpoint_url does not apply to it): {exc}")
    return redact(f"the store could not be reached (storage.url {where['url']}, storage.endpoint_url {endpoint}): "
                  f"{exc}")

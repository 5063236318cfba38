"""The interface every object store offers: create-only puts, exact gets."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterator, Protocol


class StoreError(RuntimeError):
    """The store failed; the message names the object and the cause."""


class PutFailed(StoreError):
    """Some of a chat's objects were not stored; STORED names those that were (to be set aside)."""

    def __init__(self, message: str, stored: list[str]) -> None:
        super().__init__(message, stored)  # both in args: the error crosses process boundaries pickled
        self.stored = stored

    def __str__(self) -> str:
        return str(self.args[0])


class UnconfirmedPut(StoreError):
    """The store acknowledged a put without proving what it stored: the object may exist, unverified."""


class ObjectExists(StoreError):
    """A put would have replaced an existing object; stores never overwrite."""


class StoreUnreachable(StoreError):
    """The store could not be reached (connection refused, no route, timed out): an outage, not a
    verdict on any object; the message names the storage settings and where they point."""


class ObjectMissing(StoreError):
    """The object (or that version of it) is not in the store."""


class ObjectLocked(StoreError):
    """The store refused to delete an object: Object Lock retain-until not reached, or a legal hold."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    version_id: str  # "" where the store has no versions
    size: int


@dataclass(frozen=True)
class ListedKey:
    """A key as the store lists it: the ids of its versions and delete markers (S3), and which one is current
    (what a GET without a version id answers); a store without versions lists each key as one version ""."""
    key: str
    versions: tuple[str, ...] = ("",)
    delete_markers: tuple[str, ...] = ()
    current: str = ""


class ObjectStore(Protocol):
    url: str

    def put(self, key: str, data: bytes, sha256: str, retain_until: dt.datetime | None) -> StoredObject:
        """Store DATA under KEY, refusing to replace anything; the store checks SHA256 on arrival."""

    def sync(self) -> None:
        """Make every object stored so far durable, if put returned before it was (StoreError if not)."""

    def get(self, key: str, version_id: str = "") -> bytes:
        """The exact bytes of KEY (at VERSION_ID when given)."""

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under PREFIX (for integrity checks)."""

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Every object key under PREFIX, streamed (any order): memory stays flat over any store."""

    def iter_versions(self, prefix: str = "") -> Iterator[ListedKey]:
        """Every key under PREFIX with every version and delete marker, streamed, each key once
        (verify: a version put over an archived object, or a delete marker, is seen as well as a stray key)."""

    def delete(self, key: str, version_id: str = "") -> None:
        """Remove KEY (that version; with none, every version); ObjectLocked if a lock or legal hold forbids it,
        StoreError if the store refuses for another reason (a permission); gone already is fine."""

    def delete_versions(self, key: str) -> None:
        """Remove every version of KEY (objects recorded by key alone: an interrupted attempt's); as delete."""

    def versions(self, key: str) -> list[str]:
        """The ids of the stored versions of exactly KEY (empty once it is gone; a delete marker hides, not removes)."""

    def stale_temporaries(self, prefix: str, older_than: dt.timedelta) -> list[str]:
        """Temporary files under PREFIX that a write cut short left (a process killed mid-put), untouched for
        OLDER_THAN: never objects (readers skip them), but they may hold a whole ciphertext. None on S3."""

    def remove_temporaries(self, names: list[str]) -> None:
        """Remove the temporary files NAMES (from stale_temporaries)."""

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        """Set or clear the legal hold on KEY (that version)."""

    def extend_retention(self, key: str, version_id: str, until: dt.datetime) -> dt.datetime | None:
        """Move KEY's retain-until to UNTIL if that is later (never earlier); the date now in force."""

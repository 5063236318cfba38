"""A directory that behaves like a write-once bucket, for the demo and offline use."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import Iterator

from archiver.files import TEMP_PREFIX, publish, sync_file_system
from archiver.store.base import (ListedKey, ObjectExists, ObjectLocked, ObjectMissing, StoredObject, StoreError,
                                 StoreUnreachable)

_META = ".meta.json"


class LocalStore:
    def __init__(self, root: Path, create: bool = True) -> None:
        """CREATE: make the directory if it is not there (to write); to read, one that is gone is an outage
        (`_present`), never a store whose every object is missing."""
        self.root = root.resolve()
        self.url = f"file://{self.root}"
        self.create = create
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        if self.root.is_dir():
            self._device = self.root.stat().st_dev
            # Open from the start, so that sync() hears of every write-back error since (see sync_file_system).
            self._sync_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            weakref.finalize(self, os.close, self._sync_fd)

    def __reduce__(self) -> tuple:
        return LocalStore, (self.root, self.create)  # another process opens its own

    def _present(self) -> None:
        """StoreUnreachable if the store's directory is gone (a volume not mounted, say): asked only when
        something is not found, which is then no verdict on any object."""
        if not self.root.is_dir():
            raise StoreUnreachable(f"the store could not be reached (storage.url {self.url}): its directory does not "
                                   "exist (a volume not mounted?)")

    def check_writable(self) -> None:
        """Create and remove a file in the store directory (OSError if that fails)."""
        fd, probe = tempfile.mkstemp(dir=self.root, prefix=TEMP_PREFIX)
        os.close(fd)
        os.unlink(probe)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StoreError(f"object key {key!r} would leave the store directory")
        return path

    def put(self, key: str, data: bytes, sha256: str, retain_until: dt.datetime | None) -> StoredObject:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"{key}: SHA-256 of the data does not match the expected {sha256}")
        try:
            return self._put(key, data, sha256, retain_until)
        except OSError as exc:  # disk full, I/O error, permissions: the store failed, not the chat
            raise StoreError(f"put {self.url}/{key}: {exc.strerror or exc}") from None

    def _put(self, key: str, data: bytes, sha256: str, retain_until: dt.datetime | None) -> StoredObject:
        """The object, then its metadata, each linked into place complete: a failure removes both, so
        metadata never exists without its object (and the store never replaces anything)."""
        return self._publish([(key, data, sha256)], retain_until)[0]

    def put_many(self, objects: list[tuple[str, bytes, str]], retain_until: dt.datetime | None,
                 sync: bool = True) -> list[StoredObject]:
        """Each (KEY, DATA, SHA256) as put() stores it, all in one go: their data synced together and each
        folder once (a chat's objects share one), rather than three syncs per object. All or none: a
        failure removes whatever was linked (a crash half-way leaves complete objects, as put() does).
        SYNC False: durable only once sync() returns (the archive pass syncs a batch of chats at once,
        before it indexes them); until then a power cut may leave these names with incomplete data."""
        for key, data, sha256 in objects:
            if hashlib.sha256(data).hexdigest() != sha256:
                raise StoreError(f"{key}: SHA-256 of the data does not match the expected {sha256}")
        try:
            return self._publish(objects, retain_until, sync)
        except OSError as exc:
            raise StoreError(f"put {self.url}/{objects[0][0]}: {exc.strerror or exc}") from None

    def _publish(self, objects: list[tuple[str, bytes, str]], retain_until: dt.datetime | None,
                 sync: bool = True) -> list[StoredObject]:
        files, paths = [], self._new_paths([key for key, _, _ in objects])
        until = retain_until.isoformat() if retain_until else None
        for key, data, sha256 in objects:
            path = paths[key]
            meta = {"sha256": sha256, "size": len(data), "retain_until": until}
            files += [(path, data), (path.with_name(path.name + _META), json.dumps(meta).encode())]
        try:
            publish(files, 0o444, sync_later_on=None if sync else self._device)
        except FileExistsError:
            key = next((k for k, path in paths.items() if path.exists()), objects[0][0])
            raise ObjectExists(f"{key}: already in the store; refusing to overwrite") from None
        return [StoredObject(key=key, version_id="", size=len(data)) for key, data, _ in objects]

    def _new_paths(self, keys: list[str]) -> dict[str, Path]:
        """The path of each of KEYS, its folder made. A folder is checked (resolved: no key leaves the
        store, through `..` or a symbolic link) and made once for all the keys in it (a chat's objects
        share one); a name already there, a symbolic link included, is refused when linked."""
        folders: dict[str, Path] = {}
        paths = {}
        for key in keys:
            folder, _, name = key.rpartition("/")
            if name in ("", ".", ".."):  # no file name: checked whole
                path = paths[key] = self._path(key)
                path.parent.mkdir(parents=True, exist_ok=True)
                continue
            if folder not in folders:
                where = self._made(folder) if folder else self.root
                if where is None:  # a part was there already: where it leads is checked
                    where = (self.root / folder).resolve()
                    if where != self.root and self.root not in where.parents:
                        raise StoreError(f"object key {key!r} would leave the store directory")
                    where.mkdir(parents=True, exist_ok=True)
                folders[folder] = where
            paths[key] = folders[folder] / name
        return paths

    def _made(self, folder: str) -> Path | None:
        """FOLDER made in the store, each of its parts a directory made just now (a new room's version, the
        usual case), so that none can be a link that leads out of it: nothing to resolve. None if a part
        was there already (or is no plain name), for the caller to check where it leads."""
        parts = folder.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        path = str(self.root)
        for part in parts:
            path = os.path.join(path, part)
            try:
                os.mkdir(path)
            except FileExistsError:
                return None
        return Path(path)

    def sync(self) -> None:
        """Make what put_many(..., sync=False) stored durable."""
        try:
            sync_file_system(self._sync_fd)
        except OSError as exc:
            raise StoreError(f"sync {self.url}: {exc.strerror or exc}") from None

    def get(self, key: str, version_id: str = "") -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            self._present()
            raise ObjectMissing(f"{key}: not in {self.url}") from None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(self.iter_keys(prefix))

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        # Walk only the folder the prefix names (a version's folder, say), not the whole store.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if not base.is_dir():  # nothing there: a store never written to lists nothing (reading an object says more)
            return
        for name in _walk(base, self.root):
            if name.startswith(prefix):
                yield name

    def iter_versions(self, prefix: str = "") -> Iterator[ListedKey]:
        return (ListedKey(key) for key in self.iter_keys(prefix))  # one version per key, without an id

    # -- retention and legal holds: a directory has no Object Lock. Retain-until and holds are kept in
    # the object's metadata file and honoured by the archiver's own deletions (retention, erasure);
    # anyone with write access to the directory can still remove files (see docs/retention.md).

    def _meta(self, key: str) -> tuple[Path, dict]:
        path = self._path(key)
        meta_path = path.with_name(path.name + _META)
        try:
            text = meta_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._present()
            return meta_path, {}
        if not text:  # linked unsynced by an attempt a power cut stopped (never indexed): it recorded no lock
            return meta_path, {}
        try:
            return meta_path, json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{self.url}/{key}: its metadata ({meta_path.name}) is not JSON ({exc}); "
                             "restore it or remove the object by hand") from None

    def _write_meta(self, meta_path: Path, meta: dict) -> None:
        fd, temp = tempfile.mkstemp(dir=meta_path.parent, prefix=TEMP_PREFIX)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(meta, out)
        os.chmod(temp, 0o444)
        os.replace(temp, meta_path)

    def delete(self, key: str, version_id: str = "") -> None:
        meta_path, meta = self._meta(key)
        until = meta.get("retain_until")
        if until and dt.datetime.fromisoformat(until) > dt.datetime.now(dt.timezone.utc):
            raise ObjectLocked(f"{self.url}/{key}: locked until {until} (recorded retain-until)")
        if meta.get("legal_hold"):
            raise ObjectLocked(f"{self.url}/{key}: under a legal hold")
        for path in (self._path(key), meta_path):
            path.unlink(missing_ok=True)

    def delete_versions(self, key: str) -> None:
        self.delete(key)  # one version per key here

    def versions(self, key: str) -> list[str]:
        if self._path(key).is_file():
            return [""]  # one version per key, without an id
        self._present()
        return []

    def stale_temporaries(self, prefix: str, older_than: dt.timedelta) -> list[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        cutoff = time.time() - older_than.total_seconds()
        found = []
        for path in base.rglob(TEMP_PREFIX + "*") if base.is_dir() else ():
            name = path.relative_to(self.root).as_posix()
            if name.startswith(prefix) and path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                found.append(name)
        return sorted(found)

    def remove_temporaries(self, names: list[str]) -> None:
        for name in names:
            path = self._path(name)
            if path.name.startswith(TEMP_PREFIX):
                path.unlink(missing_ok=True)

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        meta_path, meta = self._meta(key)
        if meta and bool(meta.get("legal_hold")) != on:
            self._write_meta(meta_path, {**meta, "legal_hold": on})

    def extend_retention(self, key: str, version_id: str, until: dt.datetime) -> dt.datetime | None:
        meta_path, meta = self._meta(key)
        current = dt.datetime.fromisoformat(meta["retain_until"]) if meta.get("retain_until") else None
        if not meta or current is None or current >= until:  # stored without a lock: none to extend
            return current
        self._write_meta(meta_path, {**meta, "retain_until": until.isoformat()})
        return until


def _walk(folder: Path, root: Path) -> Iterator[str]:
    """Object keys below FOLDER, one directory listing open at a time."""
    with os.scandir(folder) as found:
        for item in found:
            if item.is_dir(follow_symlinks=False):
                yield from _walk(Path(item.path), root)
            elif not item.name.endswith(_META) and not item.name.startswith(TEMP_PREFIX):
                yield Path(item.path).relative_to(root).as_posix()

"""A directory that behaves like a write-once bucket, for the demo and offline use."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from archiver.store.base import ObjectExists, ObjectMissing, StoredObject, StoreError

_META = ".meta.json"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = f"file://{self.root}"
        self.root.mkdir(parents=True, exist_ok=True)

    def check_writable(self) -> None:
        """Create and remove a file in the store directory (OSError if that fails)."""
        fd, probe = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
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
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"sha256": sha256, "size": len(data), "retain_until": retain_until.isoformat() if retain_until else None}
        self._write_new(path.with_name(path.name + _META), json.dumps(meta).encode())
        self._write_new(path, data)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # both links are durable from here on
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return StoredObject(key=key, version_id="", size=len(data))

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        """Write via a temporary file and a hard link: complete or absent, never replaced (the caller
        makes the link durable by syncing the directory)."""
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExists(f"{path.name}: already in the store; refusing to overwrite") from None
        finally:
            os.unlink(tmp)

    def get(self, key: str, version_id: str = "") -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{key}: not in {self.url}") from None

    def keys(self, prefix: str = "") -> list[str]:
        # Walk only the folder the prefix names (a version's folder, say), not the whole store.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        found = []
        for path in base.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and not name.endswith(_META) and not path.name.startswith(".tmp-"):
                if name.startswith(prefix):
                    found.append(name)
        return sorted(found)

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(folder) if folder else self.root
        if base.is_dir():
            for name in _walk(base, self.root):
                if name.startswith(prefix):
                    yield name


def _walk(folder: Path, root: Path) -> Iterator[str]:
    """Object keys below FOLDER, one directory listing open at a time."""
    with os.scandir(folder) as found:
        for item in found:
            if item.is_dir(follow_symlinks=False):
                yield from _walk(Path(item.path), root)
            elif not item.name.endswith(_META) and not item.name.startswith(".tmp-"):
                yield Path(item.path).relative_to(root).as_posix()

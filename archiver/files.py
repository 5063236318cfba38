"""Files that appear complete or not at all, and never replace anything that is there."""

from __future__ import annotations

import ctypes
import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # readers skip names that start with this


def publish(files: list[tuple[Path, bytes]], mode: int) -> None:
    """Create every PATH with its DATA, in order, or none of them.

    Each is written to a temporary file in its own folder and synced first, then
    hard-linked into place: a link never replaces or follows an existing name (not
    even a dangling symlink). On any failure (full disk, a name taken) the links made
    so far are removed; the temporary files always are. Raises FileExistsError naming
    the path that exists, or the OSError that stopped it.

    The temporary files are synced together (one syncfs where Linux has it, instead of
    an fsync each) before any is linked: a name still never points to data that is not
    on disk, and the folders are synced once each after the links.
    """
    temps: list[str] = []
    linked: list[Path] = []
    try:
        for path, data in files:
            temps.append(_write_temp(path.parent, data, mode))
        _sync_files(temps)
        for (path, _), temp in zip(files, temps):
            try:
                os.link(temp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; not overwritten") from None
            linked.append(path)
        for folder in dict.fromkeys(path.parent for path, _ in files):
            _sync_folder(folder)  # the links are durable from here on
    except BaseException:
        for path in linked:
            _remove(path)
        raise
    finally:
        for temp in temps:
            _remove(temp)


def _write_temp(folder: Path, data: bytes, mode: int) -> str:
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        _remove(name)
        raise
    os.close(fd)
    return name


def _sync_files(names: list[str]) -> None:
    """Make the data of NAMES durable: one syncfs for the file system they share, else an fsync each."""
    devices = {os.stat(name).st_dev for name in names}
    if len(devices) == 1 and _SYNCFS is not None:
        fd = os.open(names[0], os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs: {os.strerror(error)}")
        finally:
            os.close(fd)
        return
    for name in names:
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _syncfs():
    """libc's syncfs(2) (Linux), which reports write-back errors since Linux 5.8; None elsewhere."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _syncfs()


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

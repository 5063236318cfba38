"""Files that appear complete or not at all, and never replace anything that is there."""

from __future__ import annotations

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
    """
    temps: list[str] = []
    linked: list[Path] = []
    try:
        for path, data in files:
            temps.append(_write_temp(path.parent, data, mode))
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
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _remove(name)
        raise
    os.close(fd)
    return name


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

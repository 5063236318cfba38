"""Files that appear complete or not at all, and never replace anything that is there."""

from __future__ import annotations

import ctypes
import errno
import os
import re
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # readers skip names that start with this
# What os.link raises where the file system has no hard links: vfat and exFAT (EPERM), FUSE file systems
# without a link operation (ENOSYS), some network shares (EOPNOTSUPP).
_NO_LINKS = {errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


class NoHardLinks(OSError):
    """FOLDER's file system has no hard links, which publish needs: said plainly, not as os.link's errno."""

    def __init__(self, folder: Path, cause: OSError) -> None:
        super().__init__(cause.errno, f"{folder}: its file system does not allow hard links "
                                      f"({os.strerror(cause.errno)}); files are added by linking them into place "
                                      "so that nothing already there is ever replaced: use a folder on a file "
                                      "system that has them (ext4, XFS, Btrfs, APFS, NTFS), not FAT or exFAT")


def publish(files: list[tuple[Path, bytes]], mode: int, sync_later_on: int | None = None) -> None:
    """Create every PATH with its DATA, in order, or none of them.

    Each is written to a temporary file in its own folder (unnamed, where Linux has
    O_TMPFILE) and synced first, then hard-linked into place: a link never replaces or follows an existing name (not
    even a dangling symlink). On any failure (full disk, a name taken) the links made
    so far are removed; the temporary files always are. Raises FileExistsError naming
    the path that exists, or the OSError that stopped it.

    The temporary files are synced together (one syncfs where Linux has it, instead of
    an fsync each) before any is linked: a name still never points to data that is not
    on disk, and the folders are synced once each after the links.

    SYNC_LATER_ON: the device (st_dev) whose file system the caller syncs itself later, with
    sync_file_system, before anything relies on these files (the archive pass: once for a batch of
    chats, before it indexes them). Files on it are linked without syncs here; others, or all where
    there is no syncfs, are synced as above.
    """
    staged: list[_Staged] = []
    linked: list[Path] = []
    folders = _Folders()
    try:
        for path, data in files:
            staged.append(_stage(path.parent, data, mode))
        devices = {os.fstat(file.fd).st_dev for file in staged}
        synced_here = _SYNCFS is None or devices != {sync_later_on}
        if synced_here:
            _sync_files([file.fd for file in staged], devices)
        for (path, _), file in zip(files, staged):
            try:
                file.link(path, folders)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; not overwritten") from None
            except OSError as exc:
                if exc.errno in _NO_LINKS:
                    raise NoHardLinks(path.parent, exc) from None
                raise
            linked.append(path)
        for folder in dict.fromkeys(path.parent for path, _ in files) if synced_here else ():
            _sync_folder(folder)  # the links are durable from here on
    except BaseException:
        for path in linked:
            _remove(path)
        raise
    finally:
        for file in staged:
            file.discard()
        folders.close()


# Linux's unnamed files (O_TMPFILE, through /proc/self/fd): written, then linked into place. A process
# killed before the link leaves nothing, and no name is made and removed per file (a fifth of a chat's
# store CPU). Where the file system has none (its open fails), a named temporary file instead.
_O_TMPFILE = getattr(os, "O_TMPFILE", 0) if os.path.isdir("/proc/self/fd") else 0
_NO_UNNAMED = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL}


class _Staged:
    """A file's data written in its folder, not yet linked: open, unnamed or with a temporary name."""

    __slots__ = ("fd", "temp")

    def __init__(self, fd: int, temp: str | None) -> None:
        self.fd, self.temp = fd, temp

    def link(self, path: Path, folders: "_Folders") -> None:
        """PATH made a name of this file; never replaces a name (FileExistsError)."""
        if self.temp is not None:
            os.link(self.temp, path)
        else:  # a folder descriptor makes it linkat, which with AT_SYMLINK_FOLLOW links the file /proc names
            os.link(f"/proc/self/fd/{self.fd}", path.name, dst_dir_fd=folders.fd(path.parent), follow_symlinks=True)

    def discard(self) -> None:
        os.close(self.fd)
        if self.temp is not None:
            _remove(self.temp)


class _Folders:
    """Descriptors of the folders linked into, each opened once."""

    def __init__(self) -> None:
        self.open: dict[Path, int] = {}

    def fd(self, folder: Path) -> int:
        if folder not in self.open:
            self.open[folder] = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        return self.open[folder]

    def close(self) -> None:
        for fd in self.open.values():
            os.close(fd)


def _stage(folder: Path, data: bytes, mode: int) -> _Staged:
    file = _unnamed(folder)
    if file is None:
        fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        file = _Staged(fd, name)
    try:
        _write_all(file.fd, data)
        os.fchmod(file.fd, mode)  # exactly MODE, whatever the umask
    except BaseException:
        file.discard()
        raise
    return file


def _unnamed(folder: Path) -> _Staged | None:
    if not _O_TMPFILE:
        return None
    try:
        return _Staged(os.open(folder, _O_TMPFILE | os.O_WRONLY, 0o600), None)
    except OSError as exc:
        if exc.errno in _NO_UNNAMED:
            return None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def check_hard_links(folder: Path) -> None:
    """Raise NoHardLinks if FOLDER's file system has none (found by linking a temporary file, then removed)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    os.close(fd)
    link = f"{name}-link"
    try:
        os.link(name, link)
    except OSError as exc:
        if exc.errno in _NO_LINKS:
            raise NoHardLinks(folder, exc) from None
        raise
    finally:
        _remove(link)
        _remove(name)


def sync_file_system(fd: int) -> None:
    """Make everything written to the file system of FD durable (data, names and folders): syncfs, where
    Linux has it; elsewhere publish has synced each file already, so there is nothing left to do.
    Linux reports each write-back error of the file system once per open file: an FD kept open from
    before the writes hears of every error since its last sync, even one another process's sync saw."""
    if _SYNCFS is not None and _SYNCFS(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs: {os.strerror(error)}")


def _sync_files(fds: list[int], devices: set[int]) -> None:
    """Make the data of the open files FDS (on DEVICES) durable: one syncfs for the file system they
    share, else an fsync each."""
    if len(devices) == 1 and _SYNCFS is not None:
        sync_file_system(fds[0])
        return
    for fd in fds:
        os.fsync(fd)


def _syncfs():
    """libc's syncfs(2) on Linux 5.8 or later (earlier, it returns 0 even when write-back failed: an
    fsync each is used instead); None elsewhere."""
    if _kernel_version(os.uname().release) < (5, 8):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def _kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a Linux release string ("6.1.0-13-amd64"); (0, 0) for anything else."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match[1]), int(match[2])) if match else (0, 0)


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

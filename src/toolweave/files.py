"""Reading files whose paths come from outside (definition files, workflow files, local media,
``-i name=@file``) without trusting what is there: regular files only, never a blocking open or read
(a FIFO, a device), never more than a limit. Imports nothing of ours, so that every layer may use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class FileTooLarge(OSError):
    """A file past the limit it was read with (``str()`` says so after the file's name)."""


def _read_fd(fd: int, limit: int) -> bytes:
    """The bytes of the open file ``fd`` (closed here), at most ``limit`` of them."""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("is not a regular file (a device, pipe or socket)")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"is larger than the limit of {limit} bytes")
    return data


def read_regular_file(path: Path, limit: int) -> bytes:
    """A file's bytes, at most ``limit`` of them; ``OSError`` (with a phrase to follow the file's
    name) for a file that is not regular or is larger than ``limit``. Never blocks on a pipe and
    never reads more than the limit (a file that grows while read included)."""
    return _read_fd(os.open(path, os.O_RDONLY | _NONBLOCK), limit)


def read_resolved_file(path: Path, limit: int) -> bytes:
    """``read_regular_file`` for a path already resolved (absolute, no symlinks, no ``..``) and
    checked — inside the allowed folders, say: opened one component at a time without following a
    symlink (``O_NOFOLLOW``), so a symlink swapped in anywhere along the path after the check is
    refused (``OSError``) rather than followed out of those folders or into a pipe; the file opened
    must be the one checked (device and inode, compared with ``os.fstat``). Where the platform has
    no ``dir_fd`` opens, the last component alone is opened without following a symlink."""
    checked = os.lstat(path)
    if not stat.S_ISREG(checked.st_mode):
        raise OSError("is not a regular file (a device, pipe, socket or link)")
    if os.open in os.supports_dir_fd and _NOFOLLOW and _DIRECTORY:
        fd = _open_beneath(path)
    else:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _NOFOLLOW)
    try:
        opened = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
        os.close(fd)
        raise OSError("changed while it was being opened")
    return _read_fd(fd, limit)


def _open_beneath(path: Path) -> int:
    """``path`` opened from the root down, each folder with ``O_NOFOLLOW | O_DIRECTORY`` relative to
    the one before, the file with ``O_NOFOLLOW | O_NONBLOCK``."""
    parts = path.parts
    fd = os.open(parts[0], os.O_RDONLY | _DIRECTORY)
    try:
        for name in parts[1:-1]:
            inner = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], os.O_RDONLY | _NONBLOCK | _NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)


__all__ = ["FileTooLarge", "read_regular_file", "read_resolved_file"]

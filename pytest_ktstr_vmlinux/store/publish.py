"""Atomic publication: a reader sees the whole old file or the whole new one, never a torn one.

Write a temp file in the store (same filesystem, so the rename is atomic), fsync it, rename it
over the destination, fsync the directory so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import TypeGuard

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class OutOfSpace(OSError):
    """A write found its filesystem full; ``needed`` is the whole size it had to write (more
    than that when not ``exact``: a write that could not know its size)."""

    def __init__(self, error: OSError, needed: int, *, exact: bool = True) -> None:
        super().__init__(error.errno, error.strerror)
        self.needed = needed
        self.exact = exact


def is_full(error: BaseException) -> TypeGuard[OSError]:
    """ENOSPC or EDQUOT: the filesystem (or the user's quota) has no room."""
    return isinstance(error, OSError) and error.errno in FULL_ERRNOS


def cause_out_of_space(error: BaseException) -> OutOfSpace | None:
    """The OutOfSpace behind ``error`` (a close that failed to flush after one replaces it),
    None when no write said how much it needed."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OutOfSpace):
            return seen
        seen = seen.__context__
    return None


def publish(path: Path, data: bytes | memoryview, *, tmp_dir: Path, prefix: str) -> None:
    """Raises OutOfSpace (with the size of ``data``) when the filesystem is full; the temp file
    is removed on any error."""
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        fsync_dir(path.parent)
    except BaseException as e:
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        if is_full(e):
            raise OutOfSpace(e, memoryview(data).nbytes) from None
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The low-level file operations every module of the store does the same way.

Atomic publication: a reader sees the whole old file or the whole new one, never a torn one.
Write a temp file in the store (same filesystem, so the rename is atomic), fsync it, rename it
over the destination, fsync the directory so the rename itself survives a crash. A full disk is
OutOfSpace, carrying the size that did not fit, so the caller can say how much room it needs.

Reading the store's own files: opened without following a symlink or blocking on a FIFO
(``OPEN_FLAGS``), and trusted only when nobody but the store's owner can have written them
(``not_ours_alone``). A file's mtime is its last use, which eviction reads; a use is recorded at
most once per ``USE_TICK_NS``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import TypeGuard

from ..regularfile import file_type

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
# A symlink planted at a store file's name is never followed; a FIFO never blocks the open.
OPEN_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | os.O_CLOEXEC
USE_TICK_NS = 600 * 1_000_000_000


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
    """Put ``data`` at ``path`` atomically. Raises OutOfSpace (with the size of ``data``) when
    the filesystem is full; the temp file is removed on any error."""
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


def remove_path(path: Path) -> bool:
    """Remove a file, link or stray directory inside the store; False if it was already gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def not_ours_alone(st: os.stat_result, owner: int) -> str | None:
    """Why a file of the store cannot be trusted (another owner, writable by group or others),
    or None when only ``owner`` can have written it."""
    if st.st_uid != owner:
        return f"owned by uid {st.st_uid}, not by the store's owner (uid {owner})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"mode {stat.S_IMODE(st.st_mode):04o}: group or others can write it"
    return None


def read_private(path: Path, owner: int) -> bytes | None:
    """The bytes of the store's own file at ``path``, None when there is none. ValueError
    completes the sentence "the file ..." with why it cannot be used: not a regular file (never
    followed through a symlink, never blocked on by a FIFO), or not written by ``owner`` alone."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"is {file_type(st.st_mode)}, not a regular file")
        if (problem := not_ours_alone(st, owner)) is not None:
            raise ValueError(f"is {problem}; not trusted")
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object owns it now
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def use_is_due(mtime_ns: int) -> bool:
    """True when a file whose last recorded use is ``mtime_ns`` is due a new record: eviction
    needs the order of uses, not the instant, and each record costs a write."""
    return mtime_ns + USE_TICK_NS < time.time_ns()

"""Pins: a file the store hands out by path stays where it is while any process uses it.

A test given ``vmlinux_path`` may open it at any time in the session, so an eviction in this
process, another xdist worker or another run must not remove it meanwhile. A pin is a shared
flock(2) on the file, held by the process it was served to for as long as its store lives.
Eviction removes such a file only while holding an exclusive flock on it, which it cannot get
while any pin is held; the kernel drops a process's locks when it exits, so a crashed process
pins nothing. Locks are per open file, so pins bind this process's own evictions too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import threading
import weakref
from pathlib import Path

from .files import OPEN_FLAGS
from .signature import StatSignature


class Pins:
    """The files this store object pinned: path -> (descriptor, signature when it was pinned)."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[int, StatSignature]] = {}
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._held)

    def holds(self, path: Path) -> bool:
        """True when ``path`` is pinned here and is still the file pinned, unchanged since."""
        held = self._held.get(path)
        if held is None:
            return False
        fd, signature = held
        try:
            now = StatSignature.from_stat(os.fstat(fd))
            there = os.lstat(path)
        except OSError:
            return False
        return now == signature and (there.st_dev, there.st_ino) == (now.st_dev, now.st_ino)

    def pin(self, path: Path, fd: int, signature: StatSignature) -> bool:
        """Pin the file open at ``fd`` (this takes the descriptor) if it is still ``path`` and
        still has the ``signature`` it was checked with. False (the descriptor closed): it moved,
        or an eviction holds it this instant; look again under the store lock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            now = StatSignature.from_stat(os.fstat(fd))
            there = os.lstat(path)
        except OSError:
            os.close(fd)
            return False
        if now != signature or (there.st_dev, there.st_ino) != (now.st_dev, now.st_ino):
            os.close(fd)
            return False
        with self._lock:
            previous = self._held.pop(path, None)
            self._held[path] = (fd, signature)
        if previous is not None:
            os.close(previous[0])
        return True

    def unpin(self, path: Path) -> None:
        """Let go of ``path`` (pinned here or not): a tree found damaged once pinned must not
        keep its removal waiting on this process."""
        with self._lock:
            held = self._held.pop(path, None)
        if held is not None:
            os.close(held[0])


def in_use(path: Path) -> bool:
    """True while some process holds a pin on ``path``."""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError:
        return False  # gone, a symlink, unreadable: nothing anyone can have pinned
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def remove_unless_in_use(path: Path) -> bool:
    """Remove the file ``path`` unless a process holds a pin on it; True when it is gone. (What
    is not a regular file is never pinned: remove that with ``files.remove_path``.)"""
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return True
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()  # a symlink now, or unreadable: never served, so never pinned
        return not os.path.lexists(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Held exclusively: a pin taken from here on is on the unlinked file, and its holder
        # finds the path no longer leads to it (Pins.pin).
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(fd)


def _close_all(held: dict[Path, tuple[int, StatSignature]]) -> None:
    for fd, _ in held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    held.clear()

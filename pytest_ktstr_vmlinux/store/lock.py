"""The store's lock: who holds it, and a wait that is bounded and says what it waits for.

A process that holds the lock records itself in ``lock.owner`` beside it (pid, process start
time, the lock file's inode) and removes the record before it lets go. flock itself carries no
owner, and filelock may truncate the lock file on open, so the record is a file of its own. A
waiter believes a record only while it still describes a live holder: the same lock inode and a
process with that pid and that start time. A record left by a killed holder, or by one whose pid
has since been reused, names nobody.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import KernelArtifactError
from ..regularfile import file_type
from .api import InsecureStoreError, StoreLockTimeout, full_error
from .files import OPEN_FLAGS, is_full, not_ours_alone, remove_path

OWNER_SUFFIX = ".owner"
# A wait longer than this (or half the timeout, if that is shorter) is said once.
NOTICE_AFTER = 5.0
TIMEOUT_SETTINGS = "--kernel-lock-timeout, KTSTR_LOCK_TIMEOUT"
_MAX_RECORD = 4096


def parse_lock_timeout(text: str) -> float:
    """Seconds from ``"1800"`` or ``"2.5"``; ValueError for anything but a finite number > 0."""
    try:
        seconds = float(text.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"not a timeout: {text!r} (seconds, a number above 0: 1800, 60, 2.5)")
    return seconds


def prepare_lock(path: Path, warn: Callable[[str], None]) -> None:
    """Refuse a lock that is a symlink; remove one that is not a regular file or not ours alone
    (one ``warn``), so filelock creates it afresh. The lock only saves duplicate work: replacing
    it is safe."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise InsecureStoreError(
            f"kernel cache lock {path} is a symlink; refusing to open it (it could point"
            f" anywhere). Remove it: `rm {path}`"
        )
    if not stat.S_ISREG(st.st_mode):
        warn(f"kernel cache lock {path} is {file_type(st.st_mode)}; replacing it")
        remove_path(path)
    elif (problem := not_ours_alone(st, os.geteuid())) is not None:
        warn(f"kernel cache lock {path} is {problem}; replacing it")
        remove_path(path)


def print_notice(message: str) -> None:
    print(f"ktstr: {message}", file=sys.stderr, flush=True)


class StoreLock:
    """The store's filelock: re-entrant within a process (threads included), never opened
    through a symlink, with errors that say what to do (held too long, full disk, unopenable).
    A wait past NOTICE_AFTER is told to ``notify`` once, naming the holder."""

    def __init__(
        self,
        path: Path,
        timeout: float,
        warn: Callable[[str], None],
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._warn = warn
        self._notify = notify or print_notice
        self._owner = path.with_name(path.name + OWNER_SUFFIX)
        prepare_lock(path, warn)
        self._lock = FileLock(str(path), timeout=timeout, **_strict_lock_kwargs())
        self._thread_lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                prepare_lock(self.path, self._warn)
                self._acquire()
            else:
                self._lock.acquire()  # ours already: filelock counts it
            with self._holding():
                yield

    @contextlib.contextmanager
    def held_if_free(self) -> Iterator[bool]:
        """Hold the lock if that needs no wait: True inside when it is held."""
        with self._thread_lock:
            try:
                self._lock.acquire(timeout=0)
            except (Timeout, OSError):
                yield False
                return
            with self._holding():
                yield True

    @contextlib.contextmanager
    def _holding(self) -> Iterator[None]:
        if self._depth == 0:
            self._record_owner()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                # Before the lock goes: a record must never outlive the hold it describes.
                with contextlib.suppress(OSError):
                    os.unlink(self._owner)
            self._lock.release()

    def _acquire(self) -> None:
        started = time.monotonic()
        grace = min(NOTICE_AFTER, self.timeout / 2)
        if self._try(grace):
            return
        waited = time.monotonic() - started
        holder = self.holder()
        self._notify(
            f"kernel cache {self.path.parent}: waited {waited:.0f} s for its lock {self.path},"
            f" held by {holder.describe()}; waiting up to {self.timeout:.0f} s in all"
            f" ({TIMEOUT_SETTINGS})"
        )
        if self._try(max(0.0, self.timeout - waited)):
            return
        waited = time.monotonic() - started
        holder = self.holder()
        raise StoreLockTimeout(
            f"kernel cache {self.path.parent}: lock {self.path} still held by"
            f" {holder.describe()} after {waited:.0f} s (the timeout is {self.timeout:g} s);"
            f" another run is building, or hung: {holder.remedy()}, or raise the timeout"
            f" ({TIMEOUT_SETTINGS})"
        )

    def _try(self, timeout: float) -> bool:
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:  # a TimeoutError, so an OSError: it must be caught first
            return False
        except OSError as e:
            if is_full(e):
                raise full_error(self.path.parent, e, "creating its lock", None) from None
            raise KernelArtifactError(
                f"kernel cache lock {self.path}: {e.strerror or e}; remove it and run again"
            ) from None
        return True

    def _record_owner(self) -> None:
        # Who holds the lock is a courtesy to waiters: failing to record it must not fail a build.
        try:
            lock = os.stat(self.path)
            pid = os.getpid()
            record = {"pid": pid, "start": _start_time(pid), "lock": [lock.st_dev, lock.st_ino]}
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self._owner, flags, 0o600)
            try:
                os.write(fd, json.dumps(record).encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def holder(self) -> Holder:
        """Who holds the lock, as far as a record that is still true tells."""
        try:
            fd = os.open(self._owner, OPEN_FLAGS)
        except OSError:
            return Holder(None)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not_ours_alone(st, os.geteuid()) is not None:
                return Holder(None)
            record = json.loads(os.read(fd, _MAX_RECORD))
            lock = os.stat(self.path)
        except (OSError, ValueError):
            return Holder(None)
        finally:
            os.close(fd)
        if not isinstance(record, dict) or record.get("lock") != [lock.st_dev, lock.st_ino]:
            return Holder(None)
        pid, start = record.get("pid"), record.get("start")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return Holder(None)
        if not _alive(pid) or _start_time(pid) != start:
            return Holder(None)  # a killed holder's record, or a reused pid
        return Holder(pid, _state(pid) in ("T", "t"))


@dataclass(frozen=True)
class Holder:
    """The process holding the lock (``pid`` None: not known) and whether it is stopped."""

    pid: int | None
    stopped: bool = False

    def describe(self) -> str:
        if self.pid is None:
            return "another process (its pid is not known)"
        return f"pid {self.pid}" + (" (stopped)" if self.stopped else "")

    def remedy(self) -> str:
        if self.pid is None:
            return "find and end the process that holds it (fuser or lsof on the lock)"
        if self.stopped:
            return f"resume it (`kill -CONT {self.pid}`) or end it (`kill {self.pid}`)"
        return f"wait for it, or end it if it is hung (`kill {self.pid}`)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, if not ours
    return True


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), where there is /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _start_time(pid: int) -> int | None:
    # Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. With the
    # pid, it names one process: a pid reused later has another start time.
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def _state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _strict_lock_kwargs() -> dict[str, Any]:
    # filelock >= 4 can fall back to a soft (existence) lock where flock is missing; the store
    # would rather fail loudly there than trust a weaker lock without saying so.
    parameters = inspect.signature(FileLock.__init__).parameters
    return {"fallback_to_soft": False} if "fallback_to_soft" in parameters else {}

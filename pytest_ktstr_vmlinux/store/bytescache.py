"""In-process cache of vmlinux bytes, keyed by canonical path and checked by stat signature.

A rebuild while a long test session runs must never hand out stale bytes, so every lookup re-stats
the file (microseconds) before reusing what it read (hundreds of milliseconds for a distro vmlinux).
An entry read within ``RACY_WINDOW_NS`` of its file's last change is racy (see ``signature.py``) and
is re-verified by content until it has been seen unchanged after the window.

Where the bytes come from is the loader's business: a private read by default, a shared mapping
of a store snapshot when the plugin has an on-disk store.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelArtifactError
from ..regularfile import NotRegularFile, open_regular
from .signature import (
    RACY_WINDOW_NS,
    StatSignature,
    canonical_key,
    is_racy,
    read_error,
    stat_signature,
)

# Reads a file: (bytes, the signature they belong to, the wall-clock time the read started).
Loader = Callable[[str, "str | os.PathLike[str]", int], "tuple[memoryview, StatSignature, int]"]

# A file that changes this many times while being read is still being written.
MAX_READ_ATTEMPTS = 5


@dataclass
class _Entry:
    signature: StatSignature
    data: memoryview
    # Wall-clock time at which the content was last known to match the signature.
    verified_ns: int

    def racy(self, window_ns: int) -> bool:
        return is_racy(self.signature, self.verified_ns, window_ns)


@dataclass
class CacheStats:
    """Counters tests and benchmarks read to tell a hit from a read."""

    hits: int = 0
    reads: int = 0
    racy_checks: int = 0


class VmlinuxBytesCache:
    """Thread-safe map of canonical path -> immutable bytes; errors are never stored."""

    def __init__(self, racy_window_ns: int = RACY_WINDOW_NS, loader: Loader | None = None) -> None:
        self.racy_window_ns = racy_window_ns
        self.loader: Loader = loader or read_consistent
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and canonical_key(path) in self._entries

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._key_locks.clear()
            self.stats = CacheStats()

    def get(self, path: str | os.PathLike[str]) -> memoryview:
        """The file's bytes as a read-only memoryview; the same object while the file is unchanged.

        Raises KernelArtifactError (naming the file and the problem) when it cannot be read.
        """
        key = canonical_key(path)
        signature = stat_signature(key, path)
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry.signature == signature
            and not entry.racy(self.racy_window_ns)
        ):
            self.stats.hits += 1
            return entry.data
        # One reader per file: the other threads wait for its result instead of reading again.
        with self._key_lock(key):
            signature = stat_signature(key, path)
            entry = self._entries.get(key)
            if entry is not None and entry.signature == signature:
                if not entry.racy(self.racy_window_ns):
                    self.stats.hits += 1
                    return entry.data
                self.stats.racy_checks += 1
            data, signature, started_ns = self.loader(key, path, self.racy_window_ns)
            self.stats.reads += 1
            if entry is not None and entry.signature == signature and entry.data == data:
                # Same content: keep the object callers already hold, now verified later.
                entry.verified_ns = started_ns
                return entry.data
            self._entries[key] = _Entry(signature, data, started_ns)
            return data

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())


def read_consistent(
    key: str, shown: str | os.PathLike[str], racy_window_ns: int
) -> tuple[memoryview, StatSignature, int]:
    """Read the whole file; re-read while its signature moved during the read (a torn read)."""
    previous: bytes | None = None
    for _ in range(MAX_READ_ATTEMPTS):
        started_ns = time.time_ns()
        try:
            with open_regular(key, buffering=0) as f:
                before = StatSignature.from_stat(os.fstat(f.fileno()))
                # readall() sizes its buffer from fstat and reads to EOF: one allocation, no
                # zero-fill, and a file that grew or shrank shows up as a length mismatch.
                data = f.read()
                after = StatSignature.from_stat(os.fstat(f.fileno()))
            # A rename-over during the read leaves our inode intact but makes it stale.
            now = StatSignature.from_stat(os.stat(key))
        except OSError as e:
            raise read_error(shown, e) from None
        except NotRegularFile as e:
            raise KernelArtifactError(
                f"{shown}: is {e.kind}; point at the vmlinux ELF file itself"
            ) from None
        if not (len(data) == before.st_size and before == after == now):
            previous = None
            continue
        # Within one timestamp tick an in-place write moves no timestamp: a racy file counts as
        # read only when two reads agree.
        racy = before.changed_ns + racy_window_ns > started_ns
        if not racy or previous == data:
            return memoryview(data), before, started_ns
        previous = data
    raise KernelArtifactError(
        f"{shown}: the file changed {MAX_READ_ATTEMPTS} times while it was being read; a build is"
        " probably still writing it. Wait for the build to finish, then run again."
    )


_DEFAULT_CACHE = VmlinuxBytesCache()


def default_cache() -> VmlinuxBytesCache:
    """The process-wide cache that the fixtures and ``cached_vmlinux_bytes`` share."""
    return _DEFAULT_CACHE


def load_vmlinux_bytes(path: str | os.PathLike[str]) -> memoryview:
    """The bytes of the file ``path`` (a vmlinux), read once per process and kept: read again
    only when the file changes (its stat signature, checked on every call, says so). Raises
    KernelArtifactError saying what is wrong."""
    return _DEFAULT_CACHE.get(path)


def cached_vmlinux_bytes(path: str | os.PathLike[str]) -> memoryview | None:
    """As ``load_vmlinux_bytes``, or None when ``path`` cannot be read (nothing is cached then).
    The bytes are shared, read-only, by every caller of the process::

        data = cached_vmlinux_bytes(kernel.require_vmlinux())
        assert data is not None and data[1:4] == b"ELF"
    """
    try:
        return _DEFAULT_CACHE.get(Path(path))
    except KernelArtifactError:
        return None

"""One store's index file, as the store reads and writes it (the format is storeindex.py's).

A malformed entry costs only itself: it is dropped with one warning and the index written back
without it. A full disk is a StoreFullError naming the store; writes that only record what a
later call would find out again (stamps, settled racy sources) are skipped when there is no room
or, for stamps, when another process holds the lock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import KernelArtifactError
from . import index as storeindex
from . import stamps
from .artifact import Artifact
from .directory import INDEX_NAME, StoreFullError, full_error
from .lock import StoreLock
from .publish import OutOfSpace
from .signature import StatSignature, sha256_file


class IndexFile:
    """``index.json`` of the store at ``directory``: read, repaired, written atomically."""

    def __init__(
        self,
        directory: Path,
        *,
        tmp_dir: Path,
        owner: int,
        lock: StoreLock,
        warn: Callable[[str], None],
    ) -> None:
        self.directory = directory
        self.path = directory / INDEX_NAME
        self._tmp = tmp_dir
        self._owner = owner
        self._lock = lock
        self._warn = warn

    def read(self) -> dict[str, Any]:
        """The index, or an empty one (with one warning) when it is missing or unusable. A
        malformed entry is dropped alone (one warning) and the index written back without it."""
        dropped: list[str] = []
        index = storeindex.load_index(self.path, self._owner, self._warn, dropped)
        if dropped:
            self._warn(storeindex.dropped_message(self.path, dropped))
            self._repair()
        return index

    def write(self, index: dict[str, Any]) -> None:
        try:
            storeindex.write_index(self.path, index, tmp_dir=self._tmp)
        except OutOfSpace as e:
            raise full_error(self.directory, e, "writing the index", e.needed) from None

    def write_if_room(self, index: dict[str, Any]) -> None:
        """Write an index whose changes are only worth keeping (stamps): when the disk is full,
        the next open makes them again."""
        with contextlib.suppress(StoreFullError):
            self.write(index)

    def record_check(
        self, key: str, signature: StatSignature, kind: str, version: int, found: Artifact
    ) -> None:
        """Stamp ``found`` as checked in full and used now (stamps.py), if the lock is free
        right now: a check or use not recorded is made again by a later open."""
        with self._lock.held_if_free() as held:
            if not held:
                return
            index = self.read()
            record = storeindex.record_of(index, key, signature, kind, version)
            if record is None or record["file"] != found.path.name:
                return
            try:
                if StatSignature.from_stat(os.lstat(found.path)) != found.signature:
                    return  # changed since it was opened: the next open checks it again
                record["checked"] = stamps.touch(found.path)
            except OSError:
                return
            self.write_if_room(index)

    def reverify(self, key: str, signature: StatSignature, entry: dict[str, Any]) -> bool:
        """A racy entry: its content hash decides. A match is recorded so the check stops once
        the timestamp window has passed (when the disk has room for that)."""
        started_ns = time.time_ns()
        try:
            digest = sha256_file(key)
        except OSError:
            return False
        if digest != entry.get("sha256"):
            return False
        self.record_settled(key, signature, started_ns)
        return True

    def record_settled(self, key: str, signature: StatSignature, started_ns: int) -> None:
        """A racy source's content was found unchanged at ``started_ns``: recorded, so the
        re-verification stops once the timestamp window has passed (when the disk has room)."""
        with contextlib.suppress(StoreFullError), self._lock.held():
            index = self.read()
            current = storeindex.current_entry(index, key, signature)
            if current is not None:
                current["recorded_ns"] = max(current["recorded_ns"], started_ns)
                self.write(index)

    def _repair(self) -> None:
        """Write the index back without its malformed entries, if the lock is free right now: a
        holder writes the index soon anyway (and drops them too)."""
        with self._lock.held_if_free() as held:
            if not held:
                return
            dropped: list[str] = []
            index = storeindex.load_index(self.path, self._owner, self._warn, dropped)
            if dropped:
                with contextlib.suppress(OSError, KernelArtifactError):
                    self.write(index)  # an optimization: the next write tries again

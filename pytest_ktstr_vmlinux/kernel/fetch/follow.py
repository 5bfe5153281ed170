"""Unpacking a package while apt downloads it: decompression overlaps the download.

``apt-get download`` writes each package under its final name as the bytes arrive and checks
its SHA256 when it has them all. A follower reads that file as it grows and hands the bytes to
dpkg-deb, hashing what it read. What dpkg-deb unpacked from them counts only when those bytes
are, to the last one, the bytes the archive signed (the SHA256 of the package's record in the
lists apt verified) and apt-get itself succeeded; otherwise (apt started a file over on a retry,
or gave up) it is thrown away, and the package unpacked again from the file apt verified, or the
fetch fails with apt's error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_CHUNK = 1 << 20
_WAIT = 0.02


class Follower:
    """Follows one package file; ``pump`` runs in a thread of its own."""

    def __init__(
        self,
        find: Callable[[], Path | None],
        size: int,
        sha256: str,
        done: threading.Event,
        abort: threading.Event,
    ) -> None:
        self._find = find
        self._size = size
        self._sha256 = sha256
        self._done = done  # apt-get has exited: the file is as it will stay
        self._abort = abort
        self.matched = False

    def pump(self, out: BinaryIO) -> None:
        """Copy the file into ``out`` as it grows, then close ``out``; ``matched`` says whether
        what was read is the signed package."""
        digest = hashlib.sha256()
        fed = 0
        sink: BinaryIO | None = out
        try:
            path = self._wait_for_file()
            if path is None:
                return
            with open(path, "rb") as f:
                while fed < self._size and not self._abort.is_set():
                    chunk = f.read(min(_CHUNK, self._size - fed))
                    if not chunk:
                        if self._done.is_set() and not self._grew(f, fed):
                            return  # apt is done and the file is short: not the package
                        time.sleep(_WAIT)
                        continue
                    digest.update(chunk)
                    fed += len(chunk)
                    sink = _write(sink, chunk)
            self.matched = fed == self._size and digest.hexdigest() == self._sha256
        finally:
            if sink is not None:
                with contextlib.suppress(BrokenPipeError, ValueError):
                    sink.close()

    def _wait_for_file(self) -> Path | None:
        while not self._abort.is_set():
            path = self._find()
            if path is not None:
                return path
            if self._done.is_set():
                return None
            time.sleep(_WAIT)
        return None

    @staticmethod
    def _grew(f: BinaryIO, fed: int) -> bool:
        return os.fstat(f.fileno()).st_size > fed


def _write(sink: BinaryIO | None, chunk: bytes) -> BinaryIO | None:
    """Write to dpkg-deb; once it has stopped reading (it needs no trailing bytes), the rest is
    only hashed."""
    if sink is None:
        return None
    try:
        sink.write(chunk)
    except (BrokenPipeError, ValueError):  # ValueError: closed after dpkg-deb was stopped
        return None
    return sink

"""Atomic publication: a reader sees the whole old file or the whole new one, never a torn one.

Write a temp file in the store (same filesystem, so the rename is atomic), fsync it, rename it
over the destination, fsync the directory so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def publish(path: Path, data: bytes | memoryview, *, tmp_dir: Path, prefix: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

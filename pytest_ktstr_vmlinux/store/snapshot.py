"""Immutable vmlinux snapshots in the store, mapped read-only by every worker.

Mapping the vmlinux itself would be zero-copy but unsafe: a rebuild that truncates or rewrites it
in place tears the bytes under the mapping or SIGBUSes the reader. A snapshot is an artifact file
the store never modifies (replacement and eviction only unlink it), so a mapping of it stays
valid and unchanged for as long as a worker holds it. N workers share one page-cache copy.

The snapshot is a reflink (FICLONERANGE) where the filesystem shares extents (btrfs, XFS), else a
kernel-side ``copy_file_range``, else a plain copy: one copy of the file on disk at most.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import struct
import time
from pathlib import Path
from typing import BinaryIO

from ..regularfile import open_regular
from .api import Store
from .files import OutOfSpace, is_full
from .signature import StatSignature

SNAPSHOT_KIND = "vmlinux-snapshot"
SNAPSHOT_VERSION = 1

# _IOW(0x94, 13, struct file_clone_range) from <linux/fs.h>.
FICLONERANGE = 0x4020940D
_FILE_CLONE_RANGE = struct.Struct("=qQQQ")  # src_fd, src_offset, src_length, dest_offset
_UNSUPPORTED = {
    errno.EOPNOTSUPP,
    errno.ENOTTY,
    errno.EXDEV,
    errno.EINVAL,
    errno.ENOSYS,
    errno.EBADF,
}


def build_snapshot(source: Path, out: BinaryIO) -> None:
    """Write ``source``'s bytes as the payload at ``out``'s position, sharing extents if we can.
    A full filesystem is OutOfSpace, with the source's size as what was needed."""
    out.flush()
    with open_regular(source) as src:
        size = os.fstat(src.fileno()).st_size
        try:
            dest = out.fileno()
        except (io.UnsupportedOperation, AttributeError):
            shutil.copyfileobj(src, out, 8 << 20)  # an in-memory store: no file to share with
            return
        offset = out.tell()
        try:
            if not _clone_range(src.fileno(), dest, offset) and not _copy_file_range(
                src.fileno(), dest, size, offset
            ):
                src.seek(0)
                shutil.copyfileobj(src, out, 8 << 20)
                out.flush()
        except OSError as e:
            if is_full(e):
                raise OutOfSpace(e, size) from None
            raise
        out.seek(0, os.SEEK_END)


def snapshot(store: Store, path: str | os.PathLike[str]) -> memoryview:
    """A read-only, shared, immutable view of the vmlinux at ``path`` as it is now."""
    return store.get_or_build(path, SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot).map()


class SnapshotLoader:
    """Loads vmlinux bytes as store snapshots (a ``bytescache.Loader``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(
        self, key: str, shown: str | os.PathLike[str], racy_window_ns: int
    ) -> tuple[memoryview, StatSignature, int]:
        started_ns = time.time_ns()
        stored = self.store.get_or_build(key, SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot)
        return stored.map(), stored.signature, started_ns


def _clone_range(src: int, dest: int, dest_offset: int) -> bool:
    # src_length 0 clones to the end of the source.
    request = _FILE_CLONE_RANGE.pack(src, 0, 0, dest_offset)
    try:
        fcntl.ioctl(dest, FICLONERANGE, request)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    return True


def _copy_file_range(src: int, dest: int, size: int, dest_offset: int) -> bool:
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    done = 0
    try:
        while done < size:
            n = copy(src, dest, size - done, done, dest_offset + done)
            if n == 0:
                break
            done += n
        return done == size
    except OSError as e:
        if is_full(e):
            raise  # a plain copy would not fit either
    if done:
        # A partial kernel copy failed midway: start over with a plain copy.
        os.ftruncate(dest, dest_offset)
    return False

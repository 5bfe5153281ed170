"""The newc ("070701") cpio format the kernel unpacks as an initramfs, written without cpio(1).

Entries carry fixed inode numbers, owner root and mtime 0, so the same content always gives the
same bytes: the store caches initramfs images by content, and equal inputs must hit.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_FIELDS = 13  # magic is followed by 13 eight-digit hex fields


@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a regular file or a symlink (``data`` is its target)."""

    name: str  # without a leading "/": "bin/busybox"
    mode: int  # st_mode, type bits included
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # a device node's major and minor

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> Entry:
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> Entry:
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, name: str, target: str) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return cls(name, stat.S_IFCHR | perm, rdev=(major, minor))

    @classmethod
    def fifo(cls, name: str, perm: int = 0o600) -> Entry:
        return cls(name, stat.S_IFIFO | perm)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(out: BinaryIO, ino: int, entry: Entry) -> None:
    name = entry.name.lstrip("/").encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    major, minor = entry.rdev
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, major, minor, len(name), 0)
    assert len(fields) == _FIELDS
    header = MAGIC + b"".join(b"%08X" % f for f in fields)
    out.write(header + name + _pad(len(header) + len(name)))
    out.write(entry.data + _pad(len(entry.data)))


def write_archive(out: BinaryIO, entries: Iterable[Entry]) -> None:
    """Write ``entries`` then the trailer. Parents must come before their children, as the
    kernel creates each member as it reads it."""
    for ino, entry in enumerate(entries, start=1):
        if not entry.name.lstrip("/") or "\0" in entry.name:
            raise ValueError(f"cpio member name {entry.name!r}: empty or with a NUL byte")
        _member(out, ino, entry)
    _member(out, 0, Entry(TRAILER, 0))

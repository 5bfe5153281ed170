"""The guest's physical RAM as the host sees it: the file QEMU backs it with, mapped read-only.

The file is made in a private (0700) directory, preferably on /dev/shm, sized, and unlinked
with its directory at once: QEMU gets it as an inherited descriptor (``mem-path=/proc/self/fd/N``
with ``share=on``), so the guest's stores land in the very pages the host maps. Nothing of it
is ever left on disk, whatever happens to the worker: the memory goes when the last of QEMU and
this process lets go of it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile

from .errors import GuestError
from .layout import RamRegion

SHM = "/dev/shm"


class GuestMemory:
    """``buffer`` is the RAM file (read-only memoryview); ``regions`` say which guest physical
    addresses each part of it backs; ``read(phys, size)`` is a zero-copy view of one range."""

    def __init__(self, fd: int, regions: tuple[RamRegion, ...]) -> None:
        self.regions = regions
        self.size = sum(r.size for r in regions)
        self._spans = tuple((r.start, r.start + r.size, r.offset) for r in regions)
        self._fd = fd
        self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.buffer = memoryview(self._map)

    @classmethod
    def create(cls, regions: tuple[RamRegion, ...], directory: str | None = None) -> GuestMemory:
        size = sum(r.size for r in regions)
        base = directory or _ram_base(size)
        try:
            private = tempfile.mkdtemp(prefix=f"ktstr-vm-{os.getpid()}-", dir=base)
            try:
                fd, path = tempfile.mkstemp(prefix="ram-", dir=private)
                os.unlink(path)
            finally:
                os.rmdir(private)
            os.ftruncate(fd, size)
        except OSError as e:
            raise GuestError(
                f"cannot make a {size >> 20} MiB guest RAM file in {base}: {e.strerror}"
            ) from None
        return cls(fd, regions)

    @property
    def fd(self) -> int:
        """The RAM file, for QEMU to inherit."""
        return self._fd

    def __len__(self) -> int:
        return self.size

    def offset(self, phys: int, size: int = 1) -> int:
        """Where guest physical ``[phys, phys + size)`` is in ``buffer``; ValueError when that
        range is not all in one RAM region."""
        end = phys + size
        for start, stop, offset in self._spans:
            if start <= phys and end <= stop:
                return offset + phys - start
        spans = ", ".join(f"{r.start:#x}-{r.end:#x}" for r in self.regions)
        raise ValueError(f"guest physical {phys:#x}+{size:#x} is not in guest RAM ({spans})")

    def read(self, phys: int, size: int) -> memoryview:
        """A view of guest physical ``[phys, phys + size)``; ValueError when it is not RAM, or
        once the RAM is closed, even while views taken before keep the mapping alive."""
        if self._fd < 0:
            raise ValueError("the guest's RAM is closed")
        start = self.offset(phys, size)
        return self.buffer[start : start + size]

    def write(self, phys: int, data: bytes | memoryview) -> None:
        """Store ``data`` in guest RAM (for the transfer window; ``buffer`` stays read-only)."""
        offset = self.offset(phys, max(len(data), 1))
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def close(self) -> None:
        """Let go of the RAM. Views a caller still holds keep the mapping (and its last
        contents) alive until they are released."""
        if self._fd < 0:
            return
        with contextlib.suppress(BufferError):  # a caller's export of it (numpy) keeps it
            self.buffer.release()
            self._map.close()
        os.close(self._fd)
        self._fd = -1


def _ram_base(size: int) -> str:
    """/dev/shm when it can hold the guest's RAM (tmpfs: no writeback to a disk), else $TMPDIR."""
    try:
        st = os.statvfs(SHM)
    except OSError:
        return tempfile.gettempdir()
    if os.access(SHM, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= size:
        return SHM
    return tempfile.gettempdir()

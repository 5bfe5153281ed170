"""The guest's physical RAM as the host sees it: the files QEMU backs it with, mapped read-only.

Each file is made in a private (0700) directory, preferably on /dev/shm, sized, and unlinked
with its directory at once: QEMU gets it as an inherited descriptor (``mem-path=/proc/self/fd/N``
with ``share=on``), so the guest's stores land in the very pages the host maps. Nothing of it
is ever left on disk, whatever happens to the worker: the memory goes when the last of QEMU and
this process lets go of it.

A guest with several NUMA nodes has one file per node (QEMU 7.2's memory-backend-file cannot
start at an offset of a shared file). They are mapped side by side, node 0 first, into one
reserved range of addresses, so ``buffer`` is still all of guest RAM in QEMU's order and a
region's ``offset`` still indexes it; the one mapping object owns the range, so closing it (or
a view that outlives ``close``) unmaps every file at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import tempfile
from collections.abc import Sequence

from .errors import GuestError
from .layout import RamRegion

SHM = "/dev/shm"


class GuestMemory:
    """The guest's RAM, mapped in this process (a GuestVM's ``memory``): ``buffer`` is the RAM file
    (read-only memoryview); ``regions`` say which guest physical addresses each part of it
    backs; ``read(phys, size)`` is a zero-copy view of one range::

        ram = kernel_vm.memory
        first = ram.regions[0]
        page = bytes(ram.read(first.start, 4096))  # what the guest has there, now
    """

    def __init__(
        self, fd: int, regions: tuple[RamRegion, ...], nodes: Sequence[tuple[int, int]] = ()
    ) -> None:
        """``fd`` backs all of ``regions``; or, with ``nodes`` (``(fd, size)`` per NUMA node, in
        QEMU's order), those files do, one after the other."""
        #: Which guest physical ranges the RAM file backs, and where in ``buffer``.
        self.regions = regions
        #: The RAM's size in bytes.
        self.size = sum(r.size for r in regions)
        self._spans = tuple((r.start, r.start + r.size, r.offset) for r in regions)
        self._files = list(nodes) or [(fd, self.size)]
        if sum(size for _, size in self._files) != self.size:
            raise ValueError("the node files' sizes do not add up to the RAM regions'")
        if len(self._files) == 1:
            self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ)
            #: All of guest RAM, read-only, in QEMU's order (node 0 first).
            self.buffer = memoryview(self._map)
        else:
            self._map = _map_side_by_side(self._files)
            self.buffer = memoryview(self._map).toreadonly()
        self._fd = fd

    @classmethod
    def create(
        cls,
        regions: tuple[RamRegion, ...],
        directory: str | None = None,
        node_sizes: Sequence[int] = (),
    ) -> GuestMemory:
        """New RAM files for ``regions``: one, or one per NUMA node of ``node_sizes``."""
        size = sum(r.size for r in regions)
        base = directory or _ram_base(size)
        fds: list[int] = []
        try:
            private = tempfile.mkdtemp(prefix=f"ktstr-vm-{os.getpid()}-", dir=base)
            try:
                for part in node_sizes or [size]:
                    fd, path = tempfile.mkstemp(prefix="ram-", dir=private)
                    fds.append(fd)
                    os.unlink(path)
                    os.ftruncate(fd, part)
            finally:
                os.rmdir(private)
        except OSError as e:
            for fd in fds:
                os.close(fd)
            raise GuestError(
                f"cannot make a {size >> 20} MiB guest RAM file in {base}: {e.strerror}"
            ) from None
        if len(fds) == 1:
            return cls(fds[0], regions)
        return cls(fds[0], regions, list(zip(fds, node_sizes, strict=True)))

    @property
    def fd(self) -> int:
        """The RAM file (of node 0), for QEMU to inherit."""
        return self._fd

    @property
    def fds(self) -> tuple[int, ...]:
        """Every RAM file, one per NUMA node, in QEMU's order."""
        return tuple(fd for fd, _ in self._files)

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
            fd, at, room = self._file_at(offset)
            written = os.pwrite(fd, view[:room], at)
            view, offset = view[written:], offset + written

    def _file_at(self, offset: int) -> tuple[int, int, int]:
        """``(fd, offset in it, bytes left in it)`` for an offset into ``buffer``."""
        for fd, size in self._files:
            if offset < size:
                return fd, offset, size - offset
            offset -= size
        raise ValueError(f"offset {offset:#x} is past the guest RAM files")

    def close(self) -> None:
        """Let go of the RAM. Views a caller still holds keep the mapping (and its last
        contents) alive until they are released."""
        if self._fd < 0:
            return
        with contextlib.suppress(BufferError):  # a caller's export of it (numpy) keeps it
            self.buffer.release()
            self._map.close()
        for fd, _ in self._files:
            os.close(fd)
        self._fd = -1


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_MAP_FIXED = 0x10  # <sys/mman.h>, the same on every Linux architecture


def _map_side_by_side(files: Sequence[tuple[int, int]]) -> mmap.mmap:
    """An anonymous mapping of the files' total size, each file then mapped read-only over its
    part of it (MAP_FIXED replaces those pages in place), in order. Python's mmap object keeps
    the range, its buffer exports guard it, and its close unmaps all of it."""
    total = sum(size for _, size in files)
    reserved = mmap.mmap(
        -1, total, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, mmap.PROT_READ | mmap.PROT_WRITE
    )
    anchor = ctypes.c_char.from_buffer(reserved)
    base = ctypes.addressof(anchor)
    del anchor  # the export from_buffer made
    at = 0
    for fd, size in files:
        got = _libc.mmap(base + at, size, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)
        if got != base + at:
            err = ctypes.get_errno()
            reserved.close()
            raise GuestError(f"cannot map a guest RAM file of {size >> 20} MiB: {os.strerror(err)}")
        at += size
    return reserved


def _ram_base(size: int) -> str:
    """/dev/shm when it can hold the guest's RAM (tmpfs: no writeback to a disk), else $TMPDIR."""
    try:
        st = os.statvfs(SHM)
    except OSError:
        return tempfile.gettempdir()
    if os.access(SHM, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= size:
        return SHM
    return tempfile.gettempdir()

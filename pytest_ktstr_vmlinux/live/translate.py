"""x86_64 guest virtual to guest physical: the fast linear maps, else a walk of the guest's page
tables (4 or 5 levels, 2 MiB and 1 GiB pages) in the guest's RAM.

The source is anything with ``read(phys, size)`` and ``regions`` (GuestVM.memory is one); a
range outside RAM is a LiveMemoryError naming the address, never zeros.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Protocol

from .errors import LiveMemoryError

START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel image's mapping
KERNEL_IMAGE_SIZE = 1 << 30  # KASLR keeps the image in the first GiB above it
PRESENT, LARGE = 1 << 0, 1 << 7
ADDRESS_MASK = 0x000F_FFFF_FFFF_F000
_U64 = struct.Struct("<Q")


class RamRegion(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class PhysicalMemory(Protocol):
    """Guest physical memory: ``vm.GuestMemory``, or anything that reads the same way."""

    @property
    def regions(self) -> Sequence[RamRegion]: ...
    def read(self, phys: int, size: int) -> memoryview: ...


def read_physical(memory: PhysicalMemory, phys: int, size: int) -> memoryview:
    """``size`` bytes at guest physical ``phys``; LiveMemoryError when not all of it is RAM."""
    return GuestRAM(memory).read(phys, size)


class GuestRAM:
    """Reads of guest physical memory, its RAM ranges taken once (a guest's RAM does not move):
    what every read of a live kernel ends in, so it checks the range with one comparison per
    region and copies nothing."""

    def __init__(self, memory: PhysicalMemory) -> None:
        self.memory = memory
        self.spans = tuple((r.start, r.end) for r in memory.regions)

    def read(self, phys: int, size: int) -> memoryview:
        """``size`` bytes at guest physical ``phys``; LiveMemoryError when not all of it is RAM,
        or the RAM is gone."""
        end = phys + size
        for start, stop in self.spans:
            if start <= phys and end <= stop:
                break
        else:
            spans = ", ".join(f"{start:#x}-{stop:#x}" for start, stop in self.spans)
            raise LiveMemoryError(
                f"guest physical {phys:#x}+{size:#x} is not in guest RAM ({spans})", phys
            )
        try:
            return self.memory.read(phys, size)
        except ValueError:  # in RAM, yet unreadable: the mapping was let go
            raise LiveMemoryError(
                f"guest physical {phys:#x}: the guest's RAM is gone (the guest has stopped)", phys
            ) from None


class PageWalker:
    """Walks the page tables rooted at physical ``root`` (CR3 without its flag bits)."""

    def __init__(self, memory: PhysicalMemory, root: int, *, levels: int = 4) -> None:
        self.memory, self.root, self.levels = memory, root & ADDRESS_MASK, levels
        self.ram = GuestRAM(memory)

    def entry(self, table: int, index: int) -> int:
        return int(_U64.unpack(self.ram.read(table + 8 * index, 8))[0])

    def translate(self, vaddr: int) -> int:
        table = self.root
        for level in range(self.levels, 0, -1):
            shift = 12 + 9 * (level - 1)
            entry = self.entry(table, vaddr >> shift & 0x1FF)
            if not entry & PRESENT:
                raise LiveMemoryError(
                    f"guest virtual {vaddr:#x} is not mapped: the level-{level} page table"
                    f" entry (table {table:#x}, index {vaddr >> shift & 0x1FF}) is not present",
                    vaddr,
                )
            if level in (2, 3) and entry & LARGE:
                page = (entry & ADDRESS_MASK) & ~((1 << shift) - 1)
                return page | vaddr & ((1 << shift) - 1)
            table = entry & ADDRESS_MASK
        return table | vaddr & 0xFFF

    def first_mapped(self, start: int, size: int) -> tuple[int, int] | None:
        """(virtual, physical) of the first 2 MiB-aligned address mapped in [start, start+size),
        looked for at 2 MiB steps: where the kernel image begins in its mapping."""
        for vaddr in range(start, start + size, 1 << 21):
            try:
                return vaddr, self.translate(vaddr)
            except LiveMemoryError as e:
                if e.address != vaddr:  # a broken table, not a hole: say so
                    raise
        return None

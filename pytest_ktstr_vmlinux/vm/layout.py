"""Where things are in a guest's physical memory: QEMU's RAM regions, and the transfer window.

QEMU backs all of a guest's RAM with one file, but maps it into guest physical addresses in
pieces: on x86 the part that does not fit below the PCI hole is mapped from 4 GiB up. The rules
below are QEMU's (hw/i386/pc_q35.c, hw/i386/pc_piix.c: "lowmem"); tests check them against
QEMU's own ``info mtree``.

The transfer window is guest RAM that the kernel is told to leave alone (``memmap=SIZE$ADDR``,
E820 reserved): the agent copies file contents and command output into it through /dev/mem,
the host reads them from its mapping of guest RAM, at memory speed instead of a serial port's.
/dev/mem reads and writes only reach addresses below the end of the kernel's direct map, so
the window must have RAM above it; and it must not meet the kernel, which is decompressed in
place from its preferred address up to its ``init_size``, or the initrd, which QEMU puts at the
top of the RAM below 4 GiB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import GuestError

MiB = 1 << 20
GiB = 1 << 30
FOUR_GIB = 4 * GiB

# 16 MiB of payload per request, and room after it for the frame's trailer (agent.py).
WINDOW_SIZE = 17 * MiB
WINDOW_ALIGN = 2 * MiB
# QEMU keeps this much below the top of low RAM for ACPI tables (pcmc->acpi_data_size) and puts
# the initrd under it; a little more for firmware and rounding.
_TOP_RESERVED = 0x28000 + 2 * MiB

# x86 boot protocol fields (Documentation/arch/x86/boot.rst): protocol >= 2.10 has both.
_VERSION = 0x206
_PREF_ADDRESS = 0x258
_INIT_SIZE = 0x260
_MIN_PROTOCOL = 0x20A
ARM64_RAM_BASE = 0x40000000  # hw/arm/virt.c: RAM starts at 1 GiB


@dataclass(frozen=True)
class RamRegion:
    """Guest physical ``[start, start + size)`` is the RAM buffer's ``[offset, offset + size)``."""

    #: The first guest physical address.
    start: int
    #: Its size in bytes.
    size: int
    #: Where it starts in the RAM buffer (``GuestMemory.buffer``).
    offset: int

    @property
    def end(self) -> int:
        """The guest physical address just past the region."""
        return self.start + self.size


def ram_regions(machine: str, memory: int) -> tuple[RamRegion, ...]:
    """How QEMU maps ``memory`` bytes of RAM for ``machine`` (``q35``, ``pc`` or ``virt``)."""
    if machine == "virt":
        return (RamRegion(ARM64_RAM_BASE, memory, 0),)
    if machine == "q35":
        # Below 4 GiB there is room for 2.75 GiB unless RAM would not fit there anyway; then
        # 2 GiB, so that RAM above 4 GiB stays 1 GiB aligned in the file.
        lowmem = 0x80000000 if memory >= 0xB0000000 else 0xB0000000
    elif machine == "pc":
        lowmem = 0xC0000000 if memory >= 0xE0000000 else 0xE0000000
    else:
        raise ValueError(f"unknown machine {machine!r}: q35, pc or virt")
    below = min(memory, lowmem)
    regions = [RamRegion(0, below, 0)]
    if memory > below:
        regions.append(RamRegion(FOUR_GIB, memory - below, below))
    return tuple(regions)


def kernel_footprint(header: bytes, what: str) -> tuple[int, int]:
    """``(start, end)`` of guest physical memory an x86 bzImage decompresses itself into."""
    if len(header) < _INIT_SIZE + 4:
        raise GuestError(f"{what}: too short for an x86 boot header")
    version = struct.unpack_from("<H", header, _VERSION)[0]
    if version < _MIN_PROTOCOL:
        raise GuestError(
            f"{what}: x86 boot protocol {version >> 8}.{version & 0xFF} is older than 2.10;"
            " the guest needs a kernel from 2.6.31 or later"
        )
    pref = struct.unpack_from("<Q", header, _PREF_ADDRESS)[0]
    init_size = struct.unpack_from("<I", header, _INIT_SIZE)[0]
    return pref, pref + init_size


def place_window(regions: tuple[RamRegion, ...], kernel_end: int, initrd_size: int) -> int:
    """The guest physical address of the transfer window, just above the kernel."""
    low = regions[0]
    start = _align_up(max(kernel_end, low.start), WINDOW_ALIGN)
    needed = start + WINDOW_SIZE + initrd_size + _TOP_RESERVED
    if needed > low.end:
        raise GuestError(
            f"guest memory of {low.size // MiB} MiB below 4 GiB is too small for this kernel"
            f" and initramfs: they need at least {_align_up(needed - low.start, MiB) // MiB}"
            f" MiB (the kernel unpacks itself up to {kernel_end:#x}, the transfer window takes"
            f" {WINDOW_SIZE // MiB} MiB, the initramfs {initrd_size // 1024} KiB); give more"
            " memory"
        )
    return start


def _align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment

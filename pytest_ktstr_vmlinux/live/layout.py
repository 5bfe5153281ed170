"""Where the running kernel is: its KASLR virtual slide and physical base, read from the guest.

The guest's CR3 (from QEMU's monitor) roots its page tables; the kernel image's mapping starts
at the first present 2 MiB page above __START_KERNEL_map (the kernel clears the entries below
_text at boot), so the page walk gives _text's virtual address (hence the slide against the
vmlinux's link address) and its physical one (hence phys_base). ``linux_banner`` must then read
"Linux version" where these say it is; otherwise the layout is refused, not guessed. The same
holds with ``nokaslr`` (a slide of 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from ..formats.address import u64
from ..formats.symbols import KernelSymbols
from .errors import LiveKernelError, LiveMemoryError
from .translate import (
    ADDRESS_MASK,
    KERNEL_IMAGE_SIZE,
    START_KERNEL_MAP,
    PageWalker,
    PhysicalMemory,
    read_physical,
)

PTI_USER_PGD = 1 << 12  # with page table isolation, the user half of an 8 KiB PGD pair
CR4_LA57 = 1 << 12
ALIGN = 2 << 20  # CONFIG_PHYSICAL_ALIGN on x86_64
BANNER = b"Linux version "
_REGISTER = re.compile(r"\b(CR[0-4]|EFER)=([0-9a-fA-F]+)")


class Monitor(Protocol):
    """QEMU's human monitor: ``vm.GuestQMP``, or anything answering ``hmp`` the same way."""

    def hmp(self, command_line: str) -> str: ...


@dataclass(frozen=True)
class KernelLayout:
    """The running kernel's placement. ``slide``: its virtual KASLR offset from the vmlinux's
    link addresses; ``phys_base``: what the kernel calls phys_base (image va - START_KERNEL_MAP
    + phys_base = pa, in u64 arithmetic: when the kernel sits below its link address phys_base
    is a wrapped "negative" u64, as the kernel holds it); ``root``: the physical address of its
    page tables; ``levels``: 4 or 5."""

    #: The virtual KASLR offset from the vmlinux's link addresses (0 with ``nokaslr``).
    slide: int
    #: The kernel's phys_base (see above).
    phys_base: int
    #: The physical address of the kernel's page tables (its PGD).
    root: int
    #: Page table levels: 4, or 5 with LA57.
    levels: int


def control_registers(monitor: Monitor) -> dict[str, int]:
    """CR0, CR2, CR3, CR4 and EFER of the monitor's current CPU, from ``info registers``."""
    text = monitor.hmp("info registers")
    found = {name: int(value, 16) for name, value in _REGISTER.findall(text)}
    if "CR3" not in found:
        raise LiveKernelError(
            f"QEMU's `info registers` shows no CR3 (an x86_64 guest is needed): {text[:200]!r}"
        )
    return found


def derive_layout(
    memory: PhysicalMemory, symbols: KernelSymbols, registers: dict[str, int]
) -> KernelLayout:
    """The layout, from the guest's page tables; LiveKernelError saying why when it cannot be."""
    levels = 5 if registers.get("CR4", 0) & CR4_LA57 else 4
    cr3 = registers["CR3"] & ADDRESS_MASK
    text_link = u64(symbols["_text"] - symbols.kaslr_offset)
    tried = []
    for root in dict.fromkeys((cr3, cr3 & ~PTI_USER_PGD)):
        walker = PageWalker(memory, root, levels=levels)
        try:
            found = walker.first_mapped(START_KERNEL_MAP, KERNEL_IMAGE_SIZE)
        except LiveMemoryError as e:
            tried.append(f"CR3 {root:#x}: {e}")
            continue
        if found is None:
            tried.append(f"CR3 {root:#x}: nothing mapped above {START_KERNEL_MAP:#x}")
            continue
        text_va, text_pa = found
        layout = KernelLayout(
            slide=u64(text_va - text_link),
            phys_base=u64(text_pa - (text_va - START_KERNEL_MAP)),
            root=root,
            levels=levels,
        )
        problem = _implausible(memory, symbols, layout)
        if problem is None:
            return layout
        tried.append(f"CR3 {root:#x}: slide {layout.slide:#x}: {problem}")
    raise LiveKernelError(
        f"cannot derive where the guest's kernel is (KASLR slide, phys_base) from its page"
        f" tables: {'; '.join(tried)}. Is {symbols.source} the vmlinux of the kernel the guest"
        " runs, and has it booted past its early page tables?"
    )


def _implausible(
    memory: PhysicalMemory, symbols: KernelSymbols, layout: KernelLayout
) -> str | None:
    if layout.slide % ALIGN or layout.phys_base % ALIGN:
        return f"slide or phys_base {layout.phys_base:#x} is not 2 MiB aligned"
    banner = u64(symbols["linux_banner"] - symbols.kaslr_offset + layout.slide)
    phys = u64(banner - START_KERNEL_MAP + layout.phys_base)
    try:
        seen = bytes(read_physical(memory, phys, len(BANNER)))
    except LiveMemoryError as e:
        return f"linux_banner would be outside RAM ({e})"
    if seen != BANNER:
        return f"linux_banner at {phys:#x} reads {seen!r}, not {BANNER!r}"
    return None

"""Per-CPU variables and CPU masks of the live kernel.

A per-CPU variable of CPU n is at ``&var + __per_cpu_offset[n]``. What ``&var`` is depends on
the kernel: x86_64 links .data..percpu at 0 up to 6.14 (the symbol is an offset, not moved by
KASLR), and at its place in the image from 6.15 (a slid address, and __per_cpu_offset relative
to __per_cpu_start). Which one is read from the vmlinux (``__per_cpu_start`` is 0 or not), and
KernelSymbols slides accordingly; a kernel without SMP has no __per_cpu_offset and one copy.
"""

from __future__ import annotations

from collections.abc import Callable

from ..formats.address import U64_MASK
from ..formats.symbols import KernelSymbols
from .errors import LiveKernelError


class PerCPU:
    def __init__(
        self,
        symbols: KernelSymbols,
        read: Callable[[int, int], bytes],
        max_cpus: int | None = None,
    ) -> None:
        """``max_cpus``: the most CPUs the kernel can have (NR_CPUS: the bits of its struct
        cpumask); a larger nr_cpu_ids in its memory is refused, not believed."""
        self.symbols, self.read, self.max_cpus = symbols, read, max_cpus
        start = symbols.get("__per_cpu_start")
        self.zero_based = start is not None and start == 0
        self.span = (start or 0, symbols.get("__per_cpu_end") or 0)
        self.offsets = symbols.get("__per_cpu_offset")
        self._nr_cpu_ids: int | None = None
        # Each variable's symbol, checked once: per_cpu() is called for every CPU of every
        # sample, and then reads only __per_cpu_offset[cpu].
        self._bases: dict[str, int] = {}

    @property
    def nr_cpu_ids(self) -> int:
        """Read once: the kernel sets it at boot, from the possible CPUs, and never again."""
        if self._nr_cpu_ids is None:
            found = self.symbols.get("nr_cpu_ids")
            value = int.from_bytes(self.read(found, 4), "little") if found is not None else 1
            if value < 1 or (self.max_cpus is not None and value > self.max_cpus):
                bound = f"1 to {self.max_cpus} (NR_CPUS, the bits of its struct cpumask)"
                raise LiveKernelError(
                    f"nr_cpu_ids reads {value} (at {found or 0:#x}), not"
                    f" {bound if self.max_cpus else 'at least 1'}: the guest's memory there is"
                    " corrupted, or the symbols are not this kernel's"
                )
            self._nr_cpu_ids = value
        return self._nr_cpu_ids

    def address(self, name: str, cpu: int) -> int:
        base = self._bases.get(name)
        if base is None:
            base = self._bases[name] = self._base(name)
        # u64 arithmetic: with .data..percpu linked in place the offsets are "negative".
        return (base + self.offset(cpu)) & U64_MASK

    def offset(self, cpu: int) -> int:
        """``__per_cpu_offset[cpu]`` (0 without SMP, whose one CPU is 0): what turns a per-CPU
        address, a variable's or a ``__percpu`` pointer's, into CPU ``cpu``'s copy."""
        if self.offsets is None:
            if cpu != 0:
                raise LiveKernelError(f"CPU {cpu}: the kernel is built without SMP, CPU 0 only")
            return 0
        if not 0 <= cpu < (self._nr_cpu_ids or self.nr_cpu_ids):
            raise LiveKernelError(
                f"CPU {cpu} does not exist: the guest's kernel has nr_cpu_ids={self.nr_cpu_ids}"
            )
        return int.from_bytes(self.read(self.offsets + 8 * cpu, 8), "little")

    def _base(self, name: str) -> int:
        """The symbol of per-CPU variable ``name``, checked against the per-CPU scheme."""
        symbols = self.symbols
        try:
            percpu = symbols.is_percpu(name)
        except KeyError as e:
            raise LiveKernelError(str(e.args[0])) from None
        if not percpu:
            raise LiveKernelError(
                f"{name!r} is not a per-CPU variable (not in .data..percpu): use object({name!r})"
            )
        value = symbols[name]
        if self.offsets is not None and self.span[1] and not self.span[0] <= value < self.span[1]:
            scheme = "linked at 0" if self.zero_based else "linked in place"
            raise LiveKernelError(
                f"{name!r} is at {value:#x}, outside .data..percpu ({self.span[0]:#x}-"
                f"{self.span[1]:#x}, {scheme}): the symbols do not fit this kernel's per-CPU"
                " layout"
            )
        return value

    def mask(self, name: str) -> tuple[int, ...]:
        """The CPUs set in cpumask ``name`` (``__cpu_online_mask``), below nr_cpu_ids."""
        if name not in self.symbols:
            return (0,)  # no SMP: one CPU, always there
        data = self.read(self.symbols[name], (self.nr_cpu_ids + 7) // 8)
        bits = int.from_bytes(data, "little")
        return tuple(cpu for cpu in range(self.nr_cpu_ids) if bits >> cpu & 1)

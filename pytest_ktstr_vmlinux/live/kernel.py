"""``LiveKernel``: the guest's running kernel, read from the host through its RAM.

Made from a guest physical memory, the kernel's ``KernelSymbols`` and ``BTF`` (those of its
vmlinux), and QEMU's monitor for the CPU registers the layout is derived from once
(``layout``). Translation takes the kernel image's and the direct map's linear offsets when an
address is in them, and walks the page tables otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from ..formats.address import U64_MASK, u64
from ..formats.btf.queries import BTF
from ..formats.btf.types import BTFType
from ..formats.symbols import KernelSymbols
from .errors import LiveKernelError, LiveMemoryError
from .layout import KernelLayout, Monitor, control_registers, derive_layout
from .objects import _TRANSPARENT, Object
from .percpu import PerCPU
from .translate import (
    KERNEL_IMAGE_SIZE,
    START_KERNEL_MAP,
    GuestRAM,
    PageWalker,
    PhysicalMemory,
)
from .variables import TableSource, VariableTypes

if TYPE_CHECKING:
    from .monitor import Sampler
    from .sampling import Samples

PAGE = 4096
# What the monitor's checks judge in each CPU's struct rq, those the kernel has (live/checks/).
CHECK_FIELDS = ("nr_running", "clock", "scx.nr_running", "scx.local_dsq.nr")
DIRECT_MAP = {4: 0xFFFF888000000000, 5: 0xFF11000000000000}  # without CONFIG_RANDOMIZE_MEMORY
_U64 = struct.Struct("<Q")


class Guest(Protocol):
    """What a LiveKernel needs of a guest (``vm.GuestVM`` has it): its RAM and its monitor."""

    @property
    def memory(self) -> PhysicalMemory: ...
    @property
    def qmp(self) -> Monitor: ...


class LiveKernel:
    """The guest's running kernel, read from the host through its RAM (``GuestVM.kernel``), as
    drgn reads a live kernel: variables as typed Objects, per-CPU variables, raw memory::

        live = kernel_vm.kernel
        live["jiffies_64"].value_()
        rq = live.per_cpu("runqueues", 0)  # CPU 0's struct rq
        print(rq.nr_running.value_(), rq.curr.comm.string_())
        live.read(live.symbols["init_task"], 16)

    ``symbols`` are relocated by the guest's KASLR slide; every read is of the guest's memory as
    it is now (pause the guest through ``GuestVM.qmp`` to hold it still).
    """

    def __init__(
        self,
        memory: PhysicalMemory,
        symbols: KernelSymbols,
        btf: BTF,
        *,
        monitor: Monitor | None = None,
        layout: KernelLayout | None = None,
        global_types: TableSource = None,
    ) -> None:
        """``monitor`` (QEMU's, for CR3 and CR4) is needed unless ``layout`` is given.
        ``global_types``: the vmlinux's DWARF globals table (GlobalTypes), or what makes it on
        first use, for the variables whose type BTF does not hold (``variables.py``)."""
        if layout is None:
            if monitor is None:
                raise LiveKernelError(
                    "a LiveKernel needs the guest's monitor (for its page table root) or a"
                    " KernelLayout"
                )
            layout = derive_layout(memory, symbols, control_registers(monitor))
        #: The guest's physical memory.
        self.memory = memory
        #: The kernel's BTF (its vmlinux's).
        self.btf = btf
        #: Where the kernel is in the guest's memory: its KASLR slide, page tables.
        self.layout = layout
        self._phys_base = layout.phys_base
        #: The kernel's symbols, at the addresses they have in the guest (KASLR applied).
        self.symbols = symbols.relocated(u64(layout.slide - symbols.kaslr_offset))
        link_time = symbols.relocated(u64(-symbols.kaslr_offset))
        self.variable_types = VariableTypes(btf, link_time, global_types)
        self._walker = PageWalker(memory, layout.root, levels=layout.levels)
        self._ram = GuestRAM(memory)
        self._ram_top = max((r.end for r in memory.regions), default=0)
        self._real: dict[int, BTFType] = {}
        self._vars: dict[str, int] = {}
        #: Where the direct map of all physical memory starts.
        self.page_offset_base = DIRECT_MAP[layout.levels]
        if "page_offset_base" in self.symbols:  # CONFIG_RANDOMIZE_MEMORY: the kernel's choice
            self.page_offset_base = self.read_u64(self.symbols["page_offset_base"])
        cpumask = "struct cpumask"
        max_cpus = 8 * btf.sizeof(cpumask) if cpumask in btf else None  # NR_CPUS, in bits
        self._percpu = PerCPU(self.symbols, self.read, max_cpus)

    @classmethod
    def from_guest(
        cls, guest: Guest, symbols: KernelSymbols, btf: BTF, global_types: TableSource = None
    ) -> LiveKernel:
        """The running kernel of ``guest`` (a GuestVM): its RAM, and its monitor for the
        registers the layout is derived from; ``GuestVM.kernel`` makes it so."""
        return cls(guest.memory, symbols, btf, monitor=guest.qmp, global_types=global_types)

    def __repr__(self) -> str:
        return f"LiveKernel(slide={self.layout.slide:#x}, phys_base={self.layout.phys_base:#x})"

    # --- the raw layer ----------------------------------------------------------------------

    def translate(self, vaddr: int) -> int:
        """The guest physical address of kernel virtual ``vaddr``; LiveMemoryError when it is
        not mapped."""
        phys = self._linear(vaddr, 1)
        return self._walker.translate(vaddr) if phys is None else phys

    def read(self, address: int, size: int, physical: bool = False) -> bytes:
        """``size`` bytes at kernel virtual (or guest physical) ``address``; LiveMemoryError
        naming the address for any part that is not mapped or not RAM."""
        direct = address - self.page_offset_base  # the direct map first: most reads are there
        if not physical and size >= 0 and 0 <= direct <= self._ram_top - size:
            return bytes(self._ram.read(direct, size))
        if address < 0 or size < 0 or address + size > 1 << 64:
            raise LiveMemoryError(f"cannot read {size} bytes at {address:#x}", address)
        if physical:
            return bytes(self._ram.read(address, size))
        phys = self._linear(address, size)
        if phys is not None:
            return bytes(self._ram.read(phys, size))
        out, at, end = bytearray(), address, address + size
        while at < end:
            step = min(end, (at | (PAGE - 1)) + 1) - at
            try:
                out += self._ram.read(self.translate(at), step)
            except LiveMemoryError as e:
                raise LiveMemoryError(f"reading {size} bytes at {address:#x}: {e}", at) from None
            at += step
        return bytes(out)

    def view(self, address: int, size: int) -> memoryview:
        """Guest RAM at kernel virtual ``address`` itself (no copy), for a range that is in one
        page or in a linear map; LiveMemoryError otherwise."""
        phys = self._linear(address, size)
        if phys is None:
            if address // PAGE != (address + size - 1) // PAGE:
                raise LiveMemoryError(
                    f"{size} bytes at {address:#x} span pages of a page-walked mapping: read()"
                    " them",
                    address,
                )
            phys = self._walker.translate(address)
        return self._ram.read(phys, size)

    def _linear(self, address: int, size: int) -> int | None:
        """The guest physical address of ``[address, address + size)`` when all of it is in the
        direct map or the kernel image's mapping (one offset each), else None (page-walked)."""
        offset = address - self.page_offset_base
        if offset >= 0 and offset + size <= self._ram_top:
            return offset
        if address >= START_KERNEL_MAP and address + size <= START_KERNEL_MAP + KERNEL_IMAGE_SIZE:
            return (address - START_KERNEL_MAP + self._phys_base) & U64_MASK
        return None

    def read_u64(self, address: int) -> int:
        """The little-endian u64 at kernel virtual ``address``."""
        return int(_U64.unpack(self.read(address, 8))[0])

    def read_string(self, address: int, limit: int) -> bytes:
        """Bytes at ``address`` up to a NUL, read a page at a time, at most ``limit``."""
        out = bytearray()
        while len(out) < limit:
            at = address + len(out)
            chunk = self.read(at, min(PAGE - at % PAGE, limit - len(out)))
            nul = chunk.find(b"\0")
            if nul >= 0:
                return bytes(out + chunk[:nul])
            out += chunk
        return bytes(out)

    # --- typed objects ----------------------------------------------------------------------

    def real_type(self, tid: int) -> BTFType:
        """Type ``tid`` with typedefs, qualifiers and type tags stripped."""
        found = self._real.get(tid)
        if found is None:
            t, seen = self.btf.type(tid) if tid else None, 0
            while t is not None and t.kind in _TRANSPARENT and t.target and seen < 64:
                t, seen = self.btf.type(t.target), seen + 1
            if t is None or t.kind in _TRANSPARENT:
                raise LiveKernelError(f"{self.btf.type_name(tid)} resolves to no type (void)")
            found = self._real[tid] = t
        return found

    def var_type(self, name: str) -> int:
        """The BTF type id of variable ``name``: its BTF VAR's type, else its type in the
        vmlinux's DWARF, else that of a well-known one (``variables.py``); LiveKernelError saying
        what this kernel has when there is none."""
        tid = self._vars.get(name)
        if tid is None:
            tid = self._vars[name] = self.variable_types.of(name)
        return tid

    def object(
        self, name: str, type: str | int | None = None, *, filename: str | None = None
    ) -> Object:
        """Variable ``name``, typed by its own type (``var_type``), or by ``type``: a C type
        expression (``"struct rq"``, ``"struct scx_sched *"``, ``"u64[4]"``) or a type id,
        which must be as large as the variable; ``per_cpu`` for per-CPU ones. ``filename``
        picks one of several statics of that name by the file that defines it (as drgn's
        ``variable()``). ``live[name]`` is ``live.object(name)``::

            init = live.object("init_task")
            root = live.object("scx_root", "struct scx_sched *")
        """
        if name not in self.symbols:
            raise LiveKernelError(self.variable_types.missing(name))
        if filename is not None:
            index, own = self.variable_types.static(name, filename)
            symbol = self.symbols.all(name)[index]
            address, size = symbol.value, symbol.size
        else:
            try:
                address = self.symbols[name]
            except KeyError as e:  # several statics of that name
                raise LiveKernelError(self.variable_types.ambiguous(name, str(e.args[0]))) from None
            own, size = None, self.symbols.symbol(name).size
        if self.symbols.is_percpu(name):  # its symbol is an offset, or the unused template
            raise LiveKernelError(f"{name!r} is a per-CPU variable: use per_cpu({name!r}, cpu)")
        if type is not None:
            tid = self.variable_types.named(name, type, size)
        else:
            tid = self.var_type(name) if own is None else own
        return Object(self, tid, address)

    def __getitem__(self, name: str) -> Object:
        return self.object(name)

    def per_cpu_offset(self, cpu: int) -> int:
        """``__per_cpu_offset[cpu]``, a u64 (per_cpu_ptr() adds it to a ``__percpu`` pointer)."""
        return self._percpu.offset(cpu)

    def per_cpu(self, name: str, cpu: int) -> Object:
        """Per-CPU variable ``name`` of ``cpu``: ``per_cpu("runqueues", 0)`` is CPU 0's rq."""
        return Object(self, self.var_type(name), self._percpu.address(name, cpu))

    def sample(
        self,
        fields: Sequence[str],
        *,
        interval: float,
        duration: float,
        variable: str = "runqueues",
        cpus: Sequence[int] | None = None,
    ) -> Samples:
        """``fields`` of ``variable`` (``runqueues``) on every online CPU (or ``cpus``), sampled
        on a host thread every ``interval`` s for ``duration`` s while the guest runs: a
        ``monitor`` whose block only waits::

            samples = live.sample(["nr_running"], interval=0.01, duration=1.0)
        """
        from .monitor import sample

        return sample(
            lambda cpu: self.per_cpu(variable, cpu),
            self.cpus if cpus is None else cpus,
            fields,
            interval=interval,
            duration=duration,
        )

    def monitor(
        self,
        fields: Sequence[str] | None = None,
        *,
        interval: float = 0.001,
        variable: str = "runqueues",
        cpus: Sequence[int] | None = None,
        tasks: bool | None = None,
        events: bool | None = None,
    ) -> Sampler:
        """A Sampler: a context manager sampling ``fields`` of ``variable`` on every online CPU
        (or ``cpus``) every ``interval`` s on a host thread for as long as its block runs::

            with live.monitor(["nr_running", "curr.pid"], interval=0.001) as mon:
                vm.run("stress-ng --cpu 2 -t 5")
            mon.samples.column("nr_running", cpu=0)  # CPU 0's, one a tick

        Without ``fields``, the ``struct rq`` fields the checks judge (``nr_running``,
        ``clock``, and its ``scx``'s ``nr_running`` and ``local_dsq.nr``: those the kernel
        has), and the workload's tasks and sched_ext's state and event counters are watched
        too (``tasks``, ``events``), so ``mon.checks()`` can judge them all."""
        from .checks import EventWatch, TaskWatch
        from .monitor import Sampler
        from .scx import SchedExt

        chosen = self.cpus if cpus is None else tuple(cpus)
        watch = fields is None
        if fields is None:
            if variable != "runqueues":
                raise LiveKernelError(f"monitor(variable={variable!r}) needs the fields to read")
            fields = [f for f in CHECK_FIELDS if self.btf.has_member("struct rq", f)]
        task_watch = TaskWatch(self) if (watch if tasks is None else tasks) else None
        event_watch = None
        if watch if events is None else events:
            event_watch = EventWatch(SchedExt(self), chosen, every=0.1)
        return Sampler(
            lambda cpu: self.per_cpu(variable, cpu),
            chosen,
            fields,
            interval=interval,
            tasks=task_watch,
            events=event_watch,
        )

    @property
    def cpus(self) -> tuple[int, ...]:
        """The online CPUs, from the kernel's ``__cpu_online_mask``."""
        return self._percpu.mask("__cpu_online_mask")

    @property
    def percpu_zero_based(self) -> bool:
        """Whether per-CPU symbols are offsets from 0 (x86_64 up to 6.14), not addresses."""
        return self._percpu.zero_based

    @property
    def possible_cpus(self) -> tuple[int, ...]:
        """The possible CPUs, from the kernel's ``__cpu_possible_mask``."""
        return self._percpu.mask("__cpu_possible_mask")

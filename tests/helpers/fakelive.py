"""A kernel's memory laid out by a test and read through a real ``LiveKernel``: no guest, but
the library's own translation, symbols, per-CPU arithmetic and Objects.

Guest RAM is one bytearray at physical 0. Variables are in the kernel image (symbols at
``0xffffffff80000000 + phys``, phys_base 0), allocations in the direct map (``0xffff888000000000
+ phys``), per-CPU variables in a ``.data..percpu`` linked at 0 (x86_64 up to 6.14) with an area
per CPU. Physical page 0 stays zero: it is the page-table root, so any other address is not
mapped, as in a guest.
"""

from __future__ import annotations

import io
from array import array
from dataclasses import dataclass

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.symbolpack import ZERO_BASED_PERCPU, _Table, pack
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.live.kernel import LiveKernel
from pytest_ktstr_vmlinux.live.layout import KernelLayout
from pytest_ktstr_vmlinux.live.objects import Object, sizeof

DIRECT_MAP = 0xFFFF888000000000
IMAGE = 0xFFFFFFFF80000000
DATA, PERCPU = 1, 2  # section indexes of the symbols
OBJECT_GLOBAL = 0x11  # st_info: STT_OBJECT, STB_GLOBAL


@dataclass(frozen=True)
class Region:
    start: int
    end: int


class RAM:
    """Guest physical memory (PhysicalMemory): one region from 0."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.regions = (Region(0, size),)

    def read(self, phys: int, size: int) -> memoryview:
        return memoryview(self.data)[phys : phys + size]


class World:
    """``statics`` (name -> C type, or a size in bytes) and ``percpu`` variables, ``cpus`` CPUs
    all online; then ``alloc()`` more. ``live`` is the LiveKernel that reads it all."""

    def __init__(
        self,
        btf: BTF,
        statics: dict[str, str | int],
        *,
        percpu: dict[str, str] | None = None,
        cpus: int = 2,
        ram: int = 4 << 20,
    ) -> None:
        self.btf, self.ram, self._top = btf, RAM(ram), 0x1000
        symbols: list[tuple[str, int, int, int]] = []  # name, value, size, section
        where: dict[str, int] = {}
        has_masks = "struct cpumask" in btf
        standard = {"__per_cpu_offset": 8 * cpus, "nr_cpu_ids": 4}
        if has_masks:
            for mask in ("online", "possible", "present"):
                standard[f"__cpu_{mask}_mask"] = btf.sizeof("struct cpumask")
        sized = {n: t if isinstance(t, int) else btf.sizeof(t) for n, t in statics.items()}
        for name, size in [*standard.items(), *sized.items()]:
            where[name] = IMAGE + self._take(size)
            symbols.append((name, where[name], size, DATA))
        span = 0
        for name, type in (percpu or {}).items():
            size = btf.sizeof(type)
            symbols.append((name, span, size, PERCPU))
            span += (size + 63) // 64 * 64
        symbols += [("__per_cpu_start", 0, 0, PERCPU), ("__per_cpu_end", span, 0, PERCPU)]
        self.live = LiveKernel(
            self.ram, _symbols(symbols), btf, layout=KernelLayout(0, 0, root=0, levels=4)
        )
        for cpu in range(cpus):
            area = DIRECT_MAP + self._take(max(span, 8))
            self.write(where["__per_cpu_offset"] + 8 * cpu, area.to_bytes(8, "little"))
        self.write(where["nr_cpu_ids"], cpus.to_bytes(4, "little"))
        if has_masks:
            for mask in ("online", "possible", "present"):
                self.write(where[f"__cpu_{mask}_mask"], ((1 << cpus) - 1).to_bytes(8, "little"))

    def _take(self, size: int) -> int:
        """Physical room for ``size`` bytes, zeroed, 64-byte aligned."""
        at = self._top
        self._top = (at + size + 63) // 64 * 64
        if self._top > len(self.ram.data):
            raise MemoryError(f"the test's RAM ({len(self.ram.data)} bytes) is full")
        return at

    def alloc(self, type: str, count: int = 1) -> Object:
        """A zeroed ``type`` (the first of ``count``) in the direct map."""
        tid = self.btf.type(type).id
        return Object(self.live, tid, DIRECT_MAP + self._take(count * self.btf.sizeof(tid)))

    def var(self, name: str, type: str) -> Object:
        return self.live.object(name, type)

    def write(self, address: int, data: bytes) -> None:
        phys = self.live.translate(address)
        self.ram.data[phys : phys + len(data)] = data

    def set(self, obj: Object, value: int) -> None:
        """Store ``value`` in ``obj``'s bytes (an integer or a pointer; u64 arithmetic)."""
        size = sizeof(obj)
        self.write(obj.address_, (value % (1 << 8 * size)).to_bytes(size, "little"))


def _symbols(entries: list[tuple[str, int, int, int]]) -> KernelSymbols:
    names = [name.encode() for name, *_ in entries]
    offsets, at = [], 1
    for name in names:
        offsets.append(at)
        at += len(name) + 1
    table = _Table(
        array("Q", [value for _, value, _, _ in entries]),
        array("Q", [size for _, _, size, _ in entries]),
        array("I", offsets),
        array("H", [section for *_, section in entries]),
        bytes([OBJECT_GLOBAL] * len(entries)),
        b"\0" + b"\0".join(names) + b"\0",
        keep=b"\1" * len(entries),
        sections=["", ".data", ".data..percpu"],
        percpu=PERCPU,
        flags=ZERO_BASED_PERCPU,
    )
    out = io.BytesIO()
    pack(table, out, "test symbols")
    return KernelSymbols(out.getvalue(), "test symbols")

"""Benchmark: reading a running guest's runqueues from the host, ours against drgn's.

On Debian's 6.1 cloud kernel under TCG, a 4-CPU guest, in one run:

(a) one sample: ``nr_running``, ``clock`` (and ``scx.nr_running`` where the kernel has it) of
    every CPU's ``struct rq``: ``LiveKernel.per_cpu("runqueues", cpu)`` vs drgn's
    ``per_cpu(prog["runqueues"], cpu)`` on the same memory (drgn from DWARF and vmcoreinfo);
    median of 2000 samples each, interleaved in rounds. Ours as ``sample()`` reads (each field's
    bytes viewed in guest RAM once, ``Object.reader``), and with every member path looked up
    again per sample;
(b) setup: ``LiveKernel.from_guest`` with a cold artifact store (symbols and BTF built) and a
    warm one (mapped), vs drgn's program setup (``set_linux_kernel_custom`` and
    ``load_debug_info``).

Goals (issue 14): (a) ours >= 10x faster than drgn and >= 5 kHz for 4 CPUs; (b) warm <= 50 ms.

    python bench/live.py [--sysroot DIR] [--release R] [--samples N] [--check]

Needs qemu-system-x86, busybox-static and drgn; the kernel tests/kernels/fetch.sh unpacks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.live import LiveKernel
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest

SPEEDUP_GOAL = 10.0
RATE_GOAL_HZ = 5000.0
WARM_GOAL_MS = 50.0
CPUS = 4


def drgn_program(vm: GuestVM, vmlinux: Path) -> Any:
    import drgn

    phys, size = (int(v, 16) for v in vm.get("/sys/kernel/vmcoreinfo").split())
    note = bytes(vm.memory.read(phys, size))
    namesz, descsz, _ = struct.unpack_from("<III", note)
    start = 12 + (namesz + 3) // 4 * 4
    prog = drgn.Program(drgn.host_platform)
    for r in vm.memory.regions:
        prog.add_memory_segment(
            r.start,
            r.size,
            lambda a, n, off, p, r=r: bytes(vm.memory.buffer[r.offset + off : r.offset + off + n]),
            physical=True,
        )
    prog.set_linux_kernel_custom(note[start : start + descsz], True)
    prog.load_debug_info([str(vmlinux)])
    return prog


def timed(fn: Callable[[], object], count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    from drgn.helpers.linux.percpu import per_cpu

    image = args.sysroot / "boot" / f"vmlinuz-{release}"
    vmlinux = vmlinux_of(args.sysroot, release)
    with (
        tempfile.TemporaryDirectory() as tmp,
        boot_guest(
            image, store=MemoryStore(), cpus=CPUS, accel="tcg", log_dir=Path(tmp) / "logs"
        ) as vm,
    ):
        store = ArtifactStore(Path(tmp) / "store")

        def ours_setup() -> LiveKernel:
            return LiveKernel.from_guest(
                vm, KernelSymbols.from_vmlinux(vmlinux, store), BTF.from_path(vmlinux, store)
            )

        t = time.perf_counter()
        live = ours_setup()
        cold = time.perf_counter() - t
        warm = statistics.median(timed(ours_setup, 5))
        t = time.perf_counter()
        prog = drgn_program(vm, vmlinux)
        drgn_setup = time.perf_counter() - t

        scx = live.btf.has_member("struct rq", "scx.nr_running")
        fields = ["nr_running", "clock", *(["scx.nr_running"] if scx else [])]
        rqs = [live.per_cpu("runqueues", cpu) for cpu in live.cpus]
        runqueues = prog["runqueues"]

        readers = [rq.member_(f).reader_() for rq in rqs for f in fields]

        def ours() -> None:  # what sample() does for each row
            for read in readers:
                read()

        def ours_lookup() -> None:  # the same through member paths, looked up each time
            for rq in rqs:
                for f in fields:
                    rq.member_(f).value_()

        def theirs() -> None:
            for cpu in live.cpus:
                rq = per_cpu(runqueues, cpu)
                rq.nr_running.value_()
                rq.clock.value_()
                if scx:
                    rq.scx.nr_running.value_()

        ours_t: list[float] = []
        lookup_t: list[float] = []
        theirs_t: list[float] = []
        for _ in range(10):
            ours_t += timed(ours, args.samples // 10)
            lookup_t += timed(ours_lookup, args.samples // 10)
            theirs_t += timed(theirs, args.samples // 10)
    a, b = statistics.median(ours_t), statistics.median(theirs_t)
    c = statistics.median(lookup_t)
    print(f"kernel: {image}; TCG, {CPUS} CPUs; load {os.getloadavg()[0]:.1f}")
    print(f"fields: {', '.join(fields)} on {len(rqs)} CPUs; {args.samples} samples each")
    print()
    print("| figure | ours | drgn | ratio (drgn / ours) | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| (a) one sample | {a * 1e6:.0f} us ({1 / a:.0f} Hz) | {b * 1e6:.0f} us | {b / a:.1f}x"
          f" | >= {SPEEDUP_GOAL:g}x, >= {RATE_GOAL_HZ:g} Hz |")  # fmt: skip
    print(f"| (a) one sample, member paths looked up each time | {c * 1e6:.0f} us"
          f" ({1 / c:.0f} Hz) | {b * 1e6:.0f} us | {b / c:.1f}x | |")  # fmt: skip
    print(f"| (b) setup, cold store | {cold * 1e3:.0f} ms | {drgn_setup * 1e3:.0f} ms |"
          f" {drgn_setup / cold:.1f}x | |")  # fmt: skip
    print(f"| (b) setup, warm store | {warm * 1e3:.1f} ms | {drgn_setup * 1e3:.0f} ms |"
          f" {drgn_setup / warm:.1f}x | <= {WARM_GOAL_MS:g} ms |")  # fmt: skip
    goals = [
        (f"(a) >= {SPEEDUP_GOAL:g}x drgn", f"{b / a:.1f}x", b / a >= SPEEDUP_GOAL),
        (f"(a) >= {RATE_GOAL_HZ:g} Hz", f"{1 / a:.0f} Hz", 1 / a >= RATE_GOAL_HZ),
        (f"(b) warm <= {WARM_GOAL_MS:g} ms", f"{warm * 1e3:.1f} ms", warm * 1e3 <= WARM_GOAL_MS),
    ]
    print()
    for goal, value, met in goals:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'}")
    return 1 if args.check and not all(met for *_, met in goals) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: reading a running guest's runqueues from the host, ours against drgn's.

On Debian's 6.1 cloud kernel under TCG, a 4-CPU guest, in one run:

(a) one sample: ``nr_running``, ``clock`` (and ``scx.nr_running`` where the kernel has it) of
    every CPU's ``struct rq``: ``LiveKernel.per_cpu("runqueues", cpu)`` vs drgn's
    ``per_cpu(prog["runqueues"], cpu)`` on the same memory (drgn from DWARF and vmcoreinfo);
    median of 2000 samples each, interleaved in rounds. Ours as ``sample()`` reads (each field's
    bytes viewed in guest RAM once, ``Object.reader_``); and the natural way, as users and
    checks write it: ``live.per_cpu("runqueues", cpu).nr_running.value_()`` each time, ours
    and the baseline's (``--baseline``, main before the caches of issue 18, loaded from git
    beside ours and reading the same guest), against drgn written the same way;
(b) setup: ``LiveKernel.from_guest`` with a cold artifact store (symbols and BTF built) and a
    warm one (mapped), vs drgn's program setup (``set_linux_kernel_custom`` and
    ``load_debug_info``);
(c) ``live.monitor(["nr_running", "clock"], interval=0.001)`` around a blocking
    ``GuestVM.run()`` of a CPU-bound workload (a busy loop pinned to each CPU for a few
    seconds): the ticks taken per second against the 1 kHz asked for, the ticks missed, the
    longest gap between two rows of one CPU; and the same monitor around a plain sleep of the
    same length, which tells the cost of waiting in run() from the machine's own load.

Goals (issues 14, 18): (a) ours >= 10x faster than drgn and >= 5 kHz for 4 CPUs, the natural
way at least as fast as drgn; (b) warm <= 50 ms; (c) >= 0.95 of the rate asked for.

    python bench/live.py [--sysroot DIR] [--release R] [--samples N] [--baseline REF]
                         [--monitor-seconds S] [--check]

Needs qemu-system-x86, busybox-static and drgn; the kernel tests/kernels/fetch.sh unpacks; git
for the baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.live import LiveKernel
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest

SPEEDUP_GOAL = 10.0
RATE_GOAL_HZ = 5000.0
WARM_GOAL_MS = 50.0
MONITOR_GOAL = 0.95
MONITOR_INTERVAL = 0.001
CPUS = 4
BASELINE = "c71126c"  # main before issue 18 item 4: no route or per-type caches
REPO = Path(__file__).resolve().parent.parent


def load_baseline(ref: str, into: Path) -> ModuleType:
    """The package as it was at git ``ref``, extracted into ``into`` and imported as
    ``ktstr_baseline`` (its imports are relative, so it runs beside ours unchanged)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "pytest_ktstr_vmlinux"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    root = into / "pytest_ktstr_vmlinux"
    spec = importlib.util.spec_from_file_location(
        "ktstr_baseline", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ktstr_baseline"] = module
    spec.loader.exec_module(module)
    return module


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


def natural(live: Any, cpus: tuple[int, ...], scx: bool) -> Callable[[], None]:
    """One sample written as users write it: per_cpu() and member attributes each time."""

    def run() -> None:
        for cpu in cpus:
            rq = live.per_cpu("runqueues", cpu)
            rq.nr_running.value_()
            rq.clock.value_()
            if scx:
                rq.scx.nr_running.value_()

    return run


BODIES = {
    "run": "run() of the busy loops",
    "busy": "sleep, the busy loops started before",
    "idle": "sleep, the guest idle",
    "bare": "sleep, the guest idle, no field read",
    "gil": "a Python loop (holding the GIL), the guest idle",
}


def monitored(vm: GuestVM, live: LiveKernel, seconds: float, body: str) -> dict[str, float]:
    """``monitor()`` at 1 kHz around ``body``: a blocking run() of busy loops pinned to every
    CPU for ``seconds`` ("run"); a sleep as long while the same loops run, started in the
    background before ("busy": the host's CPUs as loaded, no run() waiting); a sleep while the
    guest idles ("idle"); the same with no field to read ("bare": what the host's timers and
    scheduler allow any Python thread, the ceiling of the others); a Python loop that wants
    the GIL all the time ("gil": the monitor gets it at the switch interval)."""
    loops = (
        f"for c in $(seq 0 $(($(nproc) - 1))); do taskset -c $c timeout {seconds:g}"
        " sh -c 'while :; do :; done'"
    )
    pids = []
    if body == "busy":
        pids = vm.run(f"{loops} >/dev/null 2>&1 & echo $!; done", check=True).stdout.split()
    fields = [] if body == "bare" else ["nr_running", "clock"]
    with live.monitor(fields, interval=MONITOR_INTERVAL) as mon:
        if body == "run":
            vm.run(f"{loops} & done; wait", timeout=60 + 20 * seconds)
        elif body == "gil":
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
        else:
            time.sleep(seconds)
    for pid in pids:  # the loops end at their timeout: wait for it
        vm.run(f"while [ -d /proc/{pid.decode()} ]; do sleep 0.1; done", timeout=60 + 20 * seconds)
    table = mon.samples
    return {
        "span": table.rows[-1][0],
        "ticks": table.ticks,
        "missed": table.missed_ticks,
        "max_gap": table.max_gap(),
        "busy": sum(1 for row in table.rows if fields and row[2] >= 1) / len(table.rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the baseline ('' : none)")
    parser.add_argument("--monitor-seconds", type=float, default=5.0)
    parser.add_argument("--monitor-rounds", type=int, default=2)
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
        base_live = None
        if args.baseline:
            base = load_baseline(args.baseline, Path(tmp))
            base_store = base.MemoryStore()
            base_live = base.LiveKernel.from_guest(
                vm,
                base.KernelSymbols.from_vmlinux(vmlinux, base_store),
                base.BTF.from_path(vmlinux, base_store),
            )

        scx = live.btf.has_member("struct rq", "scx.nr_running")
        fields = ["nr_running", "clock", *(["scx.nr_running"] if scx else [])]
        cpus = live.cpus
        rqs = [live.per_cpu("runqueues", cpu) for cpu in cpus]
        runqueues = prog["runqueues"]

        readers = [rq.member_(f).reader_() for rq in rqs for f in fields]

        def ours() -> None:  # what sample() and monitor() do for each tick
            for read in readers:
                read()

        def theirs() -> None:
            for cpu in cpus:
                rq = per_cpu(runqueues, cpu)
                rq.nr_running.value_()
                rq.clock.value_()
                if scx:
                    rq.scx.nr_running.value_()

        figures: dict[str, Callable[[], None]] = {
            "ours": ours,
            "natural": natural(live, cpus, scx),
            "drgn": theirs,
        }
        if base_live is not None:
            figures["baseline"] = natural(base_live, cpus, scx)
        times: dict[str, list[float]] = {name: [] for name in figures}
        for _ in range(10):
            for name, fn in figures.items():
                times[name] += timed(fn, args.samples // 10)
        monitor: dict[str, list[dict[str, float]]] = {body: [] for body in BODIES}
        for _ in range(args.monitor_rounds):  # interleaved: the host's load drifts
            for body in BODIES:
                monitor[body].append(monitored(vm, live, args.monitor_seconds, body))
    med = {name: statistics.median(t) for name, t in times.items()}
    a, b, n = med["ours"], med["drgn"], med["natural"]
    print(f"kernel: {image}; TCG, {CPUS} CPUs; load {os.getloadavg()[0]:.1f}")
    print(f"fields: {', '.join(fields)} on {len(rqs)} CPUs; {args.samples} samples each")
    print()
    print("| figure | ours | drgn | ratio (drgn / ours) | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| (a) one sample, sample()'s readers | {a * 1e6:.1f} us ({1 / a:.0f} Hz) |"
          f" {b * 1e6:.0f} us | {b / a:.1f}x |"
          f" >= {SPEEDUP_GOAL:g}x, >= {RATE_GOAL_HZ:g} Hz |")  # fmt: skip
    print(f"| (a) one sample, the natural way | {n * 1e6:.1f} us ({1 / n:.0f} Hz) |"
          f" {b * 1e6:.0f} us | {b / n:.2f}x | >= 1x |")  # fmt: skip
    if "baseline" in med:
        c = med["baseline"]
        print(f"| (a) one sample, the natural way, baseline {args.baseline} | {c * 1e6:.1f} us"
              f" ({1 / c:.0f} Hz) | {b * 1e6:.0f} us | {b / c:.2f}x | (ours is {c / n:.1f}x"
              " faster) |")  # fmt: skip
    print(f"| (b) setup, cold store | {cold * 1e3:.0f} ms | {drgn_setup * 1e3:.0f} ms |"
          f" {drgn_setup / cold:.1f}x | |")  # fmt: skip
    print(f"| (b) setup, warm store | {warm * 1e3:.1f} ms | {drgn_setup * 1e3:.0f} ms |"
          f" {drgn_setup / warm:.1f}x | <= {WARM_GOAL_MS:g} ms |")  # fmt: skip
    print()
    asked = 1 / MONITOR_INTERVAL
    print(f"(c) monitor(), {asked:g} Hz asked, a {CPUS}-CPU guest, {args.monitor_rounds} rounds"
          f" of {args.monitor_seconds:g} s each, interleaved:")  # fmt: skip
    print()
    print("| block | ticks/s | ÷ asked | ticks | missed | taken ÷ scheduled | max gap"
          " | rows with nr_running >= 1 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    taken: dict[str, float] = {}
    for body, runs in monitor.items():
        ticks = sum(m["ticks"] for m in runs)
        missed = sum(m["missed"] for m in runs)
        rate = sum(m["ticks"] - 1 for m in runs) / sum(m["span"] for m in runs)
        taken[body] = ticks / (ticks + missed)
        busy = statistics.mean(m["busy"] for m in runs)
        print(f"| {BODIES[body]} | {rate:.0f} | {rate / asked:.3f} | {ticks:.0f} | {missed:.0f} |"
              f" {taken[body]:.3f} | {max(m['max_gap'] for m in runs) * 1e3:.1f} ms |"
              f" {busy:.0%} |")  # fmt: skip
    run_ratio = taken["run"]
    print()
    print(f"monitor around run() ÷ a bare thread in the same run: {run_ratio / taken['bare']:.3f}")
    goals = [
        (f"(a) >= {SPEEDUP_GOAL:g}x drgn", f"{b / a:.1f}x", b / a >= SPEEDUP_GOAL),
        (f"(a) >= {RATE_GOAL_HZ:g} Hz", f"{1 / a:.0f} Hz", 1 / a >= RATE_GOAL_HZ),
        ("(a) natural way >= 1x drgn", f"{b / n:.2f}x", b / n >= 1.0),
        (f"(b) warm <= {WARM_GOAL_MS:g} ms", f"{warm * 1e3:.1f} ms", warm * 1e3 <= WARM_GOAL_MS),
        (
            f"(c) monitor >= {MONITOR_GOAL:g} of 1 kHz",
            f"{run_ratio:.3f}",
            run_ratio >= MONITOR_GOAL,
        ),
    ]
    print()
    for goal, value, met in goals:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'}")
    return 1 if args.check and not all(met for *_, met in goals) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what the host monitor's checks cost the workload they watch, and how fast they read.

On Debian sid's sched_ext kernel under TCG, a 4-CPU guest with scx_simple attached, in one run:

(a) ``stress-ng --cpu 4 --timeout S`` bogo-ops per second (its own real-time figure) with
    ``live.monitor()`` (the checks' defaults: every CPU each ms, tasks each 25 ms, sched_ext's
    counters each 100 ms) around it, against the same without, interleaved round by round;
    goal (issue 21): with / without >= 0.97;
(b) the samples the monitor read per second during a 10 s run: per-CPU rows and ticks, against
    the requested 1 kHz; goal >= 1 kHz of rows on 4 CPUs.

    python bench/checks.py [--rounds N] [--seconds S]

Needs qemu-system-x86, busybox-static and stress-ng; the kernel and schedulers of
tests/kernels/fetch-sid.sh and build-scx.sh.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

from testkernels import KERNELS

from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import boot_guest
from pytest_ktstr_vmlinux.vm.guest import GuestVM
from pytest_ktstr_vmlinux.vm.layout import MiB

COST_GOAL = 0.97
RATE_GOAL = 1000.0
CPUS = 4
SID = KERNELS / "debian-sid-sysroot"
SCX = KERNELS / "scx-schedulers" / "bin"
_BOGO = re.compile(r"stress-ng: metrc: \[\d+\]\s+cpu\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)")


def bogo_ops(vm: GuestVM, seconds: int) -> float:
    """stress-ng's bogo ops per second of real time, from its --metrics-brief line."""
    out = vm.run(
        f"stress-ng --cpu {CPUS} --timeout {seconds}s --metrics-brief 2>&1", timeout=600
    ).stdout.decode()
    found = _BOGO.search(out)
    if found is None:
        raise SystemExit(f"no bogo ops/s in stress-ng's output:\n{out}")
    return float(found[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not (SID / "ready").is_file() or not (SCX / "scx_simple").is_file():
        print("needs tests/kernels/fetch-sid.sh and build-scx.sh", file=sys.stderr)
        return 2
    release = (SID / "ready").read_text().strip()
    store = MemoryStore()
    kernel = resolve_kernel(release, sysroot=SID.resolve(), store=store)
    with (
        tempfile.TemporaryDirectory() as tmp,
        boot_guest(
            kernel,
            store=store,
            cpus=CPUS,
            memory=512 * MiB,
            accel="tcg",
            programs=["stress-ng"],
            scheduler=SCX / "scx_simple",
            log_dir=Path(tmp),
        ) as vm,
    ):
        live = vm.kernel
        bogo_ops(vm, 2)  # warm: the page cache, the scheduler
        watched, bare = [], []
        for _ in range(args.rounds):
            with live.monitor() as mon:
                watched.append(bogo_ops(vm, args.seconds))
            assert mon.checks().samples > 0
            bare.append(bogo_ops(vm, args.seconds))
        with live.monitor() as mon:
            vm.run("stress-ng --cpu 4 --timeout 10s >/dev/null 2>&1", timeout=600)
        table = mon.samples
        duration = table.rows[-1][0] - table.rows[0][0]
    ratios = [w / b for w, b in zip(watched, bare, strict=True)]
    cost = statistics.median(ratios)
    rows_rate = len(table.rows) / duration
    ticks_rate = table.ticks / duration
    print(f"kernel: {release}; TCG, {CPUS} CPUs, scx_simple; load {os.getloadavg()[0]:.1f}")
    print(f"{args.rounds} rounds of stress-ng --cpu {CPUS} --timeout {args.seconds}s each way")
    print()
    print("| figure | with the monitor | without | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| (a) stress-ng bogo ops/s (median) | {statistics.median(watched):.0f} |"
          f" {statistics.median(bare):.0f} | {cost:.3f} (rounds {min(ratios):.3f}-"
          f"{max(ratios):.3f}) | >= {COST_GOAL} |")  # fmt: skip
    print(f"| (b) per-CPU rows read per second, 10 s | {rows_rate:.0f} | {CPUS} x 1000 asked |"
          f" {rows_rate / (CPUS * 1000):.2f} | >= {RATE_GOAL:g} rows/s |")  # fmt: skip
    print(f"| (b) ticks per second ({table.missed_ticks} missed) | {ticks_rate:.0f} | 1000 |"
          f" {ticks_rate / 1000:.2f} | |")  # fmt: skip
    goals = [
        (f"(a) >= {COST_GOAL}", f"{cost:.3f}", cost >= COST_GOAL),
        (f"(b) >= {RATE_GOAL:g} rows/s", f"{rows_rate:.0f}", rows_rate >= RATE_GOAL),
    ]
    print()
    for goal, value, met in goals:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

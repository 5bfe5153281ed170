"""Benchmark: the live helpers' walks on a paused guest, ours against drgn's on the same memory.

On Debian's 6.1 cloud kernel under TCG, 2 CPUs, the guest paused so both read the same tasks;
median of ``--rounds`` rounds each, interleaved:

(a) every thread group leader's pid and comm: ``list_for_each_entry`` over ``init_task.tasks``,
    ours and drgn's (the same structure, the same reads);
(b) every task's pid: ``for_each_task`` (ours: the leaders' rings and each group's threads,
    bounded; drgn's: the PID IDR); (e) the same walks without reading a member;
(c) ``find_task(pid 1)``: ours and drgn's, both through init_pid_ns's IDR;
(d) ``idr_for_each`` over init_pid_ns's IDR, ours and drgn's.

Ours keeps a set of visited addresses per walk (the bound); drgn's walks keep none. Reading a
member (``t.pid.value_()``) is the Object layer's cost, which (a) and (b) include.

    python bench/helpers.py [--sysroot DIR] [--release R] [--rounds N]

Needs qemu-system-x86, busybox-static and drgn; the kernel tests/kernels/fetch.sh unpacks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from live import drgn_program, timed
from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.live import (
    find_task,
    for_each_task,
    idr_for_each,
    list_for_each_entry,
)
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import boot_guest

CPUS = 2


def _count(result: object) -> int:
    return len(result) if isinstance(result, list) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    from drgn.helpers.linux.idr import idr_for_each as drgn_idr_for_each
    from drgn.helpers.linux.list import list_for_each_entry as drgn_list_for_each_entry
    from drgn.helpers.linux.pid import find_task as drgn_find_task
    from drgn.helpers.linux.pid import for_each_task as drgn_for_each_task

    store = MemoryStore()
    kernel = resolve_kernel(release, sysroot=args.sysroot, store=store)
    with (
        tempfile.TemporaryDirectory() as tmp,
        boot_guest(kernel, store=store, cpus=CPUS, accel="tcg", log_dir=Path(tmp)) as vm,
    ):
        live = vm.kernel
        prog = drgn_program(vm, vmlinux_of(args.sysroot, release))
        init, ns = live["init_task"], live.object("init_pid_ns", "struct pid_namespace")
        their_init, their_ns = prog["init_task"], prog["init_pid_ns"]
        task = "struct task_struct"
        pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "(a) leaders' pid and comm (list_for_each_entry)": (
                lambda: [(t.pid.value_(), t.comm.string_())
                         for t in list_for_each_entry(task, init.tasks, "tasks")],
                lambda: [(t.pid.value_(), t.comm.string_()) for t in drgn_list_for_each_entry(
                    task, their_init.tasks.address_of_(), "tasks")],
            ),
            "(b) every task's pid (for_each_task)": (
                lambda: [t.pid.value_() for t in for_each_task(live)],
                lambda: [t.pid.value_() for t in drgn_for_each_task(prog)],
            ),
            "(e) for_each_task, the walk alone": (
                lambda: list(for_each_task(live)),
                lambda: list(drgn_for_each_task(prog)),
            ),
            "(c) find_task(1)": (
                lambda: find_task(live, 1),
                lambda: drgn_find_task(prog, 1),
            ),
            "(d) idr_for_each(init_pid_ns.idr)": (
                lambda: [i for i, _ in idr_for_each(ns.idr)],
                lambda: [i for i, _ in drgn_idr_for_each(their_ns.idr.address_of_())],
            ),
        }  # fmt: skip
        vm.qmp.pause()
        try:
            counts = {name: _count(ours()) for name, (ours, _) in pairs.items()}
            times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in pairs}
            for _ in range(10):
                for name, (ours, theirs) in pairs.items():
                    times[name][0].extend(timed(ours, args.rounds // 10))
                    times[name][1].extend(timed(theirs, args.rounds // 10))
        finally:
            vm.qmp.resume()
    print(f"kernel: {release}; TCG, {CPUS} CPUs, paused; load {os.getloadavg()[0]:.1f}")
    print(f"{args.rounds} rounds each, interleaved; medians")
    print()
    print("| walk | items | ours | drgn | ratio (drgn / ours) |")
    print("|---|---:|---:|---:|---:|")
    for name, (ours_t, theirs_t) in times.items():
        a, b = statistics.median(ours_t), statistics.median(theirs_t)
        print(f"| {name} | {counts[name]} | {a * 1e6:.0f} us | {b * 1e6:.0f} us | {b / a:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the sched_ext harness and programs=, on Debian sid's sched_ext kernel under TCG.

In one run:

(a) ``start_scheduler("scx_simple")`` to attached, seen from the host (the call's wall time),
    median of N starts (each followed by ``stop()``), against the guest's own view of the same
    start: from the scheduler process's start time (``/proc/PID/stat``, clock ticks) to the
    kernel's ``BPF scheduler "simple" enabled`` line (``dmesg``'s timestamp);
(b) the initramfs with ``programs=["stress-ng"]``: packing and building it cold (a new store)
    and warm (the store has it: the programs are read and hashed again), against the same
    without programs;
(c) ``boot_guest`` to a ready agent with stress-ng packed against without, initramfs warm,
    interleaved round by round. Goal (issue 20): (c) <= 1.1x.

    python bench/scx.py [--rounds N] [--starts N]

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
import time
from pathlib import Path

from testkernels import KERNELS

from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import boot_guest
from pytest_ktstr_vmlinux.vm.guest import GuestVM
from pytest_ktstr_vmlinux.vm.initramfs import (
    busybox_applets,
    find_busybox,
    guest_files,
    initramfs_path,
    merge_files,
)
from pytest_ktstr_vmlinux.vm.programs import pack_programs

BOOT_GOAL = 1.1
SID = KERNELS / "debian-sid-sysroot"
SCX = KERNELS / "scx-schedulers" / "bin"
_ENABLED = re.compile(r'^\[\s*(\d+\.\d+)\] sched_ext: BPF scheduler "simple" enabled', re.M)


def image() -> Path:
    release = (SID / "ready").read_text().strip()
    return SID / "usr/lib/modules" / release / "vmlinuz"


def inside_seconds(vm: GuestVM, pid: int, before: int) -> float:
    """The guest's own view of one start: its process start time to the kernel's enabled line
    (the first after ``before`` such lines)."""
    hz = int(vm.run("getconf CLK_TCK 2>/dev/null || echo 100").stdout.strip() or 100)
    started = int(vm.get(f"/proc/{pid}/stat").decode().rsplit(") ", 1)[1].split()[19]) / hz
    enabled = [float(t) for t in _ENABLED.findall(vm.run("dmesg", check=True).stdout.decode())]
    return enabled[before] - started


def starts(vm: GuestVM, count: int) -> tuple[list[float], list[float]]:
    host, guest = [], []
    for _ in range(count):
        before = len(_ENABLED.findall(vm.run("dmesg", check=True).stdout.decode()))
        t = time.perf_counter()
        scheduler = vm.start_scheduler(SCX / "scx_simple")
        host.append(time.perf_counter() - t)
        guest.append(inside_seconds(vm, scheduler.pid, before))
        scheduler.stop()
    return host, guest


def initramfs_seconds(programs: list[str], store: MemoryStore) -> float:
    busybox = find_busybox("x86_64")
    t = time.perf_counter()
    packed = pack_programs(programs, arch="x86_64", applets=busybox_applets(busybox))
    initramfs_path(store, busybox, merge_files(packed.files, guest_files(None)))
    return time.perf_counter() - t


def boot_seconds(store: MemoryStore, programs: list[str], logs: Path) -> float:
    t = time.perf_counter()
    with boot_guest(image(), store=store, accel="tcg", programs=programs, log_dir=logs):
        return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="boots of each kind")
    parser.add_argument("--starts", type=int, default=10, help="scheduler starts")
    args = parser.parse_args()
    if not (SID / "ready").is_file() or not (SCX / "scx_simple").is_file():
        print("needs tests/kernels/fetch-sid.sh and build-scx.sh", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-scx-") as tmp:
        logs = Path(tmp)
        store = MemoryStore()
        with boot_guest(image(), store=store, accel="tcg", log_dir=logs / "starts") as vm:
            host, guest = starts(vm, args.starts)
        cold = [initramfs_seconds(p, MemoryStore()) for p in ([], ["stress-ng"]) * 3]
        warm_store = MemoryStore()
        warm = [initramfs_seconds(p, warm_store) for p in ([], ["stress-ng"]) * 4][2:]
        plain, packed = [], []
        boot_seconds(store, ["stress-ng"], logs / "warmup")  # both initramfs in the store
        for i in range(args.rounds):
            plain.append(boot_seconds(store, [], logs / f"plain{i}"))
            packed.append(boot_seconds(store, ["stress-ng"], logs / f"packed{i}"))

    def med(values: list[float]) -> float:
        return statistics.median(values)

    cold_plain, cold_packed = med(cold[0::2]), med(cold[1::2])
    warm_plain, warm_packed = med(warm[0::2]), med(warm[1::2])
    boot_plain, boot_packed = med(plain), med(packed)
    print(f"kernel: {image()}; TCG, 2 CPUs; load {os.getloadavg()[0]:.1f}")
    print()
    print("| figure | median | baseline (median) | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    print(
        f"| (a) start_scheduler(scx_simple) to attached, host | {med(host):.3f} s |"
        f" guest's own start -> enabled {med(guest):.3f} s | {med(host) / med(guest):.2f}x | |"
    )
    print(
        f"| (b) initramfs with stress-ng, cold | {cold_packed * 1e3:.0f} ms | without"
        f" {cold_plain * 1e3:.0f} ms | {cold_packed / cold_plain:.2f}x | |"
    )
    print(
        f"| (b) initramfs with stress-ng, warm | {warm_packed * 1e3:.0f} ms | without"
        f" {warm_plain * 1e3:.0f} ms | {warm_packed / warm_plain:.2f}x | |"
    )
    print(
        f"| (c) boot with stress-ng packed | {boot_packed:.2f} s | without {boot_plain:.2f} s |"
        f" {boot_packed / boot_plain:.3f}x | <= {BOOT_GOAL}x |"
    )
    ratio = boot_packed / boot_plain
    print(
        f"\ngoal (c) <= {BOOT_GOAL}x: {ratio:.3f}x -> {'met' if ratio <= BOOT_GOAL else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

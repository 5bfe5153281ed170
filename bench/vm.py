"""Benchmark: booting and using a kernel_vm guest, against the floors the guest itself sets.

On Debian's 6.1 cloud kernel under TCG, in one run:

(a) floor: bare ``qemu-system-x86_64 -kernel IMAGE -initrd INITRD`` (same machine, CPUs, RAM and
    kernel command line) whose /init prints a line and powers off; the time to that line;
(b) ``boot_guest(...)`` to a ready agent (initramfs already in the store, as after the first
    boot of a run); ratio (b) / (a), interleaved round by round;
(c) ``run("true")``, median of 50, on the 2-CPU guest and on a 1-CPU one; its floor is what
    the agent itself does per command, a fork (``( true )`` in the guest's shell), timed inside
    the guest over 200 runs (``sh -c true``, a fork and an exec, is shown beside it);
(d) ``get`` of a 16 MiB file, median of 5; its floor is the guest reading the file itself
    (``cat FILE >/dev/null``), timed inside the guest over 10 runs.

Goals (issue 13): (b) <= 1.15x (a); (c) <= 10 ms; (d) >= 50 MB/s.

    python bench/vm.py [--sysroot DIR] [--release R] [--rounds N] [--check]

Needs qemu-system-x86 and busybox-static; the kernel tests/kernels/fetch.sh unpacks.
"""

from __future__ import annotations

import argparse
import io
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release

from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest
from pytest_ktstr_vmlinux.vm.cpio import Entry, write_archive
from pytest_ktstr_vmlinux.vm.initramfs import find_busybox
from pytest_ktstr_vmlinux.vm.qemu import find_qemu, kill, spawn

BOOT_GOAL = 1.15  # (b) / (a), medians
RUN_GOAL_MS = 10.0
GET_GOAL_MBPS = 50.0
CPUS = 2
MEMORY_MIB = 512
GET_SIZE = 16 << 20
BASE_CMDLINE = "console=ttyS0,115200 panic=-1"
FLOOR_LINE = b"ktstr-floor: up"
FLOOR_INIT = b"#!/bin/busybox sh\n/bin/busybox echo 'ktstr-floor: up'\n/bin/busybox poweroff -f\n"


def floor_initrd(path: Path) -> Path:
    out = io.BytesIO()
    write_archive(
        out,
        [
            Entry.directory("bin"),
            Entry.directory("dev"),
            Entry.char_device("dev/console", 5, 1),
            Entry.file("bin/busybox", find_busybox("x86_64").read_bytes(), 0o755),
            Entry.file("init", FLOOR_INIT, 0o755),
        ],
    )
    path.write_bytes(out.getvalue())
    return path


def floor_boot(qemu: Path, image: Path, initrd: Path) -> float:
    """Seconds from starting bare QEMU to the floor init's line on the console."""
    argv = [
        str(qemu), "-accel", "tcg", "-machine", "q35", "-m", f"{MEMORY_MIB}M",
        "-smp", str(CPUS), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-serial", "stdio", "-kernel", str(image), "-initrd", str(initrd),
        "-append", BASE_CMDLINE,
    ]  # fmt: skip
    started = time.perf_counter()
    process = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    seen = b""
    try:
        while FLOOR_LINE not in seen:
            select.select([process.stdout], [], [], 600)
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise SystemExit(f"the floor guest exited before its line:\n{seen[-2000:]!r}")
            seen = (seen + chunk)[-8192:]
        return time.perf_counter() - started
    finally:
        kill(process)
        process.stdout.close()


def guest_boot(image: Path, store: ArtifactStore, logs: Path) -> tuple[float, GuestVM]:
    started = time.perf_counter()
    vm = boot_guest(
        image, store=store, cpus=CPUS, memory=MEMORY_MIB << 20, accel="tcg", timeout=900,
        log_dir=logs,
    )  # fmt: skip
    return time.perf_counter() - started, vm


def in_guest_seconds(vm: GuestVM, body: str, count: int) -> float:
    """Seconds per run of ``body``, timed by the guest's own clock over ``count`` runs."""
    script = (
        "read s _ < /proc/uptime; i=0\n"
        f"while [ $i -lt {count} ]; do {body}; i=$((i + 1)); done\n"
        'read e _ < /proc/uptime; echo "$s $e"'
    )
    start, end = map(float, vm.run(script, check=True).stdout.split())
    return (end - start) / count


def run_true(vm: GuestVM) -> list[float]:
    vm.run("true")
    runs = []
    for _ in range(50):
        started = time.perf_counter()
        vm.run("true")
        runs.append(time.perf_counter() - started)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release", default=None)
    parser.add_argument("-r", "--rounds", type=int, default=5, help="boots of each kind")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    image = args.sysroot.resolve() / "boot" / f"vmlinuz-{release}"
    qemu = find_qemu("x86_64")
    floors: list[float] = []
    boots: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-vm-"))
    try:
        store = ArtifactStore(tmp / "store")
        initrd = floor_initrd(tmp / "floor.cpio")
        _, warm = guest_boot(image, store, tmp / "warm-up")  # builds the initramfs
        warm.shutdown()
        floor_boot(qemu, image, initrd)
        for i in range(args.rounds):
            order = ("floor", "guest") if i % 2 == 0 else ("guest", "floor")
            for kind in order:
                if kind == "floor":
                    floors.append(floor_boot(qemu, image, initrd))
                else:
                    seconds, vm = guest_boot(image, store, tmp / f"boot-{i}")
                    boots.append(seconds)
                    vm.shutdown()
        with boot_guest(
            image, store=store, cpus=1, memory=MEMORY_MIB << 20, accel="tcg", timeout=900,
            log_dir=tmp / "one-cpu",
        ) as one:  # fmt: skip
            runs_1 = run_true(one)
            run_floor_1 = in_guest_seconds(one, "( true )", 200)
        _, vm = guest_boot(image, store, tmp / "use")
        with vm:
            runs = run_true(vm)
            run_floor = in_guest_seconds(vm, "( true )", 200)
            sh_c = in_guest_seconds(vm, "sh -c true", 200)
            vm.run(f"head -c {GET_SIZE} /dev/urandom > /tmp/big", check=True)
            gets = []
            for _ in range(5):
                started = time.perf_counter()
                data = vm.get("/tmp/big")
                gets.append(time.perf_counter() - started)
                assert len(data) == GET_SIZE
            get_floor = in_guest_seconds(vm, "cat /tmp/big >/dev/null", 10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    floor, boot = statistics.median(floors), statistics.median(boots)
    run_s, get_s = statistics.median(runs), statistics.median(gets)
    run_1 = statistics.median(runs_1)
    mbps = GET_SIZE / get_s / 1e6
    print(f"kernel: {image}; TCG, {CPUS} CPUs, {MEMORY_MIB} MiB; load {os.getloadavg()[0]:.1f}")
    print(f"{args.rounds} boots of each kind, interleaved; 50 run('true') each; 5 gets of 16 MiB")
    print()
    print("| figure | median | floor (median) | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| (a) bare QEMU boot to a printed line | {floor:.2f} s | | 1.000x | the floor |")
    print(
        f"| (b) kernel_vm boot to a ready agent | {boot:.2f} s | (a) {floor:.2f} s |"
        f" {boot / floor:.3f}x | <= {BOOT_GOAL}x (a) |"
    )
    print(
        f"| (c) run('true') round trip, {CPUS} CPUs | {run_s * 1e3:.1f} ms | guest's fork"
        f" {run_floor * 1e3:.1f} ms (sh -c true {sh_c * 1e3:.1f} ms) | {run_s / run_floor:.2f}x"
        f" | <= {RUN_GOAL_MS:g} ms |"
    )
    print(
        f"| (c) run('true') round trip, 1 CPU | {run_1 * 1e3:.1f} ms | guest's fork"
        f" {run_floor_1 * 1e3:.1f} ms | {run_1 / run_floor_1:.2f}x | <= {RUN_GOAL_MS:g} ms |"
    )
    print(
        f"| (d) get of 16 MiB | {get_s * 1e3:.0f} ms ({mbps:.0f} MB/s) | guest's cat"
        f" {get_floor * 1e3:.0f} ms ({GET_SIZE / get_floor / 1e6:.0f} MB/s) |"
        f" {get_s / get_floor:.2f}x | >= {GET_GOAL_MBPS:g} MB/s |"
    )
    print()
    results = [
        (f"(b) <= {BOOT_GOAL}x (a)", f"{boot / floor:.2f}x", boot / floor <= BOOT_GOAL),
        (f"(c) <= {RUN_GOAL_MS:g} ms", f"{run_s * 1e3:.1f} ms", run_s * 1e3 <= RUN_GOAL_MS),
        (f"(c) <= {RUN_GOAL_MS:g} ms, 1 CPU", f"{run_1 * 1e3:.1f} ms", run_1 * 1e3 <= RUN_GOAL_MS),
        (f"(d) >= {GET_GOAL_MBPS:g} MB/s", f"{mbps:.0f} MB/s", mbps >= GET_GOAL_MBPS),
    ]
    for goal, value, met in results:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'}")
    return 1 if args.check and not all(met for *_, met in results) else 0


if __name__ == "__main__":
    sys.exit(main())

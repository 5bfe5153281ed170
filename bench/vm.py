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
    (``cat FILE >/dev/null``), timed inside the guest over 10 runs;
(e) for the record, no goal: ``run("echo hi")`` (output through the window, median of 50) and
    ``put`` of 16 MiB (median of 5).

Goals (issue 13, kept by issue 19 with framing, checksums and the lock): (b) <= 1.15x (a);
(c) <= 10 ms; (d) >= 50 MB/s.

    python bench/vm.py [--sysroot DIR] [--release R] [--rounds N] [--check]
    python bench/vm.py --baseline DIR [--pairs N]   # this tree vs the one checked out at DIR

``--baseline`` runs the measurement for the package of DIR (another worktree, say of main) and
for this tree's, in turn, pair after pair in one run, and prints each figure's median for both
and their ratio (this / baseline).

Needs qemu-system-x86 and busybox-static; the kernel tests/kernels/fetch.sh unpacks.
"""

from __future__ import annotations

import argparse
import io
import json
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

import pytest_ktstr_vmlinux
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


def run_echo(vm: GuestVM) -> list[float]:
    runs = []
    for _ in range(50):
        started = time.perf_counter()
        assert vm.run("echo hi").stdout == b"hi\n"
        runs.append(time.perf_counter() - started)
    return runs


def measure(image: Path, rounds: int) -> dict[str, float]:
    """Every figure, in seconds (medians), for the package this process imported."""
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
        for i in range(rounds):
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
            echoes = run_echo(vm)
            run_floor = in_guest_seconds(vm, "( true )", 200)
            sh_c = in_guest_seconds(vm, "sh -c true", 200)
            vm.run(f"head -c {GET_SIZE} /dev/urandom > /tmp/big", check=True)
            gets, puts = [], []
            for _ in range(5):
                started = time.perf_counter()
                data = vm.get("/tmp/big")
                gets.append(time.perf_counter() - started)
                assert len(data) == GET_SIZE
            for _ in range(5):
                started = time.perf_counter()
                vm.put("/tmp/put", data)
                puts.append(time.perf_counter() - started)
            get_floor = in_guest_seconds(vm, "cat /tmp/big >/dev/null", 10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    median = statistics.median
    return {
        "floor": median(floors),
        "boot": median(boots),
        "run": median(runs),
        "run_1": median(runs_1),
        "run_floor": run_floor,
        "run_floor_1": run_floor_1,
        "sh_c": sh_c,
        "echo": median(echoes),
        "get": median(gets),
        "get_floor": get_floor,
        "put": median(puts),
    }


def report(f: dict[str, float], rounds: int, image: Path) -> list[tuple[str, str, bool]]:
    mbps = GET_SIZE / f["get"] / 1e6
    print(f"kernel: {image}; TCG, {CPUS} CPUs, {MEMORY_MIB} MiB; load {os.getloadavg()[0]:.1f}")
    print(f"{rounds} boots of each kind, interleaved; 50 run('true') each; 5 gets of 16 MiB")
    print()
    print("| figure | median | floor (median) | ratio | goal |")
    print("|---|---:|---:|---:|---|")
    print(f"| (a) bare QEMU boot to a printed line | {f['floor']:.2f} s | | 1.000x | the floor |")
    print(
        f"| (b) kernel_vm boot to a ready agent | {f['boot']:.2f} s | (a) {f['floor']:.2f} s |"
        f" {f['boot'] / f['floor']:.3f}x | <= {BOOT_GOAL}x (a) |"
    )
    print(
        f"| (c) run('true') round trip, {CPUS} CPUs | {f['run'] * 1e3:.1f} ms | guest's fork"
        f" {f['run_floor'] * 1e3:.1f} ms (sh -c true {f['sh_c'] * 1e3:.1f} ms) |"
        f" {f['run'] / f['run_floor']:.2f}x | <= {RUN_GOAL_MS:g} ms |"
    )
    print(
        f"| (c) run('true') round trip, 1 CPU | {f['run_1'] * 1e3:.1f} ms | guest's fork"
        f" {f['run_floor_1'] * 1e3:.1f} ms | {f['run_1'] / f['run_floor_1']:.2f}x |"
        f" <= {RUN_GOAL_MS:g} ms |"
    )
    print(
        f"| (d) get of 16 MiB | {f['get'] * 1e3:.0f} ms ({mbps:.0f} MB/s) | guest's cat"
        f" {f['get_floor'] * 1e3:.0f} ms ({GET_SIZE / f['get_floor'] / 1e6:.0f} MB/s) |"
        f" {f['get'] / f['get_floor']:.2f}x | >= {GET_GOAL_MBPS:g} MB/s |"
    )
    print(f"| (e) run('echo hi') round trip | {f['echo'] * 1e3:.1f} ms | | | |")
    print(f"| (e) put of 16 MiB | {f['put'] * 1e3:.0f} ms | | | |")
    print()
    return goals(f)


def goals(f: dict[str, float]) -> list[tuple[str, str, bool]]:
    mbps = GET_SIZE / f["get"] / 1e6
    return [
        (
            f"(b) <= {BOOT_GOAL}x (a)",
            f"{f['boot'] / f['floor']:.2f}x",
            f["boot"] / f["floor"] <= BOOT_GOAL,
        ),
        (f"(c) <= {RUN_GOAL_MS:g} ms", f"{f['run'] * 1e3:.1f} ms", f["run"] * 1e3 <= RUN_GOAL_MS),
        (
            f"(c) <= {RUN_GOAL_MS:g} ms, 1 CPU",
            f"{f['run_1'] * 1e3:.1f} ms",
            f["run_1"] * 1e3 <= RUN_GOAL_MS,
        ),
        (f"(d) >= {GET_GOAL_MBPS:g} MB/s", f"{mbps:.0f} MB/s", mbps >= GET_GOAL_MBPS),
    ]


# The figures side by side: (key, label, unit scale, unit).
ROWS = [
    ("floor", "(a) bare QEMU boot to a printed line", 1, "s"),
    ("boot", "(b) kernel_vm boot to a ready agent", 1, "s"),
    ("run", f"(c) run('true'), {CPUS} CPUs", 1e3, "ms"),
    ("run_1", "(c) run('true'), 1 CPU", 1e3, "ms"),
    ("echo", "(e) run('echo hi')", 1e3, "ms"),
    ("get", "(d) get of 16 MiB", 1e3, "ms"),
    ("put", "(e) put of 16 MiB", 1e3, "ms"),
]


def versus(baseline: Path, pairs: int, rounds: int, args: argparse.Namespace) -> int:
    """This tree against ``baseline``, each measured in a process of its own, in turn."""
    this = Path(__file__).resolve().parents[1]
    trees = {"baseline": baseline.resolve(), "this": this}
    found: dict[str, list[dict[str, float]]] = {"baseline": [], "this": []}
    for i in range(pairs):
        for name in ("baseline", "this") if i % 2 == 0 else ("this", "baseline"):
            env = dict(os.environ, PYTHONPATH=str(trees[name]))
            argv = [sys.executable, __file__, "--json", "--rounds", str(rounds)]
            argv += ["--sysroot", str(args.sysroot)] + (
                ["--release", args.release] if args.release else []
            )
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"the {name} tree's measurement failed:\n{done.stderr[-4000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            assert figures.pop("package").startswith(str(trees[name])), (name, figures)
            found[name].append(figures)
            print(f"pair {i + 1}/{pairs}: {name} measured", file=sys.stderr)
    med = {
        name: {k: statistics.median(f[k] for f in runs) for k in runs[0]}
        for name, runs in found.items()
    }
    print(f"this tree ({this}) vs baseline ({trees['baseline']}): {pairs} pairs, in turn;")
    print(f"each measurement {rounds} boots of each kind; medians; load {os.getloadavg()[0]:.1f}")
    print()
    print("| figure | baseline | this | this / baseline |")
    print("|---|---:|---:|---:|")
    for key, label, scale, unit in ROWS:
        old, new = med["baseline"][key], med["this"][key]
        print(
            f"| {label} | {old * scale:.1f} {unit} | {new * scale:.1f} {unit} | {new / old:.2f}x |"
        )
    for key, label in (("boot", "(b) / (a)"),):
        old = med["baseline"][key] / med["baseline"]["floor"]
        new = med["this"][key] / med["this"]["floor"]
        print(f"| {label} | {old:.3f}x | {new:.3f}x | {new / old:.2f}x |")
    old_mbps = GET_SIZE / med["baseline"]["get"] / 1e6
    new_mbps = GET_SIZE / med["this"]["get"] / 1e6
    print(
        f"| (d) get throughput | {old_mbps:.0f} MB/s | {new_mbps:.0f} MB/s |"
        f" {new_mbps / old_mbps:.2f}x |"
    )
    print()
    results = goals(med["this"])
    for goal, value, met in results:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'} (this tree)")
    return 1 if args.check and not all(met for *_, met in results) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release", default=None)
    parser.add_argument("-r", "--rounds", type=int, default=5, help="boots of each kind")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--baseline", type=Path, help="a checkout to compare this tree with")
    parser.add_argument("--pairs", type=int, default=3, help="with --baseline: measurements each")
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    if args.baseline is not None:
        return versus(args.baseline, args.pairs, args.rounds, args)
    image = args.sysroot.resolve() / "boot" / f"vmlinuz-{release}"
    figures = measure(image, args.rounds)
    if args.json:
        print(json.dumps({**figures, "package": pytest_ktstr_vmlinux.__file__}))
        return 0
    results = report(figures, args.rounds, image)
    for goal, value, met in results:
        print(f"goal {goal}: {value} -> {'met' if met else 'NOT met'}")
    return 1 if args.check and not all(met for *_, met in results) else 0


if __name__ == "__main__":
    sys.exit(main())

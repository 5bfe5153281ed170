"""Benchmark: BTF of Debian's -dbg vmlinux, ours against `bpftool btf dump file` as a process.

Rows, all from one invocation, page cache warm (every input is read once before timing):

- bpftool: `bpftool btf dump file <vmlinux>` to /dev/null, the baseline: a C program that
  loads, checks and prints every type (libbpf);
- cold: ``BTF.from_path`` with a fresh MemoryStore: read the ``.BTF`` section, walk every
  type, sort the name and enumerator indexes;
- warm: ``BTF.from_path`` with a fresh ArtifactStore object on a directory already holding the
  artifact: verify and map it, wrap the arrays;
- 1,000 offsetof, first time: distinct (struct, member) pairs on a fresh warm-loaded BTF,
  so each struct's members are decoded for the first time;
- 1,000 offsetof, repeated: the same pairs again (memoized).

Each row is the median of ``--repeat`` runs; ratios are against bpftool. Goals: warm <= 20 ms,
cold <= 5x bpftool.

    python bench/btf.py [--sysroot DIR --release R] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore

CALLS = 1000


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _pairs(btf: BTF, count: int) -> list[tuple[int, str]]:
    """``count`` distinct (struct id, member name) pairs, seeded, from as many structs."""
    structs = [t for t in range(1, len(btf) + 1) if btf.type(t).kind == "STRUCT"]
    rng = random.Random(0)
    pairs: list[tuple[int, str]] = []
    for tid in rng.sample(structs, len(structs)):
        named = [m for m in btf.type(tid).members if m.name and not m.bitfield_size]
        if named and not any(m.bit_offset % 8 for m in named):
            pairs.append((tid, rng.choice(named).name))
        if len(pairs) == count:
            break
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description="BTF loads and queries vs bpftool")
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release", default=None)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not os.access(bpftool, os.X_OK):
        print("bpftool not found: `apt-get install bpftool`", file=sys.stderr)
        return 2
    vmlinux = vmlinux_of(args.sysroot, release)
    vmlinux.read_bytes()  # the page cache warm for every row alike

    def run_bpftool() -> None:
        subprocess.run(
            [bpftool, "btf", "dump", "file", str(vmlinux)], stdout=subprocess.DEVNULL, check=True
        )

    rows: dict[str, float] = {}
    rows["bpftool btf dump file (process)"] = _median_ms(run_bpftool, args.repeat)
    rows["cold: from_path, fresh MemoryStore"] = _median_ms(
        lambda: BTF.from_path(vmlinux, MemoryStore()), args.repeat
    )
    with tempfile.TemporaryDirectory() as d:
        store_dir = Path(d) / "store"
        first = BTF.from_path(vmlinux, ArtifactStore(store_dir))
        artifact = sum(p.stat().st_size for p in (store_dir / "artifacts").glob("*.art"))
        stores: list[ArtifactStore] = []

        def warm() -> BTF:
            store = ArtifactStore(store_dir)
            stores.append(store)
            return BTF.from_path(vmlinux, store)

        rows["warm: from_path, fresh ArtifactStore, filled dir"] = _median_ms(warm, args.repeat)
        assert all((s.stats.built, s.stats.reused) == (0, 1) for s in stores)
        pairs = _pairs(first, CALLS)
        fresh: list[BTF] = []

        def first_time() -> None:
            btf = warm()
            fresh.append(btf)
            t0 = time.perf_counter()
            for tid, name in pairs:
                btf.offsetof(tid, name)
            first_times.append((time.perf_counter() - t0) * 1e3)

        first_times: list[float] = []
        for _ in range(args.repeat):
            first_time()
        rows[f"{len(pairs):,} offsetof, first time (distinct structs)"] = statistics.median(
            first_times
        )
        again = fresh[-1]
        rows[f"{len(pairs):,} offsetof, repeated (memoized)"] = _median_ms(
            lambda: [again.offsetof(tid, name) for tid, name in pairs], args.repeat
        )
    base = rows["bpftool btf dump file (process)"]
    size = vmlinux.stat().st_size
    print(f"vmlinux {vmlinux} ({size / 2**20:.0f} MiB), {len(first):,} BTF types;")
    print(f"median of {args.repeat} runs; page cache warm; ratios vs the bpftool process")
    print()
    print("| run | time (ms) | vs bpftool |")
    print("|---|---:|---:|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.2f} | {ms / base:.3f}x |")
    print()
    cold = rows["cold: from_path, fresh MemoryStore"]
    warm_ms = rows["warm: from_path, fresh ArtifactStore, filled dir"]
    print(f"artifact in the store: {artifact / 2**20:.1f} MiB")
    print(f"goals: warm <= 20 ms: {'met' if warm_ms <= 20 else 'MISSED'} ({warm_ms:.1f} ms);")
    verdict = "met" if cold <= 5 * base else "MISSED"
    print(f"cold <= 5x bpftool: {verdict} ({cold / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

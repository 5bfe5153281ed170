"""Benchmark: `pytest -n 4` where every worker reads 16 MB scattered through the vmlinux.

Three runs, in this order, in one invocation:

- naive: a fixture doing ``Path.read_bytes()`` in each worker (the baseline);
- cold: ``vmlinux_bytes`` on an empty store (one worker builds the snapshot, the rest wait);
- warm: ``vmlinux_bytes`` again, the snapshot already in the store.

Each worker reports how long getting its bytes took, and its peak RSS (VmHWM). The table gives
wall time per run, the median and slowest worker's access, the largest worker's peak RSS, and
the store's disk cost. Ratios are against the naive run.

    python bench/xdist.py [--vmlinux-sysroot DIR --release R] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

CONFTEST = """
import pytest
from pathlib import Path

@pytest.fixture(scope="session")
def naive_bytes(vmlinux_path):
    return vmlinux_path.read_bytes()
"""

TEST = """
import json, os, random, time
from pathlib import Path

def _hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def test_read_scattered(request, vmlinux_path):
    fixture = os.environ["BENCH_FIXTURE"]
    t0 = time.perf_counter()
    data = request.getfixturevalue(fixture)
    access_ms = (time.perf_counter() - t0) * 1e3
    rng = random.Random(0)
    total, chunk = 0, 4096
    for _ in range((16 << 20) // chunk):
        offset = rng.randrange(0, len(data) - chunk)
        total += data[offset] + data[offset + chunk - 1]
        total += len(bytes(data[offset:offset + chunk]))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Path(os.environ["BENCH_RESULTS"], worker).write_text(
        json.dumps({"access_ms": access_ms, "hwm_mib": _hwm_mib(), "total": total})
    )
"""


def _run(
    work: Path, fixture: str, spec: list[str], store: Path, workers: int, results: Path
) -> dict[str, Any]:
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    env = {
        **os.environ,
        "BENCH_FIXTURE": fixture,
        "BENCH_RESULTS": str(results),
        "KTSTR_CACHE_DIR": str(store),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--dist=each",
            "-n",
            str(workers),
            *spec,
            str(work),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed:\n{proc.stdout}\n{proc.stderr}")
    seen = [json.loads(p.read_text()) for p in results.iterdir()]
    if len(seen) != workers or len({s["total"] for s in seen}) != 1:
        raise SystemExit(f"workers disagree or are missing: {seen}")
    access = sorted(s["access_ms"] for s in seen)
    return {
        "wall_s": wall,
        "slowest_access_ms": access[-1],
        "median_access_ms": statistics.median(access),
        "max_hwm_mib": max(s["hwm_mib"] for s in seen),
    }


def _store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "artifacts").glob("*.art"))


def main() -> int:
    parser = argparse.ArgumentParser(description="vmlinux_bytes under pytest -n N vs read_bytes")
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release", default=None)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    vmlinux = vmlinux_of(args.sysroot, release)
    spec = [f"--kernel={release}", f"--kernel-sysroot={args.sysroot}"]
    vmlinux.read_bytes()  # warm the page cache for every run alike
    with tempfile.TemporaryDirectory() as d:
        work, store, results = Path(d) / "suite", Path(d) / "store", Path(d) / "results"
        work.mkdir()
        store.mkdir(mode=0o700)
        (work / "conftest.py").write_text(CONFTEST)
        (work / "test_bench.py").write_text(TEST)
        runs = {
            "naive read_bytes()": _run(work, "naive_bytes", spec, store, args.workers, results),
            "vmlinux_bytes, cold store": _run(
                work, "vmlinux_bytes", spec, store, args.workers, results
            ),
        }
        disk = _store_bytes(store)
        runs["vmlinux_bytes, warm store"] = _run(
            work, "vmlinux_bytes", spec, store, args.workers, results
        )
    size = vmlinux.stat().st_size
    base = runs["naive read_bytes()"]
    print(f"vmlinux {vmlinux} ({size / 2**20:.0f} MiB), pytest -n {args.workers} --dist=each,")
    print("each worker reads 16 MiB scattered through it; page cache warm; ratios vs naive")
    print()
    print(
        "| run | wall (s) | median / slowest worker access (ms) | largest worker peak RSS (MiB) |"
    )
    print("|---|---:|---:|---:|")
    for name, r in runs.items():
        wall = f"{r['wall_s']:.2f} ({r['wall_s'] / base['wall_s']:.2f}x)"
        ratio = r["median_access_ms"] / base["median_access_ms"]
        access = f"{r['median_access_ms']:.2f} / {r['slowest_access_ms']:.2f} ({ratio:.4f}x)"
        rss = f"{r['max_hwm_mib']:.0f} ({r['max_hwm_mib'] / base['max_hwm_mib']:.2f}x)"
        print(f"| {name} | {wall} | {access} | {rss} |")
    print()
    copies = disk / size
    print(f"cold run: the store holds {disk / 2**20:.0f} MiB = {copies:.3f} copies of the vmlinux")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: vmlinux_bytes (the stat-checked cache) against Path.read_bytes(), in one run.

Each variant runs in a fresh interpreter so its peak RSS is its own. Both read from a warm page
cache (a warm-up read runs first), so the figures compare the code paths, not the disk.

    python bench/bytes.py [--vmlinux PATH] [--repeats N]

Default PATH: the Debian -dbg vmlinux that tests/kernels/fetch.sh unpacks (~590 MB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from testkernels import debian_vmlinux


def _default_vmlinux() -> Path | None:
    return debian_vmlinux()


def _peak_rss_mib() -> float:
    # VmHWM belongs to this address space; ru_maxrss would carry the parent's peak over exec.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(variant: str, path: Path, repeats: int) -> dict[str, float]:
    """Time the first and the repeated access; report peak RSS above the interpreter's start."""
    from pytest_ktstr_vmlinux import load_vmlinux_bytes  # imported here: its cost is not timed

    def access() -> object:
        return path.read_bytes() if variant == "read_bytes" else load_vmlinux_bytes(path)

    start_rss = _peak_rss_mib()
    t0 = time.perf_counter()
    held = access()  # a test holds what it was given
    first_ms = (time.perf_counter() - t0) * 1e3
    after_first_rss = _peak_rss_mib()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        held = access()
        samples.append((time.perf_counter() - t0) * 1e3)
    del held
    return {
        "first_ms": first_ms,
        "repeat_ms": statistics.median(samples),
        "first_rss_mib": after_first_rss - start_rss,
        "peak_rss_mib": _peak_rss_mib() - start_rss,
    }


def _run_child(variant: str, path: Path, repeats: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--vmlinux", str(path), "-r", str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vmlinux", type=Path, default=None)
    parser.add_argument("-r", "--repeats", type=int, default=0, help="default: 5 and 1000")
    parser.add_argument("--child", choices=["read_bytes", "vmlinux_bytes"])
    args = parser.parse_args()
    path = args.vmlinux or _default_vmlinux()
    if path is None or not path.is_file():
        print("no vmlinux: run `bash tests/kernels/fetch.sh` or pass --vmlinux", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(child(args.child, path, args.repeats or 5)))
        return 0

    path.read_bytes()  # warm the page cache for both variants
    base = _run_child("read_bytes", path, args.repeats or 5)
    ours = _run_child("vmlinux_bytes", path, args.repeats or 1000)
    size_mib = path.stat().st_size / 2**20
    print(f"vmlinux: {path} ({size_mib:.0f} MiB), warm page cache, median of repeated accesses")
    print()
    print("| measure | Path.read_bytes() | vmlinux_bytes | ratio (ours / baseline) |")
    print("|---|---:|---:|---:|")
    rows = [
        ("first access (ms)", "first_ms"),
        ("repeated access (ms)", "repeat_ms"),
        ("RSS after first access (MiB)", "first_rss_mib"),
        ("peak RSS after repeats (MiB)", "peak_rss_mib"),
    ]
    for label, key in rows:
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"| {label} | {base[key]:.4g} | {ours[key]:.4g} | {ratio:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what the plugin costs a suite whose tests use no kernel fixture.

Runs `pytest` on 200 and on 2000 trivial tests with the plugin and with `-p no:ktstr_vmlinux`,
alternating, and prints medians and their ratios. The plugin imports and resolves the kernel once
per session and adds no per-test hook, so the difference should not grow with the test count.

    python bench/startup.py [--rounds N] [--kernel SPEC]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As installed by pip, modules load from .pyc; some environments forbid writing them.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _time(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env=ENV,
    )
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--kernel", default=None, help="a spec to resolve (default: running)")
    args = parser.parse_args()
    extra = [f"--kernel={args.kernel}"] if args.kernel else []
    print(f"trivial tests without kernel fixtures, median of {args.rounds} runs each")
    print()
    print("| tests | without plugin (s) | with plugin (s) | difference (ms) | ratio |")
    print("|---:|---:|---:|---:|---:|")
    for count in (200, 2000):
        with tempfile.TemporaryDirectory() as d:
            cwd = Path(d)
            tests = "".join(f"def test_{i}():\n    pass\n" for i in range(count))
            (cwd / "test_plain.py").write_text(tests)
            _time(extra, cwd)  # writes the .pyc files both variants then load
            without: list[float] = []
            with_plugin: list[float] = []
            for _ in range(args.rounds):
                without.append(_time(["-p", "no:ktstr_vmlinux"], cwd))
                with_plugin.append(_time(extra, cwd))
        base, ours = statistics.median(without), statistics.median(with_plugin)
        diff_ms = (ours - base) * 1e3
        print(f"| {count} | {base:.3f} | {ours:.3f} | {diff_ms:+.0f} | {ours / base:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what the plugin costs a suite whose tests use no kernel fixture.

Generates suites of 200 and 2000 trivial tests in a temporary directory and times
``python -m pytest -q -p no:cacheprovider`` on each, with the plugin and with
``-p no:ktstr_vmlinux``, interleaved round by round (the order within a round alternates), so
both variants see the same machine. Each run is a whole process: wall time, and CPU time (user +
system, from the kernel's accounting of the reaped child), which a shared machine disturbs less.

The plugin's extra cost is taken pair by pair (plugin run minus the baseline run next to it) and
quoted as the median of those pairs, as a difference and as a ratio against the baseline. From
the two suite sizes follow a per-test cost, ``(d2000 - d200) / 1800``, and a fixed cost,
``d200 - 200 * per_test``. A plugin that does nothing per test has a per-test cost of zero
within noise: the spread of the pairs (min..max) says how much noise there is.

    python bench/startup.py [--rounds N] [--kernel SPEC] [--verbose-output]

Needs only the project's virtualenv (pytest and the plugin installed).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SIZES = (200, 2000)
# As installed by pip, modules load from .pyc; some environments forbid writing them, which
# would charge a compile of every module to every run.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


@dataclass
class Runs:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], cwd: Path, runs: Runs | None = None) -> None:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if runs is not None:
        runs.wall.append(wall)
        runs.cpu.append(cpu)


def _suite(root: Path, count: int) -> Path:
    suite = root / f"suite{count}"
    suite.mkdir()
    (suite / "test_plain.py").write_text(
        "".join(f"def test_{i}():\n    pass\n" for i in range(count))
    )
    return suite


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}"


def _spread(values: list[float]) -> str:
    return f"{_ms(min(values))} / {_ms(statistics.median(values))} / {_ms(max(values))}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="runs of each variant (15)")
    parser.add_argument("--kernel", default=None, help="a spec for the plugin runs (default: none)")
    parser.add_argument(
        "--verbose-output",
        action="store_true",
        help="run without -q: the report header (which names the kernel) is printed",
    )
    args = parser.parse_args()
    common = [] if args.verbose_output else ["-q"]
    plugin_args = common + ([f"--kernel={args.kernel}"] if args.kernel else [])
    base_args = [*common, "-p", "no:ktstr_vmlinux"]
    base: dict[int, Runs] = {n: Runs() for n in SIZES}
    plugin: dict[int, Runs] = {n: Runs() for n in SIZES}
    with tempfile.TemporaryDirectory() as d:
        suites = {n: _suite(Path(d), n) for n in SIZES}
        for n in SIZES:  # warm-up: writes the .pyc files both variants then load
            _run(plugin_args, suites[n])
            _run(base_args, suites[n])
        for i in range(args.rounds):
            for n in SIZES:
                first, second = (base, plugin) if i % 2 == 0 else (plugin, base)
                for runs in (first, second):
                    _run(base_args if runs is base else plugin_args, suites[n], runs[n])

    mode = "-q" if not args.verbose_output else "default verbosity"
    print(
        f"pytest {mode} -p no:cacheprovider on trivial tests without kernel fixtures,"
        f" {args.rounds} interleaved runs of each variant; min / median / max in ms"
    )
    print()
    print("| tests | variant | wall | cpu |")
    print("|---:|---|---:|---:|")
    for n in SIZES:
        print(f"| {n} | -p no:ktstr_vmlinux | {_spread(base[n].wall)} | {_spread(base[n].cpu)} |")
        print(f"| {n} | plugin | {_spread(plugin[n].wall)} | {_spread(plugin[n].cpu)} |")
    print()
    print("plugin minus baseline, pair by pair: min / median / max in ms, ratio = median of pairs")
    print()
    print("| tests | wall difference | wall ratio | cpu difference | cpu ratio |")
    print("|---:|---:|---:|---:|---:|")
    diff: dict[tuple[str, int], float] = {}
    for n in SIZES:
        cells = []
        for what in ("wall", "cpu"):
            b, p = getattr(base[n], what), getattr(plugin[n], what)
            pairs = [y - x for x, y in zip(b, p, strict=True)]
            ratios = [y / x for x, y in zip(b, p, strict=True)]
            diff[what, n] = statistics.median(pairs)
            cells += [_spread(pairs), f"{statistics.median(ratios):.3f}"]
        print(f"| {n} | " + " | ".join(cells) + " |")
    print()
    small, large = SIZES
    lows = {
        (what, n): min(getattr(plugin[n], what)) - min(getattr(base[n], what))
        for what in ("wall", "cpu")
        for n in SIZES
    }
    print(f"derived: per-test cost = (d{large} - d{small}) / {large - small}, fixed = d{small} -")
    print(f"{small} * per-test; from the medians of the pairs, and from the least disturbed runs")
    print("(the minimum of each variant)")
    print()
    print("| from | per-test wall (us) | fixed wall (ms) | per-test cpu (us) | fixed cpu (ms) |")
    print("|---|---:|---:|---:|---:|")
    for source, diffs in (("median of pairs", diff), ("minimums", lows)):
        cells = []
        for what in ("wall", "cpu"):
            per_test = (diffs[what, large] - diffs[what, small]) / (large - small)
            fixed = diffs[what, small] - small * per_test
            cells += [f"{per_test * 1e6:+.1f}", f"{fixed * 1e3:+.1f}"]
        print(f"| {source} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: KernelSymbols on Debian's -dbg vmlinux (~590 MB, ~118k symbols), in one run.

Baselines, measured in the same run:

- pyelftools: ``{s.name: s["st_value"] for s in symtab.iter_symbols()}`` (a dict of names);
- nm: ``nm <vmlinux>`` as a process, output to /dev/null (it sorts by name, like our build).

Ours:

- cold: ``KernelSymbols.from_vmlinux`` with a new MemoryStore (unpack, sort, pack), and with a
  new ArtifactStore in an empty directory (the same, plus writing and checksumming the file);
  each with the C sorts of the optional ``_symsort`` extension and with the Python fallback
  (``symsort.NATIVE`` switched off), whose artifacts must be byte-identical;
- warm: a fresh interpreter opening the filled ArtifactStore and loading (store lookup, checksum,
  mapping); timed from after the imports, as a pytest-xdist worker would pay it. Imports are
  shown apart;
- 100,000 lookups by name (random names, with repeats) against the pyelftools dict, and 100,000
  by address (random addresses inside random sized symbols) against ``bisect`` over a sorted list.

Variants are interleaved, round after round, so background load falls on all of them alike.
Goals: cold >= 20x faster than pyelftools and faster than nm; warm <= 20 ms (medians).

    python bench/symbols.py [--vmlinux PATH] [--rounds N] [--check]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from unittest import mock

from testkernels import debian_vmlinux

from pytest_ktstr_vmlinux.formats import symsort
from pytest_ktstr_vmlinux.formats.symbols import KIND, VERSION, KernelSymbols
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore

LOOKUPS = 100_000
PYELFTOOLS_GOAL = 20.0  # pyelftools / cold, at least
WARM_GOAL_MS = 20.0

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
t1 = time.perf_counter()
store = ArtifactStore(sys.argv[1])
ksyms = KernelSymbols.from_vmlinux(sys.argv[2], store)
address = ksyms["runqueues"]
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3,
                  "built": store.stats.built, "reused": store.stats.reused}))
"""


def _default_vmlinux() -> Path | None:
    return debian_vmlinux()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def pyelftools_dict(path: Path) -> dict[str, int]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with open(path, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert isinstance(symtab, SymbolTableSection)
        return {s.name: s["st_value"] for s in symtab.iter_symbols()}


def nm_process(path: Path) -> None:
    subprocess.run(["nm", str(path)], stdout=subprocess.DEVNULL, check=True)


@contextmanager
def python_sorts() -> Iterator[None]:
    """Cold builds in this block sort in Python, as without a C compiler at install time."""
    with mock.patch.object(symsort, "NATIVE", False):
        yield


def artifact(path: Path) -> bytes:
    """The packed symbols a cold build writes."""
    store = MemoryStore()
    KernelSymbols.from_vmlinux(path, store)
    return store.get_or_build(path, KIND, VERSION, _built_already).read_bytes()


def _built_already(path: Path, out: BinaryIO) -> None:
    raise AssertionError("built twice")


def cold_memory_store(path: Path) -> KernelSymbols:
    return KernelSymbols.from_vmlinux(path, MemoryStore())


def cold_artifact_store(path: Path) -> KernelSymbols:
    directory = Path(tempfile.mkdtemp(prefix="bench-symbols-"))
    try:
        return KernelSymbols.from_vmlinux(path, ArtifactStore(directory / "store"))
    finally:
        shutil.rmtree(directory)


def warm_child(store_dir: Path, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(store_dir), str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    if (result["built"], result["reused"]) != (0, 1):
        raise SystemExit(f"the warm child did not reuse the artifact: {result}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vmlinux", type=Path, default=None)
    parser.add_argument("-n", "--rounds", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    args = parser.parse_args()
    path = args.vmlinux or _default_vmlinux()
    if path is None or not path.is_file():
        print("no vmlinux: run `bash tests/kernels/fetch.sh` or pass --vmlinux", file=sys.stderr)
        return 2

    # Warm-up: page cache, imports (pyelftools included), and the answers cross-checked.
    baseline = pyelftools_dict(path)
    ksyms = KernelSymbols.from_vmlinux(path)
    for name in ("runqueues", "jiffies_64", "__per_cpu_offset", "start_kernel"):
        if ksyms[name] != baseline[name]:
            raise SystemExit(f"{name}: {ksyms[name]:#x} != pyelftools {baseline[name]:#x}")
    nm_process(path)
    if symsort.NATIVE:
        with python_sorts():
            fallback = artifact(path)
        if artifact(path) != fallback:
            raise SystemExit("the C and the Python sorts packed different artifacts")

    kinds = ("elftools", "nm", "mem", "disk", "mem_py", "disk_py", "warm")
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-symbols-warm-") as tmp:
        store_dir = Path(tmp) / "store"
        KernelSymbols.from_vmlinux(path, ArtifactStore(store_dir))
        for round_ in range(args.rounds):
            if round_ < 3:  # 2 s a run: three are enough for a 20x question
                samples["elftools"].append(timed(lambda: pyelftools_dict(path)))
            samples["nm"].append(timed(lambda: nm_process(path)))
            samples["mem"].append(timed(lambda: cold_memory_store(path)))
            samples["disk"].append(timed(lambda: cold_artifact_store(path)))
            with python_sorts():
                samples["mem_py"].append(timed(lambda: cold_memory_store(path)))
                samples["disk_py"].append(timed(lambda: cold_artifact_store(path)))
            child = warm_child(store_dir, path)
            samples["warm"].append(child["load_ms"])
            imports.append(child["import_ms"])

    rng = random.Random(0)
    unique = [n for n in ksyms if len(ksyms.all(n)) == 1]
    names = rng.choices(unique, k=LOOKUPS)
    sized = [s for s in map(ksyms.symbol, unique) if s.size]
    addresses = [s.value + rng.randrange(s.size) for s in rng.choices(sized, k=LOOKUPS)]
    starts = sorted(s.value for s in sized)
    fresh = KernelSymbols.from_vmlinux(path)  # no names looked up yet: nothing memoized
    by_name = (
        timed(lambda: [baseline[n] for n in names]),
        timed(lambda: [fresh[n] for n in names]),
    )
    by_address = (
        timed(lambda: [bisect_right(starts, a) for a in addresses]),
        timed(lambda: [fresh.lookup(a) for a in addresses]),
    )

    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"vmlinux: {path} ({path.stat().st_size / 2**20:.0f} MiB, {len(ksyms)} symbols kept)")
    print(f"{args.rounds} interleaved rounds (pyelftools: 3), page cache warm, medians")
    print()
    c_sorts = "C sorts" if symsort.NATIVE else "C sorts (not built: Python)"
    print(f"ours with the {c_sorts} of _symsort and with the Python fallback; ratio = base / ours")
    print()
    print(f"| measure | baseline (ms) | {c_sorts} (ms) | ratio | Python sorts (ms) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    cold = [
        ("cold load vs pyelftools iter_symbols, MemoryStore", med["elftools"], "mem"),
        ("cold load vs pyelftools iter_symbols, new ArtifactStore", med["elftools"], "disk"),
        ("cold load vs `nm` process, MemoryStore", med["nm"], "mem"),
        ("cold load vs `nm` process, new ArtifactStore", med["nm"], "disk"),
    ]
    for label, base, key in cold:
        ours, python = med[key], med[f"{key}_py"]
        print(f"| {label} | {base:.1f} | {ours:.1f} | {base / ours:.2f}x", end=" ")
        print(f"| {python:.1f} | {base / python:.2f}x |")
    rows = [  # no sorting in these: one column
        ("warm load, fresh process (after imports) vs cold, MemoryStore", med["mem"], med["warm"]),
        (f"{LOOKUPS:,} lookups by name vs dict", *by_name),
        (f"{LOOKUPS:,} lookups by address vs bare bisect", *by_address),
    ]
    for label, base, ours in rows:
        print(f"| {label} | {base:.1f} | {ours:.1f} | {base / ours:.2f}x | - | - |")
    print()
    print(f"fresh-process imports (not in warm): {statistics.median(imports):.1f} ms")
    print(f"per lookup: by name {by_name[1] / LOOKUPS * 1e3:.2f} us,", end=" ")
    print(f"by address {by_address[1] / LOOKUPS * 1e3:.2f} us")
    goals = [
        (
            f"cold >= {PYELFTOOLS_GOAL:g}x faster than pyelftools",
            med["elftools"] / med["mem"] >= 20,
        ),
        ("cold faster than nm", med["mem"] < med["nm"]),
        (f"warm <= {WARM_GOAL_MS:g} ms", med["warm"] <= WARM_GOAL_MS),
    ]
    for label, met in goals:
        print(f"goal {label}: {'met' if met else 'NOT met'}")
    return 1 if args.check and not all(met for _, met in goals) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the store's warm path, this tree against a baseline commit, side by side in one run.

The baseline (default: the commit before the full-check rule, issue 11 item 5) is checked out
with ``git archive`` into a temporary directory; each variant runs in interpreters of its own
(``PYTHONPATH`` set to its tree), round after round, the order alternating, so both see the same
machine. Each variant has its own store, built once (cold, timed too) from Debian's kernel, then
every round times, in a fresh interpreter, the operations a warm run makes:

- ``snapshot``: ``get_or_build`` of the ~590 MB vmlinux snapshot (what ``vmlinux_bytes`` maps);
- ``image payload``: ``get_or_build`` of the image's decompressed payload (53 MB);
- ``identity``: ``get_or_build_json`` of the image identity (a small artifact);
- ``export, new store``: the extracted vmlinux (``vmlinux_path``) from a store object just made,
  as the first call of a run; ``export, same store``: again from that store object;
- ``store open``: constructing ``ArtifactStore`` on the store directory.

Each figure is the median over ``--repeats`` calls within a round, then the median over rounds;
the ratio is this tree's median over the baseline's (below 1: faster).

    python bench/store_warm.py [--base COMMIT] [--rounds N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "24950dc"
OPERATIONS = (
    "snapshot",
    "image payload",
    "identity",
    "export, new store",
    "export, same store",
    "store open",
)


def child(
    store_dir: Path, vmlinux: Path, image: Path, repeats: int, cold: bool
) -> dict[str, float]:
    """In a fresh interpreter of one variant: time each operation ``repeats`` times (ms)."""
    from pytest_ktstr_vmlinux.kernel import identity
    from pytest_ktstr_vmlinux.store.disk import ArtifactStore
    from pytest_ktstr_vmlinux.store.snapshot import SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot

    def timed(run: object) -> float:
        assert callable(run)
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1e3

    def snapshot() -> None:
        ArtifactStore(store_dir).get_or_build(
            vmlinux, SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot
        )

    if cold:
        t0 = time.perf_counter()
        snapshot()
        store = ArtifactStore(store_dir)
        identity.image_identity(image, store)
        identity.extracted_vmlinux(image, store)
        return {"cold build": (time.perf_counter() - t0) * 1e3}

    store = ArtifactStore(store_dir)
    samples: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    for _ in range(repeats):
        samples["snapshot"].append(timed(snapshot))
        samples["image payload"].append(timed(lambda: identity.image_payload(image, store)))
        samples["identity"].append(timed(lambda: identity.image_identity(image, store)))
        samples["export, new store"].append(
            timed(lambda: identity.extracted_vmlinux(image, ArtifactStore(store_dir)))
        )
        samples["export, same store"].append(
            timed(lambda: identity.extracted_vmlinux(image, store))
        )
        samples["store open"].append(timed(lambda: ArtifactStore(store_dir)))
    return {op: statistics.median(values) for op, values in samples.items()}


def _run_child(
    tree: Path, store_dir: Path, vmlinux: Path, image: Path, repeats: int, cold: bool
) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT / 'bench'}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = [
        sys.executable,
        __file__,
        "--child",
        str(store_dir),
        str(vmlinux),
        str(image),
        str(repeats),
    ]
    out = subprocess.run(
        [*args, *(["--cold"] if cold else [])],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    ).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def _checkout(commit: str, into: Path) -> Path:
    """The tree of ``commit`` (its package and nothing else that matters) in ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "pytest_ktstr_vmlinux"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"baseline commit ({DEFAULT_BASE})")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", nargs=4, metavar=("STORE", "VMLINUX", "IMAGE", "REPEATS"))
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    if args.child:
        store, vmlinux, image, repeats = args.child
        print(json.dumps(child(Path(store), Path(vmlinux), Path(image), int(repeats), args.cold)))
        return 0

    release = debian_release()
    if release is None:
        print(MISSING, file=sys.stderr)
        return 1
    vmlinux = vmlinux_of(DEBIAN_SYSROOT, release).resolve()
    image = (DEBIAN_SYSROOT / "boot" / f"vmlinuz-{release}").resolve()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        base = _checkout(args.base, Path(tempfile.mkdtemp(dir=work, prefix="base-")))
        variants = {f"base {args.base}": base, "this tree": ROOT}
        stores = {name: work / f"store-{i}" for i, name in enumerate(variants)}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in variants}
        for name, tree in variants.items():
            cold = _run_child(tree, stores[name], vmlinux, image, 1, cold=True)
            results[name]["cold build"] = [cold["cold build"]]
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                got = _run_child(
                    variants[name], stores[name], vmlinux, image, args.repeats, cold=False
                )
                for op, ms in got.items():
                    results[name].setdefault(op, []).append(ms)
    old, new = variants
    print(f"store warm path, {args.rounds} rounds x {args.repeats} calls; medians in ms")
    print(f"{'operation':<20} {old:>14} {new:>14} {'ratio':>8}")
    for op in ("cold build", *OPERATIONS):
        a, b = statistics.median(results[old][op]), statistics.median(results[new][op])
        print(f"{op:<20} {a:>14.3f} {b:>14.3f} {b / a:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

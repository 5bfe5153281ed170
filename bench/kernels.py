"""Benchmark: ``--kernel debian:bookworm`` fetched cold and resolved warm, against doing it by hand.

Cold, side by side in one run, the order alternating round by round, each on empty directories:

- ours: ``fetch_kernel`` of ``debian:bookworm`` on an empty store, in a fresh interpreter:
  private apt lists for bookworm (with -updates and -security), ``apt-get download`` of the
  image and -dbg packages, the files a kernel needs unpacked as they download, the tree
  published; then, timed apart, ``resolve_kernel`` of it (the image identified, the vmlinux
  found and paired by build-id), which the person doing it by hand pays in the test run;
- by hand, as tests/kernels/fetch.sh and the README did it: the same private apt lists
  (``apt-get update``), ``apt-cache depends`` for the release, ``apt-get download`` of the same
  packages, ``dpkg-deb -x`` of each into a sysroot. Its time without the ``apt-get update`` is
  printed too: a host whose own lists already have the suite skips it.

Warm: ``resolve_kernel`` on the filled store in fresh interpreters: online when the suite was
asked less than five minutes ago (no request), online when it asks the archive whether the suite
moved (one small request per suite, through apt-helper), and offline. The figure is the call
alone, to a resolved kernel; the interpreter's imports are printed apart.

Both download from the Debian archive: each cold round moves about 310 MB twice.

    python bench/kernels.py [--rounds N] [--warm N]
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

SPEC = "debian:bookworm"
REF = "debian:bookworm/cloud-amd64"
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pytest_ktstr_vmlinux.kernel.fetch.fetch import FetchOptions, fetch_kernel
from pytest_ktstr_vmlinux.kernel.fetch.specs import parse_fetch_spec
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
store_dir, spec, mode = sys.argv[1:]
store = ArtifactStore(store_dir)
t1 = time.perf_counter()
status = None
if mode == "cold":  # the fetch alone, then resolving what it fetched
    status = fetch_kernel(parse_fetch_spec(spec, spec), spec, store).status
t2 = time.perf_counter()
kernel = resolve_kernel(spec, store=store, fetch=FetchOptions(offline=mode != "online"))
t3 = time.perf_counter()
assert kernel.vmlinux is not None and kernel.paired == "build-id", kernel.report.format()
print(json.dumps({"imports": t1 - t0, "fetch": t2 - t1, "resolve": t3 - t2,
                  "status": status or kernel.fetched.status, "release": kernel.release}))
"""


def ours(store: Path, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(store), SPEC, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def by_hand(work: Path) -> dict[str, float]:
    """The steps a person takes, each a program run to its end; seconds per step."""
    lists, cache, root = work / "lists", work / "cache", work / "root"
    for path in (lists / "partial", cache / "archives" / "partial", root):
        path.mkdir(parents=True)
    sources = work / "sources.list"
    sources.write_text(
        "".join(
            f"deb [signed-by={KEYRING}] http://deb.debian.org/"
            f"{'debian-security' if s.endswith('-security') else 'debian'} {s} main\n"
            for s in SUITES
        )
    )
    apt = [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={lists}",
        "-oDir::State::status=/dev/null",
        f"-oDir::Cache={cache}",
    ]
    if os.geteuid() == 0:
        apt.append("-oAPT::Sandbox::User=root")
    steps: dict[str, float] = {}

    def step(name: str, argv: list[str], cwd: Path | None = None) -> str:
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True)
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - t0
        return done.stdout

    step("apt-get update", ["apt-get", *apt, "-q", "update"])
    depends = step("apt-cache depends", ["apt-cache", *apt, "depends", "linux-image-cloud-amd64"])
    image = next(
        word
        for line in depends.splitlines()
        for word in line.split()[1:2]
        if line.strip().startswith("Depends:") and word.startswith("linux-image-")
    )
    debs = work / "debs"
    debs.mkdir()
    step("apt-get download", ["apt-get", *apt, "-q", "download", image, f"{image}-dbg"], debs)
    for deb in sorted(debs.glob("*.deb")):
        step("dpkg-deb -x", ["dpkg-deb", "-x", str(deb), str(root)])
    return steps


def warm(store: Path, mode: str, runs: int, *, asks: bool = False) -> tuple[float, float]:
    """Median seconds of the resolve call, and of the imports before it; ``asks``: each run
    finds the suite last asked long ago, so it asks the archive."""
    results = []
    for _ in range(runs):
        if asks:
            from pytest_ktstr_vmlinux.store.disk import ArtifactStore

            trees = ArtifactStore(store).trees
            ref = trees.read_ref(REF)
            assert ref is not None
            trees.write_ref(REF, ref["tree"], {**ref["data"], "checked_ns": 0})
        results.append(ours(store, mode))
    resolve = statistics.median(float(r["resolve"]) for r in results)
    imports = statistics.median(float(r["imports"]) for r in results)
    return resolve, imports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="cold rounds (default 2)")
    parser.add_argument("--warm", type=int, default=7, help="warm runs (default 7)")
    args = parser.parse_args()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        sys.exit("bench/kernels.py needs apt-get and dpkg-deb: run it on a Debian or Ubuntu host")
    cold_ours: list[float] = []
    cold_resolve: list[float] = []
    cold_hand: list[float] = []
    hand_no_update: list[float] = []
    hand_steps: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as tmp:
        keep = Path(tmp) / "kept-store"
        for n in range(args.rounds):
            for who in ("ours", "hand") if n % 2 == 0 else ("hand", "ours"):
                work = Path(tmp) / f"{who}-{n}"
                t0 = time.perf_counter()
                if who == "ours":
                    result = ours(work, "cold")
                    cold_ours.append(time.perf_counter() - t0 - result["resolve"])
                    cold_resolve.append(result["resolve"])
                    assert result["status"] == "downloaded", result
                    print(
                        f"round {n}: ours {cold_ours[-1]:.1f} s, then resolved in"
                        f" {result['resolve']:.1f} s ({result['release']})"
                    )
                    if not keep.exists():
                        work.rename(keep)
                else:
                    steps = by_hand(work)
                    cold_hand.append(time.perf_counter() - t0)
                    hand_no_update.append(cold_hand[-1] - steps["apt-get update"])
                    hand_steps.append(steps)
                    shown = ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
                    print(f"round {n}: by hand {cold_hand[-1]:.1f} s ({shown})")
                shutil.rmtree(work, ignore_errors=True)
        recent, imports = warm(keep, "online", args.warm)
        online, _ = warm(keep, "online", args.warm, asks=True)
        offline, _ = warm(keep, "offline", args.warm)
    ours_cold = statistics.median(cold_ours)
    hand = statistics.median(cold_hand)
    hand_lists = statistics.median(hand_no_update)
    print()
    print(f"| {SPEC} | ours | by hand | ratio |")
    print("|---|---|---|---|")
    resolved = statistics.median(cold_resolve)
    # Each round's pair ran back to back: the median of their ratios follows the machine's drift.
    paired = statistics.median(o / h for o, h in zip(cold_ours, cold_hand, strict=True))
    print(
        f"| cold, fetched | {ours_cold:.1f} s | {hand:.1f} s | {ours_cold / hand:.2f}x"
        f" (paired by round: {paired:.2f}x) |"
    )
    print(
        f"| cold, by hand without apt-get update | {ours_cold:.1f} s | {hand_lists:.1f} s |"
        f" {ours_cold / hand_lists:.2f}x |"
    )
    print(f"| then resolved and paired (either way) | {resolved:.1f} s | | |")
    print(f"| warm, online, asked < 5 min ago | {recent * 1e3:.1f} ms | | |")
    print(f"| warm, online, asks whether bookworm moved | {online * 1e3:.1f} ms | | |")
    print(f"| warm, offline | {offline * 1e3:.1f} ms | | |")
    print(f"| (imports before the call, either way) | {imports * 1e3:.0f} ms | | |")
    print(f"\n{args.rounds} cold rounds (medians), {args.warm} warm runs (medians)")


if __name__ == "__main__":
    main()

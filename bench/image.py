"""Benchmark: identifying and pairing a distro bzImage, against bare payload decompression.

On Debian's amd64 cloud bzImage (an LZ4 legacy payload), in one run:

- bare: the compressed payload sliced from the file by hand and decoded with
  ``pytest_ktstr_vmlinux.formats.decompress.decompress(blob, "lz4")`` (the baseline: the least any
  identification must do);
- cold: ``resolve_kernel(image, sysroot=..., store=...)`` with a new ArtifactStore in an empty
  directory: decompress and identify the image, find and identify the -dbg vmlinux, pair them;
- warm: the same call with another new ArtifactStore object on the now filled directory, as a
  second pytest-xdist worker or the next run would make it.

Each store's construction is inside the timing. A warm-up resolve runs first, so imports and the
page cache are warm for every variant. Goals: cold <= 1.2x bare, warm <= 5 ms (medians).

    python bench/image.py [--sysroot DIR] [--release R] [--repeats N] [--check]

Default DIR: the sysroot tests/kernels/fetch.sh unpacks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from testkernels import DEBIAN_SYSROOT, MISSING, debian_release, vmlinux_of

from pytest_ktstr_vmlinux.formats.decompress import decompress, detect_compression
from pytest_ktstr_vmlinux.kernel.identity import PAIRED_BUILD_ID
from pytest_ktstr_vmlinux.kernel.resolve import Kernel, resolve_kernel
from pytest_ktstr_vmlinux.store.disk import ArtifactStore

COLD_GOAL = 1.2  # cold / bare, medians
WARM_GOAL_MS = 5.0

# x86 boot protocol (Documentation/arch/x86/boot.rst), read here by hand, not through image.py.
SETUP_SECTS = 0x1F1
PAYLOAD_OFFSET = 0x248
PAYLOAD_LENGTH = 0x24C


def payload_blob(image: bytes) -> bytes:
    """The compressed payload of a bzImage: (setup_sects + 1) * 512 + payload_offset."""
    setup_sects = image[SETUP_SECTS] or 4
    offset = int.from_bytes(image[PAYLOAD_OFFSET : PAYLOAD_OFFSET + 4], "little")
    length = int.from_bytes(image[PAYLOAD_LENGTH : PAYLOAD_LENGTH + 4], "little")
    start = (setup_sects + 1) * 512 + offset
    return image[start : start + length]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def resolve(image: Path, sysroot: Path, store_dir: Path) -> Kernel:
    return resolve_kernel(str(image), sysroot=sysroot, store=ArtifactStore(store_dir))


def check(kernel: Kernel, vmlinux: Path) -> None:
    """Each timed call must have done the whole job: the -dbg vmlinux, paired by build-id."""
    if kernel.vmlinux != vmlinux or kernel.paired != PAIRED_BUILD_ID:
        raise SystemExit(
            "resolve_kernel did not pair the image:"
            f" vmlinux={kernel.vmlinux} paired={kernel.paired}"
        )


def cold_then_warm(
    image: Path, sysroot: Path, store_dir: Path, vmlinux: Path
) -> tuple[float, float]:
    """(cold ms, warm ms): resolve with a store on an empty directory, then with another."""
    kernels: list[Kernel] = []
    cold = timed(lambda: kernels.append(resolve(image, sysroot, store_dir)))
    warm = timed(lambda: kernels.append(resolve(image, sysroot, store_dir)))
    for kernel in kernels:
        check(kernel, vmlinux)
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sysroot", type=Path, default=DEBIAN_SYSROOT)
    parser.add_argument("--release", default=None)
    parser.add_argument("-r", "--repeats", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    args = parser.parse_args()
    release = debian_release(args.sysroot, args.release)
    if release is None:
        print(MISSING, file=sys.stderr)
        return 2
    sysroot = args.sysroot.resolve()
    image = sysroot / "boot" / f"vmlinuz-{release}"
    vmlinux = vmlinux_of(sysroot, release)
    data = image.read_bytes()
    blob = payload_blob(data)
    compression = detect_compression(blob)
    if compression is None:
        print(f"{image}: the bzImage payload has no known compression magic", file=sys.stderr)
        return 2
    payload_size = len(decompress(blob, compression))
    n = args.repeats

    bare = [timed(lambda: decompress(blob, compression)) for _ in range(n)]
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        check(resolve(image, sysroot, Path(tmp) / "warm-up"), vmlinux)
        for i in range(n):
            cold_ms, warm_ms = cold_then_warm(image, sysroot, Path(tmp) / f"store-{i}", vmlinux)
            cold.append(cold_ms)
            warm.append(warm_ms)

    base = statistics.median(bare)
    print(
        f"image: {image} ({len(data) / 2**20:.1f} MiB; {compression} payload"
        f" {len(blob) / 2**20:.1f} MiB -> {payload_size / 2**20:.1f} MiB)"
    )
    print(f"vmlinux: {vmlinux} ({vmlinux.stat().st_size / 2**20:.0f} MiB)")
    print(f"{n} runs each, page cache warm; ratios are medians against bare decompression")
    print()
    print("| measure | best (ms) | median (ms) | ratio (median / bare median) |")
    print("|---|---:|---:|---:|")
    rows = [
        (f"bare {compression} decompression (baseline)", bare),
        ("cold identify + pair (new store)", cold),
        ("warm identify + pair (new store object, filled dir)", warm),
    ]
    for label, samples in rows:
        median = statistics.median(samples)
        print(f"| {label} | {min(samples):.2f} | {median:.2f} | {median / base:.3f}x |")
    print()
    cold_ratio = statistics.median(cold) / base
    warm_median = statistics.median(warm)
    cold_met = cold_ratio <= COLD_GOAL
    warm_met = warm_median <= WARM_GOAL_MS
    print(f"goal cold <= {COLD_GOAL}x bare: {cold_ratio:.2f}x -> {_verdict(cold_met)}")
    print(f"goal warm <= {WARM_GOAL_MS:g} ms: {warm_median:.2f} ms -> {_verdict(warm_met)}")
    return 1 if args.check and not (cold_met and warm_met) else 0


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: peak memory of decompression and of ELF header tables, before and after, one run.

The code before is the package as it was at ``--base`` (default: the parent of this change's
first commit), extracted with ``git archive`` into a temporary directory; the code after is this
checkout. Every case runs in a fresh interpreter whose high-water mark is reset once its input is
read (``/proc/self/clear_refs``), so a figure is what decoding or reading cost at its peak:

- per codec, a bomb (2x the cap of zeros, refused at the cap) and an output of exactly the cap,
  as ratios of the peak to the cap (a 64 MiB cap by default). Goal, after: the cap plus 32 MiB at
  most (lz4's two 8 MiB block buffers and the heap malloc keeps; the bound the tests assert);
- the Debian bzImage's real payload through ``read_payload``, as a ratio to the payload's size;
- an ELF claiming 5 million section headers with 100,000 present, and one with ``--sections``
  headers that all fit: peak MiB and seconds per reader, and the seconds as new / old.

    python bench/memory.py [--cap MIB] [--sections N] [--base COMMIT] [--only gzip,...]
"""

from __future__ import annotations

import argparse
import bz2
import json
import lzma
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from testkernels import DEBIAN_SYSROOT, debian_release

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
CODECS = ("gzip", "bzip2", "lzma", "xz", "lz4", "zstd", "lzo")
GOAL_MIB = 32  # peak - cap after, for every codec's bomb and exact-cap output
CHANGE = "issue 11, item 14"

PRELUDE = """
import json, sys, time


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise SystemExit("no " + key)


def measured(fn):
    start = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    t0 = time.perf_counter()
    result = fn()
    return result, _status("VmHWM:") - start, time.perf_counter() - t0
"""

DECODE = """
import importlib
from pytest_ktstr_vmlinux.formats.decompress import OutputTooLarge, decompress
fmt, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
for module in ("lz4.block", "backports.zstd", "lzo"):
    try:
        importlib.import_module(module)
    except ImportError:
        pass
data = open(path, "rb").read()


def run():
    try:
        return len(decompress(data, fmt, max_output=cap))
    except OutputTooLarge:
        return -1


length, growth, seconds = measured(run)
print(json.dumps({"length": length, "growth": growth, "seconds": seconds}))
"""

PAYLOAD = """
from pytest_ktstr_vmlinux.formats.image import read_payload
import lz4.block, backports.zstd
path = sys.argv[1]
payload, growth, seconds = measured(lambda: read_payload(path)[2])
print(json.dumps({"length": len(payload), "growth": growth, "seconds": seconds}))
"""

ELF = """
from pytest_ktstr_vmlinux.formats.btf.format import read_btf_bytes
from pytest_ktstr_vmlinux.formats.elfidentity import read_elf_identity
from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
path, reader = sys.argv[1], sys.argv[2]


def run():
    try:
        if reader == "identity":
            with open(path, "rb") as f:
                read_elf_identity(f, what=path)
        elif reader == "symbols":
            KernelSymbols.from_vmlinux(path)
        else:
            read_btf_bytes(path)
    except KernelArtifactError as e:
        return str(e)
    return ""


error, growth, seconds = measured(run)
print(json.dumps({"error": error, "growth": growth, "seconds": seconds}))
"""


def run_child(code: str, package: Path, cwd: Path, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(package))
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"child failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def base_commit(given: str | None) -> str:
    """``given``, else the parent of the oldest commit whose message names this change."""
    if given:
        return given
    git = ["git", "-C", str(ROOT)]
    log = [*git, "log", "--format=%H", "--grep", CHANGE, "--", "pytest_ktstr_vmlinux"]
    out = subprocess.run(log, capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise SystemExit(f"no commit names {CHANGE!r}: pass --base")
    return f"{out[-1]}^"


def extract(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "pytest_ktstr_vmlinux"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def _zeros(total: int) -> Iterator[bytes]:
    piece = bytes(MIB)
    for _ in range(total // MIB):
        yield piece


def bomb(fmt: str, total: int) -> bytes:
    """``total`` zeros in ``fmt``, compressed a MiB at a time with fast settings."""
    if fmt == "lz4":
        import lz4.block  # type: ignore[import-untyped]

        block: bytes = lz4.block.compress(bytes(8 * MIB), store_size=False)
        return b"\x02\x21\x4c\x18" + (struct.pack("<I", len(block)) + block) * (total // (8 * MIB))
    if fmt == "lzo":
        return lzop_zeros(total)
    if fmt == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        z = zstd.ZstdCompressor(level=1)
        return b"".join([*(z.compress(p) for p in _zeros(total)), z.flush()])
    c: zlib._Compress | bz2.BZ2Compressor | lzma.LZMACompressor
    if fmt == "gzip":
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
    elif fmt == "bzip2":
        c = bz2.BZ2Compressor(1)
    else:
        c = lzma.LZMACompressor(format=lzma.FORMAT_XZ if fmt == "xz" else lzma.FORMAT_ALONE)
    return b"".join([*(c.compress(p) for p in _zeros(total)), c.flush()])


def lzop_zeros(total: int) -> bytes:
    """An lzop container (lzop 1.04's layout, no checksums) of 256 KiB blocks of zeros."""
    import lzo  # type: ignore[import-not-found]

    block = 256 << 10
    header = struct.pack(">HHHBBIIII", 0x1040, 0x20A0, 0x0940, 1, 1, 0x03000000, 0, 0, 0)
    header += b"\x00"  # no file name
    out = bytearray(b"\x89LZO\x00\r\n\x1a\n" + header + struct.pack(">I", zlib.adler32(header)))
    packed: bytes = lzo.compress(bytes(block), 1, False)
    out += (struct.pack(">II", block, len(packed)) + packed) * (total // block)
    return bytes(out + struct.pack(">I", 0))


def elf_with_sections(present: int, claimed: int) -> bytes:
    """A tiny ELF64 with ``present`` SHT_NULL section headers claiming ``claimed`` (extended
    numbering: e_shnum 0, the count in section 0's sh_size)."""
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, 64, 0, 64, 56, 0, 64, 0, 0)
    zero = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, claimed, 0, 0, 0, 0)
    return ehdr + zero + bytes(64 * (present - 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cap", type=int, default=64, help="MiB (default 64)")
    parser.add_argument("--sections", type=int, default=300_000)
    parser.add_argument("--base", help="the commit to compare with (default: before the change)")
    parser.add_argument("--only", help="codecs, comma-separated (default: all)")
    args = parser.parse_args()
    cap = args.cap * MIB
    codecs = args.only.split(",") if args.only else list(CODECS)
    base = base_commit(args.base)
    met = True
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        old = extract(base, work / "old")
        packages = {"old": old, "new": ROOT}
        print(f"old: the package at {base}; new: {ROOT}")
        print(f"peak RSS growth / cap; cap {args.cap} MiB; the bomb is {2 * args.cap} MiB of zeros")
        print()
        print("| codec | case | old | new | new / old |")
        print("|---|---|---:|---:|---:|")
        for fmt in codecs:
            path = work / f"zeros.{fmt}"
            path.write_bytes(bomb(fmt, 2 * cap))
            exact = work / f"exact.{fmt}"
            exact.write_bytes(bomb(fmt, cap))
            for case, source in (("bomb", path), ("exactly the cap", exact)):
                ratios = {}
                for name, package in packages.items():
                    got = run_child(DECODE, package, work, fmt, str(source), str(cap))
                    if got["length"] != (-1 if case == "bomb" else cap):
                        raise SystemExit(f"{name} {fmt} {case}: {got}")
                    ratios[name] = got["growth"] / cap
                    if name == "new":
                        met &= got["growth"] <= cap + GOAL_MIB * MIB
                print(
                    f"| {fmt} | {case} | {ratios['old']:.2f} | {ratios['new']:.2f} |"
                    f" {ratios['new'] / ratios['old']:.2f} |"
                )
        release = debian_release()
        if release:
            image = DEBIAN_SYSROOT / "boot" / f"vmlinuz-{release}"
            decoded = {n: run_child(PAYLOAD, p, work, str(image)) for n, p in packages.items()}
            size = decoded["new"]["length"]
            r = {n: d["growth"] / size for n, d in decoded.items()}
            print(
                f"| Debian bzImage payload ({size / MIB:.0f} MiB) | peak / payload |"
                f" {r['old']:.2f} | {r['new']:.2f} | {r['new'] / r['old']:.2f} |"
            )
        print()
        print("| ELF | reader | old MiB | new MiB | old s | new s | new / old s |")
        print("|---|---|---:|---:|---:|---:|---:|")
        elfs = {
            "5,000,000 claimed, 100,000 present": elf_with_sections(100_000, 5_000_000),
            f"{args.sections:,} present": elf_with_sections(args.sections, args.sections),
        }
        for label, data in elfs.items():
            path = work / "vmlinux"
            path.write_bytes(data)
            for reader in ("identity", "symbols", "btf"):
                read = {n: run_child(ELF, p, work, str(path), reader) for n, p in packages.items()}
                mib = {n: r["growth"] / MIB for n, r in read.items()}
                sec = {n: r["seconds"] for n, r in read.items()}
                print(
                    f"| {label} | {reader} | {mib['old']:.1f} | {mib['new']:.1f} |"
                    f" {sec['old']:.2f} | {sec['new']:.2f} | {sec['new'] / sec['old']:.3f} |"
                )
    print()
    verdict = "met" if met else "MISSED"
    print(f"goal: new peak <= cap + {GOAL_MIB} MiB for every codec and case: {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""What decompression costs in memory, measured in a real process: the cap plus a constant.

Every codec gets 64 MiB of zeros, compressed small, decoded in a fresh interpreter twice: against
a 32 MiB cap (a bomb: refused at the cap) and against a 64 MiB cap (exactly the output: returned).
Before the output grew in place, both cost twice the output (each library call built the whole
output in blocks, then copied them into one bytes object; the chunks were joined into a second
copy at the end). The bound asserted is the output plus:

- the decoder's own window, for these streams (the test made them, so it knows): lz4 decodes each
  8 MiB block into a buffer of its own and copies it into a bytes object (16 MiB); the others
  hold 1 MiB at most (gzip's 32 KiB window, bzip2 -1's 100 kB block, xz/lzma preset 0's 256 KiB
  dictionary, zstd level 1's 512 KiB window, two 256 KiB lzop blocks);
- SLACK: the output chunks in flight (decompress asks 1 MiB of a call, which holds it twice),
  the heap glibc's malloc keeps after free() below its trim threshold (twice the largest block
  freed: 16 MiB after lz4's), and the one copy malloc makes when the growing output leaves the
  heap for a mapping of its own (lz4: at 24 MiB; mappings then grow by mremap, uncopied).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import lz4.block  # type: ignore[import-untyped]
import pytest

from pytest_ktstr_vmlinux.formats.decompress import COMPRESSIONS, CorruptStream, decompress
from tests.helpers.fakes import LZ4_BLOCK, LZ4_MAGIC
from tests.helpers.lzop import lzop
from tests.helpers.rss import MIB, run_measured

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

WHAT = "/boot/vmlinuz-6.1.0-test payload"
OUTPUT = 64 * MIB
WINDOW = {fmt: 16 * MIB if fmt == "lz4" else MIB for fmt in COMPRESSIONS}
SLACK = 16 * MIB


def _zeros(total: int) -> Iterator[bytes]:
    piece = bytes(MIB)
    for _ in range(total // MIB):
        yield piece


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


def _streamed(compressor: _Compressor) -> bytes:
    return b"".join([*(compressor.compress(z) for z in _zeros(OUTPUT)), compressor.flush()])


def _bomb(fmt: str) -> bytes:
    """OUTPUT zeros in ``fmt``, made a MiB at a time (as a kernel build pipes its vmlinux)."""
    if fmt == "gzip":
        return _streamed(zlib.compressobj(1, zlib.DEFLATED, 31))
    if fmt == "bzip2":
        return _streamed(bz2.BZ2Compressor(1))
    if fmt == "xz":
        return _streamed(lzma.LZMACompressor(preset=0))
    if fmt == "lzma":
        return _streamed(lzma.LZMACompressor(format=lzma.FORMAT_ALONE, preset=0))
    if fmt == "zstd":
        return _streamed(zstd.ZstdCompressor(level=1))
    if fmt == "lz4":  # one compressed 8 MiB block of zeros, repeated: `lz4 -l` blocks
        block: bytes = lz4.block.compress(bytes(LZ4_BLOCK), store_size=False)
        return LZ4_MAGIC + (struct.pack("<I", len(block)) + block) * (OUTPUT // LZ4_BLOCK)
    pytest.importorskip("lzo", reason="python-lzo (the [lzo] extra) is not installed")
    return lzop(bytes(OUTPUT))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    paths = {}
    for fmt in COMPRESSIONS:
        paths[fmt] = root / f"zeros.{fmt}"
        paths[fmt].write_bytes(_bomb(fmt))
    return paths


CHILD = """
import importlib, sys
from pytest_ktstr_vmlinux.formats.decompress import OutputTooLarge, decompress
fmt, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
for module in ("lz4.block", "backports.zstd", "lzo"):  # imported before the measure starts
    try:
        importlib.import_module(module)
    except ImportError:
        pass
data = open(path, "rb").read()


def run():
    try:
        out = decompress(data, fmt, max_output=cap, what="bomb")
    except OutputTooLarge as e:
        return {"refused": str(e), "produced": e.produced}
    return {"length": len(out), "zeros": out.count(0)}


result, growth = measured(run)
report(growth=growth, **result)
"""


def _decode(fmt: str, path: Path, cap: int) -> dict[str, object]:
    return run_measured(CHILD, fmt, str(path), str(cap), cwd=path.parent)


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_a_bomb_costs_the_cap_plus_the_decoders_window(fmt: str, bombs: dict[str, Path]) -> None:
    cap = OUTPUT // 2
    result = _decode(fmt, bombs[fmt], cap)
    assert "refused" in result, result
    assert str(result["refused"]).startswith(f"bomb: {fmt} output would pass {cap} bytes")
    growth = result["growth"]
    assert isinstance(growth, int)
    assert growth <= cap + WINDOW[fmt] + SLACK, f"{growth / MIB:.1f} MiB for a {cap >> 20} MiB cap"


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_an_output_of_exactly_the_cap_is_held_once(fmt: str, bombs: dict[str, Path]) -> None:
    result = _decode(fmt, bombs[fmt], OUTPUT)
    assert result.get("length") == result.get("zeros") == OUTPUT, result
    growth = result["growth"]
    assert isinstance(growth, int)
    # The output itself (OUTPUT) is in the figure: the returned bytearray is alive at the peak.
    assert growth <= OUTPUT + WINDOW[fmt] + SLACK, f"{growth / MIB:.1f} MiB for {OUTPUT >> 20} MiB"


def _lzma_alone(dict_size: int) -> bytes:
    """A small .lzma stream whose header asks for ``dict_size`` (a bigger dictionary than the
    data needs is valid: liblzma still allocates all of it)."""
    stream = bytearray(lzma.compress(b"kernel" * 1000, format=lzma.FORMAT_ALONE, preset=0))
    struct.pack_into("<I", stream, 1, dict_size)  # props byte, then the u32 dictionary size
    return bytes(stream)


def test_the_kernels_128_mib_xz_dictionary_is_accepted() -> None:
    """The kernel's scripts/xz_wrap.sh asks for a 128 MiB dictionary (32 MiB in older kernels)."""
    assert decompress(_lzma_alone(128 * MIB), "lzma") == b"kernel" * 1000


def test_a_dictionary_bigger_than_any_kernels_is_refused() -> None:
    """liblzma fills the dictionary as it decodes: a forged 512 MiB one would cost that much on
    top of the cap. Anything past the kernel's 128 MiB is refused up front, and says so."""
    with pytest.raises(CorruptStream, match=r"dictionary needs more than \d+ bytes") as info:
        decompress(_lzma_alone(256 * MIB), "lzma", what=WHAT)
    assert str(info.value).startswith(f"{WHAT}: lzma stream corrupt")
    assert "at most 128 MiB" in str(info.value)

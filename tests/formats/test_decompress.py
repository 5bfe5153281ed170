"""decompress.py against real streams: round trips, trailing bytes, damage, bombs, fuzzing.

Streams come from the real libraries and, where installed, the real tools the kernel build uses
(gzip, bzip2, xz, zstd, `lz4 -l`, lzop). LZ4 legacy frames and lzop containers are also built
here from lz4.block / python-lzo, exactly as `lz4 -l` and lzop lay them out, and checked against
those tools when they exist, so the formats are covered even where the tools are not.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import lzma
import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lz4.block  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.decompress import (
    COMPRESSIONS,
    DEFAULT_MAX_OUTPUT,
    CorruptStream,
    DecompressError,
    MissingDecompressor,
    OutputTooLarge,
    TruncatedStream,
    decompress,
    detect_compression,
)
from tests.helpers.fakes import LZ4_BLOCK, LZ4_MAGIC, lz4_legacy
from tests.helpers.fuzz import mutations
from tests.helpers.lzop import (
    F_ADLER32_C,
    F_ADLER32_D,
    F_CRC32_C,
    F_CRC32_D,
    F_H_CRC32,
    LZOP_MAGIC,
    lzo_module,
    lzop,
)

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

WHAT = "/boot/vmlinuz-6.1.0-test payload"
MAGICS = {
    "gzip": b"\x1f\x8b",
    "bzip2": b"BZh",
    "lzma": b"\x5d\x00\x00",
    "xz": b"\xfd\x37\x7a\x58\x5a\x00",
    "lz4": LZ4_MAGIC,
    "zstd": b"\x28\xb5\x2f\xfd",
    "lzo": LZOP_MAGIC,
}


def _real_elf_bytes(limit: int) -> bytes:
    """Real machine code and data: the interpreter, libpython, extension modules."""
    candidates = [Path(os.path.realpath(sys.executable))]
    libdir, ldlibrary = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlibrary:
        candidates.append(Path(libdir) / ldlibrary)
    candidates += sorted(Path(sysconfig.get_paths()["platstdlib"], "lib-dynload").glob("*.so"))
    candidates += sorted(Path(lz4.block.__file__).parent.glob("*.so"))
    out = bytearray()
    for path in candidates:
        try:
            blob = path.read_bytes()
        except OSError:
            continue
        if blob.startswith(b"\x7fELF"):
            out += blob[: limit - len(out)]
        if len(out) >= limit:
            break
    assert out.startswith(b"\x7fELF"), "no ELF file found to build test payloads from"
    return bytes(out)


ELF = _real_elf_bytes(3 << 20)
_rng = random.Random(20240601)
# A few MiB shaped like a kernel: code, incompressible bits, zero-filled .bss-like runs.
PAYLOAD = ELF[: 2 << 20] + _rng.randbytes(384 << 10) + bytes(256 << 10) + ELF[2 << 20 :]
# Past 8 MiB, so `lz4 -l` writes several blocks.
BIG = PAYLOAD + bytes(1 << 20) + PAYLOAD[::-1] + PAYLOAD[: 1 << 20]
SMALL = ELF[:12288] + _rng.randbytes(1024) + bytes(3072)


def _zstd(data: bytes, level: int = 10) -> bytes:
    options: dict[int, int] = {zstd.CompressionParameter.compression_level: level}
    options[zstd.CompressionParameter.checksum_flag] = 1
    return zstd.compress(data, options=options)


# The standard library and the bundled packages: always present.
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, compresslevel=6, mtime=0),
    "bzip2": lambda d: bz2.compress(d, 9),
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE, preset=1),
    "xz": lambda d: lzma.compress(
        d,
        check=lzma.CHECK_CRC32,
        filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 1}],
    ),
    "lz4": lz4_legacy,
    "zstd": _zstd,
    "lzo": lambda d: lzop(d),
}
# The command lines of the kernel's scripts/Makefile.lib, with faster levels where it helps.
CLIS: dict[str, list[str]] = {
    "gzip": ["gzip", "-n", "-9", "-c"],
    "bzip2": ["bzip2", "-9", "-c"],
    "lzma": ["xz", "--format=lzma", "-1", "-c"],
    "xz": ["xz", "--check=crc32", "--x86", "--lzma2=preset=1,dict=32MiB", "-c"],
    "lz4": ["lz4", "-l", "-9", "-c"],
    "zstd": ["zstd", "-12", "-c"],
    "lzo": ["lzop", "-9", "-c"],
}
# Formats with a checksum over the data: any flipped byte must be caught.
CHECKED = ("gzip", "bzip2", "xz", "zstd", "lzo")
_streams: dict[tuple[str, str], bytes] = {}


def stream(fmt: str, which: str = "lib") -> bytes:
    """PAYLOAD compressed by the library (``lib``) or the CLI (``cli``), made once per session."""
    key = (fmt, which)
    if key not in _streams:
        if which == "lib":
            _streams[key] = COMPRESSORS[fmt](PAYLOAD)
        else:
            _streams[key] = _run_cli(CLIS[fmt], PAYLOAD)
    return _streams[key]


# The Debian packages that provide the tools, for the skip messages.
_DEB = {
    "gzip": "gzip",
    "bzip2": "bzip2",
    "xz": "xz-utils",
    "lz4": "lz4",
    "zstd": "zstd",
    "lzop": "lzop",
}


def _run_cli(argv: list[str], data: bytes) -> bytes:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (Debian package: {_DEB[argv[0]]})")
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def _small(fmt: str) -> bytes:
    if fmt == "lzo" and importlib.util.find_spec("lzo") is None:
        return lzop(SMALL, compress=False)
    return COMPRESSORS[fmt](SMALL)


SEEDS = {fmt: _small(fmt) for fmt in COMPRESSIONS}


def _needs(fmt: str) -> None:
    if fmt == "lzo":
        lzo_module()


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_round_trip_library_streams(fmt: str) -> None:
    _needs(fmt)
    data = stream(fmt)
    assert detect_compression(data) == fmt
    assert decompress(data, fmt, what=WHAT) == PAYLOAD
    # A mapped image arrives as a memoryview; a bytearray-backed one must do as well.
    assert decompress(memoryview(data), fmt) == PAYLOAD
    assert decompress(memoryview(bytearray(data)), fmt) == PAYLOAD


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_round_trip_tool_streams(fmt: str) -> None:
    """What the kernel build's own tools write decodes to the original bytes."""
    _needs(fmt)
    data = stream(fmt, "cli")
    assert detect_compression(data) == fmt
    assert decompress(data, fmt, what=WHAT) == PAYLOAD


def test_memoryview_of_a_mapped_file(tmp_path: Path) -> None:
    import mmap

    path = tmp_path / "vmlinuz.payload"
    path.write_bytes(b"padding!" + stream("zstd") + b"\0" * 100)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        view = memoryview(m)
        try:
            assert decompress(view[8:], "zstd") == PAYLOAD
        finally:
            view.release()


@pytest.mark.parametrize("fmt", [f for f in COMPRESSIONS if f != "lz4"])
@pytest.mark.parametrize(
    "tail",
    [
        b"",
        struct.pack("<I", len(PAYLOAD)),
        struct.pack("<I", len(PAYLOAD)) + bytes(508),
        b"\xff" * 7,
    ],
    ids=["none", "size", "size+padding", "garbage"],
)
def test_trailing_bytes_after_the_stream_are_ignored(fmt: str, tail: bytes) -> None:
    _needs(fmt)
    assert decompress(stream(fmt) + tail, fmt) == PAYLOAD


def test_lzma_header_with_a_known_size() -> None:
    """Old lzma tools write the uncompressed size into the header instead of "unknown"."""
    unknown = lzma.compress(SMALL, format=lzma.FORMAT_ALONE, preset=0)
    assert unknown[5:13] == b"\xff" * 8
    sized = unknown[:5] + struct.pack("<Q", len(SMALL)) + unknown[13:]
    assert decompress(sized + struct.pack("<I", len(SMALL)) + b"pad", "lzma") == SMALL


# --- lz4 legacy frames ------------------------------------------------------------------------


def test_lz4_legacy_frame_has_one_block_per_8_mib() -> None:
    frame = lz4_legacy(BIG)
    sizes = _lz4_block_sizes(frame)
    assert len(sizes) == -(-len(BIG) // LZ4_BLOCK) >= 2
    assert decompress(frame, "lz4", what=WHAT) == BIG


def test_lz4_legacy_frames_match_the_lz4_tool() -> None:
    """`lz4 -l -9` and our builder agree: same block layout, and each decodes the other's."""
    ours = lz4_legacy(BIG)
    theirs = _run_cli(CLIS["lz4"], BIG)
    assert theirs[:4] == LZ4_MAGIC
    assert len(_lz4_block_sizes(theirs)) == len(_lz4_block_sizes(ours))
    assert decompress(theirs, "lz4") == BIG
    assert decompress(theirs + struct.pack("<I", len(BIG)), "lz4") == BIG
    decoded = subprocess.run(["lz4", "-d", "-c"], input=ours, capture_output=True, check=True)
    assert decoded.stdout == BIG


def _lz4_block_sizes(frame: bytes) -> list[int]:
    sizes, pos = [], 4
    while pos + 4 <= len(frame):
        (size,) = struct.unpack_from("<I", frame, pos)
        sizes.append(size)
        pos += 4 + size
    assert pos == len(frame)
    return sizes


def test_lz4_trailing_u32_size_is_ignored() -> None:
    frame = stream("lz4")
    assert decompress(frame + struct.pack("<I", len(PAYLOAD)), "lz4") == PAYLOAD
    assert decompress(frame + b"\xde\xad\xbe\xef", "lz4") == PAYLOAD


@pytest.mark.parametrize("tail", [b"\x01", b"\x01\x02", b"\x01\x02\x03"])
def test_lz4_a_partial_block_size_is_truncation(tail: bytes) -> None:
    with pytest.raises(TruncatedStream, match=f"^{WHAT}: lz4 stream truncated after"):
        decompress(stream("lz4") + tail, "lz4", what=WHAT)


def test_lz4_bytes_after_the_trailing_size_are_not_a_block() -> None:
    with pytest.raises(DecompressError, match=WHAT):
        decompress(stream("lz4") + struct.pack("<I", len(PAYLOAD)) + b"\xff", "lz4", what=WHAT)


def test_lz4_concatenated_legacy_frames() -> None:
    """The kernel decoder skips a repeated magic and carries on: so do we."""
    a, b = PAYLOAD[: 1 << 20], PAYLOAD[1 << 20 :]
    joined = lz4_legacy(a) + lz4_legacy(b) + struct.pack("<I", len(PAYLOAD))
    assert decompress(joined, "lz4") == PAYLOAD
    assert decompress(LZ4_MAGIC + lz4_legacy(SMALL), "lz4") == SMALL
    if shutil.which("lz4"):
        tool = _run_cli(CLIS["lz4"], a) + _run_cli(CLIS["lz4"], b)
        assert decompress(tool, "lz4") == PAYLOAD


@pytest.mark.parametrize(
    "frame",
    [LZ4_MAGIC, LZ4_MAGIC + struct.pack("<I", 0), LZ4_MAGIC + LZ4_MAGIC],
    ids=["magic", "magic+size", "magic+magic"],
)
def test_lz4_frame_without_blocks_is_truncated(frame: bytes) -> None:
    with pytest.raises(TruncatedStream, match=WHAT):
        decompress(frame, "lz4", what=WHAT)


@pytest.mark.parametrize("size", [0, (8 << 20) + (1 << 20), 0xFFFFFFFF])
def test_lz4_impossible_block_size_is_corruption(size: int) -> None:
    frame = LZ4_MAGIC + struct.pack("<I", size) + bytes(64)
    with pytest.raises(CorruptStream, match=f"^{WHAT}: lz4 stream corrupt at byte 4"):
        decompress(frame, "lz4", what=WHAT)


def test_lz4_block_that_does_not_decode_is_corruption() -> None:
    block = lz4.block.compress(SMALL, store_size=False)
    bad = LZ4_MAGIC + struct.pack("<I", len(block) - 1) + block[:-1]
    with pytest.raises(CorruptStream, match="in the block at byte 4"):
        decompress(bad, "lz4", what=WHAT)


# --- lzop containers --------------------------------------------------------------------------


LZOP_VARIANTS: dict[str, dict[str, Any]] = {
    "adler32": {},
    "crc32": {"flags": F_CRC32_D | F_CRC32_C},
    "both": {"flags": F_ADLER32_D | F_ADLER32_C | F_CRC32_D | F_CRC32_C},
    "no-checksums": {"flags": 0},
    "data-checksum-only": {"flags": F_ADLER32_D},
    "crc32-header": {"flags": F_ADLER32_D | F_H_CRC32},
    "level9": {"level": 9},
    "filter-0": {"filter_": 0},
    "extra-field": {"extra": b"some extra header field"},
    "pre-0940": {"version": 0x0930},
    "stored": {"compress": False},
    "small-blocks": {"block_size": 64 << 10},
}


@pytest.mark.parametrize("variant", LZOP_VARIANTS)
def test_lzop_container_variants(variant: str) -> None:
    lzo_module()
    # The random tail does not compress: lzop stores those blocks.
    data = PAYLOAD[: 1 << 20] + random.Random(variant).randbytes(300 << 10)
    container = lzop(data, **LZOP_VARIANTS[variant])
    assert detect_compression(container) == "lzo"
    assert decompress(container + b"\0\0\0\x10garbage", "lzo", what=WHAT) == data


@pytest.mark.parametrize(
    "variant", ["adler32", "crc32", "both", "level9", "stored", "crc32-header", "pre-0940"]
)
def test_lzop_tool_reads_our_containers(variant: str) -> None:
    """Our builder is the real format: lzop itself accepts it (the checksums included)."""
    lzo_module()
    if shutil.which("lzop") is None:
        pytest.skip("lzop is not installed (Debian package: lzop)")
    data = SMALL * 40
    container = lzop(data, **LZOP_VARIANTS[variant])
    out = subprocess.run(["lzop", "-d", "-c"], input=container, capture_output=True, check=True)
    assert out.stdout == data


def test_lzop_default_level_from_the_tool() -> None:
    lzo_module()
    data = _run_cli(["lzop", "-c"], PAYLOAD)
    assert decompress(data + bytes(16), "lzo") == PAYLOAD


def test_lzop_blocks_bigger_than_the_kernel_decodes_are_refused() -> None:
    """The kernel's unlzo refuses blocks over 256 KiB (LZO_BLOCK_SIZE), and so does the decoder:
    a bigger block would cost that much memory twice (compressed, then decoded)."""
    lzo_module()
    data = PAYLOAD[: 1 << 20]
    assert decompress(lzop(data, block_size=256 << 10), "lzo") == data
    with pytest.raises(CorruptStream, match=r"a block of 262145 bytes; .* 262144 at most") as info:
        decompress(lzop(data, block_size=(256 << 10) + 1), "lzo", what=WHAT)
    assert str(info.value).startswith(WHAT)


def test_lzop_filters_are_refused() -> None:
    """A filter changes the decoded bytes; kernel payloads never use one."""
    lzo_module()
    with pytest.raises(CorruptStream, match="lzop filter 1"):
        decompress(lzop(SMALL, filter_=1, compress=False), "lzo", what=WHAT)


def test_lzop_methods_other_than_lzo1x_are_refused() -> None:
    lzo_module()
    container = bytearray(lzop(SMALL, compress=False))
    container[9 + 6] = 0x2B  # the method byte, after three u16 versions: NRV2B
    # The header checksum covers version .. name: 9 + 2+2+2+1+1 + 4*4 + name length byte + name.
    end = 9 + 24 + 1 + container[9 + 24]
    struct.pack_into(">I", container, end, zlib.adler32(container[9:end]))
    with pytest.raises(CorruptStream, match="method 43 is not LZO1X"):
        decompress(bytes(container), "lzo", what=WHAT)


def test_lzop_header_checksum_is_checked() -> None:
    lzo_module()
    container = bytearray(lzop(SMALL, compress=False))
    container[20] ^= 0x40  # a mode bit
    with pytest.raises(CorruptStream, match="header checksum"):
        decompress(bytes(container), "lzo", what=WHAT)


@pytest.mark.parametrize("flags", [F_ADLER32_D | F_ADLER32_C, F_CRC32_D | F_CRC32_C, F_ADLER32_D])
def test_lzop_block_checksums_are_checked(flags: int) -> None:
    lzo_module()
    container = bytearray(lzop(SMALL * 4, flags=flags))
    container[-40] ^= 0x01
    with pytest.raises(CorruptStream, match=r"checksum|in the block"):
        decompress(bytes(container), "lzo", what=WHAT)


def test_lzop_missing_end_marker_is_truncation() -> None:
    lzo_module()
    container = lzop(SMALL, compress=False)
    with pytest.raises(TruncatedStream, match=WHAT):
        decompress(container[:-4], "lzo", what=WHAT)


# --- damage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_truncated_streams(fmt: str) -> None:
    _needs(fmt)
    data = stream(fmt)
    for cut in (1, 3, 7, 30, 1000, len(data) // 3, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedStream) as info:
            decompress(memoryview(data)[:cut], fmt, what=WHAT)
        msg = str(info.value)
        assert msg.startswith(f"{WHAT}: {fmt} stream truncated after {cut} bytes of input"), msg
        assert "the image is incomplete" in msg


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_empty_input(fmt: str) -> None:
    _needs(fmt)
    with pytest.raises(TruncatedStream, match=f"^{WHAT}: {fmt} stream truncated after 0 bytes"):
        decompress(b"", fmt, what=WHAT)


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_flipped_bytes(fmt: str) -> None:
    """Checked formats always notice; lzma and lz4 carry no checksum, so they may decode
    garbage, but never raise anything other than a DecompressError."""
    _needs(fmt)
    data = stream(fmt)
    rng = random.Random(fmt)
    for _ in range(6):
        damaged = bytearray(data)
        at = rng.randrange(64, len(data) - 64)
        damaged[at] ^= 1 << rng.randrange(8)
        try:
            out = decompress(bytes(damaged), fmt, what=WHAT)
        except DecompressError as exc:
            assert str(exc).startswith(f"{WHAT}: {fmt} stream")
            if fmt in CHECKED:
                assert isinstance(exc, CorruptStream), exc
        else:
            assert fmt not in CHECKED, f"{fmt}: flipped byte at {at} went unnoticed"
            assert out != PAYLOAD


@pytest.mark.parametrize("fmt", [f for f in COMPRESSIONS if f != "lzma"])
def test_a_stream_of_another_format_is_refused(fmt: str) -> None:
    other = stream("gzip") if fmt != "gzip" else stream("zstd")
    with pytest.raises(CorruptStream, match=f"^{WHAT}: not a {fmt} stream: it starts with"):
        decompress(other, fmt, what=WHAT)


def test_lzma_refuses_garbage() -> None:
    with pytest.raises(DecompressError, match=f"^{WHAT}: lzma stream"):
        decompress(stream("gzip"), "lzma", what=WHAT)


def test_unknown_compression_name() -> None:
    with pytest.raises(DecompressError, match=r"unknown compression 'lz5'.*gzip, bzip2") as info:
        decompress(stream("gzip"), "lz5", what=WHAT)
    assert type(info.value) is DecompressError
    assert str(info.value).startswith(WHAT)


def test_negative_cap_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="max_output"):
        decompress(stream("gzip"), "gzip", max_output=-1)


# --- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_output_exactly_at_the_cap_passes_one_byte_more_fails(fmt: str) -> None:
    _needs(fmt)
    data = SEEDS[fmt]
    assert decompress(data, fmt, max_output=len(SMALL)) == SMALL
    with pytest.raises(OutputTooLarge, match="raise max_output") as info:
        decompress(data, fmt, max_output=len(SMALL) - 1, what=WHAT)
    assert info.value.produced <= len(SMALL) - 1


BOMB = 64 << 20
CAP = 1 << 20


def _bomb(fmt: str) -> bytes:
    zeros = bytes(BOMB)
    if fmt == "lzo":
        return lzop(zeros)  # 256 blocks of 256 KiB
    if fmt == "lzma":
        return lzma.compress(zeros, format=lzma.FORMAT_ALONE, preset=0)
    if fmt == "xz":
        return lzma.compress(zeros, preset=0)
    if fmt == "gzip":
        return gzip.compress(zeros, compresslevel=1, mtime=0)
    if fmt == "bzip2":
        return bz2.compress(zeros, 1)
    return COMPRESSORS[fmt](zeros)


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_bombs_stop_at_the_cap(fmt: str) -> None:
    """64 MiB of zeros, compressed small, against a 1 MiB cap: stopped near the cap, and the
    Python heap never held anything like the full output."""
    _needs(fmt)
    bomb = _bomb(fmt)
    assert len(bomb) < BOMB // 100
    tracemalloc.start()
    try:
        with pytest.raises(OutputTooLarge) as info:
            decompress(bomb, fmt, max_output=CAP, what=WHAT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert msg.startswith(f"{WHAT}: {fmt} output would pass {CAP} bytes")
    assert f"a decompression bomb or a payload bigger than the cap ({CAP} bytes)" in msg
    assert info.value.produced <= CAP
    # lz4.block decodes a whole 8 MiB block (buffer, then bytes) whatever the cap; everything
    # else stays near the cap. The full output would be 64 MiB.
    assert peak < (2 * LZ4_BLOCK + 4 * CAP if fmt == "lz4" else 4 * CAP), peak


def test_lzo_block_declaring_more_than_the_cap_is_refused_before_decoding() -> None:
    lzo_module()
    block = 256 << 10
    container = lzop(bytes(block), block_size=block)
    tracemalloc.start()
    try:
        with pytest.raises(OutputTooLarge) as info:
            decompress(container, "lzo", max_output=block // 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.produced == 0
    assert peak < block // 2


def test_default_cap() -> None:
    assert DEFAULT_MAX_OUTPUT == 1 << 30


# --- missing decoders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "module", "fix"),
    [
        ("lzo", "lzo", "pip install 'pytest-ktstr-vmlinux[lzo]'"),
        ("lz4", "lz4.block", "pip install 'lz4"),
        ("zstd", "backports.zstd", "backports.zstd"),
    ],
)
def test_missing_decoder_names_the_package(fmt: str, module: str, fix: str, tmp_path: Path) -> None:
    if fmt == "zstd" and sys.version_info >= (3, 14):
        pytest.skip("zstd is in the standard library from Python 3.14")
    path = tmp_path / "payload"
    path.write_bytes(SEEDS[fmt])
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules[{module!r}] = None
        from pytest_ktstr_vmlinux.formats.decompress import MissingDecompressor, decompress
        try:
            decompress(open({str(path)!r}, "rb").read(), {fmt!r}, what="the image")
        except MissingDecompressor as exc:
            print(exc)
        else:
            print("decoded without", {module!r})
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("the image: "), out
    assert fix in out, out


# --- detection --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", COMPRESSIONS)
def test_detect_compression(fmt: str) -> None:
    assert detect_compression(MAGICS[fmt]) == fmt
    assert detect_compression(MAGICS[fmt] + b"anything") == fmt
    assert detect_compression(memoryview(SEEDS[fmt])) == fmt
    assert detect_compression(MAGICS[fmt][:-1]) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"\x7fELF\x02\x01\x01", b"MZ\x90\x00", b"\x1f", b"BZ", b"\x5d\x00\x01", b"\x89LZO\x00"],
)
def test_detect_compression_on_other_bytes(data: bytes) -> None:
    assert detect_compression(data) is None


def test_compressions_and_errors() -> None:
    assert set(COMPRESSIONS) == set(MAGICS)
    for cls in (TruncatedStream, CorruptStream, OutputTooLarge, MissingDecompressor):
        assert issubclass(cls, DecompressError)
    assert issubclass(DecompressError, KernelArtifactError)


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(data: bytes, fmt: str, cap: int) -> None:
    """Only DecompressError may escape, it names the input, and no output passes the cap."""
    try:
        out = decompress(data, fmt, max_output=cap, what=WHAT)
    except MissingDecompressor:
        raise
    except DecompressError as exc:
        assert str(exc).startswith(f"{WHAT}: "), exc
    else:
        assert len(out) <= cap


@pytest.mark.parametrize("fmt", COMPRESSIONS)
@FUZZ
@given(
    body=st.binary(max_size=512),
    with_magic=st.booleans(),
    cap=st.integers(0, 1 << 16),
)
def test_fuzz_arbitrary_bytes(fmt: str, body: bytes, with_magic: bool, cap: int) -> None:
    _needs(fmt)
    _check((MAGICS[fmt] if with_magic else b"") + body, fmt, cap)


@pytest.mark.parametrize("fmt", COMPRESSIONS)
@FUZZ
@given(data=st.data(), cap=st.integers(0, 2 * len(SMALL)))
def test_fuzz_mutated_valid_streams(fmt: str, data: st.DataObject, cap: int) -> None:
    _needs(fmt)
    _check(data.draw(mutations(SEEDS[fmt], min_edits=0)), fmt, cap)

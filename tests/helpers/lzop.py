"""lzop containers as lzop 1.04 lays them out (CONFIG_KERNEL_LZO's format), built here because
the lzop tool is not always installed; compressing needs python-lzo (the [lzo] extra)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest

LZOP_MAGIC = b"\x89LZO\x00\r\n\x1a\n"
F_ADLER32_D, F_ADLER32_C, F_H_EXTRA_FIELD = 0x1, 0x2, 0x40
F_CRC32_D, F_CRC32_C, F_H_FILTER, F_H_CRC32 = 0x100, 0x200, 0x800, 0x1000
F_OS_UNIX = 0x03000000


def lzo_module() -> Any:
    return pytest.importorskip("lzo", reason="python-lzo (the [lzo] extra) is not installed")


def lzop(
    data: bytes,
    *,
    level: int = 1,
    version: int = 0x1040,
    flags: int = F_ADLER32_D | F_ADLER32_C,
    filter_: int | None = None,
    extra: bytes | None = None,
    block_size: int = 256 << 10,
    compress: bool = True,
) -> bytes:
    """An lzop container laid out as lzop 1.04 writes it; ``compress=False`` stores every block."""
    lzo = lzo_module() if compress else None
    flags |= F_OS_UNIX | (F_H_FILTER if filter_ is not None else 0)
    flags |= F_H_EXTRA_FIELD if extra is not None else 0
    h = struct.pack(">HH", version, 0x20A0)
    if version >= 0x0940:
        h += struct.pack(">H", 0x0940)
    h += bytes([3 if level == 9 else 1])
    if version >= 0x0940:
        h += bytes([level])
    h += struct.pack(">I", flags)
    if filter_ is not None:
        h += struct.pack(">I", filter_)
    h += struct.pack(">II", 0o100644, 1700000000)
    if version >= 0x0940:
        h += struct.pack(">I", 0)
    h += bytes([11]) + b"vmlinux.bin"
    out = bytearray(LZOP_MAGIC + h)
    out += struct.pack(">I", zlib.crc32(h) if flags & F_H_CRC32 else zlib.adler32(h))
    if extra is not None:
        out += struct.pack(">I", len(extra)) + extra + struct.pack(">I", zlib.adler32(extra))
    for i in range(0, len(data), block_size):
        block = data[i : i + block_size]
        packed = lzo.compress(block, level, False) if lzo is not None else block
        stored = len(packed) >= len(block)
        if stored:
            packed = block
        out += struct.pack(">II", len(block), len(packed))
        for flag, fn in ((F_ADLER32_D, zlib.adler32), (F_CRC32_D, zlib.crc32)):
            if flags & flag:
                out += struct.pack(">I", fn(block))
        for flag, fn in ((F_ADLER32_C, zlib.adler32), (F_CRC32_C, zlib.crc32)):
            if flags & flag and not stored:
                out += struct.pack(">I", fn(packed))
        out += packed
    return bytes(out + struct.pack(">I", 0))

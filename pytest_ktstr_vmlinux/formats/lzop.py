"""The lzop container around LZO1X blocks, as the kernel's `lzop -9` writes it.

Its own module because it is a file format parsed by hand (header fields, per-block sizes and
checksums), unlike the library-driven codecs in ``decompress.py``, which hands it the job to fill:
DecodeJob says what of that job the container needs, so this module knows nothing above it.
"""

from __future__ import annotations

import zlib
from typing import Protocol

MAGIC = b"\x89LZO\x00\r\n\x1a\n"
# lzop flags (lzop conf.h).
_F_ADLER32_D = 0x1
_F_ADLER32_C = 0x2
_F_H_EXTRA_FIELD = 0x40
_F_CRC32_D = 0x100
_F_CRC32_C = 0x200
_F_H_FILTER = 0x800
_F_H_CRC32 = 0x1000
_LZO_METHODS = (1, 2, 3)  # LZO1X_1, LZO1X_1_15, LZO1X_999: all decoded by lzo1x_decompress
# The largest block the kernel's unlzo decodes (LZO_BLOCK_SIZE in lib/decompress_unlzo.c), and
# what lzop writes: a bigger one would only cost memory (held compressed, then decoded).
BLOCK_MAX = 256 << 10


class Lzo(Protocol):
    """The part of python-lzo (untyped) used here."""

    error: type[Exception]

    def decompress(self, data: bytes, header: bool, buflen: int, /) -> bytes: ...


class DecodeJob(Protocol):
    """The bounded output ``decompress.py`` keeps, and the errors that name its input."""

    def truncated(self, consumed: int) -> Exception: ...

    def corrupt(self, where: str, detail: str) -> Exception: ...

    def reserve(self, n: int) -> None: ...

    def add(self, chunk: bytes) -> None: ...

    def result(self) -> bytearray: ...


class _Reader:
    """Big-endian fields of the lzop container; running out of input is truncation."""

    def __init__(self, job: DecodeJob, view: memoryview, pos: int) -> None:
        self.job = job
        self.view = view
        self.pos = pos

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.view):
            raise self.job.truncated(len(self.view))
        self.pos += n
        return self.view[self.pos - n : self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")


def decode(job: DecodeJob, view: memoryview, lzo: Lzo) -> bytearray:
    """The lzop container the kernel's `lzop -9` writes (layout as lzop's p_header/x_decompress)."""
    r = _Reader(job, view, len(MAGIC))
    version = r.u16()
    r.u16()  # LZO library version
    if version >= 0x0940:
        r.u16()  # version needed to extract
    method = r.u8()
    if version >= 0x0940:
        r.u8()  # level
    flags = r.u32()
    if flags & _F_H_FILTER and (f := r.u32()):
        raise job.corrupt("in its header", f"lzop filter {f}: kernel payloads use none")
    r.u32()  # mode
    r.u32()  # mtime
    if version >= 0x0940:
        r.u32()  # mtime, high half
    r.take(r.u8())  # original file name
    covered = r.view[len(MAGIC) : r.pos]
    expected = zlib.crc32(covered) if flags & _F_H_CRC32 else zlib.adler32(covered)
    if r.u32() != expected:
        raise job.corrupt("in its header", "header checksum mismatch")
    if flags & _F_H_EXTRA_FIELD:
        r.take(r.u32())
        r.u32()  # its checksum
    if method not in _LZO_METHODS:
        raise job.corrupt("in its header", f"method {method} is not LZO1X")
    while True:
        at = r.pos
        dst_len = r.u32()
        if dst_len == 0:  # end of stream; anything after it is not ours
            return job.result()
        src_len = r.u32()
        if dst_len > BLOCK_MAX:
            raise job.corrupt(
                f"at byte {at}",
                f"a block of {dst_len} bytes; the kernel decodes blocks of {BLOCK_MAX} at most",
            )
        if not 0 < src_len <= dst_len:
            raise job.corrupt(f"at byte {at}", f"block sizes {src_len} -> {dst_len}")
        d_sums = [r.u32() if flags & f else None for f in (_F_ADLER32_D, _F_CRC32_D)]
        stored = src_len == dst_len  # stored blocks carry no checksum of their compressed form
        c_sums = [None if stored or not flags & f else r.u32() for f in (_F_ADLER32_C, _F_CRC32_C)]
        job.reserve(dst_len)
        data = bytes(r.take(src_len))  # python-lzo takes bytes only; one block, <= 256 KiB
        if not _sums_match(data, c_sums):
            raise job.corrupt(f"in the block at byte {at}", "checksum of compressed data")
        if stored:
            out = data
        else:
            try:
                out = lzo.decompress(data, False, dst_len)
            except (lzo.error, ValueError) as exc:
                raise job.corrupt(f"in the block at byte {at}", str(exc)) from None
            if len(out) != dst_len:
                raise job.corrupt(f"in the block at byte {at}", f"{len(out)} bytes, not {dst_len}")
        if not _sums_match(out, d_sums):
            raise job.corrupt(f"in the block at byte {at}", "checksum of decompressed data")
        job.add(out)


def _sums_match(data: bytes, sums: list[int | None]) -> bool:
    adler, crc = sums
    return (adler is None or zlib.adler32(data) == adler) and (
        crc is None or zlib.crc32(data) == crc
    )

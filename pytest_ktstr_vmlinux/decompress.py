"""Bounded decompressors for Linux kernel payloads (bzImage payloads, Image.gz, EFI zboot).

Every decoder stops at the end of the first stream, because kernel payloads carry trailing bytes
(an appended u32 size, padding); never produces more than ``max_output`` bytes, so a bomb costs
at most the cap; and lets only DecompressError subclasses escape, whose message names the input,
the format, what went wrong and what to do. The input may be a memoryview of a mapped image:
decoders read it in slices and do not copy it whole.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import sys
import zlib
from typing import Protocol, cast

from .errors import KernelArtifactError

DEFAULT_MAX_OUTPUT = 1 << 30
COMPRESSIONS = ("gzip", "bzip2", "lzma", "xz", "lz4", "zstd", "lzo")

_MAGICS = {
    "gzip": b"\x1f\x8b",
    "bzip2": b"BZh",
    "lzma": b"\x5d\x00\x00",
    "xz": b"\xfd7zXZ\x00",
    "lz4": b"\x02\x21\x4c\x18",
    "zstd": b"\x28\xb5\x2f\xfd",
    "lzo": b"\x89LZO\x00\r\n\x1a\n",
}
# Library decoders get the input in slices this big: when the output cap stops a call early,
# the library copies the unconsumed rest of its input, so that rest must stay small.
_IN_CHUNK = 1 << 20
# liblzma allocates the dictionary the header asks for; kernels use 32-64 MiB, a forged header
# may ask for 4 GiB.
_LZMA_MEMLIMIT = 512 << 20
# `lz4 -l` (legacy frame) cuts its input into 8 MiB blocks; LZ4_compressBound bounds their size.
_LZ4_BLOCK = 8 << 20
_LZ4_BOUND = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16
# lzop flags (lzop conf.h) and its largest block.
_F_ADLER32_D = 0x1
_F_ADLER32_C = 0x2
_F_H_EXTRA_FIELD = 0x40
_F_CRC32_D = 0x100
_F_CRC32_C = 0x200
_F_H_FILTER = 0x800
_F_H_CRC32 = 0x1000
_LZO_METHODS = (1, 2, 3)  # LZO1X_1, LZO1X_1_15, LZO1X_999: all decoded by lzo1x_decompress
_LZO_BLOCK_MAX = 64 << 20


class DecompressError(KernelArtifactError):
    """A compressed kernel payload cannot be decoded; the message says which, why, what to do."""


class TruncatedStream(DecompressError):
    """The input ends before the stream does: the file was cut short."""


class CorruptStream(DecompressError):
    """The stream is damaged or is not the format it was labelled as."""


class OutputTooLarge(DecompressError):
    """The output would pass ``max_output``; decoding stopped there instead of filling memory.

    ``produced`` is how much output was held when decoding stopped: at most ``max_output``.
    """

    def __init__(self, message: str, produced: int = 0) -> None:
        super().__init__(message)
        self.produced = produced


class MissingDecompressor(DecompressError):
    """The Python package that decodes this format is not installed."""


class _Lz4Block(Protocol):
    """The part of lz4.block (untyped) used here."""

    LZ4BlockError: type[Exception]

    def decompress(self, source: memoryview, uncompressed_size: int = -1) -> bytes: ...


class _Lzo(Protocol):
    """The part of python-lzo (untyped) used here."""

    error: type[Exception]

    def decompress(self, data: bytes, header: bool, buflen: int, /) -> bytes: ...


class _Streaming(Protocol):
    """What the lzma, bz2 and zstd decompressor objects share."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


def detect_compression(data: bytes | memoryview) -> str | None:
    """The compression whose magic starts ``data``, or None."""
    head = bytes(_view(data)[:9])
    for name, magic in _MAGICS.items():
        if head.startswith(magic):
            return name
    return None


def decompress(
    data: bytes | memoryview,
    compression: str,
    *,
    max_output: int = DEFAULT_MAX_OUTPUT,
    what: str = "payload",
) -> bytes:
    """Decode the first ``compression`` stream of ``data``; ``what`` names the input in errors."""
    if compression not in COMPRESSIONS:
        raise DecompressError(
            f"{what}: unknown compression {compression!r}; expected one of "
            f"{', '.join(COMPRESSIONS)}"
        )
    if max_output < 0:
        raise ValueError(f"max_output must be >= 0, not {max_output}")
    view = _view(data)
    job = _Job(what, compression, max_output)
    if compression != "lzma":  # 5D 00 00 is a likely header, not a signature: liblzma judges
        job.check_magic(view)
    if compression == "gzip":
        return _gzip(job, view)
    if compression == "bzip2":
        return _stream(job, view, bz2.BZ2Decompressor(), (OSError, ValueError, EOFError))
    if compression in ("lzma", "xz"):
        fmt = lzma.FORMAT_ALONE if compression == "lzma" else lzma.FORMAT_XZ
        d = lzma.LZMADecompressor(format=fmt, memlimit=_LZMA_MEMLIMIT)
        return _stream(job, view, d, (lzma.LZMAError,))
    if compression == "zstd":
        d_zstd, zstd_error = _zstd(job)
        return _stream(job, view, d_zstd, (zstd_error,))
    if compression == "lz4":
        return _lz4(job, view)
    return _lzo(job, view)


def _view(data: bytes | memoryview) -> memoryview:
    view = data if isinstance(data, memoryview) else memoryview(data)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())  # rare: a strided view cannot be sliced as bytes
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class _Job:
    """One decoding: the output so far, and the names every message needs."""

    def __init__(self, what: str, fmt: str, cap: int) -> None:
        self.what = what
        self.fmt = fmt
        self.cap = cap
        self.size = 0
        self.chunks: list[bytes] = []

    def room(self) -> int:
        """How much the next call may produce: one byte past the cap tells "at" from "over"."""
        return self.cap - self.size + 1

    def reserve(self, n: int) -> None:
        """Refuse before decoding a block whose declared size would pass the cap."""
        if self.size + n > self.cap:
            raise self.too_large()

    def add(self, chunk: bytes) -> None:
        self.reserve(len(chunk))
        self.size += len(chunk)
        self.chunks.append(chunk)

    def result(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks = []
        return out

    def check_magic(self, view: memoryview) -> None:
        magic = _MAGICS[self.fmt]
        head = bytes(view[: len(magic)])
        if head == magic:
            return
        if magic.startswith(head):
            raise self.truncated(len(view))
        raise CorruptStream(
            f"{self.what}: not a {self.fmt} stream: it starts with {head.hex(' ')}, not the "
            f"{self.fmt} magic {magic.hex(' ')}; check the compression it is labelled with"
        )

    def truncated(self, consumed: int) -> TruncatedStream:
        return TruncatedStream(
            f"{self.what}: {self.fmt} stream truncated after {consumed} bytes of input; "
            "the image is incomplete: copy, download or build it again"
        )

    def corrupt(self, where: str, detail: str) -> CorruptStream:
        return CorruptStream(
            f"{self.what}: {self.fmt} stream corrupt {where} ({detail}); "
            "the image is damaged: copy, download or build it again"
        )

    def too_large(self) -> OutputTooLarge:
        return OutputTooLarge(
            f"{self.what}: {self.fmt} output would pass {self.cap} bytes: "
            f"a decompression bomb or a payload bigger than the cap ({self.cap} bytes); "
            "raise max_output",
            self.size,
        )


def _gzip(job: _Job, view: memoryview) -> bytes:
    # wbits=31: gzip header and trailer only; unused_data (the trailing size, padding) is ignored.
    d = zlib.decompressobj(wbits=31)
    pos = 0
    try:
        while not d.eof:
            chunk: bytes | memoryview = d.unconsumed_tail
            if not chunk and pos < len(view):
                chunk = view[pos : pos + _IN_CHUNK]
                pos += len(chunk)
            # An empty chunk still flushes output the cap held back on the previous call.
            out = d.decompress(chunk, job.room())
            if not chunk and not out and not d.eof:
                raise job.truncated(pos)
            job.add(out)
    except zlib.error as exc:
        raise job.corrupt(f"within its first {pos} bytes", str(exc)) from None
    return job.result()


def _stream(
    job: _Job, view: memoryview, d: _Streaming, errors: tuple[type[Exception], ...]
) -> bytes:
    """Drive a decompressor object to the end of its first stream, never past the cap."""
    pos = 0
    try:
        while not d.eof:
            chunk: bytes | memoryview = b""
            if d.needs_input:
                if pos >= len(view):
                    raise job.truncated(pos)
                chunk = view[pos : pos + _IN_CHUNK]
                pos += len(chunk)
            out = d.decompress(chunk, job.room())
            if not chunk and not out and not d.eof and not d.needs_input:
                raise job.corrupt(f"within its first {pos} bytes", "decoder made no progress")
            job.add(out)
    except errors as exc:
        raise job.corrupt(f"within its first {pos} bytes", str(exc) or type(exc).__name__) from None
    return job.result()


def _zstd(job: _Job) -> tuple[_Streaming, type[Exception]]:
    try:
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
    except ImportError:
        raise MissingDecompressor(
            f"{job.what}: zstd needs the backports.zstd package before Python 3.14, and it is "
            "not installed; pip install 'backports.zstd>=1.0'"
        ) from None
    # One frame: ZstdDecompressor stops at its end and keeps what follows in unused_data.
    return zstd.ZstdDecompressor(), zstd.ZstdError


def _import(job: _Job, module: str, fix: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDecompressor(
            f"{job.what}: decoding {job.fmt} needs the Python module {module!r}, which is not "
            f"installed; {fix}"
        ) from None


def _lz4(job: _Job, view: memoryview) -> bytes:
    """The legacy frame of `lz4 -l`: magic, then {u32 LE size, raw block}... with no end mark."""
    block = cast(_Lz4Block, _import(job, "lz4.block", "pip install 'lz4>=4.3'"))
    magic = int.from_bytes(_MAGICS["lz4"], "little")
    pos, blocks, end = 4, 0, len(view)
    while True:
        left = end - pos
        # The end is the end of input, or a last u32: the uncompressed size the kernel appends.
        # No kernel is empty: a frame without a block was cut right after its magic.
        if left in (0, 4) and blocks:
            return job.result()
        if left <= 4:
            raise job.truncated(end)
        size = int.from_bytes(view[pos : pos + 4], "little")
        if size == magic:  # concatenated frames: the kernel decoder carries on after the magic
            pos += 4
            continue
        if size == 0 or size > _LZ4_BOUND:
            raise job.corrupt(f"at byte {pos}", f"block size {size} is not a legacy block size")
        if size > left - 4:
            raise job.truncated(end)
        try:
            out = block.decompress(view[pos + 4 : pos + 4 + size], uncompressed_size=_LZ4_BLOCK)
        except (block.LZ4BlockError, ValueError) as exc:
            raise job.corrupt(f"in the block at byte {pos}", str(exc)) from None
        job.add(out)
        blocks += 1
        pos += 4 + size


class _Reader:
    """Big-endian fields of the lzop container; running out of input is truncation."""

    def __init__(self, job: _Job, view: memoryview, pos: int) -> None:
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


def _lzo(job: _Job, view: memoryview) -> bytes:
    """The lzop container the kernel's `lzop -9` writes (layout as lzop's p_header/x_decompress)."""
    fix = "pip install 'pytest-ktstr-vmlinux[lzo]' (python-lzo builds against liblzo2-dev)"
    lzo = cast(_Lzo, _import(job, "lzo", fix))
    r = _Reader(job, view, len(_MAGICS["lzo"]))
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
    covered = r.view[len(_MAGICS["lzo"]) : r.pos]
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
        if dst_len > _LZO_BLOCK_MAX or not 0 < src_len <= dst_len:
            raise job.corrupt(f"at byte {at}", f"block sizes {src_len} -> {dst_len}")
        d_sums = [r.u32() if flags & f else None for f in (_F_ADLER32_D, _F_CRC32_D)]
        stored = src_len == dst_len  # stored blocks carry no checksum of their compressed form
        c_sums = [None if stored or not flags & f else r.u32() for f in (_F_ADLER32_C, _F_CRC32_C)]
        job.reserve(dst_len)
        data = bytes(r.take(src_len))  # python-lzo takes bytes only; one block, <= 64 MiB
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

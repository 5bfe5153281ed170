"""Bounded decompressors for Linux kernel payloads (bzImage payloads, Image.gz, EFI zboot).

Every decoder stops at the end of the first stream, because kernel payloads carry trailing bytes
(an appended u32 size, padding); never produces more than ``max_output`` bytes; and lets only
DecompressError subclasses escape, whose message names the input, the format, what went wrong and
what to do. The input may be a memoryview of a mapped image: decoders read it in slices and do not
copy it whole.

Memory stays within the cap plus a constant, for a bomb and for an output of exactly the cap: the
output grows in one bytearray (which is what is returned: turning it into bytes would copy it),
and no library call is asked for more than _OUT_CHUNK, because each call builds its output in
blocks and then copies them into one bytes object. The constant is the decoder's own window,
which the format bounds: xz/lzma dictionaries up to _LZMA_DICT_MAX, a zstd window up to 128 MiB
(libzstd's default limit), an lz4 block twice (decoded, then copied), a few MiB for the rest.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import sys
import zlib
from typing import Protocol, cast

from ..errors import KernelArtifactError
from . import lzop

DEFAULT_MAX_OUTPUT = 1 << 30
COMPRESSIONS = ("gzip", "bzip2", "lzma", "xz", "lz4", "zstd", "lzo")

_MAGICS = {
    "gzip": b"\x1f\x8b",
    "bzip2": b"BZh",
    "lzma": b"\x5d\x00\x00",
    "xz": b"\xfd7zXZ\x00",
    "lz4": b"\x02\x21\x4c\x18",
    "zstd": b"\x28\xb5\x2f\xfd",
    "lzo": lzop.MAGIC,
}
# Library decoders get the input in slices this big: when the output cap stops a call early,
# the library copies the unconsumed rest of its input, so that rest must stay small.
_IN_CHUNK = 1 << 20
# The most output asked of one library call, which holds it twice (blocks, then one bytes).
_OUT_CHUNK = 1 << 20
# liblzma allocates the dictionary the header asks for, and fills it as it decodes: it costs as
# much as the output up to its size. The kernel's xz_wrap.sh asks for 128 MiB (32 MiB in older
# kernels), `lzma -9` for 64 MiB; a forged header may ask for 4 GiB. The decoder's own state is
# under 1 MiB on top of the dictionary.
_LZMA_DICT_MAX = 128 << 20
_LZMA_MEMLIMIT = _LZMA_DICT_MAX + (1 << 20)
# `lz4 -l` (legacy frame) cuts its input into 8 MiB blocks; LZ4_compressBound bounds their size.
_LZ4_BLOCK = 8 << 20
_LZ4_BOUND = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16


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
) -> bytearray:
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
        self.out = bytearray()

    @property
    def size(self) -> int:
        return len(self.out)

    def room(self) -> int:
        """How much the next call may produce: one byte past the cap tells "at" from "over"."""
        return min(self.cap - len(self.out) + 1, _OUT_CHUNK)

    def reserve(self, n: int) -> None:
        """Refuse before decoding a block whose declared size would pass the cap."""
        if len(self.out) + n > self.cap:
            raise self.too_large()

    def add(self, chunk: bytes) -> None:
        self.reserve(len(chunk))
        self.out += chunk  # realloc: past glibc's mmap threshold (<= 32 MiB) a remap, no copy

    def result(self) -> bytearray:
        out, self.out = self.out, bytearray()
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


def _gzip(job: _Job, view: memoryview) -> bytearray:
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
) -> bytearray:
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
        detail = str(exc) or type(exc).__name__
        if detail == "Memory usage limit exceeded":  # liblzma's LZMA_MEMLIMIT_ERROR
            detail = (
                f"its dictionary needs more than {_LZMA_MEMLIMIT} bytes; kernels are compressed"
                f" with at most {_LZMA_DICT_MAX >> 20} MiB"
            )
        raise job.corrupt(f"within its first {pos} bytes", detail) from None
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


def _lz4(job: _Job, view: memoryview) -> bytearray:
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


def _lzo(job: _Job, view: memoryview) -> bytearray:
    fix = "pip install 'pytest-ktstr-vmlinux[lzo]' (python-lzo builds against liblzo2-dev)"
    return lzop.decode(job, view, cast(lzop.Lzo, _import(job, "lzo", fix)))

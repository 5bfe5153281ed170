"""The artifact file format: a 4 KiB header, then the payload, page-aligned so it can be mapped.

Header (little-endian): magic ``KTSTRART``, container version, the artifact's own format version,
digest scope, payload length, SHA-256 digest, kind name, then (larger payloads) a second digest.
Every artifact carries the SHA-256 of its length and whole payload: what a full check compares.
Payloads over ``FULL_DIGEST_LIMIT`` (vmlinux snapshots) also carry a digest over the length and
evenly spaced 4 KiB samples, so an open that skips the full check (see ``index.py``) stays a
few page reads while a torn, truncated or zero-filled file is still caught. Nothing here can execute
code: bytes in, bytes out.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..regularfile import file_type
from .files import OPEN_FLAGS, OutOfSpace, cause_out_of_space, is_full, not_ours_alone
from .signature import StatSignature

MAGIC = b"KTSTRART"
CONTAINER_VERSION = 1
HEADER_SIZE = 4096  # a page: the payload starts mmap-aligned
_HEADER = struct.Struct("<8sHHIQ32s64s")
_FULL_DIGEST = struct.Struct("<32s")  # after _HEADER, in DIGEST_SAMPLED headers
# The scope of the header's digest. DIGEST_FULL: the whole payload. DIGEST_SAMPLED: the samples,
# with the whole payload's digest after the header. DIGEST_SAMPLES_ONLY, written by earlier
# versions, has nothing a full check could compare with: such a file is rebuilt (ArtifactOutdated).
DIGEST_FULL = 0
DIGEST_SAMPLES_ONLY = 1
DIGEST_SAMPLED = 2
FULL_DIGEST_LIMIT = 64 << 20
READ_CHUNK = 1 << 20
SAMPLE_COUNT = 64
SAMPLE_SIZE = 4096


class ArtifactCorrupt(ValueError):
    """An artifact file is torn, truncated, foreign or garbage; the message says which."""


class ArtifactOutdated(ArtifactCorrupt):
    """A sound artifact in a format this version no longer serves: rebuilt without a warning."""


@dataclass(frozen=True, eq=False)
class Artifact:
    """A verified artifact and a read-only mapping of its payload.

    The mapping is made from the descriptor that was verified, so an eviction or rebuild that
    unlinks the file afterwards changes nothing for its holder: the store replaces and unlinks
    artifact files, and never truncates or rewrites one in place.
    """

    path: Path
    kind: str
    version: int
    size: int
    view: memoryview
    digest: bytes  # full_digest of the payload as it was published: what a full check compares
    signature: StatSignature | None = None  # of the file when it was opened and checked
    checked: bool = False  # whether every byte was compared with ``digest`` when it was opened

    def read_bytes(self) -> bytes:
        return bytes(self.view)

    def map(self) -> memoryview:
        return self.view


def map_payload(fd: int, size: int) -> memoryview:
    """A read-only, shared mapping of the ``size`` payload bytes after the header of ``fd``."""
    if size == 0:
        return memoryview(b"")
    mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=HEADER_SIZE)
    return memoryview(mapping)


def full_digest(f: BinaryIO, size: int, offset: int = HEADER_SIZE) -> bytes:
    """The SHA-256 of the length and the ``size`` payload bytes at ``offset`` in ``f``: what
    every artifact carries. Read, not mapped: a file truncated meanwhile is a short read, never
    a SIGBUS. ArtifactCorrupt when the bytes end early."""
    h = hashlib.sha256(size.to_bytes(8, "little"))
    f.seek(offset)
    remaining = size
    while remaining:
        chunk = f.read(min(remaining, READ_CHUNK))
        if not chunk:
            raise ArtifactCorrupt(f"payload ends {remaining} bytes early")
        h.update(chunk)
        remaining -= len(chunk)
    return h.digest()


def sampled_digest(f: BinaryIO, size: int) -> bytes:
    """The digest of the length and the evenly spaced samples of a large payload."""
    h = hashlib.sha256(size.to_bytes(8, "little"))
    for offset in _sample_offsets(size):
        f.seek(HEADER_SIZE + offset)
        chunk = f.read(SAMPLE_SIZE)
        if len(chunk) != min(SAMPLE_SIZE, size - offset):
            raise ArtifactCorrupt(f"payload ends before sample at {offset}")
        h.update(chunk)
    return h.digest()


def _sample_offsets(size: int) -> list[int]:
    last = max(size - SAMPLE_SIZE, 0)
    return sorted({last * i // (SAMPLE_COUNT - 1) for i in range(SAMPLE_COUNT)})


def begin(f: BinaryIO) -> None:
    """Reserve the header; the payload is written from HEADER_SIZE on."""
    f.seek(0)
    f.write(bytes(HEADER_SIZE))


def finish(f: BinaryIO, kind: str, version: int) -> tuple[int, bytes]:
    """Seal a file whose payload follows the reserved header: (payload size, full digest)."""
    f.flush()
    size = os.fstat(f.fileno()).st_size - HEADER_SIZE
    if size < 0:
        raise ArtifactCorrupt("payload written before the header was reserved")
    full = full_digest(f, size)
    sampled = size > FULL_DIGEST_LIMIT
    scope, digest = (DIGEST_SAMPLED, sampled_digest(f, size)) if sampled else (DIGEST_FULL, full)
    f.seek(0)
    f.write(_HEADER.pack(MAGIC, CONTAINER_VERSION, version, scope, size, digest, _kind(kind)))
    if sampled:
        f.write(_FULL_DIGEST.pack(full))
    f.flush()
    return size, full


def build_file(
    tmp_dir: Path, kind: str, version: int, write: Callable[[BinaryIO], None]
) -> Artifact:
    """A sealed artifact file in ``tmp_dir`` whose payload ``write`` wrote, mapped. On any error
    the file is removed; a full filesystem is OutOfSpace with what the file needed (header and
    payload, when ``write`` said or finished)."""
    tmp: Path | None = None
    produced: int | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="build-", suffix=".tmp")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "w+b") as out:
            begin(out)
            write(out)
            produced = out.tell()  # header and payload, written or still buffered
            size, digest = finish(out, kind, version)
            os.fsync(out.fileno())
            view = map_payload(out.fileno(), size)
    except BaseException as e:
        written = 0
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                written = os.stat(tmp).st_size
                tmp.unlink()
        if not is_full(e):
            raise
        said = cause_out_of_space(e)
        if said is not None:
            raise OutOfSpace(e, HEADER_SIZE + said.needed, exact=said.exact) from None
        raise OutOfSpace(e, produced or written, exact=produced is not None) from None
    return Artifact(tmp, kind, version, size, view, digest, checked=True)


def open_artifact(
    path: Path,
    kind: str,
    version: int,
    *,
    owner: int | None = None,
    full: bool | Callable[[StatSignature], bool] = True,
) -> Artifact:
    """Verify ``path`` as an artifact of ``kind``/``version`` and map it.

    With ``owner`` (the store's uid), a file someone else owns or may write is refused too,
    checked on the descriptor that is then read: whoever wrote it could have sealed any bytes.
    ``full`` (or ``full(signature)`` of the opened file) compares every byte with the published
    digest, a read of the whole file; without it, the header, the length and (large payloads)
    the samples are checked. ArtifactCorrupt says what is wrong (ArtifactOutdated: sound but of
    an earlier format); FileNotFoundError means it is simply gone (evicted or replaced by another
    process a moment ago), which is no corruption.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ArtifactCorrupt(f"cannot open: {e.strerror}") from None
    # Checked on the raw descriptor: opening a directory as a file object raises
    # IsADirectoryError, which is no ArtifactCorrupt.
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactCorrupt(f"not a regular file ({file_type(st.st_mode)})")
        if owner is not None and (problem := not_ours_alone(st, owner)) is not None:
            raise ArtifactCorrupt(f"{problem}; never served")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        if st.st_size < HEADER_SIZE:
            raise ArtifactCorrupt(f"truncated: {st.st_size} bytes, shorter than its header")
        fields = _HEADER.unpack(f.read(_HEADER.size))
        magic, container, found_version, scope, size, digest, raw_kind = fields
        if magic != MAGIC:
            raise ArtifactCorrupt("garbage: no artifact magic")
        if container != CONTAINER_VERSION:
            raise ArtifactCorrupt(f"foreign container version {container}")
        if raw_kind != _kind(kind) or found_version != version:
            found = raw_kind.rstrip(b"\x00").decode("ascii", "replace")
            raise ArtifactCorrupt(f"holds {found} v{found_version}, not {kind} v{version}")
        if st.st_size - HEADER_SIZE != size:
            raise ArtifactCorrupt(
                f"torn: payload is {st.st_size - HEADER_SIZE} bytes, header says {size}"
            )
        if scope == DIGEST_SAMPLES_ONLY:
            raise ArtifactOutdated("written by an earlier version, without a full digest")
        if scope == DIGEST_SAMPLED:
            (published,) = _FULL_DIGEST.unpack(f.read(_FULL_DIGEST.size))
            if sampled_digest(f, size) != digest:
                raise ArtifactCorrupt("checksum mismatch")
        elif scope == DIGEST_FULL:
            published = digest
        else:
            raise ArtifactCorrupt(f"checksum mismatch (unknown digest scope {scope})")
        signature = StatSignature.from_stat(st)
        check = full(signature) if callable(full) else full
        if check and full_digest(f, size) != published:
            raise ArtifactCorrupt("checksum mismatch")
        view = map_payload(f.fileno(), size)
    return Artifact(path, kind, version, size, view, published, signature, checked=check)


def _kind(kind: str) -> bytes:
    raw = kind.encode("ascii")
    if not raw or len(raw) > 64:
        raise ValueError(f"artifact kind must be 1-64 ASCII characters: {kind!r}")
    return raw.ljust(64, b"\x00")

"""The store's API: the protocol every store keeps, what it hands out, and what it raises.

Library code and fixtures hold a ``Store`` and never ask which one: the on-disk ``ArtifactStore``
(``store/disk.py``) and the in-process ``MemoryStore`` (``store/memory.py``) key artifacts the same
way (a source file's canonical path and stat signature, a kind, a version), build each at most
once, and hand out a ``StoredArtifact``. Everything a caller of a store may meet is defined here,
so no module outside the store reaches into one implementation for the types of all of them.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..errors import KernelArtifactError
from .artifact import Artifact
from .files import OutOfSpace, is_full
from .signature import StatSignature

MAX_BUILD_ATTEMPTS = 5
MAX_VERSION = 0xFFFF  # the artifact header's u16
_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)

# Writes the payload of an artifact built from the source at the given path.
Build = Callable[[Path, BinaryIO], None]


class Store(Protocol):
    """What fixtures and library code need from a store, on disk (ArtifactStore) or in memory
    (MemoryStore): artifacts derived from a source file, each built at most once for the
    file's current content and rebuilt when the file changes. A test's own artifact::

        def sections(path, out):  # writes the payload
            out.write(subprocess.run(["readelf", "-S", path], capture_output=True).stdout)

        stored = kernel_store.get_or_build(kernel.require_vmlinux(), "my-sections", 1, sections)
        text = stored.read_bytes()

    Raise ``version`` when what ``build`` writes changes: the old artifacts are not served.
    """

    #: What this process built and reused.
    stats: StoreStats

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        """The ``kind``/``version`` artifact of ``source``'s current content, built at most once:
        ``build(path, out)`` writes the payload to the binary file ``out``. A kind is 1-64 ASCII
        letters, digits, ``.``, ``_`` or ``-``; a version 0 to 65535 (ValueError otherwise).
        Errors from ``build`` propagate and are never recorded."""
        ...

    def get_or_build_json(
        self,
        source: str | os.PathLike[str],
        kind: str,
        version: int,
        compute: Callable[[Path], Any],
    ) -> Any:
        """``compute(path)``, a JSON-serializable value derived from ``source``, computed at
        most once as ``get_or_build`` builds."""
        ...

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        """The payload of ``stored`` as a plain file named with ``suffix`` (``".elf"``), for
        tools that want a path, not bytes."""
        ...


@dataclass
class StoreStats:
    """What this process did: artifacts it built, and artifacts it found already built."""

    #: Artifacts built by this process.
    built: int = 0
    #: Artifacts found already built (by this process, or on disk by any).
    reused: int = 0


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact's payload and the version of its source it was built from.

    The payload lives in a verified artifact file (on-disk store) or in memory (MemoryStore).
    """

    #: The source file's canonical path.
    source: str
    #: The version of the source the payload was built from (its stat signature).
    signature: StatSignature
    #: The artifact's kind.
    kind: str
    #: The artifact's version.
    version: int
    #: The verified artifact file, in an on-disk store.
    file: Artifact | None = None
    #: The payload, in a MemoryStore.
    data: bytes | None = None

    @property
    def size(self) -> int:
        """The payload's size in bytes."""
        return self.file.size if self.file is not None else len(self.data or b"")

    def map(self) -> memoryview:
        """Read-only view of the payload: a shared mapping of the file, or the bytes in memory."""
        return self.file.map() if self.file is not None else memoryview(self.data or b"")

    def read_bytes(self) -> bytes:
        """A copy of the payload."""
        return self.file.read_bytes() if self.file is not None else (self.data or b"")

    def json(self) -> Any:
        """The payload read as JSON (what ``get_or_build_json`` stored)."""
        return json.loads(self.read_bytes())


class StoreWarning(UserWarning):
    """Something in the store was unusable and has been rebuilt; results are still correct."""


class InsecureStoreError(KernelArtifactError):
    """The store directory is owned by someone else or writable by others: refused, no fallback."""


class NotAStoreError(InsecureStoreError):
    """The directory holds files the store did not create: refused, no fallback, never emptied."""


class StoreUnavailableError(KernelArtifactError):
    """The store directory cannot be created or written (read-only home, ...): fall back."""


class StoreFullError(StoreUnavailableError):
    """The store's filesystem has no room (ENOSPC, EDQUOT) for what is being written. Nothing
    partial is left behind and the store stays valid. ``needed``: the bytes the write needed
    (more than that when not ``exact``); ``free``: the bytes free when it failed; ``summary``:
    the message without the free space, the same in every process that meets it."""

    def __init__(
        self, summary: str, *, directory: Path, needed: int | None, exact: bool, free: int | None
    ) -> None:
        have = "" if free is None else f" ({format_size(free)} free)"
        super().__init__(f"{summary}{have}. {_MAKE_ROOM}")
        self.summary = summary
        self.directory = directory
        self.needed = needed
        self.exact = exact
        self.free = free


_MAKE_ROOM = (
    "Free space there, or point --kernel-cache-dir (KTSTR_CACHE_DIR) at a filesystem with room"
)


class StoreLockTimeout(KernelArtifactError):
    """The lock was held by another process for the whole timeout. It says nothing about any
    kernel, so it is never a reason to skip a test."""


def full_error(
    directory: Path, error: OSError, what: str, needed: int | None, *, exact: bool = True
) -> StoreFullError:
    """The StoreFullError for ``error`` (ENOSPC, EDQUOT) met in the store at ``directory`` while
    ``what`` ("writing the index"): ``needed`` bytes (more than that when not ``exact``)."""
    reason = "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
    need = ""
    if needed is not None:
        need = f": it needs {'' if exact else 'more than '}{format_size(needed)}"
    try:
        st = os.statvfs(directory)
        free: int | None = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    summary = f"kernel cache {directory} is full ({reason}) {what}{need}"
    return StoreFullError(summary, directory=directory, needed=needed, exact=exact, free=free)


def format_size(size: int) -> str:
    """``4,198,400 bytes (4.0 MiB)``; small sizes in bytes alone."""
    if size < 1 << 20:
        return f"{size:,} bytes"
    return f"{size:,} bytes ({size / (1 << 20):.1f} MiB)"


def check_key(kind: object, version: object) -> None:
    """Refuse, where it is passed in, a kind or version the store could not record: the kind
    names the artifact in the index (``kind:version``) and in its file's header."""
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        raise ValueError(
            f"artifact kind {kind!r}: a kind is 1-64 characters, each one of ASCII letters,"
            " digits, '.', '_' or '-' (such as 'my-sections')"
        )
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        raise ValueError(
            f"artifact version {version!r} of kind {kind!r}: a version is an integer from 0 to"
            f" {MAX_VERSION}"
        )


def json_build(compute: Callable[[Path], Any]) -> Build:
    """A Build that stores ``compute(source)`` as compact JSON."""

    def build(path: Path, out: BinaryIO) -> None:
        data = json.dumps(compute(path), separators=(",", ":")).encode()
        try:
            out.write(data)
        except OSError as e:
            if is_full(e):
                raise OutOfSpace(e, len(data)) from None
            raise

    return build


def unsettled_source(source: str | os.PathLike[str], kind: str) -> KernelArtifactError:
    return KernelArtifactError(
        f"{source}: changed {MAX_BUILD_ATTEMPTS} times while its {kind} artifact was being"
        " built; a build is probably still writing it. Wait for it to finish and run again."
    )

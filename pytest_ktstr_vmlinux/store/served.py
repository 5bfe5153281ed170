"""What stores hand out, on disk or in memory: a payload and the source version it came from.

Shared by store.py and memstore.py so that neither depends on the other.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import KernelArtifactError
from .artifact import Artifact
from .publish import OutOfSpace, is_full
from .signature import StatSignature

MAX_BUILD_ATTEMPTS = 5
MAX_VERSION = 0xFFFF  # the artifact header's u16
_KIND = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)

# Writes the payload of an artifact built from the source at the given path.
Build = Callable[[Path, BinaryIO], None]


class StoreWarning(UserWarning):
    """Something in the store was unusable and has been rebuilt; results are still correct."""


@dataclass
class StoreStats:
    """What this process did: artifacts it built, and artifacts it found already built."""

    built: int = 0
    reused: int = 0


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact's payload and the version of its source it was built from.

    The payload lives in a verified artifact file (on-disk store) or in memory (MemoryStore).
    """

    source: str
    signature: StatSignature
    kind: str
    version: int
    file: Artifact | None = None
    data: bytes | None = None

    @property
    def size(self) -> int:
        return self.file.size if self.file is not None else len(self.data or b"")

    def map(self) -> memoryview:
        """Read-only view of the payload: a shared mapping of the file, or the bytes in memory."""
        return self.file.map() if self.file is not None else memoryview(self.data or b"")

    def read_bytes(self) -> bytes:
        return self.file.read_bytes() if self.file is not None else (self.data or b"")

    def json(self) -> Any:
        return json.loads(self.read_bytes())


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

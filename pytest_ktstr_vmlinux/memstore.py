"""The store's API without a disk: what ``--no-kernel-cache`` (or an unwritable cache) gives.

Artifacts are built once per process and kept in memory, keyed exactly as on disk, so callers
never ask which store they have.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from .errors import KernelArtifactError
from .signature import StatSignature, canonical_key, stat_signature
from .store import MAX_BUILD_ATTEMPTS, Build, StoredArtifact, StoreStats


class Store(Protocol):
    """What fixtures and library code need from a store, on disk or in memory."""

    stats: StoreStats

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact: ...

    def get_or_build_json(
        self,
        source: str | os.PathLike[str],
        kind: str,
        version: int,
        compute: Callable[[Path], Any],
    ) -> Any: ...


class MemoryStore:
    """In-process artifacts keyed by (canonical path, signature, kind, version)."""

    def __init__(self) -> None:
        self.stats = StoreStats()
        self._artifacts: dict[tuple[str, StatSignature, str, int], StoredArtifact] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        key = canonical_key(source)
        with self._lock:
            for _ in range(MAX_BUILD_ATTEMPTS):
                signature = stat_signature(key, source)
                found = self._artifacts.get((key, signature, kind, version))
                if found is not None:
                    self.stats.reused += 1
                    return found
                out = io.BytesIO()
                build(Path(key), out)
                if stat_signature(key, source) != signature:
                    continue
                stored = StoredArtifact(key, signature, kind, version, data=out.getvalue())
                # Older versions of the same source are dead weight: keep the newest only.
                for stale in [
                    k for k in self._artifacts if k[0] == key and k[2:] == (kind, version)
                ]:
                    del self._artifacts[stale]
                self._artifacts[(key, signature, kind, version)] = stored
                self.stats.built += 1
                return stored
        raise KernelArtifactError(
            f"{source}: changed {MAX_BUILD_ATTEMPTS} times while its {kind} artifact was being"
            " built; a build is probably still writing it. Wait for it to finish and run again."
        )

    def get_or_build_json(
        self,
        source: str | os.PathLike[str],
        kind: str,
        version: int,
        compute: Callable[[Path], Any],
    ) -> Any:
        def build(path: Path, out: BinaryIO) -> None:
            out.write(json.dumps(compute(path), separators=(",", ":")).encode())

        return self.get_or_build(source, kind, version, build).json()

"""The store without a disk: what ``--no-kernel-cache`` (or an unwritable cache) gives.

Artifacts are built once per process and kept in memory, keyed exactly as on disk
(``store/api.py``'s Store protocol), so callers never ask which store they have.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import (
    MAX_BUILD_ATTEMPTS,
    Build,
    StoredArtifact,
    StoreStats,
    check_key,
    json_build,
    unsettled_source,
)
from .signature import (
    RACY_WINDOW_NS,
    StatSignature,
    canonical_key,
    is_racy,
    sha256_file,
    stat_signature,
)


@dataclass
class _Held:
    artifact: StoredArtifact
    recorded_ns: int
    digest: str | None  # content hash, kept while the source was racy when built


class MemoryStore:
    """In-process artifacts keyed by (canonical path, kind, version) and the source's signature,
    with the same racy-source rule as the on-disk store: a Store that needs no disk, built
    once per process (what the readers use when given no store, and a Kernel by default)."""

    def __init__(self, racy_window_ns: int = RACY_WINDOW_NS) -> None:
        #: How recent a source's change must be for it to be checked by content.
        self.racy_window_ns = racy_window_ns
        #: What this store built and reused.
        self.stats = StoreStats()
        self._held: dict[tuple[str, str, int], _Held] = {}
        self._exports: Path | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return "MemoryStore()"

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        """As ``Store.get_or_build``, once per process."""
        check_key(kind, version)
        key = canonical_key(source)
        with self._lock:
            for _ in range(MAX_BUILD_ATTEMPTS):
                signature = stat_signature(key, source)
                held = self._held.get((key, kind, version))
                if held is not None and self._still_valid(held, key, signature):
                    self.stats.reused += 1
                    return held.artifact
                recorded_ns = time.time_ns()
                racy = is_racy(signature, recorded_ns, self.racy_window_ns)
                digest = sha256_file(key) if racy else None
                out = io.BytesIO()
                build(Path(key), out)
                if stat_signature(key, source) != signature or (
                    racy and sha256_file(key) != digest
                ):
                    continue
                stored = StoredArtifact(key, signature, kind, version, data=out.getvalue())
                self._held[(key, kind, version)] = _Held(stored, recorded_ns, digest)
                self.stats.built += 1
                return stored
        raise unsettled_source(source, kind)

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        """The payload as a plain file in a private directory removed when the process exits."""
        if self._exports is None:
            self._exports = Path(tempfile.mkdtemp(prefix="ktstr-vmlinux-"))
            atexit.register(shutil.rmtree, self._exports, True)
        digest = hashlib.sha256(repr((stored.source, stored.signature, stored.kind)).encode())
        path = self._exports / f"{digest.hexdigest()}{suffix}"
        if not path.exists():
            path.write_bytes(stored.read_bytes())
        return path

    def _still_valid(self, held: _Held, key: str, signature: StatSignature) -> bool:
        if held.artifact.signature != signature:
            return False
        if not is_racy(signature, held.recorded_ns, self.racy_window_ns):
            return True
        started_ns = time.time_ns()
        if held.digest is None or sha256_file(key) != held.digest:
            return False
        held.recorded_ns = max(held.recorded_ns, started_ns)
        return True

    def get_or_build_json(
        self,
        source: str | os.PathLike[str],
        kind: str,
        version: int,
        compute: Callable[[Path], Any],
    ) -> Any:
        """As ``Store.get_or_build_json``, once per process."""
        return self.get_or_build(source, kind, version, json_build(compute)).json()

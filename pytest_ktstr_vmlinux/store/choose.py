"""Choosing a store: on disk where it is safe and writable, in memory where it cannot be written.

Shared by the plugin and the CLI so both find the same directory by the same rules.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .api import (
    Build,
    Store,
    StoredArtifact,
    StoreFullError,
    StoreUnavailableError,
    StoreWarning,
)
from .directory import DEFAULT_MAX_SIZE, default_store_dir
from .disk import DEFAULT_LOCK_TIMEOUT, ArtifactStore
from .memory import MemoryStore

ENV_CACHE_DIR = "KTSTR_CACHE_DIR"
ENV_CACHE_MAX_SIZE = "KTSTR_CACHE_MAX_SIZE"
ENV_LOCK_TIMEOUT = "KTSTR_LOCK_TIMEOUT"


def open_store(
    directory: str | os.PathLike[str] | None,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    on_lock_wait: Callable[[str], None] | None = None,
) -> tuple[Store, str | None]:
    """The on-disk store at ``directory`` (``$XDG_CACHE_HOME/pytest-ktstr-vmlinux`` or
    ``~/.cache/pytest-ktstr-vmlinux`` when None; an ArtifactStore that, if the disk fills up
    later, warns and builds the rest in memory: it costs a warning, not the run) and what to
    warn about (damage repaired while opening it), or, when it cannot be written (or is full),
    a MemoryStore and the reason to warn about::

        store, warning = open_store(None)
        if warning:
            print(warning)
        kernel = resolve_kernel("running", store=store)

    InsecureStoreError propagates: a directory others could write is never silently bypassed.
    """
    path = Path(directory) if directory is not None else default_store_dir()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreWarning)
            store = SpilloverStore(
                path, max_size=max_size, lock_timeout=lock_timeout, on_lock_wait=on_lock_wait
            )
    except StoreUnavailableError as e:
        return MemoryStore(), f"{e}; keeping kernel artifacts in-process for this run"
    repaired = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    for w in caught:
        if not issubclass(w.category, StoreWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return store, "; ".join(repaired) or None


def store_location(store: Store) -> str:
    if not isinstance(store, ArtifactStore):
        return "in-process"
    if isinstance(store, SpilloverStore) and store.spilled:
        return f"{store.directory}, full: the rest in-process"
    return str(store.directory)


class SpilloverStore(ArtifactStore):
    """An on-disk store that, once its disk is full, warns once and builds what does not fit in
    this process (a MemoryStore) for the rest of its life, while what the disk holds is still
    served: what the plugin and the CLI use, where a full disk must not fail the run."""

    def __init__(self, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self._full: StoreFullError | None = None
        self._memory = MemoryStore(self.racy_window_ns)
        self._memory.stats = self.stats  # one count, wherever an artifact was built

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        # Once full, the disk is still searched, but nothing more is written to it.
        attempt = build if self._full is None else self._refuse
        try:
            return super().get_or_build(source, kind, version, attempt)
        except StoreFullError as e:
            self._spill(e)
        return self._memory.get_or_build(source, kind, version, build)

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        if stored.file is not None and self._full is None:
            try:
                return super().export(stored, suffix)
            except StoreFullError as e:
                self._spill(e)
        return self._memory.export(stored, suffix)

    @property
    def spilled(self) -> bool:
        """True once the disk was found full and artifacts began to be built in memory."""
        return self._full is not None

    def _refuse(self, path: Path, out: BinaryIO) -> None:
        assert self._full is not None
        raise self._full

    def _spill(self, error: StoreFullError) -> None:
        if self._full is None:
            self._full = error
            warnings.warn(
                f"{error.summary}; building what does not fit in-process (in memory) for the"
                " rest of this run. Free space there, or point --kernel-cache-dir"
                " (KTSTR_CACHE_DIR) at a filesystem with room",
                StoreWarning,
                stacklevel=3,
            )

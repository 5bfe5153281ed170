"""Choosing a store: on disk where it is safe and writable, in memory where it cannot be written.

Shared by the plugin and the CLI so both find the same directory by the same rules.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from .memstore import MemoryStore, Store
from .store import ArtifactStore
from .stored import StoreWarning
from .storedir import DEFAULT_MAX_SIZE, StoreUnavailableError, default_store_dir

ENV_CACHE_DIR = "KTSTR_CACHE_DIR"
ENV_CACHE_MAX_SIZE = "KTSTR_CACHE_MAX_SIZE"


def open_store(
    directory: str | os.PathLike[str] | None, *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[Store, str | None]:
    """The on-disk store at ``directory`` (default location when None) and what to warn about
    (damage repaired while opening it), or, when it cannot be written, a MemoryStore and the
    reason to warn about.

    InsecureStoreError propagates: a directory others could write is never silently bypassed.
    """
    path = Path(directory) if directory is not None else default_store_dir()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StoreWarning)
            store = ArtifactStore(path, max_size=max_size)
    except StoreUnavailableError as e:
        return MemoryStore(), f"{e}; keeping kernel artifacts in-process for this run"
    repaired = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    for w in caught:
        if not issubclass(w.category, StoreWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return store, "; ".join(repaired) or None


def store_location(store: Store) -> str:
    return str(store.directory) if isinstance(store, ArtifactStore) else "in-process"

"""The on-disk artifact store: one build per artifact across every process and every run.

Layout of the store directory (0700, ours alone; ``store/directory.py``)::

    .ktstr-store        the marker: this directory is a store (``directory.claim_store_dir``)
    index.json          canonical source path -> signature -> artifacts (``store/index.py``)
    lock                filelock.FileLock: serializes builds and index writes
    lock.owner          who holds the lock, while it is held (``store/lock.py``)
    artifacts/<sha>.art artifact files (``store/artifact.py``), named by a hash of their key
    exports/<sha>.<ext> payloads as plain files, for tools that want a path (``store/exports.py``)
    tmp/                files being written; anything here while we hold the lock is debris
    trees/              published directory trees, their refs, locks and state (``store/trees.py``)

Correctness never rests on the lock: the index and every artifact are published by write to
tmp/, fsync, ``os.replace``, so a reader sees a whole old file or a whole new one, and verifies
it (header, version, length, owner) before use, and every byte of it whenever the index has no
record of a full check of this very file version on this boot (``store/artifacts.py``). The lock
only keeps N processes from building (or fully checking) the same artifact N times. A crash
mid-build leaves debris in tmp/ and an unchanged index; a full disk is a StoreFullError that
leaves neither.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .api import (
    MAX_BUILD_ATTEMPTS,
    Build,
    StoredArtifact,
    StoreStats,
    StoreWarning,
    check_key,
    json_build,
    unsettled_source,
)
from .artifacts import Artifacts
from .directory import (
    ARTIFACTS_DIR,
    DEFAULT_MAX_SIZE,
    EXPORTS_DIR,
    LOCK_NAME,
    TMP_DIR,
    prepare_store_dir,
    prepare_subdir,
)
from .lock import StoreLock
from .signature import RACY_WINDOW_NS, canonical_key, stat_signature
from .trees import TREES_DIR, Trees

DEFAULT_LOCK_TIMEOUT = 1800.0


class ArtifactStore:
    """A filelock-guarded on-disk store of artifacts derived from source files (a Store): each
    artifact is built once across every process and run, verified before use, and evicted
    least recently used first past ``max_size``.

    ``max_size`` is 8 GiB by default. A full disk is a StoreFullError; the store ``open_store``
    opens turns it into in-process artifacts with one warning instead. ``on_lock_wait`` is
    told, once, when another process holds the lock; ``lock_timeout`` seconds later (1800 by
    default) a StoreLockTimeout is raised. ``racy_window_ns`` is 2 s by default.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        racy_window_ns: int = RACY_WINDOW_NS,
        on_lock_wait: Callable[[str], None] | None = None,
    ) -> None:
        #: The store's directory.
        self.directory = prepare_store_dir(Path(directory))
        self.lock_timeout = lock_timeout
        self.on_lock_wait = on_lock_wait
        #: What this process built and reused.
        self.stats = StoreStats()
        self._warned: set[str] = set()
        self._owner = os.geteuid()  # prepare_store_dir refuses a directory anyone else owns
        self._trees: Trees | None = None
        artifacts = prepare_subdir(self.directory / ARTIFACTS_DIR, self._warn)
        # A replaced artifacts/ lost every file the index names: that was the one warning.
        replaced = bool(self._warned)
        tmp = prepare_subdir(self.directory / TMP_DIR, self._warn)
        exports = prepare_subdir(self.directory / EXPORTS_DIR, self._warn)
        self._lock = StoreLock(self.directory / LOCK_NAME, lock_timeout, self._warn, on_lock_wait)
        self._artifacts = Artifacts(
            self.directory,
            artifacts_dir=artifacts,
            exports_dir=exports,
            tmp_dir=tmp,
            lock=self._lock,
            owner=self._owner,
            max_size=max_size,
            racy_window_ns=racy_window_ns,
            trees=self._tree_dirs,
            warn=self._warn,
            replaced=replaced,
        )
        self._index = self._artifacts.index

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.directory)!r})"

    @property
    def max_size(self) -> int:
        """The size cap: artifacts and trees past it are evicted, least recently used first."""
        return self._artifacts.max_size

    @property
    def racy_window_ns(self) -> int:
        """How recent a source's change must be for its stat signature to be distrusted (and
        its content hashed): a file changed within this window of being read may change again
        without its mtime moving."""
        return self._artifacts.racy_window_ns

    # --- the API other modules build on ---------------------------------------------------------

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        """The ``kind``/``version`` artifact of ``source``'s current content, built at most once.

        ``build(source, out)`` writes the payload to ``out``; it runs under the store lock, so
        every other process asking for the same key waits and then reads what it published.
        Errors from ``build`` propagate and are never recorded. ValueError: a kind or version
        the store cannot record (see ``Store.get_or_build``). StoreFullError: no room on its disk
        for the artifact (or the index that records it); nothing partial is left behind.
        """
        check_key(kind, version)
        key = canonical_key(source)
        for _ in range(MAX_BUILD_ATTEMPTS):
            signature = stat_signature(key, source)
            found = self._artifacts.find(self._index.read(), key, signature, kind, version)
            if found is not None:
                self.stats.reused += 1
                return found
            with self.locked():
                index = self._index.read()
                signature = stat_signature(key, source)
                found = self._artifacts.find(index, key, signature, kind, version, under_lock=True)
                if found is not None:
                    self.stats.reused += 1
                    return found
                built = self._artifacts.make(index, key, signature, kind, version, build)
                if built is not None:
                    self.stats.built += 1
                    return built
        raise unsettled_source(source, kind)

    def get_or_build_json(
        self,
        source: str | os.PathLike[str],
        kind: str,
        version: int,
        compute: Callable[[Path], Any],
    ) -> Any:
        """A JSON-serializable value derived from ``source``, computed at most once."""
        return self.get_or_build(source, kind, version, json_build(compute)).json()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store lock (re-entrant within a process) with a clear error on timeout."""
        with self._lock.held():
            yield

    @property
    def trees(self) -> Trees:
        """The store's published directory trees (``store/trees.py``), made on first use."""
        if self._trees is None:
            self._trees = Trees(self)
        return self._trees

    @property
    def owner(self) -> int:
        """The uid that owns the store (this process's: a store owned by another is refused)."""
        return self._owner

    def warn(self, message: str) -> None:
        """One StoreWarning per message and store: damage found and repaired."""
        self._warn(message)

    def trim(self, *, keep_tree: str | None = None) -> None:
        """Evict to the size cap now (a tree was published), never the tree ``keep_tree``."""
        with self.locked():
            index = self._index.read()
            doomed = self._artifacts.evict(index, "", keep_tree)
            if doomed:
                self._index.write(index)
            for path in doomed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # --- listing, clearing, exporting ------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every source and its artifacts, as the index records them, with file sizes and use."""
        return self._artifacts.entries()

    def total_size(self) -> int:
        """The bytes its artifacts and published trees take."""
        trees = self._tree_dirs()
        total = self._artifacts.total_size()
        return total + (sum(t.size for t in trees.usage()) if trees is not None else 0)

    def clear(self) -> int:
        """Remove every artifact, the index, and every tree no process uses (with the refs and
        state kept beside them); returns the number of artifact files and trees removed."""
        with self.locked():
            removed = self._artifacts.clear()
            trees = self._tree_dirs()
            if trees is not None:
                removed += trees.clear()
        return removed

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        """The payload of ``stored`` as a plain file (for tools that want a path, not bytes):
        ``exports/<artifact name><suffix>``, published atomically, checked against the artifact
        as artifacts are, and pinned (``store/pins.py``) while this store object lives."""
        return self._artifacts.exports.serve(stored, suffix)

    # --- internals ------------------------------------------------------------------------------

    def _tree_dirs(self) -> Trees | None:
        """The trees, when the store has any: a store that never fetched makes no trees/."""
        if self._trees is None and not (self.directory / TREES_DIR).is_dir():
            return None
        return self.trees

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, StoreWarning, stacklevel=3)

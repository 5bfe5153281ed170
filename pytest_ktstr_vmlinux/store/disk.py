"""The on-disk artifact store: one build per artifact across every process and every run.

Layout of the store directory (0700, ours alone; see storedir.py)::

    .ktstr-store        the marker: this directory is a store (storedir.claim_store_dir)
    index.json          canonical source path -> signature -> artifacts (header line + JSON)
    lock                filelock.FileLock: serializes builds and index writes
    lock.owner          who holds the lock, while it is held (storelock.py)
    artifacts/<sha>.art artifact files (artifact.py), named by a hash of their key
    exports/<sha>.<ext> payloads as plain files, for tools that want a path
    tmp/                files being written; anything here while we hold the lock is debris
    trees/              published directory trees, their refs, locks and state (trees.py)

Correctness never rests on the lock: the index and every artifact are published by write to
tmp/, fsync, ``os.replace``, so a reader sees a whole old file or a whole new one, and verifies
it (header, version, length, owner) before use, and every byte of it whenever the index has no
record of a full check of this very file version on this boot (stamps.py). The lock only keeps
N processes from building (or fully checking) the same artifact N times. A crash mid-build
leaves debris in tmp/ and an unchanged index; a full disk is a StoreFullError that leaves
neither. Exports are checked the same way and pinned while served (exports.py, pins.py).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import artifact, exports, stamps
from . import index as storeindex
from .artifact import ArtifactCorrupt, ArtifactOutdated
from .directory import (
    ARTIFACTS_DIR,
    DEFAULT_MAX_SIZE,
    EXPORTS_DIR,
    LOCK_NAME,
    TMP_DIR,
    StoreFullError,
    full_error,
    prepare_store_dir,
    prepare_subdir,
)
from .evict import entry_files, evict, remove_path
from .index import artifact_key, current_entry, signature_fields
from .indexfile import IndexFile
from .lock import StoreLock
from .pins import Pins
from .produce import write_artifact
from .publish import OutOfSpace
from .served import (
    MAX_BUILD_ATTEMPTS,
    Build,
    StoredArtifact,
    StoreStats,
    StoreWarning,
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
from .trees import TREES_DIR, Trees

__all__ = [
    "ArtifactStore",
    "Build",
    "StoreFullError",
    "StoreStats",
    "StoreWarning",
    "StoredArtifact",
    "json_build",
    "unsettled_source",
]

DEFAULT_LOCK_TIMEOUT = 1800.0


class ArtifactStore:
    """A filelock-guarded on-disk store of artifacts derived from source files.

    A full disk is a StoreFullError; storeconfig.SpilloverStore turns it into in-process
    artifacts with one warning.
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
        self.directory = prepare_store_dir(Path(directory))
        self.max_size = max_size
        self.racy_window_ns = racy_window_ns
        self.lock_timeout = lock_timeout
        self.on_lock_wait = on_lock_wait
        self.stats = StoreStats()
        self._warned: set[str] = set()
        self._owner = os.geteuid()  # prepare_store_dir refuses a directory anyone else owns
        self._trees: Trees | None = None
        self._artifacts = prepare_subdir(self.directory / ARTIFACTS_DIR, self._warn)
        # A replaced artifacts/ lost every file the index names: that was the one warning.
        self._artifacts_replaced = bool(self._warned)
        self._tmp = prepare_subdir(self.directory / TMP_DIR, self._warn)
        self._exports = prepare_subdir(self.directory / EXPORTS_DIR, self._warn)
        self._lock = StoreLock(self.directory / LOCK_NAME, lock_timeout, self._warn, on_lock_wait)
        self._index = IndexFile(
            self.directory, tmp_dir=self._tmp, owner=self._owner, lock=self._lock, warn=self._warn
        )
        self._pins = Pins()  # exports served by this store object, kept while it lives

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.directory)!r})"

    # --- the API other modules build on ---------------------------------------------------------

    def get_or_build(
        self, source: str | os.PathLike[str], kind: str, version: int, build: Build
    ) -> StoredArtifact:
        """The ``kind``/``version`` artifact of ``source``'s current content, built at most once.

        ``build(source, out)`` writes the payload to ``out``; it runs under the store lock, so
        every other process asking for the same key waits and then reads what it published.
        Errors from ``build`` propagate and are never recorded. ValueError: a kind or version
        the store cannot record (see stored.check_key). StoreFullError: no room on its disk
        for the artifact (or the index that records it); nothing partial is left behind.
        """
        check_key(kind, version)
        key = canonical_key(source)
        for _ in range(MAX_BUILD_ATTEMPTS):
            signature = stat_signature(key, source)
            found = self._find(self._index.read(), key, signature, kind, version)
            if found is not None:
                self.stats.reused += 1
                return found
            with self.locked():
                index = self._index.read()
                signature = stat_signature(key, source)
                found = self._find(index, key, signature, kind, version, under_lock=True)
                if found is not None:
                    self.stats.reused += 1
                    return found
                built = self._build(index, key, signature, kind, version, build)
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
        """The store's published directory trees (trees.py), made on first use."""
        if self._trees is None:
            self._trees = Trees(self)
        return self._trees

    @property
    def owner(self) -> int:
        return self._owner

    def warn(self, message: str) -> None:
        """One StoreWarning per message and store: damage found and repaired."""
        self._warn(message)

    def trim(self, *, keep_tree: str | None = None) -> None:
        """Evict to the size cap now (a tree was published), never the tree ``keep_tree``."""
        with self.locked():
            index = self._index.read()
            doomed = self._evict(index, "", keep_tree)
            if doomed:
                self._index.write(index)
            for path in doomed:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # --- listing, clearing, exporting ------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every source and its artifacts, as the index records them, with file sizes and use."""
        return storeindex.list_entries(self._index.read(), self._artifacts)

    def total_size(self) -> int:
        """The bytes its artifacts and published trees take."""
        total = 0
        for path in self._artifacts.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        trees = self._tree_dirs()
        return total + (sum(t.size for t in trees.usage()) if trees is not None else 0)

    def clear(self) -> int:
        """Remove every artifact, the index, and every tree no process uses (with the refs and
        state kept beside them); returns the number of artifact files and trees removed."""
        with self.locked():
            removed = 0
            for directory in (self._artifacts, self._tmp, self._exports):
                for path in directory.iterdir():
                    removed += remove_path(path) and directory is self._artifacts
            with contextlib.suppress(FileNotFoundError):
                self._index.path.unlink()
            trees = self._tree_dirs()
            if trees is not None:
                removed += trees.clear()
            storeindex.fsync_dir(self.directory)
        return removed

    def _evict(self, index: dict[str, Any], keep: str, keep_tree: str | None = None) -> list[Path]:
        return evict(
            index,
            artifacts=self._artifacts,
            tmp=self._tmp,
            exports=self._exports,
            max_size=self.max_size,
            keep=keep,
            trees=self._tree_dirs(),
            keep_tree=keep_tree,
        )

    def _tree_dirs(self) -> Trees | None:
        """The trees, when the store has any: a store that never fetched makes no trees/."""
        if self._trees is None and not (self.directory / TREES_DIR).is_dir():
            return None
        return self.trees

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        """The payload of ``stored`` as a plain file (for tools that want a path, not bytes):
        ``exports/<artifact name><suffix>``, published atomically, checked against the artifact
        as artifacts are, and pinned (pins.py) while this store object lives."""
        assert stored.file is not None
        path = self._exports / f"{stored.file.path.stem}{suffix}"
        try:
            exports.serve(
                path,
                stored,
                suffix,
                index=self._index,
                lock=self._lock,
                pins=self._pins,
                owner=self._owner,
                tmp_dir=self._tmp,
                warn=self._warn,
            )
        except OutOfSpace as e:
            what = f"writing an export of the {stored.kind} artifact of {stored.source}"
            raise full_error(self.directory, e, what, e.needed) from None
        return path

    # --- internals ------------------------------------------------------------------------------

    def _find(
        self,
        index: dict[str, Any],
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        *,
        under_lock: bool = False,
    ) -> StoredArtifact | None:
        entry = current_entry(index, key, signature)
        if entry is None:
            return None
        record = entry["artifacts"].get(artifact_key(kind, version))
        if record is None:
            return None
        if is_racy(
            signature, entry["recorded_ns"], self.racy_window_ns
        ) and not self._index.reverify(key, signature, entry):
            return None
        path = self._artifacts / record["file"]
        checked = record.get("checked")
        # Without the lock only a file checked in full on this boot is served: the full check
        # is made under the lock, so N processes wait for one check instead of making N.
        full = (lambda sig: not stamps.is_checked(checked, sig)) if under_lock else False
        try:
            found = artifact.open_artifact(path, kind, version, owner=self._owner, full=full)
        except FileNotFoundError:
            # Without the lock, another process may have evicted or replaced it a moment ago;
            # under the lock, an index naming a missing file is damage worth a word.
            if under_lock and not self._artifacts_replaced:
                what = f"kernel cache artifact {path} ({kind} of {key})"
                self._warn(f"{what} is unusable: missing; rebuilding")
            return None
        except ArtifactOutdated:
            return None  # built by an earlier version: rebuilt like any other format change
        except ArtifactCorrupt as e:
            self._warn(
                f"kernel cache artifact {path} ({kind} of {key}) is unusable: {e}; rebuilding"
            )
            return None
        assert found.signature is not None
        if not found.checked and not stamps.is_checked(checked, found.signature):
            return None  # not checked in full on this boot: under the lock, it is
        if found.checked or stamps.use_is_due(found.signature):
            self._index.record_check(key, signature, kind, version, found)
        return StoredArtifact(key, signature, kind, version, file=found)

    def _build(
        self,
        index: dict[str, Any],
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        build: Build,
    ) -> StoredArtifact | None:
        """Build, verify the source held still, publish, record. None: the source moved.

        Files the new index no longer names are unlinked only once it is written: if that write
        fails, the old index still finds everything it names."""
        recorded_ns = time.time_ns()
        entry = current_entry(index, key, signature)
        doomed: list[Path] = []
        if entry is None:
            if key in index["sources"]:  # built from an older version of the source
                doomed += [self._artifacts / n for n in entry_files(index["sources"][key])]
            entry = {
                "signature": signature_fields(signature),
                "recorded_ns": recorded_ns,
                "sha256": None,
                "artifacts": {},
            }
        racy = is_racy(signature, entry["recorded_ns"], self.racy_window_ns)
        digest_before = sha256_file(key) if racy else None
        if racy and entry["sha256"] not in (None, digest_before):
            # Same signature, other content: what was built from the old content is stale.
            doomed += [self._artifacts / n for n in entry_files(entry)]
            entry["artifacts"] = {}
        made = write_artifact(
            self.directory,
            self._tmp,
            self._artifacts,
            key,
            signature,
            kind,
            version,
            build,
            digest_before,
        )
        if made is None:
            return None
        built, checked = made
        final = built.path
        if racy:
            entry["sha256"] = digest_before
        previous = entry["artifacts"].get(artifact_key(kind, version), {})
        entry["artifacts"][artifact_key(kind, version)] = {
            "file": final.name,
            "builds": previous.get("builds", 0) + 1,
            "built_ns": time.time_ns(),
            "checked": checked,
        }
        index["sources"][key] = entry
        index["builds"] = index.get("builds", 0) + 1
        doomed += self._evict(index, final.name)
        try:
            self._index.write(index)
        except StoreFullError:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()  # no index names it: an orphan that only costs space
            raise
        for path in doomed:
            if path != final:  # a racy rebuild of the same key reuses its name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return StoredArtifact(key, signature, kind, version, file=built)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, StoreWarning, stacklevel=3)

"""The on-disk artifact store: one build per artifact across every process and every run.

Layout of the store directory (0700, ours alone; see storedir.py)::

    .ktstr-store        the marker: this directory is a store (storedir.claim_store_dir)
    index.json          canonical source path -> signature -> artifacts (header line + JSON)
    lock                filelock.FileLock: serializes builds and index writes
    artifacts/<sha>.art artifact files (artifact.py), named by a hash of their key
    tmp/                files being written; anything here while we hold the lock is debris

Correctness never rests on the lock: the index and every artifact are published by write to
tmp/, fsync, ``os.replace``, so a reader sees a whole old file or a whole new one, and verifies
it (header, version, checksum) before use. The lock only keeps N processes from building the
same artifact N times. A crash mid-build leaves debris in tmp/ and an unchanged index.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from . import artifact, storeindex
from .artifact import Artifact, ArtifactCorrupt
from .errors import KernelArtifactError
from .evict import entry_files, evict, remove_path
from .publish import publish
from .signature import (
    RACY_WINDOW_NS,
    StatSignature,
    canonical_key,
    is_racy,
    not_ours_alone,
    sha256_file,
    stat_signature,
)
from .stored import (
    MAX_BUILD_ATTEMPTS,
    Build,
    StoredArtifact,
    StoreStats,
    StoreWarning,
    check_key,
    json_build,
    unsettled_source,
)
from .storedir import (
    ARTIFACTS_DIR,
    DEFAULT_MAX_SIZE,
    EXPORTS_DIR,
    INDEX_NAME,
    LOCK_NAME,
    TMP_DIR,
    prepare_lock,
    prepare_store_dir,
    prepare_subdir,
)

__all__ = [
    "ArtifactStore",
    "Build",
    "StoreStats",
    "StoreWarning",
    "StoredArtifact",
    "json_build",
    "unsettled_source",
]

DEFAULT_LOCK_TIMEOUT = 1800.0


class ArtifactStore:
    """A filelock-guarded on-disk store of artifacts derived from source files."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        racy_window_ns: int = RACY_WINDOW_NS,
    ) -> None:
        self.directory = prepare_store_dir(Path(directory))
        self.max_size = max_size
        self.racy_window_ns = racy_window_ns
        self.stats = StoreStats()
        self._warned: set[str] = set()
        self._owner = os.geteuid()  # prepare_store_dir refuses a directory anyone else owns
        warned = len(self._warned)
        self._artifacts = prepare_subdir(self.directory / ARTIFACTS_DIR, self._warn)
        # A replaced artifacts/ lost every file the index names: that was the one warning.
        self._artifacts_replaced = len(self._warned) > warned
        self._tmp = prepare_subdir(self.directory / TMP_DIR, self._warn)
        self._exports = prepare_subdir(self.directory / EXPORTS_DIR, self._warn)
        self._index_path = self.directory / INDEX_NAME
        self._lock_path = self.directory / LOCK_NAME
        prepare_lock(self._lock_path, self._warn)
        self._lock = FileLock(str(self._lock_path), timeout=lock_timeout, **_strict_lock_kwargs())
        self._thread_lock = threading.RLock()

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
        the store cannot record (see stored.check_key).
        """
        check_key(kind, version)
        key = canonical_key(source)
        for _ in range(MAX_BUILD_ATTEMPTS):
            signature = stat_signature(key, source)
            found = self._find(self._read_index(), key, signature, kind, version)
            if found is not None:
                self.stats.reused += 1
                return found
            with self.locked():
                index = self._read_index()
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
        with self._thread_lock:
            prepare_lock(self._lock_path, self._warn)
            try:
                self._lock.acquire()
            except Timeout:  # a TimeoutError, so an OSError: it must be caught first
                raise KernelArtifactError(
                    f"kernel cache {self.directory}: lock {self._lock.lock_file} still held after"
                    f" {self._lock.timeout:.0f} s; another run is building, or hung"
                ) from None
            except OSError as e:
                raise KernelArtifactError(
                    f"kernel cache lock {self._lock.lock_file}: {e.strerror or e}; remove it and"
                    " run again"
                ) from None
            try:
                yield
            finally:
                self._lock.release()

    # --- listing and clearing -------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every source and its artifacts, as the index records them, with file sizes and use."""
        listing = []
        for source, entry in sorted(self._read_index()["sources"].items()):
            artifacts = []
            for key, record in sorted(entry["artifacts"].items()):
                path = self._artifacts / record["file"]
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                kind, _, version = key.rpartition(":")
                artifacts.append(
                    {
                        "kind": kind,
                        "version": int(version),
                        "file": str(path),
                        "size": st.st_size,
                        "builds": record["builds"],
                        "last_used_ns": st.st_mtime_ns,
                    }
                )
            listing.append(
                {"source": source, "signature": entry["signature"], "artifacts": artifacts}
            )
        return listing

    def total_size(self) -> int:
        total = 0
        for path in self._artifacts.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total

    def clear(self) -> int:
        """Remove every artifact and the index; returns the number of artifact files removed."""
        with self.locked():
            removed = 0
            for directory in (self._artifacts, self._tmp, self._exports):
                for path in directory.iterdir():
                    removed += remove_path(path) and directory is self._artifacts
            with contextlib.suppress(FileNotFoundError):
                self._index_path.unlink()
            storeindex.fsync_dir(self.directory)
        return removed

    def export(self, stored: StoredArtifact, suffix: str) -> Path:
        """The payload of ``stored`` as a plain file (for tools that want a path, not bytes):
        ``exports/<artifact name><suffix>``, published atomically, removed with its artifact."""
        assert stored.file is not None
        path = self._exports / f"{stored.file.path.stem}{suffix}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if (
            st is not None
            and stat.S_ISREG(st.st_mode)
            and st.st_size == stored.size
            and not_ours_alone(st, self._owner) is None
        ):
            return path
        with self.locked():
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._warn(f"kernel cache export {path} is a directory; replacing it")
                remove_path(path)
            publish(path, stored.map(), tmp_dir=self._tmp, prefix="export-")
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
        entry = _current_entry(index, key, signature)
        if entry is None:
            return None
        record = entry["artifacts"].get(_artifact_key(kind, version))
        if record is None:
            return None
        if is_racy(signature, entry["recorded_ns"], self.racy_window_ns) and not self._reverify(
            key, signature, entry
        ):
            return None
        path = self._artifacts / record["file"]
        try:
            found = artifact.open_artifact(path, kind, version, owner=self._owner)
        except FileNotFoundError:
            # Without the lock, another process may have evicted or replaced it a moment ago;
            # under the lock, an index naming a missing file is damage worth a word.
            if under_lock and not self._artifacts_replaced:
                what = f"kernel cache artifact {path} ({kind} of {key})"
                self._warn(f"{what} is unusable: missing; rebuilding")
            return None
        except ArtifactCorrupt as e:
            self._warn(
                f"kernel cache artifact {path} ({kind} of {key}) is unusable: {e}; rebuilding"
            )
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for LRU eviction
        return StoredArtifact(key, signature, kind, version, file=found)

    def _reverify(self, key: str, signature: StatSignature, entry: dict[str, Any]) -> bool:
        """Racy entry: its content hash decides. A match is recorded so the check stops once the
        timestamp window has passed."""
        started_ns = time.time_ns()
        try:
            digest = sha256_file(key)
        except OSError:
            return False
        if digest != entry.get("sha256"):
            return False
        with self.locked():
            index = self._read_index()
            current = _current_entry(index, key, signature)
            if current is not None:
                current["recorded_ns"] = max(current["recorded_ns"], started_ns)
                self._write_index(index)
        return True

    def _build(
        self,
        index: dict[str, Any],
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        build: Build,
    ) -> StoredArtifact | None:
        """Build, verify the source held still, publish, record. None: the source moved."""
        recorded_ns = time.time_ns()
        entry = _current_entry(index, key, signature)
        if entry is None:
            if key in index["sources"]:  # built from an older version of the source
                self._remove_entry_files(index["sources"][key])
            entry = {
                "signature": list(_fields(signature)),
                "recorded_ns": recorded_ns,
                "sha256": None,
                "artifacts": {},
            }
        racy = is_racy(signature, entry["recorded_ns"], self.racy_window_ns)
        digest_before = sha256_file(key) if racy else None
        if racy and entry["sha256"] not in (None, digest_before):
            # Same signature, other content: what was built from the old content is stale.
            self._remove_entry_files(entry)
            entry["artifacts"] = {}
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="build-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                artifact.begin(out)
                build(Path(key), out)
                size = artifact.finish(out, kind, version)
                os.fsync(out.fileno())
                view = artifact.map_payload(out.fileno(), size)
            moved = stat_signature(key, key) != signature
            if not moved and racy:
                moved = sha256_file(key) != digest_before
            if moved:
                tmp.unlink()
                return None
            name = hashlib.sha256(
                json.dumps([key, _fields(signature), kind, version]).encode()
            ).hexdigest()
            final = self._artifacts / f"{name}.art"
            if _is_directory(final):
                remove_path(final)  # os.replace cannot put a file over a directory
            os.replace(tmp, final)
            storeindex.fsync_dir(self._artifacts)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        if racy:
            entry["sha256"] = digest_before
        previous = entry["artifacts"].get(_artifact_key(kind, version), {})
        entry["artifacts"][_artifact_key(kind, version)] = {
            "file": final.name,
            "builds": previous.get("builds", 0) + 1,
            "built_ns": time.time_ns(),
        }
        index["sources"][key] = entry
        index["builds"] = index.get("builds", 0) + 1
        self._evict(index, keep=final.name)
        self._write_index(index)
        built = Artifact(path=final, kind=kind, version=version, size=size, view=view)
        return StoredArtifact(key, signature, kind, version, file=built)

    def _evict(self, index: dict[str, Any], keep: str) -> None:
        evict(
            index,
            artifacts=self._artifacts,
            tmp=self._tmp,
            exports=self._exports,
            max_size=self.max_size,
            keep=keep,
        )

    def _remove_entry_files(self, entry: dict[str, Any]) -> None:
        for name in entry_files(entry):
            with contextlib.suppress(FileNotFoundError):
                (self._artifacts / name).unlink()

    def _read_index(self) -> dict[str, Any]:
        """The index, or an empty one (with one warning) when it is missing or unusable. A
        malformed entry is dropped alone (one warning) and the index written back without it."""
        dropped: list[str] = []
        index = self._load_index(dropped)
        if dropped:
            shown = "; ".join(dropped[:3]) + (
                f"; {len(dropped) - 3} more" if len(dropped) > 3 else ""
            )
            self._warn(
                f"kernel cache index {self._index_path}: dropped {len(dropped)} malformed"
                f" {'entry' if len(dropped) == 1 else 'entries'} ({shown}); rebuilding"
                f" {'it' if len(dropped) == 1 else 'them'} when needed"
            )
            self._repair_index()
        return index

    def _load_index(self, dropped: list[str]) -> dict[str, Any]:
        try:
            raw = storeindex.read_index_file(self._index_path, self._owner)
            if raw is None:
                return storeindex.empty_index()
        except ValueError as e:
            self._warn(f"kernel cache index {self._index_path} {e}; rebuilding it")
            return storeindex.empty_index()
        try:
            return storeindex.parse_index(raw, dropped)
        except ValueError as e:
            self._warn(f"kernel cache index {self._index_path} is unusable: {e}; rebuilding it")
            return storeindex.empty_index()

    def _repair_index(self) -> None:
        """Write the index back without its malformed entries, if the lock is free right now: a
        holder writes the index soon anyway (and drops them too)."""
        with self._thread_lock:
            try:
                self._lock.acquire(timeout=0)
            except (Timeout, OSError):
                return
            try:
                dropped: list[str] = []
                index = self._load_index(dropped)
                if dropped:
                    self._write_index(index)
            except (OSError, KernelArtifactError):
                pass  # an optimization: the next write tries again
            finally:
                self._lock.release()

    def _write_index(self, index: dict[str, Any]) -> None:
        if _is_directory(self._index_path):
            remove_path(self._index_path)  # os.replace cannot put a file over a directory
        storeindex.write_index(self._index_path, index, tmp_dir=self._tmp)

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, StoreWarning, stacklevel=3)


def _is_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _artifact_key(kind: str, version: int) -> str:
    return f"{kind}:{version}"


def _current_entry(
    index: dict[str, Any], key: str, signature: StatSignature
) -> dict[str, Any] | None:
    """The index entry of ``key`` if it was recorded for this version of the source."""
    entry: dict[str, Any] | None = index["sources"].get(key)
    if entry is None or entry["signature"] != list(_fields(signature)):
        return None
    return entry


def _fields(signature: StatSignature) -> tuple[int, int, int, int, int]:
    return (
        signature.st_dev,
        signature.st_ino,
        signature.st_size,
        signature.st_mtime_ns,
        signature.st_ctime_ns,
    )


def _strict_lock_kwargs() -> dict[str, Any]:
    # filelock >= 4 can fall back to a soft (existence) lock where flock is missing; the store
    # would rather fail loudly there than trust a weaker lock without saying so.
    parameters = inspect.signature(FileLock.__init__).parameters
    return {"fallback_to_soft": False} if "fallback_to_soft" in parameters else {}

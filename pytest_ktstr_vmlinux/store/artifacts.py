"""The artifact files of the on-disk store, the index that records them, and their exports.

An artifact is found only through the index's record for the current signature of its source,
and served only once its file is checked: in full (every byte against its digest) unless its
stamp says this very file was checked in full on this boot (``store/index.py``). Without the store
lock only such a file is served; the full check is made under the lock, so N processes wait for
one check instead of making N.

An artifact is made under the lock: built in ``tmp/``, the source checked to have held still,
published under a name hashed from its key (the source's canonical path, its signature, the kind
and the version: never a user's path) by one rename, recorded in the index, and the store evicted
to its size cap (``store/evict.py``). Files the new index no longer names are unlinked only once it
is written: if that write fails (a full disk), the old index still finds every file it names.
Exports (``store/exports.py``) are named after their artifact and evicted with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .api import Build, StoredArtifact, StoreFullError, full_error
from .artifact import Artifact, ArtifactCorrupt, ArtifactOutdated, build_file, open_artifact
from .evict import EvictableTrees, evict
from .exports import Exports
from .files import OutOfSpace, fsync_dir, remove_path, use_is_due
from .index import (
    IndexFile,
    Stamp,
    artifact_key,
    current_entry,
    entry_files,
    is_checked,
    signature_fields,
    touch,
)
from .lock import StoreLock
from .signature import StatSignature, is_racy, sha256_file, stat_signature


class Artifacts:
    """``artifacts/``, ``exports/``, ``tmp/`` and the index of the store at ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        artifacts_dir: Path,
        exports_dir: Path,
        tmp_dir: Path,
        lock: StoreLock,
        owner: int,
        max_size: int,
        racy_window_ns: int,
        trees: Callable[[], EvictableTrees | None],
        warn: Callable[[str], None],
        replaced: bool = False,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.racy_window_ns = racy_window_ns
        self._artifacts = artifacts_dir
        self._exports_dir = exports_dir
        self._tmp = tmp_dir
        self._owner = owner
        self._trees = trees
        self._warn = warn
        # A replaced artifacts/ lost every file the index names: that was the one warning.
        self._replaced = replaced
        self.index = IndexFile(directory, tmp_dir=tmp_dir, owner=owner, lock=lock, warn=warn)
        self.exports = Exports(
            directory,
            exports_dir,
            index=self.index,
            lock=lock,
            owner=owner,
            tmp_dir=tmp_dir,
            warn=warn,
        )

    def find(
        self,
        index: dict[str, Any],
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        *,
        under_lock: bool = False,
    ) -> StoredArtifact | None:
        """The artifact ``index`` records for this version of ``key``, checked; None when there
        is none to serve (or, without the lock, none checked in full on this boot)."""
        entry = current_entry(index, key, signature)
        if entry is None:
            return None
        record = entry["artifacts"].get(artifact_key(kind, version))
        if record is None:
            return None
        if is_racy(
            signature, entry["recorded_ns"], self.racy_window_ns
        ) and not self.index.reverify(key, signature, entry):
            return None
        path = self._artifacts / record["file"]
        checked = record.get("checked")
        full = (lambda sig: not is_checked(checked, sig)) if under_lock else False
        try:
            found = open_artifact(path, kind, version, owner=self._owner, full=full)
        except FileNotFoundError:
            # Without the lock, another process may have evicted or replaced it a moment ago;
            # under the lock, an index naming a missing file is damage worth a word.
            if under_lock and not self._replaced:
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
        if not found.checked and not is_checked(checked, found.signature):
            return None  # not checked in full on this boot: under the lock, it is
        if found.checked or use_is_due(found.signature.st_mtime_ns):
            self.index.record_check(key, signature, kind, version, path, found.signature)
        return StoredArtifact(key, signature, kind, version, file=found)

    def make(
        self,
        index: dict[str, Any],
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        build: Build,
    ) -> StoredArtifact | None:
        """Build, verify the source held still, publish, record in ``index`` and write it (hold
        the store lock). None: the source moved."""
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
        made = self._write(key, signature, kind, version, build, digest_before)
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
        doomed += self.evict(index, final.name)
        try:
            self.index.write(index)
        except StoreFullError:
            with contextlib.suppress(FileNotFoundError):
                final.unlink()  # no index names it: an orphan that only costs space
            raise
        for path in doomed:
            if path != final:  # a racy rebuild of the same key reuses its name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return StoredArtifact(key, signature, kind, version, file=built)

    def _write(
        self,
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        build: Build,
        digest_before: str | None,
    ) -> tuple[Artifact, Stamp] | None:
        """The artifact built in ``tmp/`` and published in ``artifacts/`` under its hashed
        name, mapped, and its stamp (checked in full: its digest was just computed from what
        was written). None when the source moved meanwhile (re-hashed when ``digest_before`` is
        given). Nothing stays in ``tmp/``; a full disk is a StoreFullError naming the space
        needed."""
        try:
            made = build_file(self._tmp, kind, version, lambda out: build(Path(key), out))
        except OutOfSpace as e:
            what = f"writing the {kind} artifact of {key}"
            raise full_error(self.directory, e, what, e.needed, exact=e.exact) from None
        tmp = made.path
        try:
            moved = stat_signature(key, key) != signature
            if not moved and digest_before is not None:
                moved = sha256_file(key) != digest_before
            if moved:
                tmp.unlink()
                return None
            name = hashlib.sha256(
                json.dumps([key, signature_fields(signature), kind, version]).encode()
            ).hexdigest()
            final = self._artifacts / f"{name}.art"
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(final).st_mode):
                    remove_path(final)  # os.replace cannot put a file over a directory
            os.replace(tmp, final)
            fsync_dir(self._artifacts)
            checked = touch(final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        built = dataclasses.replace(made, path=final, signature=StatSignature(*checked[1:]))
        return built, checked

    def evict(self, index: dict[str, Any], keep: str, keep_tree: str | None = None) -> list[Path]:
        """Evict from ``index`` to the size cap, never the artifact ``keep`` nor the tree
        ``keep_tree``; the files to unlink once ``index`` is written."""
        return evict(
            index,
            artifacts=self._artifacts,
            tmp=self._tmp,
            exports=self._exports_dir,
            max_size=self.max_size,
            keep=keep,
            trees=self._trees(),
            keep_tree=keep_tree,
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every source and its artifacts as the index records them, with the sizes and last use
        of the artifact files (those missing or not regular files are left out)."""
        listing = []
        for source, entry in sorted(self.index.read()["sources"].items()):
            found = []
            for key, record in sorted(entry["artifacts"].items()):
                path = self._artifacts / record["file"]
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                kind, _, version = key.rpartition(":")
                found.append(
                    {
                        "kind": kind,
                        "version": int(version),
                        "file": str(path),
                        "size": st.st_size,
                        "builds": record["builds"],
                        "last_used_ns": st.st_mtime_ns,
                    }
                )
            listing.append({"source": source, "signature": entry["signature"], "artifacts": found})
        return listing

    def total_size(self) -> int:
        """The bytes the artifact files take."""
        total = 0
        for path in self._artifacts.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
        return total

    def clear(self) -> int:
        """Remove every artifact, export and temp file and the index (hold the store lock);
        returns the number of artifact files removed."""
        removed = 0
        for directory in (self._artifacts, self._tmp, self._exports_dir):
            for path in directory.iterdir():
                removed += remove_path(path) and directory is self._artifacts
        with contextlib.suppress(FileNotFoundError):
            self.index.path.unlink()
        fsync_dir(self.directory)
        return removed

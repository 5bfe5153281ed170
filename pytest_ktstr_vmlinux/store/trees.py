"""Published directory trees: whole directories the store keeps (a fetched kernel's root), that
appear at once, are used in place, and go only while nobody uses them.

Layout, under the store's ``trees/`` (0700, as the rest of the store)::

    <name>/             a published tree; the caller names it with 64 hex digits (a hash)
      tree.json         the caller's record, every file with its stat signature and size
      used              its mtime is the tree's last use, which eviction reads
      root/...          the files
    refs/<hash>.json    a name the caller looks trees up by ("debian:sid") -> a tree, and
                        what the caller recorded about that lookup
    locks/<hash>.lock   one lock per name a caller builds under (a StoreLock)
    staging/            trees being built, and trees being removed
    state/<name>/       a caller's private state that outlives runs (apt lists)

Invariants, and why they hold:

- A tree is under its name only whole. It is built in ``staging/``, its ``tree.json`` written
  last, and renamed into place by one rename(2). It leaves by a rename back into ``staging/``
  before anything in it is removed. A reader sees a whole tree or none; a process killed while
  building leaves debris in ``staging/`` only, removed by the next build under the same lock.
- A tree in use stays. A process using one holds a shared flock on its ``tree.json`` for as long
  as its store lives (``pins.py``); removal (eviction, ``kernels remove``) needs an exclusive
  flock on it, which it cannot get while any pin is held, and the kernel drops a crashed
  process's pins.
- What is served is what was published: every file's stat signature (device, inode, size,
  mtime, ctime) is recorded after its last change, and compared at every open; a write, a
  chmod, a replaced file all move it. A tree that fails the check is ``TreeDamaged``. Its
  SHA-256 is recorded too: a tree whose files were copied (new inodes and times, the same bytes:
  a store restored from a CI cache) is published again as it is (``reseal``), never served
  unchecked. (The files of one tree, its record and its removal: ``treefiles.py``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import KernelArtifactError
from . import pins
from .directory import prepare_subdir
from .files import OPEN_FLAGS, fsync_dir, publish
from .lock import StoreLock
from .signature import StatSignature
from .treefiles import (  # TreeDamaged, TreeUsage: callers import them from here
    RECORD_NAME,
    USED_NAME,
    TreeDamaged,
    TreeUsage,
    freeze,
    read_json,
    read_record,
    record_use,
    refreeze,
    remove_tree,
    remove_tree_dir,
    same_content,
    touch,
    tree_usage,
    verify,
)

__all__ = ["RECORD_NAME", "TREES_DIR", "Tree", "TreeDamaged", "TreeUsage", "Trees", "key_of"]

TREES_DIR = "trees"
ROOT_NAME = "root"
REFS_DIR = "refs"
LOCKS_DIR = "locks"
STAGING_DIR = "staging"
STATE_DIR = "state"
TREE_NAME_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_STATE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", re.ASCII)
_ATTEMPTS = 5


@dataclass(frozen=True)
class Tree:
    """A published tree, checked and pinned: ``root`` is its files, ``record`` what the caller
    recorded when it published it."""

    name: str
    root: Path
    record: dict[str, Any]
    size: int


class TreeHost(Protocol):
    """What trees need of the store that keeps them (``disk.ArtifactStore``)."""

    directory: Path
    lock_timeout: float
    on_lock_wait: Callable[[str], None] | None

    @property
    def owner(self) -> int: ...

    def warn(self, message: str) -> None: ...

    def trim(self, *, keep_tree: str | None = None) -> None: ...


def _check_name(name: str) -> None:
    if not TREE_NAME_RE.fullmatch(name):
        raise ValueError(f"tree name {name!r}: 64 lowercase hex digits (a hash)")


def key_of(name: str) -> str:
    """The file name a ref or lock name is kept under: never a user's text."""
    return hashlib.sha256(name.encode()).hexdigest()


class Trees:
    """The trees of one ArtifactStore (``store.trees``)."""

    def __init__(self, store: TreeHost) -> None:
        self._store = store
        self._warn = store.warn
        self.directory = prepare_subdir(store.directory / TREES_DIR, self._warn)
        self._refs = prepare_subdir(self.directory / REFS_DIR, self._warn)
        self._locks_dir = prepare_subdir(self.directory / LOCKS_DIR, self._warn)
        self._staging = prepare_subdir(self.directory / STAGING_DIR, self._warn)
        self._state = prepare_subdir(self.directory / STATE_DIR, self._warn)
        self._locks: dict[str, StoreLock] = {}
        self._pins = pins.Pins()

    def warn(self, message: str) -> None:
        """One StoreWarning: damage found, and what is done about it."""
        self._warn(message)

    # --- building and publishing -----------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the lock of ``name`` (re-entrant in a process): one process builds what ``name``
        stands for while the others wait, then find it published."""
        lock = self._locks.get(name)
        if lock is None:
            path = self._locks_dir / f"{key_of(name)}.lock"
            lock = StoreLock(path, self._store.lock_timeout, self._warn, self._store.on_lock_wait)
            self._locks[name] = lock
        with lock.held():
            yield

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A new empty directory to build the tree ``name`` in (its files go in ``root/``
        inside); removed on the way out unless it was published. Debris of earlier builds of
        the same tree, by processes that were killed, is removed first: call this under
        ``locked(name)``."""
        self.sweep(name)
        path = self._staging / f"{key_of(name)[:32]}-{os.getpid()}-{secrets.token_hex(4)}"
        os.mkdir(path, 0o700)
        os.mkdir(path / ROOT_NAME, 0o700)
        try:
            yield path
        finally:
            if path.exists():
                remove_tree_dir(path)

    def sweep(self, name: str) -> None:
        """Remove what killed builds of ``name`` left in staging (hold ``locked(name)``)."""
        prefix = f"{key_of(name)[:32]}-"
        for entry in self._staging.iterdir():
            if entry.name.startswith(prefix):
                remove_tree_dir(entry)

    def publish(self, name: str, staging: Path, record: dict[str, Any]) -> Tree:
        """Publish what ``staging`` (from ``staging(name)``) holds as the tree ``name``: its
        files made read-only, their signatures and ``record`` written to ``tree.json``, the
        directory renamed into place (replacing a damaged tree of that name), the store trimmed
        to its size cap (never evicting this tree), and the tree pinned for this process."""
        _check_name(name)
        files = freeze(staging / ROOT_NAME)
        size = sum(f["size"] for f in files if f["type"] == "file")
        body = {"name": name, "record": record, "size": size, "files": files}
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        publish(staging / RECORD_NAME, data, tmp_dir=staging, prefix="record-")
        touch(staging / USED_NAME)
        final = self.directory / name
        if os.path.lexists(final):
            self._discard(final)
        os.rename(staging, final)
        fsync_dir(self.directory)
        self._store.trim(keep_tree=name)
        tree = self.open(name)
        if tree is None:
            raise KernelArtifactError(
                f"kernel cache tree {final} was removed as soon as it was published; run again"
            )
        return tree

    # --- using -----------------------------------------------------------------------------------

    def open(self, name: str) -> Tree | None:
        """The published tree ``name``, checked and pinned; None when there is none (or it went
        while it was opened). TreeDamaged when it is there but not what was published."""
        _check_name(name)
        path = self.directory / name / RECORD_NAME
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(path, OPEN_FLAGS)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise TreeDamaged(f"kernel cache tree {path.parent}: {e.strerror}") from None
            try:
                st = os.fstat(fd)
                body = read_record(fd, st, path, self._store.owner)
            except BaseException:
                os.close(fd)
                raise
            if not self._pins.pin(path, fd, StatSignature.from_stat(st)):
                continue  # removed or replaced this instant: look again
            root = path.parent / ROOT_NAME
            try:
                verify(root, body["files"])
            except TreeDamaged:
                self._pins.unpin(path)  # else this process's own pin blocks the tree's removal
                raise
            record_use(path.parent / USED_NAME)
            return Tree(name, root, body["record"], body["size"])
        return None

    def reseal(self, name: str) -> Tree | None:
        """The tree ``name`` that ``open`` found damaged, kept when only its files' inodes and
        times moved, not their bytes (a store copied, or restored from a CI cache's archive):
        checked against the SHA-256 of every file recorded at publication, and its record
        replaced (one rename: the tree never leaves, an opener meanwhile sees it damaged and
        comes here). None when the content differs too, or the record has no hashes: remove
        it. Under ``locked(name)``, so of several processes one reseals, the others open."""
        _check_name(name)
        with self.locked(name):
            with contextlib.suppress(TreeDamaged):
                return self.open(name)  # resealed by another process while this one waited
            path = self.directory / name / RECORD_NAME
            try:
                fd = os.open(path, OPEN_FLAGS)
            except OSError:
                return None
            try:
                body = read_record(fd, os.fstat(fd), path, self._store.owner)
            except TreeDamaged:
                return None
            finally:
                os.close(fd)
            root = path.parent / ROOT_NAME
            if not same_content(root, body["files"]):
                return None
            body = {**body, "files": refreeze(root, body["files"])}
            data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
            # In staging under the tree's prefix: a killed reseal's temp file is swept as debris.
            publish(path, data, tmp_dir=self._staging, prefix=f"{key_of(name)[:32]}-record-")
            return self.open(name)

    def usage(self) -> list[TreeUsage]:
        """Every published tree with its size and last use (damaged ones too: they take room)."""
        found = []
        for entry in sorted(self.directory.iterdir()):
            if not TREE_NAME_RE.fullmatch(entry.name) or not entry.is_dir():
                continue
            found.append(tree_usage(entry, self._store.owner))
        return found

    def in_use(self, name: str) -> bool:
        """True while some process holds a pin on the tree."""
        return pins.in_use(self.directory / name / RECORD_NAME)

    def remove(self, name: str) -> bool:
        """Remove the tree unless a process uses it; True when it is gone."""
        _check_name(name)
        return remove_tree(self.directory / name, self._staging)

    # --- refs ------------------------------------------------------------------------------------

    def read_ref(self, name: str) -> dict[str, Any] | None:
        """What ``write_ref`` recorded for ``name``, None when nothing (or something unusable,
        said once) is recorded."""
        path = self._refs / f"{key_of(name)}.json"
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._warn(f"kernel cache ref {path}: {e.strerror}; ignoring it")
            return None
        try:
            st = os.fstat(fd)
            try:
                ref = read_json(fd, st, path, self._store.owner)
            except TreeDamaged as e:
                self._warn(f"{e}; ignoring it")
                return None
        finally:
            os.close(fd)
        if ref.get("name") != name or not TREE_NAME_RE.fullmatch(str(ref.get("tree"))):
            self._warn(f"kernel cache ref {path} is not the ref of {name!r}; ignoring it")
            return None
        return ref

    def write_ref(self, name: str, tree: str, data: dict[str, Any]) -> None:
        """Record that ``name`` stands for ``tree`` now, with ``data``; published atomically."""
        _check_name(tree)
        body = {"name": name, "tree": tree, "data": data, "written_ns": time.time_ns()}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        publish(self._refs / f"{key_of(name)}.json", payload, tmp_dir=self._staging, prefix="ref-")

    def refs(self) -> list[dict[str, Any]]:
        """Every ref, as ``read_ref`` gives it."""
        found = []
        for path in sorted(self._refs.glob("*.json")):
            try:
                fd = os.open(path, OPEN_FLAGS)
            except OSError:
                continue
            try:
                found.append(read_json(fd, os.fstat(fd), path, self._store.owner))
            except TreeDamaged:
                continue
            finally:
                os.close(fd)
        return [ref for ref in found if TREE_NAME_RE.fullmatch(str(ref.get("tree")))]

    def remove_ref(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._refs / f"{key_of(name)}.json")

    # --- state -----------------------------------------------------------------------------------

    def state_dir(self, name: str) -> Path:
        """A private directory for a caller's state that outlives runs; ``name`` is a short
        safe name of the caller's choosing (``debian-sid-amd64``)."""
        if not _STATE_NAME_RE.fullmatch(name):
            raise ValueError(f"state directory name {name!r}: letters, digits and ._+- only")
        return prepare_subdir(self._state / name, self._warn)

    # --- clearing --------------------------------------------------------------------------------

    def clear(self) -> int:
        """Remove every tree no process uses, every ref, all state and debris (hold the store's
        lock); returns the number of trees removed."""
        removed = 0
        for usage in self.usage():
            removed += remove_tree(usage.path, self._staging)
        for path in self._refs.iterdir():
            remove_tree_dir(path)
        for path in (*self._state.iterdir(), *self._staging.iterdir()):
            remove_tree_dir(path)
        return removed

    def _discard(self, path: Path) -> None:
        if not remove_tree(path, self._staging):
            raise KernelArtifactError(
                f"kernel cache tree {path} is damaged but in use by another process; end that"
                " process and run again"
            )

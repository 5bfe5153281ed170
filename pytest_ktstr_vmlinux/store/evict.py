"""Keeping the store honest and within its size cap, under the store lock.

At every write: entries whose source is gone or changed are dropped, debris of crashed builds and
orphans of a lost index are removed, and then the least recently used artifacts (by the mtime
that a use touches, see ``index.py``) go until the store fits. The artifact just built is always
kept, and so is one whose export some process has pinned (``pins.py``): a path handed to a test
stays valid. The files of dropped entries are returned, to be unlinked once the index that no
longer names them is written: if that write fails (a full disk), the old index still finds every
file it names. Removal only unlinks: a worker that maps an evicted artifact keeps a valid mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import KernelArtifactError
from . import pins
from .files import remove_path
from .index import entry_files
from .signature import stat_signature


class TreeUse(Protocol):
    """A published tree as eviction sees it (a ``treefiles.TreeUsage``)."""

    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def used_ns(self) -> int: ...


class EvictableTrees(Protocol):
    """The store's trees as eviction uses them (``trees.Trees``)."""

    def usage(self) -> Sequence[TreeUse]: ...

    def remove(self, name: str) -> bool: ...


def evict(
    index: dict[str, Any],
    *,
    artifacts: Path,
    tmp: Path,
    exports: Path,
    max_size: int,
    keep: str,
    trees: EvictableTrees | None = None,
    keep_tree: str | None = None,
) -> list[Path]:
    """Drop from ``index`` what must go; returns the artifact files to unlink after it is
    written (orphans and debris, which no index names, are removed at once). Published
    ``trees`` count toward the cap and are evicted in the same least-recently-used order (at
    once: no index names them), except ``keep_tree`` and any tree a process uses."""
    doomed: list[Path] = []
    for source, entry in list(index["sources"].items()):
        try:
            sig = stat_signature(source, source)
            current = [sig.st_dev, sig.st_ino, sig.st_size, sig.st_mtime_ns, sig.st_ctime_ns]
        except (KernelArtifactError, ValueError):
            current = None
        if current != entry["signature"] and keep not in entry_files(entry):
            doomed += [artifacts / name for name in entry_files(entry)]
            del index["sources"][source]
    for debris in tmp.iterdir():
        remove_path(debris)
    dropped = {path.name for path in doomed}
    owners = {name: source for source, e in index["sources"].items() for name in entry_files(e)}
    pinned = {_artifact_of(export) for export in exports.iterdir() if pins.in_use(export)}
    sizes: dict[str, tuple[int, int]] = {}
    for path in artifacts.iterdir():
        if path.name not in owners or not path.is_file() or path.is_symlink():
            if path.name not in dropped:
                remove_path(path)  # an orphan of a lost index or a crash, or not ours at all
            continue
        st = path.stat()
        sizes[path.name] = (st.st_mtime_ns, st.st_size)
    total = sum(size for _, size in sizes.values())
    candidates = [(used, name, size, False) for name, (used, size) in sizes.items()]
    for tree in trees.usage() if trees is not None else ():
        total += tree.size
        candidates.append((tree.used_ns, tree.name, tree.size, True))
    for _, name, size, is_tree in sorted(candidates):
        if total <= max_size:
            break
        if is_tree:
            if name != keep_tree and trees is not None and trees.remove(name):
                total -= size
            continue
        if name == keep or name in pinned:
            continue
        entry = index["sources"][owners[name]]
        entry["artifacts"] = {k: r for k, r in entry["artifacts"].items() if r["file"] != name}
        doomed.append(artifacts / name)
        total -= size
    live = set(owners) - {path.name for path in doomed}
    for export in exports.iterdir():
        if _artifact_of(export) in live:
            continue
        if export.is_file() and not export.is_symlink():
            pins.remove_unless_in_use(export)  # kept while pinned: an orphan until unpinned
        else:
            remove_path(export)
    return doomed


def _artifact_of(export: Path) -> str:
    """The artifact file an export was made from: ``<hash>.vmlinux`` -> ``<hash>.art``."""
    return export.name.split(".", 1)[0] + ".art"

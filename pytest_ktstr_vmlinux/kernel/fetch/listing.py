"""The fetched kernels a store keeps, as ``ktstr-vmlinux kernels`` lists and removes them.

A kernel is a tree (its files) and the refs that lead to it (``debian:bookworm`` and
``debian:6.1.0-57-cloud-amd64`` may both lead to one tree). Removing a kernel removes its tree
and every ref to it, unless a process uses it (the store's pins): a run keeps what it tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import KernelSpecError
from ...store.disk import ArtifactStore
from ...store.trees import Trees
from .fetch import distro_of
from .specs import looks_like_fetch_spec, parse_fetch_spec


@dataclass(frozen=True)
class FetchedEntry:
    """One fetched kernel in the store."""

    tree: str
    specs: tuple[str, ...]  # the refs that lead to it; empty for a tree no spec leads to
    release: str
    suite: str
    version: str
    arch: str
    size: int
    used_ns: int
    in_use: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "tree": self.tree,
            "specs": list(self.specs),
            "release": self.release,
            "suite": self.suite,
            "package_version": self.version,
            "arch": self.arch,
            "size": self.size,
            "last_use_ns": self.used_ns,
            "in_use": self.in_use,
        }


def fetched_kernels(store: ArtifactStore) -> list[FetchedEntry]:
    """Every fetched kernel, most recently used first."""
    trees = store.trees
    refs: dict[str, list[dict[str, Any]]] = {}
    for ref in trees.refs():
        refs.setdefault(str(ref["tree"]), []).append(ref)
    entries = []
    for usage in trees.usage():
        leading = refs.get(usage.name, [])
        suites = {str(r.get("data", {}).get("suite", "")) for r in leading} - {""}
        record = usage.record
        entries.append(
            FetchedEntry(
                tree=usage.name,
                specs=tuple(sorted(str(r["name"]) for r in leading)),
                release=str(record.get("release", "")),
                suite=", ".join(sorted(suites)),
                version=str(record.get("version", "")),
                arch=str(record.get("arch", "")),
                size=usage.size,
                used_ns=usage.used_ns,
                in_use=trees.in_use(usage.name),
            )
        )
    return sorted(entries, key=lambda e: -e.used_ns)


def remove_fetched(store: ArtifactStore, text: str) -> list[FetchedEntry]:
    """Remove the kernels ``text`` names: a fetch spec (``debian:sid``), a spec as listed
    (``debian:sid/cloud-amd64``) or a release. KernelSpecError when it names none, or one a
    process uses (nothing is removed then)."""
    trees = store.trees
    entries = fetched_kernels(store)
    wanted = _tree_of(trees, text.strip())
    chosen = [
        e
        for e in entries
        if e.tree == wanted or text.strip() in e.specs or text.strip() == e.release
    ]
    if not chosen:
        listed = ", ".join(s for e in entries for s in (e.specs or (e.release,))) or "none"
        raise KernelSpecError(
            f"no fetched kernel is {text!r}; the kernel cache has: {listed}"
            " (`ktstr-vmlinux kernels` lists them)"
        )
    busy = [e for e in chosen if e.in_use]
    if busy:
        raise KernelSpecError(
            f"kernel {text!r} ({', '.join(e.release for e in busy)}) is in use by a running"
            " process (a pytest run testing it); remove it when that run has ended"
        )
    for entry in chosen:
        if not trees.remove(entry.tree):
            raise KernelSpecError(
                f"kernel {text!r} ({entry.release}) was taken into use a moment ago; remove it"
                " when that run has ended"
            )
        for ref in trees.refs():
            if ref["tree"] == entry.tree:
                trees.remove_ref(str(ref["name"]))
    return chosen


def _tree_of(trees: Trees, text: str) -> str | None:
    """The tree a fetch spec's ref leads to now (None: not a fetch spec, or no ref)."""
    if not looks_like_fetch_spec(text):
        return None
    spec = parse_fetch_spec(text, f"kernel {text!r}")
    ref = trees.read_ref(distro_of(spec, trees, text).ref_name(spec))
    return str(ref["tree"]) if ref is not None else None

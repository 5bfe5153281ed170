"""From a fetch spec to a kernel's root in the store: fetched once per machine, reused after.

The store keeps, for each spec, a ref (what it stood for when last asked: release, version,
suite, and what the distro needs to tell whether that suite has moved) and, for each kernel, a
tree (its files, unpacked; ``store/trees.py``). A run with the ref and its tree:

- offline, uses them without asking anyone;
- online, asks the archive whether the suite moved (one small request per suite), unless it was
  asked less than RECHECK_NS ago. If not, or if the archive cannot be reached (that is said), it
  uses them; if it moved, it plans again, and downloads only if the spec now stands for other
  packages.

Everything that writes happens under the store's locks, so of several processes (xdist workers,
concurrent runs) one fetches and the others wait, then find the tree published. A fetch that
fails or is killed halfway publishes nothing: the tree appears whole or not at all, and the ref
is written only after it. An xdist worker is handed the controller's trees (``pinned``), so
every process of a run tests the very kernel the run's header names.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import KernelSpecError
from ...store.api import Store
from ...store.disk import ArtifactStore
from ...store.trees import Tree, TreeDamaged, Trees
from .apt import Unreachable
from .debian import Debian
from .distro import Distro, Plan
from .process import ToolError
from .progress import MB, Progress, Silent
from .specs import FetchSpec
from .unpack import UnsafePackage

ENV_OFFLINE = "KTSTR_KERNEL_OFFLINE"
# The archive publishes a few times a day: a suite asked this recently is not asked again (runs
# made back to back on one machine; a run's xdist workers are handed the controller's trees).
RECHECK_NS = 300 * 1_000_000_000
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
DOWNLOADED = "downloaded"
CURRENT = "current"
OFFLINE = "offline"
UNCHECKED = "unchecked"
PINNED = "pinned"


@dataclass(frozen=True)
class FetchOptions:
    """How ``fetch_kernel`` may get a kernel: ``FetchOptions(offline=True)``, each field a
    keyword argument."""

    #: Use what the store has and ask nobody; a kernel the store lacks is an error.
    offline: bool = False
    #: Where the fetch reports its steps and downloads: any object with ``step(message)`` and
    #: ``transfer(package, done, total, seconds)`` methods (by default, nowhere).
    progress: Progress = field(default_factory=Silent)
    #: Ref name (``debian:sid/cloud-amd64``) -> tree: the trees to use as they are, unchecked
    #: (an xdist worker's, from its controller).
    pinned: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedKernel:
    """A fetched kernel's root and where it came from; ``status`` and ``note`` say what this
    run did to get it (downloaded, found current, used offline, ...)."""

    #: The ref name: the spec in full, ``debian:sid/cloud-amd64``.
    spec: str
    #: The distro (``debian``).
    distro: str
    #: The suite it came from (``sid``).
    suite: str
    #: The kernel release (``6.12.38+deb13-cloud-amd64``).
    release: str
    #: The package version (``6.12.38-1``).
    version: str
    #: The distro's architecture name (``amd64``).
    arch: str
    #: The name of its tree in the store.
    tree: str
    #: The tree's root, laid out as the distro installs it: the sysroot to resolve it in.
    sysroot: Path
    #: The tree's size in bytes.
    size: int
    #: The packages unpacked into it.
    packages: tuple[str, ...]
    #: What this run did to get it: ``"downloaded"``, ``"current"`` (the store's, still what
    #: the spec stands for), ``"offline"``, ``"unchecked"`` (the archive could not be asked) or
    #: ``"pinned"``.
    status: str
    #: The status in words, for the report header.
    note: str

    def summary(self) -> str:
        """The report header's line: ``debian:sid/cloud-amd64: 7.2.13+deb14-cloud-amd64
        7.2.13-1 (sid), 420.3 MB: downloaded 367.3 MB in 6.1 s, unpacked in 16.9 s``."""
        return (
            f"{self.spec}: {self.release} {self.version} ({self.suite}),"
            f" {self.size / MB:.1f} MB: {self.note}"
        )

    def ref_data(self) -> dict[str, str]:
        """What an xdist worker needs to use the same tree."""
        return {"spec": self.spec, "tree": self.tree}


def parse_offline(text: str, origin: str) -> bool:
    """An offline setting's value: 1/true/yes/on or 0/false/no/off (any case); KernelSpecError
    naming ``origin`` for anything else."""
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise KernelSpecError(
        f"{origin}: {text!r} is not a yes or no: write 1, true, yes, on (use the kernel cache"
        " without asking the archive) or 0, false, no, off"
    )


def distro_of(spec: FetchSpec, trees: Trees, raw: str) -> Distro:
    # The one place a distro module is chosen: specs.py refuses the distros not fetched yet.
    assert spec.distro == "debian"
    return Debian(trees, raw)


def fetch_kernel(
    spec: FetchSpec, raw: str, store: Store, options: FetchOptions | None = None
) -> FetchedKernel:
    """The kernel ``spec`` stands for, unpacked in ``store`` (an ArtifactStore: it is kept on
    disk), fetched once per machine and reused after; ``raw`` is the spec as written, for
    messages. ``resolve_kernel`` calls it for a fetch spec, and then finds the kernel's files
    in ``sysroot``::

        store, _ = open_store(None)
        kernel = resolve_kernel("debian:sid", store=store)  # fetches, or reuses the store's
        print(kernel.fetched.summary())

    Online, the archive is asked (at most every few minutes) whether the suite moved; the
    store's tree is reused unless the spec now stands for other packages. Concurrent processes
    fetch once and share it. KernelSpecError when it cannot be had: it stands for nothing (the
    message lists what exists), the store cannot keep it, the host lacks the tools, offline
    without it, or the fetch failed (the message says what failed)."""
    options = options or FetchOptions()
    if not isinstance(store, ArtifactStore):
        raise KernelSpecError(
            f"kernel {raw!r}: a fetched kernel is kept in the on-disk kernel cache, and this run"
            " has none (--no-kernel-cache, or a cache that cannot be written): use a cache"
            " directory that can be written (--kernel-cache-dir, KTSTR_CACHE_DIR)"
        )
    trees = store.trees
    distro = distro_of(spec, trees, raw)
    name = distro.ref_name(spec)
    try:
        return _fetch(distro, spec, name, raw, trees, options)
    except (ToolError, UnsafePackage) as e:
        raise KernelSpecError(f"kernel {raw!r}: {e}; nothing was kept, run again") from None
    except Unreachable as e:
        raise KernelSpecError(
            f"kernel {raw!r}: the Debian archive could not be reached ({e.reason}); nothing was"
            " kept: check the network (or apt's proxy settings) and run again"
        ) from None
    except OSError as e:
        raise KernelSpecError(
            f"kernel {raw!r}: fetching it failed: {e}; nothing was kept, run again"
        ) from None


def _fetch(
    distro: Distro, spec: FetchSpec, name: str, raw: str, trees: Trees, options: FetchOptions
) -> FetchedKernel:
    pinned = options.pinned.get(name)
    if pinned is not None:
        tree = _open(trees, pinned, raw, options)
        ref = trees.read_ref(name)
        if tree is not None and ref is not None:
            return _fetched(name, ref["data"], tree, PINNED, "as the run's first process found it")
    ref = trees.read_ref(name)
    tree = _open(trees, ref["tree"], raw, options) if ref is not None else None
    if ref is not None and tree is not None:
        kept = _reuse(distro, name, ref, tree, trees, options)
        if kept is not None:
            return kept
    elif options.offline:
        raise KernelSpecError(
            f"kernel {raw!r} is not in the kernel cache, and offline it cannot be fetched: run"
            " once online to fetch it"
        )
    with trees.locked(name):
        return _fetch_locked(distro, spec, name, raw, trees, options, ref, tree)


def _reuse(
    distro: Distro,
    name: str,
    ref: dict[str, Any],
    tree: Tree,
    trees: Trees,
    options: FetchOptions,
) -> FetchedKernel | None:
    """What the store has, unless the archive says its suite moved (None: it did)."""
    if options.offline:
        return _fetched(name, ref["data"], tree, OFFLINE, "cached, not checked (offline)")
    age = time.time_ns() - int(ref["data"].get("checked_ns", 0))
    if 0 <= age < RECHECK_NS:
        note = f"cached; {_suite(ref)} was asked {age / 1e9:.0f} s ago"
        return _fetched(name, ref["data"], tree, CURRENT, note)
    try:
        moved = distro.moved(ref)
    except Unreachable as e:
        note = f"cached; could not ask the archive whether it moved ({e.reason})"
        return _fetched(name, ref["data"], tree, UNCHECKED, note)
    if moved:
        return None
    # Recorded without the lock: a ref is replaced whole, and any writer's is true.
    trees.write_ref(name, ref["tree"], {**ref["data"], "checked_ns": time.time_ns()})
    return _fetched(name, ref["data"], tree, CURRENT, f"cached; {_suite(ref)} has not moved")


def _fetch_locked(
    distro: Distro,
    spec: FetchSpec,
    name: str,
    raw: str,
    trees: Trees,
    options: FetchOptions,
    ref: dict[str, Any] | None,
    tree: Tree | None,
) -> FetchedKernel:
    """Plan and, if the plan stands for a tree the store lacks, build it (hold ``locked(name)``).
    ``ref`` and ``tree`` are what the store had: used still when the archive cannot say more."""
    # Another process may have fetched it while this one waited for the lock.
    latest = trees.read_ref(name)
    if latest is not None and (ref is None or latest["written_ns"] != ref["written_ns"]):
        fresh = _open(trees, latest["tree"], raw, options)
        if fresh is not None:
            note = "fetched a moment ago by another process"
            return _fetched(name, latest["data"], fresh, CURRENT, note)
    try:
        plan = distro.plan(spec, options.progress)
    except (KernelSpecError, Unreachable) as e:
        if ref is not None and tree is not None:  # what the store has still stands
            why = e.reason if isinstance(e, Unreachable) else str(e)
            note = f"cached; the archive moved, but asking it again failed ({why})"
            return _fetched(name, ref["data"], tree, UNCHECKED, note)
        raise
    tree_name = plan.tree_name(distro.name)
    built, found = _tree(distro, plan, tree_name, raw, trees, options)
    data = _ref_data(name, plan)
    trees.write_ref(name, tree_name, data)
    if built is not None:
        note = (
            f"downloaded {built['downloaded'] / MB:.1f} MB in {built['download_seconds']:.1f} s,"
            f" unpacked by {built['seconds']:.1f} s"
        )
        return _fetched(name, data, found, DOWNLOADED, note)
    if ref is not None and ref["tree"] == tree_name:
        return _fetched(
            name, data, found, CURRENT, f"cached; {plan.suite} moved, its kernel did not"
        )
    return _fetched(name, data, found, CURRENT, "cached (another spec or process fetched it)")


def _tree(
    distro: Distro, plan: Plan, name: str, raw: str, trees: Trees, options: FetchOptions
) -> tuple[dict[str, Any] | None, Tree]:
    """The plan's tree, and what was built when it had to be (None: it was there)."""
    with trees.locked(name):
        tree = _open(trees, name, raw, options)
        if tree is not None:
            return None, tree
        with trees.staging(name) as staging:
            record = distro.build(plan, staging, options.progress)
            record["fetched_ns"] = time.time_ns()
            return record, trees.publish(name, staging, record)


def _open(trees: Trees, name: str, raw: str, options: FetchOptions) -> Tree | None:
    """The tree, or None when it is not there or was damaged and removed (said once). A tree
    whose files were copied (a store restored from a CI cache) is kept when its bytes are the
    ones published."""
    try:
        return trees.open(name)
    except TreeDamaged as e:
        resealed = trees.reseal(name)
        if resealed is not None:
            return resealed
        if options.offline:
            raise KernelSpecError(
                f"kernel {raw!r}: {e}; offline it cannot be fetched again: run online"
            ) from None
        trees.warn(f"{e}; removing it and fetching it again")
        trees.remove(name)
        return None


def _ref_data(name: str, plan: Plan) -> dict[str, Any]:
    return {
        "spec": name,
        "suite": plan.suite,
        "arch": plan.arch,
        "release": plan.release,
        "version": plan.version,
        "packages": [p.name for p in plan.packages],
        "state": plan.state,
        "checked_ns": time.time_ns(),
    }


def _suite(ref: dict[str, Any]) -> str:
    return str(ref["data"].get("suite", "the suite"))


def _fetched(name: str, data: dict[str, Any], tree: Tree, status: str, note: str) -> FetchedKernel:
    record = tree.record
    return FetchedKernel(
        spec=name,
        distro=str(record.get("distro", name.split(":")[0])),
        suite=str(data.get("suite", "")),
        release=str(record.get("release", data.get("release", ""))),
        version=str(record.get("version", data.get("version", ""))),
        arch=str(record.get("arch", data.get("arch", ""))),
        tree=tree.name,
        sysroot=tree.root,
        size=tree.size,
        packages=tuple(str(p["name"]) for p in record.get("packages", ()) if isinstance(p, dict)),
        status=status,
        note=note,
    )

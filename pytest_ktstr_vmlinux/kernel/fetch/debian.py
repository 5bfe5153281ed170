"""Debian's kernels: which suites a spec means, and which packages make a kernel.

``debian:SUITE`` follows what a Debian system of that suite installs: a release (``bookworm``,
``stable``) gets its kernel updates through ``-updates`` and ``-security``, so those suites are
followed with it, as a default sources.list does, and apt's candidate is the newest of them;
``sid``, ``experimental`` and the suites with a dash in their name (``bookworm-backports``,
``bookworm-security``) are followed alone. The flavour's metapackage (``linux-image-FLAVOUR``)
names the current release R. Since 2026 ``linux-image-R`` is itself a metapackage over
``linux-binary-R`` (the image) and ``linux-base-R`` (config, System.map); before, it held them.
The debug vmlinux is ``linux-image-R-dbg``. Every package is taken at the image's version.

Each spec is planned through an apt root of its suite and architecture (``apt.py``), which is made
the first time a suite is asked for: the archive is asked which of the suites a release follows
it has, and a suite it does not have is a usage error listing those it has. The tree is built
by ``build.py``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Any

from ...errors import KernelSpecError
from ...store.files import publish
from ...store.trees import Trees
from .apt import (
    APT_CACHE,
    APT_GET,
    APT_HELPER,
    KEYRING,
    AptRoot,
    Unreachable,
)
from .archive import (
    ALIASES,
    DEB_RE,
    FLAVOUR_ARCH,
    META_SKIP,
    RELEASE_FLAVOUR_RE,
    SEARCH,
    KnownSuite,
    default_flavour,
    flavour_arch,
    followed,
    release_fields,
    source,
)
from .build import build_tree
from .distro import Package, Plan
from .process import ToolError, require_tools
from .progress import Progress
from .specs import FetchSpec
from .unpack import DPKG_DEB

TOOLS = (APT_GET, APT_CACHE, APT_HELPER, DPKG_DEB)


class NoSuite(KernelSpecError):
    """The archive has no such suite; the message lists those it has."""


class Debian:
    """Plans and builds Debian kernels through private apt roots kept in ``trees``' state."""

    name = "debian"

    def __init__(self, trees: Trees, spec_text: str) -> None:
        self._trees = trees
        self._spec = spec_text
        self._found_tools: dict[str, str] | None = None

    @property
    def _tools(self) -> dict[str, str]:
        """apt's and dpkg's programs, looked for when first needed: a kernel the store has is
        used offline on a host without them."""
        if self._found_tools is None:
            found = require_tools(TOOLS, self._spec, "fetching a Debian kernel")
            if not os.path.isfile(KEYRING):
                raise KernelSpecError(
                    f"kernel {self._spec!r}: fetching a Debian kernel needs Debian's archive"
                    f" keyring {KEYRING}, which apt verifies the archive with: apt-get install"
                    " debian-archive-keyring"
                )
            self._found_tools = found
        return self._found_tools

    def _locked(self, root: AptRoot) -> contextlib.AbstractContextManager[None]:
        """apt takes its own lock on a lists directory and fails, not waits, when another
        process holds it: processes using one apt root take turns here first."""
        return self._trees.locked(f"apt:{root.directory.name}")

    # --- Distro ----------------------------------------------------------------------------------

    def ref_name(self, spec: FetchSpec) -> str:
        if spec.release is not None:
            return f"debian:{spec.release}"
        return f"debian:{spec.suite}/{self._flavour(spec)}"

    def plan(self, spec: FetchSpec, progress: Progress) -> Plan:
        if spec.release is not None:
            return self._plan_release(spec.release, progress)
        assert spec.suite is not None
        flavour = self._flavour(spec)
        arch = self._arch(flavour)
        root = self._root(spec.suite, arch)
        with self._locked(root):
            return self._plan_suite(root, spec.suite, flavour, progress)

    def _plan_suite(self, root: AptRoot, suite: str, flavour: str, progress: Progress) -> Plan:
        state = self._update(root, suite, progress)
        meta = root.show([f"linux-image-{flavour}"], all_versions=False)
        if not meta:
            raise KernelSpecError(self._no_flavour(suite, flavour, root))
        images = [
            (name, version)
            for name, version in meta[0].depends
            if name.startswith("linux-image-") and name != meta[0].name
        ]
        if not images:
            raise KernelSpecError(
                f"kernel {self._spec!r}: {meta[0].name} {meta[0].version} in {suite} depends"
                " on no kernel image package; Debian may have changed how it packages kernels"
            )
        image, version = images[0]
        plan = self._plan_in(root, suite, image.removeprefix("linux-image-"), state, version)
        if plan is None:
            raise KernelSpecError(
                f"kernel {self._spec!r}: {meta[0].name} in {suite} depends on {image},"
                " which the suite does not have; the archive may be updating: try again later"
            )
        return plan

    def moved(self, ref: dict[str, Any]) -> bool:
        data = ref["data"]
        root = self._root_at(str(data["suite"]), str(data["arch"]))
        if root is None:
            return True
        with self._locked(root):
            return root.moved(data["state"]["verified"])

    def build(self, plan: Plan, staging: Path, progress: Progress) -> dict[str, Any]:
        root = self._root_at(plan.suite, plan.arch)
        assert root is not None  # planned through it a moment ago
        locked = functools.partial(self._locked, root)
        record = build_tree(
            root, self._tools[DPKG_DEB], plan, staging, progress, locked, self._spec
        )
        return {"distro": self.name, **record}

    # --- planning --------------------------------------------------------------------------------

    def _plan_release(self, release: str, progress: Progress) -> Plan:
        match = RELEASE_FLAVOUR_RE.fullmatch(release)
        flavour = match.group(1) if match else None
        arch = flavour_arch(flavour) if flavour else None
        if flavour is None or arch is None:
            raise KernelSpecError(
                f"kernel {self._spec!r}: {release} names no Debian flavour this knows"
                f" ({', '.join(sorted(FLAVOUR_ARCH))}, with their prefixes: cloud-, rt-)"
            )
        searched: list[tuple[str, AptRoot]] = []
        for suite in self._search_order(release, arch):
            try:
                root = self._root(suite, arch)
            except NoSuite:
                continue  # a backports suite a release does not have (yet, or any more)
            with self._locked(root):
                state = self._update(root, suite, progress)
                plan = self._plan_in(root, suite, release, state)
            if plan is not None:
                return plan
            searched.append((suite, root))
        current = []
        for suite, root in searched:
            with self._locked(root):
                meta = root.show([f"linux-image-{flavour}"], all_versions=False)
            kernels = (
                [n for n, _ in meta[0].depends if n.startswith("linux-image-")] if meta else []
            )
            current.append(f"{suite} {kernels[0].removeprefix('linux-image-')}" if kernels else "")
        raise KernelSpecError(
            f"kernel {self._spec!r}: no Debian suite has linux-image-{release} (searched"
            f" {', '.join(s for s, _ in searched)}); {flavour} kernels there now:"
            f" {', '.join(c for c in current if c) or 'none'}. Name one of those, or a suite"
            f" (debian:{searched[0][0] if searched else 'sid'})"
        )

    def _plan_in(
        self,
        root: AptRoot,
        suite: str,
        release: str,
        state: dict[str, Any],
        version: str | None = None,
    ) -> Plan | None:
        """The packages of ``release`` at ``version`` (default: apt's candidate) in ``root``;
        None when its lists have no such image package."""
        image, dbg = f"linux-image-{release}", f"linux-image-{release}-dbg"
        parts = (f"linux-binary-{release}", f"linux-base-{release}")
        if version is None:
            candidate = root.show([image], all_versions=False)
            if not candidate:
                return None
            version = candidate[0].version
        records = {
            r.name: r
            for r in root.show([image, *parts, dbg], all_versions=True)
            if r.version == version
        }
        if image not in records:
            return None
        # Since 2026 the image package is a metapackage over the binary and base packages.
        names = [image, *(n for n, _ in records[image].depends if n in parts), dbg]
        packages = tuple(
            Package(r.name, r.version, r.size, r.sha256)
            for name in names
            if (r := records.get(name)) is not None
        )
        return Plan(release, version, suite, root.arch, packages, state)

    def _update(self, root: AptRoot, suite: str, progress: Progress) -> dict[str, Any]:
        progress.step(f"{self._spec}: updating the package lists of {suite} ({root.arch})")
        return {"verified": root.update()}

    def _search_order(self, release: str, arch: str) -> list[str]:
        """The suites to look for a release in: the release's Debian version first (``+deb13``),
        then stable, oldstable, testing, unstable, oldoldstable and the backports."""
        known = self._known_suites(arch)
        by_alias = {k.alias: k.codename for k in known}
        major = DEB_RE.search(release)
        order = [k.codename for k in known if major and k.version == major.group(1)]
        order += [by_alias[a] for a in SEARCH if a in by_alias]
        order += [f"{by_alias[a]}-backports" for a in ("stable", "oldstable") if a in by_alias]
        return list(dict.fromkeys(order))

    # --- apt roots -------------------------------------------------------------------------------

    def _root(self, suite: str, arch: str) -> AptRoot:
        """The apt root following ``suite`` for ``arch``, made the first time (its suites are
        probed then: a suite the archive does not have is a usage error listing those it has)."""
        found = self._root_at(suite, arch)
        if found is not None:
            return found
        main, extra = followed(suite)
        probe = AptRoot(self._trees.state_dir("debian-probe"), [], arch, self._tools)
        present = probe.probe([s.inrelease_uri for s in (main, *extra)])
        if present[main.inrelease_uri] is None:
            raise NoSuite(self._no_suite(suite, arch))
        directory = self._trees.state_dir(f"debian-{suite}-{arch}")
        sources = [main, *(s for s in extra if present[s.inrelease_uri] is not None)]
        record = {"suites": [s.suite for s in sources]}
        publish(
            directory / "suites.json",
            json.dumps(record).encode(),
            tmp_dir=directory,
            prefix="suites-",
        )
        return AptRoot(directory, sources, arch, self._tools)

    def _root_at(self, suite: str, arch: str) -> AptRoot | None:
        directory = self._trees.state_dir(f"debian-{suite}-{arch}")
        try:
            record = json.loads((directory / "suites.json").read_text())
            suites = [str(s) for s in record["suites"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return AptRoot(directory, [source(s) for s in suites], arch, self._tools)

    def _known_suites(self, arch: str) -> list[KnownSuite]:
        """The suites behind the archive's aliases (stable, testing, ...), in ALIASES order."""
        probe = AptRoot(self._trees.state_dir("debian-probe"), [], arch, self._tools)
        fetched = probe.probe([source(a).inrelease_uri for a in ALIASES])
        found = []
        for alias in ALIASES:
            data = fetched[source(alias).inrelease_uri]
            fields = release_fields(data) if data is not None else {}
            if "Codename" in fields:
                version = fields.get("Version", "").split(".")[0]
                found.append(KnownSuite(fields["Codename"], version, alias))
        return found

    # --- errors ----------------------------------------------------------------------------------

    def _flavour(self, spec: FetchSpec) -> str:
        return spec.flavour or default_flavour()

    def _arch(self, flavour: str) -> str:
        arch = flavour_arch(flavour)
        if arch is None:
            raise KernelSpecError(
                f"kernel {self._spec!r}: flavour {flavour!r} builds for no Debian architecture"
                f" this knows; flavours end in one of: {', '.join(sorted(FLAVOUR_ARCH))}"
                " (amd64, cloud-amd64, rt-amd64, arm64, cloud-arm64, ...)"
            )
        return arch

    def _no_flavour(self, suite: str, flavour: str, root: AptRoot) -> str:
        names = root.names("linux-image-")
        # A flavour's metapackage, not a release's package: releases always hold a dot.
        flavours = sorted(
            name.removeprefix("linux-image-")
            for name in names
            if "." not in name and not name.endswith(META_SKIP)
        )
        return (
            f"kernel {self._spec!r}: {suite} has no flavour {flavour!r} for {root.arch} (no"
            f" linux-image-{flavour}); its flavours for {root.arch}:"
            f" {', '.join(flavours) or 'none'}. Write debian:{suite}/FLAVOUR"
        )

    def _no_suite(self, suite: str, arch: str) -> str:
        try:
            known = self._known_suites(arch)
            listed = ", ".join(f"{k.codename} ({k.alias})" for k in known)
        except (Unreachable, ToolError, OSError) as e:  # a courtesy: the error is the suite
            listed = f"(could not list them: {e})"
        return (
            f"kernel {self._spec!r}: the Debian archive has no suite {suite!r}; its suites:"
            f" {listed}; releases also have -backports, -updates and -security"
        )

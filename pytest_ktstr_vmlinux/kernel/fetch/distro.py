"""What a distro module gives the fetch: a plan (which packages make the kernel, and the tree
they unpack to), whether what a spec stood for may have moved, and the tree itself.

``fetch.py`` holds the flow every distro shares (the store's refs, trees, locks, offline mode);
a distro module (``debian``) holds only its own: suites, flavours, package names, its client.
An ``ubuntu`` or ``fedora`` module would implement ``Distro`` and nothing else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .progress import Progress
from .specs import FetchSpec


@dataclass(frozen=True)
class Package:
    """One package of a kernel: name, version, size and SHA-256 from the verified lists."""

    name: str
    version: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    """What a spec stands for now: a kernel ``release`` in package ``version`` from ``suite``,
    made of ``packages``; ``state`` is what the distro needs later to tell whether the suite
    has moved since (kept in the ref)."""

    release: str
    version: str
    suite: str
    arch: str
    packages: tuple[Package, ...]
    state: dict[str, Any]

    def tree_name(self, distro: str) -> str:
        """The tree's name: a hash of exactly what is unpacked, so two specs standing for the
        same packages (debian:bookworm, debian:6.1.0-57-cloud-amd64) share one tree."""
        packages = sorted((p.name, p.version, p.sha256) for p in self.packages)
        text = json.dumps([distro, self.arch, self.release, packages])
        return hashlib.sha256(text.encode()).hexdigest()


class Distro(Protocol):
    """A distro whose kernels can be fetched."""

    name: str

    def ref_name(self, spec: FetchSpec) -> str:
        """The name the store keeps ``spec``'s lookup under (defaults filled in)."""
        ...

    def plan(self, spec: FetchSpec, progress: Progress) -> Plan:
        """Ask the distro's archive what ``spec`` stands for now. KernelSpecError naming what
        exists when it stands for nothing; ``apt.Unreachable`` when the archive cannot be asked."""
        ...

    def moved(self, ref: dict[str, Any]) -> bool:
        """Whether the suite a ref was planned from has changed since (``apt.Unreachable`` when
        that cannot be asked)."""
        ...

    def build(self, plan: Plan, staging: Path, progress: Progress) -> dict[str, Any]:
        """Download and unpack the plan's packages into ``staging / "root"``; what to record."""
        ...


def total_size(packages: Sequence[Package]) -> int:
    return sum(p.size for p in packages)

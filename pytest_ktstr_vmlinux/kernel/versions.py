"""Kernel versions, compared the way kernel developers read them.

A release is ``MAJOR.MINOR[.PATCH][-rcN]`` followed by anything: distro and local suffixes
(``-56-cloud-amd64``, ``-200.fc41.x86_64``, ``-arch1-1``, ``+``, ``-dirty``) are not part of the
version, so ``6.1.0-56-cloud-amd64`` is 6.1.0. A missing PATCH is 0 (``6.12`` is ``6.12.0``).
A release candidate comes before its release: ``6.12 < 6.12.3 < 6.13-rc1 < 6.13-rc2 < 6.13``.

As an upper bound (``max_version``), ``MAJOR.MINOR`` names the whole stable series: 6.12.3 is
within ``max_version="6.12"``, as a developer writing "up to 6.12" means; 6.13-rc1 is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The rc suffix only counts right after the numbers (``6.13.0-rc1``, ``6.13-rc1+``).
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-rc(\d+))?", re.ASCII)


@dataclass(frozen=True, order=True)
class KernelVersion:
    """A comparable kernel version; ``rc`` is None for a release."""

    major: int
    minor: int
    patch: int = 0
    final: bool = True  # field order is comparison order: -rcN (False) sorts first
    rc: int = 0

    def __str__(self) -> str:
        rc = "" if self.final else f"-rc{self.rc}"
        return f"{self.major}.{self.minor}.{self.patch}{rc}"


def parse_version(text: str) -> KernelVersion:
    """A version as written in a requirement: exactly ``MAJOR.MINOR[.PATCH][-rcN]``.

    Raises ValueError: a requirement with a typo must not silently compare as something else.
    """
    found = _VERSION_RE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a kernel version like 6.12, 6.12.3 or 6.13-rc1")
    return _from_match(found)


def release_version(release: str) -> KernelVersion | None:
    """The version a release string starts with, its suffix ignored; None when it has none."""
    found = _VERSION_RE.match(release.strip())
    return _from_match(found) if found is not None else None


def _from_match(found: re.Match[str]) -> KernelVersion:
    major, minor, patch, rc = found.groups()
    return KernelVersion(int(major), int(minor), int(patch or 0), rc is None, int(rc or 0))

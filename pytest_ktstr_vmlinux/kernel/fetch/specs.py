"""Kernels named by where to fetch them: ``debian:sid``, ``debian:bookworm/rt-amd64``,
``debian:6.1.0-57-cloud-amd64``.

A fetch spec is ``DISTRO:WHAT``. WHAT is a suite, optionally with a flavour after a ``/``
(``SUITE/FLAVOUR``: that suite's current kernel of that flavour), or an exact release, which
starts with a digit as every kernel release does. Suites and flavours are lowercase names, as
the distros spell them; anything else is refused here, before any program runs with it.

Only ``debian`` is fetched. ``ubuntu`` and ``fedora`` are known names that say so: a distro is
added by giving it a module that plans and unpacks its packages (see ``debian``), not by
touching the spec syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import KernelSpecError
from ...formats.image import is_release

FETCHED = ("debian",)
# Distros whose specs are recognized, so that they are refused with a reason, not taken for a
# path or a release.
PLANNED = ("ubuntu", "fedora")
_PREFIX_RE = re.compile(r"([a-z][a-z0-9]*):(.*)", re.ASCII | re.DOTALL)
_SUITE_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*", re.ASCII)
_FLAVOUR_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*", re.ASCII)
_MAX_NAME = 64


@dataclass(frozen=True)
class FetchSpec:
    """A parsed fetch spec: a ``suite`` (and ``flavour``, None for the default) or a
    ``release``."""

    #: The distro (``debian``).
    distro: str
    #: The suite (``sid``, ``bookworm``), None for a release.
    suite: str | None = None
    #: The flavour (``rt-amd64``), None for the suite's default.
    flavour: str | None = None
    #: An exact release (``6.1.0-57-cloud-amd64``), None for a suite.
    release: str | None = None

    def __str__(self) -> str:
        if self.release is not None:
            return f"{self.distro}:{self.release}"
        flavour = f"/{self.flavour}" if self.flavour else ""
        return f"{self.distro}:{self.suite}{flavour}"


def looks_like_fetch_spec(text: str) -> bool:
    """True for ``NAME:...`` where NAME is a distro this module knows of."""
    match = _PREFIX_RE.fullmatch(text.strip())
    return match is not None and match.group(1) in (*FETCHED, *PLANNED)


def parse_fetch_spec(text: str, origin: str) -> FetchSpec:
    """Parse ``DISTRO:WHAT``; KernelSpecError naming ``origin`` and what is wrong."""
    match = _PREFIX_RE.fullmatch(text.strip())
    if match is None or match.group(1) not in (*FETCHED, *PLANNED):
        raise KernelSpecError(f"{origin}: not a fetch spec (debian:SUITE, debian:RELEASE)")
    distro, what = match.groups()
    if distro not in FETCHED:
        raise KernelSpecError(
            f"{origin}: {distro}: kernels are not fetched yet; fetched distros:"
            f" {', '.join(FETCHED)} (debian:sid, debian:bookworm/rt-amd64,"
            " debian:6.1.0-57-cloud-amd64)"
        )
    usage = (
        f"write {distro}:SUITE (debian:sid, debian:bookworm), {distro}:SUITE/FLAVOUR"
        f" (debian:bookworm/rt-amd64) or {distro}:RELEASE (debian:6.1.0-57-cloud-amd64)"
    )
    if not what:
        raise KernelSpecError(f"{origin}: names no suite or release; {usage}")
    if what[0].isdigit():
        if len(what) > 2 * _MAX_NAME or not is_release(what) or "/" in what:
            raise KernelSpecError(
                f"{origin}: {what!r} is not a kernel release like 6.1.0-57-cloud-amd64"
                " (a release names its flavour: it takes no /FLAVOUR)"
            )
        return FetchSpec(distro, release=what)
    suite, slash, flavour = what.partition("/")
    if len(suite) > _MAX_NAME or not _SUITE_RE.fullmatch(suite):
        raise KernelSpecError(
            f"{origin}: {suite!r} is not a suite name (lowercase letters, digits and '-',"
            f" such as sid, bookworm, bookworm-backports); {usage}"
        )
    if slash and (len(flavour) > _MAX_NAME or not _FLAVOUR_RE.fullmatch(flavour)):
        raise KernelSpecError(
            f"{origin}: {flavour!r} is not a flavour name (lowercase letters, digits and '-',"
            f" such as amd64, cloud-amd64, rt-amd64, arm64); {usage}"
        )
    return FetchSpec(distro, suite=suite, flavour=flavour or None)

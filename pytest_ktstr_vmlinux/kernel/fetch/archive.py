"""Debian's archive as the fetch knows it: where its suites are, which suites a system of a
release follows, its suite aliases, and its kernel flavours with the architectures they build
for. Only names and where to find them: apt fetches, verifies and reads everything else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .apt import AptSource

ARCHIVE = "http://deb.debian.org/debian"
SECURITY_ARCHIVE = "http://deb.debian.org/debian-security"
ALIASES = ("oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental")
ALONE = frozenset({"sid", "unstable", "experimental", "rc-buggy"})
# Flavour (or its last words) -> Debian architecture; the longest match wins.
FLAVOUR_ARCH = {
    "amd64": "amd64",
    "arm64": "arm64",
    "arm64-16k": "arm64",
    "686": "i386",
    "686-pae": "i386",
    "armmp": "armhf",
    "armmp-lpae": "armhf",
    "rpi": "armel",
    "marvell": "armel",
    "powerpc64le": "ppc64el",
    "powerpc64le-64k": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loong64": "loong64",
}
DEFAULT_FLAVOUR = {
    "amd64": "cloud-amd64",
    "arm64": "cloud-arm64",
    "i386": "686-pae",
    "armhf": "armmp",
    "ppc64el": "powerpc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loong64": "loong64",
}
UNAME_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "i686": "i386",
    "armv7l": "armhf",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
}
# 6.1.0-57-cloud-amd64, 7.2.13+deb14-cloud-amd64: the flavour follows the version and ABI.
RELEASE_FLAVOUR_RE = re.compile(r"[0-9][^-]*(?:-[0-9]+)?-([a-z][a-z0-9-]*)", re.ASCII)
DEB_RE = re.compile(r"\+deb([0-9]+)-", re.ASCII)
SEARCH = ("stable", "oldstable", "testing", "unstable", "oldoldstable")
META_SKIP = ("-dbg", "-unsigned", "-signed-template")


def host_arch() -> str:
    machine = os.uname().machine
    return UNAME_ARCH.get(machine, machine)


def flavour_arch(flavour: str) -> str | None:
    """The Debian architecture a flavour builds for (``cloud-amd64`` -> ``amd64``)."""
    for suffix in sorted(FLAVOUR_ARCH, key=len, reverse=True):
        if flavour == suffix or flavour.endswith(f"-{suffix}"):
            return FLAVOUR_ARCH[suffix]
    return None


@dataclass(frozen=True)
class KnownSuite:
    codename: str  # trixie
    version: str  # 13 ("" for sid)
    alias: str  # stable


def default_flavour() -> str:
    """The cloud flavour of the host's architecture where Debian has one, else the plain one."""
    arch = host_arch()
    return DEFAULT_FLAVOUR.get(arch, arch)


def followed(suite: str) -> tuple[AptSource, list[AptSource]]:
    """A suite's sources, and those a system of it also follows when the archive has them: a
    release (bookworm, stable) gets its kernel updates through -updates and -security."""
    alone = suite in ALONE or "-" in suite
    return source(suite), [] if alone else [source(f"{suite}-updates"), source(f"{suite}-security")]


def source(suite: str) -> AptSource:
    return AptSource(SECURITY_ARCHIVE if suite.endswith("-security") else ARCHIVE, suite)


def release_fields(data: bytes) -> dict[str, str]:
    """Codename, Suite and Version of an InRelease file (the first of each, outside any
    multi-line field); read only to list and order suites, never to trust a package."""
    fields: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in ("Codename", "Suite", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields

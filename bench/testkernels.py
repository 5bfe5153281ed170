"""Where the benchmarks find the kernels tests/kernels/fetch.sh unpacked (shared by bench/*.py)."""

from __future__ import annotations

import os
from pathlib import Path

KERNELS = Path(
    os.environ.get("KTSTR_TEST_KERNELS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "pytest-ktstr-vmlinux-test-kernels"
)
DEBIAN_SYSROOT = KERNELS / "debian-sysroot"
MISSING = "no Debian sysroot: run `bash tests/kernels/fetch.sh`"


def debian_release(sysroot: Path = DEBIAN_SYSROOT, release: str | None = None) -> str | None:
    """``release`` if given, else the one fetch.sh recorded in the sysroot's ``ready`` file."""
    ready = sysroot / "ready"
    return release or (ready.read_text().strip() if ready.is_file() else None)


def vmlinux_of(sysroot: Path, release: str) -> Path:
    """Where Debian's -dbg package puts the vmlinux of ``release``."""
    return sysroot / "usr/lib/debug/boot" / f"vmlinux-{release}"


def debian_vmlinux(sysroot: Path = DEBIAN_SYSROOT, release: str | None = None) -> Path | None:
    found = debian_release(sysroot, release)
    return vmlinux_of(sysroot, found) if found else None

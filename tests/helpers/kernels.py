"""The real test kernels: where tests/kernels/ keeps them, how a test finds one and what it does
when one is missing (skip, or fail where CI requires real kernels), and the guest tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

KERNELS_DIR = Path(
    os.environ.get("KTSTR_TEST_KERNELS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "pytest-ktstr-vmlinux-test-kernels"
)
# Set by .ci/run: a real-kernel test that cannot find its kernel fails instead of skipping.
REQUIRE_REAL_KERNELS = os.environ.get("KTSTR_REQUIRE_REAL_KERNELS") == "1"

# What guests need on the host, and the Debian packages that have it (.ci/run installs them).
GUEST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


@dataclass(frozen=True)
class DebianKernel:
    """A Debian kernel unpacked as a sysroot: the /boot layout (Debian 12) or the 2026 one
    (/usr/lib/modules/R/vmlinuz, the -dbg vmlinux in /usr/lib/debug/lib/modules/R)."""

    sysroot: Path
    release: str

    @property
    def image(self) -> Path:
        return self._first(
            f"boot/vmlinuz-{self.release}", f"usr/lib/modules/{self.release}/vmlinuz"
        )

    @property
    def config(self) -> Path:
        return self._first(f"boot/config-{self.release}", f"usr/lib/modules/{self.release}/config")

    @property
    def vmlinux(self) -> Path:
        return self._first(
            f"usr/lib/debug/boot/vmlinux-{self.release}",
            f"usr/lib/debug/lib/modules/{self.release}/vmlinux",
        )

    def _first(self, *paths: str) -> Path:
        for path in paths:
            if (self.sysroot / path).is_file():
                return self.sysroot / path
        return self.sysroot / paths[0]

    @property
    def build_id(self) -> str:
        """The GNU build-id, as readelf -n reports it: an oracle the project did not write."""
        out = subprocess.run(
            ["readelf", "-n", str(self.vmlinux)], capture_output=True, text=True, check=True
        ).stdout
        return out.split("Build ID: ", 1)[1].split()[0]


def unavailable(what: str, script: str) -> NoReturn:
    """Skip a test whose real kernel is not there, naming the script that makes it; fail
    instead where CI requires real kernels."""
    message = (
        f"{what} not found under {KERNELS_DIR}: run `bash tests/kernels/{script}` first"
        " (needs a Debian/Ubuntu machine with apt-get; set KTSTR_TEST_KERNELS to move the cache)"
    )
    if REQUIRE_REAL_KERNELS:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def debian_image_alone(pytester: pytest.Pytester, kernel: DebianKernel) -> Path:
    """Debian's image copied where no debug vmlinux is near it: only the extracted ELF pairs."""
    image = pytester.path / "boot" / f"vmlinuz-{kernel.release}"
    image.parent.mkdir()
    shutil.copyfile(kernel.image, image)
    return image

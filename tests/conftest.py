"""Fixtures for the suite: a clean environment, real kernels fetched or built by tests/kernels/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.bytescache import default_cache

KERNELS_DIR = Path(
    os.environ.get("KTSTR_TEST_KERNELS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "pytest-ktstr-vmlinux-test-kernels"
)
# Set by .ci/run: a real-kernel test that cannot find its kernel fails instead of skipping.
REQUIRE_REAL_KERNELS = os.environ.get("KTSTR_REQUIRE_REAL_KERNELS") == "1"


REAL_KERNEL_PROPERTY = "real_kernel"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # .ci/run finds the real-kernel tests in the JUnit XML by this property and fails if any
    # of them skipped: a missing kernel must not pass CI quietly.
    for item in items:
        if item.get_closest_marker("real_kernel") is not None:
            item.user_properties.append((REAL_KERNEL_PROPERTY, "1"))


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


@pytest.fixture(autouse=True)
def _clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The user's own KTSTR_* settings must not leak into the runs the tests make, and each test
    gets a store of its own."""
    for name in list(os.environ):
        if name.startswith("KTSTR_") and name not in ("KTSTR_TEST_KERNELS",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KTSTR_CACHE_DIR", str(tmp_path_factory.mktemp("store")))
    default_cache().clear()
    yield
    default_cache().clear()


def _unavailable(what: str, script: str) -> None:
    message = (
        f"{what} not found under {KERNELS_DIR}: run `bash tests/kernels/{script}` first"
        " (needs a Debian/Ubuntu machine with apt-get; set KTSTR_TEST_KERNELS to move the cache)"
    )
    if REQUIRE_REAL_KERNELS:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def debian_kernel() -> DebianKernel:
    """Debian's 6.1 cloud kernel and its -dbg vmlinux, unpacked as a sysroot by fetch.sh."""
    ready = KERNELS_DIR / "debian-sysroot" / "ready"
    if not ready.is_file():
        _unavailable("the Debian kernel sysroot", "fetch.sh")
    sysroot = (KERNELS_DIR / "debian-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def tinyconfig_tree() -> Path:
    """A real tinyconfig kernel build tree built by build.sh."""
    ready = KERNELS_DIR / "tinyconfig-tree" / "ready"
    if not ready.is_file():
        _unavailable("the tinyconfig kernel tree", "build.sh")
    return (KERNELS_DIR / "tinyconfig-tree").resolve()


@pytest.fixture(scope="session")
def debian_arm64() -> DebianKernel:
    """Debian's 6.1 arm64 kernel (a flat Image) and its -dbg vmlinux, unpacked as a sysroot by
    fetch-arm64.sh."""
    ready = KERNELS_DIR / "debian-arm64-sysroot" / "ready"
    if not ready.is_file():
        _unavailable("the Debian arm64 kernel sysroot", "fetch-arm64.sh")
    sysroot = (KERNELS_DIR / "debian-arm64-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def sid_kernel() -> DebianKernel:
    """Debian unstable's cloud kernel (sched_ext, .data..percpu linked in place) and its -dbg
    vmlinux, unpacked as a sysroot by fetch-sid.sh."""
    ready = KERNELS_DIR / "debian-sid-sysroot" / "ready"
    if not ready.is_file():
        _unavailable("the Debian sid kernel sysroot", "fetch-sid.sh")
    sysroot = (KERNELS_DIR / "debian-sid-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def scx_schedulers() -> Path:
    """The folder of the kernel's own sched_ext schedulers (scx_simple, scx_qmap, ...) built by
    build-scx.sh for the sid kernel."""
    ready = KERNELS_DIR / "scx-schedulers" / "ready"
    if not ready.is_file():
        _unavailable("the sched_ext schedulers", "build-scx.sh")
    return (KERNELS_DIR / "scx-schedulers" / "bin").resolve()


# What guests need on the host, and the Debian packages that have it (.ci/run installs them).
GUEST_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "busybox": "busybox-static"}


@pytest.fixture(scope="session")
def guest_tools() -> None:
    """QEMU and a static busybox on PATH; without them guest tests skip, or fail in CI."""
    missing = [package for tool, package in GUEST_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        message = f"guest tests need {' and '.join(missing)}: apt-get install {' '.join(missing)}"
        if REQUIRE_REAL_KERNELS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)

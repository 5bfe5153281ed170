"""Fixtures for the suite: a clean environment, real kernels fetched or built by tests/kernels/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_ktstr_vmlinux.store.bytescache import default_cache
from tests.helpers.children import Child, Spawn
from tests.helpers.kernels import (
    GUEST_TOOLS,
    KERNELS_DIR,
    REQUIRE_REAL_KERNELS,
    DebianKernel,
    unavailable,
)

REAL_KERNEL_PROPERTY = "real_kernel"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # .ci/run finds the real-kernel tests in the JUnit XML by this property and fails if any
    # of them skipped: a missing kernel must not pass CI quietly.
    for item in items:
        if item.get_closest_marker("real_kernel") is not None:
            item.user_properties.append((REAL_KERNEL_PROPERTY, "1"))


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


@pytest.fixture(scope="session")
def debian_kernel() -> DebianKernel:
    """Debian's 6.1 cloud kernel and its -dbg vmlinux, unpacked as a sysroot by fetch.sh."""
    ready = KERNELS_DIR / "debian-sysroot" / "ready"
    if not ready.is_file():
        unavailable("the Debian kernel sysroot", "fetch.sh")
    sysroot = (KERNELS_DIR / "debian-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def tinyconfig_tree() -> Path:
    """A real tinyconfig kernel build tree built by build.sh."""
    ready = KERNELS_DIR / "tinyconfig-tree" / "ready"
    if not ready.is_file():
        unavailable("the tinyconfig kernel tree", "build.sh")
    return (KERNELS_DIR / "tinyconfig-tree").resolve()


@pytest.fixture(scope="session")
def debian_arm64() -> DebianKernel:
    """Debian's 6.1 arm64 kernel (a flat Image) and its -dbg vmlinux, unpacked as a sysroot by
    fetch-arm64.sh."""
    ready = KERNELS_DIR / "debian-arm64-sysroot" / "ready"
    if not ready.is_file():
        unavailable("the Debian arm64 kernel sysroot", "fetch-arm64.sh")
    sysroot = (KERNELS_DIR / "debian-arm64-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def sid_kernel() -> DebianKernel:
    """Debian unstable's cloud kernel (sched_ext, .data..percpu linked in place) and its -dbg
    vmlinux, unpacked as a sysroot by fetch-sid.sh."""
    ready = KERNELS_DIR / "debian-sid-sysroot" / "ready"
    if not ready.is_file():
        unavailable("the Debian sid kernel sysroot", "fetch-sid.sh")
    sysroot = (KERNELS_DIR / "debian-sid-sysroot").resolve()
    return DebianKernel(sysroot, ready.read_text().strip())


@pytest.fixture(scope="session")
def scx_schedulers() -> Path:
    """The folder of the kernel's own sched_ext schedulers (scx_simple, scx_qmap, ...) built by
    build-scx.sh for the sid kernel."""
    ready = KERNELS_DIR / "scx-schedulers" / "ready"
    if not ready.is_file():
        unavailable("the sched_ext schedulers", "build-scx.sh")
    return (KERNELS_DIR / "scx-schedulers" / "bin").resolve()


@pytest.fixture(scope="session")
def guest_tools() -> None:
    """QEMU and a static busybox on PATH; without them guest tests skip, or fail in CI."""
    missing = [package for tool, package in GUEST_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        message = f"guest tests need {' and '.join(missing)}: apt-get install {' '.join(missing)}"
        if REQUIRE_REAL_KERNELS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start children (tests/helpers/children.py); any still running when the test ends (it
    failed) are killed."""
    children: list[Child] = []

    def start(name: str, code: str, **params: Any) -> Child:
        child = Child(tmp_path / "logs", name, code, params)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()

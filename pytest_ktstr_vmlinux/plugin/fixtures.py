"""The kernel fixtures: session-scoped, each built once per kernel (per xdist worker) through the
run's store. A kernel nobody named skips when it lacks an artifact (fails under --kernel-strict);
a kernel the user named fails, so a run never turns green by skipping what it was asked to test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

from ..errors import KernelArtifactError
from .run import kernel_run
from .strict import skip_or_fail

if TYPE_CHECKING:
    from ..formats.btf.queries import BTF
    from ..formats.kconfig import KernelConfig
    from ..formats.symbols import KernelSymbols
    from ..kernel.artifacts import KernelArtifacts
    from ..kernel.resolve import Kernel
    from ..store.api import Store

T = TypeVar("T")


@pytest.fixture(scope="session")
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """The kernel under test: one of --kernel / $KTSTR_KERNEL_LIST / $KTSTR_KERNEL / ini
    ktstr_kernel, else the running one; with several, each in turn."""
    kernels = kernel_run(request.config).kernels()
    label = getattr(request, "param", None)
    if label is not None:
        return kernels[label]
    if len(kernels) > 1:
        pytest.fail(
            f"ktstr: this run has {len(kernels)} kernels ({', '.join(kernels)}); request"
            " `kernel` as a test or fixture argument (not request.getfixturevalue) so the test"
            " runs once per kernel",
            pytrace=False,
        )
    return next(iter(kernels.values()))


@pytest.fixture(scope="session")
def vmlinux_path(kernel: Kernel, pytestconfig: pytest.Config) -> Path:
    """The vmlinux ELF of ``kernel``; errors (named kernel) or skips (default) when missing."""
    if kernel.vmlinux is None:
        _missing_vmlinux(pytestconfig, kernel)
    return kernel.vmlinux


@pytest.fixture(scope="session")
def kernel_config(kernel: Kernel, pytestconfig: pytest.Config) -> KernelConfig:
    """The kernel's config (.config, /boot/config-R or IKCONFIG); errors or skips like
    ``vmlinux_path`` when there is none."""
    return _derived(pytestconfig, kernel, lambda a: a.config())


@pytest.fixture(scope="session")
def kernel_symbols(kernel: Kernel, pytestconfig: pytest.Config) -> KernelSymbols:
    """The kernel's symbols (``ksyms["runqueues"]``), built once through the store; errors or
    skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(pytestconfig, kernel, lambda a: a.symbols())


@pytest.fixture(scope="session")
def kernel_btf(kernel: Kernel, pytestconfig: pytest.Config) -> BTF:
    """The kernel's BTF (``btf.offsetof("struct rq", "nr_running")``), indexed once through the
    store; errors or skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(pytestconfig, kernel, lambda a: a.btf())


@pytest.fixture(scope="session")
def kernel_store(pytestconfig: pytest.Config) -> Store:
    """Where kernel artifacts are built once and shared: on disk, or in memory without a cache."""
    return kernel_run(pytestconfig).store()


@pytest.fixture(scope="session")
def vmlinux_bytes(vmlinux_path: Path, pytestconfig: pytest.Config) -> memoryview:
    """The vmlinux contents, read-only: a mapping of the store's snapshot that every worker
    shares, or one private read per file version without an on-disk store."""
    try:
        return kernel_run(pytestconfig).bytes_cache().get(vmlinux_path)
    except KernelArtifactError as e:
        message = str(e)
    # Failing outside the except block keeps the report to our message, not a chained traceback.
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _derived(config: pytest.Config, kernel: Kernel, load: Callable[[KernelArtifacts], T]) -> T:
    from ..store.api import StoreLockTimeout

    try:
        return load(kernel_run(config).artifacts(kernel))
    except KernelArtifactError as e:
        message, busy = str(e), isinstance(e, StoreLockTimeout)
    # A lock held too long says nothing about the kernel: never a skip.
    if not kernel.spec.named_by_user and not busy:
        skip_or_fail(config, f"ktstr: {message}")
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _missing_vmlinux(config: pytest.Config, kernel: Kernel) -> NoReturn:
    if not kernel.spec.named_by_user:
        # Nobody asked for this kernel: a host without debug symbols is not a failure.
        skip_or_fail(
            config,
            f"ktstr: no vmlinux for the running kernel {kernel.release}:"
            f" {kernel.report.summary()}; install its debug package or pass --kernel",
        )
    pytest.fail(f"ktstr: {kernel.missing_vmlinux_message()}", pytrace=False)

"""pytest adapter: options, ini keys, environment, report header and the kernel fixtures.

Every setting follows one precedence rule: command-line option > environment > ini > default.
Relative paths from the command line or the environment are taken from the invocation
directory; relative paths from an ini file are taken from that file's directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from .cache import load_vmlinux_bytes
from .errors import KernelArtifactError, KernelSpecError
from .kernel import Kernel, resolve_kernel
from .spec import RUNNING, SpecSource, parse_kernel_spec, select_setting

ENV_KERNEL = "KTSTR_KERNEL"
ENV_SYSROOT = "KTSTR_KERNEL_SYSROOT"
INI_KERNEL = "ktstr_kernel"
INI_SYSROOT = "ktstr_kernel_sysroot"

HELP_KERNEL = (
    "kernel to test: an image (bzImage, Image, vmlinuz-R), a vmlinux ELF, a build-tree directory,"
    " a release (6.1.0-56-cloud-amd64) or 'running'. Precedence: --kernel > $KTSTR_KERNEL >"
    " ini ktstr_kernel > running."
)
HELP_SYSROOT = (
    "directory standing in for / when probing distro paths (/boot, /usr/lib/debug, /lib/modules):"
    " a guest root filesystem. Paths you give are not rewritten. Precedence: --kernel-sysroot >"
    " $KTSTR_KERNEL_SYSROOT > ini ktstr_kernel_sysroot > none."
)
HELP_VMLINUX = "the vmlinux ELF to use for the kernel; skips the search."

KERNEL_KEY = pytest.StashKey[Kernel]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux", "kernel vmlinux fixtures (pytest-ktstr-vmlinux)")
    group.addoption("--kernel", dest="ktstr_kernel", metavar="SPEC", help=HELP_KERNEL)
    group.addoption("--vmlinux", dest="ktstr_vmlinux", metavar="PATH", help=HELP_VMLINUX)
    group.addoption(
        "--kernel-sysroot", dest="ktstr_kernel_sysroot", metavar="DIR", help=HELP_SYSROOT
    )
    parser.addini(INI_KERNEL, help=HELP_KERNEL, default="")
    parser.addini(INI_SYSROOT, help=HELP_SYSROOT, default="")


def pytest_configure(config: pytest.Config) -> None:
    if config.option.help or config.option.version:
        return
    try:
        config.stash[KERNEL_KEY] = _resolve_from_config(config)
    except KernelSpecError as e:
        raise pytest.UsageError(f"ktstr: {e}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    kernel = config.stash.get(KERNEL_KEY, None)
    return header_line(kernel) if kernel is not None else None


def header_line(kernel: Kernel) -> str:
    vmlinux = str(kernel.vmlinux) if kernel.vmlinux else kernel.report.summary()
    return (
        f"ktstr: kernel={kernel.spec.raw} (from {kernel.source.value})"
        f" image={kernel.image or 'none'} vmlinux={vmlinux}"
        f" release={kernel.release or 'unknown'}"
    )


@pytest.fixture(scope="session")
def kernel(pytestconfig: pytest.Config) -> Kernel:
    """The kernel named by --kernel / $KTSTR_KERNEL / ini ktstr_kernel, else the running one."""
    return pytestconfig.stash[KERNEL_KEY]


@pytest.fixture(scope="session")
def vmlinux_path(kernel: Kernel) -> Path:
    """The vmlinux ELF of ``kernel``; errors (named kernel) or skips (default) when missing."""
    if kernel.vmlinux is None:
        _missing_vmlinux(kernel)
    return kernel.vmlinux


@pytest.fixture(scope="session")
def vmlinux_bytes(vmlinux_path: Path) -> memoryview:
    """The vmlinux contents, read-only and shared: one read per file version per process."""
    try:
        return load_vmlinux_bytes(vmlinux_path)
    except KernelArtifactError as e:
        message = str(e)
    # Failing outside the except block keeps the report to our message, not a chained traceback.
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _missing_vmlinux(kernel: Kernel) -> NoReturn:
    if not kernel.spec.named_by_user:
        # Nobody asked for this kernel: a host without debug symbols is not a failure.
        pytest.skip(
            f"ktstr: no vmlinux for the running kernel {kernel.release}:"
            f" {kernel.report.summary()}; install its debug package or pass --kernel"
        )
    pytest.fail(f"ktstr: {kernel.missing_vmlinux_message()}", pytrace=False)


def _resolve_from_config(config: pytest.Config) -> Kernel:
    invocation = config.invocation_params.dir
    ini_base = config.inipath.parent if config.inipath else config.rootpath
    kernel_setting = select_setting(
        [
            (SpecSource.OPTION, config.getoption("ktstr_kernel")),
            (SpecSource.ENV, os.environ.get(ENV_KERNEL)),
            (SpecSource.INI, _ini(config, INI_KERNEL)),
        ]
    ) or (RUNNING, SpecSource.DEFAULT)
    raw, source = kernel_setting
    spec = parse_kernel_spec(
        raw, source=source, base=ini_base if source is SpecSource.INI else invocation
    )
    sysroot = _sysroot(config, invocation, ini_base)
    return resolve_kernel(
        spec, vmlinux=config.getoption("ktstr_vmlinux"), sysroot=sysroot, base=invocation
    )


def _sysroot(config: pytest.Config, invocation: Path, ini_base: Path) -> Path | None:
    setting = select_setting(
        [
            (SpecSource.OPTION, config.getoption("ktstr_kernel_sysroot")),
            (SpecSource.ENV, os.environ.get(ENV_SYSROOT)),
            (SpecSource.INI, _ini(config, INI_SYSROOT)),
        ]
    )
    if setting is None:
        return None
    raw, source = setting
    base = ini_base if source is SpecSource.INI else invocation
    return _validate_sysroot(raw, source, base)


def _validate_sysroot(raw: str, source: SpecSource, base: Path) -> Path:
    path = base / os.path.expanduser(raw)
    if not path.is_dir():
        why = "does not exist" if not path.exists() else "is not a directory"
        raise KernelSpecError(f"kernel sysroot {raw!r} (from {source.value}): {path} {why}")
    return path


def _ini(config: pytest.Config, name: str) -> str | None:
    value = config.getini(name)
    return value if isinstance(value, str) else None

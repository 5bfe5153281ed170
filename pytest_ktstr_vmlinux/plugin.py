"""pytest adapter: options, ini keys, environment, report header and the kernel fixtures.

Every setting follows one precedence rule: command-line option > environment > ini > default.
Relative paths from the command line or the environment are taken from the invocation
directory; relative paths from an ini file are taken from that file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from .btf import BTF
from .cache import VmlinuxBytesCache
from .derived import load_btf, load_symbols
from .errors import KernelArtifactError, KernelSpecError
from .kconfig import KernelConfig
from .kernel import Kernel, resolve_kernel
from .memstore import MemoryStore, Store
from .snapshot import SnapshotLoader
from .spec import RUNNING, SpecSource, parse_kernel_spec, select_setting
from .store import ArtifactStore, StoreStats, StoreWarning
from .storeconfig import ENV_CACHE_DIR, ENV_CACHE_MAX_SIZE, open_store, store_location
from .storedir import DEFAULT_MAX_SIZE, InsecureStoreError, parse_size
from .symbols import KernelSymbols

T = TypeVar("T")

ENV_KERNEL = "KTSTR_KERNEL"
ENV_SYSROOT = "KTSTR_KERNEL_SYSROOT"
INI_KERNEL = "ktstr_kernel"
INI_SYSROOT = "ktstr_kernel_sysroot"
INI_CACHE_DIR = "ktstr_cache_dir"
INI_CACHE_MAX_SIZE = "ktstr_cache_max_size"
WORKER_STATS = "ktstr_store_stats"

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
HELP_VMLINUX = "the vmlinux ELF to use for the kernel; skips the search (still verified)."
HELP_NO_VERIFY = (
    "do not require the vmlinux to pair with the image (equal GNU build-ids, else equal"
    " linux_banner); use a stale or foreign vmlinux knowingly."
)
HELP_ALLOW_EXTRACTED = (
    "when no debug vmlinux pairs with the image, serve the ELF extracted from the image: it has"
    " .BTF and .notes but no .symtab (kernel.vmlinux_kind == 'extracted')."
)
HELP_CACHE_DIR = (
    "directory of the on-disk artifact store that xdist workers and later runs share."
    " Precedence: --kernel-cache-dir > $KTSTR_CACHE_DIR > ini ktstr_cache_dir >"
    " $XDG_CACHE_HOME/pytest-ktstr-vmlinux."
)
HELP_CACHE_MAX_SIZE = (
    "size cap of the on-disk store; least recently used artifacts are evicted past it (8GiB,"
    " 512M, bytes). Precedence: $KTSTR_CACHE_MAX_SIZE > ini ktstr_cache_max_size > 8GiB."
)
HELP_NO_CACHE = "no on-disk store: build every kernel artifact in this process, keep it in memory."
HELP_CACHE_CLEAR = "empty the on-disk kernel artifact store before the run."

KERNEL_KEY = pytest.StashKey[Kernel]()
STORE_KEY = pytest.StashKey[Store]()
BYTES_KEY = pytest.StashKey[VmlinuxBytesCache]()
WORKER_TOTALS_KEY = pytest.StashKey[StoreStats]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux", "kernel vmlinux fixtures (pytest-ktstr-vmlinux)")
    group.addoption("--kernel", dest="ktstr_kernel", metavar="SPEC", help=HELP_KERNEL)
    group.addoption("--vmlinux", dest="ktstr_vmlinux", metavar="PATH", help=HELP_VMLINUX)
    group.addoption(
        "--kernel-sysroot", dest="ktstr_kernel_sysroot", metavar="DIR", help=HELP_SYSROOT
    )
    group.addoption(
        "--no-kernel-verify", dest="ktstr_no_verify", action="store_true", help=HELP_NO_VERIFY
    )
    group.addoption(
        "--kernel-allow-extracted",
        dest="ktstr_allow_extracted",
        action="store_true",
        help=HELP_ALLOW_EXTRACTED,
    )
    group.addoption(
        "--kernel-cache-dir", dest="ktstr_cache_dir", metavar="DIR", help=HELP_CACHE_DIR
    )
    group.addoption(
        "--no-kernel-cache", dest="ktstr_no_cache", action="store_true", help=HELP_NO_CACHE
    )
    group.addoption(
        "--kernel-cache-clear", dest="ktstr_cache_clear", action="store_true", help=HELP_CACHE_CLEAR
    )
    parser.addini(INI_KERNEL, help=HELP_KERNEL, default="")
    parser.addini(INI_SYSROOT, help=HELP_SYSROOT, default="")
    parser.addini(INI_CACHE_DIR, help=HELP_CACHE_DIR, default="")
    parser.addini(INI_CACHE_MAX_SIZE, help=HELP_CACHE_MAX_SIZE, default="")


def pytest_configure(config: pytest.Config) -> None:
    if config.option.help or config.option.version:
        return
    try:
        store = _open_store(config)
        config.stash[KERNEL_KEY] = _resolve_from_config(config, store)
    except KernelSpecError as e:
        raise pytest.UsageError(f"ktstr: {e}") from None
    config.stash[STORE_KEY] = store
    loader = SnapshotLoader(store) if isinstance(store, ArtifactStore) else None
    config.stash[BYTES_KEY] = VmlinuxBytesCache(loader=loader)
    config.stash[WORKER_TOTALS_KEY] = StoreStats()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistStoreStats(config), "ktstr-vmlinux-xdist")


def pytest_sessionfinish(session: pytest.Session) -> None:
    store = session.config.stash.get(STORE_KEY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if store is not None and workeroutput is not None:
        workeroutput[WORKER_STATS] = {"built": store.stats.built, "reused": store.stats.reused}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    store = config.stash.get(STORE_KEY, None)
    if store is None or _is_xdist_worker(config):
        return
    workers = config.stash[WORKER_TOTALS_KEY]
    built = store.stats.built + workers.built
    reused = store.stats.reused + workers.reused
    terminalreporter.write_line(
        f"ktstr: artifacts built {built}, reused {reused} (store: {store_location(store)})"
    )


class _XdistStoreStats:
    """On the xdist controller: add up what every worker's store did."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        stats = getattr(node, "workeroutput", {}).get(WORKER_STATS)
        if isinstance(stats, dict):
            totals = self.config.stash[WORKER_TOTALS_KEY]
            totals.built += int(stats.get("built", 0))
            totals.reused += int(stats.get("reused", 0))


def pytest_report_header(config: pytest.Config) -> str | None:
    kernel = config.stash.get(KERNEL_KEY, None)
    return header_line(kernel) if kernel is not None else None


def header_line(kernel: Kernel) -> str:
    vmlinux = str(kernel.vmlinux) if kernel.vmlinux else kernel.report.summary()
    return (
        f"ktstr: kernel={kernel.spec.raw} (from {kernel.source.value})"
        f" image={kernel.image or 'none'} vmlinux={vmlinux}"
        f" release={kernel.release or 'unknown'}"
        f" build_id={kernel.build_id or 'none'} paired={kernel.paired}"
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
def kernel_config(kernel: Kernel) -> KernelConfig:
    """The kernel's config (.config, /boot/config-R or IKCONFIG); errors or skips like
    ``vmlinux_path`` when there is none."""
    try:
        config = kernel.config
    except KernelArtifactError as e:
        message = str(e)
    else:
        if config is not None:
            return config
        message = (
            f"no kernel config for {kernel.spec.raw!r}: no .config in a build tree, no"
            f" /boot/config-{kernel.release}, no IKCONFIG in the image or vmlinux"
        )
    if not kernel.spec.named_by_user:
        pytest.skip(f"ktstr: {message}")
    pytest.fail(f"ktstr: {message}", pytrace=False)


@pytest.fixture(scope="session")
def kernel_symbols(kernel: Kernel) -> KernelSymbols:
    """The kernel's symbols (``ksyms["runqueues"]``), built once through the store; errors or
    skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(kernel, load_symbols)


@pytest.fixture(scope="session")
def kernel_btf(kernel: Kernel) -> BTF:
    """The kernel's BTF (``btf.offsetof("struct rq", "nr_running")``), indexed once through the
    store; errors or skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(kernel, load_btf)


def _derived(kernel: Kernel, load: Callable[[Kernel], T]) -> T:
    try:
        return load(kernel)
    except KernelArtifactError as e:
        message = str(e)
    if not kernel.spec.named_by_user:
        pytest.skip(f"ktstr: {message}")
    pytest.fail(f"ktstr: {message}", pytrace=False)


@pytest.fixture(scope="session")
def kernel_store(pytestconfig: pytest.Config) -> Store:
    """Where kernel artifacts are built once and shared: on disk, or in memory without a cache."""
    return pytestconfig.stash[STORE_KEY]


@pytest.fixture(scope="session")
def vmlinux_bytes(vmlinux_path: Path, pytestconfig: pytest.Config) -> memoryview:
    """The vmlinux contents, read-only: a mapping of the store's snapshot that every worker
    shares, or one private read per file version without an on-disk store."""
    try:
        return pytestconfig.stash[BYTES_KEY].get(vmlinux_path)
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


def _resolve_from_config(config: pytest.Config, store: Store) -> Kernel:
    invocation = config.invocation_params.dir
    ini_base = _ini_base(config)
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
        spec,
        vmlinux=config.getoption("ktstr_vmlinux"),
        sysroot=sysroot,
        base=invocation,
        store=store,
        verify=not config.getoption("ktstr_no_verify"),
        allow_extracted=config.getoption("ktstr_allow_extracted"),
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


def _open_store(config: pytest.Config) -> Store:
    if config.getoption("ktstr_no_cache"):
        return MemoryStore()
    invocation = config.invocation_params.dir
    setting = select_setting(
        [
            (SpecSource.OPTION, config.getoption("ktstr_cache_dir")),
            (SpecSource.ENV, os.environ.get(ENV_CACHE_DIR)),
            (SpecSource.INI, _ini(config, INI_CACHE_DIR)),
        ]
    )
    directory = None
    if setting is not None:
        raw, source = setting
        base = _ini_base(config) if source is SpecSource.INI else invocation
        directory = base / os.path.expanduser(raw)
    try:
        store, problem = open_store(directory, max_size=_validate_max_size(config))
    except InsecureStoreError as e:
        raise KernelSpecError(str(e)) from None
    worker = _is_xdist_worker(config)
    if problem is not None and not worker:
        # Workers fall back the same way; the controller says so once for the run.
        config.issue_config_time_warning(StoreWarning(f"ktstr: {problem}"), stacklevel=2)
    if config.getoption("ktstr_cache_clear") and not worker and isinstance(store, ArtifactStore):
        store.clear()
    return store


def _validate_max_size(config: pytest.Config) -> int:
    setting = select_setting(
        [
            (SpecSource.ENV, os.environ.get(ENV_CACHE_MAX_SIZE)),
            (SpecSource.INI, _ini(config, INI_CACHE_MAX_SIZE)),
        ]
    )
    if setting is None:
        return DEFAULT_MAX_SIZE
    raw, source = setting
    try:
        return parse_size(raw)
    except ValueError as e:
        raise KernelSpecError(f"kernel cache max size (from {source.value}): {e}") from None


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _ini_base(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath else config.rootpath


def _ini(config: pytest.Config, name: str) -> str | None:
    value = config.getini(name)
    return value if isinstance(value, str) else None

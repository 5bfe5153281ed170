"""pytest adapter: options, ini keys, markers, report header, the kernel fixtures and hooks.

Settings are read in settings.py (option > environment > ini > default), requirements checked
in requirements.py, per-kernel results kept in results.py: this module only wires them to pytest.
With several kernels, every test that uses a kernel fixture (or a ``ktstr`` marker) is
parametrized over them, ids carrying the labels, and session fixtures are built once per kernel.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from .btf import BTF
from .cache import VmlinuxBytesCache
from .derived import KernelArtifacts
from .errors import KernelArtifactError, KernelSpecError
from .kconfig import KernelConfig
from .kernel import Kernel
from .kernelset import kernel_name
from .markers import HELP_MARKER, MARKER
from .memstore import Store
from .requirements import Requirements, check
from .results import KernelResults, case_properties
from .settings import (
    INI_CACHE_DIR,
    INI_CACHE_MAX_SIZE,
    INI_KERNEL,
    INI_SYSROOT,
    is_xdist_worker,
    open_config_store,
    resolve_kernels,
)
from .snapshot import SnapshotLoader
from .store import ArtifactStore, StoreStats
from .storeconfig import store_location
from .symbols import KernelSymbols

T = TypeVar("T")

KERNEL_FIXTURE = "kernel"
WORKER_STATS = "ktstr_store_stats"

HELP_KERNEL = (
    "kernel to test: an image (bzImage, Image, vmlinuz-R), a vmlinux ELF, a build-tree directory,"
    " a release (6.1.0-56-cloud-amd64) or 'running', optionally labelled (deb=SPEC). Repeat it"
    " to run every kernel test once per kernel. Precedence: --kernel > $KTSTR_KERNEL_LIST >"
    " $KTSTR_KERNEL > ini ktstr_kernel > running; the list and the ini separate kernels by ';'."
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

HELP_STRICT = (
    "fail, instead of skipping, tests whose kernel lacks what their ktstr marker requires or"
    " whose kernel artifacts are missing: for CI that must prove coverage."
)
KERNELS_KEY = pytest.StashKey[dict[str, Kernel]]()
ARTIFACTS_KEY = pytest.StashKey[dict[str, KernelArtifacts]]()
STORE_KEY = pytest.StashKey[Store]()
BYTES_KEY = pytest.StashKey[VmlinuxBytesCache]()
WORKER_TOTALS_KEY = pytest.StashKey[StoreStats]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux", "kernel vmlinux fixtures (pytest-ktstr-vmlinux)")
    group.addoption(
        "--kernel", dest="ktstr_kernel", action="append", metavar="[LABEL=]SPEC", help=HELP_KERNEL
    )
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
    group.addoption("--kernel-strict", dest="ktstr_strict", action="store_true", help=HELP_STRICT)
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
    config.addinivalue_line("markers", HELP_MARKER)
    if config.option.help or config.option.version:
        return
    try:
        store = open_config_store(config)
        kernels = resolve_kernels(config, store)
    except KernelSpecError as e:
        raise pytest.UsageError(f"ktstr: {e}") from None
    config.stash[KERNELS_KEY] = {k.label: k for k in kernels}
    config.stash[ARTIFACTS_KEY] = {k.label: KernelArtifacts(k) for k in kernels}
    config.stash[STORE_KEY] = store
    loader = SnapshotLoader(store) if isinstance(store, ArtifactStore) else None
    config.stash[BYTES_KEY] = VmlinuxBytesCache(loader=loader)
    config.stash[WORKER_TOTALS_KEY] = StoreStats()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistStoreStats(config), "ktstr-vmlinux-xdist")
    if not is_xdist_worker(config):
        config.pluginmanager.register(KernelResults(kernels), "ktstr-vmlinux-results")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """A ``ktstr`` test needs a kernel even when it names no kernel fixture: make it use
    ``kernel``, before pytest computes its fixtures, so it runs once per kernel too. A class's
    or module's marker goes on that node: a method is shared with every subclass."""
    if not inspect.isfunction(obj):
        return
    marks = getattr(obj, "pytestmark", [])
    if any(m.name == MARKER for m in marks):
        if not _uses_kernel(marks):
            pytest.mark.usefixtures(KERNEL_FIXTURE)(obj)
        return
    inherited = next(collector.iter_markers(MARKER), None) is not None
    if inherited and not _uses_kernel(collector.iter_markers("usefixtures")):
        collector.add_marker(pytest.mark.usefixtures(KERNEL_FIXTURE))


def _parametrized_by_user(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if KERNEL_FIXTURE in names:
            return True
    return False


def _uses_kernel(marks: Iterable[pytest.Mark]) -> bool:
    return any(m.name == "usefixtures" and KERNEL_FIXTURE in m.args for m in marks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for mark in metafunc.definition.iter_markers(MARKER):
        _requirements(mark, metafunc.definition.nodeid)
    kernels = metafunc.config.stash.get(KERNELS_KEY, None)
    if kernels and len(kernels) > 1 and KERNEL_FIXTURE in metafunc.fixturenames:
        if _parametrized_by_user(metafunc):
            return  # the test chose its own kernel values; two parametrizations would clash
        labels = list(kernels)
        metafunc.parametrize(KERNEL_FIXTURE, labels, indirect=True, ids=labels, scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        kernel = _item_kernel(item)
        if kernel is not None:
            item.user_properties.extend(case_properties(kernel))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Check the test's ``ktstr`` requirements before any fixture is built."""
    marks = list(item.iter_markers(MARKER))
    kernel = _item_kernel(item)
    if not marks or kernel is None:
        return
    requirements = [_requirements(mark, item.nodeid) for mark in marks]
    verdict = check(requirements, item.config.stash[ARTIFACTS_KEY][kernel.label])
    if not verdict.ok:
        message = f"ktstr: {verdict.reason(kernel_name(kernel))}"
        _skip_or_fail(item.config, message, at_test=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    store = session.config.stash.get(STORE_KEY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if store is not None and workeroutput is not None:
        workeroutput[WORKER_STATS] = {"built": store.stats.built, "reused": store.stats.reused}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    store = config.stash.get(STORE_KEY, None)
    if store is None or is_xdist_worker(config):
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


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    kernels = config.stash.get(KERNELS_KEY, None)
    if not kernels:
        return None
    several = len(kernels) > 1
    return [header_line(k) + (f" label={k.label}" if several else "") for k in kernels.values()]


def header_line(kernel: Kernel) -> str:
    vmlinux = str(kernel.vmlinux) if kernel.vmlinux else kernel.report.summary()
    return (
        f"ktstr: kernel={kernel.spec.raw} (from {kernel.source.value})"
        f" image={kernel.image or 'none'} vmlinux={vmlinux}"
        f" release={kernel.release or 'unknown'}"
        f" build_id={kernel.build_id or 'none'} paired={kernel.paired}"
    )


@pytest.fixture(scope="session")
def kernel(request: pytest.FixtureRequest) -> Kernel:
    """The kernel under test: one of --kernel / $KTSTR_KERNEL_LIST / $KTSTR_KERNEL / ini
    ktstr_kernel, else the running one; with several, each in turn."""
    kernels = request.config.stash[KERNELS_KEY]
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
    return _derived(pytestconfig, kernel, KernelArtifacts.config)


@pytest.fixture(scope="session")
def kernel_symbols(kernel: Kernel, pytestconfig: pytest.Config) -> KernelSymbols:
    """The kernel's symbols (``ksyms["runqueues"]``), built once through the store; errors or
    skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(pytestconfig, kernel, KernelArtifacts.symbols)


@pytest.fixture(scope="session")
def kernel_btf(kernel: Kernel, pytestconfig: pytest.Config) -> BTF:
    """The kernel's BTF (``btf.offsetof("struct rq", "nr_running")``), indexed once through the
    store; errors or skips like ``vmlinux_path`` when the kernel has none."""
    return _derived(pytestconfig, kernel, KernelArtifacts.btf)


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


def _derived(config: pytest.Config, kernel: Kernel, load: Callable[[KernelArtifacts], T]) -> T:
    try:
        return load(config.stash[ARTIFACTS_KEY][kernel.label])
    except KernelArtifactError as e:
        message = str(e)
    if not kernel.spec.named_by_user:
        _skip_or_fail(config, f"ktstr: {message}")
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _missing_vmlinux(config: pytest.Config, kernel: Kernel) -> NoReturn:
    if not kernel.spec.named_by_user:
        # Nobody asked for this kernel: a host without debug symbols is not a failure.
        _skip_or_fail(
            config,
            f"ktstr: no vmlinux for the running kernel {kernel.release}:"
            f" {kernel.report.summary()}; install its debug package or pass --kernel",
        )
    pytest.fail(f"ktstr: {kernel.missing_vmlinux_message()}", pytrace=False)


def _skip_or_fail(config: pytest.Config, message: str, *, at_test: bool = False) -> NoReturn:
    """Skip, or fail under --kernel-strict. ``at_test``: report the skip at the test rather
    than here, as pytest's own skip markers do, through pytest's private keyword; a pytest
    without it reports the skip here instead."""
    if config.getoption("ktstr_strict"):
        pytest.fail(f"{message} (--kernel-strict)", pytrace=False)
    if at_test:
        try:
            skipped = pytest.skip.Exception(message, _use_item_location=True)
        except TypeError:
            pass
        else:
            raise skipped
    pytest.skip(message)


def _requirements(mark: pytest.Mark, nodeid: str) -> Requirements:
    try:
        return Requirements.parse(mark.args, mark.kwargs)
    except ValueError as e:
        message = str(e)
    # Outside the except block: the collection error is our message, not a chained traceback.
    pytest.fail(f"{nodeid}: {message}", pytrace=False)


def _item_kernel(item: pytest.Item) -> Kernel | None:
    """The kernel an item runs on, None for a test that uses no kernel."""
    if KERNEL_FIXTURE not in getattr(item, "fixturenames", ()):
        return None
    kernels = item.config.stash.get(KERNELS_KEY, None)
    if not kernels:
        return None
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get(KERNEL_FIXTURE) if callspec is not None else None
    return kernels.get(label) if isinstance(label, str) else next(iter(kernels.values()))

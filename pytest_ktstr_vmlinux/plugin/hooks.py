"""pytest adapter: options, ini keys, markers, report header, the kernel fixtures and hooks.

Settings are read in settings.py (option > environment > ini > default), requirements checked
in requirements.py, per-kernel results kept in results.py: this module only wires them to pytest.
With several kernels, every test that uses a kernel fixture (or a ``ktstr`` marker) is
parametrized over them, ids carrying the labels, and session fixtures are built once per kernel.

A suite whose tests use no kernel pays next to nothing: this module imports none of the library
(kernels, stores, ELF, BTF, symbols, decompressors are imported when a kernel is first needed,
see KernelRun), the collection hooks return at once for tests without a kernel, and the hooks
that run per test are registered only when collection found tests that use a kernel.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

from ..errors import KernelArtifactError
from ..kernel.kernelset import kernel_name
from .markers import HELP_MARKER, MARKER
from .results import KernelResults, add_suite_property, case_properties
from .settings import (
    INI_CACHE_DIR,
    INI_CACHE_MAX_SIZE,
    INI_KERNEL,
    INI_LOCK_TIMEOUT,
    INI_SYSROOT,
    is_xdist_worker,
    kernels_named,
)

if TYPE_CHECKING:
    from ..formats.btf.queries import BTF
    from ..formats.kconfig import KernelConfig
    from ..formats.symbols import KernelSymbols
    from ..kernel.artifacts import KernelArtifacts
    from ..kernel.requirements import Requirements
    from ..kernel.resolve import Kernel
    from ..store.bytescache import VmlinuxBytesCache
    from ..store.memory import Store

T = TypeVar("T")

# The guest fixtures (kernel_vm, kernel_vm_factory), their options and the ktstr_vm marker.
pytest_plugins = ["pytest_ktstr_vmlinux.plugin.vm"]

KERNEL_FIXTURE = "kernel"
WORKER_STATS = "ktstr_store_stats"
TESTS_PLUGIN = "ktstr-vmlinux-tests"
RESULTS_PLUGIN = "ktstr-vmlinux-results"

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
HELP_LOCK_TIMEOUT = (
    "seconds to wait for the kernel artifact store's lock, held by another process building an"
    " artifact, before failing (a wait past a few seconds says which pid holds it)."
    " Precedence: --kernel-lock-timeout > $KTSTR_LOCK_TIMEOUT > ini ktstr_lock_timeout > 1800."
)
HELP_NO_CACHE = "no on-disk store: build every kernel artifact in this process, keep it in memory."
HELP_CACHE_CLEAR = "empty the on-disk kernel artifact store before the run."

HELP_STRICT = (
    "fail, instead of skipping, tests whose kernel lacks what their ktstr marker requires or"
    " whose kernel artifacts are missing: for CI that must prove coverage."
)


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
        "--kernel-lock-timeout",
        dest="ktstr_lock_timeout",
        metavar="SECONDS",
        help=HELP_LOCK_TIMEOUT,
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
    parser.addini(INI_LOCK_TIMEOUT, help=HELP_LOCK_TIMEOUT, default="")


RUN_KEY = pytest.StashKey["KernelRun"]()
_INHERITED_KEY = pytest.StashKey[bool]()


class KernelRun:
    """The run's store, kernels and per-kernel artifacts, each built on first use.

    A run that names its kernel (``settings.kernels_named``), and the xdist controller, resolve
    it when pytest is configured, so a bad spec is a usage error whatever the tests and before any
    worker starts. A run that names nothing tests the running kernel, resolved only once
    something needs it: a kernel test collected, a kernel fixture, the report header. Until then
    none of the library is imported, and a suite without kernel tests never imports it.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.named = kernels_named(config)
        self.worker = is_xdist_worker(config)
        # What xdist workers' stores did, added up on the controller.
        self.workers_built = 0
        self.workers_reused = 0
        self.workers_reported = False
        self._store: Store | None = None
        self._kernels: dict[str, Kernel] | None = None
        self._artifacts: dict[str, KernelArtifacts] = {}
        self._bytes: VmlinuxBytesCache | None = None
        self._session_started = False

    @property
    def store_opened(self) -> bool:
        return self._store is not None

    def store(self) -> Store:
        if self._store is None:
            from .settings import open_config_store

            try:
                self._store = open_config_store(self.config, _live_notice(self.config))
            except KernelArtifactError as e:  # a bad setting, an unusable store, a held lock
                raise pytest.UsageError(f"ktstr: {e}") from None
        return self._store

    def kernels(self) -> dict[str, Kernel]:
        """Label -> kernel, in the order given; pytest.UsageError for bad settings."""
        if self._kernels is None:
            from .settings import resolve_kernels

            store = self.store()
            try:
                kernels = resolve_kernels(self.config, store)
            except KernelArtifactError as e:  # a bad spec, or the store's lock held too long
                raise pytest.UsageError(f"ktstr: {e}") from None
            self._kernels = {k.label: k for k in kernels}
            if self._session_started:
                self._add_suite_property()
        return self._kernels

    def kernel_list(self) -> list[Kernel]:
        return list(self.kernels().values())

    def several(self) -> list[str] | None:
        """The labels when the run has more than one kernel, else None. A run that names no
        kernel has one, the running kernel: that needs no resolving."""
        if not self.named and self._kernels is None:
            return None
        labels = list(self.kernels())
        return labels if len(labels) > 1 else None

    def artifacts(self, kernel: Kernel) -> KernelArtifacts:
        found = self._artifacts.get(kernel.label)
        if found is None:
            from ..kernel.artifacts import KernelArtifacts

            found = self._artifacts[kernel.label] = KernelArtifacts(kernel)
        return found

    def bytes_cache(self) -> VmlinuxBytesCache:
        if self._bytes is None:
            from ..store.bytescache import VmlinuxBytesCache
            from ..store.disk import ArtifactStore
            from ..store.snapshot import SnapshotLoader

            store = self.store()
            loader = SnapshotLoader(store) if isinstance(store, ArtifactStore) else None
            self._bytes = VmlinuxBytesCache(loader=loader)
        return self._bytes

    def session_started(self) -> None:
        self._session_started = True
        if self._kernels is not None:
            self._add_suite_property()

    def _add_suite_property(self) -> None:
        if not self.worker and self._kernels is not None:
            add_suite_property(self.config, list(self._kernels.values()))


def _run(config: pytest.Config) -> KernelRun:
    return config.stash[RUN_KEY]


def _distributes(config: pytest.Config) -> bool:
    """Whether this process is an xdist controller that hands tests to workers: it collects no
    tests itself, reports of kernel tests arrive from the workers."""
    if is_xdist_worker(config) or not config.pluginmanager.hasplugin("xdist"):
        return False
    if config.getoption("collectonly"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", HELP_MARKER)
    if config.option.help or config.option.version:
        return
    run = KernelRun(config)
    config.stash[RUN_KEY] = run
    controller = _distributes(config)
    if run.named or controller:
        run.kernels()
    if controller:
        config.pluginmanager.register(_XdistStoreStats(run), "ktstr-vmlinux-xdist")
        config.pluginmanager.register(KernelResults(run.kernel_list), RESULTS_PLUGIN)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """A ``ktstr`` test needs a kernel even when it names no kernel fixture: make it use
    ``kernel``, before pytest computes its fixtures, so it runs once per kernel too. A class's
    or module's marker goes on that node: a method is shared with every subclass. Called for
    every name a module or class defines: whether the node inherits the marker is looked up once
    per node."""
    if not inspect.isfunction(obj):
        return
    marks = getattr(obj, "pytestmark", None)
    if marks and any(m.name == MARKER for m in marks):
        if not _uses_kernel(marks):
            pytest.mark.usefixtures(KERNEL_FIXTURE)(obj)
        return
    if _INHERITED_KEY in collector.stash:
        return
    inherited = next(collector.iter_markers(MARKER), None) is not None
    collector.stash[_INHERITED_KEY] = inherited
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
    # Every kernel fixture requests ``kernel``, and every ``ktstr`` test was made to use it.
    if KERNEL_FIXTURE not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers(MARKER):
        _requirements(mark, metafunc.definition.nodeid)
    run = metafunc.config.stash.get(RUN_KEY, None)
    labels = run.several() if run is not None else None
    if labels is None or _parametrized_by_user(metafunc):
        return  # one kernel; or the test chose its own kernel values, which would clash
    metafunc.parametrize(KERNEL_FIXTURE, labels, indirect=True, ids=labels, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Find the tests that use a kernel, once: only they get per-test work (JUnit properties,
    requirement checks, the per-kernel tally), by hooks registered here when there are any."""
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    used = [item for item in items if KERNEL_FIXTURE in getattr(item, "fixturenames", ())]
    if not used:
        return
    kernels = run.kernels()
    tests: dict[pytest.Item, Kernel] = {}
    for item in used:
        kernel = _item_kernel(item, kernels)
        if kernel is not None:
            item.user_properties.extend(case_properties(kernel))
            tests[item] = kernel
    plugins = config.pluginmanager
    if tests and not plugins.has_plugin(TESTS_PLUGIN):
        plugins.register(_KernelTests(run, tests), TESTS_PLUGIN)
    if tests and not run.worker and not plugins.has_plugin(RESULTS_PLUGIN):
        plugins.register(KernelResults(run.kernel_list), RESULTS_PLUGIN)


class _KernelTests:
    """Registered once collection found tests that run on a kernel: checks their ``ktstr``
    requirements before any fixture is built. Other tests pass through a dict lookup."""

    def __init__(self, run: KernelRun, tests: dict[pytest.Item, Kernel]) -> None:
        self.run = run
        self.tests = tests

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        kernel = self.tests.get(item)
        if kernel is None:
            return
        marks = list(item.iter_markers(MARKER))
        if not marks:
            return
        from ..kernel.requirements import check
        from ..store.lock import StoreLockTimeout

        requirements = [_requirements(mark, item.nodeid) for mark in marks]
        busy: str | None = None
        try:
            verdict = check(requirements, self.run.artifacts(kernel))
        except StoreLockTimeout as e:  # says nothing about the kernel: not a requirement's
            busy = str(e)
        if busy is not None:
            pytest.fail(f"ktstr: {busy}", pytrace=False)
        if not verdict.ok:
            message = f"ktstr: {verdict.reason(kernel_name(kernel))}"
            if verdict.unchecked and not verdict.unmet and kernel.spec.named_by_user:
                # As for the fixtures: a kernel the user named never turns green by skipping.
                pytest.fail(f"{message}. {_unchecked_help(kernel)}", pytrace=False)
            _skip_or_fail(item.config, message, at_test=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None:
        run.session_started()


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    workeroutput = getattr(session.config, "workeroutput", None)
    if run is not None and run.store_opened and workeroutput is not None:
        stats = run.store().stats
        workeroutput[WORKER_STATS] = {"built": stats.built, "reused": stats.reused}


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """How much the store built and reused, once a kernel needed it (on a worker or here)."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.worker or not (run.store_opened or run.workers_reported):
        return
    from ..store.choose import store_location

    store = run.store()
    built = store.stats.built + run.workers_built
    reused = store.stats.reused + run.workers_reused
    terminalreporter.write_line(
        f"ktstr: artifacts built {built}, reused {reused} (store: {store_location(store)})"
    )


class _XdistStoreStats:
    """On the xdist controller: add up what every worker's store did."""

    def __init__(self, run: KernelRun) -> None:
        self.run = run

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        stats = getattr(node, "workeroutput", {}).get(WORKER_STATS)
        if isinstance(stats, dict):
            self.run.workers_reported = True
            self.run.workers_built += int(stats.get("built", 0))
            self.run.workers_reused += int(stats.get("reused", 0))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return None
    kernels = run.kernels()
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
    kernels = _run(request.config).kernels()
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
    return _run(pytestconfig).store()


@pytest.fixture(scope="session")
def vmlinux_bytes(vmlinux_path: Path, pytestconfig: pytest.Config) -> memoryview:
    """The vmlinux contents, read-only: a mapping of the store's snapshot that every worker
    shares, or one private read per file version without an on-disk store."""
    try:
        return _run(pytestconfig).bytes_cache().get(vmlinux_path)
    except KernelArtifactError as e:
        message = str(e)
    # Failing outside the except block keeps the report to our message, not a chained traceback.
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _derived(config: pytest.Config, kernel: Kernel, load: Callable[[KernelArtifacts], T]) -> T:
    from ..store.lock import StoreLockTimeout

    try:
        return load(_run(config).artifacts(kernel))
    except KernelArtifactError as e:
        message, busy = str(e), isinstance(e, StoreLockTimeout)
    # A lock held too long says nothing about the kernel: never a skip.
    if not kernel.spec.named_by_user and not busy:
        _skip_or_fail(config, f"ktstr: {message}")
    pytest.fail(f"ktstr: {message}", pytrace=False)


def _live_notice(config: pytest.Config) -> Callable[[str], None]:
    """Print to the terminal now, past pytest's capture: a wait is news while it lasts."""

    def notice(message: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"ktstr: {message}", file=sys.stderr, flush=True)

    return notice


def _missing_vmlinux(config: pytest.Config, kernel: Kernel) -> NoReturn:
    if not kernel.spec.named_by_user:
        # Nobody asked for this kernel: a host without debug symbols is not a failure.
        _skip_or_fail(
            config,
            f"ktstr: no vmlinux for the running kernel {kernel.release}:"
            f" {kernel.report.summary()}; install its debug package or pass --kernel",
        )
    pytest.fail(f"ktstr: {kernel.missing_vmlinux_message()}", pytrace=False)


def _unchecked_help(kernel: Kernel) -> str:
    return (
        f"The kernel was named (from {kernel.source.value}), so a requirement that cannot be"
        " checked fails rather than skips: make what it reads available (the kernel's debug"
        " vmlinux: its debug package, the build tree's vmlinux or --vmlinux; its config; its"
        " BTF), or drop the requirement"
    )


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
    from ..kernel.requirements import Requirements

    try:
        return Requirements.parse(mark.args, mark.kwargs)
    except ValueError as e:
        message = str(e)
    # Outside the except block: the collection error is our message, not a chained traceback.
    pytest.fail(f"{nodeid}: {message}", pytrace=False)


def _item_kernel(item: pytest.Item, kernels: dict[str, Kernel]) -> Kernel | None:
    """The kernel an item that uses ``kernel`` runs on; None when the test parametrizes
    ``kernel`` with values of its own."""
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get(KERNEL_FIXTURE) if callspec is not None else None
    return kernels.get(label) if isinstance(label, str) else next(iter(kernels.values()))

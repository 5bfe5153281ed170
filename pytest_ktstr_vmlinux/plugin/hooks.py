"""pytest hooks: options, markers, collection, the report header and summary.

Settings are read in ``settings.py`` (option > environment > ini > default), the run's lazy
state kept in ``run.py``, requirements checked in ``checks.py``, per-kernel results kept in
``results.py``, the fixtures defined in ``fixtures.py``: this module only wires them to pytest.
With several kernels, every test that uses a kernel fixture (or a ``ktstr`` marker) is
parametrized over them, ids carrying the labels, and session fixtures are built once per kernel.

A suite whose tests use no kernel pays next to nothing: the plugin imports none of the library
(kernels, stores, ELF, BTF, symbols, decompressors are imported when a kernel is first needed,
see KernelRun), the collection hooks return at once for tests without a kernel, and the hooks
that run per test are registered only when collection found tests that use a kernel.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pytest

from .checks import KernelTests, mark_requirements
from .markers import HELP_MARKER, MARKER
from .options import add_options
from .results import KernelResults, case_properties
from .run import RUN_KEY, KernelRun
from .settings import WORKER_FETCHED, is_xdist_worker

if TYPE_CHECKING:
    from ..kernel.resolve import Kernel

# Registered with this module, and so disabled with it by -p no:ktstr_vmlinux: the kernel
# fixtures; the guest fixtures (kernel_vm, kernel_vm_factory), their options and ktstr_vm marker;
# the ktstr_checks marker (the host monitor around a test).
pytest_plugins = [
    "pytest_ktstr_vmlinux.plugin.fixtures",
    "pytest_ktstr_vmlinux.plugin.vm",
    "pytest_ktstr_vmlinux.plugin.monitor",
]

KERNEL_FIXTURE = "kernel"
WORKER_STATS = "ktstr_store_stats"
TESTS_PLUGIN = "ktstr-vmlinux-tests"
RESULTS_PLUGIN = "ktstr-vmlinux-results"
_INHERITED_KEY = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


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
        mark_requirements(mark, metafunc.definition.nodeid)
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
        plugins.register(KernelTests(run, tests), TESTS_PLUGIN)
    if tests and not run.worker and not plugins.has_plugin(RESULTS_PLUGIN):
        plugins.register(KernelResults(run.kernel_list), RESULTS_PLUGIN)


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

    def pytest_configure_node(self, node: Any) -> None:
        """Hand each worker the kernels fetched here, so that it tests the very same ones."""
        fetched = {k.fetched.spec: k.fetched.tree for k in self.run.kernel_list() if k.fetched}
        node.workerinput[WORKER_FETCHED] = fetched

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
    lines = [header_line(k) + (f" label={k.label}" if several else "") for k in kernels.values()]
    # One line per fetched kernel: what this run did to have it (downloaded, found current).
    lines += [f"ktstr: fetched {k.fetched.summary()}" for k in kernels.values() if k.fetched]
    return lines


def header_line(kernel: Kernel) -> str:
    vmlinux = str(kernel.vmlinux) if kernel.vmlinux else kernel.report.summary()
    fetched = kernel.fetched
    origin = f" suite={fetched.suite} package_version={fetched.version}" if fetched else ""
    return (
        f"ktstr: kernel={kernel.spec.raw} (from {kernel.source.value})"
        f" image={kernel.image or 'none'} vmlinux={vmlinux}"
        f" release={kernel.release or 'unknown'}"
        f" build_id={kernel.build_id or 'none'} paired={kernel.paired}{origin}"
    )


def _item_kernel(item: pytest.Item, kernels: dict[str, Kernel]) -> Kernel | None:
    """The kernel an item that uses ``kernel`` runs on; None when the test parametrizes
    ``kernel`` with values of its own."""
    callspec = getattr(item, "callspec", None)
    label = callspec.params.get(KERNEL_FIXTURE) if callspec is not None else None
    return kernels.get(label) if isinstance(label, str) else next(iter(kernels.values()))

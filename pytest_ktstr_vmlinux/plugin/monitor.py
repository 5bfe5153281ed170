"""The ``ktstr_checks`` marker: the host monitor around a test body, ktstr's checks after it.

``@pytest.mark.ktstr_checks(max_imbalance_ratio=4.0, max_gap_ms=2000)`` on a test that uses
``kernel_vm``: ``kernel_vm.kernel.monitor()`` samples the guest from just before the test
function runs to just after it returns (fixtures' setup and teardown are not the workload), the
checks are judged on what it saw, and a violation fails the test with which check, which CPU or
task, when, the value and the bound. Every test so marked records junit properties (each check,
its worst value, how much was sampled); a failure also draws a PNG of the samples beside the
guest's console log, and the message gives its path. Thresholds left unset are ktstr's
defaults; they are checked at collection, where a mistake is reported against the test.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

CHECKS_MARKER = "ktstr_checks"
HELP_CHECKS_MARKER = (
    "ktstr_checks(**thresholds): watch the guest of kernel_vm from the host while the test runs"
    " and fail it when a check breaks: not_starved/max_gap_ms, fail_on_stall,"
    " max_imbalance_ratio, max_local_dsq_depth, max_fallback_rate, max_keep_last_rate,"
    " sustained_samples, check_interval_ms (ktstr's names and defaults)."
)
VM_FIXTURE = "kernel_vm"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", HELP_CHECKS_MARKER)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marks = list(metafunc.definition.iter_markers(CHECKS_MARKER))
    if not marks:
        return
    where = metafunc.definition.nodeid
    if VM_FIXTURE not in metafunc.fixturenames:
        pytest.fail(
            f"{where}: the {CHECKS_MARKER} marker watches the guest of {VM_FIXTURE}, but the test"
            f" does not request {VM_FIXTURE}",
            pytrace=False,
        )
    _thresholds(marks, where)


def _thresholds(marks: list[pytest.Mark], where: str) -> Any:
    from ..live.checks import Thresholds
    from ..live.errors import LiveKernelError

    merged: dict[str, Any] = {}
    for mark in reversed(marks):  # the closest marker (the function's) wins, as pytest's do
        if mark.args:
            pytest.fail(f"{where}: {CHECKS_MARKER} takes keyword arguments only", pytrace=False)
        merged.update(mark.kwargs)
    try:
        return Thresholds.of(merged)
    except LiveKernelError as e:
        problem = str(e)
    pytest.fail(f"{where}: {CHECKS_MARKER}: {problem}", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The hook around each test is registered only when a collected test is marked: a suite
    without the marker runs no code of this module per test."""
    marked = any(item.get_closest_marker(CHECKS_MARKER) for item in items)
    if marked and not config.pluginmanager.has_plugin(AROUND_PLUGIN):
        config.pluginmanager.register(_AroundTests(), AROUND_PLUGIN)


AROUND_PLUGIN = "ktstr-vmlinux-checks"


class _AroundTests:
    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, object, object]:
        __tracebackhide__ = True  # the failure is the checks', not this hook's
        return (yield from _around(pyfuncitem))


def _around(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    marks = list(pyfuncitem.iter_markers(CHECKS_MARKER))
    vm: Any = pyfuncitem.funcargs.get(VM_FIXTURE) if marks else None
    if vm is None:
        return (yield)
    from ..live.checks import ChecksFailed

    __tracebackhide__ = True
    thresholds = _thresholds(marks, pyfuncitem.nodeid)
    monitor = vm.kernel.monitor()
    try:
        with monitor:
            outcome = yield
    except BaseException:
        # The test failed on its own: that failure is the one to show; the checks go beside it.
        if monitor.error is None and monitor.samples.ticks:
            report = monitor.checks(thresholds).report()
            pyfuncitem.add_report_section("call", "ktstr checks", report)
        raise
    checks = monitor.checks(thresholds)
    pyfuncitem.user_properties.extend(checks.properties())
    if not checks:
        checks.plot_path = _plot(pyfuncitem, vm, monitor, checks)
        if checks.plot_path:
            pyfuncitem.user_properties.append(("ktstr_checks_plot", checks.plot_path))
        raise ChecksFailed(checks)
    pyfuncitem.add_report_section("call", "ktstr checks", checks.report())
    return outcome


def _plot(item: pytest.Function, vm: Any, monitor: Any, checks: Any) -> str | None:
    """The PNG beside the guest's console log; None (said in the report) without matplotlib."""
    from ..live.checks.plot import plot_checks
    from ..live.errors import LiveKernelError

    if vm.console_path is None:  # a guest booted without a log_dir keeps nothing on disk
        item.add_report_section("call", "ktstr checks", "no plot: the guest has no log_dir")
        return None
    name = re.sub(r"[^\w.-]+", "_", item.name)[:120]
    path = Path(vm.console_path).parent / f"checks-{name}.png"
    title = item.nodeid
    kernel: Any = item.funcargs.get("kernel")
    if kernel is not None:
        title += f": kernel {kernel.release}"
    scheduler = getattr(vm, "scheduler", None)
    if scheduler is not None:
        title += f", scheduler {scheduler.name}"
    events = monitor.events.samples if monitor.events is not None else ()
    try:
        return plot_checks(monitor.samples, checks, path, title=title, events=events)
    except LiveKernelError as e:
        item.add_report_section("call", "ktstr checks", f"no plot: {e}")
        return None

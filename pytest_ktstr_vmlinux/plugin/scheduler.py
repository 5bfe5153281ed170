"""After every test that ran under a sched_ext scheduler: did the scheduler hold?

Registered with the first guest a run boots, so a suite without guests has no per-test hook. The
guests a test used are its ``kernel_vm`` and the ones its ``kernel_vm_factory`` booted; for each
whose scheduler is still meant to run (started, not stopped), ``check()`` asks the guest. A
passing test whose scheduler was kicked out or died fails with the ``SchedulerError`` (the
kernel's words, the scheduler's output); a test that failed anyway gets the error as a report
section. A scheduler a test started in the shared guest is stopped after the test: the next
test starts under the kernel's own scheduler, as it would in a guest of its own.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from .vmsettings import FACTORY_FIXTURE, VM_FIXTURE

if TYPE_CHECKING:
    from ..vm import GuestVM

# The shared guests of this process: a scheduler a test started in one is stopped after it.
SHARED_GUESTS: weakref.WeakSet[GuestVM] = weakref.WeakSet()


class SchedulerWatch:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        if call.when != "call":
            return
        report: pytest.TestReport = outcome.get_result()
        problems = [p for p in (_check(vm) for vm in _guests_of(item)) if p is not None]
        if not problems:
            return
        text = "\n\n".join(problems)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("sched_ext scheduler", text))


def _guests_of(item: pytest.Item) -> list[GuestVM]:
    funcargs = getattr(item, "funcargs", {})
    guests = []
    vm = funcargs.get(VM_FIXTURE)
    if vm is not None:
        guests.append(vm)
    factory = funcargs.get(FACTORY_FIXTURE)
    guests += getattr(factory, "guests", [])
    return guests


def _check(vm: GuestVM) -> str | None:
    """The scheduler's failure, or None; a shared guest's scheduler is stopped either way."""
    from ..vm import GuestError

    scheduler = vm.scheduler
    if scheduler is None or scheduler.stopped or not vm.alive:
        return None
    try:
        scheduler.check()
        if vm in SHARED_GUESTS:
            scheduler.stop()
    except GuestError as e:
        return str(e)
    return None

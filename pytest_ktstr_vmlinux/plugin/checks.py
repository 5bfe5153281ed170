"""The ``ktstr`` marker's requirements: parsed at collection (a bad marker is a collection
error), checked before a kernel test's fixtures are built."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from ..kernel.kernelset import kernel_name
from .markers import MARKER
from .strict import skip_or_fail
from .vmsettings import scheduler_of

if TYPE_CHECKING:
    from ..kernel.requirements import Requirements
    from ..kernel.resolve import Kernel
    from .run import KernelRun


class KernelTests:
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
        scheduler = scheduler_of(item)
        if not marks and scheduler is None:
            return
        from ..kernel.requirements import check
        from ..store.api import StoreLockTimeout

        requirements = [mark_requirements(mark, item.nodeid) for mark in marks]
        if scheduler is not None:  # a ktstr_vm(scheduler=...) test needs sched_ext
            requirements.append(sched_ext_requirement())
        busy: str | None = None
        try:
            verdict = check(requirements, self.run.artifacts(kernel))
        except StoreLockTimeout as e:  # says nothing about the kernel: not a requirement's
            busy = str(e)
        if busy is not None:
            pytest.fail(f"ktstr: {busy}", pytrace=False)
        if not verdict.ok:
            message = f"ktstr: {verdict.reason(kernel_name(kernel))}"
            if scheduler is not None and not marks:
                message += f" (ktstr_vm scheduler={scheduler!r} needs sched_ext)"
            if verdict.unchecked and not verdict.unmet and kernel.spec.named_by_user:
                # As for the fixtures: a kernel the user named never turns green by skipping.
                pytest.fail(f"{message}. {unchecked_help(kernel)}", pytrace=False)
            skip_or_fail(item.config, message, at_test=True)


@functools.lru_cache(maxsize=1)
def sched_ext_requirement() -> Requirements:
    """What a test that runs a sched_ext scheduler needs: ``ktstr(config=["SCHED_CLASS_EXT"])``."""
    from ..kernel.requirements import Requirements

    return Requirements.parse((), {"config": ["SCHED_CLASS_EXT"]})


def unchecked_help(kernel: Kernel) -> str:
    return (
        f"The kernel was named (from {kernel.source.value}), so a requirement that cannot be"
        " checked fails rather than skips: make what it reads available (the kernel's debug"
        " vmlinux: its debug package, the build tree's vmlinux or --vmlinux; its config; its"
        " BTF), or drop the requirement"
    )


def mark_requirements(mark: pytest.Mark, nodeid: str) -> Requirements:
    """A ``ktstr`` marker's requirements; a bad one fails with the test's id."""
    from ..kernel.requirements import Requirements

    try:
        return Requirements.parse(mark.args, mark.kwargs)
    except ValueError as e:
        message = str(e)
    # Outside the except block: the collection error is our message, not a chained traceback.
    pytest.fail(f"{nodeid}: {message}", pytrace=False)

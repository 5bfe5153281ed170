"""A sched_ext scheduler developer's first test: boot the kernel under test with the scheduler,
load every CPU, and check that the scheduler held and that every CPU ran tasks of its class.

The scheduler is a program on the host (``scx_simple`` on ``PATH``, or a path in
``$KTSTR_EXAMPLE_SCHEDULER``); ``ktstr_vm(scheduler=...)`` packs it into the guest with its
libraries, starts it and waits until sched_ext says it is attached. After the test, the plugin
checks that it is still attached: had the kernel kicked it out (a stall, ``scx_bpf_error()``),
the test would fail with the kernel's own words. On a kernel without ``CONFIG_SCHED_CLASS_EXT``
the test skips, without booting; so it does on a host without a scheduler, saying how to get one.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from pytest_ktstr_vmlinux import GuestVM

SCHEDULER = os.environ.get("KTSTR_EXAMPLE_SCHEDULER") or shutil.which("scx_simple")
NO_SCHEDULER = (
    "no sched_ext scheduler on this host: build scx_simple from the kernel's own sources"
    " (make -C tools/sched_ext, clang >= 16) and put it on PATH, or set"
    " KTSTR_EXAMPLE_SCHEDULER to a scheduler's path"
)
LOAD_SECONDS = 30


@pytest.mark.skipif(SCHEDULER is None, reason=NO_SCHEDULER)
@pytest.mark.ktstr_vm(scheduler=SCHEDULER or "scx_simple", programs=["stress-ng"], cpus=2)
def test_the_scheduler_holds_and_every_cpu_runs_its_tasks(kernel_vm: GuestVM) -> None:
    scheduler = kernel_vm.scheduler
    assert scheduler is not None
    assert scheduler.state == "enabled"
    rejected = kernel_vm.get("/sys/kernel/sched_ext/nr_rejected")
    kernel_vm.run(f"stress-ng --cpu {kernel_vm.cpus} -t {LOAD_SECONDS} >/dev/null 2>&1 &")
    live = kernel_vm.kernel  # the guest's kernel, read from the host while the load runs
    most = dict.fromkeys(live.cpus, 0)
    deadline = time.monotonic() + 2 * LOAD_SECONDS
    while not all(most.values()) and time.monotonic() < deadline:
        for cpu in live.cpus:
            nr_running = live.per_cpu("runqueues", cpu).scx.nr_running.value_()
            most[cpu] = max(most[cpu], nr_running)
    idle = [cpu for cpu, n in most.items() if n == 0]
    assert not idle, f"CPUs that never ran a task of {scheduler.name}: {idle}"
    assert scheduler.alive, scheduler.output
    assert kernel_vm.get("/sys/kernel/sched_ext/nr_rejected") == rejected

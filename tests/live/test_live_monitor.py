"""monitor() on a real guest: Debian's 6.1 cloud kernel under TCG with 4 CPUs, sampled from the
host while a blocking ``GuestVM.run()`` waits for a pinned CPU-bound workload; then the guest
shut down inside a monitor's block. Counts and their consistency are asserted, never a rate."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from pytest_ktstr_vmlinux.live import LiveKernel, LiveMemoryError
from pytest_ktstr_vmlinux.vm import GuestVM
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 4
INTERVAL = 0.001
BUSY_CPU = 2


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    with tcg_guest(
        debian_kernel,
        cpus=CPUS,
        log_dir=tmp_path_factory.mktemp("guest-monitor"),
    ) as vm:
        yield vm


@pytest.fixture
def live(guest: GuestVM) -> LiveKernel:
    return guest.kernel


def test_the_monitor_covers_a_blocking_run(guest: GuestVM, live: LiveKernel) -> None:
    """A busy loop pinned to one CPU for 3 s, run() waiting for it: the first row is taken
    before run() is called, the last after it returned, every tick due in between is a row
    of every CPU or counted missed, and the loop is seen running where it was pinned."""
    busy = f"taskset -c {BUSY_CPU} timeout 3 sh -c 'echo $$; while :; do :; done'"
    with live.monitor(["nr_running", "clock", "curr.pid"], interval=INTERVAL) as mon:
        called = time.monotonic()
        result = guest.run(busy, timeout=300)
        returned = time.monotonic()
    pid = int(result.stdout.split()[0])
    table = mon.samples
    assert table.cpus == live.cpus == tuple(range(CPUS))
    assert table.scheduled_ticks == table.ticks + table.missed_ticks
    assert len(table) == table.ticks * CPUS
    for cpu in table.cpus:
        times = table.column("time", cpu)
        assert len(times) == table.ticks
        assert times == sorted(times)
        clocks = table.column("clock", cpu)
        assert clocks[-1] > clocks[0]  # rq->clock moved on every CPU over 3 s
    first, last = table.column("time")[0], table.column("time")[-1]
    assert table.started + first <= called
    assert table.started + last >= returned
    # Every tick from the first to the first due after the block is taken or counted missed:
    # the schedule covers the block, whatever the host's load let the thread do.
    assert (table.scheduled_ticks - 1) * INTERVAL >= returned - table.started
    assert (table.scheduled_ticks - 2) * INTERVAL <= last + 1e-9
    running = [
        row
        for row in table.rows
        if row[1] == BUSY_CPU and row[table.columns.index("curr.pid")] == pid
    ]
    assert running, f"the loop (pid {pid}) was never current on CPU {BUSY_CPU}: {mon}"
    assert all(row[2] >= 1 for row in running)  # it is on that runqueue while it runs
    assert table.max_gap() >= table.max_gap(0) > 0


def test_a_guest_shut_down_inside_the_block(guest: GuestVM, live: LiveKernel) -> None:
    """Last: it shuts the module's guest down. The fields are all views of guest RAM, which
    outlive the guest; the block still ends with the guest's end, not with stale rows."""
    mon = live.monitor(["nr_running", "clock"], interval=INTERVAL)

    def block() -> None:
        with mon:
            guest.shutdown()
            assert mon.wait(60)  # the thread stopped on it

    with pytest.raises(LiveMemoryError, match="guest has stopped"):
        block()
    assert isinstance(mon.error, LiveMemoryError)
    assert len(mon.samples) == mon.samples.ticks * CPUS

"""The monitor's thread and its tick accounting, over a fake kernel memory (no QEMU): rows per
tick, missed ticks on a fixed schedule, the first tick before the block and the last after it,
and a read that fails in the thread raised when the block ends. Nothing here asserts a rate:
only counts, and how they add up."""

from __future__ import annotations

import struct
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from pytest_ktstr_vmlinux import Sampler, Samples
from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.live import LiveKernelError, LiveMemoryError, Object
from pytest_ktstr_vmlinux.live.errors import MissingMemberError
from pytest_ktstr_vmlinux.live.monitor import sample
from tests.helpers.btf import TYPEDEF, Builder
from tests.helpers.livemem import FakeKernel

BASE = 0xFFFF888000100000
TASKS = BASE + 0x800
CPUS = (0, 1, 2)


def _btf() -> BTF:
    b = Builder()
    u32 = b.int_("unsigned int", 4)
    s32 = b.int_("int", 4, signed=True)
    u64 = b.add(TYPEDEF, "u64", st=b.int_("long long unsigned int", 8))
    task = b.struct("task_struct", 8, [("pid", s32, 0)])
    b.struct("rq", 24, [("nr_running", u32, 0), ("clock", u64, 64), ("curr", b.ptr(task), 128)])
    return BTF.from_bytes(b.blob(), what="test BTF")


@pytest.fixture
def kernel() -> FakeKernel:
    kernel = FakeKernel(_btf(), {BASE: 0x1000})
    for cpu in CPUS:
        kernel.write_u64(BASE + 0x100 * cpu + 16, TASKS + 8 * cpu)  # rq.curr
        kernel.write(TASKS + 8 * cpu, struct.pack("<i", 100 + cpu))  # its pid
    return kernel


def _per_cpu(kernel: FakeKernel) -> Callable[[int], Object]:
    return lambda cpu: kernel.object("struct rq", BASE + 0x100 * cpu)


def _set(kernel: FakeKernel, cpu: int, nr_running: int, clock: int) -> None:
    kernel.write(BASE + 0x100 * cpu, struct.pack("<I", nr_running))
    kernel.write_u64(BASE + 0x100 * cpu + 8, clock)


def _consistent(table: Samples) -> None:
    """What every table a monitor filled holds to."""
    assert table.scheduled_ticks == table.ticks + table.missed_ticks
    assert len(table) == table.ticks * len(table.cpus)
    for cpu in table.cpus:
        times = table.column("time", cpu)
        assert len(times) == table.ticks
        assert times[0] == 0.0
        assert times == sorted(times)
    assert table.column("cpu")[: len(table.cpus)] == list(table.cpus)


class ScriptedClock:
    """time.monotonic for the monitor: the test's thread and the monitor's thread each read
    their own script of times (so the test decides how late each wake-up is); past its end, a
    thread reads the last time again (the monitor then sleeps until it is told to stop)."""

    def __init__(self, caller: list[float], monitor: list[float]) -> None:
        self.scripts = {threading.get_ident(): iter(caller)}
        self.monitor = iter(monitor)
        self.last: dict[int, float] = {}
        self.monitor_done = threading.Event()

    def __call__(self) -> float:
        me = threading.get_ident()
        script = self.scripts.setdefault(me, self.monitor)
        for value in script:
            self.last[me] = value
            return value
        if script is self.monitor:
            self.monitor_done.set()
        return self.last[me]


def test_ticks_keep_their_schedule_and_missed_ones_are_counted(kernel: FakeKernel) -> None:
    """interval 10 (of the scripted clock): ticks due at 0, 10, 20, ...; each wake-up of the
    thread reads the clock twice (how long to sleep, then now)."""
    clock = ScriptedClock(
        caller=[0.0, 93.0, 93.5],  # enter; the block's end; the last tick's reads
        monitor=[
            10.5, 10.5,  # tick 1, a little late
            35.0, 35.0,  # tick 3: tick 2 was missed, and is not taken late
            40.0, 40.0,  # tick 4, on time
            49.999, 49.999,  # woken early for tick 5: nothing taken, back to sleep
            75.0, 75.0,  # tick 7: 5 and 6 missed
        ],
    )  # fmt: skip
    with Sampler(_per_cpu(kernel), CPUS, ["nr_running"], interval=10.0, clock=clock) as mon:
        assert mon.samples.column("time")[:3] == [0.0] * 3  # the first, taken before it
        assert clock.monitor_done.wait(60)  # the thread has used its script: it sleeps
    table = mon.samples
    # The block ended at 93: the last tick is the first due at or after it (10, at 100),
    # taken at once; 8 and 9 passed without a tick.
    assert table.column("time", 0) == [0.0, 10.5, 35.0, 40.0, 75.0, 93.5]
    assert (table.ticks, table.missed_ticks, table.scheduled_ticks) == (6, 5, 11)
    assert table.max_gap() == table.max_gap(2) == 35.0
    assert table.started == 0.0
    assert (table.interval, table.cpus) == (10.0, CPUS)
    _consistent(table)


def test_the_rows_cover_the_block(kernel: FakeKernel) -> None:
    """The first tick reads what was there before the block, the last what the block left."""
    for cpu in CPUS:
        _set(kernel, cpu, 0, 1)
    with Sampler(_per_cpu(kernel), CPUS, ["nr_running", "clock"], interval=0.0005) as mon:
        for step in range(2, 200):
            for cpu in CPUS:
                _set(kernel, cpu, cpu + 1, step)
        during = mon.samples.ticks
    table = mon.samples
    _consistent(table)
    assert table.ticks >= max(during, 2)
    for cpu in CPUS:
        assert table.column("clock", cpu)[0] == 1
        assert table.column("nr_running", cpu)[0] == 0
        assert table.column("clock", cpu)[-1] == 199
        assert table.column("nr_running", cpu)[-1] == cpu + 1
        clocks = table.column("clock", cpu)
        assert clocks == sorted(clocks)  # the body only moved it forward
    assert table.max_gap() >= table.max_gap(0) > 0


def test_a_pointer_that_becomes_null_ends_the_block_with_that_error(kernel: FakeKernel) -> None:
    monitor = Sampler(_per_cpu(kernel), CPUS, ["curr.pid", "nr_running"], interval=0.0005)
    taken = []

    def block() -> None:
        with monitor:
            assert monitor.samples.column("curr.pid")[:3] == [100, 101, 102]
            kernel.write_u64(BASE + 0x100 + 16, 0)  # CPU 1's rq.curr
            assert monitor.wait(60)  # the thread stopped on it: the block goes on
            assert isinstance(monitor.error, LiveMemoryError)
            taken.append(monitor.samples.ticks)

    with pytest.raises(LiveMemoryError, match=r"NULL pointer: struct task_struct \*") as raised:
        block()
    assert raised.value is monitor.error
    table = monitor.samples
    assert [table.ticks] == taken  # no last tick after a failure
    _consistent(table)
    assert set(table.column("curr.pid", 1)) == {101}  # no row of the failed tick


def test_a_failure_at_the_last_tick_is_raised_too(kernel: FakeKernel) -> None:
    """The block ends right after the pointer goes NULL: whichever reads it first, the thread
    or the last tick, the block ends with the NULL pointer."""

    def block() -> None:
        with Sampler(_per_cpu(kernel), CPUS, ["curr.pid"], interval=3600):
            kernel.write_u64(BASE + 16, 0)

    with pytest.raises(LiveMemoryError, match="NULL pointer"):
        block()


def test_the_blocks_own_exception_wins(kernel: FakeKernel) -> None:
    monitor = Sampler(_per_cpu(kernel), CPUS, ["curr.pid"], interval=0.0005)

    def block() -> None:
        with monitor:
            kernel.write_u64(BASE + 16, 0)
            assert monitor.wait(60)
            raise RuntimeError("the test")

    with pytest.raises(RuntimeError, match="the test") as raised:
        block()
    assert isinstance(monitor.error, LiveMemoryError)
    if sys.version_info >= (3, 11):
        assert any("monitor failed: LiveMemoryError" in n for n in raised.value.__notes__)


def test_a_failing_block_still_gets_its_last_tick(kernel: FakeKernel) -> None:
    _set(kernel, 0, 0, 1)
    monitor = Sampler(_per_cpu(kernel), [0], ["clock"], interval=3600)

    def block() -> None:
        with monitor:
            _set(kernel, 0, 0, 2)
            raise ValueError("the test")

    with pytest.raises(ValueError, match="the test"):
        block()
    assert monitor.error is None
    assert monitor.samples.column("clock") == [1, 2]


def test_a_guest_gone_is_seen_though_every_field_is_a_view(kernel: FakeKernel) -> None:
    """Fields reached without a pointer are read through views, which go on reading the last
    contents of a memory that is gone; each tick also reads one field through the memory."""
    monitor = Sampler(_per_cpu(kernel), CPUS, ["nr_running", "clock"], interval=0.0005)

    def block() -> None:
        with monitor:
            kernel.regions.clear()  # as the guest's RAM once the guest has shut down
            assert monitor.wait(60)

    with pytest.raises(LiveMemoryError, match="not mapped"):
        block()


def test_what_is_wrong_at_the_start_is_raised_at_the_start(kernel: FakeKernel) -> None:
    misspelt = Sampler(_per_cpu(kernel), CPUS, ["nr_runing"], interval=0.01)
    with pytest.raises(MissingMemberError, match="did you mean 'nr_running'"):
        misspelt.__enter__()
    kernel.write_u64(BASE + 16, 0)
    null = Sampler(_per_cpu(kernel), CPUS, ["curr.pid"], interval=0.01)
    with pytest.raises(LiveMemoryError, match="NULL pointer"):
        null.__enter__()
    assert misspelt.samples.ticks == null.samples.ticks == 0
    with pytest.raises(ValueError, match="interval=0"):
        Sampler(_per_cpu(kernel), CPUS, ["clock"], interval=0)
    with pytest.raises(LiveKernelError, match="no CPUs"):
        Sampler(_per_cpu(kernel), [], ["clock"], interval=1)
    monitor = Sampler(_per_cpu(kernel), [0], ["clock"], interval=1)
    with monitor:
        pass
    with pytest.raises(LiveKernelError, match="runs once"), monitor:
        pass


def test_sample_is_a_monitor_whose_block_waits(kernel: FakeKernel) -> None:
    table = sample(_per_cpu(kernel), CPUS, ["nr_running"], interval=0.01, duration=0.05)
    _consistent(table)
    assert table.ticks >= 2  # the first and the last at least
    with pytest.raises(ValueError, match="duration"):
        sample(_per_cpu(kernel), CPUS, ["nr_running"], interval=0.01, duration=-1)
    kernel.write_u64(BASE + 16, 0)  # a failure ends the wait at once: no 1 h wait for it
    with pytest.raises(LiveMemoryError, match="NULL pointer"):
        sample(_per_cpu(kernel), CPUS, ["nr_running", "curr.pid"], interval=0.01, duration=3600)


@pytest.fixture
def threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.name.startswith("ktstr")]
    assert not left, left


def test_no_thread_outlives_its_block(kernel: FakeKernel, threads: None) -> None:
    for _ in range(3):
        with Sampler(_per_cpu(kernel), CPUS, ["clock"], interval=0.001):
            pass

    def block() -> None:
        with Sampler(_per_cpu(kernel), CPUS, ["curr.pid"], interval=0.001) as monitor:
            kernel.write_u64(BASE + 16, 0)
            monitor.wait(60)

    with pytest.raises(LiveMemoryError):
        block()


def test_max_gap_of_a_table() -> None:
    rows = [(0.0, 0, 1), (0.0, 1, 1), (0.5, 0, 1), (2.0, 1, 1), (2.25, 0, 1)]
    table = Samples(("x",), rows, cpus=(0, 1), interval=0.5, ticks=2, missed_ticks=3)
    assert table.max_gap(0) == 1.75
    assert table.max_gap(1) == 2.0
    assert table.max_gap() == 2.0
    assert table.max_gap(7) == 0.0
    assert table.scheduled_ticks == 5


def test_the_switch_interval_is_lowered_while_monitors_run(kernel: FakeKernel) -> None:
    """A block computing in Python holds the GIL; the thread gets it within half a tick."""
    before = sys.getswitchinterval()
    with Sampler(_per_cpu(kernel), CPUS, ["clock"], interval=0.004):
        assert sys.getswitchinterval() == pytest.approx(min(before, 0.002))
        with Sampler(_per_cpu(kernel), CPUS, ["clock"], interval=0.001):
            assert sys.getswitchinterval() == pytest.approx(min(before, 0.0005))
        assert sys.getswitchinterval() == pytest.approx(min(before, 0.002))
        with Sampler(_per_cpu(kernel), CPUS, ["clock"], interval=1e-6):
            assert sys.getswitchinterval() == pytest.approx(min(before, 1e-4))  # the floor
    assert sys.getswitchinterval() == pytest.approx(before)

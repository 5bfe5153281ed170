"""What a scheduler developer asserts about a running guest, read from the host while the
workload runs: no agent in the guest, no stop.

Boots the kernel under test (``kernel_vm``), pins one CPU-bound loop to each CPU, samples every
CPU's ``struct rq`` for two seconds, and checks that each rq clock advances, that no CPU with a
runnable loop shows nr_running at 0, and that each loop is on the CPU it is pinned to; then
monitors the runqueues while ``run()`` waits for a pinned loop. On a kernel with sched_ext it
also reads the ``scx_rq`` state; on one without, that test skips before any guest boots.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_ktstr_vmlinux import GuestVM, find_task, ktstr_test, task_cpu

SAMPLE_SECONDS = 2.0


@pytest.fixture
def pinned_loops(kernel_vm: GuestVM) -> Iterator[dict[int, int]]:
    """CPU -> pid of a busy loop pinned there; killed after the test."""
    cpus = range(kernel_vm.cpus)
    out = kernel_vm.run(
        "; ".join(
            f"taskset -c {c} sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!" for c in cpus
        ),
        check=True,
    ).stdout.split()
    loops = dict(zip(cpus, map(int, out), strict=True))
    yield loops
    kernel_vm.run(f"kill {' '.join(map(str, loops.values()))}")


def test_runqueues_under_a_cpu_bound_workload(
    kernel_vm: GuestVM, pinned_loops: dict[int, int]
) -> None:
    live = kernel_vm.kernel
    samples = live.sample(["nr_running", "clock"], interval=0.01, duration=SAMPLE_SECONDS)
    for cpu in live.cpus:
        clocks = samples.column("clock", cpu)
        assert clocks[-1] > clocks[0], f"CPU {cpu}: rq clock stuck at {clocks[0]}"
        stuck = [t for t, c, n, _ in samples.rows if c == cpu and n == 0]
        assert not stuck, f"CPU {cpu}: a loop is runnable there, yet nr_running was 0 at {stuck}"
    for cpu, pid in pinned_loops.items():
        task = find_task(live, pid)
        assert task is not None, f"loop {pid} is not in the guest's PID table"
        on = task_cpu(task)  # task->cpu, thread_info.cpu, ...: wherever the release keeps it
        assert on == cpu, f"loop {pid} pinned to CPU {cpu} is on CPU {on}"


@ktstr_test(config=["SCHED_CLASS_EXT"], btf=["struct rq.scx.nr_running"])
def test_sched_ext_runqueues(kernel_vm: GuestVM) -> None:
    live = kernel_vm.kernel
    for cpu in live.cpus:
        scx = live.per_cpu("runqueues", cpu).scx
        assert scx.nr_running.value_() >= 0
        assert isinstance(scx.value_(), dict)


def test_runqueues_while_run_waits(kernel_vm: GuestVM) -> None:
    """The host watches the command it waits for: monitor() samples every CPU's rq on a host
    thread at 1 kHz while run() blocks on a loop pinned to CPU 0."""
    live = kernel_vm.kernel
    busy = "taskset -c 0 timeout 2 sh -c 'echo $$; while :; do :; done'"
    with live.monitor(["nr_running", "curr.pid"], interval=0.001) as mon:
        pid = int(kernel_vm.run(busy).stdout.split()[0])
    samples = mon.samples
    running = [row for row in samples.rows if row[1] == 0 and row[3] == pid]
    assert running, f"loop {pid} was never seen running on CPU 0: {mon}"
    # A tick's two reads are not one instant: the row where the loop arrived on CPU 0, or was
    # leaving it (dequeued as it exits, still rq->curr), may pair its pid with a count without it.
    assert all(nr_running >= 1 for _, _, nr_running, _ in running[1:-1])
    print(f"{samples.ticks} ticks, {samples.missed_ticks} missed, {samples.max_gap():.3f} s gap")

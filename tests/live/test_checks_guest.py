"""ktstr's checks on a real guest under EEVDF (no BPF scheduler): Debian sid's sched_ext kernel
with 4 CPUs under TCG. Each check seen to pass and to fail on real workloads; the guest's own
view (taskset, kill -STOP, /proc) says what was done, the host's checks what they saw."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from pytest_ktstr_vmlinux.live import LiveKernel
from pytest_ktstr_vmlinux.vm import GuestVM
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 4
BUSY = "timeout {seconds} sh -c 'while :; do :; done'"


@pytest.fixture(scope="module")
def guest(
    sid_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    with tcg_guest(
        sid_kernel,
        cpus=CPUS,
        log_dir=tmp_path_factory.mktemp("guest-checks"),
    ) as vm:
        yield vm


@pytest.fixture
def live(guest: GuestVM) -> LiveKernel:
    return guest.kernel


def _workers(pins: list[int], seconds: int = 3) -> str:
    """Busy loops pinned as given, run() waiting for all of them."""
    loops = " ".join(f"taskset -c {cpu} {BUSY.format(seconds=seconds)} &" for cpu in pins)
    return f"{loops} wait"


def test_workers_pinned_to_one_cpu_fail_the_imbalance_check(
    guest: GuestVM, live: LiveKernel
) -> None:
    with live.monitor() as mon:
        guest.run(_workers([0] * 8), timeout=300)
    checks = mon.checks()
    verdict = checks["max_imbalance_ratio"]
    assert verdict.passed is False, checks.report()
    assert verdict.cpu == 0
    assert verdict.worst is not None and verdict.worst >= 8  # 8 workers over an idle CPU's 1
    assert [v.check for v in checks.failures] == ["max_imbalance_ratio"], checks.report()


def test_spread_workers_pass_every_check(guest: GuestVM, live: LiveKernel) -> None:
    with live.monitor() as mon:
        guest.run(_workers([0, 1, 2, 3] * 2), timeout=300)
    checks = mon.checks()
    assert checks, checks.report()
    assert checks["max_imbalance_ratio"].worst is not None
    assert checks["max_imbalance_ratio"].worst <= 4.0
    # The workload was seen: 8 loops (and their shells), looked at many times each.
    seen = [t for t in mon.tasks.tracks.values() if len(t.samples) > 10] if mon.tasks else []
    assert len(seen) >= 8, checks.report()
    # EEVDF: the sched_ext checks say why they did not run; none claims a value.
    for name in ("max_local_dsq_depth", "max_fallback_rate", "max_keep_last_rate"):
        assert checks[name].passed is None
        assert checks[name].worst is None
        assert "no sched_ext scheduler was attached" in checks[name].detail


def test_an_idle_cpu_is_not_stalled(guest: GuestVM, live: LiveKernel) -> None:
    """One CPU busy, three idle for 3 s: the idle CPUs' clocks stand still (their tick is
    stopped), and that is no stall."""
    with live.monitor() as mon:
        guest.run(_workers([1]), timeout=300)
    checks = mon.checks()
    assert checks["stall"].passed is True, checks.report()
    idle_still = 0
    rows = [r for r in mon.samples.rows if r[1] == 3]
    for (_, _, nr_a, clock_a, *_), (_, _, nr_b, clock_b, *_) in itertools.pairwise(rows):
        idle_still += nr_a == nr_b == 0 and clock_a == clock_b
    assert idle_still > 100, "CPU 3 never stood idle with its clock still: the case is untested"


def test_a_stopped_task_is_not_starved(guest: GuestVM, live: LiveKernel) -> None:
    """A busy loop stopped with SIGSTOP is not runnable: however long it waits it is not
    starved; the same loop left running is seen running."""
    pid = int(guest.run(f"{BUSY.format(seconds=60)} >/dev/null 2>&1 & echo $!", check=True).stdout)
    try:
        guest.run(f"kill -STOP {pid}", check=True)
        with live.monitor() as mon:
            guest.run("sleep 3", check=True)
        state = guest.run(f"cat /proc/{pid}/stat", check=True).stdout.split()[2]
    finally:
        guest.run(f"kill -KILL {pid}")
    assert state == b"T"
    checks = mon.checks(max_gap_ms=500)
    assert checks["not_starved"].passed is True, checks.report()
    assert mon.tasks is not None
    stopped = mon.tasks.tracks[pid]
    assert len(stopped.samples) > 50
    assert not any(s.runnable for s in stopped.samples)

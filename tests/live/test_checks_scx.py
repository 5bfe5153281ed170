"""ktstr's checks under real sched_ext schedulers: Debian sid's kernel under TCG with 4 CPUs, the
schedulers tests/kernels/build-scx.sh built. A healthy scx_simple under load passes every check;
scx_stallcpu (scx_simple that never dispatches on one CPU) starves the tasks that may run only
there and stalls that CPU alone, which the host sees before the kernel's watchdog kicks the
scheduler out, and the watchdog names a task the host named; the event counters the host reads
agree with /sys/kernel/sched_ext/root/events."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.live import LiveKernel
from pytest_ktstr_vmlinux.live.checks.events import EventSample
from pytest_ktstr_vmlinux.live.checks.starvation import longest_gap
from pytest_ktstr_vmlinux.live.scx import SchedExt
from pytest_ktstr_vmlinux.vm import GuestVM
from pytest_ktstr_vmlinux.vm.layout import MiB
from pytest_ktstr_vmlinux.vm.scheduler import SchedulerError
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 4
STALL_CPU = 2


@pytest.fixture(scope="module")
def guest(
    sid_kernel: DebianKernel,
    scx_schedulers: Path,
    guest_tools: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestVM]:
    with tcg_guest(
        sid_kernel,
        cpus=CPUS,
        memory=512 * MiB,
        # RCU's stall detector (21 s) would report the stalled CPU before sched_ext's watchdog.
        cmdline="rcupdate.rcu_cpu_stall_timeout=120",
        programs=["stress-ng", scx_schedulers / "scx_simple", scx_schedulers / "scx_stallcpu"],
        log_dir=tmp_path_factory.mktemp("checks-scx"),
    ) as vm:
        yield vm


@pytest.fixture
def live(guest: GuestVM) -> Iterator[LiveKernel]:
    yield guest.kernel
    scheduler = guest.scheduler
    if scheduler is not None and scheduler.alive:
        scheduler.stop()


def _events_text(guest: GuestVM) -> dict[str, int]:
    text = guest.get("/sys/kernel/sched_ext/root/events").decode()
    return {name: int(value) for name, value in re.findall(r"(SCX_EV_\w+)\s+(-?\d+)", text)}


def test_a_healthy_scheduler_passes_every_check(
    guest: GuestVM, live: LiveKernel, scx_schedulers: Path
) -> None:
    scheduler = guest.start_scheduler(str(scx_schedulers / "scx_simple"), [])
    # Judged while the load is steady: twice as many hogs as CPUs, all running. Not while they
    # start or exit one by one: a CPU left with one hog keeps it at every slice's end
    # (SCX_EV_DISPATCH_KEEP_LAST, 50/s per CPU with scx_simple's 20 ms slice), which past
    # ktstr's 100/s is what max_keep_last_rate is there to report.
    hogs = 2 * CPUS
    guest.run(f"stress-ng --cpu {hogs} --timeout 120s >/dev/null 2>&1 &", check=True)
    guest.run(
        f"until [ $(pidof stress-ng | wc -w) -gt {hogs} ]; do usleep 10000; done", timeout=120
    )
    try:
        with live.monitor() as mon:
            guest.run("sleep 5", check=True)
    finally:
        guest.run("killall stress-ng; while pidof stress-ng >/dev/null; do usleep 10000; done")
    checks = mon.checks()
    assert checks, checks.report()
    for name in ("max_local_dsq_depth", "max_fallback_rate", "max_keep_last_rate", "stall"):
        assert checks[name].passed is True, checks.report()  # run, not skipped
    assert mon.events is not None
    assert set(mon.events.schedulers.values()) == {"simple"}
    scx_rows = mon.samples.column("scx.nr_running")
    assert max(scx_rows) > 0  # sched_ext ran the workload
    scheduler.check()


def test_event_counters_are_the_kernels(
    guest: GuestVM, live: LiveKernel, scx_schedulers: Path
) -> None:
    """Every counter the host reads, summed over the CPUs, brackets what the kernel's own
    sysfs file printed between two host reads."""
    guest.start_scheduler(str(scx_schedulers / "scx_simple"), [])
    guest.run(f"stress-ng --cpu {2 * CPUS} --timeout 30s >/dev/null 2>&1 &", check=True)
    scx = SchedExt(live)
    names = scx.event_names
    assert "SCX_EV_SELECT_CPU_FALLBACK" in names and "SCX_EV_DISPATCH_KEEP_LAST" in names

    def host() -> dict[str, int]:
        stats = [scx.events(cpu) for cpu in live.cpus]
        return {n: sum(int(s.member_(n)) for s in stats if s is not None) for n in names}

    before = host()
    seen = _events_text(guest)
    after = host()
    assert set(seen) == set(names)
    for name in names:
        assert before[name] <= seen[name] <= after[name], (name, before, seen, after)
    assert any(after.values()), after  # a counter that moved: the bracket is not 0 <= 0 <= 0


def _detached(samples: list[EventSample]) -> bool:
    """Whether the host saw a scheduler attached and then none."""
    attached = False
    for sample in samples:
        if sample.root:
            attached = True
        elif attached:
            return True
    return False


def test_a_stalled_cpu_and_its_starved_task_are_seen_before_the_watchdog(
    guest: GuestVM, live: LiveKernel, scx_schedulers: Path
) -> None:
    stallcpu = str(scx_schedulers / "scx_stallcpu")
    scheduler = guest.start_scheduler(stallcpu, ["-s", str(STALL_CPU)])
    waker = f"taskset -c {STALL_CPU} sh -c 'while :; do usleep 10000; done' >/dev/null 2>&1 &"
    with live.monitor() as mon:
        assert mon.events is not None
        waking = int(guest.run(f"{waker} echo $!", check=True).stdout)
        deadline = time.monotonic() + 120
        # The watchdog (30 s) kicks the scheduler out. Wait for the host to see it gone (scx_root
        # NULL again): the guest's state leaves "enabled" (for "disabling") before scx_root does.
        while not _detached(list(mon.events.samples)) and time.monotonic() < deadline:
            time.sleep(0.5)
    guest.run(f"kill {waking}")
    assert scheduler.state != "enabled"
    with pytest.raises(SchedulerError) as kicked:
        scheduler.check()
    assert kicked.value.kind == "runnable task stall", kicked.value
    watchdog = re.search(r"(\S+)\[(\d+)\] failed to run for", kicked.value.reason)
    assert watchdog is not None, kicked.value.reason
    checks = mon.checks()
    stall = checks["stall"]
    assert stall.passed is False, checks.report()
    assert stall.cpu == STALL_CPU
    others = [c for c in range(CPUS) if c != STALL_CPU]
    assert all(f"CPU {c}'s" not in stall.detail for c in others)
    starved = checks["not_starved"]
    assert starved.passed is False, checks.report()
    assert starved.cpu == STALL_CPU
    # The watchdog's task is one the host saw waiting past the bound, and the host saw it first:
    # its wait crossed max_gap_ms before the scheduler was gone (scx_root NULL again).
    assert mon.tasks is not None and mon.events is not None
    pid = int(watchdog[2])
    track = mon.tasks.tracks[pid]
    gap = longest_gap(track.samples)
    assert gap is not None and gap.seconds * 1000 > checks.thresholds.max_gap_ms
    attached = [s.at for s in mon.events.samples if s.root]
    kicked_at = next(s.at for s in mon.events.samples if s.at > attached[0] and not s.root)
    assert gap.start + checks.thresholds.max_gap_ms / 1000 < kicked_at

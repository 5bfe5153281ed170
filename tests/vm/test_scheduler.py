"""sched_ext schedulers in a real guest: Debian sid's sched_ext kernel under TCG, the kernel's own
tools/sched_ext schedulers built by tests/kernels/build-scx.sh. Every value is checked against
what the guest says (/sys/kernel/sched_ext, its kernel log) or what the host reads of the kernel
(scx_root->ops.name, every CPU's rq->scx.nr_running), never against our own bookkeeping.

Two guests serve the module: one booted with scx_simple for the test of its whole life, one booted
without a scheduler where each other test starts its own from the host and leaves none attached,
so the tests hold in any order and on any xdist worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.live import LiveKernel, Object
from pytest_ktstr_vmlinux.vm import GuestVM
from pytest_ktstr_vmlinux.vm.layout import MiB
from pytest_ktstr_vmlinux.vm.scheduler import SchedulerError
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 2
SYSFS = "/sys/kernel/sched_ext"


def _boot(sid_kernel: DebianKernel, tmp: pytest.TempPathFactory, scheduler: Path | None) -> GuestVM:
    return tcg_guest(
        sid_kernel,
        cpus=CPUS,
        memory=512 * MiB,
        # RCU's stall detector (21 s by default) would see a stalled scheduler before
        # sched_ext's watchdog (30 s at most) does: the stall test wants the watchdog's words.
        cmdline="rcupdate.rcu_cpu_stall_timeout=120",
        programs=["stress-ng"],
        scheduler=scheduler,
        log_dir=tmp.mktemp("scheduler"),
    )


@pytest.fixture(scope="module")
def guest(
    sid_kernel: DebianKernel,
    scx_schedulers: Path,
    guest_tools: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestVM]:
    """Booted with scx_simple, for the one test of its whole life."""
    with _boot(sid_kernel, tmp_path_factory, scx_schedulers / "scx_simple") as vm:
        yield vm


@pytest.fixture(scope="module")
def bare_guest(
    sid_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    """Booted without a scheduler: each test starts its own (tests may run in any order, and
    under -n 2 on either worker, each with a guest of its own)."""
    with _boot(sid_kernel, tmp_path_factory, None) as vm:
        yield vm


@pytest.fixture
def bare(bare_guest: GuestVM) -> Iterator[GuestVM]:
    """The bare guest with no scheduler attached, before and after the test."""
    yield bare_guest
    scheduler = bare_guest.scheduler
    if scheduler is not None and not scheduler.stopped and scheduler.alive:
        scheduler.stop()


def _sysfs(vm: GuestVM, name: str) -> str:
    return vm.get(f"{SYSFS}/{name}").decode().strip()


def root_ops_name(live: LiveKernel) -> str | None:
    """The attached scheduler's ops name read from the host: scx_root->ops.name (6.16 and
    later), scx_ops.name before. Distro BTF has no VAR for these globals, and a pointer type
    cannot be named yet, so the pointer is read as an integer and typed by hand."""
    if "scx_root" in live.symbols:
        root = live.object("scx_root", "long unsigned int").value_()
        if root == 0:
            return None
        sched = Object(live, live.btf.type("struct scx_sched").id, root)
        return sched.ops.name.string_()
    name = live.object("scx_ops", "struct sched_ext_ops").name.string_()
    return name or None


def _scx_running_everywhere(live: LiveKernel, deadline: float) -> dict[int, int]:
    """The most scx tasks each CPU's runqueue held, sampled from the host until every CPU held
    one or the deadline passed."""
    most = dict.fromkeys(live.cpus, 0)
    while time.monotonic() < deadline and not all(most.values()):
        for cpu in live.cpus:
            most[cpu] = max(most[cpu], live.per_cpu("runqueues", cpu).scx.nr_running.value_())
    return most


def test_scx_simple_attaches_holds_under_load_and_stops(guest: GuestVM) -> None:
    """One scheduler's life, in order: attached at boot (sysfs, the kernel log, the host's read
    of scx_root), every CPU running scx tasks under stress-ng with nothing rejected, then
    stop() and the guest back on the fair class."""
    scheduler = guest.scheduler
    assert scheduler is not None and scheduler.alive
    assert _sysfs(guest, "state") == "enabled" == scheduler.state
    assert _sysfs(guest, "root/ops") == "simple" == scheduler.name
    assert root_ops_name(guest.kernel) == "simple"
    log = guest.run("dmesg", check=True).stdout.decode()
    assert 'sched_ext: BPF scheduler "simple" enabled' in log

    rejected = _sysfs(guest, "nr_rejected")
    guest.run(f"stress-ng --cpu {CPUS} -t 60 >/dev/null 2>&1 &", check=True)
    try:
        most = _scx_running_everywhere(guest.kernel, time.monotonic() + 120)
    finally:
        guest.run("killall stress-ng; true")
    assert all(most.values()), most  # every CPU's rq.scx.nr_running was > 0
    assert _sysfs(guest, "nr_rejected") == rejected == "0"
    assert scheduler.alive
    assert "local=" in scheduler.output  # scx_simple's own report, every second

    scheduler.stop()
    assert not scheduler.alive
    assert _sysfs(guest, "state") == "disabled"
    assert root_ops_name(guest.kernel) is None  # scx_root is NULL again
    guest.run(f"stress-ng --cpu {CPUS} -t 3 >/dev/null 2>&1", check=True)
    live = guest.kernel
    assert all(live.per_cpu("runqueues", c).scx.nr_running.value_() == 0 for c in live.cpus)
    log = guest.run("dmesg", check=True).stdout.decode()
    assert 'sched_ext: BPF scheduler "simple" disabled (unregistered from user space)' in log
    scheduler.check()  # a stopped scheduler is no failure


def test_flatcg_attaches_from_the_host_and_runs_cgroups(
    bare: GuestVM, scx_schedulers: Path
) -> None:
    """scx_flatcg is not in the initramfs: start_scheduler copies it and its libraries in. Its
    hierarchy is cgroup v2 with the cpu controller, which the guest's init mounts."""
    assert bare.run("grep -w cgroup2 /proc/mounts", check=True).returncode == 0
    bare.run(
        "echo +cpu > /sys/fs/cgroup/cgroup.subtree_control && mkdir -p /sys/fs/cgroup/a"
        " /sys/fs/cgroup/b && echo 50 > /sys/fs/cgroup/a/cpu.weight",
        check=True,
    )
    scheduler = bare.start_scheduler(scx_schedulers / "scx_flatcg")
    assert (scheduler.name, _sysfs(bare, "root/ops")) == ("flatcg", "flatcg")
    assert root_ops_name(bare.kernel) == "flatcg"
    bare.run(
        'for g in a b; do sh -c "echo \\$\\$ > /sys/fs/cgroup/$g/cgroup.procs;'
        ' exec stress-ng --cpu 1 -t 5" >/dev/null 2>&1 & done; wait',
        check=True,
        timeout=300,
    )
    assert scheduler.alive
    scheduler.stop()
    assert _sysfs(bare, "state") == "disabled"


def test_central_attaches_and_holds_a_workload(bare: GuestVM, scx_schedulers: Path) -> None:
    scheduler = bare.start_scheduler(scx_schedulers / "scx_central")
    assert (scheduler.name, root_ops_name(bare.kernel)) == ("central", "central")
    bare.run(f"stress-ng --cpu {CPUS} -t 5 >/dev/null 2>&1", check=True, timeout=300)
    assert scheduler.alive
    scheduler.stop()


def test_a_stalled_scheduler_is_kicked_out_in_the_kernels_words(
    bare: GuestVM, scx_schedulers: Path
) -> None:
    """scx_userland dispatches from user space: with that process stopped, runnable tasks wait
    until sched_ext's watchdog kicks the scheduler out (at most 30 s): a task that did not run,
    or the watchdog's own work that could not."""
    scheduler = bare.start_scheduler(scx_schedulers / "scx_userland")
    bare.run(f"stress-ng --cpu {CPUS} -t 120 >/dev/null 2>&1 &", check=True)
    bare.run(f"kill -STOP {scheduler.pid}", check=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _sysfs(bare, "state") != "disabled":
        time.sleep(1)
    bare.run(f"kill -CONT {scheduler.pid}; killall stress-ng; true")
    with pytest.raises(SchedulerError) as e:
        scheduler.check()
    log = bare.run("dmesg", check=True).stdout.decode()
    said = re.search(
        r'BPF scheduler "userland" disabled \((.*)\)\n.*sched_ext: userland: (.*)', log
    )
    assert said is not None, log[-3000:]
    assert (e.value.kind, e.value.reason) == (said[1], said[2])
    assert e.value.kind == "runnable task stall", str(e.value)
    stalled = r"(.+\[\d+\] failed to run|watchdog failed to check in) for \d+\.\d{3}s"
    assert re.fullmatch(stalled, e.value.reason), e.value.reason
    message = str(e.value)
    assert "is no longer attached: runnable task stall: " in message
    assert f"sched_ext: userland: {said[2]}" in message  # the kernel's lines, quoted
    assert e.value.log and all(line.startswith("sched_ext: ") for line in e.value.log)


def test_scx_bpf_error_fails_with_its_message(bare: GuestVM, scx_schedulers: Path) -> None:
    """scx_erroring (scx_simple with -e N, built by build-scx.sh: scx_qmap -e of Linux 7.2 does
    not load when built with clang-19) calls scx_bpf_error() at its 300th enqueue."""
    scheduler = bare.start_scheduler(scx_schedulers / "scx_erroring", ["-e", "300"])
    assert scheduler.name == "erroring"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _sysfs(bare, "state") != "disabled":
        bare.run("ls -R /sys/kernel > /dev/null")  # tasks to enqueue
    with pytest.raises(SchedulerError) as e:
        scheduler.check()
    log = bare.run("dmesg", check=True).stdout.decode()
    said = re.search(
        r'BPF scheduler "erroring" disabled \((.*)\)\n.*sched_ext: erroring: (.*)', log
    )
    assert said is not None, log[-3000:]
    assert (e.value.kind, e.value.reason) == (said[1], said[2])
    assert e.value.kind == "scx_bpf_error"
    assert e.value.reason.endswith("scx_erroring: enqueue 300, as -e asked")
    assert "EXIT: scx_bpf_error" in e.value.output  # the scheduler's own report (UEI_REPORT)
    with pytest.raises(SchedulerError):
        scheduler.stop()  # stopping a scheduler the kernel kicked out says so again

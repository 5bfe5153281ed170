"""The helpers on real guests, Debian 12's 6.1 and Debian sid's 7.2 sched_ext kernel (KASLR on),
each checked against what the guest itself says: /proc and /sys for tasks, PIDs, states, CPUs
and masks, the file a process holds open for the page cache's XArray, and the kernel's own
counters for the CFS runqueue's rbtree.

The guest runs while the host reads, so a comparison with /proc brackets the host's walk with
two listings: a task in both was there throughout; one in neither could not have been seen.
Runqueue trees are read with the guest paused at a moment when no runqueue lock is held, so the
tree is whole.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from pytest_ktstr_vmlinux import (
    GuestVM,
    LiveKernel,
    Object,
    container_of,
    cpumask_to_cpulist,
    find_task,
    for_each_online_cpu,
    for_each_possible_cpu,
    for_each_task,
    idr_for_each_entry,
    pid_task,
    rbtree_inorder_for_each_entry,
    task_cpu,
    task_state_to_char,
    xa_for_each,
    xa_load,
)
from pytest_ktstr_vmlinux.formats.address import s64
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CPUS = 2
POSSIBLE = 4  # possible_cpus=4: on 6.1 the possible mask is wider than the online one
# Every thread's stat line, after its thread group's ID (from its path).
THREADS = (
    "for s in /proc/[0-9]*/task/[0-9]*/stat; do"
    " read -r l < $s && t=${s#/proc/} && echo ${t%%/*} $l; done"
)
BUSY = "sh -c 'while :; do :; done' >/dev/null 2>&1"


@pytest.fixture(scope="module", params=["6.1", "sid"])
def debian(request: pytest.FixtureRequest) -> DebianKernel:
    found: DebianKernel = request.getfixturevalue(
        "sid_kernel" if request.param == "sid" else "debian_kernel"
    )
    return found


@pytest.fixture(scope="module")
def guest(
    debian: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    vm = tcg_guest(
        debian,
        cpus=CPUS,
        cmdline=f"possible_cpus={POSSIBLE}",
        log_dir=tmp_path_factory.mktemp("guest-helpers"),
    )
    with vm:
        yield vm


@pytest.fixture
def live(guest: GuestVM) -> LiveKernel:
    return guest.kernel


class Thread(NamedTuple):
    """A thread as /proc shows it: its group's ID, its name, and its stat fields from field 3
    (the state) on."""

    tgid: int
    comm: str
    fields: list[str]


def _threads(guest: GuestVM) -> dict[int, Thread]:
    found = {}
    for line in guest.run(THREADS, check=True).stdout.decode().splitlines():
        tgid, rest = line.split(" ", 1)
        number, rest = rest.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        found[int(number)] = Thread(int(tgid), comm, fields.split())
    return found


def _spawn(guest: GuestVM, *commands: str) -> list[int]:
    """Start each command in the background; their pids."""
    script = "; ".join(f"{c} & echo $!" for c in commands)
    return [int(p) for p in guest.run(script, check=True).stdout.split()]


def _same_comm(ours: str, theirs: str) -> bool:
    """->comm holds the first 15 bytes of a task's name; /proc shows a kernel thread's full
    name and a kworker's workqueue after it ("-" or "+")."""
    return ours == theirs[:15] or (theirs.startswith(ours) and theirs[len(ours)] in "-+")


def test_for_each_task_is_procs_threads(guest: GuestVM, live: LiveKernel) -> None:
    before = _threads(guest)
    ours = {task.pid.value_(): task for task in for_each_task(live)}
    after = _threads(guest)
    throughout = before.keys() & after.keys()
    assert throughout <= ours.keys(), throughout - ours.keys()
    assert ours.keys() <= before.keys() | after.keys(), ours.keys() - before.keys() - after.keys()
    for pid in throughout:
        assert _same_comm(ours[pid].comm.string_(), before[pid].comm), (pid, before[pid])
        assert ours[pid].tgid == before[pid].tgid
        assert ours[pid].real_parent.tgid == int(before[pid].fields[1])  # field 4: ppid
    idle = list(for_each_task(live, idle=True))
    assert [t.pid.value_() for t in idle[:CPUS]] == [0] * CPUS
    assert idle[0].address_ == live.symbols["init_task"]


def test_find_task(guest: GuestVM, live: LiveKernel) -> None:
    init = find_task(live, 1)
    assert init is not None
    assert init.comm.string_() == guest.get("/proc/1/comm").decode().strip()
    (sleeper,) = _spawn(guest, "sleep 1000")
    try:
        task = find_task(live, sleeper)
        assert task is not None
        assert task.comm.string_() == "sleep"
        assert task.pid == sleeper
        ppid = guest.get(f"/proc/{sleeper}/stat").decode().rsplit(") ", 1)[1].split()[1]
        assert task.real_parent.tgid == int(ppid)
    finally:
        guest.run(f"kill {sleeper}", check=True)
    pid_max = int(guest.get("/proc/sys/kernel/pid_max"))
    assert guest.run(f"test -e /proc/{pid_max - 1}").returncode != 0
    assert find_task(live, pid_max - 1) is None


def test_the_pid_idr_is_procs(guest: GuestVM, live: LiveKernel) -> None:
    """Every ID in init_pid_ns's IDR is a struct pid of that number; those with a task are
    /proc's threads (an ID may also be kept by a process group or session whose leader left)."""
    ns = live.object("init_pid_ns", "struct pid_namespace")
    pidtype = live.btf.enum_value("PIDTYPE_PID")
    before = _threads(guest)
    with_task = {}
    for nr, pid in idr_for_each_entry(ns.idr, "struct pid"):
        assert pid.numbers[0].nr == nr
        task = pid_task(pid, pidtype)
        if task is not None:
            with_task[nr] = task
    after = _threads(guest)
    assert before.keys() & after.keys() <= with_task.keys()
    assert with_task.keys() <= before.keys() | after.keys()
    assert all(task.pid == nr for nr, task in with_task.items())


def test_task_cpu_of_pinned_tasks(guest: GuestVM, live: LiveKernel) -> None:
    pids = _spawn(guest, *(f"taskset -c {cpu} {BUSY}" for cpu in range(CPUS)))
    try:
        theirs = _threads(guest)
        for cpu, pid in enumerate(pids):
            task = find_task(live, pid)
            assert task is not None
            assert task_cpu(task) == cpu == int(theirs[pid].fields[36])  # field 39, processor
            # The affinity taskset gave it, as /proc/PID/status lists it.
            status = guest.get(f"/proc/{pid}/status").decode()
            allowed = re.search(r"Cpus_allowed_list:\s*(\S+)", status)
            assert allowed is not None
            assert cpumask_to_cpulist(task.cpus_mask) == allowed[1] == str(cpu)
    finally:
        guest.run(f"kill {' '.join(map(str, pids))}", check=True)


def test_task_states_are_procs(guest: GuestVM, live: LiveKernel) -> None:
    busy, sleeping, stopped, parent = _spawn(
        guest, BUSY, "sleep 1000", "sleep 1000", "sh -c 'true & exec sleep 1000'"
    )
    try:
        guest.run(
            f"kill -STOP {stopped}; until grep -q '^State:.T' /proc/{stopped}/status; do :; done;"
            f" until grep -q . /proc/{parent}/task/{parent}/children; do :; done",
            check=True,
            timeout=60,
        )
        (zombie,) = map(int, guest.get(f"/proc/{parent}/task/{parent}/children").split())
        guest.run(f"until grep -q '^State:.Z' /proc/{zombie}/status; do :; done", timeout=60)
        expected = {busy: "R", sleeping: "S", stopped: "T", zombie: "Z", parent: "S"}
        before = _threads(guest)
        for pid, letter in expected.items():
            task = find_task(live, pid)
            assert task is not None, pid
            assert task_state_to_char(task) == letter == before[pid].fields[0], pid
        # Rescuer workers (WQ_MEM_RECLAIM's, run only under memory pressure) sleep as TASK_IDLE.
        rescuers = {
            task.pid.value_(): task
            for task in for_each_task(live)
            if int(task.flags) & 0x20  # PF_WQ_WORKER
            and not re.fullmatch(r"kworker/u?\d+:\d+H?", task.comm.string_())
        }
        after = _threads(guest)
        idle = [p for p in rescuers if before[p].fields[0] == after[p].fields[0] == "I"]
        assert idle, rescuers
        assert [task_state_to_char(rescuers[p]) for p in idle] == ["I"] * len(idle)
    finally:
        guest.run(f"kill -9 {busy} {sleeping} {stopped} {parent}", check=True)


def test_cpus_and_masks_are_sysfs(guest: GuestVM, live: LiveKernel) -> None:
    """online, possible (widened by possible_cpus= on 6.1; 7.x's topology code only narrows
    it) and present, as /sys/devices/system/cpu shows them."""

    def sysfs(name: str) -> str:
        return guest.get(f"/sys/devices/system/cpu/{name}").decode().strip()

    def cpus(cpulist: str) -> list[int]:
        out: list[int] = []
        for part in cpulist.split(","):
            first, _, last = part.partition("-")
            out += range(int(first), int(last or first) + 1)
        return out

    for name, walk in (("online", for_each_online_cpu), ("possible", for_each_possible_cpu)):
        mask = live.object(f"__cpu_{name}_mask", "struct cpumask")
        assert cpumask_to_cpulist(mask) == sysfs(name)
        assert list(walk(live)) == cpus(sysfs(name))
    assert list(for_each_online_cpu(live)) == list(range(CPUS)) == list(live.cpus)
    assert list(for_each_possible_cpu(live)) == list(live.possible_cpus)
    present = live.object("__cpu_present_mask", "struct cpumask")
    assert cpumask_to_cpulist(present) == sysfs("present")
    if guest.run("uname -r", check=True).stdout.startswith(b"6.1."):
        assert sysfs("possible") == f"0-{POSSIBLE - 1}"


def test_the_page_cache_xarray(guest: GuestVM, live: LiveKernel) -> None:
    """A sparse tmpfs file with pages at indices that need one, two and three levels of nodes,
    held open as fd 3 by a sleep: its mapping's i_pages hold exactly those pages, and each
    folio's bytes (through the direct map) are what the guest reads from the file."""
    pages = [0, 1, 63, 64, 4095, 4096, 70000]
    writes = "; ".join(
        f"dd if=/dev/urandom of=/tmp/cached bs=4096 seek={i} count=1 conv=notrunc 2>/dev/null"
        for i in pages
    )
    (holder,) = _spawn(guest, f"mkdir -p /tmp; {writes}; exec sleep 1000 3</tmp/cached")
    try:
        guest.run(f"until [ -e /proc/{holder}/fd/3 ]; do :; done", check=True, timeout=60)
        task = find_task(live, holder)
        assert task is not None
        i_pages = task.files.fdt.fd[3].f_mapping.i_pages
        found = {index: slot.value_() for index, slot in xa_for_each(i_pages)}
        assert sorted(found) == pages
        vmemmap = live.read_u64(live.symbols["vmemmap_base"])
        for index, folio in found.items():
            pfn = (folio - vmemmap) // live.btf.sizeof("struct page")
            ours = hashlib.md5(live.read(live.page_offset_base + 4096 * pfn, 4096)).hexdigest()
            theirs = guest.run(
                f"dd if=/tmp/cached bs=4096 skip={index} count=1 2>/dev/null | md5sum", check=True
            ).stdout.split()[0]
            assert ours == theirs.decode(), index
            slot = xa_load(i_pages, index)
            assert slot is not None
            assert slot.value_() == folio
        assert xa_load(i_pages, 2) is None
    finally:
        guest.run(f"kill {holder}; rm -f /tmp/cached", check=True)


def _quiescent(guest: GuestVM, live: LiveKernel) -> None:
    """Pause the guest at a moment when no CPU holds its runqueue's lock (so no rbtree is
    being rebalanced); try again, a bounded number of times, when one does."""
    lock = "__lock" if live.btf.has_member("struct rq", "__lock") else "lock"  # 5.14
    for _ in range(200):
        guest.qmp.pause()
        held = [live.per_cpu("runqueues", c)[f"{lock}.raw_lock.val.counter"] for c in live.cpus]
        if not any(held):
            return
        guest.qmp.resume()
    pytest.fail("a runqueue lock was held at each of 200 pauses")


def _fair_entities(cfs_rq: Object) -> Iterator[Object]:
    """The entities on ``cfs_rq``'s timeline, a group's own entities after it."""
    for se in rbtree_inorder_for_each_entry(
        "struct sched_entity", cfs_rq.tasks_timeline, "run_node"
    ):
        yield se
        group = se.get_("my_q")  # CONFIG_FAIR_GROUP_SCHED: a task group's runqueue
        if group is not None and group:
            yield from _fair_entities(group.deref_())


def test_the_cfs_timeline(guest: GuestVM, live: LiveKernel) -> None:
    """Two busy loops pinned to each CPU: one runs (rq->curr), the other waits on the CPU's
    tasks_timeline. The tree's in-order is the kernel's order (vruntime; deadline since
    EEVDF, 6.6), and it holds as many entities as the kernel counts on that runqueue."""
    pids = _spawn(guest, *(f"taskset -c {cpu} {BUSY}" for cpu in range(CPUS) for _ in "ab"))
    key = "deadline" if live.btf.has_member("struct sched_entity", "deadline") else "vruntime"
    queued = live.btf.member_any("struct cfs_rq", ["nr_queued", "nr_running"]).name  # 6.14
    try:
        _quiescent(guest, live)
        try:
            for cpu in live.cpus:
                rq = live.per_cpu("runqueues", cpu)
                top = list(
                    rbtree_inorder_for_each_entry(
                        "struct sched_entity", rq.cfs.tasks_timeline, "run_node"
                    )
                )
                keys = [se[key].value_() for se in top]
                assert all(s64(b - a) >= 0 for a, b in itertools.pairwise(keys)), keys
                assert len(top) + bool(rq.cfs.curr) == rq.cfs[queued]
                tasks = [
                    container_of(se, "struct task_struct", "se")
                    for se in _fair_entities(rq.cfs)
                    if se.get_("my_q") is None or not se.my_q
                ]
                on_cpu = {t.pid.value_() for t in tasks} | {rq.curr.pid.value_()}
                pinned = set(pids[2 * cpu : 2 * cpu + 2])
                assert pinned <= on_cpu, (cpu, pinned, on_cpu)
                assert all(task_cpu(t) == cpu for t in tasks)
        finally:
            guest.qmp.resume()
    finally:
        guest.run(f"kill {' '.join(map(str, pids))}", check=True)

"""The live kernel read from the host: Debian's 6.1 cloud kernel under TCG, once with KASLR (the
distro's default) and once with ``nokaslr``, and Debian sid's sched_ext kernel (7.x: per-CPU data
linked in place, so every per-CPU address is reached through u64 wrap-around); every value is
checked against what the guest itself says (uname, nproc, /proc/kallsyms, /proc/iomem, /proc,
/sys/kernel/sched_ext), never against our own reading.

The KASLR guests are resolved Kernels, read through ``GuestVM.kernel``; the nokaslr one is an
image path, read through ``LiveKernel.from_guest`` with symbols and BTF made by hand.
"""

from __future__ import annotations

import csv
import io
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.live import (
    LiveKernel,
    LiveKernelError,
    LiveMemoryError,
    container_of,
    find_task,
    for_each_task,
    list_for_each_entry,
)
from pytest_ktstr_vmlinux.live.errors import MissingMemberError
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestError, GuestVM, boot_guest
from pytest_ktstr_vmlinux.vm.layout import MiB
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

BOOT_TIMEOUT = 900.0
CPUS = 2
MEMORY = 384 * MiB


@pytest.fixture(scope="module", params=["kaslr", "nokaslr", "sid"])
def variant(request: pytest.FixtureRequest) -> str:
    """Debian 12's 6.1 with KASLR and with nokaslr; Debian sid's sched_ext kernel with KASLR."""
    return str(request.param)


@pytest.fixture(scope="module")
def debian(request: pytest.FixtureRequest, variant: str) -> DebianKernel:
    """The kernel the module's guest boots."""
    found: DebianKernel = request.getfixturevalue(
        "sid_kernel" if variant == "sid" else "debian_kernel"
    )
    return found


@pytest.fixture(scope="module")
def guest(
    variant: str,
    debian: DebianKernel,
    guest_tools: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestVM]:
    store = MemoryStore()
    kaslr = variant != "nokaslr"
    kernel = (
        resolve_kernel(debian.release, sysroot=debian.sysroot, store=store)
        if kaslr
        else debian.image
    )
    vm = boot_guest(
        kernel,
        store=store,
        cpus=CPUS,
        memory=MEMORY,
        cmdline="" if kaslr else "nokaslr",
        accel="tcg",
        timeout=BOOT_TIMEOUT,
        log_dir=tmp_path_factory.mktemp(f"guest-{variant}"),
    )
    with vm:
        yield vm


@pytest.fixture
def live(guest: GuestVM, debian: DebianKernel) -> LiveKernel:
    if "nokaslr" not in guest.cmdline:
        return guest.kernel
    store = MemoryStore()
    return LiveKernel.from_guest(
        guest,
        KernelSymbols.from_vmlinux(debian.vmlinux, store),
        BTF.from_path(debian.vmlinux, store),
    )


def _kallsyms(guest: GuestVM, name: str) -> int:
    out = guest.run(f"grep ' {name}$' /proc/kallsyms", check=True).stdout.decode()
    return int(out.split()[0], 16)


def test_the_layout_is_the_one_the_guest_reports(guest: GuestVM, live: LiveKernel) -> None:
    text = _kallsyms(guest, "_text")
    assert live.symbols["_text"] == text
    if "nokaslr" in guest.cmdline:
        assert live.layout.slide == 0
    iomem = guest.run("cat /proc/iomem", check=True).stdout.decode()
    code = re.search(r"([0-9a-f]+)-[0-9a-f]+ : Kernel code", iomem)
    assert code is not None, iomem
    assert live.translate(text) == int(code[1], 16)
    # The direct map and a page walk agree with the image's linear offset.
    assert live._walker.translate(text) == live.translate(text)
    # phys_base as the kernel itself holds it (a wrapped u64 when the kernel sits below its
    # link address), and shown so.
    assert live.layout.phys_base == live.read_u64(live.symbols["phys_base"])
    assert f"phys_base={live.layout.phys_base:#x}" in repr(live)
    banner = live.symbols["linux_banner"]
    assert live.read(banner, 14) == b"Linux version "
    assert live.read(live.translate(banner), 14, physical=True) == b"Linux version "
    # The direct map (1 GiB or 2 MiB pages) walked agrees with its linear offset.
    assert live._walker.translate(live.page_offset_base + 0x1234567) == 0x1234567


def test_a_vmalloc_address_is_walked(live: LiveKernel) -> None:
    """kthreadd's stack is in vmalloc space (CONFIG_VMAP_STACK): only the page walk finds it;
    its lowest word is STACK_END_MAGIC (CONFIG_SCHED_STACK_END_CHECK), as the kernel wrote it."""
    task = find_task(live, 2)
    assert task is not None
    assert task.comm.string_() == "kthreadd"
    stack = task.stack.value_()
    assert not live._linear(stack, 8)
    assert int.from_bytes(live.read(stack, 4), "little") == 0x57AC6E9D


def test_uts_release_is_unames(guest: GuestVM, live: LiveKernel) -> None:
    release = live.object("init_uts_ns").name.release.string_()
    assert release == guest.run("uname -r", check=True).stdout.decode().strip()
    assert live["init_uts_ns"]["name.sysname"].value_().rstrip(b"\0") == b"Linux"


def test_init_task(live: LiveKernel) -> None:
    init = live["init_task"]
    assert init.type_.kind == "STRUCT"
    assert init.type_name_() == "struct task_struct"
    assert init.comm.string_() == "swapper/0"
    assert init.comm.value_().startswith(b"swapper/0\0")
    assert init.pid.value_() == 0
    assert init.address_ == live.symbols["init_task"]


def test_cpus_are_nproc(guest: GuestVM, live: LiveKernel) -> None:
    nproc = int(guest.run("nproc", check=True).stdout)
    assert live.cpus == tuple(range(nproc))
    assert len(live.possible_cpus) >= nproc


def test_jiffies_advance(live: LiveKernel) -> None:
    first = live["jiffies_64"].value_()
    while live["jiffies_64"].value_() == first:
        pass
    assert live["jiffies_64"].value_() > first


def test_per_cpu_runqueues(guest: GuestVM, live: LiveKernel) -> None:
    # 6.1 links .data..percpu at 0, 6.15 and later in place, as the guest's own kallsyms shows.
    assert live.percpu_zero_based == (_kallsyms(guest, "__per_cpu_start") == 0)
    release = guest.run("uname -r", check=True).stdout.decode()
    assert live.percpu_zero_based == release.startswith("6.1.")
    clocks = {}
    for cpu in live.cpus:
        rq = live.per_cpu("runqueues", cpu)
        assert rq.type_name_() == "struct rq"
        assert rq.cpu.value_() == cpu
        # cfs_rq.nr_running became nr_queued in 6.14: a field that moved, asked for as such.
        queued = rq.get_("cfs.nr_running")
        if queued is None:
            queued = rq["cfs.nr_queued"]
        assert queued >= 0
        clocks[cpu] = rq.clock.value_()
    for cpu in live.cpus:
        rq = live.per_cpu("runqueues", cpu)
        while rq.clock.value_() == clocks[cpu]:
            pass
        assert rq.clock.value_() > clocks[cpu]


def test_sched_ext_state_is_sysfs(guest: GuestVM, live: LiveKernel) -> None:
    """sched_ext's own state read from the host (globals named with their C types: distro BTF
    has no VARs for them) agrees with /sys/kernel/sched_ext; every CPU's scx runqueue is reached
    through __per_cpu_offset, whose values on this kernel wrap past 2**64."""
    if "scx_enable_state_var" not in live.symbols:  # the 6.1 variants: no sched_ext at all
        assert not live.btf.has_member("struct rq", "scx")
        assert guest.run("test -e /sys/kernel/sched_ext").returncode != 0
        return
    sysfs = {
        name: guest.get(f"/sys/kernel/sched_ext/{name}").decode().strip()
        for name in ("state", "enable_seq", "nr_rejected", "switch_all")
    }
    state = live.object("scx_enable_state_var", "atomic_t").counter.value_()
    names = {v: n for n, v in live.btf.type("enum scx_enable_state").enumerators}
    assert names[state] == "SCX_" + sysfs["state"].upper()
    assert live.object("scx_enable_seq", "atomic_long_t").counter == int(sysfs["enable_seq"])
    assert live.object("scx_nr_rejected", "atomic_long_t").counter == int(sysfs["nr_rejected"])
    assert live.object("scx_switching_all", "bool") == int(sysfs["switch_all"])
    offsets = live.symbols["__per_cpu_offset"]
    assert any(live.read_u64(offsets + 8 * cpu) >> 63 for cpu in live.cpus)  # "negative"
    for cpu in live.cpus:
        rq = live.per_cpu("runqueues", cpu)
        assert rq.cpu == cpu
        assert rq.scx.nr_running == 0  # no BPF scheduler: every task is in the fair class
        assert rq.scx.local_dsq.nr == 0


def test_pointer_members_are_followed(guest: GuestVM, live: LiveKernel) -> None:
    # rq->curr of an idle CPU, or anything running there: a task whose comm /proc knows.
    init = live["init_task"]
    child = container_of(init.tasks.next, "struct task_struct", "tasks")
    assert child.pid.value_() == 1
    comm = guest.run("cat /proc/1/comm", check=True).stdout.decode().strip()
    assert child.comm.string_() == comm
    assert child["real_parent.pid"].value_() == 0  # through a pointer, by path


def test_the_task_list_is_the_guests(guest: GuestVM, live: LiveKernel) -> None:
    kthreads = guest.run(
        "for s in /proc/[0-9]*/stat; do read -r l < $s; echo $l; done", check=True
    ).stdout.decode()
    shown: dict[int, str] = {}
    for line in kthreads.splitlines():
        number, rest = line.split(" (", 1)
        comm, fields = rest.rsplit(") ", 1)
        if fields.split()[1] == "2" or number in ("1", "2"):  # pid 1 and kernel threads stay
            shown[int(number)] = comm
    seen = {task.pid.value_(): task.comm.string_() for task in for_each_task(live)}
    assert set(shown) <= set(seen), set(shown) - set(seen)
    for pid, proc_name in shown.items():
        # /proc shows a kthread's full name, and a kworker's workqueue after its name ("-" or
        # "+"); ->comm holds the first 15 bytes of what the kernel named it.
        ours = seen[pid]
        if proc_name.startswith("kworker/"):
            assert proc_name.startswith(ours) and len(ours) <= 15, (pid, proc_name, ours)
            assert ours == proc_name[:15] or proc_name[len(ours)] in "-+", (pid, proc_name, ours)
        else:
            assert ours == proc_name[:15], (pid, proc_name, ours)


def test_bitfields_enums_and_typedefs(live: LiveKernel) -> None:
    init = live["init_task"]
    # in_execve is a 1-bit field; swapper never exec'd.
    assert init.in_execve.value_() == 0
    assert live.btf.member("struct task_struct", "in_execve").bitfield_size == 1
    # system_state is an enum; a booted system is running.
    state = live["system_state"].value_()
    assert state == live.btf.enum_value("SYSTEM_RUNNING")
    assert state.name == "SYSTEM_RUNNING"
    # jiffies_64 is u64: a typedef chain down to an unsigned INT.
    assert live["jiffies_64"].type_.kind == "TYPEDEF"
    assert isinstance(live["jiffies_64"].value_(), int)


def test_struct_values_are_dicts(live: LiveKernel) -> None:
    name = live["init_uts_ns"].name.value_()
    assert name["sysname"].rstrip(b"\0") == b"Linux"
    assert set(name) >= {"sysname", "nodename", "release", "version", "machine"}


def test_a_physical_address_outside_ram(live: LiveKernel) -> None:
    with pytest.raises(LiveMemoryError, match=r"0x40000000000.*not in guest RAM") as e:
        live.read(0x40000000000, 8, physical=True)
    assert e.value.address == 0x40000000000


def test_an_unmapped_virtual_address(live: LiveKernel) -> None:
    hole = 0xFFFF800000001000  # the guard hole below the direct map
    with pytest.raises(LiveMemoryError, match="0xffff800000001000 is not mapped"):
        live.read(hole, 8)
    with pytest.raises(LiveMemoryError, match="not mapped"):
        live.translate(hole)


def test_a_null_pointer(live: LiveKernel) -> None:
    with pytest.raises(LiveMemoryError, match="NULL"):
        live["init_task"].mm.owner.value_()  # the idle task has no mm


def test_a_missing_member_names_close_ones(live: LiveKernel) -> None:
    init = live["init_task"]
    with pytest.raises(MissingMemberError, match=r"comn.*did you mean 'comm'"):
        init["comn"]
    assert not hasattr(init, "comn")
    assert init.get_("scx.nr_running", "absent") == "absent"  # sched_ext is not in 6.1
    assert init.get_("pid").address_ == init.pid.address_


def test_misuse_says_what_to_do(live: LiveKernel) -> None:
    with pytest.raises(LiveKernelError, match=r"per-CPU variable: use per_cpu"):
        live.object("runqueues")
    with pytest.raises(LiveKernelError, match="CPU 99 does not exist"):
        live.per_cpu("runqueues", 99)
    with pytest.raises(LiveKernelError, match="not a per-CPU variable"):
        live.per_cpu("jiffies_64", 0)


def test_sampling_sees_pinned_busy_loops(guest: GuestVM, live: LiveKernel) -> None:
    pids = guest.run(
        "for c in $(seq 0 $(($(nproc) - 1))); do"
        " taskset -c $c sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!; done",
        check=True,
    ).stdout.split()
    try:
        # A loop started in the background may not have run taskset yet when run() returns:
        # wait until each one is bound to its CPU (which moves it there) before sampling.
        guest.run(
            "c=0; for p in " + " ".join(p.decode() for p in pids) + "; do while ! grep -q"
            ' "^Cpus_allowed_list:[[:space:]]*$c$" /proc/$p/status; do :; done;'
            " c=$((c + 1)); done",
            check=True,
            timeout=60,
        )
        busy = live.sample(["nr_running", "clock"], interval=0.02, duration=0.5)
    finally:
        guest.run(f"kill {' '.join(p.decode() for p in pids)}", check=True)
    assert len(pids) == len(live.cpus)
    for cpu in live.cpus:
        assert min(busy.column("nr_running", cpu)) >= 1, busy.to_csv()
        clocks = busy.column("clock", cpu)
        assert clocks[-1] > clocks[0]
    gone = " ".join(p.decode() for p in pids)  # dead or a zombie: off every runqueue
    guest.run(
        f"for p in {gone}; do while [ -d /proc/$p ] && ! grep -q '^State:.Z' /proc/$p/status;"
        " do :; done; done",
        check=True,
        timeout=60,
    )
    idle = live.sample(["nr_running"], interval=0.02, duration=0.5)
    for cpu in live.cpus:
        assert min(idle.column("nr_running", cpu)) == 0, idle.to_csv()
    rows = list(csv.reader(io.StringIO(busy.to_csv())))
    assert rows[0] == ["time", "cpu", "nr_running", "clock"]
    assert [int(r[1]) for r in rows[1:]] == busy.column("cpu")
    assert len(rows) == len(busy) + 1


def test_a_reader_reads_the_field_again(live: LiveKernel) -> None:
    rq = live.per_cpu("runqueues", 0)
    assert rq.cpu.reader_()() == 0
    clock = rq.clock.reader_()
    first = clock()
    while clock() == first:
        pass
    assert clock() > first
    assert rq.fixed_ and not rq.curr.deref_().fixed_  # what a pointer leads to may change


def test_sampling_follows_pointers_afresh(live: LiveKernel) -> None:
    samples = live.sample(["curr.pid", "cpu"], interval=0.01, duration=0.05)
    assert samples.columns == ("time", "cpu", "curr.pid", "cpu")
    assert len(samples) >= len(live.cpus)
    assert all(isinstance(pid, int) and pid >= 0 for pid in samples.column("curr.pid"))


def test_another_kernels_vmlinux_is_refused(guest: GuestVM, tinyconfig_tree: Path) -> None:
    """The tinyconfig 6.1 vmlinux is not what the guest runs: its _text and linux_banner do not
    fit the guest's page tables, and the layout is refused rather than guessed."""
    vmlinux = tinyconfig_tree / "vmlinux"
    with pytest.raises(LiveKernelError, match="cannot derive where the guest's kernel is") as e:
        LiveKernel.from_guest(guest, KernelSymbols.from_vmlinux(vmlinux), BTF.from_path(vmlinux))
    assert "linux_banner" in str(e.value)
    assert str(vmlinux) in str(e.value)


def test_guest_kernel_needs_a_vmlinux(guest: GuestVM) -> None:
    if "nokaslr" in guest.cmdline:  # booted from an image path: no vmlinux known
        with pytest.raises(GuestError, match="needs its vmlinux"):
            _ = guest.kernel
    else:
        assert guest.kernel is guest.kernel  # made once


def test_a_given_layout_needs_no_monitor(guest: GuestVM, live: LiveKernel) -> None:
    again = LiveKernel(guest.memory, live.symbols, live.btf, layout=live.layout)
    assert again["init_task"].comm.string_() == "swapper/0"
    with pytest.raises(LiveKernelError, match="needs the guest's monitor"):
        LiveKernel(guest.memory, live.symbols, live.btf)


def test_sampling_refuses_a_missing_field(live: LiveKernel) -> None:
    with pytest.raises(MissingMemberError, match=r"nr_runing.*did you mean 'nr_running'"):
        live.sample(["nr_runing"], interval=0.01, duration=0.1)


def _vmcoreinfo(guest: GuestVM) -> bytes:
    """The kernel's VMCOREINFO text, from the ELF note /sys/kernel/vmcoreinfo locates, read
    from guest physical memory (no translation of ours involved)."""
    phys, size = (int(v, 16) for v in guest.get("/sys/kernel/vmcoreinfo").split())
    note = bytes(guest.memory.read(phys, size))
    namesz, descsz, _ = struct.unpack_from("<III", note)
    start = 12 + (namesz + 3) // 4 * 4
    return note[start : start + descsz]


def test_drgn_agrees_on_the_paused_guest(
    guest: GuestVM, live: LiveKernel, debian: DebianKernel
) -> None:
    """drgn (DWARF, its own page walk, vmcoreinfo's KASLR offset) reading the same RAM."""
    drgn = pytest.importorskip("drgn")
    from drgn.helpers.linux.list import list_for_each_entry as drgn_list_for_each_entry
    from drgn.helpers.linux.percpu import per_cpu
    from drgn.helpers.linux.pid import for_each_task as drgn_for_each_task

    vmcoreinfo = _vmcoreinfo(guest)
    prog = drgn.Program(drgn.host_platform)
    for region in guest.memory.regions:
        prog.add_memory_segment(
            region.start,
            region.size,
            lambda address, count, offset, physical, r=region: bytes(
                guest.memory.buffer[r.offset + offset : r.offset + offset + count]
            ),
            physical=True,
        )
    prog.set_linux_kernel_custom(vmcoreinfo, True)
    prog.load_debug_info([str(debian.vmlinux)])
    offset = re.search(rb"KERNELOFFSET=([0-9a-f]+)", vmcoreinfo)
    assert offset is not None
    assert live.layout.slide == int(offset[1], 16)
    guest.qmp.pause()
    try:
        for cpu in live.cpus:
            theirs = per_cpu(prog["runqueues"], cpu)
            ours = live.per_cpu("runqueues", cpu)
            assert ours.address_ == theirs.address_
            assert ours.nr_running.value_() == theirs.nr_running.value_()
            assert ours.clock.value_() == theirs.clock.value_()
        init = prog["init_task"]
        theirs_tasks = [
            (t.pid.value_(), t.comm.string_().decode())
            for t in drgn_list_for_each_entry(
                "struct task_struct", init.tasks.address_of_(), "tasks"
            )
        ]
        leaders = list_for_each_entry("struct task_struct", live["init_task"].tasks, "tasks")
        assert [(t.pid.value_(), t.comm.string_()) for t in leaders] == theirs_tasks
        # Every thread, walked two ways: drgn's through the PID IDR, ours through the lists.
        assert sorted(t.pid.value_() for t in for_each_task(live)) == [
            t.pid.value_() for t in drgn_for_each_task(prog)
        ]
    finally:
        guest.qmp.resume()


def test_a_stopped_guest(guest: GuestVM, live: LiveKernel) -> None:
    """Last: it shuts the module's guest down."""
    guest.shutdown()
    with pytest.raises(LiveMemoryError, match="guest has stopped"):
        live["jiffies_64"].value_()
    with pytest.raises(GuestError, match="not running"):
        _ = guest.kernel

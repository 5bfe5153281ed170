"""Globals read by name alone on Debian sid's sched_ext kernel, whose BTF types per-CPU variables
only: their types come from the -dbg vmlinux's DWARF, built through the guest's store the first
time a global needs one. Every value is checked against the guest's own view
(/sys/kernel/sched_ext) and the kernel's source (7.2: SCX_WATCHDOG_MAX_TIMEOUT is 30 * HZ, the
watchdog interval half the shortest timeout), with the kernel's own scx_simple attached.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.formats.dwarf.globaltypes import GlobalTypes
from pytest_ktstr_vmlinux.formats.kconfig import parse_config
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.live import LiveKernel, LiveKernelError
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest
from pytest_ktstr_vmlinux.vm.layout import MiB
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

BOOT_TIMEOUT = 900.0
ATTACH_TIMEOUT = 300.0


def _with_libraries(binary: Path) -> dict[str, str | Path]:
    """``binary`` at /bin and the shared libraries ldd says it loads, at their paths."""
    files: dict[str, str | Path] = {f"/bin/{binary.name}": binary}
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            files[path] = Path(path).resolve()
    return files


@pytest.fixture(scope="module")
def guest(
    sid_kernel: DebianKernel,
    scx_schedulers: Path,
    guest_tools: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestVM]:
    if shutil.which("ldd") is None:
        pytest.fail("ldd (libc-bin) is needed to put scx_simple's libraries in the guest")
    store = MemoryStore()
    kernel = resolve_kernel(sid_kernel.release, sysroot=sid_kernel.sysroot, store=store)
    vm = boot_guest(
        kernel,
        store=store,
        cpus=2,
        memory=384 * MiB,
        accel="tcg",
        files=_with_libraries(scx_schedulers / "scx_simple"),
        timeout=BOOT_TIMEOUT,
        log_dir=tmp_path_factory.mktemp("guest-globals"),
    )
    with vm:
        yield vm


@pytest.fixture(scope="module")
def hz(sid_kernel: DebianKernel) -> int:
    value = parse_config(sid_kernel.config.read_text(), str(sid_kernel.config))["CONFIG_HZ"]
    assert isinstance(value, int)
    return value


def _state(guest: GuestVM) -> str:
    return guest.get("/sys/kernel/sched_ext/state").decode().strip()


def _enum(live: LiveKernel, state: str) -> int:
    return live.btf.enum_value(f"SCX_{state.upper()}")


def test_globals_by_name_with_no_scheduler(guest: GuestVM) -> None:
    live = guest.kernel
    assert live.btf.datasecs() == {".data..percpu": 423}  # no VAR for any of these
    assert _state(guest) == "disabled"
    root = live["scx_root"]
    assert root.type_name_() == "struct scx_sched *"
    assert root.value_() == 0 and not root  # NULL while no BPF scheduler is attached
    state = live["scx_enable_state_var"]
    assert state.type_name_() == "atomic_t"
    assert state.counter == _enum(live, _state(guest))
    assert live["scx_watchdog_interval"] == 0  # set when a scheduler is first enabled
    assert live["init_task"].pid == 0  # DWARF agrees with the old well-known table
    assert live["jiffies"].value_() > 0  # no DWARF (the linker script makes it): well-known


def test_globals_follow_an_attached_scheduler(guest: GuestVM, hz: int) -> None:
    live = guest.kernel
    guest.run("/bin/scx_simple >/tmp/scx.log 2>&1 &", check=True)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while _state(guest) != "enabled":
        assert time.monotonic() < deadline, guest.run("cat /tmp/scx.log").stdout
        guest.run("sleep 1")
    try:
        root = live["scx_root"]
        assert root.value_() != 0
        ops = guest.get("/sys/kernel/sched_ext/root/ops").decode().strip()
        assert root.ops.name.string_() == ops
        assert root.ops.name.string_() == "simple"
        # scx_simple sets no timeout_ms: the kernel takes SCX_WATCHDOG_MAX_TIMEOUT, 30 * HZ,
        # and its watchdog runs at half the shortest timeout.
        assert root.watchdog_timeout == 30 * hz
        assert live["scx_watchdog_interval"] == 30 * hz // 2
        assert live["scx_enable_state_var"].counter == _enum(live, "enabled")
    finally:
        guest.run("killall scx_simple")
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while _state(guest) != "disabled" and time.monotonic() < deadline:
            guest.run("sleep 1")
    assert live["scx_root"].value_() == 0
    assert live["scx_enable_state_var"].counter == _enum(live, _state(guest))


def test_a_named_type_is_checked_against_the_symbol(guest: GuestVM) -> None:
    live = guest.kernel
    size = live.btf.sizeof("struct scx_sched")
    with pytest.raises(
        LiveKernelError,
        match=rf"'scx_root' is 8 bytes \(its st_size\) but 'struct scx_sched' is {size} bytes:"
        r" its type is 'struct scx_sched \*'",
    ):
        live.object("scx_root", "struct scx_sched")
    assert live.object("scx_root", "struct scx_sched *").value_() == live["scx_root"].value_()
    assert (
        live.object("__per_cpu_offset", "unsigned long[8192]")[0] == (live["__per_cpu_offset"][0])
    )
    with pytest.raises(LiveKernelError, match="not a C type expression: 'struct scx_sched \\*\\['"):
        live.object("scx_root", "struct scx_sched *[")
    with pytest.raises(LiveKernelError, match="no type 'struct scx_schd'; did you mean"):
        live.object("scx_root", "struct scx_schd *")


def test_a_missing_variable_says_what_this_kernel_has(guest: GuestVM) -> None:
    """7.2 keeps the watchdog timeout per scheduler (scx_sched.watchdog_timeout): the global of
    6.12-6.15 is gone, and the error says so, not that pahole is old."""
    guest.kernel["scx_root"]  # the table is loaded: the error says what DWARF has too
    with pytest.raises(LiveKernelError) as e:
        guest.kernel["scx_watchdog_timeout"]
    message = str(e.value)
    assert "its BTF has VARs for per-CPU variables only (423;" in message
    assert "its DWARF describes no variable 'scx_watchdog_timeout'" in message
    assert "no symbol 'scx_watchdog_timeout'" in message
    assert "scx_watchdog_timestamp" in message  # a close match
    assert "pahole before 1.26" not in message


def test_the_table_is_made_only_when_a_global_needs_it(guest: GuestVM) -> None:
    live0 = guest.kernel
    calls: list[int] = []

    def table() -> GlobalTypes:
        calls.append(1)
        return live0.variable_types.table or pytest.fail("the guest's kernel has a table")

    live = LiveKernel(
        guest.memory, live0.symbols, live0.btf, layout=live0.layout, global_types=table
    )
    for cpu in live.cpus:
        live.per_cpu("runqueues", cpu).nr_running.value_()  # a BTF VAR: no table
    with pytest.raises(LiveKernelError, match=r"no symbol 'scx_rot'.*did you mean.*scx_root"):
        live["scx_rot"]  # a name with no symbol: said without building the table
    assert calls == []
    assert live["scx_root"].type_name_() == "struct scx_sched *"
    live["scx_enable_state_var"].counter.value_()
    assert calls == [1]


def test_statics_of_one_name(guest: GuestVM) -> None:
    """ACPICA defines a static _acpi_module_name in each of its files: the name alone is
    ambiguous, and says so with each file's; a file picks one."""
    live = guest.kernel
    with pytest.raises(LiveKernelError) as e:
        live["_acpi_module_name"]
    assert "is ambiguous" in str(e.value) and "drivers/acpi/acpica/dsargs.c" in str(e.value)
    assert "filename=" in str(e.value)
    dsargs = live.object("_acpi_module_name", filename="dsargs.c")
    assert dsargs.string_() == "dsargs" and dsargs.type_name_() == "const char[7]"
    assert live.object("_acpi_module_name", filename="acpica/utxfinit.c").string_() == "utxfinit"
    with pytest.raises(
        LiveKernelError,
        match=r"no variables .* 'utxface\.c'; their files: .*"
        r"dsargs\.c, .*, and \d+ more",
    ):
        live.object("_acpi_module_name", filename="utxface.c")

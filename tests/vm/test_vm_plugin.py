"""The guest fixtures as users run them (pytester): kernel_vm shared per kernel and worker, the
ktstr_vm marker's own guest, kernel_vm_factory, their options, and what happens without QEMU or
busybox, without a bootable image, and when a guest panics or a command hangs.

The runs that boot are few and share guests: CI boots them under TCG on two busy cores.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.plugin.vm import VmSettings, vm_settings
from tests.helpers.fakes import make_build_tree
from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import junit, run, skip_lines

BOOT_TIMEOUT = "900"  # seconds: generous, CI boots under TCG on two busy cores
VM_OPTIONS = ("--kernel-vm-accel=tcg", f"--kernel-vm-timeout={BOOT_TIMEOUT}")

FIXTURES = """
import os
import re

import pytest

from pytest_ktstr_vmlinux.vm import GuestBootError, GuestStoppedError, GuestTimeoutError

SHARED = []


def _record(vm):
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{vm.pid}\\n")


def test_shared_guest_runs_the_kernel_under_test(kernel_vm, kernel):
    assert kernel_vm.run("uname -r").stdout.decode().strip() == kernel.release
    assert kernel_vm.run("nproc").stdout == b"1\\n"  # --kernel-vm-cpus=1
    SHARED.append(kernel_vm.pid)
    _record(kernel_vm)


def test_shared_guest_is_shared(kernel_vm):
    assert SHARED == [kernel_vm.pid]


@pytest.mark.ktstr_vm(cpus=2, memory="320M", files={"/etc/motd": b"own guest\\n"})
def test_marker_gives_a_guest_of_its_own(kernel_vm):
    _record(kernel_vm)
    assert kernel_vm.pid not in SHARED
    assert kernel_vm.run("nproc").stdout == b"2\\n"
    assert len(kernel_vm.memory) == 320 << 20
    assert kernel_vm.get("/etc/motd") == b"own guest\\n"
    with pytest.raises(GuestTimeoutError) as e:
        kernel_vm.run("echo so far; echo err so far >&2; sleep 600", timeout=10)
    message = str(e.value)
    assert "did not finish in 10 s; the guest was killed" in message
    assert "| so far" in message and "| err so far" in message
    assert f"console {kernel_vm.console_path}, last 30 lines:" in message
    assert (e.value.result.returncode, e.value.result.stdout) == (None, b"so far\\n")
    assert not kernel_vm.alive
    with pytest.raises(GuestStoppedError, match="killed after .* timed out"):
        kernel_vm.run("true")


def test_the_shared_guest_is_readable_live(kernel_vm, kernel, kernel_symbols, kernel_btf):
    live = kernel_vm.kernel
    assert live is kernel_vm.kernel
    assert live.object("init_uts_ns").name.release.string_() == kernel.release
    assert live.per_cpu("runqueues", 0).cpu.value_() == 0
    assert live.cpus == (0,)
    # The fixtures' artifacts, slid to where the guest's kernel runs.
    assert live.symbols.source == kernel_symbols.source
    assert live.symbols["jiffies_64"] == kernel_symbols["jiffies_64"] + live.layout.slide
    assert live.btf.sizeof("struct rq") == kernel_btf.sizeof("struct rq")


def test_the_shared_guest_outlives_a_marked_one(kernel_vm):
    assert SHARED == [kernel_vm.pid]
    assert kernel_vm.run("echo still here").stdout == b"still here\\n"


def test_factory_says_the_guest_panicked(kernel_vm_factory):
    with pytest.raises(GuestBootError) as e:
        kernel_vm_factory(cmdline="init=/nonexistent")
    assert e.value.reason == "panic"
    message = str(e.value)
    assert "the guest kernel panicked ([" in message
    assert "Kernel panic - not syncing: Attempted to kill init!" in message
    assert "before its agent started" in message
    assert re.search(r"console /\\S+/console.log, last 30 lines:\\n  \\| ", message)


def test_a_panic_while_a_command_runs_says_so(kernel_vm_factory):
    vm = kernel_vm_factory()
    _record(vm)
    with pytest.raises(GuestStoppedError) as e:
        vm.run("echo c > /proc/sysrq-trigger")
    message = str(e.value)
    assert message.startswith("run 'echo c > /proc/sysrq-trigger': the guest kernel panicked (")
    assert "Kernel panic - not syncing: sysrq triggered crash" in message
    assert f"console {vm.console_path}, last 30 lines:" in message
    assert not vm.alive
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and "qemu" in cmdline:
                found.append(cmdline)
    return found


def _ram_dirs(pids: set[int]) -> list[str]:
    names = []
    for base in ("/dev/shm", tempfile.gettempdir()):
        names += [n for n in os.listdir(base) if any(n.startswith(f"ktstr-vm-{p}-") for p in pids)]
    return names


@pytest.mark.real_kernel
def test_kernel_vm_fixtures_on_the_debian_kernel(
    pytester: pytest.Pytester,
    debian_kernel: DebianKernel,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pids = pytester.path / "pids"
    monkeypatch.setenv("PIDS", str(pids))
    pytester.makepyfile(test_vm=FIXTURES)
    result = run(
        pytester,
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel={debian_kernel.release}",
        "--kernel-vm-cpus=1",
        *VM_OPTIONS,
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=7)
    assert "test_vm.py::test_marker_gives_a_guest_of_its_own[ktstr_vm]" in junit(pytester).cases
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(set(recorded)) == 3
    assert not any(_alive(pid) for pid in recorded)
    assert _processes_mentioning(str(pytester.path)) == []


XDIST = """
import json
import os


def _record(vm, kernel, request):
    worker = request.config.workerinput["workerid"]
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps([worker, kernel.label, vm.pid, os.getpid()]) + "\\n")


def test_one(kernel_vm, kernel, request):
    assert kernel_vm.run("uname -r").stdout.decode().strip() == kernel.release
    _record(kernel_vm, kernel, request)


def test_two(kernel_vm, kernel, request):
    assert kernel_vm.run("true").returncode == 0
    _record(kernel_vm, kernel, request)
"""


@pytest.mark.real_kernel
def test_two_kernels_and_two_workers_each_boot_their_own_guests(
    pytester: pytest.Pytester,
    debian_kernel: DebianKernel,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = pytester.path / "record"
    monkeypatch.setenv("RECORD", str(record))
    pytester.makepyfile(test_vm=XDIST)
    result = run(
        pytester,
        *("-n", "2", "--dist", "each"),  # every worker runs every test: both boot both kernels
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel=a={debian_kernel.release}",
        f"--kernel=b={debian_kernel.release}",
        *("--kernel-vm-cpus=1", "--kernel-vm-memory=256M"),
        *VM_OPTIONS,
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=8)
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    guests: dict[tuple[str, str], set[int]] = {}
    for worker, label, pid, _ in rows:
        guests.setdefault((worker, label), set()).add(pid)
    assert sorted(guests) == [("gw0", "a"), ("gw0", "b"), ("gw1", "a"), ("gw1", "b")]
    assert all(len(pids) == 1 for pids in guests.values())  # shared by the worker's tests
    qemus = {pid for pids in guests.values() for pid in pids}
    assert len(qemus) == 4
    assert not any(_alive(pid) for pid in qemus)
    assert _processes_mentioning(str(pytester.path)) == []
    assert _ram_dirs({worker_pid for *_, worker_pid in rows}) == []


USES_GUESTS = """
def test_shared(kernel_vm):
    pass

def test_factory(kernel_vm_factory):
    kernel_vm_factory()
"""


@pytest.mark.parametrize(
    ("tools", "package"), [([], "qemu-system-x86"), (["qemu-system-x86_64"], "busybox-static")]
)
def test_without_qemu_or_busybox_guest_tests_skip_naming_the_package(
    pytester: pytest.Pytester, guest_tools: None, tools: list[str], package: str
) -> None:
    make_build_tree(pytester.path / "linux")
    path = pytester.path / "bin"
    path.mkdir()
    for tool in tools:
        (path / tool).symlink_to(__import__("shutil").which(tool))
    pytester.makepyfile(test_vm=USES_GUESTS)
    env = {"PATH": str(path)}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        result = run(pytester, "-rs", "--kernel=linux")
        strict = run(pytester, "--kernel=linux", "--kernel-strict")
    result.assert_outcomes(skipped=2)
    lines = skip_lines(result)
    assert len(lines) == 2 and all(f"install {package}" in line for line in lines), lines
    strict.assert_outcomes(failed=1, errors=1)
    failures = [c.message for c in junit(pytester).cases.values()]
    assert all(f"install {package}" in m and "(--kernel-strict)" in m for m in failures), failures


def test_the_default_kernel_without_an_image_skips_what_would_boot_it(
    pytester: pytest.Pytester,
) -> None:
    """A fresh container: nothing in /boot (here an empty sysroot), nobody named a kernel. The
    docs (getting-started.md, guests.md) promise that the default kernel skips what it lacks:
    no error, no QEMU started."""
    empty = pytester.mkdir("empty")
    pytester.makepyfile(test_vm=USES_GUESTS)
    basetemp = pytester.path / "basetemp"
    result = run(pytester, "-rs", f"--kernel-sysroot={empty}", f"--basetemp={basetemp}")
    result.assert_outcomes(skipped=2)
    release = os.uname().release
    looked = ", ".join(
        f"{empty}{path}" for path in (f"/boot/vmlinuz-{release}", f"/lib/modules/{release}/vmlinuz")
    )
    lines = skip_lines(result)
    assert len(lines) == 2, lines
    for line in lines:
        assert (
            f": ktstr: no bootable image for the running kernel {release} (looked for {looked}, "
            in line
        )
        assert "a kernel to fetch (debian:sid) instead" in line
    assert list(basetemp.rglob("vm-*")) == []  # no guest's log directory: nothing booted
    strict = run(pytester, f"--kernel-sysroot={empty}", "--kernel-strict")
    strict.assert_outcomes(failed=1, errors=1)
    said = [line for line in strict.outlines if line.startswith("ktstr: no bootable image")]
    assert len(said) == 2 and all(line.endswith(" (--kernel-strict)") for line in said), said


def test_a_kernel_without_an_image_cannot_boot(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux")
    pytester.makepyfile(test_vm=USES_GUESTS)
    result = run(pytester, "--kernel=linux/vmlinux")
    result.assert_outcomes(errors=1, failed=1)
    for case in junit(pytester).cases.values():
        assert "was named by its vmlinux, which is no bootable image" in case.message
        assert "name the image (bzImage, vmlinuz-R), its build tree or its release" in case.message


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("ktstr_vm(2)", "takes keyword arguments only"),
        ("ktstr_vm(cpu=2)", "unknown argument 'cpu' (it takes cpus, memory, cmdline, files,"),
        ("ktstr_vm(cpus=0)", "cpus=0: a number of CPUs"),
        ("ktstr_vm(memory='lots')", "not a size: 'lots'"),
        (
            "ktstr_vm(memory='1.5M')",
            "memory='1.5M': guest memory is a positive whole number of MiB",
        ),
        ("ktstr_vm(cmdline=['quiet'])", "cmdline=['quiet']: a string"),
        ("ktstr_vm(programs='stress-ng')", "programs='stress-ng': a list of programs"),
        ("ktstr_vm(programs=[1])", "programs=[1]: a list of programs"),
        ("ktstr_vm(scheduler=3)", "scheduler=3: a program (a path, or a name on PATH)"),
        ("ktstr_vm(scheduler='scx_simple', scheduler_args='-f')", "scheduler_args='-f': a list"),
        ("ktstr_vm(scheduler_args=['-f'])", "scheduler_args= without scheduler="),
        ("ktstr_vm(sockets=0)", "sockets=0: a whole number (1, 2, ...)"),
        ("ktstr_vm(threads=1.5)", "threads=1.5: a whole number (1, 2, ...)"),
        ("ktstr_vm(sockets=3, numa_nodes=2)", "numa_nodes=2 does not divide sockets=3"),
        ("ktstr_vm(cpus=6, sockets=2, cores=2)", "cpus=6 but sockets=2 x cores=2 x threads=1"),
    ],
)
def test_bad_marker_arguments_are_collection_errors(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_vm=f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(kernel_vm):\n    pass\n"
    )
    result = run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # errors during collection
    assert f"test_vm.py::test_x: ktstr_vm marker: {message}" in result.stdout.str()


def test_program_scheduler_and_topology_arguments_collect(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_vm="import pytest\n\n"
        "@pytest.mark.ktstr_vm(programs=['stress-ng'], scheduler='scx_simple',"
        " scheduler_args=['-f'], sockets=2, cores=2, threads=2, numa_nodes=2)\n"
        "def test_x(kernel_vm):\n    pass\n"
    )
    result = run(pytester, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_a_marker_on_a_test_without_kernel_vm_is_a_collection_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_vm="import pytest\n\n@pytest.mark.ktstr_vm(cpus=1)\ndef test_x():\n    pass\n"
    )
    result = run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    expected = (
        "test_vm.py::test_x: the ktstr_vm marker gives kernel_vm a guest of its own, but the test"
        " does not request kernel_vm"
    )
    assert expected in result.stdout.str()


def test_settings_take_option_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert vm_settings(pytester.parseconfig()) == VmSettings()
    pytester.makeini(
        "[pytest]\nktstr_vm_cpus = 3\nktstr_vm_memory = 1G\nktstr_vm_accel = kvm\n"
        "ktstr_vm_timeout = 60\nktstr_vm_cmdline = quiet\n"
    )
    assert vm_settings(pytester.parseconfig()) == VmSettings(3, 1 << 30, "kvm", 60.0, "quiet")
    monkeypatch.setenv("KTSTR_VM_CPUS", "4")
    monkeypatch.setenv("KTSTR_VM_CMDLINE", "nokaslr")
    assert vm_settings(pytester.parseconfig()) == VmSettings(4, 1 << 30, "kvm", 60.0, "nokaslr")
    config = pytester.parseconfig("--kernel-vm-cpus=5", "--kernel-vm-accel=tcg")
    assert vm_settings(config) == VmSettings(5, 1 << 30, "tcg", 60.0, "nokaslr")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("--kernel-vm-cpus=zero", "kernel_vm cpus (from --kernel-vm-cpus): 'zero' is not a number"),
        ("KTSTR_VM_MEMORY=lots", "kernel_vm memory (from $KTSTR_VM_MEMORY): not a size: 'lots'"),
        ("ktstr_vm_accel=fast", "kernel_vm accel (from ktstr_vm_accel): 'fast' is not one of"),
        ("--kernel-vm-timeout=-1", "kernel_vm timeout (from --kernel-vm-timeout): '-1' is not a"),
        (
            "--kernel-vm-memory=100K",
            "kernel_vm memory (from --kernel-vm-memory): '100K': guest memory is a positive"
            " whole number of MiB",
        ),
    ],
)
def test_bad_settings_are_usage_errors_at_startup(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, message: str
) -> None:
    pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    args = []
    if where.startswith("--"):
        args.append(where)
    elif where.startswith("KTSTR_"):
        monkeypatch.setenv(*where.split("=", 1))
    else:
        pytester.makeini("[pytest]\n" + where.replace("=", " = ", 1) + "\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ktstr: {message}" in result.stderr.str()


ACCEL = """
import os


def test_accel(kernel_vm):
    with open(os.environ["ACCEL"], "a") as f:
        f.write(kernel_vm.accel + "\\n")
"""


@pytest.mark.real_kernel
@pytest.mark.parametrize("workers", [None, "2"])
def test_kvm_found_unusable_is_one_summary_line_not_a_warning(
    pytester: pytest.Pytester,
    debian_kernel: DebianKernel,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
    workers: str | None,
) -> None:
    """``auto`` probes KVM; falling back to TCG is said once, at the end, by the plugin: not a
    pytest warning pointing into the plugin's code. Where KVM works there is nothing to say."""
    accel = pytester.path / "accel"
    monkeypatch.setenv("ACCEL", str(accel))
    pytester.makepyfile(test_accel=ACCEL)
    result = run(
        pytester,
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel={debian_kernel.release}",
        "--kernel-vm-accel=auto",
        f"--kernel-vm-timeout={BOOT_TIMEOUT}",
        *(["-n", workers] if workers else []),
    )
    result.assert_outcomes(passed=1)
    assert "warnings summary" not in result.stdout.str()
    assert "GuestWarning" not in result.stdout.str()
    said = [line for line in result.outlines if "KVM unusable" in line]
    if accel.read_text().split() == ["kvm"]:
        assert said == []
    else:
        assert accel.read_text().split() == ["tcg"]
        assert len(said) == 1, said
        assert said[0].startswith("ktstr: KVM unusable (")
        assert said[0].endswith("); guests run under TCG, much slower")
        # In the terminal summary, after the tests ran: below the per-kernel tally.
        assert result.outlines.index(said[0]) > next(
            i for i, line in enumerate(result.outlines) if line.startswith("ktstr: kernel ")
        )

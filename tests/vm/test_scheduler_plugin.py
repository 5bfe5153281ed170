"""The scheduler harness as users run it (pytester, real guests under TCG): ktstr_vm(scheduler=)
and kernel_vm_factory.boot(scheduler=) on Debian sid's sched_ext kernel; a scheduler that dies
while its test passes fails that test in the kernel's words; on Debian 12's 6.1, which has no
sched_ext, the same tests skip naming CONFIG_SCHED_CLASS_EXT without booting; with both kernels
and -n 2, each test runs once per kernel."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import junit, run

pytestmark = pytest.mark.real_kernel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/test_scx.py"
VM_OPTIONS = ("--kernel-vm-accel=tcg", "--kernel-vm-timeout=900", "-p", "no:randomly")

TESTS = """
import os

import pytest

SCHEDULER = os.environ["SCX"] + "/scx_simple"


@pytest.mark.ktstr_vm(scheduler=SCHEDULER, programs=["stress-ng"], cpus=2)
def test_under_scx_simple(kernel_vm):
    assert kernel_vm.scheduler.name == "simple"
    assert kernel_vm.get("/sys/kernel/sched_ext/root/ops") == b"simple\\n"
    kernel_vm.run("stress-ng --cpu 2 -t 2 >/dev/null 2>&1", check=True, timeout=300)


@pytest.mark.ktstr_vm(scheduler=SCHEDULER, cpus=1)
def test_whose_scheduler_dies(kernel_vm):
    kernel_vm.run(f"kill -KILL {kernel_vm.scheduler.pid}", check=True)  # its user part dies


def test_factory_boots_a_scheduler(kernel_vm_factory):
    vm = kernel_vm_factory.boot(scheduler=SCHEDULER, scheduler_args=["-f"], cpus=1)
    assert vm.scheduler.alive and vm.scheduler.args == ["-f"]
"""


SHARED = """

def test_starts_a_scheduler_in_the_shared_guest(kernel_vm):
    assert kernel_vm.start_scheduler(SCHEDULER).name == "simple"


def test_the_shared_guest_is_back_on_the_fair_class(kernel_vm):
    assert kernel_vm.get("/sys/kernel/sched_ext/state") == b"disabled\\n"
    assert kernel_vm.scheduler.stopped  # stopped by the plugin after the test that started it
"""


def _qemu_recorder(root: Path) -> Path:
    """A qemu-system-x86_64 first on PATH that records each start, then runs the real one."""
    real = shutil.which("qemu-system-x86_64")
    assert real is not None
    folder = root / "bin"
    folder.mkdir()
    log = root / "qemu-starts"
    wrapper = folder / "qemu-system-x86_64"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return log


def _image_args(sid: DebianKernel, old: DebianKernel) -> tuple[str, str]:
    return f"--kernel=sid={sid.image}", f"--kernel=old={old.image}"


def test_scheduler_tests_on_a_sched_ext_kernel(
    pytester: pytest.Pytester,
    sid_kernel: DebianKernel,
    scx_schedulers: Path,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCX", str(scx_schedulers))
    monkeypatch.setenv("PATH", f"{scx_schedulers}{os.pathsep}{os.environ['PATH']}")
    pytester.makepyfile(test_scx=TESTS + SHARED)
    shutil.copy(EXAMPLE, pytester.path / "test_scx_example.py")  # finds scx_simple on PATH
    kernel = (f"--kernel-sysroot={sid_kernel.sysroot}", f"--kernel={sid_kernel.release}")
    result = run(pytester, *kernel, *VM_OPTIONS)
    outcomes = junit(pytester).outcomes()
    assert outcomes == {
        "test_scx.py::test_under_scx_simple[ktstr_vm]": "passed",
        "test_scx.py::test_whose_scheduler_dies[ktstr_vm]": "failed",
        "test_scx.py::test_factory_boots_a_scheduler": "passed",
        "test_scx.py::test_starts_a_scheduler_in_the_shared_guest": "passed",
        "test_scx.py::test_the_shared_guest_is_back_on_the_fair_class": "passed",
        "test_scx_example.py::test_the_scheduler_holds_and_every_cpu_runs_its_tasks[ktstr_vm]": (
            "passed"
        ),
    }, result.stdout.str()
    failure = junit(pytester).cases["test_scx.py::test_whose_scheduler_dies[ktstr_vm]"]
    text = result.stdout.str()
    assert "sched_ext scheduler " in text and "('simple') is no longer attached:" in text
    assert "unregistered from user space" in text  # the kernel's words for what happened
    assert 'sched_ext: BPF scheduler "simple" disabled (unregistered from user space)' in text
    assert failure.outcome == "failed"


def test_without_sched_ext_they_skip_unbooted_and_run_once_per_kernel(
    pytester: pytest.Pytester,
    sid_kernel: DebianKernel,
    debian_kernel: DebianKernel,
    scx_schedulers: Path,
    guest_tools: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCX", str(scx_schedulers))
    starts = _qemu_recorder(pytester.path)
    monkeypatch.setenv("PATH", f"{pytester.path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    pytester.makepyfile(test_scx=TESTS.replace("def test_whose_scheduler_dies", "def _unused"))
    run(pytester, "-rs", "-n", "2", *_image_args(sid_kernel, debian_kernel), *VM_OPTIONS)
    cases = junit(pytester).cases
    assert {k: c.outcome for k, c in cases.items()} == {
        "test_scx.py::test_under_scx_simple[ktstr_vm-sid]": "passed",
        "test_scx.py::test_under_scx_simple[ktstr_vm-old]": "skipped",
        "test_scx.py::test_factory_boots_a_scheduler[sid]": "passed",
        "test_scx.py::test_factory_boots_a_scheduler[old]": "skipped",
    }
    assert not junit(pytester).duplicates
    for name in ("test_under_scx_simple[ktstr_vm-old]", "test_factory_boots_a_scheduler[old]"):
        message = cases[f"test_scx.py::{name}"].message
        assert "lacks CONFIG_SCHED_CLASS_EXT" in message, message
        assert debian_kernel.release in message
    assert len(starts.read_text().split()) == 2  # the sid guests only: the skips booted none

"""programs= in a real guest (Debian's 6.1 cloud kernel under TCG): stress-ng, Debian's bpftool and
programs built here that find their library through DT_RPATH and DT_RUNPATH ($ORIGIN) run in a
busybox initramfs; the guest's own loader resolves every library where the host's does; a put()
of a program whose libraries the guest lacks says so."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest
from pytest_ktstr_vmlinux.vm.errors import GuestProgramError
from pytest_ktstr_vmlinux.vm.layout import MiB
from tests.helpers.kernels import DebianKernel
from tests.helpers.programs import GREETING, build_greeter

pytestmark = pytest.mark.real_kernel

STRESS_NG = Path("/usr/bin/stress-ng")
BPFTOOL = Path("/usr/sbin/bpftool")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("programs")
    return {
        "rpath": build_greeter(root / "rpath", dtags="--disable-new-dtags"),
        "runpath": build_greeter(root / "runpath", dtags="--enable-new-dtags"),
        "unpacked": build_greeter(root / "unpacked"),
    }


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel,
    guest_tools: None,
    built: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GuestVM]:
    for program in (STRESS_NG, BPFTOOL):
        if not program.exists():
            pytest.fail(f"needs {program}: apt-get install stress-ng bpftool", pytrace=False)
    vm = boot_guest(
        debian_kernel.image,
        store=MemoryStore(),
        memory=384 * MiB,
        accel="tcg",
        timeout=900,
        programs=["stress-ng", str(BPFTOOL), str(built["rpath"]), str(built["runpath"])],
        log_dir=tmp_path_factory.mktemp("programs-guest"),
    )
    with vm:
        yield vm


def test_stress_ng_runs_by_name(guest: GuestVM) -> None:
    result = guest.run("stress-ng --cpu 2 --cpu-ops 200 --metrics-brief 2>&1", timeout=600)
    assert result.returncode == 0, result.stdout.decode()
    assert re.search(rb"successful run completed", result.stdout)
    assert guest.programs["stress-ng"] == str(STRESS_NG)


def test_debians_bpftool_runs(guest: GuestVM) -> None:
    host = subprocess.run([str(BPFTOOL), "version"], capture_output=True, text=True).stdout
    result = guest.run(f"{BPFTOOL} version", check=True)
    assert result.stdout.decode().splitlines()[0] == host.splitlines()[0]  # same build
    assert guest.run("bpftool prog show", check=True).returncode == 0  # the BPF syscall works


@pytest.mark.parametrize("how", ["rpath", "runpath"])
def test_a_library_found_through_origin(guest: GuestVM, built: dict[str, Path], how: str) -> None:
    program = built[how]
    assert guest.run(str(program), check=True).stdout == GREETING
    assert guest.run("hello", check=True).stdout == GREETING  # linked in /usr/local/bin


def test_the_guests_loader_finds_what_the_hosts_finds(guest: GuestVM) -> None:
    """The guest's own ld.so lists where it loads each library from: the host's ldd paths."""
    host = subprocess.run(["ldd", str(STRESS_NG)], capture_output=True, text=True, check=True)
    expected = dict(re.findall(r"^\s+(\S+) => (\S+) \(0x", host.stdout, re.MULTILINE))
    listed = guest.run(f"LD_TRACE_LOADED_OBJECTS=1 {STRESS_NG}", check=True).stdout.decode()
    seen = dict(re.findall(r"^\s+(\S+) => (\S+) \(0x", listed, re.MULTILINE))
    assert seen == expected


def test_put_of_a_program_says_what_the_guest_lacks(guest: GuestVM, built: dict[str, Path]) -> None:
    program = built["unpacked"]
    library = program.parent.parent / "lib/libgreet.so.1"
    with pytest.raises(GuestProgramError) as e:
        guest.put("/usr/local/bin/unpacked", program)
    message = str(e.value)
    assert message.startswith("put /usr/local/bin/unpacked: written, but it cannot run")
    assert f"the guest lacks {library} (libgreet.so.1)" in message
    assert f"boot the guest with programs=[{str(program)!r}]" in message
    guest.put(str(library), library)  # its library at the path the program looks in
    guest.put(str(program), program)  # and now it runs
    assert guest.run(str(program), check=True).stdout == GREETING

"""A real guest: Debian's 6.1 cloud kernel booted under TCG (as on CI) with the library alone.

One guest serves the whole module (a boot takes a while under TCG); no test here stops it, the
ones that must (a timeout, a panic) are in test_vm_plugin.py, through the fixtures.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from pytest_ktstr_vmlinux.vm import (
    GuestCommandError,
    GuestError,
    GuestVM,
    RamRegion,
    boot_guest,
)
from pytest_ktstr_vmlinux.vm.layout import WINDOW_SIZE, MiB
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

# Generous: CI boots under TCG on two busy cores.
BOOT_TIMEOUT = 900.0
CPUS = 2
MEMORY = 384 * MiB
KERNEL_IMAGE_BASE = 0xFFFFFFFF80000000  # __START_KERNEL_map: with nokaslr, va - this = phys


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    # No store=: an image path boots with a MemoryStore of its own.
    vm = boot_guest(
        debian_kernel.image,
        cpus=CPUS,
        memory=MEMORY,
        cmdline="nokaslr",
        accel="tcg",
        timeout=BOOT_TIMEOUT,
        log_dir=tmp_path_factory.mktemp("guest"),
    )
    with vm:
        yield vm


def test_the_guest_runs_the_kernel_under_test(guest: GuestVM, debian_kernel: DebianKernel) -> None:
    result = guest.run("uname -r")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"{debian_kernel.release}\n".encode(),
        b"",
    )
    assert guest.run("nproc").stdout == f"{CPUS}\n".encode()
    assert f"Linux version {debian_kernel.release}" in guest.console
    assert guest.console_path is not None
    assert guest.console_path.read_text(errors="replace").startswith(guest.console[:100])


@pytest.mark.parametrize("status", [0, 1, 255])
def test_exit_status_comes_back(guest: GuestVM, status: int) -> None:
    assert guest.run(f"echo out; echo err >&2; exit {status}").returncode == status


def test_a_command_sees_a_plain_shell_not_the_agent(guest: GuestVM) -> None:
    result = guest.run('echo "[$#][$1][$R][$WIN]"; echo /proc/sys/kernel/osrel*; type towin')
    assert result.stdout.split(b"\n")[:2] == [b"[0][][][]", b"/proc/sys/kernel/osrelease"]
    assert result.returncode != 0  # the agent's functions are gone too
    assert guest.run("exec echo replaced").stdout == b"replaced\n"
    assert guest.run("cd /tmp; pwd").stdout == b"/tmp\n"
    assert guest.run("pwd").stdout == b"/\n"  # each command starts afresh


def test_stdout_and_stderr_come_back_apart_and_binary(guest: GuestVM) -> None:
    result = guest.run(r"printf 'a\000b\377'; printf 'E\001' >&2")
    assert (result.stdout, result.stderr) == (b"a\0b\xff", b"E\x01")


def test_a_mebibyte_of_binary_output_round_trips(guest: GuestVM) -> None:
    result = guest.run("head -c 1048576 /dev/urandom | tee /tmp/random")
    assert len(result.stdout) == 1 << 20
    assert guest.get("/tmp/random") == result.stdout
    assert guest.run("sha256sum /tmp/random").stdout.split()[0].decode() == _sha256(result.stdout)


def test_output_larger_than_the_window_round_trips(guest: GuestVM) -> None:
    size = WINDOW_SIZE + 3 * MiB + 5
    result = guest.run(f"head -c {size} /dev/urandom | tee /tmp/big; echo done >&2")
    assert len(result.stdout) == size and result.stderr == b"done\n"
    assert guest.run("sha256sum /tmp/big").stdout.split()[0].decode() == _sha256(result.stdout)


def test_a_long_multiline_command_goes_through_the_window(guest: GuestVM) -> None:
    script = "x=0\n" + "x=$((x + 1))\n" * 500 + 'echo "$x"; printf "\\t%s\\n" "é"'
    assert guest.run(script).stdout == "500\n\té\n".encode()


def test_a_script_through_the_window_runs_whatever_its_request_number(guest: GuestVM) -> None:
    """Every 64th request, the agent removes the files of earlier ones: never the script of
    this one."""
    while (guest._agent._seq + 1) % 64:
        guest.run("true")
    script = "echo sixty-four" + " " * 400
    assert guest.run(script).stdout == b"sixty-four\n"
    assert guest.run(script).stdout == b"sixty-four\n"


def test_put_and_get_round_trip(guest: GuestVM, tmp_path: Path) -> None:
    data = os.urandom(WINDOW_SIZE + 1234) + b"\0\n\r"  # more than one window's worth
    guest.put("/tmp/new/dir/blob", data)
    assert guest.get("/tmp/new/dir/blob") == data
    assert guest.run("stat -c %a /tmp/new/dir/blob").stdout == b"644\n"
    host = tmp_path / "tool"
    host.write_bytes(b"#!/bin/sh\necho from the host\n")
    host.chmod(0o755)
    guest.put("/usr/local/bin/tool", host)
    assert guest.run("tool").stdout == b"from the host\n"
    odd = "/tmp/a dir/\u00e9t\u00e9 \t file"  # not a plain path: it goes through the window
    guest.put(odd, b"odd path")
    assert guest.get(odd) == b"odd path"
    assert guest.run("cat /tmp/a\\ dir/*").stdout == b"odd path"
    guest.put("/tmp/empty", b"", mode=0o600)
    assert guest.get("/tmp/empty") == b""
    assert guest.run("stat -c %a /tmp/empty").stdout == b"600\n"


def test_get_reads_proc_files_and_says_what_is_missing(guest: GuestVM) -> None:
    assert guest.get("/proc/cmdline").decode().split()[-1] == "nokaslr"
    with pytest.raises(GuestError, match="get /no/such: /no/such: no such file") as e:
        guest.get("/no/such")
    assert f"console {guest.console_path}, last 30 lines:" in str(e.value)
    with pytest.raises(GuestError, match="/tmp: not a regular file"):
        guest.get("/tmp")


def test_check_raises_with_command_status_and_output(guest: GuestVM) -> None:
    with pytest.raises(GuestCommandError) as e:
        guest.run("echo to stdout; echo to stderr >&2; exit 3", check=True)
    message = str(e.value)
    assert message.startswith("guest command `echo to stdout; echo to stderr >&2; exit 3`")
    assert "exited with status 3" in message
    assert "| to stdout" in message and "| to stderr" in message
    assert f"console {guest.console_path}, last 30 lines:" in message
    assert e.value.result.returncode == 3


def test_background_work_keeps_running_between_commands(guest: GuestVM) -> None:
    pid = guest.run("sleep 1000 & echo $!").stdout.decode().strip()
    assert guest.run(f"kill -0 {pid}").returncode == 0
    assert guest.run(f"kill {pid}; wait; true").returncode == 0


def test_memory_is_the_guests_ram(guest: GuestVM) -> None:
    assert len(guest.memory) == MEMORY == len(guest.memory.buffer)
    assert guest.memory.regions == (RamRegion(0, MEMORY, 0),)
    meminfo = guest.get("/proc/meminfo").decode()
    total = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo)[1]) * 1024  # type: ignore[index]
    # The kernel keeps some for itself, and the transfer window is not its to use.
    assert MEMORY * 3 // 4 < total <= MEMORY - WINDOW_SIZE


def test_linux_banner_is_in_guest_ram_at_its_physical_address(
    guest: GuestVM, debian_kernel: DebianKernel
) -> None:
    address, banner = _banner(debian_kernel.vmlinux)
    seen = guest.memory.read(address - KERNEL_IMAGE_BASE, len(banner))
    assert bytes(seen) == banner
    assert banner.startswith(f"Linux version {debian_kernel.release} ".encode())


def test_qmp_pauses_and_resumes_the_guest(guest: GuestVM) -> None:
    assert guest.qmp.status() == "running"
    guest.qmp.pause()
    assert guest.qmp.status() == "paused"
    assert "RIP=" in guest.qmp.hmp("info registers")
    guest.qmp.resume()
    assert guest.qmp.status() == "running"
    assert guest.run("echo alive").stdout == b"alive\n"


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _banner(vmlinux: Path) -> tuple[int, bytes]:
    """linux_banner's address (from nm) and its bytes in the vmlinux file (via its section)."""
    nm = subprocess.run(["nm", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    address = int(next(ln.split()[0] for ln in nm.splitlines() if ln.endswith(" linux_banner")), 16)
    with open(vmlinux, "rb") as f:
        elf = ELFFile(f)
        section = next(
            s
            for s in elf.iter_sections()
            if s["sh_addr"] <= address < s["sh_addr"] + s["sh_size"]
            and s["sh_type"] != "SHT_NOBITS"
        )
        f.seek(section["sh_offset"] + address - section["sh_addr"])
        raw = f.read(512)
    return address, raw[: raw.index(b"\0")]

"""QEMU itself: which binary and machine, the command line of a guest, and a process that never
outlives the one that started it.

The guest gets two serial ports and a monitor, all socketpairs QEMU inherits: ttyS0 (the
console, which the host reads and caps), ttyS1 (the agent's channel) and the QMP monitor, so
nothing listens on a path another process could reach, and QEMU's exit shows on the host as
end-of-file on each.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..children import popen_tied
from .errors import GuestUnavailableError
from .topology import Topology

MiB = 1 << 20


@dataclass(frozen=True)
class Target:
    """How QEMU emulates one guest architecture."""

    binary: str
    package: str  # the Debian package that has the binary
    machine: str
    console: str  # the kernel's name for the first serial port


TARGETS = {
    "x86_64": Target("qemu-system-x86_64", "qemu-system-x86", "q35", "ttyS0"),
    "arm64": Target("qemu-system-aarch64", "qemu-system-arm", "virt", "ttyAMA0"),
}
_HOST_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def target(arch: str | None) -> Target:
    found = TARGETS.get(arch or "")
    if found is None:
        raise GuestUnavailableError(
            f"no guest support for arch {arch or 'unknown'}: guests boot x86_64"
            + " (and arm64) kernels",
            (),
        )
    return found


def host_arch() -> str:
    return _HOST_ARCH.get(platform.machine(), platform.machine())


def find_qemu(arch: str) -> Path:
    """The QEMU binary for ``arch`` on PATH; GuestUnavailableError naming its package."""
    t = target(arch)
    found = shutil.which(t.binary)
    if found is None:
        raise GuestUnavailableError(
            f"{t.binary} is not on PATH: booting {arch} guests needs QEMU; install {t.package}",
            (t.package,),
        )
    return Path(found)


@dataclass(frozen=True)
class GuestLine:
    """Everything a guest's QEMU command line is made of."""

    qemu: Path
    arch: str
    accel: str  # kvm or tcg
    cpus: int
    memory: int  # bytes, a whole number of MiB
    image: Path
    initrd: Path
    cmdline: str
    console_fd: int  # ttyS0's end of a socketpair
    ram_fd: int  # the guest RAM file (memory.py)
    channel_fd: int  # ttyS1's end of a socketpair
    qmp_fd: int  # the monitor's end of a socketpair
    topology: Topology | None = None  # None: -smp cpus
    ram_nodes: tuple[tuple[int, int], ...] = ()  # (fd, size) per NUMA node, when several

    def _tcg_x86_cpu(self) -> list[str]:
        """QEMU's default qemu64 says AuthenticAMD, and Linux reads an AMD CPU's threads from
        the topoext leaf, which TCG does not give it: SMT siblings would show as cores. With
        Intel's vendor string Linux reads CPUID leaf 0xB, where QEMU puts the threads."""
        if self.topology is not None and self.topology.threads > 1:
            return ["-cpu", "qemu64,vendor=GenuineIntel"]
        return []

    @property
    def smp(self) -> Topology:
        return self.topology or Topology.choose(self.cpus)

    def argv(self) -> list[str]:
        t = target(self.arch)
        cpu = (
            ["-cpu", "host"]
            if self.accel == "kvm"
            else (["-cpu", "max"] if t.machine == "virt" else self._tcg_x86_cpu())
        )
        return [
            str(self.qemu),
            "-accel", tcg_single(self.accel),
            *cpu,
            *memory_args(t.machine, self.memory, self.ram_fd, self.smp, self.ram_nodes),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-chardev", f"socket,id=console,fd={self.console_fd}",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=channel,fd={self.channel_fd}",
            "-serial", "chardev:channel",
            "-chardev", f"socket,id=qmp,fd={self.qmp_fd}",
            "-mon", "chardev=qmp,mode=control",
            "-kernel", str(self.image),
            "-initrd", str(self.initrd),
            "-append", self.cmdline,
        ]  # fmt: skip


def tcg_single(accel: str) -> str:
    """TCG with every vCPU on one host thread. Multi-threaded TCG lets one vCPU run code
    another is patching (text_poke_bp: int3, then the new bytes, then IPIs to sync every CPU)
    from a translation made before the patch ended: the kernel then meets an int3 nobody is
    patching and dies ("Oops: int3" in do_pick_task_scx when sched_ext flips its static keys:
    2 of 10 boots enabling six schedulers under load, 0 of 5 with one thread, QEMU 7.2)."""
    return "tcg,thread=single" if accel == "tcg" else accel


def memory_args(
    machine: str,
    memory: int,
    ram_fd: int,
    topology: Topology | None = None,
    nodes: tuple[tuple[int, int], ...] = (),
) -> list[str]:
    """``machine`` with its RAM in the inherited file ``ram_fd``, shared with the host, and its
    CPUs (``-smp``); with NUMA nodes, one backend per node file in ``nodes``."""
    mem = memory // MiB
    smp = topology.smp() if topology is not None else []
    if topology is None or topology.numa_nodes == 1:
        backend = _backend("ram", mem, ram_fd)
        line = ["-machine", f"{machine},memory-backend=ram", "-object", backend]
        return [*line, "-m", f"{mem}M", *smp]
    args = ["-machine", machine]
    for node, (fd, size) in enumerate(nodes):
        args += ["-object", _backend(f"ram{node}", size // MiB, fd)]
    names = [f"ram{node}" for node in range(len(nodes))]
    return [*args, "-m", f"{mem}M", *smp, *topology.numa(names)]


def _backend(name: str, mib: int, fd: int) -> str:
    return f"memory-backend-file,id={name},size={mib}M,share=on,mem-path=/proc/self/fd/{fd}"


def spawn(
    argv: Sequence[str],
    *,
    pass_fds: Sequence[int] = (),
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start QEMU in a process group of its own that dies with this process."""
    return popen_tied(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, pass_fds=tuple(pass_fds)
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()

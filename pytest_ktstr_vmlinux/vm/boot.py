"""Booting a guest: ``boot_guest``, the kernel under test in QEMU with an initramfs of busybox,
the agent, the test's files and programs, its RAM a file the host maps, until its agent answers.

What a boot needs is checked before QEMU starts (a bootable image, QEMU, a static busybox with
the applets the agent runs, programs that can run in the guest), so a missing piece is a clear
error naming it, not a guest that never answers; a guest that panics, oopses or misses its
deadline is a GuestBootError quoting the console.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..store.memory import MemoryStore
from .accel import choose_accel
from .agent import check_applets
from .channel import Channel, ChannelClosed, ChannelTimeout
from .console import Console
from .errors import (
    GuestBootError,
    GuestError,
)
from .initramfs import (
    BUSYBOX_PACKAGE,
    FileSource,
    busybox_applets,
    find_busybox,
    guest_files,
    initramfs_path,
    merge_files,
)
from .layout import WINDOW_SIZE, kernel_footprint, place_window, ram_regions
from .memory import GuestMemory
from .programs import pack_programs
from .qemu import GuestLine, MiB, find_qemu, spawn, target
from .requests import AgentError
from .scheduler import start_at_boot
from .topology import Topology

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..kernel.resolve import Kernel
    from ..store.api import Store

from .guest import (
    DEFAULT_BOOT_TIMEOUT,
    DEFAULT_CPUS,
    DEFAULT_MEMORY,
    GuestVM,
    _trouble,
)


def boot_guest(
    kernel: Kernel | str | os.PathLike[str],
    *,
    store: Store | None = None,
    arch: str | None = None,
    cpus: int | None = None,
    memory: int = DEFAULT_MEMORY,
    cmdline: str = "",
    files: Mapping[str, FileSource] | None = None,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    accel: str = "auto",
    log_dir: str | os.PathLike[str] | None = None,
    programs: Sequence[str | os.PathLike[str]] = (),
    scheduler: str | os.PathLike[str] | None = None,
    scheduler_args: Sequence[str] = (),
    sockets: int | None = None,
    cores: int | None = None,
    threads: int | None = None,
    numa_nodes: int | None = None,
) -> GuestVM:
    """Boot ``kernel`` (a Kernel with an image, or an image path) and wait for its agent::

        with boot_guest(resolve_kernel("/boot/vmlinuz-6.12.38+deb13-cloud-amd64"), cpus=4) as vm:
            print(vm.run("uname -r", check=True).stdout.decode())
            print(vm.kernel.symbols["init_task"])  # the live kernel, read from the host

    ``memory`` in bytes (a whole number of MiB; 512 MiB by default), ``cmdline`` appended to the
    kernel's, ``files`` added to the initramfs (guest path -> bytes or host path), ``timeout``
    seconds for the boot (300 by default).
    ``programs`` (host programs by path or name) are packed with their loader and libraries;
    ``scheduler`` too, then started with ``scheduler_args`` once the guest is up. ``cpus`` (2
    by default), or ``sockets`` x ``cores`` x ``threads``, over ``numa_nodes`` nodes. ``accel``
    is ``"kvm"``, ``"tcg"`` or ``"auto"`` (KVM when it works here). ``log_dir`` keeps the
    console and QEMU's messages as files there (console.log, qemu.log). ``store`` keeps the
    initramfs and the KVM probe's verdict: by default the store ``kernel`` was resolved with,
    or a MemoryStore for an image path.

    What a boot needs is checked before QEMU starts: GuestUnavailableError names a missing QEMU
    or busybox, GuestProgramError a program that cannot run in the guest; GuestBootError quotes
    the console of a guest that panicked or missed its deadline.
    """
    image, arch = _image(kernel, arch)
    if store is None:
        store = MemoryStore() if isinstance(kernel, (str, os.PathLike)) else kernel.store
    topology = Topology.choose(
        cpus, sockets=sockets, cores=cores, threads=threads, numa_nodes=numa_nodes,
        default_cpus=DEFAULT_CPUS,
    )  # fmt: skip
    if memory <= 0 or memory % MiB:
        raise ValueError(f"memory={memory}: a positive whole number of MiB, in bytes")
    if isinstance(programs, (str, os.PathLike)):
        raise ValueError(f"programs={programs!r}: a list of programs, not one")
    if arch != "x86_64":
        raise GuestError(f"{image}: booting {arch} guests is not supported yet; x86_64 only")
    qemu = find_qemu(arch)
    busybox = find_busybox(arch)
    applets = busybox_applets(busybox)
    check_applets(busybox, applets, BUSYBOX_PACKAGE)
    wanted = [*programs, *([scheduler] if scheduler is not None else [])]
    packed = pack_programs(wanted, arch=arch, applets=applets)
    added = merge_files(packed.files, guest_files(files))
    initrd = initramfs_path(store, busybox, added)
    regions = ram_regions(target(arch).machine, memory)
    with open(image, "rb") as f:
        _, kernel_end = kernel_footprint(f.read(4096), str(image))
    window = place_window(regions, kernel_end, initrd.stat().st_size)
    chosen = choose_accel(accel, arch=arch, qemu=qemu, image=image, store=store)
    # Without log_dir nothing is left on disk: the console stays in memory, and QEMU's own
    # messages go to an unnamed file.
    logs = Path(log_dir) if log_dir is not None else None
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    console = Console(logs / "console.log" if logs is not None else None)
    qemu_log = open(logs / "qemu.log", "w+b") if logs is not None else tempfile.TemporaryFile()  # noqa: SIM115
    nodes = topology.node_sizes(memory) if topology.numa_nodes > 1 else []
    ram = GuestMemory.create(regions, node_sizes=nodes)
    host_console, guest_console = socket.socketpair()
    host_channel, guest_channel = socket.socketpair()
    host_qmp, guest_qmp = socket.socketpair()
    line = GuestLine(
        qemu=qemu,
        arch=arch,
        accel=chosen,
        cpus=topology.cpus,
        memory=memory,
        image=image,
        initrd=initrd,
        cmdline=" ".join(
            part
            for part in (
                f"console={target(arch).console},115200 panic=-1",
                # Under TCG on a busy host the IO-APIC timer check can miss its window and
                # panic ("IO-APIC + timer doesn't work!"); QEMU's timer is known to be wired.
                "no_timer_check" if chosen == "tcg" else "",
                f"memmap={WINDOW_SIZE // MiB}M${window:#x} ktstr.window={window:#x},{WINDOW_SIZE}",
                cmdline.strip(),
            )
            if part
        ),
        console_fd=guest_console.fileno(),
        ram_fd=ram.fd,
        channel_fd=guest_channel.fileno(),
        qmp_fd=guest_qmp.fileno(),
        topology=topology,
        ram_nodes=tuple(zip(ram.fds, nodes, strict=False)),
    )
    guest_ends = (guest_console, guest_channel, guest_qmp)
    process = spawn(
        line.argv(),
        pass_fds=(*ram.fds, *(end.fileno() for end in guest_ends)),
        stdout=qemu_log,
        stderr=qemu_log,
    )
    for end in guest_ends:
        end.close()
    console.attach(host_console)
    vm = GuestVM(
        process=process,
        line=line,
        memory=ram,
        channel=Channel(host_channel),
        console=console,
        qmp_socket=host_qmp,
        window=window,
        log_dir=logs,
        qemu_log=qemu_log,
        vmlinux=None if isinstance(kernel, (str, os.PathLike)) else kernel.vmlinux,
        store=store,
    )
    vm.programs = packed.paths
    _wait_ready(vm, timeout)
    if scheduler is not None:
        start_at_boot(vm, packed.paths[os.fspath(scheduler)], list(scheduler_args))
    return vm


def _wait_ready(vm: GuestVM, timeout: float) -> None:
    started = time.monotonic()
    try:
        vm._agent.wait_ready(started + timeout)
        return
    except ChannelTimeout:
        reason, how = "deadline", f"the guest did not reach its agent in {timeout:g} s"
    except (ChannelClosed, AgentError) as e:
        reason, how = "exited", f"QEMU exited before the agent started ({e})"
    with contextlib.suppress(subprocess.TimeoutExpired):
        vm._process.wait(1)
    if vm._process.poll() is not None:
        vm._console.wait_closed(5)
    trouble = vm._console.trouble()
    if trouble is not None:
        reason, how = trouble[0], f"{_trouble(trouble)}, before its agent started"
    vm._qemu_log.seek(0)
    qemu_said = vm._qemu_log.read(1 << 16).decode(errors="replace").strip()
    vm._stop(how)
    detail = f"\nQEMU said: {qemu_said}" if qemu_said and reason == "exited" else ""
    raise GuestBootError(
        f"boot of {vm.line.image} ({vm.accel}, {vm.cpus} CPUs, {vm.line.memory // MiB} MiB,"
        f" cmdline {vm.cmdline!r}): {how}{detail}\n{vm._console.report()}",
        reason,
    )


def _image(kernel: Kernel | str | os.PathLike[str], arch: str | None) -> tuple[Path, str]:
    if isinstance(kernel, (str, os.PathLike)):
        image = Path(kernel)
        if arch is None:
            from ..formats.image import read_image_header

            arch = read_image_header(image).arch
        return image, arch or "unknown"
    if kernel.image is None:
        raise GuestError(kernel.missing_image_message())
    return kernel.image, arch or kernel.arch or "unknown"

"""A booted guest: the kernel under test in QEMU, with a command agent, its RAM visible to the
host and its monitor at hand.

``boot_guest`` puts together what the other modules make (initramfs, accel, RAM file, QEMU
command line) and waits for the agent's READY line; every failure after QEMU starts names the
console file and quotes its last lines.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .accel import choose_accel
from .channel import Agent, AgentError, Channel, ChannelClosed, ChannelTimeout, CommandTimeout
from .console import Console
from .errors import (
    GuestBootError,
    GuestCommandError,
    GuestError,
    GuestResult,
    GuestStoppedError,
    GuestTimeoutError,
)
from .initramfs import (
    FileSource,
    busybox_applets,
    find_busybox,
    guest_files,
    initramfs_path,
    merge_files,
)
from .layout import WINDOW_SIZE, kernel_footprint, place_window, ram_regions
from .memory import GuestMemory
from .programs import check_runnable, pack_programs
from .qemu import GuestLine, MiB, find_qemu, kill, spawn, target
from .qmp import GuestQMP
from .scheduler import DEFAULT_ATTACH_TIMEOUT, start_at_boot, start_scheduler
from .topology import Topology

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..kernel.resolve import Kernel
    from ..live.kernel import LiveKernel
    from ..store.api import Store
    from .scheduler import Scheduler

DEFAULT_CPUS = 2
DEFAULT_MEMORY = 512 * MiB
DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_COMMAND_TIMEOUT = 300.0


class GuestVM:
    """A running guest; made by ``boot_guest``. ``run``, ``put``, ``get`` talk to its agent;
    ``console``, ``memory`` and ``qmp`` look at it from the host; ``shutdown()`` (or leaving a
    ``with`` block) stops it, and a guest nobody stopped is killed when it is collected or the
    process exits."""

    # Set after construction (boot_guest, start_scheduler): the guest path of each program
    # packed at boot, and the sched_ext scheduler started last.
    programs: Mapping[str, str] = {}
    _scheduler: Scheduler | None = None

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        line: GuestLine,
        memory: GuestMemory,
        channel: Channel,
        qmp_socket: socket.socket,
        window: int,
        log_dir: Path,
        vmlinux: Path | None = None,
        store: Store | None = None,
    ) -> None:
        self.line = line
        self.cpus = line.cpus
        self.accel = line.accel
        self.cmdline = line.cmdline
        self.memory = memory
        self.log_dir = log_dir
        self.console_path = line.console
        self._console = Console(line.console)
        self._process = process
        self._channel = channel
        self._agent = Agent(channel, memory, window, WINDOW_SIZE)
        self._qmp_socket = qmp_socket
        self._qmp: GuestQMP | None = None
        self._stopped: str | None = None  # why, once stopped
        self._vmlinux, self._store = vmlinux, store
        self._live: LiveKernel | None = None
        self._finalizer = weakref.finalize(self, kill, process)

    # --- looking at it ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """QEMU's process id (its process group too)."""
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._stopped is None and self._process.poll() is None

    @property
    def console(self) -> str:
        """The guest's serial console so far (also in ``console_path``)."""
        return self._console.text()

    @property
    def qmp(self) -> GuestQMP:
        """QEMU's monitor (qemu.qmp), connected on first use."""
        if self._qmp is None:
            self._check_running("QMP")
            self._qmp = GuestQMP(self._qmp_socket)
        return self._qmp

    @property
    def kernel(self) -> LiveKernel:
        """The running kernel read from the host (live.LiveKernel), typed by its vmlinux's
        symbols, BTF and DWARF (built through the guest's store when first needed)."""
        self._check_running("kernel")
        if self._live is None:
            if self._vmlinux is None:
                raise GuestError(
                    f"{self.line.image}: reading the live kernel needs its vmlinux (symbols and"
                    " BTF): boot a Kernel that has one (its release, build tree or a -dbg"
                    " vmlinux), not a bare image path"
                )
            from ..formats.btf.queries import BTF
            from ..formats.dwarf.globaltypes import GlobalTypes
            from ..formats.symbols import KernelSymbols
            from ..live.kernel import LiveKernel

            vm, store = self._vmlinux, self._store
            symbols, btf = KernelSymbols.from_vmlinux(vm, store), BTF.from_path(vm, store)
            table = functools.partial(GlobalTypes.from_vmlinux, vm, store)
            self._live = LiveKernel.from_guest(self, symbols, btf, table)
        return self._live

    @property
    def scheduler(self) -> Scheduler | None:
        """The sched_ext scheduler started last (``scheduler=`` at boot, ``start_scheduler``):
        ``name``, ``state``, ``output``, ``alive``, ``stop()``; None before any."""
        return self._scheduler

    def start_scheduler(
        self,
        program: str | os.PathLike[str],
        args: Sequence[str] = (),
        *,
        timeout: float = DEFAULT_ATTACH_TIMEOUT,
    ) -> Scheduler:
        """Start the sched_ext scheduler ``program`` (packed at boot, a guest path, or a host
        program, which is copied in with its libraries first) with ``args``, and wait until
        sched_ext says it is attached; SchedulerError (kind, reason in the kernel's words)
        when it does not attach in ``timeout`` seconds."""
        self._scheduler = start_scheduler(self, os.fspath(program), list(args), timeout)
        return self._scheduler

    # --- the agent -------------------------------------------------------------------------

    def run(
        self, command: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT, check: bool = False
    ) -> GuestResult:
        """Run ``command`` with the guest's sh, as root; its status and output. ``check``:
        GuestCommandError when the status is not 0. Past ``timeout`` seconds the guest is
        killed: GuestTimeoutError with the output so far."""
        self._check_running(f"run {command!r}")
        try:
            out = self._agent.run(command, timeout)
        except CommandTimeout as e:
            partial = e.partial
            result = GuestResult(
                command,
                None,
                partial.stdout if partial else b"",
                partial.stderr if partial else b"",
            )
            self._stop(f"killed after `{command}` timed out")
            so_far = _quote_output(result) if partial else "  (the agent did not answer)"
            raise GuestTimeoutError(
                f"guest command `{command}` did not finish in {timeout:g} s; the guest was"
                f" killed. Output so far:\n{so_far}\n{self._console.report()}",
                result,
            ) from None
        except AgentError as e:
            raise GuestError(
                f"run {command!r}: the agent could not start it: {e}\n{self._console.report()}"
            ) from None
        except (ChannelClosed, ChannelTimeout) as e:
            raise self._lost(f"run {command!r}", e) from None
        result = GuestResult(command, out.returncode, out.stdout, out.stderr)
        if check and result.returncode != 0:
            raise GuestCommandError(
                f"guest command `{command}` exited with status {result.returncode}:\n"
                f"{_quote_output(result)}\n{self._console.report()}",
                result,
            )
        return result

    def put(
        self,
        guest_path: str,
        data: bytes | bytearray | memoryview | str | os.PathLike[str],
        *,
        mode: int | None = None,
        timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        """Write a guest file (directories made as needed): bytes, or a host file's contents
        (and, unless ``mode`` says otherwise, its permission bits; bytes get 0644)."""
        _check_guest_path(guest_path)
        if isinstance(data, (bytes, bytearray, memoryview)):
            payload, perm = memoryview(data).cast("B"), 0o644
        else:
            with open(data, "rb") as f:
                payload, perm = memoryview(f.read()), os.stat(f.fileno()).st_mode & 0o7777
        self._check_running(f"put {guest_path}")
        try:
            self._agent.put(guest_path, payload, perm if mode is None else mode, timeout)
        except AgentError as e:
            raise GuestError(f"put {guest_path}: {e}\n{self._console.report()}") from None
        except (ChannelClosed, ChannelTimeout) as e:
            raise self._lost(f"put {guest_path}", e) from None
        check_runnable(self, guest_path, payload, data)

    def get(self, guest_path: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> bytes:
        """A guest file's contents (files under /proc and /sys too)."""
        _check_guest_path(guest_path)
        self._check_running(f"get {guest_path}")
        try:
            return self._agent.get(guest_path, timeout)
        except AgentError as e:
            raise GuestError(f"get {guest_path}: {e}\n{self._console.report()}") from None
        except (ChannelClosed, ChannelTimeout) as e:
            raise self._lost(f"get {guest_path}", e) from None

    # --- stopping --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the guest (QEMU is killed) and let go of its RAM; safe to call twice."""
        self._stop("shut down")

    def __enter__(self) -> GuestVM:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _stop(self, why: str) -> None:
        if self._stopped is None:
            self._stopped = why
        if self._qmp is not None:
            self._qmp.close()
        self._finalizer()
        self._channel.close()
        self._qmp_socket.close()
        self.memory.close()

    def _check_running(self, what: str) -> None:
        if self._stopped is not None:
            raise GuestStoppedError(
                f"{what}: the guest is not running: {self._stopped}\n{self._console.report()}"
            )
        if self._process.poll() is not None:
            raise self._lost(what, ChannelClosed("QEMU exited"))

    def _lost(self, what: str, cause: Exception) -> GuestError:
        """The error for a guest that stopped answering: why, as far as the console says."""
        if isinstance(cause, ChannelTimeout):
            return GuestError(f"{what}: the agent did not answer in time\n{self._console.report()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        trouble = self._console.trouble()
        how = _trouble(trouble) if trouble else f"QEMU exited (status {self._process.returncode})"
        self._stop(how)
        return GuestStoppedError(f"{what}: {how}\n{self._console.report()}")


def boot_guest(
    kernel: Kernel | str | os.PathLike[str],
    *,
    store: Store,
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
    """Boot ``kernel`` (a Kernel with an image, or an image path) and wait for its agent.

    ``memory`` in bytes (a whole number of MiB), ``cmdline`` appended to the kernel's, ``files``
    added to the initramfs (guest path -> bytes or host path), ``timeout`` seconds for the boot.
    ``programs`` (host programs by path or name) are packed with their loader and libraries;
    ``scheduler`` too, then started with ``scheduler_args`` once the guest is up. ``cpus`` (2
    by default), or ``sockets`` x ``cores`` x ``threads``, over ``numa_nodes`` nodes.
    """
    image, arch = _image(kernel, arch)
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
    wanted = [*programs, *([scheduler] if scheduler is not None else [])]
    packed = pack_programs(wanted, arch=arch, applets=busybox_applets(busybox))
    added = merge_files(packed.files, guest_files(files))
    initrd = initramfs_path(store, busybox, added)
    regions = ram_regions(target(arch).machine, memory)
    with open(image, "rb") as f:
        _, kernel_end = kernel_footprint(f.read(4096), str(image))
    window = place_window(regions, kernel_end, initrd.stat().st_size)
    chosen = choose_accel(accel, arch=arch, qemu=qemu, image=image, store=store)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="ktstr-vm-"))
    logs.mkdir(parents=True, exist_ok=True)
    console = logs / "console.log"
    console.write_bytes(b"")
    nodes = topology.node_sizes(memory) if topology.numa_nodes > 1 else []
    ram = GuestMemory.create(regions, node_sizes=nodes)
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
        console=console,
        ram_fd=ram.fd,
        channel_fd=guest_channel.fileno(),
        qmp_fd=guest_qmp.fileno(),
        topology=topology,
        ram_nodes=tuple(zip(ram.fds, nodes, strict=False)),
    )
    with open(logs / "qemu.log", "wb") as qemu_log:
        process = spawn(
            line.argv(),
            pass_fds=(*ram.fds, guest_channel.fileno(), guest_qmp.fileno()),
            stdout=qemu_log,
            stderr=qemu_log,
        )
    guest_channel.close()
    guest_qmp.close()
    vm = GuestVM(
        process=process,
        line=line,
        memory=ram,
        channel=Channel(host_channel),
        qmp_socket=host_qmp,
        window=window,
        log_dir=logs,
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
    trouble = vm._console.trouble()
    if trouble is not None:
        reason, how = trouble[0], f"{_trouble(trouble)}, before its agent started"
    with contextlib.suppress(subprocess.TimeoutExpired):
        vm._process.wait(1)
    qemu_said = (vm.log_dir / "qemu.log").read_text(errors="replace").strip()
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
        raise GuestError(
            f"kernel {kernel.spec.raw!r} has no bootable image (it was named by its vmlinux):"
            " a guest boots an image (bzImage, vmlinuz-R); name the image, its build tree or"
            " its release instead"
        )
    return kernel.image, arch or kernel.arch or "unknown"


def _trouble(trouble: tuple[str, str]) -> str:
    kind, line = trouble
    return f"the guest kernel {'panicked' if kind == 'panic' else 'oopsed'} ({line})"


def _check_guest_path(path: str) -> None:
    if not path.startswith("/") or "\0" in path or "\n" in path:
        raise ValueError(f"guest path {path!r}: absolute, without NUL or newline")


def _quote_output(result: GuestResult) -> str:
    def quote(name: str, data: bytes) -> str:
        text = data[-4096:].decode("utf-8", "replace").rstrip("\n")
        cut = " (last 4096 bytes)" if len(data) > 4096 else ""
        body = "\n".join(f"  | {line}" for line in text.split("\n")) if text else "  (empty)"
        return f"{name}{cut}:\n{body}"

    return f"{quote('stdout', result.stdout)}\n{quote('stderr', result.stderr)}"

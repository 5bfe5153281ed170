"""A booted guest: the kernel under test in QEMU, with a command agent, its RAM visible to the
host and its monitor at hand (``boot_guest`` in ``boot.py`` makes one).

Requests to the agent (``run``, ``put``, ``get``) are serialised by a lock: the agent has one
window and answers one request at a time, and a thread that polls the guest while another runs
a workload waits for its turn instead of taking the other's reply. Each request's ``timeout``
bounds the whole call, the wait for the lock included. Every failure names the console and
quotes its last lines.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING

from ..formats.elf import ELFMAG
from ..regularfile import RegularFile
from .channel import Channel, ChannelClosed, ChannelTimeout
from .console import Console
from .errors import (
    GuestCommandError,
    GuestError,
    GuestProtocolError,
    GuestResult,
    GuestStoppedError,
    GuestTimeoutError,
)
from .layout import WINDOW_SIZE
from .memory import GuestMemory
from .programs import check_runnable
from .qemu import GuestLine, MiB, kill
from .qmp import GuestQMP
from .requests import Agent, AgentError, AgentLost, CommandTimeout, RequestTimeout
from .scheduler import DEFAULT_ATTACH_TIMEOUT, start_scheduler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..live.kernel import LiveKernel
    from ..store.api import Store
    from .scheduler import Scheduler

DEFAULT_CPUS = 2
DEFAULT_MEMORY = 512 * MiB
DEFAULT_BOOT_TIMEOUT = 300.0
DEFAULT_COMMAND_TIMEOUT = 300.0


class GuestVM:
    """A running guest; made by ``boot_guest`` (or the ``kernel_vm`` fixtures). ``run``,
    ``put``, ``get`` talk to its agent; ``console``, ``memory``, ``qmp`` and ``kernel`` look at
    it from the host; ``shutdown()`` (or leaving a ``with`` block) stops it, and a guest nobody
    stopped is killed when it is collected or the process exits::

        def test_guest(kernel_vm):
            kernel_vm.put("/tmp/input", b"hello")
            result = kernel_vm.run("wc -c < /tmp/input", check=True)
            assert result.stdout.strip() == b"5"
            assert b"Linux version" in kernel_vm.get("/proc/version")

    Requests to the agent from several threads run one at a time; each ``timeout`` bounds the
    whole call. Every failure is a GuestError quoting the console's last lines.
    """

    # Set after construction (boot_guest, start_scheduler): the guest path of each program
    # packed at boot, and the sched_ext scheduler started last.
    #: The guest path of each program packed at boot (``programs=``), by the name it was given.
    programs: Mapping[str, str] = {}
    _scheduler: Scheduler | None = None

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        line: GuestLine,
        memory: GuestMemory,
        channel: Channel,
        console: Console,
        qmp_socket: socket.socket,
        window: int,
        log_dir: Path | None,
        qemu_log: IO[bytes],
        vmlinux: Path | None = None,
        store: Store | None = None,
    ) -> None:
        self.line = line
        #: The guest's CPUs.
        self.cpus = line.cpus
        #: ``"kvm"`` or ``"tcg"``: how QEMU runs it.
        self.accel = line.accel
        #: The kernel command line it booted with.
        self.cmdline = line.cmdline
        #: The guest's RAM, mapped in this process: physical reads and writes from the host.
        self.memory = memory
        #: Where its console and QEMU's messages are kept (``log_dir=``), or None.
        self.log_dir = log_dir
        #: The console's file, when it is kept in ``log_dir``; else None.
        self.console_path = console.path
        self._console = console
        self._qemu_log = qemu_log
        self._process = process
        self._channel = channel
        self._agent = Agent(channel, memory, window, WINDOW_SIZE, line.memory)
        self._lock = threading.Lock()
        self._busy: str | None = None  # the request in progress, for another thread's message
        self._skipped_at = 0  # the channel's count of skipped bytes when it started
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
        """Whether the guest runs: not shut down, and QEMU has not exited."""
        return self._stopped is None and self._process.poll() is None

    @property
    def console(self) -> str:
        """The guest's serial console so far, capped (also in ``console_path``)."""
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
        """The running kernel read from the host (a LiveKernel), typed by its vmlinux's
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
        when it does not attach in ``timeout`` seconds (120 by default)."""
        self._scheduler = start_scheduler(self, os.fspath(program), list(args), timeout)
        return self._scheduler

    # --- the agent -------------------------------------------------------------------------

    def run(
        self, command: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT, check: bool = False
    ) -> GuestResult:
        """Run ``command`` with the guest's sh, as root; its status and output. ``check``:
        GuestCommandError when the status is not 0. Past ``timeout`` seconds (300 by default)
        the guest is killed: GuestTimeoutError with the output so far."""
        data = _command_bytes(command)
        what = f"run {_short(command)!r}"
        with self._request(what, timeout) as deadline:
            try:
                out = self._agent.run(command, data, deadline)
            except CommandTimeout as e:
                partial = e.partial
                result = GuestResult(
                    command,
                    None,
                    partial.stdout if partial else b"",
                    partial.stderr if partial else b"",
                )
                self._stop(f"killed after `{_short(command)}` timed out")
                so_far = _quote_output(result) if partial else "  (the agent did not answer)"
                raise GuestTimeoutError(
                    f"guest command `{_short(command)}` did not finish in {timeout:g} s; the"
                    f" guest was killed. Output so far:\n{so_far}\n{self._channel_report()}"
                    f"{self._console.report()}",
                    result,
                ) from None
        result = GuestResult(command, out.returncode, out.stdout, out.stderr)
        if check and result.returncode != 0:
            raise GuestCommandError(
                f"guest command `{_short(command)}` exited with status {result.returncode}:\n"
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
        (and, unless ``mode`` says otherwise, its permission bits; bytes get 0644). A host
        path must name a regular file no larger than the guest's memory; it is read a window
        at a time, and must not change meanwhile. ``timeout`` as for ``run``."""
        _check_guest_path(guest_path)
        if isinstance(data, (bytes, bytearray, memoryview)):
            view = memoryview(data).cast("B")
            with self._request(f"put {guest_path}", timeout) as deadline:
                self._agent.put(guest_path, view, 0o644 if mode is None else mode, deadline)
            check_runnable(self, guest_path, view, data)
            return
        host = RegularFile(data)  # a FIFO, a device, a directory: NotRegularFile
        try:
            if host.size > self.line.memory:
                raise GuestError(
                    f"put {guest_path}: {host.path} holds {host.size} bytes, more than the"
                    f" guest's {self.line.memory} bytes of memory"
                )
            perm = host.opened.st_mode & 0o7777 if mode is None else mode
            with self._request(f"put {guest_path}", timeout) as deadline:
                self._agent.put(guest_path, host, perm, deadline)
            host.require_unchanged()
            if host.pread(0, 4) == ELFMAG:  # a program: can the guest run it? (programs.py)
                check_runnable(self, guest_path, memoryview(host.read_exact(0, host.size)), data)
        finally:
            host.close()

    def get(self, guest_path: str, *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> bytes:
        """A guest file's contents (files under /proc and /sys too); ``timeout`` as for
        ``run``."""
        _check_guest_path(guest_path)
        with self._request(f"get {guest_path}", timeout) as deadline:
            return self._agent.get(guest_path, deadline)

    @contextlib.contextmanager
    def _request(self, what: str, timeout: float) -> Iterator[float]:
        """One request: this guest's turn (within ``timeout``), then the errors of talking to
        its agent as GuestErrors. Yields the request's deadline (time.monotonic)."""
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=min(max(timeout, 0.0), threading.TIMEOUT_MAX)):
            raise GuestError(
                f"{what}: another thread's request ({self._busy}) kept the guest for all of the"
                f" {timeout:g} s timeout (requests to one guest run one at a time)"
            )
        try:
            self._busy = what
            self._skipped_at = self._agent.channel.skipped
            self._check_running(what)
            try:
                yield deadline
            except AgentError as e:
                raise GuestError(f"{what}: {e}\n{self._console.report()}") from None
            except RequestTimeout as e:
                raise GuestError(
                    f"{what}: did not finish in {timeout:g} s: {e}; the guest runs on\n"
                    f"{self._channel_report()}{self._console.report()}"
                ) from None
            except AgentLost as e:
                self._stop(f"killed: {e}")
                raise GuestStoppedError(
                    f"{what}: {e}; the guest was killed\n{self._console.report()}"
                ) from None
            except GuestProtocolError as e:
                raise GuestProtocolError(
                    f"{what}: {e}\n{self._channel_report()}{self._console.report()}"
                ) from None
            except (ChannelClosed, ChannelTimeout) as e:
                raise self._lost(what, e) from None
        finally:
            self._busy = None
            self._lock.release()

    def _channel_report(self) -> str:
        """What else came on the agent's line during this request."""
        said = self._agent.channel.skipped_report(since=self._skipped_at)
        return f"{said}\n" if said else ""

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
        self._console.wait_closed(5)  # QEMU is gone: the reader sees the end at once
        self._channel.close()
        self._qmp_socket.close()
        self._qemu_log.close()
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
        if self._stopped is not None:  # by another thread, while this one waited
            return GuestStoppedError(f"{what}: the guest stopped: {self._stopped}")
        if isinstance(cause, ChannelTimeout):
            return GuestError(
                f"{what}: the agent did not answer in time\n{self._channel_report()}"
                f"{self._console.report()}"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(5)
        self._console.wait_closed(5)
        trouble = self._console.trouble()
        how = _trouble(trouble) if trouble else f"QEMU exited (status {self._process.returncode})"
        self._stop(how)
        return GuestStoppedError(f"{what}: {how}\n{self._console.report()}")


def _trouble(trouble: tuple[str, str]) -> str:
    kind, line = trouble
    return f"the guest kernel {'panicked' if kind == 'panic' else 'oopsed'} ({line})"


def _check_guest_path(path: str) -> None:
    if not path.startswith("/") or "\0" in path or "\n" in path:
        raise ValueError(f"guest path {path!r}: absolute, without NUL or newline")
    _utf8(path, "guest path")


def _command_bytes(command: str) -> bytes:
    """The command as the guest's shell gets it; ValueError, before anything is sent, for what
    no shell command can hold (a NUL) or UTF-8 cannot encode (a lone surrogate)."""
    nul = command.find("\0")
    if nul >= 0:
        raise ValueError(
            f"command {_short(command)!r}: a NUL at index {nul}; a shell command cannot hold"
            " one (write the bytes with printf '\\000' or put() a file); nothing was sent"
        )
    return _utf8(command, "command")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{what} {_short(text)!r}: {text[e.start]!r} at index {e.start} cannot be encoded as"
            f" UTF-8 ({e.reason}); nothing was sent"
        ) from None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _quote_output(result: GuestResult) -> str:
    def quote(name: str, data: bytes) -> str:
        text = data[-4096:].decode("utf-8", "replace").rstrip("\n")
        cut = " (last 4096 bytes)" if len(data) > 4096 else ""
        body = "\n".join(f"  | {line}" for line in text.split("\n")) if text else "  (empty)"
        return f"{name}{cut}:\n{body}"

    return f"{quote('stdout', result.stdout)}\n{quote('stderr', result.stderr)}"

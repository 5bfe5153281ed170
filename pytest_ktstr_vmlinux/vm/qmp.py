"""The guest's QEMU monitor through ``qemu.qmp``, for callers without an event loop.

qemu.qmp is asyncio. Its client runs here on an event loop in a thread of its own, so tests call
it like any function, and an event loop of the caller's (pytest-asyncio) is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

from .errors import GuestError, GuestStoppedError

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0

__all__ = ["ExecuteError", "GuestQMP"]


class GuestQMP:
    """The guest's QEMU monitor (``GuestVM.qmp``), called without an event loop::

        qmp = kernel_vm.qmp
        qmp.pause()
        assert qmp.status() == "paused"
        print(qmp.hmp("info registers"))
        qmp.resume()

    Errors QEMU returns are ``qemu.qmp.ExecuteError``; a monitor that does not answer in time is
    a GuestError, one that is gone (QEMU exited) a GuestStoppedError. ``client`` is the
    underlying ``qemu.qmp.QMPClient``, for coroutines run with ``call``.
    """

    def __init__(self, sock: socket.socket, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        #: Seconds a call may take.
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ktstr-vm-qmp", daemon=True
        )
        self._thread.start()
        #: The ``qemu.qmp.QMPClient``, connected: its coroutines run with ``call``.
        self.client = QMPClient("ktstr-vm")
        try:
            self.call(self.client.connect(sock), what="connecting to the monitor")
        except BaseException:
            self.close()
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], *, what: str = "a QMP call") -> T:
        """Run a coroutine of ``client`` on the monitor's loop and wait for its result."""
        if self._loop.is_closed():
            coroutine.close()
            raise GuestStoppedError(f"{what}: the monitor connection is closed")
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(coroutine, self.timeout), self._loop
        )
        try:
            return future.result()
        except ExecuteError:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise GuestError(
                f"{what}: QEMU's monitor did not answer in {self.timeout:g} s"
            ) from None
        except (QMPError, OSError, EOFError) as e:
            raise GuestStoppedError(f"{what}: QEMU's monitor is gone ({e!r})") from None

    def execute(self, command: str, arguments: dict[str, object] | None = None) -> object:
        """The QMP command ``command`` (``"query-cpus-fast"``) with ``arguments``; its return
        value, as QEMU's JSON."""
        return self.call(self.client.execute(command, arguments), what=f"QMP {command}")

    def hmp(self, command_line: str) -> str:
        """A human monitor command (``info registers -a``, ``info mtree -f``); its text."""
        out = self.execute("human-monitor-command", {"command-line": command_line})
        return str(out)

    def status(self) -> str:
        """``running``, ``paused``, ``shutdown``, ... (QMP query-status)."""
        out = self.execute("query-status")
        assert isinstance(out, dict)
        return str(out["status"])

    def pause(self) -> None:
        """Stop the guest's CPUs (QMP ``stop``): its memory holds still while it is read."""
        self.execute("stop")

    def resume(self) -> None:
        """Let the guest's CPUs run again (QMP ``cont``)."""
        self.execute("cont")

    def close(self) -> None:
        """Disconnect and stop the monitor's thread; shutting the guest down does it too."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            disconnect = asyncio.run_coroutine_threadsafe(self.client.disconnect(), self._loop)
            # Closing the connection of a QEMU that is gone can fail in any way; it is closed.
            with contextlib.suppress(Exception):
                disconnect.result(self.timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
        if not self._loop.is_running():
            self._loop.close()

"""The guest's serial console: read from QEMU by a host thread, kept capped, read back for
``console`` and for errors.

A guest can print without end (a flood of kernel warnings runs at half a megabyte a second),
so what is kept is bounded: the first ``HEAD_BYTES`` (the boot) and the last ``TAIL_BYTES``
(what led to the failure), with a line between them that says how many bytes were dropped
there. The same text is in the console file when there is one (``log_dir``): appended as it
comes until the head is full, then rewritten (head, the line, the tail) at most every
``REWRITE_SECONDS`` and when the guest stops, so the file survives the guest for whoever reads
the failure message that names it, and never grows past the cap. Without a file, nothing of
the console is left on disk.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path
from typing import BinaryIO

TAIL_LINES = 30
HEAD_BYTES = 1 << 20
TAIL_BYTES = 1 << 20
REWRITE_SECONDS = 0.5

# What the kernel prints when it dies (panic) or hits a bug it survives (oops, BUG).
_PANIC = re.compile(r"Kernel panic - not syncing")
_OOPS = re.compile(r"\bOops: |\bBUG: |general protection fault")


class Console:
    """The console of one guest; ``feed`` adds what it printed (the reader thread of
    ``attach`` does), ``path`` is the file that mirrors it (None: memory only)."""

    def __init__(
        self, path: Path | None = None, head: int = HEAD_BYTES, tail: int = TAIL_BYTES
    ) -> None:
        self.path = path
        self.dropped = 0  # bytes between the head and the tail that were not kept
        self._head_limit, self._tail_limit = head, tail
        self._head = bytearray()
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._file: BinaryIO | None = open(path, "wb") if path is not None else None  # noqa: SIM115
        self._written = 0.0  # when the file's tail was last rewritten
        self._stale = False  # the file's tail is behind
        self._thread: threading.Thread | None = None

    # --- filling it ---------------------------------------------------------------------

    def attach(self, sock: socket.socket) -> None:
        """Read the console from ``sock`` (QEMU's end of ttyS0) on a thread until QEMU closes
        it."""
        self._thread = threading.Thread(
            target=self._read, args=(sock,), name="ktstr-vm-console", daemon=True
        )
        self._thread.start()

    def _read(self, sock: socket.socket) -> None:
        sock.settimeout(REWRITE_SECONDS)  # to bring the file up to date when the guest pauses
        try:
            while True:
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    with self._lock:
                        self._rewrite()
                    continue
                if not data:
                    break
                self.feed(data)
        except OSError:
            pass
        finally:
            sock.close()
            self.close()

    def feed(self, data: bytes) -> None:
        with self._lock:
            room = self._head_limit - len(self._head)
            if room > 0:
                self._head += data[:room]
                if self._file is not None:
                    self._file.write(data[:room])
                    self._file.flush()
                data = data[room:]
            if not data:
                return
            self._tail += data
            over = len(self._tail) - self._tail_limit
            if over > 0:
                del self._tail[:over]
                self.dropped += over
            self._stale = True
            if time.monotonic() - self._written >= REWRITE_SECONDS:
                self._rewrite()

    def _rewrite(self) -> None:
        """The file from the end of the head on: the dropped line, then the tail."""
        if self._file is None or not self._stale:
            return
        self._file.seek(len(self._head))
        self._file.write(self._gap().encode() + self._tail)
        self._file.truncate()
        self._file.flush()
        self._written, self._stale = time.monotonic(), False

    def _gap(self) -> str:
        if not self.dropped:
            return ""
        return (
            f"\n[ktstr-vmlinux: {self.dropped} bytes of console output dropped here: a guest's"
            f" console is kept as its first {self._head_limit} and last {self._tail_limit}"
            " bytes]\n"
        )

    def wait_closed(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for the reader to see QEMU close the console: after
        QEMU exited, everything it printed is then here."""
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Bring the file up to date and close it (the memory copy stays)."""
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._rewrite()
                    self._file.close()
                self._file = None

    # --- reading it ---------------------------------------------------------------------

    def text(self) -> str:
        with self._lock:
            data = bytes(self._head) + self._gap().encode() + bytes(self._tail)
        return data.decode("utf-8", "replace").replace("\r\n", "\n")

    def trouble(self) -> tuple[str, str] | None:
        """``("panic", line)`` or ``("oops", line)`` for the first such line on the console (a
        panic wins over an oops), else None."""
        text = self.text()
        for kind, pattern in (("panic", _PANIC), ("oops", _OOPS)):
            match = pattern.search(text)
            if match is not None:
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                return kind, text[start : end if end >= 0 else len(text)].strip()
        return None

    def report(self, lines: int = TAIL_LINES) -> str:
        """What every failure message ends with: where the console is, then its last lines."""
        return report(self.text(), self.path, lines)


def report(text: str, path: Path | None, lines: int = TAIL_LINES) -> str:
    """A console's ``text`` as failure messages end: where it is kept, then its last lines."""
    tail = "\n".join(text.rstrip("\n").split("\n")[-lines:])
    body = "\n".join(f"  | {line}" for line in tail.split("\n")) if tail else "  (empty)"
    where = (
        f"console {path}"
        if path is not None
        else "console (kept in memory only: boot with log_dir= to keep it in a file)"
    )
    return f"{where}, last {lines} lines:\n{body}"

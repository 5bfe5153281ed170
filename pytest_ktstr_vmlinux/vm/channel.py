"""The agent's serial line (ttyS1) as the host sees it: request lines out, reply frames in.

Anyone in the guest can write to that tty, so the line carries more than replies: a stray byte
glued to a reply, megabytes of NULs, lines that merely look like replies. A reply is what
follows the line's last ``@ktstr`` marker (framing.split_line); everything else is skipped and
counted, and its last bytes are kept for the message of a request that never got its answer. A
line is never kept longer than ``MAX_LINE`` bytes: a flood without a newline costs the host
that much memory, not what the guest sends.
"""

from __future__ import annotations

import select
import socket
import time

from .framing import split_line

_CHUNK = 1 << 16
MAX_LINE = 1 << 16  # a reply is a few hundred bytes; an error message quotes a path
_KEEP = 1 << 12  # of an overlong line: its end, where a reply would be
_SHOWN = 200  # bytes of skipped garbage quoted in messages


class ChannelClosed(Exception):
    """The other end is gone: QEMU exited."""


class ChannelTimeout(Exception):
    """No reply before the deadline."""


class Channel:
    """Lines over ttyS1's socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._scanned = 0  # how much of the buffer is known to hold no newline
        self.skipped = 0  # bytes on the line that were no reply
        self._skipped_tail = b""
        self._unfinished = False  # a send was interrupted: its line may be cut

    def send(self, line: bytes) -> None:
        """Send one request line. After a send that an exception cut short, the next one first
        ends that line: the agent then refuses it (its length does not match) instead of
        reading it together with this one."""
        try:
            if self._unfinished:
                self.sock.sendall(b"\n")
            self._unfinished = True
            self.sock.sendall(line)
            self._unfinished = False
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def next_frame(self, deadline: float) -> bytes:
        """The next reply frame (what follows a marker, without the newline); ChannelTimeout
        past ``deadline`` (time.monotonic), ChannelClosed at end-of-file."""
        while True:
            skipped, frame = split_line(self._line(deadline))
            self.skip(skipped)
            if frame is not None:
                return frame

    def skip(self, garbage: bytes) -> None:
        """Count ``garbage`` as bytes that were no reply (the caller's, too: a frame that names
        no request)."""
        if garbage:
            self.skipped += len(garbage)
            self._skipped_tail = (self._skipped_tail + garbage)[-_SHOWN:]

    def skipped_report(self, since: int = 0) -> str:
        """A sentence about what was no reply after the count was ``since`` (a line still
        without its end included), or ''."""
        count = self.skipped - since + len(self._buffer)
        if count <= 0:
            return ""
        last = (self._skipped_tail + bytes(self._buffer[-_SHOWN:]))[-_SHOWN:]
        return (
            f"{count} bytes on the agent's line were no reply (something in the guest wrote"
            f" to its tty); the last of them: {last!r}"
        )

    def _line(self, deadline: float) -> bytes:
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if len(self._buffer) > MAX_LINE:
                self.skip(bytes(self._buffer[:-_KEEP]))
                del self._buffer[:-_KEEP]
                self._scanned = len(self._buffer)
            self._fill(deadline)

    def _fill(self, deadline: float) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            try:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    continue
                chunk = self.sock.recv(_CHUNK)
            except (OSError, ValueError) as e:  # ValueError: closed by another thread
                raise ChannelClosed(str(e)) from None
            if not chunk:
                raise ChannelClosed("end of file")
            self._buffer += chunk
            return

    def close(self) -> None:
        self.sock.close()

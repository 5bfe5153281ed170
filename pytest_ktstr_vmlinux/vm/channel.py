"""The host side of the agent's protocol (``agent.py``): request lines out, reply lines in, payloads
through the transfer window in guest RAM.

One request at a time: the window holds one payload, and each reply names the request it
answers, so a late reply (a command that finished as it timed out) is told apart.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from .agent import INLINE_MAX, PROTOCOL, RUN_DIR
from .memory import GuestMemory

_CHUNK = 1 << 16
GRACE_SECONDS = 10.0  # for the output of a command that timed out


class ChannelClosed(Exception):
    """The other end is gone: QEMU exited."""


class ChannelTimeout(Exception):
    """No reply before the deadline."""


class AgentError(Exception):
    """The agent refused a request; the message is its reason."""


@dataclass(frozen=True)
class Output:
    returncode: int | None
    stdout: bytes
    stderr: bytes


class CommandTimeout(Exception):
    def __init__(self, partial: Output | None) -> None:
        super().__init__("command timed out")
        self.partial = partial


class Channel:
    """Lines over ttyS1's socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def send(self, line: str) -> None:
        try:
            self.sock.sendall(line.encode("ascii") + b"\n")
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def receive(self, deadline: float) -> str:
        """The next line; ChannelTimeout past ``deadline`` (time.monotonic), ChannelClosed at
        end-of-file."""
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(_CHUNK)
            except OSError as e:
                raise ChannelClosed(str(e)) from None
            if not chunk:
                raise ChannelClosed("end of file")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("ascii", "replace")

    def close(self) -> None:
        self.sock.close()


class Agent:
    """Requests to the guest's agent. ``window`` is the transfer window's guest physical address."""

    def __init__(self, channel: Channel, memory: GuestMemory, window: int, size: int) -> None:
        self.channel = channel
        self.memory = memory
        self.window = window
        self.window_size = size
        self._seq = 0

    def wait_ready(self, deadline: float) -> None:
        while True:
            line = self.channel.receive(deadline)
            if line.startswith("READY "):
                if line.split()[1:2] != [str(PROTOCOL)]:
                    raise AgentError(f"agent speaks {line!r}, expected protocol {PROTOCOL}")
                return

    def run(self, command: str, timeout: float) -> Output:
        seq = self._next()
        data = command.encode()
        if len(data) <= INLINE_MAX and command.isprintable() and command.isascii():
            self.channel.send(f"C {seq} {command}")
        else:
            self._to_window(data)
            self.channel.send(f"R {seq} {len(data)}")
        try:
            reply = self._reply(seq, time.monotonic() + timeout, "D")
        except ChannelTimeout:
            raise CommandTimeout(self._output_so_far(seq)) from None
        return self._output(seq, reply)

    def put(self, path: str, data: memoryview, mode: int, timeout: float) -> None:
        encoded, inline = _path(path)
        room = self.window_size - len(encoded)
        offset = 0
        deadline = time.monotonic() + timeout
        while True:
            chunk = data[offset : offset + room]
            self._to_window(encoded, chunk)
            seq = self._next()
            self.channel.send(f"W {seq} {len(encoded)} {len(chunk)} {offset} {mode:o}{inline}")
            self._reply(seq, deadline, "A")
            offset += len(chunk)
            if offset >= len(data):
                return

    def get(self, path: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        return self._get(path, deadline)

    def _get(self, path: str, deadline: float) -> bytes:
        encoded, inline = _path(path)
        parts: list[bytes] = []
        offset, size = 0, None
        while size is None or offset < size:
            self._to_window(encoded)
            seq = self._next()
            self.channel.send(f"G {seq} {len(encoded)} {offset}{inline}")
            size_text, count_text = self._reply(seq, deadline, "S")[2:4]
            size, count = int(size_text), int(count_text)
            if count == 0:
                break  # the file shrank while it was read
            parts.append(bytes(self.memory.read(self.window, count)))
            offset += count
        return b"".join(parts)

    def _output_so_far(self, seq: int) -> Output | None:
        """After a timeout: what the command wrote by now (it may also have just finished)."""
        try:
            self.channel.send(f"K {seq}")
            reply = self._reply(seq, time.monotonic() + GRACE_SECONDS, "T", "D")
            partial = self._output(seq, reply)
        except (ChannelTimeout, ChannelClosed, AgentError):
            return None
        return Output(None, partial.stdout, partial.stderr)

    def _output(self, seq: int, reply: list[str]) -> Output:
        status, out_len, err_len = reply[2], int(reply[3]), int(reply[4])
        if out_len + err_len <= self.window_size:
            out = bytes(self.memory.read(self.window, out_len)) if out_len else b""
            err = bytes(self.memory.read(self.window + out_len, err_len)) if err_len else b""
        else:
            deadline = time.monotonic() + GRACE_SECONDS + (out_len + err_len) / 1e6
            out = self._get(f"{RUN_DIR}/out.{seq}", deadline)[:out_len]
            err = self._get(f"{RUN_DIR}/err.{seq}", deadline)[:err_len]
        return Output(None if status == "-" else int(status), out, err)

    def _reply(self, seq: int, deadline: float, *kinds: str) -> list[str]:
        while True:
            words = self.channel.receive(deadline).split(" ")
            if len(words) >= 2 and words[1] == str(seq):
                if words[0] in kinds:
                    return words
                if words[0] == "E":
                    raise AgentError(" ".join(words[2:]))

    def _to_window(self, *parts: bytes | memoryview) -> None:
        offset = self.window
        for part in parts:
            self.memory.write(offset, part)
            offset += len(part)

    def _next(self) -> int:
        self._seq += 1
        return self._seq


def _path(path: str) -> tuple[bytes, str]:
    """``(window bytes, request suffix)`` for a path: a short plain one rides on the request
    line (the agent saves a process), any other goes through the window."""
    if len(path) <= INLINE_MAX and path.isascii() and path.isprintable() and " " not in path:
        return b"", f" {path}"
    return path.encode(), ""

"""The host's requests to the guest's agent (``agent.py`` has the protocol): run, put, get.

One request at a time, and never a new one while an earlier one is unanswered: the window holds
one payload, and the agent writes it only between a request and its reply. A request abandoned
half-way (its timeout, a signal's exception, Ctrl-C) stays *pending*; the next request first
stops it (``K``) and waits for its reply, and only then writes the window. An agent that does
not answer the stop within ``GRACE_SECONDS`` is lost (``AgentLost``): its guest is unusable.
So a reply is always the reply to the request that was sent, and the window the host reads
was written for it; the frame's trailer (sequence, lengths, CRC-32s) says so, and a frame that
does not match is fetched again, never believed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..regularfile import RegularFile
from .agent import INLINE_MAX, PROTOCOL, RUN_DIR, TRAILER_ROOM
from .channel import Channel, ChannelClosed, ChannelTimeout
from .errors import GuestProtocolError
from .framing import (
    Ack,
    Chunk,
    Done,
    Failed,
    MalformedReply,
    Ready,
    Reply,
    check_trailer,
    crc,
    is_inline,
    parse_reply,
    request,
    script_trailer,
    stop_request,
)
from .memory import GuestMemory

GRACE_SECONDS = 10.0  # for the agent to answer a stop
RETRIES = 2  # a damaged frame is fetched (or sent) again this many times


class AgentError(Exception):
    """The agent refused a request; the message is its reason. ``damaged``: it refused a
    frame the host wrote, which did not match its checksum (the request did nothing)."""

    def __init__(self, message: str, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged


class AgentLost(Exception):
    """The agent did not answer a stop: the guest cannot be trusted with another request."""


class RequestTimeout(Exception):
    """A put or get did not finish in time; it was stopped and the agent is ready again."""


@dataclass(frozen=True)
class Output:
    returncode: int | None
    stdout: bytes
    stderr: bytes


class CommandTimeout(Exception):
    def __init__(self, partial: Output | None) -> None:
        super().__init__("command timed out")
        self.partial = partial


@dataclass(frozen=True)
class _Pending:
    seq: int
    what: str


class Agent:
    """Requests to the guest's agent. ``window`` is the transfer window's guest physical
    address, ``size`` its length; ``limit`` bounds any length the guest reports (its RAM)."""

    def __init__(
        self, channel: Channel, memory: GuestMemory, window: int, size: int, limit: int
    ) -> None:
        self.channel = channel
        self.memory = memory
        self.window = window
        self.window_size = size
        self.room = size - TRAILER_ROOM  # for a payload the agent frames
        self.limit = limit
        self.refetched = 0  # damaged frames that were fetched or sent again
        self._seq = 0
        self._pending: _Pending | None = None

    def wait_ready(self, deadline: float) -> None:
        while True:
            frame = self.channel.next_frame(deadline)
            try:
                reply = self._parse(frame)
            except MalformedReply:
                reply = None
            if not isinstance(reply, Ready):
                self.channel.skip(frame)
            else:
                if reply.protocol != PROTOCOL:
                    raise AgentError(f"agent speaks protocol {reply.protocol}, not {PROTOCOL}")
                return

    # --- run --------------------------------------------------------------------------------

    def run(self, command: str, data: bytes, deadline: float) -> Output:
        """``command`` (``data`` its UTF-8): inline when short and plain, else as a script
        through the window, sent again when the agent finds it damaged."""
        room = self.window_size - len(script_trailer(1 << 64, len(data)))
        if len(data) > room:
            raise ValueError(
                f"command {command[:100]!r}...: {len(data)} bytes, more than the {room} the"
                " transfer window holds; put() the script into a file and run that"
            )
        what = f"run {command[:100]!r}"
        for attempt in range(RETRIES + 1):
            self._settle(deadline)
            if len(data) <= INLINE_MAX and is_inline(command):
                seq = self._send(what, "C", command)
            else:
                seq = self._next()
                frame = data + script_trailer(seq, len(data))
                self._to_window(frame)
                seq = self._send(what, "R", len(frame), len(data), crc(frame), seq=seq)
            try:
                reply = self._reply(seq, deadline, Done)
            except ChannelTimeout:
                raise CommandTimeout(self._stop_command(seq)) from None
            except AgentError as e:
                if not e.damaged:
                    raise
                if attempt == RETRIES:
                    raise GuestProtocolError(
                        f"{e}, {RETRIES + 1} times (something in the guest writes over the"
                        " transfer window); the command did not run"
                    ) from None
                self.refetched += 1
                continue
            assert isinstance(reply, Done)
            return self._output(reply, deadline)
        raise AssertionError("unreachable")

    def _stop_command(self, seq: int) -> Output | None:
        """After a timeout: stop the command, and what it wrote by then (it may also have
        just finished)."""
        try:
            self.channel.send(stop_request(seq))
            reply = self._reply(seq, time.monotonic() + GRACE_SECONDS, Done)
            assert isinstance(reply, Done)
            partial = self._output(reply, time.monotonic() + GRACE_SECONDS)
        except (ChannelTimeout, ChannelClosed, AgentError, GuestProtocolError):
            return None
        return Output(None, partial.stdout, partial.stderr)

    def _output(self, done: Done, deadline: float) -> Output:
        size = done.out_len + done.err_len
        out = err = b""
        problem = None
        if size and size <= self.room:
            data = bytes(self.memory.read(self.window, size))
            out, err = data[: done.out_len], data[done.out_len :]
            status = "-" if done.status is None else done.status
            expected = f"ktstr {done.kind} {done.seq} {status} {done.out_len} {done.err_len}"
            tail = bytes(self.memory.read(self.window + size, TRAILER_ROOM))
            problem = check_trailer(tail, expected, (("stdout", out), ("stderr", err)))
            if problem is not None:
                self.refetched += 1
        if problem is not None or size > self.room:
            # The agent keeps the files until the next request that is not a G.
            deadline = max(deadline, time.monotonic() + GRACE_SECONDS + size / 1e6)
            try:
                # A job the command left running may still write to them: copies.
                out = self._get(f"{RUN_DIR}/out.{done.seq}", deadline, done.out_len, True)
                err = self._get(f"{RUN_DIR}/err.{done.seq}", deadline, done.err_len, True)
            except AgentError as e:
                raise GuestProtocolError(
                    f"the output of request {done.seq} could not be fetched: {e}"
                    + (f" (and the window did not hold it: {problem})" if problem else "")
                ) from None
            if len(out) != done.out_len or len(err) != done.err_len:
                raise GuestProtocolError(
                    f"request {done.seq} said it wrote {done.out_len} bytes of stdout and"
                    f" {done.err_len} of stderr, but its files hold {len(out)} and {len(err)}"
                )
        return Output(done.status, out, err)

    # --- put --------------------------------------------------------------------------------

    def put(self, path: str, source: memoryview | RegularFile, mode: int, deadline: float) -> None:
        """Write ``source`` (bytes, or an open host file read a window at a time) to ``path``
        in the guest; each chunk is checked in the window after the agent took it."""
        encoded, inline = _path(path)
        room = self.window_size - len(encoded)
        total = source.size if isinstance(source, RegularFile) else len(source)
        offset = 0
        while True:
            if isinstance(source, RegularFile):
                chunk: bytes | memoryview = source.pread(offset, min(room, total - offset))
            else:
                chunk = source[offset : offset + room]
            frame = encoded + bytes(chunk)
            for attempt in range(RETRIES + 1):
                self._settle(deadline)
                self._to_window(frame)
                fields: tuple[str | int, ...] = (len(encoded), crc(encoded), len(chunk), offset)
                fields += (f"{mode:o}", *inline)
                seq = self._send(f"put {path}", "W", *fields)
                try:
                    self._reply(seq, deadline, Ack, timeout=RequestTimeout)
                    intact = bytes(self.memory.read(self.window, len(frame))) == frame
                except AgentError as e:
                    if not e.damaged:
                        raise
                    intact = False
                if intact:
                    break
                self.refetched += 1
                if attempt == RETRIES:
                    raise GuestProtocolError(
                        f"something in the guest wrote over the transfer window"
                        f" while the agent copied bytes {offset} to {offset + len(chunk)} out"
                        f" of it, {RETRIES + 1} times; the guest file may be damaged"
                    )
            offset += len(chunk)
            if offset >= total or not chunk:
                return

    # --- get --------------------------------------------------------------------------------

    def get(self, path: str, deadline: float) -> bytes:
        return self._get(path, deadline)

    def _get(
        self, path: str, deadline: float, length: int | None = None, copy: bool = False
    ) -> bytes:
        """The file, or its first ``length`` bytes, a window at a time; ``copy``: the agent
        copies each range before it reads it (a file that may be changing)."""
        parts: list[bytes] = []
        offset, size = 0, None
        while (size is None or offset < size) and (length is None or offset < length):
            want = self.room if length is None else min(self.room, length - offset)
            chunk, size = self._get_chunk(path, offset, want, deadline, copy)
            if size > self.limit:
                raise AgentError(
                    f"{path} holds {size} bytes, more than the guest's memory ({self.limit}"
                    " bytes): read it in parts with run()"
                )
            if not chunk:
                break  # the file shrank while it was read
            parts.append(chunk)
            offset += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _get_chunk(
        self, path: str, offset: int, want: int, deadline: float, copy: bool
    ) -> tuple[bytes, int]:
        """One window's worth; after a frame that did not match (the window written over, or
        the file changed as it was read in place), again from a copy."""
        encoded, inline = _path(path)
        problem = ""
        for attempt in range(RETRIES + 1):
            self._settle(deadline)
            self._to_window(encoded)
            fields: tuple[str | int, ...] = (len(encoded), crc(encoded), offset, want)
            fields += (int(copy or attempt > 0), *inline)
            seq = self._send(f"get {path}", "G", *fields)
            try:
                reply = self._reply(seq, deadline, Chunk, timeout=RequestTimeout)
            except AgentError as e:
                if not e.damaged:
                    raise
                problem = str(e)
                self.refetched += 1
                continue
            assert isinstance(reply, Chunk)
            if reply.count > want or reply.count > reply.size - offset:
                raise GuestProtocolError(
                    f"the agent says it put {reply.count} bytes in the window from"
                    f" byte {offset} of {reply.size}, more than the {want} asked for"
                )
            if reply.count == 0:
                return b"", reply.size
            data = self.memory.read(self.window, reply.count).tobytes()
            tail = self.memory.read(self.window + reply.count, TRAILER_ROOM).tobytes()
            expected = f"ktstr S {seq} {reply.size} {reply.count}"
            found = check_trailer(tail, expected, (("data", data),))
            if found is None:
                return data, reply.size
            problem = found
            self.refetched += 1
        raise GuestProtocolError(
            f"the transfer window did not hold the frame the agent wrote, {RETRIES + 1} times,"
            f" the last from a copy (something in the guest writes over it): {problem}"
        )

    # --- one request ------------------------------------------------------------------------

    def _send(self, what: str, op: str, *fields: str | int, seq: int | None = None) -> int:
        if seq is None:
            seq = self._next()
        line = request(op, seq, *fields)
        self._pending = _Pending(seq, what)
        self.channel.send(line)
        return seq

    def _reply(
        self,
        seq: int,
        deadline: float,
        kind: type[Reply],
        timeout: type[Exception] | None = None,
    ) -> Reply:
        """The reply to request ``seq``: AgentError for an E reply, GuestProtocolError for a
        malformed one or one of another kind. With ``timeout``, a deadline that passes stops
        the request and raises that; without, ChannelTimeout (the request stays pending)."""
        while True:
            try:
                frame = self.channel.next_frame(deadline)
            except ChannelTimeout:
                if timeout is None:
                    raise
                self._stop(seq)
                raise timeout("the agent stopped it") from None
            try:
                reply = self._parse(frame)
            except MalformedReply as e:
                if e.seq != seq:
                    self.channel.skip(frame)
                    continue
                raise GuestProtocolError(str(e)) from None
            if reply is None or isinstance(reply, Ready) or reply.seq != seq:
                self.channel.skip(frame)
                continue
            if isinstance(reply, Failed):
                self._pending = None
                raise AgentError(reply.message, reply.damaged)
            if not isinstance(reply, kind):  # not the agent's: its answer is still to come
                raise GuestProtocolError(
                    f"request {seq} was answered with {frame[:200]!r}, which answers another"
                    " kind of request"
                )
            self._pending = None
            return reply

    def _pending_what(self, seq: int) -> str:
        return self._pending.what if self._pending and self._pending.seq == seq else str(seq)

    def _settle(self, deadline: float) -> None:
        """Before a request: stop and drain an abandoned one."""
        if self._pending is not None:
            self._stop(self._pending.seq, deadline)

    def _stop(self, seq: int, deadline: float | None = None) -> None:
        """Stop request ``seq`` and wait for its reply, whatever it is; AgentLost when none
        comes within the grace time (or ChannelTimeout when ``deadline`` passes first)."""
        grace = time.monotonic() + GRACE_SECONDS
        until = grace if deadline is None else min(deadline, grace)
        what = self._pending_what(seq)
        self.channel.send(stop_request(seq))
        while True:
            try:
                frame = self.channel.next_frame(until)
            except ChannelTimeout:
                if until < grace:
                    raise RequestTimeout(
                        f"the abandoned request before it ({what}) was still being stopped"
                    ) from None
                raise AgentLost(
                    f"the agent did not answer a stop of the abandoned request {seq} ({what})"
                    f" within {GRACE_SECONDS:g} s"
                ) from None
            try:
                reply = self._parse(frame)
            except MalformedReply:
                reply = None
            if reply is not None and not isinstance(reply, Ready) and reply.seq == seq:
                self._pending = None
                return
            self.channel.skip(frame)

    def _parse(self, frame: bytes) -> Reply | None:
        return parse_reply(frame, self.limit)

    def _to_window(self, *parts: bytes | memoryview) -> None:
        """Write into the window, and never past it."""
        total = sum(len(p) for p in parts)
        if total > self.window_size:
            raise ValueError(f"{total} bytes do not fit the {self.window_size}-byte window")
        offset = self.window
        for part in parts:
            self.memory.write(offset, part)
            offset += len(part)

    def _next(self) -> int:
        self._seq += 1
        return self._seq


def _path(path: str) -> tuple[bytes, tuple[str, ...]]:
    """``(window bytes, request fields)`` for a path: a short plain one rides on the request
    line (the agent saves a process), any other goes through the window."""
    if len(path) <= INLINE_MAX and is_inline(path) and " " not in path:
        return b"", (path,)
    return path.encode(), ()

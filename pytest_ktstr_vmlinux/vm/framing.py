"""The agent's protocol as text (``agent.py`` has the grammar): request lines, reply lines, and the
trailers that frame payloads in the transfer window.

No I/O here. Whatever the guest sends is parsed strictly: a reply is one of the dataclasses
below, or None when nothing on the line is attributable to a request (garbage the caller counts
and skips), or a ``MalformedReply`` naming the request and what was wrong; never a ValueError
from ``int()`` or an IndexError from a short line. Numbers are plain decimal digits (no sign, no
spaces, no underscores, which ``int()`` would accept) and every length is checked against the
bound the caller gives, so a forged reply cannot point the host outside the window.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from .agent import REPLY_MARKER, TRAILER_ROOM

MARKER = REPLY_MARKER.encode()
_DIGITS = re.compile(r"[0-9]{1,20}")
_CRC = re.compile(r"[0-9a-f]{8}")
# A request's printable text: what the guest's tty passes through a canonical read unchanged.
_PRINTABLE = re.compile(r"[ -~]*")


class MalformedReply(Exception):
    """A reply to request ``seq`` that the protocol does not allow; the message says why."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True)
class Ready:
    protocol: int


@dataclass(frozen=True)
class Done:
    """D (``status`` is the exit status) or T (a stopped command: ``status`` None)."""

    seq: int
    status: int | None
    out_len: int
    err_len: int

    @property
    def kind(self) -> str:
        return "T" if self.status is None else "D"


@dataclass(frozen=True)
class Ack:
    seq: int


@dataclass(frozen=True)
class Chunk:
    seq: int
    size: int
    count: int


@dataclass(frozen=True)
class Failed:
    seq: int | None
    message: str

    @property
    def damaged(self) -> bool:
        """The agent refused a frame the host wrote (it does not match its checksum)."""
        return self.message.startswith("damaged request")


Reply = Ready | Done | Ack | Chunk | Failed


# --- requests ----------------------------------------------------------------------------


def request(op: str, seq: int, *fields: str | int) -> bytes:
    """``OP SEQ LEN BODY``: LEN lets the agent refuse a line that was cut."""
    body = " ".join(str(f) for f in fields)
    if _PRINTABLE.fullmatch(body) is None:
        raise ValueError(f"request body {body[:80]!r}: printable ASCII only")
    return f"{op} {seq} {len(body)} {body}\n".encode("ascii")


def stop_request(seq: int) -> bytes:
    return f"K {seq}\n".encode("ascii")


def is_inline(text: str) -> bool:
    """Whether ``text`` can ride on a request line as it is."""
    return _PRINTABLE.fullmatch(text) is not None


def crc(data: bytes | memoryview) -> str:
    """CRC-32 as busybox's ``crc32`` prints it (zlib's polynomial): 8 lowercase hex digits."""
    return f"{zlib.crc32(data):08x}"


def script_trailer(seq: int, length: int) -> bytes:
    """What follows an R request's script in the window, inside its checksum."""
    return f"ktstr R {seq} {length}\n".encode("ascii")


# --- replies -----------------------------------------------------------------------------


def split_line(line: bytes) -> tuple[bytes, bytes | None]:
    """``(skipped, frame)``: a reply starts at the line's last marker, whatever precedes it
    (a byte a guest process wrote to the agent's tty is glued to the next reply)."""
    at = line.rfind(MARKER)
    if at < 0:
        return line, None
    return line[:at], line[at + len(MARKER) :]


def parse_reply(frame: bytes, limit: int) -> Reply | None:
    """The reply in ``frame`` (a line after its marker); None when it names no request (or
    is not a reply at all); MalformedReply for a reply to a request that breaks the grammar.
    ``limit`` bounds every length and size (the guest's memory)."""
    text = frame.decode("utf-8", "replace").rstrip("\r")
    words = text.split(" ")
    kind = words[0]
    if kind == "READY":
        if len(words) == 2 and _DIGITS.fullmatch(words[1]):
            return Ready(int(words[1]))
        return None
    if kind not in ("D", "T", "A", "S", "E") or len(words) < 2:
        return None
    if kind == "E" and words[1] == "-":
        return Failed(None, " ".join(words[2:]))
    if not _DIGITS.fullmatch(words[1]):
        return None
    seq, args = int(words[1]), words[2:]
    if kind == "E":
        return Failed(seq, " ".join(args))

    def malformed(why: str) -> MalformedReply:
        return MalformedReply(seq, f"malformed reply {text[:200]!r} to request {seq}: {why}")

    def number(word: str, what: str, bound: int = limit) -> int:
        if not _DIGITS.fullmatch(word):
            raise malformed(f"its {what} {word[:40]!r} is not a number")
        value = int(word)
        if value > bound:
            raise malformed(f"its {what} {value} is more than the guest's {limit} bytes")
        return value

    wanted = {"D": 3, "T": 3, "A": 0, "S": 2}[kind]
    if len(args) != wanted:
        raise malformed(f"a {kind} reply has {wanted} fields after the request, not {len(args)}")
    if kind == "A":
        return Ack(seq)
    if kind == "S":
        # A sparse file may be larger than the guest; get() refuses it, not as malformed.
        size, count = number(args[0], "file size", 1 << 63), number(args[1], "byte count")
        return Chunk(seq, size, count)
    if kind == "T":
        if args[0] != "-":
            raise malformed(f"a stopped command has no exit status, not {args[0][:40]!r}")
        status = None
    else:
        status = number(args[0], "exit status")
        if status > 255:
            raise malformed(f"exit status {status} is not 0 to 255")
    return Done(seq, status, number(args[1], "stdout length"), number(args[2], "stderr length"))


# --- the agent's frames in the window ----------------------------------------------------


def check_trailer(
    window_tail: bytes, expected: str, parts: tuple[tuple[str, bytes], ...]
) -> str | None:
    """None when ``window_tail`` (the window from the payload's end) starts with the trailer
    ``expected`` (its words before the checksums) followed by the CRC-32 of each of ``parts``
    (name, bytes); otherwise what is wrong, for a message."""
    end = window_tail.find(b"\n", 0, TRAILER_ROOM)
    if end < 0:
        return f"no trailer line after the payload (the window holds {bytes(window_tail[:60])!r})"
    line = window_tail[:end].decode("ascii", "replace")
    words = line.split(" ")
    head = expected.split(" ")
    if words[: len(head)] != head or len(words) != len(head) + len(parts):
        return f"the trailer reads {line[:100]!r}, not the one of {expected!r}"
    for (name, data), word in zip(parts, words[len(head) :], strict=True):
        if _CRC.fullmatch(word) is None:
            return f"the trailer {line[:100]!r} has no checksum where one belongs"
        if crc(data) != word:
            return (
                f"the {name} in the window ({len(data)} bytes) has CRC-32 {crc(data)}, its"
                f" trailer says {word}"
            )
    return None

"""The agent's protocol parsed on the host (vm/framing.py, vm/channel.py), fuzzed: whatever a
guest writes to the agent's line is a reply, skipped garbage, or a MalformedReply that names the
request and what is wrong; never a ValueError or an IndexError. The channel reads from a real
socketpair, as it reads QEMU's."""

from __future__ import annotations

import socket
import threading
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.vm.agent import REPLY_MARKER, TRAILER_ROOM
from pytest_ktstr_vmlinux.vm.channel import MAX_LINE, Channel, ChannelTimeout
from pytest_ktstr_vmlinux.vm.framing import (
    Ack,
    Chunk,
    Done,
    Failed,
    MalformedReply,
    Ready,
    check_trailer,
    crc,
    parse_reply,
    request,
    split_line,
)
from tests.helpers.fuzz import mutations

LIMIT = 512 << 20  # a 512 MiB guest
VALID = [
    b"READY 2",
    b"D 7 0 3 0",
    b"D 7 255 0 12",
    b"T 7 - 10 0",
    b"A 7",
    b"S 7 100 100",
    b"E 7 /x: no such file",
    b"E - malformed request",
]


def test_valid_replies_parse_to_what_they_say() -> None:
    assert parse_reply(b"READY 2", LIMIT) == Ready(2)
    assert parse_reply(b"D 7 0 3 0", LIMIT) == Done(7, 0, 3, 0)
    assert parse_reply(b"T 7 - 10 0", LIMIT) == Done(7, None, 10, 0)
    assert parse_reply(b"A 7", LIMIT) == Ack(7)
    assert parse_reply(b"S 7 100 50", LIMIT) == Chunk(7, 100, 50)
    failed = parse_reply(b"E 7 damaged request: the script ...", LIMIT)
    assert failed == Failed(7, "damaged request: the script ...") and failed.damaged
    assert parse_reply(b"E - malformed request", LIMIT) == Failed(None, "malformed request")


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"D 7 0 zz 0", "its stdout length 'zz' is not a number"),
        (b"D 7", "a D reply has 3 fields after the request, not 0"),
        (b"D 7 0 -64 128", "its stdout length '-64' is not a number"),
        (b"D 7 0 +5 0", "its stdout length '+5' is not a number"),
        (b"D 7 0 1_0 0", "its stdout length '1_0' is not a number"),
        (b"D 7 0 3 99999999999", f"its stderr length 99999999999 is more than the guest's {LIMIT}"),
        (b"D 7 256 0 0", "exit status 256 is not 0 to 255"),
        (b"D 7 - 0 0", "its exit status '-' is not a number"),
        (b"T 7 0 0 0", "a stopped command has no exit status, not '0'"),
        (b"S 7 10", "a S reply has 2 fields after the request, not 1"),
        (b"A 7 extra", "a A reply has 0 fields after the request, not 1"),
    ],
)
def test_a_malformed_reply_names_its_request_and_what_is_wrong(frame: bytes, why: str) -> None:
    with pytest.raises(MalformedReply) as e:
        parse_reply(frame, LIMIT)
    assert e.value.seq == 7
    assert str(e.value).startswith(f"malformed reply {frame.decode()!r} to request 7: {why}")


@pytest.mark.parametrize("frame", [b"", b"X 7", b"D", b"D zz 0 0 0", b"D -7 0 0 0", b"READY x"])
def test_what_names_no_request_is_garbage(frame: bytes) -> None:
    assert parse_reply(frame, LIMIT) is None


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200), st.sampled_from(VALID).flatmap(mutations)))
def test_any_line_is_a_reply_garbage_or_a_malformed_reply(frame: bytes) -> None:
    try:
        reply = parse_reply(frame, LIMIT)
    except MalformedReply as e:
        assert str(e).startswith("malformed reply ") and e.seq >= 0
        return
    if isinstance(reply, Done):
        assert 0 <= reply.out_len <= LIMIT and 0 <= reply.err_len <= LIMIT
        assert reply.status is None or 0 <= reply.status <= 255
    if isinstance(reply, Chunk):
        assert 0 <= reply.count <= LIMIT and 0 <= reply.size <= 1 << 63


@given(st.binary(max_size=300), st.sampled_from(VALID))
def test_a_reply_is_found_whatever_precedes_it(garbage: bytes, reply: bytes) -> None:
    skipped, frame = split_line(garbage + REPLY_MARKER.encode() + reply)
    assert frame == reply
    assert skipped.endswith(garbage) or REPLY_MARKER.encode() in garbage


def _trailer(seq: int, out: bytes, err: bytes) -> bytes:
    return f"ktstr D {seq} 0 {len(out)} {len(err)} {crc(out)} {crc(err)}\n".encode()


def test_the_trailer_matches_its_payload_and_request_only() -> None:
    out, err = b"hello\n", b""
    expected = f"ktstr D 5 0 {len(out)} {len(err)}"
    tail = _trailer(5, out, err) + b"\0" * TRAILER_ROOM
    assert check_trailer(tail, expected, (("stdout", out), ("stderr", err))) is None
    assert crc(b"") == "00000000" and crc(out) == f"{zlib.crc32(out):08x}"
    problem = check_trailer(tail, expected, (("stdout", b"hellO\n"), ("stderr", err)))
    assert problem is not None and problem.startswith("the stdout in the window (6 bytes) has")
    other = check_trailer(_trailer(4, out, err), expected, (("stdout", out), ("stderr", err)))
    assert other is not None and "not the one of 'ktstr D 5 0 6 0'" in other
    assert check_trailer(b"x" * TRAILER_ROOM, expected, ()) is not None


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_damage_to_a_frame_is_seen(out: bytes, data: st.DataObject) -> None:
    frame = bytearray(out + _trailer(9, out, b""))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    damaged_out, tail = bytes(frame[: len(out)]), bytes(frame[len(out) :])
    expected = f"ktstr D 9 0 {len(out)} 0"
    assert check_trailer(tail, expected, (("stdout", damaged_out), ("stderr", b""))) is not None


def test_a_request_says_its_length_and_refuses_what_the_tty_would_change() -> None:
    assert request("C", 3, "echo hi") == b"C 3 7 echo hi\n"
    assert request("G", 4, 0, "00000000", 0, 100, 0, "/x") == b"G 4 21 0 00000000 0 100 0 /x\n"
    for bad in ("a\nb", "\x7f", "é", "\0"):
        with pytest.raises(ValueError, match="printable ASCII only"):
            request("C", 1, bad)


def _channel() -> tuple[Channel, socket.socket]:
    host, guest = socket.socketpair()
    return Channel(host), guest


def test_the_channel_skips_glued_bytes_and_floods_and_counts_them() -> None:
    channel, guest = _channel()
    flood = b"\0" * (3 * MAX_LINE)

    def write() -> None:
        guest.sendall(b"x@ktstr D 1 0 3 0\n" + flood + b"@ktstr A 2\nnoise\n@ktstr A 3\n")

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    assert channel.next_frame(deadline) == b"D 1 0 3 0"
    assert channel.next_frame(deadline) == b"A 2"
    assert channel.next_frame(deadline) == b"A 3"
    writer.join()
    assert channel.skipped == 1 + len(flood) + len(b"noise")
    assert len(channel._buffer) == 0
    guest.sendall(b"never a reply")
    with pytest.raises(ChannelTimeout):
        channel.next_frame(time.monotonic() + 0.2)
    report = channel.skipped_report(since=channel.skipped)  # a line still without its end
    assert report.startswith("13 bytes on the agent's line were no reply")
    assert report.endswith("noisenever a reply'")
    guest.close()
    channel.close()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=100)), max_size=20),
    st.lists(st.integers(1, 50), min_size=1, max_size=10),
)
def test_the_channel_finds_every_reply_however_the_bytes_arrive(
    parts: list[bytes], cuts: list[int]
) -> None:
    """Replies among garbage (garbage may hold newlines but no marker), cut into arbitrary
    pieces: every reply comes out, in order, and nothing else does."""
    marker = REPLY_MARKER.encode()
    stream, replies = b"", []
    for part in parts:
        if part in VALID:
            stream += marker + part + b"\n"
            replies.append(part)
        else:
            stream += part.replace(marker, b"") + b"\n"
    channel, guest = _channel()
    pieces, at = [], 0
    for cut in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        if at >= len(stream):
            break
        pieces.append(stream[at : at + cut])
        at += cut
    pieces.append(stream[at:])

    def write() -> None:
        for piece in pieces:
            guest.sendall(piece)

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 30
    assert [channel.next_frame(deadline) for _ in replies] == replies
    writer.join()
    guest.close()
    channel.close()

"""The guest channel under attack (issue 19), on Debian's 6.1 cloud kernel under TCG: whatever the
guest does to the agent's line, the transfer window, its filesystem or its console, and however
the host abandons a request, no answer is wrong, no guest is corrupted, nothing hangs.

Every hostile act comes from inside the real guest: a process writing the window through
/dev/mem, bytes written to /dev/ttyS1, floods, FIFOs; the host's side is the library as users
call it (threads, a signal's exception, timeouts).
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from pytest_ktstr_vmlinux.regularfile import NotRegularFile
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import (
    GuestError,
    GuestProtocolError,
    GuestResult,
    GuestVM,
    boot_guest,
)
from pytest_ktstr_vmlinux.vm.console import HEAD_BYTES, TAIL_BYTES
from pytest_ktstr_vmlinux.vm.layout import WINDOW_SIZE, MiB
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

BOOT_TIMEOUT = 900.0
MEMORY = 384 * MiB
LONG = " " * 400  # makes a command go through the window (a script), not the request line


def _boot(kernel: DebianKernel, log_dir: Path | None, memory: int = MEMORY) -> GuestVM:
    return boot_guest(
        kernel.image,
        store=MemoryStore(),
        cpus=2,
        memory=memory,
        accel="tcg",
        timeout=BOOT_TIMEOUT,
        log_dir=log_dir,
    )


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    with _boot(debian_kernel, tmp_path_factory.mktemp("hostile")) as vm:
        yield vm


def _window(guest: GuestVM) -> int:
    found = re.search(r"ktstr\.window=(0x[0-9a-f]+),", guest.cmdline)
    assert found is not None, guest.cmdline
    return int(found[1], 16)


def _background(guest: GuestVM, command: str) -> str:
    """Start ``command`` in the guest, detached; its process id."""
    started = guest.run(f"({command}) >/dev/null 2>&1 </dev/null & echo $!", check=True)
    return started.stdout.decode().strip()


# --- 1. an abandoned request never answers the next one ----------------------------------


def test_a_get_that_timed_out_does_not_answer_the_next_request(guest: GuestVM) -> None:
    """The issue's case: a get of a FIFO whose writer comes 4 s later, abandoned after 1 s;
    then a command long enough to go through the window."""
    writer = _background(guest, "rm -f /tmp/f; mkfifo /tmp/f; sleep 4; echo late > /tmp/f")
    while guest.run("test -p /tmp/f").returncode:  # the FIFO is made in the background
        pass
    with pytest.raises(GuestError, match="did not finish in 1 s: the agent stopped it"):
        guest.get("/proc/self/root/tmp/f", timeout=1)
    result = guest.run("echo EXPECTED" + LONG)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"EXPECTED\n", b"")
    assert guest.get("/proc/self/comm") == b"cat\n"
    guest.run(f"kill {writer}; rm -f /tmp/f")


class _Alarm(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Alarm()


def test_a_run_interrupted_by_a_signal_does_not_answer_the_next_one(guest: GuestVM) -> None:
    """A test's SIGALRM (pytest-timeout's signal method, Ctrl-C) raises in the middle of run;
    the next run, through the window, gets its own answer, and the abandoned command is
    stopped."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(_Alarm):
            guest.run("sleep 3; echo first", timeout=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result = guest.run("echo second" + LONG)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"second\n", b"")
    assert b"sleep 3" not in guest.run("ps", check=True).stdout  # stopped before the next
    assert guest.get("/proc/self/comm") == b"cat\n"


# --- 2, 12. what cannot be sent is refused before anything is ----------------------------


def test_a_command_longer_than_the_window_is_refused_and_guest_ram_untouched(
    guest: GuestVM,
) -> None:
    sent = guest._agent._seq
    with pytest.raises(ValueError, match=r"more than the \d+ the transfer window holds"):
        guest.run(": '" + "A" * (20 << 20) + "'")
    assert guest._agent._seq == sent  # no request went out
    after = guest.memory.read(_window(guest) + WINDOW_SIZE, 4 * MiB)
    assert b"A" * 4096 not in bytes(after)
    assert guest.run("echo alive").stdout == b"alive\n"


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("echo a\0b", r"a NUL at index 6; a shell command cannot hold one"),
        ("echo \udcff", r"'\\udcff' at index 5 cannot be encoded as UTF-8"),
    ],
)
def test_a_nul_or_a_lone_surrogate_is_an_error_before_anything_is_sent(
    guest: GuestVM, command: str, why: str
) -> None:
    sent = guest._agent._seq
    with pytest.raises(ValueError, match=why) as e:
        guest.run(command)
    assert type(e.value) is ValueError and "nothing was sent" in str(e.value)
    assert guest._agent._seq == sent
    with pytest.raises(ValueError, match="cannot be encoded as UTF-8"):
        guest.get("/tmp/\udcff")


# --- 3. a process writing over the window ------------------------------------------------


def test_a_process_writing_over_the_window_causes_no_wrong_answer(guest: GuestVM) -> None:
    """A guest process scribbles over the start of the window while the host runs commands
    (inline and through the window), puts and gets: every answer is right, or a
    GuestProtocolError; none is wrong."""
    window = _window(guest)
    writer = _background(
        guest,
        "while :; do dd if=/dev/urandom of=/dev/mem bs=256 count=1"
        f" seek={window} oflag=seek_bytes conv=notrunc 2>/dev/null; done",
    )
    seen_before = guest._agent.refetched
    wrong: list[str] = []
    refused = 0
    data = os.urandom(3000)
    try:
        for i in range(30):
            try:
                result = guest.run(f"echo {i}; echo e{i} >&2" + ("" if i % 2 else LONG))
                if (result.returncode, result.stdout, result.stderr) != (
                    0,
                    f"{i}\n".encode(),
                    f"e{i}\n".encode(),
                ):
                    wrong.append(f"run {i}: {result}")
                if i % 5 == 0:
                    guest.put(f"/tmp/scribbled.{i}", data)
                    if guest.get(f"/tmp/scribbled.{i}") != data:
                        wrong.append(f"put/get {i}")
            except GuestProtocolError:
                refused += 1
    finally:
        guest.run(f"kill {writer}", check=True)
    assert wrong == []
    assert refused + guest._agent.refetched - seen_before > 0  # the writer hit some frames
    assert guest.run("echo calm").stdout == b"calm\n"


def test_a_job_still_writing_to_the_commands_stdout_is_no_damaged_frame(guest: GuestVM) -> None:
    """The command returns while a job it started goes on writing to its stdout: the output
    is what was written by then, not an error (the frame is fetched again, from a copy)."""
    result = guest.run("(while :; do echo tick; done) & echo $! > /tmp/ticker; echo now")
    words = result.stdout.decode().split()
    assert result.returncode == 0 and "now" in words and set(words) <= {"now", "tick"}
    guest.run("kill $(cat /tmp/ticker)", check=True)
    assert guest.run("echo calm").stdout == b"calm\n"


def test_a_file_replaced_while_it_is_read_comes_back_whole(guest: GuestVM) -> None:
    """A whole file is read in place; one replaced meanwhile makes its CRC and the window
    disagree, and is read again from a copy: one version of it, whole, and no error."""
    churn = _background(
        guest,
        "while :; do head -c 4194304 /dev/urandom >/tmp/churn.new; mv /tmp/churn.new /tmp/churn;"
        " done",
    )
    try:
        while guest.run("test -e /tmp/churn").returncode:
            pass
        for _ in range(5):
            assert len(guest.get("/tmp/churn")) == 4 << 20
    finally:
        guest.run(f"kill {churn}", check=True)


# --- 4, 5. the agent's line: stray bytes, floods, forgeries ------------------------------


def test_a_stray_byte_or_a_flood_on_the_agents_line_is_skipped_and_counted(
    guest: GuestVM,
) -> None:
    skipped = guest._agent.channel.skipped
    assert guest.run("printf x > /dev/ttyS1; echo hi", timeout=120).stdout == b"hi\n"
    assert guest._agent.channel.skipped == skipped + 1
    flood = 2_000_000
    result = guest.run(f"head -c {flood} /dev/zero > /dev/ttyS1; echo hi", timeout=900)
    assert result.stdout == b"hi\n"
    assert guest._agent.channel.skipped == skipped + 1 + flood


def test_garbage_that_never_ends_in_a_reply_is_shown_in_the_error(guest: GuestVM) -> None:
    guest.run("rm -f /tmp/g; mkfifo /tmp/g", check=True)
    _background(guest, "sleep 0.5; printf 'NOT A REPLY' > /dev/ttyS1")  # while the get waits
    with pytest.raises(GuestError) as e:
        guest.get("/proc/self/root/tmp/g", timeout=3)
    assert "did not finish in 3 s: the agent stopped it; the guest runs on" in str(e.value)
    assert re.search(r"\d+ bytes on the agent's line were no reply .*NOT A REPLY'", str(e.value))
    assert guest.run("echo next").stdout == b"next\n"


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        ("D {seq} 0 zz 0", "its stdout length 'zz' is not a number"),
        ("D {seq}", "a D reply has 3 fields after the request, not 0"),
        ("D {seq} 0 -64 128", "its stdout length '-64' is not a number"),
        ("D {seq} 0 99999999999 0", "more than the guest's"),
        ("A {seq}", "which answers another kind of request"),
    ],
)
def test_a_forged_reply_is_an_error_naming_what_is_wrong(
    guest: GuestVM, forged: str, why: str
) -> None:
    """A guest process writes a reply to the request the host is waiting for before the agent
    does: the host says what is wrong with it, and the real reply does not answer the next
    request."""
    line = "@ktstr " + forged.format(seq=guest._agent._seq + 1)
    with pytest.raises(GuestProtocolError, match=re.escape(why)) as e:
        guest.run(f"printf '%s\\n' '{line}' > /dev/ttyS1; sleep 2; echo real")
    assert str(e.value).startswith(f"run \"printf '%s\\\\n' '{line}'")
    assert guest.run("echo next").stdout == b"next\n"


# --- 6. a full guest filesystem ----------------------------------------------------------


def test_a_full_filesystem_is_an_error_that_says_so_and_the_next_command_works(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path: Path
) -> None:
    """The issue's 256 MiB guest: two 50 MB outputs, /proc/kcore, and an output larger than
    the room the guest has for outputs."""
    with _boot(debian_kernel, tmp_path, memory=256 * MiB) as vm:
        for _ in range(2):
            result = vm.run("head -c 50000000 /dev/zero", timeout=900)
            assert (result.returncode, len(result.stdout)) == (0, 50_000_000)
            assert result.stdout == bytes(50_000_000)
        assert vm.run("echo alive").stdout == b"alive\n"
        with pytest.raises(GuestError, match=r"/proc/kcore could not be copied: .* is full"):
            vm.get("/proc/kcore", timeout=900)
        assert vm.run("echo alive").stdout == b"alive\n"
        with pytest.raises(
            GuestError, match=r"could not all be stored: the guest's filesystem for .* is full"
        ):
            vm.run("head -c 300000000 /dev/zero", timeout=900)
        assert vm.run("echo alive").stdout == b"alive\n"
        assert int(vm.run("du -s /run/ktstr", check=True).stdout.split()[0]) < 1024  # KiB


# --- 7. put() opens host files as the project opens user files ---------------------------


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_put_refuses_a_fifo_or_a_device_without_blocking(
    guest: GuestVM, tmp_path: Path, kind: str
) -> None:
    host = tmp_path / "fifo"
    if kind == "fifo":
        os.mkfifo(host)  # no writer: an open() for reading would wait for one forever
    else:
        host = Path("/dev/zero")  # a read() would never end
    outcome: list[BaseException] = []

    def put() -> None:
        try:
            guest.put("/tmp/from-host", host, timeout=5)
        except BaseException as e:  # handed to the test's thread
            outcome.append(e)

    thread = threading.Thread(target=put, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "put() blocked past its timeout"
    assert isinstance(outcome[0], NotRegularFile)
    assert str(outcome[0]) == (
        f"{host}: is {'a FIFO' if kind == 'fifo' else 'a character device'}, not a regular"
        " file; put the file itself there"
    )


def test_a_file_larger_than_the_guest_is_refused_both_ways(guest: GuestVM, tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(MEMORY + 1)
    with pytest.raises(GuestError, match=rf"holds {MEMORY + 1} bytes, more than the guest's"):
        guest.put("/tmp/sparse", sparse)
    guest.run(f"truncate -s {1 << 40} /tmp/sparse", check=True)  # a TiB of holes
    with pytest.raises(GuestError, match=rf"/tmp/sparse holds {1 << 40} bytes, more than the"):
        guest.get("/tmp/sparse")
    guest.run("rm /tmp/sparse", check=True)


# --- 8. one guest, several threads -------------------------------------------------------


def test_a_thread_polls_the_guest_while_another_runs_a_workload(guest: GuestVM) -> None:
    """The scheduler harness's pattern: a workload runs in a background thread while the test
    polls the same guest; every answer is the one to its own request."""
    done: list[bytes] = []

    def workload() -> None:
        for i in range(3):
            done.append(guest.run(f"sleep 1; echo work-{i}", timeout=60).stdout)

    thread = threading.Thread(target=workload)
    thread.start()
    polls: list[tuple[int, GuestResult]] = []
    while thread.is_alive() or len(polls) < 3:
        polls.append(
            (len(polls), guest.run(f"echo poll-{len(polls)}; cat /proc/loadavg", timeout=60))
        )
    thread.join()
    assert done == [b"work-0\n", b"work-1\n", b"work-2\n"]
    for n, poll in polls:
        lines = poll.stdout.decode().split("\n")
        assert poll.returncode == 0 and lines[0] == f"poll-{n}" and len(lines[1].split()) == 5


def test_a_request_that_cannot_get_its_turn_says_whose_it_is(guest: GuestVM) -> None:
    workload = threading.Thread(target=lambda: guest.run("sleep 4", timeout=120))
    workload.start()
    while guest._busy is None:  # until the workload holds the guest
        time.sleep(0.01)
    with pytest.raises(GuestError, match=r"another thread's request \(run 'sleep 4'\) kept"):
        guest.run("true", timeout=1)
    workload.join()
    assert guest.run("echo mine").stdout == b"mine\n"


# --- 9. the console is capped, and without log_dir nothing is left on disk ---------------


def test_a_flooding_console_keeps_its_start_and_end(guest: GuestVM) -> None:
    flood = HEAD_BYTES + TAIL_BYTES + MiB
    guest.run(
        f"head -c {flood} /dev/zero | tr '\\0' x >/dev/console; echo CONSOLE-END >/dev/console",
        timeout=900,
    )
    deadline = time.monotonic() + 120
    while "CONSOLE-END" not in guest.console and time.monotonic() < deadline:
        time.sleep(0.1)  # the console's reader thread catches up
    text = guest.console
    assert text.startswith("[    0.000000] Linux version ")
    assert re.search(r"\n\[ktstr-vmlinux: \d+ bytes of console output dropped here", text)
    assert text.rstrip().endswith("x" * 1000 + "CONSOLE-END")
    assert len(text) < HEAD_BYTES + TAIL_BYTES + 1000
    path = guest.console_path
    assert path is not None
    while "CONSOLE-END" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # the file follows within REWRITE_SECONDS
    kept = path.read_text().replace("\r\n", "\n")
    assert kept.startswith(text[:HEAD_BYTES]) and "bytes of console output dropped here" in kept
    assert path.stat().st_size < HEAD_BYTES + TAIL_BYTES + 1000


def test_a_guest_without_log_dir_leaves_nothing_on_disk(
    debian_kernel: DebianKernel,
    guest_tools: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a temporary file would go
    with _boot(debian_kernel, None) as vm:
        assert vm.log_dir is None and vm.console_path is None
        assert vm.run("echo hi").stdout == b"hi\n"
        assert "Linux version" in vm.console
        with pytest.raises(GuestError, match=r"console \(kept in memory only: boot with log_dir"):
            vm.get("/no/such")
    # The store's own exports (ktstr-vmlinux-*) go when the process exits; nothing else was made.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("ktstr-vmlinux-")] == []

"""A sched_ext scheduler in the guest: started, waited for until the kernel says it is attached,
watched, stopped; and when the kernel kicks it out, why, in the kernel's own words.

Everything is read in the guest through the agent, from sched_ext's own reports:
``/sys/kernel/sched_ext/state`` (``enabled`` while a BPF scheduler runs), ``enable_seq`` (one
more for every scheduler enabled), ``root/ops`` (its ops name) and the kernel log, where
sched_ext says ``BPF scheduler "NAME" enabled`` and, when it disables one, ``BPF scheduler
"NAME" disabled (REASON)`` then ``NAME: MESSAGE`` (kernel/sched/ext: scx_exit_reason()). The
scheduler's ``kind`` of exit is that REASON (``runnable task stall``, ``scx_bpf_error``, ...)
and its ``reason`` that MESSAGE. A scheduler counts as attached only once ``enable_seq`` has moved
past its value before the start, the state is ``enabled`` and the program is still running: a
scheduler that was already there, or one that attached and died at once, is not ours.

The program runs in the background of a guest shell that records its pid and, when it exits, its
status; its stdout and stderr go to one file, ``output``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .console import report
from .errors import GuestError
from .programs import install_program

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .protocol import Guest

    class SchedulerGuest(Guest, Protocol):
        @property
        def scheduler(self) -> Scheduler | None: ...
        def start_scheduler(
            self, program: str, args: Sequence[str] = (), *, timeout: float = ...
        ) -> Scheduler: ...


SYSFS = "/sys/kernel/sched_ext"
RUN_DIR = "/run/ktstr-scheduler"
DEFAULT_ATTACH_TIMEOUT = 120.0  # TCG on busy cores: loading the BPF programs takes seconds
DEFAULT_STOP_TIMEOUT = 60.0
# How long a scheduler the kernel kicked out may take to print its report and exit.
SETTLE_TIMEOUT = 10.0
POLL_US = 20000
# The exit reasons (scx_exit_reason()) of an error, not of an orderly unregistration.
ERROR_KINDS = ("runtime error", "scx_bpf_error", "runnable task stall")
_LINE = re.compile(r"^(?:\[[\s\d.]+\]\s*)?(sched_ext: .*)$")
_NUMBERS = itertools.count(1)
_ENABLED_LINE = re.compile(r'sched_ext: BPF scheduler ".*" enabled')
LIBRARY = f"{RUN_DIR}/lib.sh"
_LIB = f". {LIBRARY};"
# The guest side, put once per start: every command the host then sends is short (a command
# longer than a request line goes through the transfer window as a script).
SCRIPT = f"""S={SYSFS}
start() {{  # DIR: prints enable_seq, then the pid of DIR/command started in the background
    [ -d $S ] || {{ echo no sched_ext; return 0; }}
    cat $S/enable_seq
    {{ ( . $1/command ) & echo $! > $1/pid; wait $!; echo $? > $1/status; }} \\
        > $1/output 2>&1 < /dev/null &
    while [ ! -s $1/pid ]; do usleep 1000; done
    cat $1/pid
}}
running() {{  # DIR: the program has not exited
    [ ! -s $1/status ] && kill -0 $(cat $1/pid) 2>/dev/null
}}
attach() {{  # DIR SEQ POLLS: attached, ENABLE_SEQ, OPS; or exited; or timeout
    i=0
    while :; do
        e=$(cat $S/enable_seq)
        if [ "$(cat $S/state)" = enabled ] && [ "$e" -gt $2 ] && [ -r $S/root/ops ]; then
            echo attached; echo $e; cat $S/root/ops; return 0
        fi
        [ ! -s $1/status ] || {{ echo exited; return 0; }}
        i=$((i + 1)); [ $i -lt $3 ] || {{ echo timeout; return 0; }}; usleep {POLL_US}
    done
}}
probe() {{  # DIR: state, enable_seq, ops while the program runs
    running $1 && cat $S/state $S/enable_seq $S/root/ops
}}
settle() {{  # DIR POLLS: wait, a while at most, for the program to exit after its scheduler did
    i=0
    while running $1; do
        i=$((i + 1)); [ $i -lt $2 ] || return 0; usleep {POLL_US}
    done
}}
stop() {{  # DIR POLLS: SIGINT, then wait for its exit and sched_ext disabled
    kill -INT $(cat $1/pid) 2>/dev/null
    i=0
    until [ -s $1/status ] && [ "$(cat $S/state)" = disabled ]; do
        i=$((i + 1)); [ $i -lt $2 ] || {{ echo timeout; return 0; }}; usleep {POLL_US}
    done
    echo stopped
}}
"""


class SchedulerError(GuestError):
    """A sched_ext scheduler did not attach, or the kernel kicked it out, or its user-space
    part died. ``kind`` is the kernel's exit reason (``runnable task stall``, ``scx_bpf_error``,
    ``unregistered from user space``, ...) or, where the kernel said nothing, ``not attached``
    or ``exited``; ``reason`` the kernel's message (``kworker/0:1[12] failed to run for
    6.120s``, the text given to ``scx_bpf_error()``); ``output`` the scheduler's own output;
    ``log`` the kernel's sched_ext lines."""

    def __init__(self, message: str, kind: str, reason: str, output: str, log: list[str]) -> None:
        super().__init__(message)
        self.kind, self.reason, self.output, self.log = kind, reason, output, log


@dataclass(frozen=True)
class Exit:
    kind: str
    reason: str


def sched_ext_lines(log: str) -> list[str]:
    """The kernel log's sched_ext lines, without their timestamps."""
    out = []
    for line in log.splitlines():
        match = _LINE.match(line.strip())
        if match:
            out.append(match[1])
    return out


def exit_of(lines: list[str], name: str | None, enable_seq: int = 0) -> Exit | None:
    """The last exit the log reports of scheduler ``name`` (any when None); with
    ``enable_seq``, only after the kernel's ``enable_seq``-th ``enabled`` line (one is logged
    per enable, as enable_seq counts them), so an earlier run of the same scheduler is not
    taken for this one, as long as the log has all of them."""
    enables = sum(1 for line in lines if _ENABLED_LINE.match(line))
    skip = enable_seq if enable_seq and enables >= enable_seq else 0
    found = None
    for i, line in enumerate(lines):
        if skip:
            skip -= bool(_ENABLED_LINE.match(line))
            continue
        match = re.match(r'sched_ext: BPF (?:sub-)?scheduler "(.*)" disabled \((.*)\)$', line)
        if match and (name is None or match[1] == name):
            prefix = f"sched_ext: {match[1]}: "
            message = next(
                (ln[len(prefix) :] for ln in lines[i + 1 : i + 3] if ln.startswith(prefix)), ""
            )
            found = Exit(match[2], message or match[2])
    return found


class Scheduler:
    """A sched_ext scheduler started in a guest by ``GuestVM.start_scheduler`` (or
    ``scheduler=`` at boot), attached when it is returned::

        @pytest.mark.ktstr_vm(programs=["stress-ng"])
        def test_simple(kernel_vm):
            scheduler = kernel_vm.start_scheduler("scx_simple")  # a host program, copied in
            assert scheduler.state == "enabled"
            kernel_vm.run("stress-ng --cpu 2 -t 10", check=True)
            scheduler.stop()  # SchedulerError, in the kernel's words, if it was kicked out
    """

    def __init__(self, vm: Guest, program: str, args: list[str], number: int) -> None:
        self.vm = vm
        #: The program's path in the guest.
        self.program = program
        #: Its arguments.
        self.args = args
        self.dir = f"{RUN_DIR}/{number}"
        #: Its process id in the guest.
        self.pid = 0
        #: Its ops name (``"simple"``), as sched_ext reports it once attached.
        self.name: str | None = None
        #: Whether ``stop()`` stopped it.
        self.stopped = False
        self._seq = 0
        self._enabled_seq = ""  # enable_seq once it is attached
        self._failure: SchedulerError | None = None

    # --- starting ---------------------------------------------------------------------------

    def start(self, timeout: float) -> None:
        """Start the program and wait, at most ``timeout`` seconds, until sched_ext has
        enabled it (``GuestVM.start_scheduler`` does this); SchedulerError when it does not."""
        command = " ".join(shlex.quote(a) for a in (self.program, *self.args))
        self.vm.put(LIBRARY, SCRIPT.encode())
        self.vm.put(f"{self.dir}/command", f"exec {command}\n".encode())
        started = self.vm.run(f"{_LIB} start {self.dir}", check=True)
        if started.stdout.strip() == b"no sched_ext":
            raise SchedulerError(
                f"starting {self.program}: the guest's kernel has no sched_ext ({SYSFS} is"
                " missing): it needs CONFIG_SCHED_CLASS_EXT",
                "no sched_ext",
                "",
                "",
                [],
            )
        words = started.stdout.split()
        if len(words) != 2 or not all(w.isdigit() for w in words):
            raise GuestError(f"starting {self.program}: {started.stdout!r} is not its pid")
        self._seq, self.pid = int(words[0]), int(words[1])
        waited = self.vm.run(
            f"{_LIB} attach {self.dir} {self._seq} {_polls(timeout)}", timeout=timeout + 60
        )
        lines = waited.stdout.decode(errors="replace").split("\n")
        if lines[0] == "attached" and len(lines) >= 3 and self._running():
            self._enabled_seq, self.name = lines[1].strip(), lines[2].strip()
            return
        how = {
            "exited": "exited before sched_ext enabled it",
            "timeout": f"was not enabled by sched_ext within {timeout:g} s",
        }.get(lines[0], "exited as sched_ext enabled it")
        self.vm.run(f"kill -KILL {self.pid} 2>/dev/null; true")
        raise self._error(how, "exited" if lines[0] != "timeout" else "not attached")

    @property
    def _seq_number(self) -> int:
        return int(self._enabled_seq) if self._enabled_seq.isdigit() else 0

    def _running(self) -> bool:
        return self.vm.run(f"{_LIB} running {self.dir}").returncode == 0

    # --- looking at it ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """sched_ext's state now: ``enabled``, ``disabling``, ``disabled``, ..."""
        return self.vm.get(f"{SYSFS}/state").decode().strip()

    @property
    def output(self) -> str:
        """The scheduler's stdout and stderr so far."""
        return self.vm.get(f"{self.dir}/output").decode(errors="replace")

    @property
    def alive(self) -> bool:
        """Whether it still runs and sched_ext still runs it (the same enable, the same ops)."""
        return not self.stopped and self._still_attached()

    def _still_attached(self) -> bool:
        probe = self.vm.run(f"{_LIB} probe {self.dir}")
        words = probe.stdout.decode(errors="replace").split("\n")
        return probe.returncode == 0 and words[:3] == ["enabled", self._enabled_seq, self.name]

    def check(self) -> None:
        """SchedulerError when the scheduler is no longer attached (the kernel kicked it out,
        it exited), unless ``stop()`` stopped it."""
        if self._failure is not None:
            raise self._failure
        if self.stopped or self._still_attached():
            return
        self._failure = self._error("is no longer attached", "exited")
        raise self._failure

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """SIGINT to the scheduler (sched_ext's schedulers detach on it), then wait until it
        has exited and sched_ext is ``disabled``; SchedulerError if the kernel had kicked it
        out before, or it does not stop in ``timeout`` seconds (60 by default)."""
        if self.stopped:
            return
        self.check()
        result = self.vm.run(f"{_LIB} stop {self.dir} {_polls(timeout)}", timeout=timeout + 60)
        self.stopped = True
        if result.stdout.strip() != b"stopped":
            self.vm.run(f"kill -KILL {self.pid} 2>/dev/null; true")
            raise self._error(f"did not stop within {timeout:g} s of SIGINT", "not stopped")
        found = exit_of(self._log(), self.name, self._seq_number)
        if found is not None and found.kind in ERROR_KINDS:
            raise self._error("was kicked out before it was stopped", found.kind)

    # --- why it failed ----------------------------------------------------------------------

    def _log(self) -> list[str]:
        """The kernel's sched_ext lines: from dmesg while the guest runs, else its console."""
        if self.vm.alive:
            dmesg = self.vm.run("dmesg")
            if dmesg.returncode == 0:
                return sched_ext_lines(dmesg.stdout.decode(errors="replace"))
        return sched_ext_lines(self.vm.console)

    def _error(self, how: str, fallback_kind: str) -> SchedulerError:
        # The kernel logs the exit as it disables the scheduler, a moment after the state
        # changes: give it a few seconds before settling for no reason.
        log: list[str] = []
        found = None
        deadline = time.monotonic() + 5
        while self.vm.alive:
            log = self._log()
            found = exit_of(log, self.name, self._seq_number)
            if found is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not self.vm.alive:
            log = self._log()
            found = exit_of(log, self.name, self._seq_number)
        if found is not None:
            self._settle()
        output = self._output_or_empty()
        kind, reason = (found.kind, found.reason) if found else (fallback_kind, how)
        label = f"{self.program} ({self.name!r})" if self.name else self.program
        status = self._status()
        said = f": {kind}: {reason}" if found else ""
        lines = "\n".join(f"  | {ln}" for ln in log[-20:]) or "  (none)"
        text = output[-4096:].rstrip("\n")
        quoted = "\n".join(f"  | {ln}" for ln in text.split("\n")) if text else "  (empty)"
        message = (
            f"sched_ext scheduler {label} {how}{said}{status}\n"
            f"the kernel's sched_ext lines:\n{lines}\n"
            f"its output{' (last 4096 bytes)' if len(output) > 4096 else ''}:\n{quoted}\n"
            f"{report(self.vm.console, self.vm.console_path)}"
        )
        return SchedulerError(message, kind, reason, output, log)

    def _settle(self) -> None:
        """The kernel kicked the scheduler out: its user-space part notices at its next poll
        (scx_simple's is once a second), prints its own report (UEI_REPORT: ``EXIT: ...``) and
        exits. Wait for that, SETTLE_TIMEOUT at most, so ``output`` has its last words."""
        if not self.vm.alive:
            return
        with contextlib.suppress(GuestError):
            self.vm.run(f"{_LIB} settle {self.dir} {_polls(SETTLE_TIMEOUT)}", timeout=60)

    def _output_or_empty(self) -> str:
        try:
            return self.output if self.vm.alive else ""
        except GuestError:
            return ""

    def _status(self) -> str:
        if not self.vm.alive:
            return ""
        done = self.vm.run(f"cat {self.dir}/status 2>/dev/null")
        status = done.stdout.decode().strip()
        return f" (its process exited with status {status})" if status else ""


def _polls(timeout: float) -> int:
    return max(1, int(timeout * 1e6 // POLL_US))


def start_scheduler(vm: SchedulerGuest, program: str, args: list[str], timeout: float) -> Scheduler:
    """``GuestVM.start_scheduler``: the program from the guest, or copied in from the host."""
    previous = vm.scheduler
    if previous is not None and not previous.stopped and previous.alive:
        raise GuestError(
            f"start_scheduler({program!r}): {previous.program} ({previous.name!r}) is still"
            " attached: stop() it first"
        )
    path = vm.programs.get(program) or install_program(vm, program)
    scheduler = Scheduler(vm, path, args, next(_NUMBERS))
    scheduler.start(timeout)
    return scheduler


def start_at_boot(vm: SchedulerGuest, path: str, args: list[str]) -> None:
    """``boot_guest(scheduler=)``: start it, or shut the guest down and raise."""
    try:
        vm.start_scheduler(path, args)
    except BaseException:
        vm.shutdown()
        raise

"""A monitor of per-CPU fields that samples on a host thread while the caller waits on the guest:
``Sampler`` (``LiveKernel.monitor()``), and ``sample()``, its blocking form.

The schedule: tick k is due ``k * interval`` after the first. The thread sleeps until the next
tick is due; when it wakes past several due ticks, it takes one, the latest, and counts the
others as missed. So a late tick delays none after it (no drift), rows never bunch up to catch
up, and every tick from the first to the last is either taken or counted missed
(``scheduled_ticks == ticks + missed_ticks``).

What the block sees: ``__enter__`` takes the first tick itself before the block starts (a field
that does not exist, or a NULL pointer on the way, raises there), and ``__exit__`` the last, after
the block, as the first tick due at or after it (taken at once, not waited for), so the rows
cover the block. A read that fails in the thread stops the sampling and is raised by
``__exit__``: when the block ends, never later and never lost. When the block itself raised,
its exception goes on (what the test did matters more); the monitor's is ``error``, and a note
on the block's exception (Python 3.11+) names it.

Reads: a field reached without a pointer is read through a view of its bytes taken at the
start (``Object.reader_``); a field through a pointer is looked up afresh each tick
(``curr.pid`` is then the pid of the task current at that tick). A view does not notice a guest
that has shut down, so each tick also reads one field through the kernel's memory, which does.

The GIL: the thread holds it only while reading a tick (microseconds per CPU), and sleeps in
``Event.wait``, which releases it; ``GuestVM.run()`` waits for its answer in ``select()``, which
releases it too, so the two do not hold each other up. A block that computes in Python holds the
GIL, and a thread that wants it waits for the interpreter's switch interval (5 ms by default):
five ticks of 1 ms. So while a monitor runs, the switch interval is at most half its tick
interval (never below 0.1 ms), and back to what it was when the last monitor ends
(``bench/live.py`` measures both).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from .checks import Checks, EventWatch, TaskWatch, Thresholds, evaluate
from .errors import LiveKernelError
from .objects import Object
from .sampling import Samples


class _SwitchInterval:
    """The interpreter's switch interval, lowered for as long as monitors run: the least of
    what each running one asks and what it was before the first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: list[float] = []
        self._saved = 0.0

    def lower(self, asked: float) -> None:
        with self._lock:
            if not self._asked:
                self._saved = sys.getswitchinterval()
            self._asked.append(asked)
            sys.setswitchinterval(min([self._saved, *self._asked]))

    def restore(self, asked: float) -> None:
        with self._lock:
            self._asked.remove(asked)
            sys.setswitchinterval(min([self._saved, *self._asked]))


_SWITCH = _SwitchInterval()
SWITCH_FLOOR = 1e-4  # a switch interval below this costs more in switching than it saves


class Sampler:
    """Per-CPU fields sampled on a host thread while its block runs (``LiveKernel.monitor``);
    ``samples``, a Samples table, is readable during the block and after it::

        with live.monitor(["nr_running"], interval=0.001) as mon:
            vm.run("stress-ng --cpu 2 -t 5")
        assert mon.samples.ticks == mon.samples.scheduled_ticks - mon.samples.missed_ticks

    Tick k is due ``k * interval`` after the first; a tick that comes late is taken once and
    the others it covers counted missed, so the rows never drift or bunch up. The first tick
    is taken as the block starts and the last as it ends; a read that fails in the thread stops
    the sampling and is raised when the block ends.
    """

    def __init__(
        self,
        per_cpu: Callable[[int], Object],
        cpus: Sequence[int],
        fields: Sequence[str],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        tasks: TaskWatch | None = None,
        events: EventWatch | None = None,
    ) -> None:
        if not interval > 0 or math.isinf(interval):
            raise ValueError(f"interval={interval}: a number of seconds > 0")
        #: The CPUs sampled.
        self.cpus = tuple(cpus)
        if not self.cpus:
            raise LiveKernelError("no CPUs to sample")
        #: The member paths read on each CPU.
        self.fields = tuple(fields)
        #: Seconds between ticks.
        self.interval = interval
        #: The table of what was read, growing while the block runs.
        self.samples = Samples(self.fields, cpus=self.cpus, interval=interval)
        self._per_cpu, self._clock = per_cpu, clock
        self._readers: list[tuple[int, list[Callable[[], Any]]]] = []
        self._probe: Callable[[], Any] = lambda: None
        self._stop = threading.Event()
        self._ended = threading.Event()  # the thread has stopped: told to, or by an error
        self._thread: threading.Thread | None = None
        self._next = 1  # the next tick due
        self._switch = max(interval / 2, SWITCH_FLOOR)
        self._error: BaseException | None = None
        # Watched on the same thread, each at its own pace (checks/watch.py).
        self.tasks, self.events = tasks, events

    @property
    def error(self) -> BaseException | None:
        """What stopped the thread's sampling before the block ended; None while it samples."""
        return self._error

    def __repr__(self) -> str:
        state = "failed" if self._error else "running" if self._thread else "not started"
        return (
            f"Sampler({', '.join(self.fields)} on CPUs {self.cpus}, every {self.interval:g} s:"
            f" {state}, {self.samples.ticks} ticks, {self.samples.missed_ticks} missed)"
        )

    # --- the block --------------------------------------------------------------------------

    def __enter__(self) -> Sampler:
        if self._thread is not None:
            raise LiveKernelError("a monitor runs once: make another with live.monitor()")
        bases = {cpu: self._per_cpu(cpu) for cpu in self.cpus}
        self._readers = [(cpu, [_reader(b, f) for f in self.fields]) for cpu, b in bases.items()]
        fixed = [bases[self.cpus[0]].member_(f) for f in self.fields]
        if fixed and all(member.fixed_ for member in fixed):
            self._probe = fixed[0].value_  # every field is a view: read one through memory
        start = self._clock()
        self.samples.started = start
        self._tick(start, 0)
        self._thread = threading.Thread(target=self._run, name="ktstr-live-monitor", daemon=True)
        self._thread.start()
        _SWITCH.lower(self._switch)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        end = self._clock()
        self._stop.set()
        assert self._thread is not None
        try:
            self._thread.join()
        finally:
            _SWITCH.restore(self._switch)
        failed = self._error
        if failed is None:
            # The last tick: the first due at or after the block's end, taken now.
            last = max(self._next, self._slot(end, ceil=True))
            try:
                self._tick(self._clock(), last - self._next)
            except Exception as e:  # the block's own exception, if any, goes first
                failed = self._error = e
            self._next = last + 1
        if failed is None:
            return
        if exc is None:
            raise failed
        if hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"and the live-kernel monitor failed: {type(failed).__name__}: {failed}")

    def wait(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds, or until the thread has stopped (on an error, or at the
        block's end): True then. A blocking ``sample()`` is a monitor whose block waits so."""
        return self._ended.wait(timeout)

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            start, interval = self.samples.started, self.interval
            while not self._stop.wait(max(0.0, start + self._next * interval - self._clock())):
                now = self._clock()
                if now < start + self._next * interval:
                    continue  # woken a little early: wait for the rest
                slot = max(self._next, self._slot(now))
                self._tick(now, slot - self._next)
                self._next = slot + 1
        except BaseException as e:  # raised by __exit__, in the caller's thread
            self._error = e
        finally:
            self._ended.set()

    def _slot(self, now: float, *, ceil: bool = False) -> int:
        ticks = (now - self.samples.started) / self.interval
        return math.ceil(ticks) if ceil else math.floor(ticks)

    def _tick(self, now: float, missed: int) -> None:
        """One row per CPU, read now; the table grows by all of them at once, then counts."""
        at = now - self.samples.started
        rows = [(at, cpu, *[read() for read in reads]) for cpu, reads in self._readers]
        self._probe()  # the guest's RAM is still there: the views would not say
        table = self.samples
        table.rows.extend(rows)
        table.ticks += 1
        table.missed_ticks += missed
        if self.tasks is not None:
            self.tasks.tick(at)
        if self.events is not None:
            self.events.tick(at)

    # --- the checks -------------------------------------------------------------------------

    def checks(self, thresholds: Thresholds | None = None, **overrides: Any) -> Checks:
        """ktstr's checks on what this monitor saw: ``assert mon.checks()``, or
        ``mon.checks(max_gap_ms=500)`` (Thresholds' fields); thresholds left unset are ktstr's
        defaults."""
        chosen = (thresholds or Thresholds()).merged(overrides)
        return evaluate(self.samples, chosen, tasks=self.tasks, events=self.events)


def sample(
    per_cpu: Callable[[int], Object],
    cpus: Sequence[int],
    fields: Sequence[str],
    *,
    interval: float,
    duration: float,
) -> Samples:
    """Sample ``fields`` of ``per_cpu(cpu)`` on ``cpus`` every ``interval`` seconds for
    ``duration`` seconds on a host thread, blocking; the table when done (a monitor whose
    block only waits)."""
    if not duration >= 0:
        raise ValueError(f"interval={interval}, duration={duration}: interval > 0, duration >= 0")
    monitor = Sampler(per_cpu, cpus, fields, interval=interval)
    with monitor:
        monitor.wait(duration)
    return monitor.samples


def _reader(base: Object, path: str) -> Callable[[], Any]:
    """Reads ``base``'s member ``path`` (a missing one fails now, with close matches, not in
    the sampling thread): a view of its bytes when no pointer leads there, else a fresh lookup
    each time, since a pointer on the way may change."""
    member = base.member_(path)
    if member.fixed_:
        return member.reader_()
    return lambda: base.member_(path).value_()

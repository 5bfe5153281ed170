"""``not_starved`` / ``max_gap_ms``: every task ran within ``max_gap_ms`` while it was runnable,
seen from the host: the workload's tasks and the kernel's own threads, whose starvation (a
kworker that never runs) breaks the system as surely.

A task is runnable when its state is TASK_RUNNING and it is queued on a runqueue (``on_rq``):
waiting for a CPU, or on one. While runnable it must run, and running shows as its
``se.sum_exec_runtime`` growing (the kernel adds to it at every tick and every switch, for
every scheduling class, sched_ext's included). A gap is the time from the look that saw it run
(or saw it runnable again) to a look where it is still runnable and has not run since. A
task that is stopped (SIGSTOP: TASK_STOPPED) or sleeps is not runnable, and its gap ends: it is
not starved, it is not asking for a CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .thresholds import Thresholds
from .verdicts import Verdict, not_run


@dataclass(frozen=True)
class TaskSample:
    """One look at a task: ``at`` (seconds), ``runnable``, ``runtime`` (its
    se.sum_exec_runtime, ns), ``cpu`` (the CPU it is on or queued for)."""

    at: float
    runnable: bool
    runtime: int
    cpu: int


@dataclass
class TaskTrack:
    """What the monitor saw of one task: its ``pid``, ``comm``, and ``samples``."""

    pid: int
    comm: str
    samples: list[TaskSample] = field(default_factory=list)


@dataclass(frozen=True)
class Gap:
    """A task's longest wait: ``seconds`` from ``start`` (seconds since the first tick), on
    ``cpu``; ``open`` when it had not ended by the monitor's last look."""

    seconds: float
    start: float
    cpu: int
    open: bool


def longest_gap(samples: Sequence[TaskSample]) -> Gap | None:
    """The longest time the task was runnable without running; None if it never was."""
    best: Gap | None = None
    # Where the wait began, as late as the looks allow (a gap is never made longer than it
    # was): the look that saw it run, or the first look that saw it runnable again.
    since: TaskSample | None = None
    prev: TaskSample | None = None
    for s in samples:
        ran = prev is not None and s.runtime != prev.runtime
        if not s.runnable:
            since = None
        elif ran or since is None:
            since = s
        else:
            gap = Gap(s.at - since.at, since.at, s.cpu, True)
            if best is None or gap.seconds > best.seconds:
                best = gap
        prev = s
    if best is not None and samples and samples[-1].at - best.start > best.seconds:
        best = Gap(best.seconds, best.start, best.cpu, False)  # it ran, or stopped asking
    return best


def not_starved(tasks: Mapping[int, TaskTrack], th: Thresholds, looked: int) -> Verdict:
    bound = th.max_gap_ms
    if not th.not_starved:
        return not_run("not_starved", bound, "not_starved=False")
    if not tasks:
        return not_run("not_starved", bound, "no task was seen")
    worst: tuple[Gap, TaskTrack] | None = None
    for track in tasks.values():
        gap = longest_gap(track.samples)
        if gap is not None and (worst is None or gap.seconds > worst[0].seconds):
            worst = (gap, track)
    if worst is None:
        return Verdict(
            "not_starved",
            True,
            0.0,
            bound,
            f"{len(tasks)} tasks seen ({looked} looks), none waited while runnable",
        )
    gap, track = worst
    ms = gap.seconds * 1000
    still = ", still waiting at the end" if gap.open else ""
    detail = (
        f"{track.comm}[{track.pid}] runnable without running for {ms:.0f} ms from"
        f" {gap.start:.2f} s on CPU {gap.cpu}{still} (of {len(tasks)} tasks seen); bound"
        f" {bound:g} ms"
    )
    failed = ms > bound
    return Verdict(
        "not_starved",
        not failed,
        ms,
        bound,
        detail,
        cpu=gap.cpu,
        pid=track.pid,
        comm=track.comm,
        at=gap.start,
    )

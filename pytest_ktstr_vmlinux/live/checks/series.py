"""Time series the checks judge: the monitor's rows thinned to one sample per check interval,
and the worst value a series held for a sustained window.

Thinning: ktstr's monitor samples about every 100 ms and its windows count samples, so a
``sustained_samples`` of 5 means half a second. Ours reads far more often; judging every row
would make "5 samples" 5 ms, shorter than a scheduler tick, and a CPU whose clock advances only
on ticks would look stalled between them. So the runqueue checks take the first tick at or after
each multiple of the check interval, which keeps ktstr's meaning whatever the monitor's rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tick:
    """One monitor tick: its time (seconds since the first) and each CPU's values by field."""

    at: float
    cpus: dict[int, dict[str, Any]]


def ticks_of(rows: Sequence[tuple[Any, ...]], fields: Sequence[str]) -> list[Tick]:
    """The monitor's rows (time, cpu, *values), grouped by tick: a tick's rows share a time."""
    out: list[Tick] = []
    for row in rows:
        at, cpu, values = row[0], row[1], row[2:]
        if not out or out[-1].at != at:
            out.append(Tick(at, {}))
        out[-1].cpus[cpu] = dict(zip(fields, values, strict=True))
    return out


def thin(ticks: Sequence[Tick], interval: float) -> list[Tick]:
    """The first tick at or after each multiple of ``interval`` seconds (a multiple with no
    tick of its own, when the monitor fell behind, is skipped, not filled in)."""
    out: list[Tick] = []
    due = 0.0
    for tick in ticks:
        if tick.at + 1e-9 >= due:
            out.append(tick)
            due = (int(tick.at / interval + 1e-9) + 1) * interval
    return out


@dataclass(frozen=True)
class Sustained:
    """The worst value ``value`` held for a whole window (the least value within the window,
    at the window where that least is greatest), starting at index ``start``."""

    value: float
    start: int


def worst_sustained(values: Sequence[float | None], window: int) -> Sustained | None:
    """The greatest value that every sample of some ``window`` consecutive ones reached (None
    samples break a window); None when no window fits."""
    best: Sustained | None = None
    run: list[float] = []
    for i, value in enumerate(values):
        if value is None:
            run = []
            continue
        run.append(value)
        if len(run) > window:
            run.pop(0)
        if len(run) == window:
            low = min(run)
            if best is None or low > best.value:
                best = Sustained(low, i - window + 1)
    return best


def longest_run(flags: Sequence[bool]) -> tuple[int, int]:
    """(length, start) of the longest run of True in ``flags``; (0, -1) when none."""
    best, start, current = (0, -1), 0, 0
    for i, flag in enumerate(flags):
        if flag:
            if current == 0:
                start = i
            current += 1
            if current > best[0]:
                best = (current, start)
        else:
            current = 0
    return best

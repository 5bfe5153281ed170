"""The per-CPU checks, judged on the monitor's runqueue samples thinned to one per check interval:
``stall``, ``max_imbalance_ratio``, ``max_local_dsq_depth`` (ktstr's, with its defaults).

- A stall is a CPU with runnable tasks whose ``rq->clock`` did not advance from one sample to the
  next, for ``sustained_samples`` samples in a row. A CPU with no runnable task is exempt: the
  kernel stops an idle CPU's tick (NOHZ) and its clock rightly stands still.
- The imbalance of a sample is the busiest CPU's ``nr_running`` over the idlest's (at least 1,
  so an idle CPU does not divide by zero), as ktstr computes it.
- The local DSQ depth is ``rq->scx.local_dsq.nr``: tasks dispatched to a CPU and not yet run.

A bound is broken when the value stays past it for ``sustained_samples`` samples in a row.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from .series import Tick, longest_run, worst_sustained
from .thresholds import Thresholds
from .verdicts import Verdict, not_run

NR_RUNNING, CLOCK, DSQ = "nr_running", "clock", "scx.local_dsq.nr"


def _has(ticks: Sequence[Tick], field: str) -> bool:
    return bool(ticks) and all(field in values for values in ticks[0].cpus.values())


def _too_few(check: str, bound: float, ticks: Sequence[Tick], window: int) -> Verdict | None:
    if len(ticks) < window + (check == "stall"):
        return not_run(
            check,
            bound,
            f"{len(ticks)} judged samples, fewer than sustained_samples={window}: the block"
            " was too short to judge",
        )
    return None


def stall(ticks: Sequence[Tick], th: Thresholds) -> Verdict:
    bound = th.sustained_samples * th.check_interval_ms
    if not th.fail_on_stall:
        return not_run("stall", bound, "fail_on_stall=False")
    if not (_has(ticks, NR_RUNNING) and _has(ticks, CLOCK)):
        return not_run("stall", bound, "the monitor did not sample nr_running and clock")
    short = _too_few("stall", bound, ticks, th.sustained_samples)
    if short:
        return short
    worst: tuple[float, int, int, int] | None = None  # (ms, cpu, length, start)
    for cpu in ticks[0].cpus:
        flags = []
        for prev, cur in itertools.pairwise(ticks):
            a, b = prev.cpus.get(cpu), cur.cpus.get(cpu)
            flags.append(
                a is not None
                and b is not None
                and a[CLOCK] == b[CLOCK]
                and a[NR_RUNNING] > 0
                and b[NR_RUNNING] > 0
            )
        length, start = longest_run(flags)
        if length:
            ms = (ticks[start + length].at - ticks[start].at) * 1000
            if worst is None or (length, ms) > (worst[2], worst[0]):
                worst = (ms, cpu, length, start)
    if worst is None:
        return Verdict(
            "stall", True, 0.0, bound, "every CPU with runnable tasks advanced its rq clock"
        )
    ms, cpu, length, start = worst
    first, last = ticks[start], ticks[start + length]
    values = first.cpus[cpu]
    detail = (
        f"CPU {cpu}'s rq clock stood at {values[CLOCK]} for {ms:.0f} ms ({length} samples, from"
        f" {first.at:.2f} s to {last.at:.2f} s) with {values[NR_RUNNING]} runnable tasks"
    )
    failed = length >= th.sustained_samples
    if not failed:
        detail = f"longest stand-still with runnable tasks: {detail} (under the bound)"
    return Verdict("stall", not failed, ms, bound, detail, cpu=cpu, at=first.at)


def imbalance(ticks: Sequence[Tick], th: Thresholds) -> Verdict:
    bound = th.max_imbalance_ratio
    if not _has(ticks, NR_RUNNING):
        return not_run("max_imbalance_ratio", bound, "the monitor did not sample nr_running")
    short = _too_few("max_imbalance_ratio", bound, ticks, th.sustained_samples)
    if short:
        return short
    ratios = []
    for tick in ticks:
        counts = [values[NR_RUNNING] for values in tick.cpus.values()]
        ratios.append(max(counts) / max(1, min(counts)))
    found = worst_sustained(ratios, th.sustained_samples)
    assert found is not None
    tick = ticks[found.start]
    busiest = max(tick.cpus, key=lambda c: tick.cpus[c][NR_RUNNING])
    idlest = min(tick.cpus, key=lambda c: tick.cpus[c][NR_RUNNING])
    most, least = tick.cpus[busiest][NR_RUNNING], tick.cpus[idlest][NR_RUNNING]
    seen = (
        f"every CPU at {most}" if most == least else f"CPU {busiest}: {most}, CPU {idlest}: {least}"
    )
    detail = (
        f"nr_running busiest/idlest {found.value:.2f} held for {th.sustained_samples} samples"
        f" from {tick.at:.2f} s ({seen}); bound {bound:g}"
    )
    passed = found.value <= bound
    return Verdict(
        "max_imbalance_ratio",
        passed,
        found.value,
        bound,
        detail,
        cpu=None if passed else busiest,
        at=tick.at,
    )


def local_dsq_depth(ticks: Sequence[Tick], th: Thresholds, no_scx: str | None) -> Verdict:
    bound = float(th.max_local_dsq_depth)
    if no_scx is not None:
        return not_run("max_local_dsq_depth", bound, no_scx)
    if not _has(ticks, DSQ):
        return not_run("max_local_dsq_depth", bound, f"the monitor did not sample {DSQ}")
    short = _too_few("max_local_dsq_depth", bound, ticks, th.sustained_samples)
    if short:
        return short
    worst: tuple[float, int, int] | None = None  # (depth, cpu, start)
    for cpu in ticks[0].cpus:
        depths = [tick.cpus[cpu][DSQ] if cpu in tick.cpus else None for tick in ticks]
        found = worst_sustained(depths, th.sustained_samples)
        if found is not None and (worst is None or found.value > worst[0]):
            worst = (found.value, cpu, found.start)
    assert worst is not None
    depth, cpu, start = worst
    at = ticks[start].at
    detail = (
        f"CPU {cpu}'s local DSQ held {depth:.0f} tasks or more for {th.sustained_samples}"
        f" samples from {at:.2f} s; bound {bound:g}"
    )
    passed = depth <= bound
    return Verdict(
        "max_local_dsq_depth", passed, depth, bound, detail, cpu=None if passed else cpu, at=at
    )

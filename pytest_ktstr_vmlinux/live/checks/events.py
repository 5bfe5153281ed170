"""sched_ext's event counters as rates: ``max_fallback_rate`` (SCX_EV_SELECT_CPU_FALLBACK) and
``max_keep_last_rate`` (SCX_EV_DISPATCH_KEEP_LAST), per second over all CPUs.

The counters are per CPU and per attached scheduler (they start at 0 when one attaches), so a
rate is taken only between two samples of the same scheduler (``scx_root`` unchanged), from the
sum over the CPUs. A counter the kernel lacks, or a run with no scheduler attached, is a check
not run, saying which: never a rate of 0 that nobody read.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from .series import worst_sustained
from .thresholds import Thresholds
from .verdicts import Verdict, not_run

CHECKED = {
    "max_fallback_rate": "SCX_EV_SELECT_CPU_FALLBACK",
    "max_keep_last_rate": "SCX_EV_DISPATCH_KEEP_LAST",
}


@dataclass(frozen=True)
class EventSample:
    """The counters at ``at``: ``root``, the attached scheduler (its scx_root, or an enable
    sequence number before 6.16; 0 when none is attached), and each counter summed over CPUs
    (empty when none is attached)."""

    at: float
    root: int
    totals: dict[str, int]


def rates(samples: Sequence[EventSample], name: str) -> list[float | None]:
    """Per second between consecutive samples of one attached scheduler; None across a change
    of scheduler, or where none was attached."""
    out: list[float | None] = []
    for prev, cur in itertools.pairwise(samples):
        same = prev.root and prev.root == cur.root and name in prev.totals and name in cur.totals
        dt = cur.at - prev.at
        if not same or dt <= 0:
            out.append(None)
        else:
            out.append((cur.totals[name] - prev.totals[name]) / dt)
    return out


def event_rate(
    check: str, samples: Sequence[EventSample], th: Thresholds, missing: str | None
) -> Verdict:
    bound = th.max_fallback_rate if check == "max_fallback_rate" else th.max_keep_last_rate
    counter = CHECKED[check]
    if missing is not None:
        return not_run(check, bound, missing)
    if not any(s.root for s in samples):
        return not_run(check, bound, "no sched_ext scheduler was attached while the monitor ran")
    if not any(counter in s.totals for s in samples):
        return not_run(check, bound, f"the kernel has no {counter} counter")
    found = worst_sustained(rates(samples, counter), th.sustained_samples)
    if found is None:
        return not_run(
            check,
            bound,
            f"fewer than sustained_samples={th.sustained_samples} samples of {counter} under"
            " one attached scheduler",
        )
    at = samples[found.start].at
    detail = (
        f"{counter} at {found.value:.1f}/s or more for {th.sustained_samples} samples from"
        f" {at:.2f} s; bound {bound:g}/s"
    )
    return Verdict(check, found.value <= bound, found.value, bound, detail, at=at)


def counter_rates(samples: Sequence[EventSample]) -> dict[str, float]:
    """Every counter's mean rate per second over the samples of attached schedulers: what the
    report shows beside the two that are checked."""
    names = sorted({name for s in samples for name in s.totals})
    out = {}
    for name in names:
        total, seconds = 0.0, 0.0
        for prev, cur in itertools.pairwise(samples):
            if prev.root and prev.root == cur.root and name in prev.totals and name in cur.totals:
                total += cur.totals[name] - prev.totals[name]
                seconds += cur.at - prev.at
        if seconds > 0:
            out[name] = total / seconds
    return out

"""The host monitor as a test's oracle: ktstr's checks judged on what the monitor read.

``evaluate`` turns a monitor's samples (runqueues), task looks and event counters into
``Checks``: starvation (``not_starved``), stalls, imbalance, local DSQ depth and sched_ext's
event rates, each passed, failed with what was seen, or not run with the reason.
"""

from __future__ import annotations

from ..sampling import Samples
from .events import event_rate
from .runqueues import imbalance, local_dsq_depth, stall
from .series import thin, ticks_of
from .starvation import not_starved
from .thresholds import Thresholds
from .verdicts import CHECK_NAMES, Checks, ChecksFailed, Verdict
from .watch import EventWatch, TaskWatch

__all__ = [
    "CHECK_NAMES",
    "Checks",
    "ChecksFailed",
    "EventWatch",
    "TaskWatch",
    "Thresholds",
    "Verdict",
    "evaluate",
]


def evaluate(
    samples: Samples,
    thresholds: Thresholds,
    *,
    tasks: TaskWatch | None,
    events: EventWatch | None,
) -> Checks:
    """Every check on one monitored block (see each check's module for what it judges)."""
    ticks = ticks_of(samples.rows, samples.fields)
    judged = thin(ticks, thresholds.check_interval_ms / 1000)
    if events is None:
        no_scx: str | None = "the monitor did not watch sched_ext (events=False)"
        missing = no_scx
        event_samples = []
    else:
        event_samples = events.samples
        if not events.scx.present:
            no_scx = missing = "the kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT)"
        elif not any(s.root for s in event_samples):
            no_scx = "no sched_ext scheduler was attached while the monitor ran"
            missing = events.missing or no_scx
        else:
            no_scx, missing = None, events.missing
    if tasks is None:
        starved = Verdict(
            "not_starved", None, None, thresholds.max_gap_ms, "the monitor did not watch tasks"
        )
    else:
        starved = not_starved(tasks.tracks, thresholds, tasks.looks)
    verdicts = [
        starved,
        stall(judged, thresholds),
        imbalance(judged, thresholds),
        local_dsq_depth(judged, thresholds, no_scx),
        event_rate("max_fallback_rate", event_samples, thresholds, missing),
        event_rate("max_keep_last_rate", event_samples, thresholds, missing),
    ]
    return Checks(
        thresholds,
        {v.check: v for v in verdicts},
        samples=len(judged),
        rows=len(samples.rows),
        duration=ticks[-1].at if ticks else 0.0,
    )

"""The picture of a monitored block, drawn as the checks judged it (``plot_checks``).

Panels, sharing one time axis: each CPU's ``nr_running`` as steps of whole tasks (CPUs offset a
little so equal values stay visible); a lane per CPU saying what its rq clock did (advancing,
standing still while the CPU was idle, which NOHZ makes normal, or standing still with runnable
tasks: a stall); the imbalance ratio the check judged, with its bound; the local DSQ depth and
sched_ext's checked event rates where they were read; and the starvation check's worst wait.
A failed check is a red band across every panel where and when it happened, named in the
title. Needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any

from ..errors import LiveKernelError
from ..sampling import Samples
from .events import CHECKED, EventSample, rates
from .runqueues import CLOCK, DSQ, NR_RUNNING
from .series import Tick, thin, ticks_of
from .verdicts import Checks

STALL, IDLE, ADVANCING = "#d62728", "#d9d9d9", "#2ca02c"
BOUND = "#444444"  # a bound is a dark dashed line: red is kept for what broke one
# matplotlib's default colours without its red, which means a violation here.
LINES = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]  # fmt: skip


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # a file, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise LiveKernelError(
            "plotting the checks needs matplotlib: pip install 'pytest-ktstr-vmlinux[plot]'"
        ) from None
    return plt


def plot_checks(
    samples: Samples,
    checks: Checks,
    path: str | os.PathLike[str],
    *,
    title: str = "",
    events: Sequence[EventSample] = (),
) -> str:
    """A PNG at ``path`` of what the checks judged; the path, as a string."""
    plt = _pyplot()
    ticks = ticks_of(samples.rows, samples.fields)
    if not ticks:
        raise LiveKernelError("no samples to plot: the monitor took none")
    judged = thin(ticks, checks.thresholds.check_interval_ms / 1000)
    cpus = sorted(ticks[0].cpus)
    panels = ["nr_running", "clock", "imbalance"]
    if DSQ in samples.fields and checks["max_local_dsq_depth"].passed is not None:
        panels.append("dsq")
    if events and any(s.totals for s in events):
        panels.append("events")
    heights = {"clock": 0.35 * len(cpus) + 0.6}
    fig, axes = plt.subplots(
        len(panels),
        1,
        sharex=True,
        squeeze=False,
        figsize=(11, sum(heights.get(p, 1.9) for p in panels) + 1.2),
        gridspec_kw={"height_ratios": [heights.get(p, 1.9) for p in panels]},
    )
    try:
        for ax in axes[:, 0]:
            ax.set_prop_cycle(color=LINES)
        by_name = dict(zip(panels, axes[:, 0], strict=True))
        _nr_running(by_name["nr_running"], ticks, cpus)
        _clock_lanes(by_name["clock"], judged, cpus)
        _imbalance(by_name["imbalance"], judged, checks)
        if "dsq" in by_name:
            _dsq(by_name["dsq"], ticks, cpus, checks)
        if "events" in by_name:
            _events(by_name["events"], events, checks)
        _violations(axes[:, 0], checks)
        axes[-1, 0].set_xlabel("seconds since the monitor's first sample")
        failed = ", ".join(v.check for v in checks.failures) or "none"
        heading = f"{title}\n" if title else ""
        fig.suptitle(
            f"{heading}every {samples.interval * 1000:g} ms, {len(cpus)} CPUs;"
            f" checks failed: {failed}",
            fontsize="medium",
        )
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=90)
    finally:
        plt.close(fig)
    return os.fspath(path)


def _legend(ax: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="x-small", frameon=False)


def _nr_running(ax: Any, ticks: Sequence[Tick], cpus: Sequence[int]) -> None:
    times = [t.at for t in ticks]
    spread = 0.25 / max(1, len(cpus))
    for i, cpu in enumerate(cpus):
        values = [t.cpus.get(cpu, {}).get(NR_RUNNING, 0) + i * spread for t in ticks]
        ax.step(times, values, where="post", label=f"CPU {cpu}", linewidth=1.1)
    ax.set_ylabel("nr_running\n(tasks)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(bottom=-0.2)
    _legend(ax)


def _clock_lanes(ax: Any, ticks: Sequence[Tick], cpus: Sequence[int]) -> None:
    """One lane per CPU over the judged samples (as the stall check sees them: a busy CPU's
    clock advances only on its ticks, so between rows a millisecond apart it stands still):
    green while its rq clock advances, grey while it stands still on an idle CPU, red while it
    stands still with runnable tasks."""
    for lane, cpu in enumerate(cpus):
        spans: list[tuple[float, float, str]] = []
        for prev, cur in itertools.pairwise(ticks):
            a, b = prev.cpus.get(cpu), cur.cpus.get(cpu)
            if a is None or b is None:
                continue
            if a[CLOCK] != b[CLOCK]:
                colour = ADVANCING
            elif a[NR_RUNNING] > 0 and b[NR_RUNNING] > 0:
                colour = STALL
            else:
                colour = IDLE
            if spans and spans[-1][2] == colour and abs(spans[-1][1] - prev.at) < 1e-9:
                spans[-1] = (spans[-1][0], cur.at, colour)
            else:
                spans.append((prev.at, cur.at, colour))
        for start, end, colour in spans:
            ax.broken_barh([(start, end - start)], (lane - 0.35, 0.7), facecolors=colour)
    ax.set_yticks(range(len(cpus)), [f"CPU {c}" for c in cpus], fontsize="x-small")
    ax.set_ylim(-0.6, len(cpus) - 0.4)
    ax.set_ylabel("rq clock")
    from matplotlib.patches import Patch

    keys = [
        Patch(color=ADVANCING, label="advancing"),
        Patch(color=IDLE, label="still, CPU idle (NOHZ)"),
        Patch(color=STALL, label="still, runnable tasks"),
    ]
    ax.legend(handles=keys, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="x-small",
              frameon=False)  # fmt: skip


def _imbalance(ax: Any, judged: Sequence[Tick], checks: Checks) -> None:
    times, ratios = [], []
    for tick in judged:
        counts = [v.get(NR_RUNNING, 0) for v in tick.cpus.values()]
        times.append(tick.at)
        ratios.append(max(counts) / max(1, min(counts)))
    ax.step(times, ratios, where="post", color="#1f77b4", label="busiest / idlest")
    bound = checks.thresholds.max_imbalance_ratio
    ax.axhline(bound, color=BOUND, linestyle="--", linewidth=1, label=f"bound {bound:g}")
    ax.set_ylabel("imbalance\n(judged)")
    ax.set_ylim(bottom=0)
    _legend(ax)


def _dsq(ax: Any, ticks: Sequence[Tick], cpus: Sequence[int], checks: Checks) -> None:
    times = [t.at for t in ticks]
    for cpu in cpus:
        depths = [t.cpus.get(cpu, {}).get(DSQ, 0) for t in ticks]
        ax.step(times, depths, where="post", label=f"CPU {cpu}", linewidth=1)
    bound = checks.thresholds.max_local_dsq_depth
    ax.axhline(bound, color=BOUND, linestyle="--", linewidth=1, label=f"bound {bound:g}")
    ax.set_ylabel("local DSQ\n(tasks)")
    ax.set_ylim(bottom=0)
    _legend(ax)


def _events(ax: Any, events: Sequence[EventSample], checks: Checks) -> None:
    th = checks.thresholds
    bounds = {
        "max_fallback_rate": th.max_fallback_rate,
        "max_keep_last_rate": th.max_keep_last_rate,
    }
    for check, counter in CHECKED.items():
        per_second = rates(events, counter)
        times = [s.at for s in events[1:]]
        line = ax.step(times, [r if r is not None else float("nan") for r in per_second],
                       where="post", label=counter.removeprefix("SCX_EV_").lower())  # fmt: skip
        ax.axhline(bounds[check], color=line[0].get_color(), linestyle="--", linewidth=1,
                   label=f"bound {bounds[check]:g}/s")  # fmt: skip
    ax.set_ylabel("events\n(per s)")
    ax.set_ylim(bottom=0)
    _legend(ax)


def _violations(axes: Sequence[Any], checks: Checks) -> None:
    """A red band where each failed check's violation began, over its window (or its gap)."""
    th = checks.thresholds
    for verdict in checks.failures:
        if verdict.at is None:
            continue
        if (verdict.check == "not_starved" and verdict.worst is not None) or (
            verdict.check == "stall" and verdict.worst is not None
        ):
            width = verdict.worst / 1000
        else:
            width = th.sustained_samples * th.check_interval_ms / 1000
        for ax in axes:
            ax.axvspan(verdict.at, verdict.at + width, color=STALL, alpha=0.12, linewidth=0)
        where = f"CPU {verdict.cpu}" if verdict.cpu is not None else ""
        if verdict.pid is not None:
            where = f"{verdict.comm}[{verdict.pid}] on {where}"
        axes[0].annotate(
            f"{verdict.check} {where}".strip(),
            xy=(verdict.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            color=STALL,
            fontsize="x-small",
        )

"""ktstr's checks judged on monitor data built by hand: each check seen to pass and to fail, its
exemptions (an idle CPU, a stopped task, a change of scheduler), and the thresholds' rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.live.checks import Checks, ChecksFailed, Thresholds, evaluate
from pytest_ktstr_vmlinux.live.checks.events import EventSample, event_rate, rates
from pytest_ktstr_vmlinux.live.checks.runqueues import imbalance, local_dsq_depth, stall
from pytest_ktstr_vmlinux.live.checks.series import Tick, thin, ticks_of, worst_sustained
from pytest_ktstr_vmlinux.live.checks.starvation import (
    TaskSample,
    TaskTrack,
    longest_gap,
    not_starved,
)
from pytest_ktstr_vmlinux.live.errors import LiveKernelError
from pytest_ktstr_vmlinux.live.sampling import Samples

FIELDS = ("nr_running", "clock", "scx.local_dsq.nr")
TH = Thresholds()  # ktstr's defaults: 5 samples of 100 ms


def table(per_tick: list[dict[int, tuple[int, int, int]]], interval: float = 0.1) -> Samples:
    """One tick per ``interval`` seconds: {cpu: (nr_running, clock, dsq)}."""
    rows = [
        (round(i * interval, 6), cpu, *values)
        for i, cpus in enumerate(per_tick)
        for cpu, values in cpus.items()
    ]
    return Samples(FIELDS, rows=rows, cpus=tuple(per_tick[0]), interval=interval)


def judged(samples: Samples) -> list[Tick]:
    return thin(ticks_of(samples.rows, samples.fields), TH.check_interval_ms / 1000)


def busy(n: int, ticks: int, *, stop_cpu: int | None = None, stop_from: int = 0) -> Samples:
    """``n`` CPUs each with 2 runnable tasks and a clock that advances, except ``stop_cpu``'s
    from tick ``stop_from``."""
    per_tick = []
    for i in range(ticks):
        clocks = {c: 1000 * (min(i, stop_from) if c == stop_cpu else i) for c in range(n)}
        per_tick.append({c: (2, clocks[c], 0) for c in range(n)})
    return table(per_tick)


# --- stall ---------------------------------------------------------------------------------------


def test_a_cpu_whose_clock_stops_with_runnable_tasks_stalls() -> None:
    verdict = stall(judged(busy(4, 20, stop_cpu=2, stop_from=5)), TH)
    assert verdict.passed is False
    assert verdict.cpu == 2
    assert verdict.at == pytest.approx(0.5)
    assert verdict.worst == pytest.approx(1400)  # ticks 5..19: 1.4 s
    assert "CPU 2's rq clock stood at 5000" in verdict.detail
    assert "2 runnable tasks" in verdict.detail


def test_a_short_stand_still_is_under_the_bound() -> None:
    # CPU 1's clock reads 5000 at ticks 5 to 9: 4 samples without advancing, fewer than 5.
    per_tick = [{0: (2, 1000 * i, 0), 1: (2, 1000 * (5 if 5 <= i <= 9 else i), 0)}
                for i in range(20)]  # fmt: skip
    verdict = stall(judged(table(per_tick)), TH)
    assert verdict.passed is True  # clock stood still for 4 samples, < 5
    assert verdict.worst == pytest.approx(400)
    assert "under the bound" in verdict.detail


def test_an_idle_cpu_is_never_stalled() -> None:
    per_tick = [{0: (1, 1000 * i, 0), 1: (0, 5000, 0)} for i in range(30)]
    verdict = stall(judged(table(per_tick)), TH)
    assert verdict.passed is True
    assert verdict.worst == 0.0
    # A CPU that becomes busy while its clock stays put counts only from then.
    per_tick = [{0: (1, 1000 * i, 0), 1: (0 if i < 20 else 1, 5000, 0)} for i in range(30)]
    verdict = stall(judged(table(per_tick)), TH)
    assert verdict.passed is False
    assert verdict.cpu == 1
    assert verdict.at == pytest.approx(2.0)


def test_stall_can_be_turned_off_and_needs_enough_samples() -> None:
    samples = busy(2, 20, stop_cpu=0, stop_from=1)
    assert stall(judged(samples), Thresholds.of(fail_on_stall=False)).passed is None
    verdict = stall(judged(busy(2, 5, stop_cpu=0, stop_from=1)), TH)
    assert verdict.passed is None
    assert "too short" in verdict.detail


def test_the_monitor_rate_does_not_change_what_sustained_means() -> None:
    """At 1 kHz a busy CPU's clock advances only on its ticks (every 4 ms at HZ=250): five
    unchanged rows in a row are normal and must not be a stall; thinned to one row per 100 ms
    the same data has no stand-still at all."""
    per_tick = [{0: (1, 4_000_000 * (i // 4), 0)} for i in range(3000)]
    samples = table(per_tick, interval=0.001)
    assert stall(judged(samples), TH).passed is True
    assert len(judged(samples)) == pytest.approx(30, abs=1)


# --- imbalance and DSQ depth -------------------------------------------------------------------


def test_imbalance_sustained_fails_and_a_spike_does_not() -> None:
    pinned = [{0: (9, i, 0), 1: (0, i, 0), 2: (1, i, 0), 3: (1, i, 0)} for i in range(10)]
    verdict = imbalance(judged(table(pinned)), TH)
    assert verdict.passed is False
    assert verdict.worst == 9.0  # 9 / max(1, 0)
    assert verdict.cpu == 0
    assert "CPU 0: 9" in verdict.detail
    spread = [{c: (2, i, 0) for c in range(4)} for i in range(10)]
    spread[4] = {0: (9, 4, 0), 1: (0, 4, 0), 2: (2, 4, 0), 3: (2, 4, 0)}  # one sample
    verdict = imbalance(judged(table(spread)), TH)
    assert verdict.passed is True
    assert verdict.worst == 1.0


def test_local_dsq_depth_and_its_exemption() -> None:
    deep = [{0: (60, i, 60), 1: (1, i, 0)} for i in range(10)]
    verdict = local_dsq_depth(judged(table(deep)), TH, None)
    assert verdict.passed is False
    assert verdict.cpu == 0
    assert verdict.worst == 60
    assert local_dsq_depth(judged(table(deep)), TH, "no scheduler").passed is None
    ok = Thresholds.of(max_local_dsq_depth=100)
    assert local_dsq_depth(judged(table(deep)), ok, None).passed is True


# --- event rates -------------------------------------------------------------------------------


def events(totals: list[int], root: list[int] | None = None) -> list[EventSample]:
    roots = root or [1] * len(totals)
    return [
        EventSample(i * 0.1, r, {"SCX_EV_SELECT_CPU_FALLBACK": t} if r else {})
        for i, (t, r) in enumerate(zip(totals, roots, strict=True))
    ]


def test_fallback_rate() -> None:
    fast = events([i * 50 for i in range(12)])  # 500/s
    verdict = event_rate("max_fallback_rate", fast, TH, None)
    assert verdict.passed is False
    assert verdict.worst == pytest.approx(500)
    slow = events([i * 5 for i in range(12)])  # 50/s
    assert event_rate("max_fallback_rate", slow, TH, None).passed is True


def test_a_new_scheduler_restarts_its_counters() -> None:
    """Counters start again at 0 when another scheduler attaches: no negative rate, no rate
    across the change."""
    totals = [0, 10, 20, 30, 40, 50, 0, 10, 20, 30, 40, 50]
    roots = [7] * 6 + [8] * 6
    assert None in rates(events(totals, roots), "SCX_EV_SELECT_CPU_FALLBACK")
    worst = event_rate("max_fallback_rate", events(totals, roots), TH, None).worst
    assert worst == pytest.approx(100)


def test_no_counters_is_never_a_zero() -> None:
    verdict = event_rate("max_fallback_rate", events([0] * 12, [0] * 12), TH, None)
    assert verdict.passed is None
    assert "no sched_ext scheduler was attached" in verdict.detail
    verdict = event_rate("max_keep_last_rate", events([0] * 12), TH, None)
    assert verdict.passed is None
    assert "SCX_EV_DISPATCH_KEEP_LAST" in verdict.detail
    verdict = event_rate("max_fallback_rate", [], TH, "the kernel has no sched_ext")
    assert (verdict.passed, verdict.worst) == (None, None)


# --- starvation ------------------------------------------------------------------------------


def track(states: str, pid: int = 42, dt: float = 0.1) -> TaskTrack:
    """R: runnable and ran since the last look; W: runnable, did not run; S: asleep;
    T: stopped."""
    out, runtime = TaskTrack(pid, "worker"), 0
    for i, c in enumerate(states):
        runtime += c == "R"
        out.samples.append(TaskSample(i * dt, c in "RW", runtime, 3))
    return out


def test_a_runnable_task_that_does_not_run_is_starved() -> None:
    t = track("RRR" + "W" * 25 + "RR")
    gap = longest_gap(t.samples)
    assert gap is not None
    assert gap.seconds == pytest.approx(2.5)
    assert not gap.open
    verdict = not_starved({42: t}, TH, 30)
    assert verdict.passed is False
    assert (verdict.pid, verdict.comm, verdict.cpu) == (42, "worker", 3)
    assert "worker[42] runnable without running for 2500 ms from 0.20 s on CPU 3" in (
        verdict.detail
    )


def test_a_stopped_or_sleeping_task_is_not_starved() -> None:
    verdict = not_starved({1: track("R" + "T" * 40), 2: track("RS" + "S" * 40 + "R")}, TH, 43)
    assert verdict.passed is True
    assert verdict.worst == 0.0
    gap = longest_gap(track("WWWTWWWW").samples)  # the wait after T starts at the next look
    assert gap is not None
    assert gap.start == pytest.approx(0.4)
    assert gap.seconds == pytest.approx(0.3)


def test_a_gap_still_open_at_the_end_says_so() -> None:
    verdict = not_starved({7: track("R" + "W" * 30, pid=7)}, TH, 31)
    assert verdict.passed is False
    assert "still waiting at the end" in verdict.detail
    assert not_starved({}, TH, 0).passed is None
    assert not_starved({7: track("RW")}, Thresholds.of(not_starved=False), 2).passed is None


@given(st.text(alphabet="RWST", max_size=60))
def test_the_longest_gap_is_the_longest_run_of_waits(states: str) -> None:
    """Against a second reading of the same letters: a gap is a run of W after a runnable look
    (R, or the W that found it runnable again after S or T)."""
    gap = longest_gap(track(states).samples)
    runs, current = [], 0
    for i, c in enumerate(states):
        current = current + 1 if c == "W" and i > 0 and states[i - 1] in "RW" else 0
        runs.append(current)
    longest = max(runs, default=0)
    assert (gap.seconds if gap else 0.0) == pytest.approx(longest * 0.1)


# --- thresholds and the report -----------------------------------------------------------------


def test_thresholds_are_ktstrs_and_validated() -> None:
    assert (TH.max_imbalance_ratio, TH.max_local_dsq_depth, TH.sustained_samples) == (4.0, 50, 5)
    assert (TH.max_fallback_rate, TH.max_keep_last_rate, TH.max_gap_ms) == (200, 100, 2000)
    assert TH.not_starved and TH.fail_on_stall
    assert Thresholds.of(max_gap_ms=500).max_gap_ms == 500
    with pytest.raises(LiveKernelError, match=r"unknown check threshold 'max_gap'.*max_gap_ms"):
        Thresholds.of(max_gap=5)
    with pytest.raises(LiveKernelError, match="sustained_samples=0: a whole number >= 1"):
        Thresholds.of(sustained_samples=0)
    with pytest.raises(LiveKernelError, match="fail_on_stall='yes': True or False"):
        Thresholds.of(fail_on_stall="yes")
    with pytest.raises(LiveKernelError, match="max_imbalance_ratio=-1: a number >= 0"):
        Thresholds.of(max_imbalance_ratio=-1)
    assert Thresholds.of(max_gap_ms=1).merged({"sustained_samples": 3}).max_gap_ms == 1


def test_checks_assert_as_a_test_and_report_what_was_seen() -> None:
    samples = busy(4, 20, stop_cpu=1, stop_from=3)
    checks = evaluate(samples, TH, tasks=None, events=None)
    assert isinstance(checks, Checks)
    assert not checks
    assert [v.check for v in checks.failures] == ["stall"]
    assert checks["max_imbalance_ratio"].passed is True
    assert checks["not_starved"].passed is None
    assert checks["max_fallback_rate"].passed is None
    report = checks.report()
    assert report.splitlines()[0] == "ktstr checks: 1 of 6 failed"
    assert report.splitlines()[1].startswith("  stall: FAILED: CPU 1's rq clock")
    assert "judged 20 samples (one per 100 ms) of 80 per-CPU rows" in report
    props = dict(checks.properties())
    assert props["ktstr_check_stall"] == "failed"
    assert props["ktstr_check_stall_worst"] == "1600"
    assert props["ktstr_check_not_starved"] == "not run"
    assert "ktstr_check_not_starved_worst" not in props
    error = ChecksFailed(checks)
    assert isinstance(error, AssertionError)
    assert str(error) == report
    with pytest.raises(LiveKernelError, match="no check 'stal'"):
        checks["stal"]


@given(st.lists(st.one_of(st.none(), st.floats(0, 100)), max_size=40), st.integers(1, 6))
def test_worst_sustained_is_what_a_window_held(values: list[float | None], window: int) -> None:
    found = worst_sustained(values, window)
    windows = [
        min(v for v in values[i : i + window] if v is not None)
        for i in range(len(values) - window + 1)
        if None not in values[i : i + window]
    ]
    assert (found.value if found else None) == (max(windows) if windows else None)


# --- the plot ----------------------------------------------------------------------------------


def _red_pixels(path: Path) -> int:
    """Pixels of a stall's lane and a violation's band colour (#d62728)."""
    import numpy as np
    from matplotlib.image import imread

    image = np.asarray(imread(path))[:, :, :3]
    red = np.array([0xD6, 0x27, 0x28]) / 255
    return int((np.abs(image - red) < 0.02).all(axis=2).sum())


def test_the_failure_plot_shows_what_broke(tmp_path: Path) -> None:
    """Rendered and looked at: a stall is red where and when it was; a healthy run has no red
    but the legend's (the bounds are drawn dark, the CPUs' lines in other colours)."""
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from pytest_ktstr_vmlinux.live.checks.plot import plot_checks

    stalled = busy(4, 40, stop_cpu=1, stop_from=10)
    checks = evaluate(stalled, TH, tasks=None, events=None)
    bad = Path(plot_checks(stalled, checks, tmp_path / "bad.png", title="a stall on CPU 1"))
    healthy = busy(4, 40)
    good = tmp_path / "good.png"
    plot_checks(healthy, evaluate(healthy, TH, tasks=None, events=None), good)
    assert bad.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(bad).shape
    assert width >= 900 and height >= 500  # three panels, a lane per CPU
    assert _red_pixels(good) < 300  # the lanes' legend swatch alone
    assert _red_pixels(bad) > 2000  # CPU 1's lane from 1 s on, and the violation's band
    # The red lane is CPU 1's, the second from the bottom of four: count red per lane band.
    image = imread(bad)[:, :, :3]
    red_rows = [y for y in range(height) if _is_red_row(image[y])]
    assert red_rows, "no lane is red"
    assert max(red_rows) - min(red_rows) < height / 4  # one lane, not the whole figure


def _is_red_row(row: object) -> bool:
    import numpy as np

    pixels = np.asarray(row)
    red = np.array([0xD6, 0x27, 0x28]) / 255
    return int((np.abs(pixels - red) < 0.02).all(axis=1).sum()) > 300  # a long red bar

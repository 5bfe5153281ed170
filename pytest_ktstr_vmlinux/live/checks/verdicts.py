"""What the checks found: one ``Verdict`` per check, and ``Checks``, all of them together.

A verdict is one of three things: passed, failed (with what was seen: which CPU or task, when,
the value and the bound), or not run, with the reason (a kernel without sched_ext has no local
DSQ and no event counters; the reason says so, and no value is made up). ``Checks`` is truthy
when nothing failed, so ``assert mon.checks()`` reads as a test, and its text is what pytest
shows when that assertion fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import LiveKernelError
from .thresholds import Thresholds

# The order the report lists them in: the task first, then the CPUs, then the scheduler's own.
CHECK_NAMES = (
    "not_starved",
    "stall",
    "max_imbalance_ratio",
    "max_local_dsq_depth",
    "max_fallback_rate",
    "max_keep_last_rate",
)


@dataclass(frozen=True)
class Verdict:
    """``check`` (a name of CHECK_NAMES); ``passed`` (None: not run, ``detail`` says why);
    ``worst``, the worst value seen (None when nothing was measured) against ``bound``;
    ``detail``, what was seen, in words; where a violation was: ``cpu``, ``pid`` and ``comm``,
    ``at`` (seconds since the monitor's first tick)."""

    #: The check's name: ``"not_starved"``, ``"stall"``, ``"max_imbalance_ratio"``,
    #: ``"max_local_dsq_depth"``, ``"max_fallback_rate"`` or ``"max_keep_last_rate"``.
    check: str
    #: True or False; None when the check was not run.
    passed: bool | None
    #: The worst value seen, None when nothing was measured.
    worst: float | None
    #: The threshold it was judged against.
    bound: float | None
    #: What was seen, in words (why it was not run, when it was not).
    detail: str
    #: The CPU of the worst violation, when it was on one.
    cpu: int | None = None
    #: The task of the worst violation, when it was a task's.
    pid: int | None = None
    #: That task's command name.
    comm: str | None = None
    #: When it was, in seconds since the monitor's first tick.
    at: float | None = None

    @property
    def failed(self) -> bool:
        """Whether the check ran and failed (not merely not run)."""
        return self.passed is False

    def __str__(self) -> str:
        state = {True: "passed", False: "FAILED", None: "not run"}[self.passed]
        return f"{self.check}: {state}: {self.detail}"


def not_run(check: str, bound: float | None, why: str) -> Verdict:
    return Verdict(check, None, None, bound, why)


@dataclass
class Checks:
    """The checks of one monitored block. ``verdicts`` (by check name), ``failures``,
    ``thresholds``; ``samples``, how many judged samples the runqueue checks had, and ``rows``,
    how many per-CPU rows the monitor read; ``plot_path``, where a plot of the samples went
    when one was drawn. ``bool(checks)`` is True when no check failed::

        with kernel_vm.kernel.monitor() as mon:
            kernel_vm.run("stress-ng --cpu 4 -t 10")  # packed: programs=["stress-ng"]
        checks = mon.checks(max_imbalance_ratio=8)
        assert checks, checks.report()
        print(checks["stall"].worst)
    """

    #: The bounds the checks were judged against.
    thresholds: Thresholds
    #: Each check's verdict, by name (``checks["stall"]`` is ``verdicts["stall"]``).
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    #: How many samples (one per ``check_interval_ms``) the runqueue checks judged.
    samples: int = 0
    #: How many per-CPU rows the monitor read.
    rows: int = 0
    #: How long the monitored block lasted, in seconds.
    duration: float = 0.0
    #: Where a plot of the samples was drawn, if one was.
    plot_path: str | None = None

    def __getitem__(self, check: str) -> Verdict:
        try:
            return self.verdicts[check]
        except KeyError:
            raise LiveKernelError(
                f"no check {check!r}: the checks are {', '.join(self.verdicts)}"
            ) from None

    def __iter__(self) -> Iterator[Verdict]:
        return iter(self.verdicts.values())

    @property
    def failures(self) -> list[Verdict]:
        """The verdicts that failed."""
        return [v for v in self if v.failed]

    @property
    def passed(self) -> bool:
        """True when no check failed (a check not run is no failure)."""
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        """Every verdict, one per line, failures first, then what was sampled."""
        lines = [f"ktstr checks: {len(self.failures)} of {len(self.verdicts)} failed"]
        ordered = sorted(self, key=lambda v: (not v.failed, CHECK_NAMES.index(v.check)))
        lines += [f"  {v}" for v in ordered]
        lines.append(
            f"  judged {self.samples} samples (one per {self.thresholds.check_interval_ms:g} ms)"
            f" of {self.rows} per-CPU rows over {self.duration:.2f} s"
        )
        if self.plot_path:
            lines.append(f"  plot of the samples: {self.plot_path}")
        return "\n".join(lines)

    __str__ = report

    def __repr__(self) -> str:
        return self.report()

    def properties(self) -> list[tuple[str, str]]:
        """For junit: each check run and the worst value seen, and how much was sampled."""
        out = [
            ("ktstr_checks_samples", str(self.samples)),
            ("ktstr_checks_rows", str(self.rows)),
        ]
        for v in self:
            state = {True: "passed", False: "failed", None: "not run"}[v.passed]
            out.append((f"ktstr_check_{v.check}", state))
            if v.worst is not None:
                out.append((f"ktstr_check_{v.check}_worst", f"{v.worst:g}"))
        if self.plot_path:
            out.append(("ktstr_checks_plot", self.plot_path))
        return out


class ChecksFailed(AssertionError):
    """A monitored test broke a check: the message is ``Checks.report()``; ``checks`` holds
    every verdict."""

    def __init__(self, checks: Checks) -> None:
        super().__init__(checks.report())
        #: Every verdict.
        self.checks = checks

"""``Samples``: the table a monitor of per-CPU fields fills (``monitor.py`` takes the samples).

Each row is (time since the first tick, CPU, one value per field); one tick adds one row per
CPU, all at once, and then its counts (``ticks``, ``missed_ticks``): a reader in another thread
may see a tick's rows a moment before they are counted, never a tick counted without its rows.
The counts make a monitor that fell behind or stopped visible: ``missed_ticks`` (scheduled
ticks that passed while the thread could not run) and ``max_gap`` (the longest time between two
rows of one CPU).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import LiveKernelError


@dataclass
class Samples:
    """A table: ``rows`` of ``(time, cpu, *values)``; ``column(name)``, ``to_csv()``, ``plot()``.

    What the monitor that filled it did: ``cpus`` it sampled, every ``interval`` seconds from
    ``started`` (``time.monotonic()`` at the first tick, time 0 of the rows); ``ticks`` taken (each
    one row per CPU), ``missed_ticks`` (due while the thread could not run, skipped rather than
    taken late in a bunch); ``scheduled_ticks``, their sum; ``max_gap(cpu)``."""

    #: The member paths read, one column each.
    fields: tuple[str, ...]
    #: ``(seconds since the first tick, cpu, one value per field)``, one a CPU a tick.
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    #: The CPUs sampled.
    cpus: tuple[int, ...] = ()
    #: Seconds between ticks.
    interval: float = 0.0
    #: ``time.monotonic()`` at the first tick.
    started: float = 0.0
    #: Ticks taken.
    ticks: int = 0
    #: Ticks that fell due while the thread could not run, skipped.
    missed_ticks: int = 0

    @property
    def scheduled_ticks(self) -> int:
        """The ticks due from the first to the last: ``ticks + missed_ticks``."""
        return self.ticks + self.missed_ticks

    def max_gap(self, cpu: int | None = None) -> float:
        """The longest time in seconds between two consecutive rows of ``cpu`` (of any one CPU
        when None); 0.0 with fewer than two. About ``interval`` for a monitor that kept up:
        ``missed_ticks`` says how many ticks were lost, this how long the longest blind spot
        was, during which nothing was seen."""
        last: dict[int, float] = {}
        gap = 0.0
        for row in self.rows:
            at, which = row[0], row[1]
            if cpu is None or which == cpu:
                before = last.get(which)
                if before is not None and at - before > gap:
                    gap = at - before
                last[which] = at
        return gap

    @property
    def columns(self) -> tuple[str, ...]:
        """The column names: ``"time"``, ``"cpu"``, then the fields."""
        return ("time", "cpu", *self.fields)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str, cpu: int | None = None) -> list[Any]:
        """One column's values, of every CPU or of ``cpu``."""
        if name not in self.columns:
            raise LiveKernelError(f"no column {name!r}: the columns are {', '.join(self.columns)}")
        at = self.columns.index(name)
        return [row[at] for row in self.rows if cpu is None or row[1] == cpu]

    def plot(self, path: str | os.PathLike[str], *, title: str = "") -> None:
        """A PNG at ``path``: a panel per field, each CPU's values as steps (the samples are
        what was read at each tick, not a curve between them), CPUs offset a little so equal
        values stay visible. A field that only ever grows (``clock``, a counter) is drawn as
        its rate of change per second, where 0 is a stand-still (which an idle CPU's clock
        rightly shows: its tick is stopped). Needs matplotlib: ``pip install
        'pytest-ktstr-vmlinux[plot]'``; the checks' own plot is ``checks.plot``."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # a file, never a window
            import matplotlib.pyplot as plt
        except ImportError:
            raise LiveKernelError(
                f"plotting samples to {os.fspath(path)} needs matplotlib: pip install"
                " 'pytest-ktstr-vmlinux[plot]' (or matplotlib); to_csv() needs nothing"
            ) from None
        cpus = sorted(set(self.column("cpu")))
        height = 2.0 * len(self.fields) + 1.0
        fig, axes = plt.subplots(
            len(self.fields), 1, sharex=True, squeeze=False, figsize=(10, height)
        )
        try:
            for ax, name in zip(axes[:, 0], self.fields, strict=True):
                growing = all(_grows(self.column(name, cpu)) for cpu in cpus)
                spread = 0.0 if growing else 0.25 / max(1, len(cpus))
                for i, cpu in enumerate(cpus):
                    times, values = self.column("time", cpu), self.column(name, cpu)
                    if growing:
                        times, values = times[1:], _per_second(times, values)
                    shown = [v + i * spread if isinstance(v, (int, float)) else v for v in values]
                    ax.step(times, shown, where="post", label=f"CPU {cpu}", linewidth=1)
                ax.set_ylabel(f"{name}\n(per second)" if growing else name)
            axes[0, 0].legend(
                loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small", frameon=False
            )
            axes[-1, 0].set_xlabel("seconds")
            interval = f"every {self.interval * 1000:g} ms, " if self.interval else ""
            heading = f"{title}\n" if title else ""
            fig.suptitle(f"{heading}{interval}{len(cpus)} CPUs", fontsize="medium")
            fig.tight_layout()
            fig.savefig(path, format="png", dpi=90)
        finally:
            plt.close(fig)

    def to_csv(self) -> str:
        """The table as CSV text, a header row of ``columns`` first."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()


def _grows(values: list[Any]) -> bool:
    """Whether a column only ever grows (a clock, a counter): numbers, never falling."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return len(numbers) == len(values) > 1 and all(a <= b for a, b in itertools.pairwise(numbers))


def _per_second(times: list[float], values: list[Any]) -> list[float]:
    return [
        (b - a) / (t1 - t0) if t1 > t0 else 0.0
        for t0, t1, a, b in zip(times, times[1:], values, values[1:], strict=False)
    ]

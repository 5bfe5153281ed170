"""``Samples``: the table a monitor of per-CPU fields fills (monitor.py takes the samples).

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
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import LiveKernelError


@dataclass
class Samples:
    """A table: ``rows`` of (time, cpu, *values); ``column(name)``, ``to_csv()``, ``plot()``.

    What the monitor that filled it did: ``cpus`` it sampled, every ``interval`` seconds from
    ``started`` (``time.monotonic()`` at the first tick, time 0 of the rows); ``ticks`` taken (each
    one row per CPU), ``missed_ticks`` (due while the thread could not run, skipped rather than
    taken late in a bunch); ``scheduled_ticks``, their sum; ``max_gap(cpu)``."""

    fields: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    cpus: tuple[int, ...] = ()
    interval: float = 0.0
    started: float = 0.0
    ticks: int = 0
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
        return ("time", "cpu", *self.fields)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str, cpu: int | None = None) -> list[Any]:
        """One column's values, of every CPU or of ``cpu``."""
        if name not in self.columns:
            raise LiveKernelError(f"no column {name!r}: the columns are {', '.join(self.columns)}")
        at = self.columns.index(name)
        return [row[at] for row in self.rows if cpu is None or row[1] == cpu]

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A PNG at ``path``: one panel per field, one line per CPU, over time (a stall shows
        as a flat line). Needs matplotlib: ``pip install 'pytest-ktstr-vmlinux[plot]'``."""
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
        height = 2.2 * len(self.fields)
        fig, axes = plt.subplots(
            len(self.fields), 1, sharex=True, squeeze=False, figsize=(8, height)
        )
        try:
            for ax, name in zip(axes[:, 0], self.fields, strict=True):
                for cpu in cpus:
                    ax.plot(self.column("time", cpu), self.column(name, cpu), label=f"CPU {cpu}")
                ax.set_ylabel(name)
            axes[0, 0].legend(loc="upper right", fontsize="small")
            axes[-1, 0].set_xlabel("seconds")
            fig.savefig(path, format="png")
        finally:
            plt.close(fig)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return out.getvalue()

"""Sampling per-CPU fields of the live kernel while the guest runs: ``Samples``.

The samples are taken on a host thread of their own at a fixed interval (the guest is never
stopped); each row is (time since the start, CPU, one value per field). A field is a member
path of the per-CPU variable (``runqueues``: ``nr_running``, ``clock``, ``cfs.nr_running``),
looked up afresh for each sample, so a pointer on the way is followed as it is then.
"""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LiveKernelError
from .objects import Object


@dataclass
class Samples:
    """A table: ``rows`` of (time, cpu, *values); ``column(name)``, ``to_csv()``."""

    fields: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

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


def sample(
    per_cpu: Callable[[int], Object],
    cpus: Sequence[int],
    fields: Sequence[str],
    *,
    interval: float,
    duration: float,
) -> Samples:
    """Sample ``fields`` of ``per_cpu(cpu)`` on ``cpus`` every ``interval`` seconds for
    ``duration`` seconds, on a host thread; the table when done."""
    if interval <= 0 or duration < 0:
        raise ValueError(f"interval={interval}, duration={duration}: interval > 0, duration >= 0")
    chosen = tuple(cpus)
    if not chosen:
        raise LiveKernelError("no CPUs to sample")
    readers = {cpu: [_reader(per_cpu(cpu), path) for path in fields] for cpu in chosen}
    table = Samples(tuple(fields))
    failed: list[BaseException] = []

    def run() -> None:
        start = time.monotonic()
        tick = 0
        try:
            while (now := time.monotonic() - start) <= duration:
                for cpu, reads in readers.items():
                    table.rows.append((now, cpu, *(read() for read in reads)))
                tick += 1
                time.sleep(max(0.0, tick * interval - (time.monotonic() - start)))
        except BaseException as e:  # re-raised in the caller's thread
            failed.append(e)

    thread = threading.Thread(target=run, name="ktstr-live-sample", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return table


def _reader(base: Object, path: str) -> Callable[[], Any]:
    """Reads ``base``'s member ``path`` (a missing one fails now, with close matches, not in
    the sampling thread): a view of its bytes when no pointer leads there, else a fresh lookup
    each time, since a pointer on the way may change."""
    member = base.member_(path)
    if member.fixed_:
        return member.reader_()
    return lambda: base.member_(path).value_()

"""What the host monitor's checks allow: ktstr's names and defaults, each settable per test.

The names are ktstr's (``Assert`` and ``MonitorThresholds``), so its users recognise them; the
defaults are ``Assert::default_checks()``'s. One addition: ktstr's monitor samples about every
100 ms, and its ``sustained_samples=5`` means half a second; ours reads every CPU far more often
(the plot and the starvation gaps use every row), and the runqueue checks judge one sample per
``check_interval_ms`` (100 by default), so ``sustained_samples`` keeps ktstr's meaning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LiveKernelError


@dataclass(frozen=True)
class Thresholds:
    """Every check's bound. ``not_starved``/``max_gap_ms``: every workload task ran within
    ``max_gap_ms`` while runnable; ``fail_on_stall``: no CPU with runnable tasks whose rq clock
    stands still for ``sustained_samples`` samples; ``max_imbalance_ratio``: busiest over idlest
    CPU's ``nr_running``; ``max_local_dsq_depth``: a CPU's sched_ext local DSQ; the event rates,
    per second over all CPUs. A violation of the runqueue and event checks must last
    ``sustained_samples`` consecutive samples, one per ``check_interval_ms``."""

    #: Check that no workload task waits, runnable, longer than ``max_gap_ms``.
    not_starved: bool = True
    #: The longest a runnable workload task may go without running, in ms.
    max_gap_ms: float = 2000.0
    #: Check that no CPU with runnable tasks has an rq clock standing still.
    fail_on_stall: bool = True
    #: How many consecutive samples a violation of the runqueue and event checks must last.
    sustained_samples: int = 5
    #: The most the busiest CPU's ``nr_running`` may be over the idlest's.
    max_imbalance_ratio: float = 4.0
    #: The most tasks a CPU's sched_ext local DSQ may hold.
    max_local_dsq_depth: int = 50
    #: The most ``SCX_EV_SELECT_CPU_FALLBACK`` events per second, over all CPUs.
    max_fallback_rate: float = 200.0
    #: The most ``SCX_EV_DISPATCH_KEEP_LAST`` events per second, over all CPUs.
    max_keep_last_rate: float = 100.0
    #: How far apart the samples the runqueue and event checks judge are, in ms.
    check_interval_ms: float = 100.0

    @classmethod
    def of(cls, overrides: Mapping[str, Any] | None = None, /, **more: Any) -> Thresholds:
        """The defaults with ``overrides`` (and keyword arguments) set; a name that is no
        threshold, or a value it cannot be, is a LiveKernelError naming it and the choices."""
        given = {**(overrides or {}), **more}
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise LiveKernelError(
                f"unknown check threshold {', '.join(map(repr, unknown))}: the thresholds are"
                f" {', '.join(known)}"
            )
        values = {name: _validate(name, known[name].type, value) for name, value in given.items()}
        return cls(**values)

    def merged(self, overrides: Mapping[str, Any]) -> Thresholds:
        """These thresholds with ``overrides`` set on top (a per-test marker over defaults)."""
        return Thresholds.of({**dataclasses.asdict(self), **overrides})


def _validate(name: str, kind: object, value: Any) -> Any:
    if kind in (bool, "bool"):
        return _validate_bool(name, value)
    if kind in (int, "int"):
        return _validate_count(name, value)
    return _validate_bound(name, value)


def _validate_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise LiveKernelError(f"{name}={value!r}: True or False")
    return value


def _validate_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LiveKernelError(f"{name}={value!r}: a whole number >= 1")
    return value


def _validate_bound(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiveKernelError(f"{name}={value!r}: a number")
    if math.isnan(value) or value < 0:
        raise LiveKernelError(f"{name}={value!r}: a number >= 0")
    if name in ("check_interval_ms",) and value == 0:
        raise LiveKernelError(f"{name}={value!r}: a number > 0")
    return float(value)

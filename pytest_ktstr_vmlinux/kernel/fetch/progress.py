"""What a fetch says while it works: each step, and each package's bytes and rate as it downloads.

Hundreds of MB take a while: on a terminal one line per package is redrawn in place, as pip and
apt draw theirs; in a log (CI, a pipe) a line is written when a package starts, at each quarter
and when it is done, so the log shows progress without thousands of lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

MB = 1_000_000
_REDRAW_SECONDS = 0.1
_LOG_QUARTERS = 4


class Progress(Protocol):
    """Where a fetch reports. ``step`` is a phase (updating lists, unpacking); ``transfer`` a
    package's download so far (``total`` is its size from the lists)."""

    def step(self, message: str) -> None: ...

    def transfer(self, package: str, done: int, total: int, seconds: float) -> None: ...


class Silent:
    """Reports nothing (the library's default)."""

    def step(self, message: str) -> None:
        pass

    def transfer(self, package: str, done: int, total: int, seconds: float) -> None:
        pass


@dataclass
class TerminalProgress:
    """Reports through ``write`` (text with its own line ends), redrawing on a terminal."""

    write: Callable[[str], None]
    tty: bool
    prefix: str = "ktstr"
    _drawn: dict[str, float] = field(default_factory=dict)
    _quarters: dict[str, int] = field(default_factory=dict)
    _open_line: bool = False

    def step(self, message: str) -> None:
        self._end_line()
        self.write(f"{self.prefix}: {message}\n")

    def transfer(self, package: str, done: int, total: int, seconds: float) -> None:
        finished = total > 0 and done >= total
        line = f"{self.prefix}: downloading {package} {transfer_text(done, total, seconds)}"
        if self.tty:
            now = time.monotonic()
            if not finished and now - self._drawn.get(package, 0.0) < _REDRAW_SECONDS:
                return
            self._drawn[package] = now
            self.write(f"\r{line}\x1b[K" + ("\n" if finished else ""))
            self._open_line = not finished
            return
        quarter = _LOG_QUARTERS if finished else (done * _LOG_QUARTERS // total if total else 0)
        if self._quarters.get(package, -1) >= quarter:
            return
        self._quarters[package] = quarter
        self.write(f"{line}\n")

    def _end_line(self) -> None:
        if self._open_line:
            self.write("\n")
            self._open_line = False


def transfer_text(done: int, total: int, seconds: float) -> str:
    """``146.7/353.1 MB, 81.2 MB/s, 42%``."""
    rate = f"{done / seconds / MB:.1f} MB/s" if seconds > 0 else "-- MB/s"
    percent = f"{100 * done // total}%" if total else "?%"
    return f"{done / MB:.1f}/{total / MB:.1f} MB, {rate}, {percent}"

"""What the guest's helpers (``programs.py``, ``scheduler.py``) need of a guest: ``GuestVM`` has it.

A Protocol, not the class: the helpers are used by ``GuestVM`` and must not import it back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import GuestResult

if TYPE_CHECKING:
    from .qemu import GuestLine


class Guest(Protocol):
    line: GuestLine
    console_path: Path | None
    programs: Mapping[str, str]

    @property
    def alive(self) -> bool: ...
    @property
    def console(self) -> str: ...

    def run(self, command: str, *, timeout: float = ..., check: bool = ...) -> GuestResult: ...
    def put(
        self,
        guest_path: str,
        data: bytes | bytearray | memoryview | str | os.PathLike[str],
        *,
        mode: int | None = ...,
        timeout: float = ...,
    ) -> None: ...
    def get(self, guest_path: str, *, timeout: float = ...) -> bytes: ...
    def shutdown(self) -> None: ...

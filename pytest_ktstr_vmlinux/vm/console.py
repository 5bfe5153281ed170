"""The guest's serial console: a file QEMU writes, read back for ``console`` and for errors.

QEMU writes ttyS0 straight to the file, so a guest that prints a lot never waits for the host,
and the file survives the guest for whoever reads the failure message that names it.
"""

from __future__ import annotations

import re
from pathlib import Path

TAIL_LINES = 30

# What the kernel prints when it dies (panic) or hits a bug it survives (oops, BUG).
_PANIC = re.compile(r"Kernel panic - not syncing")
_OOPS = re.compile(r"\bOops: |\bBUG: |general protection fault")


class Console:
    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", "replace").replace("\r\n", "\n")

    def tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.text().rstrip("\n").split("\n")[-lines:])

    def trouble(self) -> tuple[str, str] | None:
        """``("panic", line)`` or ``("oops", line)`` for the first such line on the console (a
        panic wins over an oops), else None."""
        text = self.text()
        for kind, pattern in (("panic", _PANIC), ("oops", _OOPS)):
            match = pattern.search(text)
            if match is not None:
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                return kind, text[start : end if end >= 0 else len(text)].strip()
        return None

    def report(self, lines: int = TAIL_LINES) -> str:
        """What every failure message ends with: the file, then its last lines."""
        tail = self.tail(lines)
        body = "\n".join(f"  | {line}" for line in tail.split("\n")) if tail else "  (empty)"
        return f"console {self.path}, last {lines} lines:\n{body}"

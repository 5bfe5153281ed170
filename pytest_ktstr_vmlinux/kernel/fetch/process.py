"""The programs a fetch runs (apt-get, apt-cache, apt-helper, dpkg-deb): found before they are
needed, run in the C locale so their words can be read, and never outliving us.

Each runs in a process group of its own that gets SIGKILL when the process that started it dies,
even by SIGKILL (PR_SET_PDEATHSIG): a run killed mid-download leaves no apt-get writing into a
directory the next run is about to clean. Output goes to pipes read to the end, or to files:
nothing here stops reading early, so no program dies of SIGPIPE.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ...children import popen_tied
from ...errors import KernelSpecError

# What the first kill may take before the group is killed for good.
_STOP_WAIT = 5.0


class ToolError(Exception):
    """A program of the fetch failed: ``what`` it was doing, its status and its own words."""

    def __init__(self, what: str, status: int, output: str) -> None:
        self.what = what
        self.status = status
        self.output = output
        super().__init__(f"{what} failed (exit {status}): {last_lines(output)}")


def require_tools(tools: Sequence[str], spec: str, purpose: str) -> dict[str, str]:
    """The path of each tool (a name on PATH, or an absolute path); KernelSpecError naming the
    missing ones and what provides them when any is not there."""
    found: dict[str, str] = {}
    missing = []
    for tool in tools:
        path = tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else shutil.which(tool)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        raise KernelSpecError(
            f"kernel {spec!r}: {purpose} needs {', '.join(missing)}, which this host does not"
            " have: run on a Debian or Ubuntu host (apt-get install apt dpkg), or fetch the"
            " kernel elsewhere and name its files"
        )
    return found


def environment() -> dict[str, str]:
    """The environment the tools run in: ours, in the C locale (their messages are read)."""
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start a tool tied to this process (see the module's docstring)."""
    return popen_tied(argv, cwd=cwd, env=environment(), stdin=stdin, stdout=stdout, stderr=stderr)


def run(argv: Sequence[str], what: str, *, cwd: Path | None = None) -> str:
    """Run a tool to its end; its stdout as text. ToolError with its stderr when it fails."""
    process = spawn(argv, cwd=cwd)
    try:
        out, err = process.communicate()
    except BaseException:
        stop(process)
        raise
    if process.returncode != 0:
        raise ToolError(what, process.returncode, err.decode(errors="replace"))
    return out.decode(errors="replace")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the tool and everything it started (its process group), and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_WAIT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Not its input: a follower (follow.py) writing there owns and closes it.
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def last_lines(output: str, count: int = 4) -> str:
    """What a tool said last, on one line: its errors, where apt puts them (``E:`` lines) when
    it has any."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "Err:"))]
    chosen = (errors or lines)[-count:]
    return " | ".join(chosen) if chosen else "no output"

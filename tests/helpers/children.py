"""Children for tests of concurrent processes: each is ``sys.executable -c CODE`` talking JSON lines
to the parent over its stdout and reading commands from its stdin, so the parent decides exactly
when each step happens (see tests/store/test_store_processes.py). The ``spawn`` fixture in
tests/conftest.py starts them and kills any left running."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60.0

# Runs first in every child: the library is imported before the child reports ready, so a
# barrier releases processes that are all at the same point, not still importing.
PRELUDE = r"""
import hashlib, json, os, sys, time
from pathlib import Path
from pytest_ktstr_vmlinux.store.bytescache import VmlinuxBytesCache
from pytest_ktstr_vmlinux.store.snapshot import SnapshotLoader, snapshot
from pytest_ktstr_vmlinux.store.disk import ArtifactStore

P = json.loads(sys.argv[1])

def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

def command():
    return sys.stdin.readline().strip()

def wait_for(word):
    line = command()
    if line != word:
        raise SystemExit(f"expected {word!r} from the parent, got {line!r}")

def ready():
    emit(ready=os.getpid())
    wait_for("go")

def sha(data):
    return hashlib.sha256(data).hexdigest()

def logging_build(log, kind=""):
    # The payload names its kind, then the source's digest, then the source's bytes.
    def build(path, out):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {kind} {path}\n")
        data = path.read_bytes()
        out.write(kind.encode() + b"\n" + sha(data).encode() + b"\n" + data)
    return build
"""


class Child:
    """A ``python -c`` child speaking JSON lines on stdout; stderr goes to a file (no deadlock)."""

    def __init__(self, logs: Path, name: str, code: str, params: dict[str, Any]) -> None:
        self.name = name
        logs.mkdir(exist_ok=True)
        self.stderr_path = logs / f"{name}.stderr"
        script = PRELUDE + textwrap.dedent(code)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", script, json.dumps(params)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
            )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        """The child's next message; fails the test if it exits or says nothing in time."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                pytest.fail(f"{self.name}: no message in {timeout} s; stderr:\n{self.stderr()}")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self.proc.wait(timeout=CHILD_TIMEOUT)
                    pytest.fail(f"{self.name} exited ({code}) early; stderr:\n{self.stderr()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def finish(self, timeout: float = CHILD_TIMEOUT) -> int:
        """Close its stdin and wait for it to exit; its exit status."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} still running after {timeout} s; stderr:\n{self.stderr()}")
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def finish_cleanly(self) -> None:
        code = self.finish()
        stderr = self.stderr()
        assert code == 0, f"{self.name} exited {code}; stderr:\n{stderr}"
        assert "Traceback" not in stderr, f"{self.name}: {stderr}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=CHILD_TIMEOUT)

    def close(self) -> None:
        """Kill it if it still runs (its test failed) and close the pipes to it."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


Spawn = Callable[..., Child]


def start_together(children: list[Child]) -> None:
    """Barrier: wait until every child is ready, then release them all at once."""
    for child in children:
        assert "ready" in child.receive()
    for child in children:
        child.send("go")

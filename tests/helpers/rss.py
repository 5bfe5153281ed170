"""Peak memory of code run in a fresh interpreter, from the kernel's own account of it.

The child resets its high-water mark (``echo 5 > /proc/self/clear_refs``) once its input is read
and its modules imported, runs the code, and reports VmHWM minus the resident set it started
from: what the code cost at its peak, file pages it touched included, with nothing of the parent
(``ru_maxrss`` carries the parent's peak over fork and exec) or of the imports in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

MIB = 1 << 20

_PRELUDE = '''
import json


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise SystemExit("no " + key + " in /proc/self/status")


def measured(fn):
    """(fn's result, how far the peak resident set rose above the start while it ran)"""
    start = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    result = fn()
    return result, _status("VmHWM:") - start


def report(**values):
    print(json.dumps(values))
'''


def run_measured(code: str, *args: str, cwd: Path) -> dict[str, Any]:
    """Run ``code`` (which calls ``measured`` and ``report``) in a new interpreter, ``args`` in
    its sys.argv[1:], in ``cwd`` (not the checkout: the installed package is imported, or the
    one PYTHONPATH names); what it reported."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("/proc/self/clear_refs is not writable here: the peak cannot be reset")
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result

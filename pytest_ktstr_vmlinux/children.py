"""Child processes that never outlive the process that started them (QEMU, apt-get, dpkg-deb).

Each child runs in a process group of its own, so one kill reaches everything it starts, and gets
SIGKILL when its parent dies, even by SIGKILL, which no cleanup code survives
(PR_SET_PDEATHSIG). The signal follows the thread that forked: children are started from threads
that outlive them (pytest's main thread). A parent that died before prctl took effect is seen by
the child (its parent changed) and the child exits at once.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int) -> None:
    """In the child, before exec: its own process group, and death with ``parent``."""
    os.setpgid(0, 0)
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(126)


def popen_tied(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **options)`` for a child tied to this process (see above)."""
    return subprocess.Popen(
        list(argv), preexec_fn=functools.partial(_child_setup, os.getpid()), **options
    )

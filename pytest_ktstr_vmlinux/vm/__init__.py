"""Boot the kernel under test in QEMU: run commands in it, move files, read its RAM.

No pytest here; ``pytest_ktstr_vmlinux.plugin.vm`` adapts it to the ``kernel_vm`` fixtures. The
plugin imports this package only when a test uses a guest.
"""

from __future__ import annotations

from .boot import boot_guest
from .errors import (
    GuestBootError,
    GuestCommandError,
    GuestError,
    GuestProgramError,
    GuestProtocolError,
    GuestResult,
    GuestStoppedError,
    GuestTimeoutError,
    GuestUnavailableError,
    GuestWarning,
)
from .guest import GuestVM
from .layout import RamRegion
from .memory import GuestMemory
from .qmp import GuestQMP
from .scheduler import Scheduler, SchedulerError
from .topology import Topology

__all__ = [
    "GuestBootError",
    "GuestCommandError",
    "GuestError",
    "GuestMemory",
    "GuestProgramError",
    "GuestProtocolError",
    "GuestQMP",
    "GuestResult",
    "GuestStoppedError",
    "GuestTimeoutError",
    "GuestUnavailableError",
    "GuestVM",
    "GuestWarning",
    "RamRegion",
    "Scheduler",
    "SchedulerError",
    "Topology",
    "boot_guest",
]

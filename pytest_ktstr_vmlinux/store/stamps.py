"""When the store last checked a file of its own in full: the boot, and the file's version.

Reading every byte of a 562 MiB snapshot costs about a second: too much for every open, and the
cheap checks made at every open (header, length, samples) cannot see one byte flipped between
two samples. But a write through the filesystem always moves the written file's stat signature.
So a file whose signature is the one recorded when it was last checked in full, on this boot,
still holds what was checked; the first check after a boot is what finds damage beneath the
filesystem (a failing disk, an edit made while the machine was down).

Before recording a signature the store sets the file's mtime to an exact time of its own: any
later write puts the kernel's clock there instead, so even a write within the same clock tick as
the check moves the signature. That touch is also the file's last use, which eviction reads;
recording one costs an index write, so a use is recorded once per ``USE_TICK_NS`` at most.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from .signature import StatSignature

BOOT_ID = "/proc/sys/kernel/random/boot_id"
USE_TICK_NS = 600 * 1_000_000_000

# [boot id, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns], as the index records it.
Stamp = list[Any]


@functools.cache
def boot_id() -> str:
    """This boot's id; where the kernel gives none, one of this process (checks then hold for
    the process alone)."""
    try:
        text = Path(BOOT_ID).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text or f"process-{os.getpid()}-{time.time_ns()}"


def stamp_of(signature: StatSignature) -> Stamp:
    return [
        boot_id(),
        signature.st_dev,
        signature.st_ino,
        signature.st_size,
        signature.st_mtime_ns,
        signature.st_ctime_ns,
    ]


def is_checked(recorded: object, signature: StatSignature) -> bool:
    """True when ``recorded`` says this very version of the file was checked in full on this
    boot."""
    return recorded == stamp_of(signature)


def is_stamp(value: object) -> bool:
    """The shape of a stamp, for validating the index."""
    return (
        isinstance(value, list)
        and len(value) == 6
        and isinstance(value[0], str)
        and all(type(x) is int for x in value[1:])
    )


def touch(path: Path) -> Stamp:
    """Record ``path`` as checked and used now: set its times exactly, and return its stamp.
    Call it only for a file just checked (or whose stamp was just found current)."""
    now = time.time_ns()
    os.utime(path, ns=(now, now), follow_symlinks=False)
    return stamp_of(StatSignature.from_stat(os.lstat(path)))


def use_is_due(signature: StatSignature) -> bool:
    """True when the file's last recorded use is older than the tick."""
    return signature.st_mtime_ns + USE_TICK_NS < time.time_ns()

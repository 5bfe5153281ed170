"""Exports: an artifact's payload as a plain file, for tools that want a path.

``exports/<artifact name><suffix>`` holds the payload of one artifact (the ELF extracted from an
image is served as ``vmlinux_path``). A test may open that path at any time in its session, so
what is there must be what was published and must stay there: an export is served only once it
is checked against its artifact's digest (in full when its stamp is not current, see stamps.py),
and it is pinned (pins.py) in every process it is served to. Damage is one warning naming the
file, which is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import stamps
from .artifact import ArtifactCorrupt, full_digest
from .evict import remove_path
from .index import record_of
from .indexfile import IndexFile
from .lock import StoreLock
from .pins import Pins
from .publish import publish
from .served import StoredArtifact
from .signature import StatSignature, file_type, not_ours_alone

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | os.O_CLOEXEC


def serve(
    path: Path,
    stored: StoredArtifact,
    suffix: str,
    *,
    index: IndexFile,
    lock: StoreLock,
    pins: Pins,
    owner: int,
    tmp_dir: Path,
    warn: Callable[[str], None],
) -> None:
    """Make ``path`` hold ``stored``'s payload, checked, and pin it: at once when this process
    pinned it already or its stamp is current; else under the store lock, which checks it in
    full, or replaces it (OutOfSpace when there is no room), and records its stamp."""
    if pins.holds(path):
        return
    recorded = _recorded(index.read(), stored, suffix)
    if _serve_if_checked(pins, path, stored, recorded, owner=owner):
        return
    with lock.held():
        current = index.read()
        recorded = _recorded(current, stored, suffix)
        stamp = _serve_checking(
            pins, path, stored, recorded, owner=owner, tmp_dir=tmp_dir, warn=warn
        )
        record = record_of(current, stored.source, stored.signature, stored.kind, stored.version)
        if record is not None and stamp != recorded:
            record.setdefault("exports", {})[suffix] = stamp
            index.write_if_room(current)


def _recorded(index: dict[str, Any], stored: StoredArtifact, suffix: str) -> object:
    """The stamp the index holds for ``stored``'s export with ``suffix``, if any."""
    record = record_of(index, stored.source, stored.signature, stored.kind, stored.version)
    return None if record is None else record.get("exports", {}).get(suffix)


def _serve_if_checked(
    pins: Pins, path: Path, stored: StoredArtifact, recorded: object, *, owner: int
) -> bool:
    """Pin and serve ``path`` without the store lock if its stamp says it was checked in full
    on this boot; False: look again under the lock (_serve_checking)."""
    opened = _open(path, stored, owner)
    if not isinstance(opened, tuple):
        return False
    fd, signature = opened
    if not stamps.is_checked(recorded, signature):
        os.close(fd)
        return False
    return pins.pin(path, fd, signature)


def _serve_checking(
    pins: Pins,
    path: Path,
    stored: StoredArtifact,
    recorded: object,
    *,
    owner: int,
    tmp_dir: Path,
    warn: Callable[[str], None],
) -> stamps.Stamp:
    """Under the store lock: check ``path`` against ``stored`` (in full unless ``recorded`` is
    current), replace it if it is missing or damaged (one ``warn``), pin it; its stamp.
    OutOfSpace when there is no room to write it."""
    assert stored.file is not None
    opened = _open(path, stored, owner)
    stamp: stamps.Stamp | None = None
    if isinstance(opened, tuple):
        fd, signature = opened
        try:
            if stamps.is_checked(recorded, signature):
                stamp = stamps.stamp_of(signature)
            elif _holds(fd, stored.size, stored.file.digest):
                stamp = stamps.touch(path)
            else:
                opened = "checksum mismatch: its bytes are not its artifact's"
        finally:
            os.close(fd)
    if isinstance(opened, str):
        what = f"kernel cache export {path} ({stored.kind} of {stored.source})"
        warn(f"{what} is unusable: {opened}; replacing it")
        remove_path(path)
    if stamp is None:
        publish(path, stored.map(), tmp_dir=tmp_dir, prefix="export-")
        stamp = stamps.touch(path)
    # No eviction runs under the lock, so this pin holds unless something outside the store
    # replaced the file this instant: then the next call looks again.
    reopened = _open(path, stored, owner)
    if isinstance(reopened, tuple):
        fd, signature = reopened
        if stamps.is_checked(stamp, signature):
            pins.pin(path, fd, signature)
        else:
            os.close(fd)
    return stamp


def _open(path: Path, stored: StoredArtifact, owner: int) -> tuple[int, StatSignature] | str | None:
    """(descriptor, signature) of the export at ``path`` if it could be ``stored``'s: a regular
    file, ours alone, of the payload's size. None: there is none. Else why it is unusable."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink, never followed"
        return f"cannot be opened ({e.strerror})"
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        return f"cannot be read ({e.strerror})"
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"{file_type(st.st_mode)}, not a regular file"
    elif (mine := not_ours_alone(st, owner)) is not None:
        problem = mine
    elif st.st_size != stored.size:
        problem = f"{st.st_size} bytes, not the payload's {stored.size}"
    if problem is not None:
        os.close(fd)
        return problem
    return fd, StatSignature.from_stat(st)


def _holds(fd: int, size: int, digest: bytes) -> bool:
    """True when the file at ``fd`` holds exactly the payload whose digest is ``digest``."""
    with os.fdopen(os.dup(fd), "rb") as f, contextlib.suppress(ArtifactCorrupt):
        return full_digest(f, size, offset=0) == digest
    return False

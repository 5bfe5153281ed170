"""Exports: an artifact's payload as a plain file, for tools that want a path.

``exports/<artifact name><suffix>`` holds the payload of one artifact (the ELF extracted from an
image is served as ``vmlinux_path``). A test may open that path at any time in its session, so
what is there must be what was published and must stay there: an export is served only once it
is checked against its artifact's digest (in full when its stamp is not current, see
``index.py``), and it is pinned (``pins.py``) in every process it is served to. Damage is one
warning naming the file, which is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..regularfile import file_type
from .api import StoredArtifact, full_error
from .artifact import ArtifactCorrupt, full_digest
from .files import OPEN_FLAGS, OutOfSpace, not_ours_alone, publish, remove_path
from .index import IndexFile, Stamp, is_checked, record_of, stamp_of, touch
from .lock import StoreLock
from .pins import Pins
from .signature import StatSignature


class Exports:
    """The ``exports/`` directory of the store at ``directory``, and the exports this object
    pinned (kept while it lives)."""

    def __init__(
        self,
        directory: Path,
        exports_dir: Path,
        *,
        index: IndexFile,
        lock: StoreLock,
        owner: int,
        tmp_dir: Path,
        warn: Callable[[str], None],
    ) -> None:
        self._directory = directory
        self._exports = exports_dir
        self._index = index
        self._lock = lock
        self._owner = owner
        self._tmp = tmp_dir
        self._warn = warn
        self._pins = Pins()

    def serve(self, stored: StoredArtifact, suffix: str) -> Path:
        """``exports/<artifact name><suffix>`` holding ``stored``'s payload, checked and pinned:
        at once when this process pinned it already or its stamp is current; else under the
        store lock, which checks it in full, or replaces it, and records its stamp.
        StoreFullError when there is no room to write it."""
        assert stored.file is not None
        path = self._exports / f"{stored.file.path.stem}{suffix}"
        try:
            self._serve(path, stored, suffix)
        except OutOfSpace as e:
            what = f"writing an export of the {stored.kind} artifact of {stored.source}"
            raise full_error(self._directory, e, what, e.needed) from None
        return path

    def _serve(self, path: Path, stored: StoredArtifact, suffix: str) -> None:
        pins, owner = self._pins, self._owner
        if pins.holds(path):
            return
        recorded = _recorded(self._index.read(), stored, suffix)
        if _serve_if_checked(pins, path, stored, recorded, owner=owner):
            return
        with self._lock.held():
            current = self._index.read()
            recorded = _recorded(current, stored, suffix)
            stamp = _serve_checking(
                pins, path, stored, recorded, owner=owner, tmp_dir=self._tmp, warn=self._warn
            )
            record = record_of(
                current, stored.source, stored.signature, stored.kind, stored.version
            )
            if record is not None and stamp != recorded:
                record.setdefault("exports", {})[suffix] = stamp
                self._index.write_if_room(current)


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
    if not is_checked(recorded, signature):
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
) -> Stamp:
    """Under the store lock: check ``path`` against ``stored`` (in full unless ``recorded`` is
    current), replace it if it is missing or damaged (one ``warn``), pin it; its stamp.
    OutOfSpace when there is no room to write it."""
    assert stored.file is not None
    opened = _open(path, stored, owner)
    stamp: Stamp | None = None
    if isinstance(opened, tuple):
        fd, signature = opened
        try:
            if is_checked(recorded, signature):
                stamp = stamp_of(signature)
            elif _holds(fd, stored.size, stored.file.digest):
                stamp = touch(path)
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
        stamp = touch(path)
    # No eviction runs under the lock, so this pin holds unless something outside the store
    # replaced the file this instant: then the next call looks again.
    reopened = _open(path, stored, owner)
    if isinstance(reopened, tuple):
        fd, signature = reopened
        if is_checked(stamp, signature):
            pins.pin(path, fd, signature)
        else:
            os.close(fd)
    return stamp


def _open(path: Path, stored: StoredArtifact, owner: int) -> tuple[int, StatSignature] | str | None:
    """(descriptor, signature) of the export at ``path`` if it could be ``stored``'s: a regular
    file, ours alone, of the payload's size. None: there is none. Else why it is unusable."""
    try:
        fd = os.open(path, OPEN_FLAGS)
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

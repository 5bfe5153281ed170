"""Where the on-disk store lives, and whether that directory is safe to trust.

The store holds files other processes map and parse, so, like ssh with ``~/.ssh``, it refuses a
directory another user owns or others can write: whoever can write there can feed every test run
bytes of their choosing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from ..regularfile import file_type
from .api import InsecureStoreError, NotAStoreError, StoreUnavailableError, full_error
from .files import fsync_dir, is_full, read_private
from .index import INDEX_MAGIC, INDEX_NAME

STORE_NAME = "pytest-ktstr-vmlinux"
DEFAULT_MAX_SIZE = 8 << 30
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_ATTEMPTS = 5
MARKER_NAME = ".ktstr-store"
MARKER_TEXT = """\
This directory is a pytest-ktstr-vmlinux artifact store. The store wrote this file when it
created the directory (or found it empty) and works only in directories that have it. It
empties tmp/, artifacts/ and exports/ and removes files it did not make: keep no files of your
own here. Empty it with `python -m pytest_ktstr_vmlinux cache clear`, or delete it whole.
"""
LOCK_NAME = "lock"
ARTIFACTS_DIR = "artifacts"
TMP_DIR = "tmp"
EXPORTS_DIR = "exports"
# What each subdirectory of a store holds: hash-named artifacts and exports, temp files.
_LAYOUT = {
    ARTIFACTS_DIR: re.compile(r"[0-9a-f]{64}\.art", re.ASCII),
    TMP_DIR: re.compile(r"(?:build|index|export)-[^/]*\.tmp", re.ASCII),
    EXPORTS_DIR: re.compile(r"[0-9a-f]{64}(?:\.[^/]*)?", re.ASCII),
}


def cannot(path: Path, error: OSError, doing: str) -> StoreUnavailableError:
    """StoreFullError when ``error`` says the disk is full, else StoreUnavailableError."""
    if is_full(error):
        return full_error(path, error, f"trying to {doing}", None)
    return StoreUnavailableError(f"kernel cache {path}: cannot {doing}: {error.strerror}")


def default_store_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-ktstr-vmlinux``, else ``~/.cache/pytest-ktstr-vmlinux``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / STORE_NAME


def parse_size(text: str) -> int:
    """Bytes from ``"8GiB"``, ``"512M"``, ``"1.5G"`` or ``"1000000"`` (binary units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 8GiB, 512M, 1000000)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def prepare_store_dir(path: Path) -> Path:
    """Create ``path`` 0700 if needed and check it is ours alone; returns its absolute path.

    Raises InsecureStoreError for a directory someone else could write, StoreUnavailableError
    when it cannot be created or written.
    """
    path = Path(os.path.abspath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as e:
        raise cannot(path, e, "create it") from None
    check_store_dir(path)
    if not os.access(path, os.W_OK | os.X_OK) or _read_only_fs(path):
        raise StoreUnavailableError(f"kernel cache {path}: not writable")
    claim_store_dir(path)
    return path


def claim_store_dir(path: Path) -> None:
    """Make sure ``path`` is a store before anything in it is emptied or removed.

    A store is marked (MARKER_NAME, written first in a directory the store creates). An empty
    directory is marked and used; so is a store from before the marker, recognized only when
    everything in it is the store's own (its index, lock, and hash-named files in artifacts/,
    tmp/ and exports/). Anything else is NotAStoreError: the directory is never touched.
    """
    marker = path / MARKER_NAME
    for _ in range(_ATTEMPTS):
        try:
            st = os.lstat(marker)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            return
        names = sorted(os.listdir(path))
        if MARKER_NAME in names and st is None:
            continue  # another process marked it between the two looks
        foreign = names if st is not None else _foreign_entries(path, names)
        if foreign:
            raise NotAStoreError(_not_a_store(path, foreign))
        _write_marker(marker)
    raise StoreUnavailableError(f"kernel cache {path}: keeps changing under us; run again")


def _not_a_store(path: Path, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return (
        f"kernel cache {path} is not empty and is not a store: it has no {MARKER_NAME} file"
        f" (written in every directory the store creates) and holds {shown}. The store empties"
        " its tmp/, artifacts/ and exports/ and removes files it did not make, so it never takes"
        " over a directory it did not create. Point ktstr_cache_dir (or KTSTR_CACHE_DIR,"
        f" --kernel-cache-dir) at an empty or new directory, such as {path / 'ktstr-cache'}"
    )


def _foreign_entries(path: Path, names: list[str]) -> list[str]:
    """What in ``path`` is not the store's own, as a store without the marker would hold it
    (its index is required); empty when there is nothing."""
    if not names:
        return []
    foreign = [n for n in names if n not in (INDEX_NAME, LOCK_NAME, *_LAYOUT)]
    if foreign:
        return foreign
    if INDEX_NAME not in names:
        return [f"{', '.join(names)} but no {INDEX_NAME}"]
    for name in names:
        entry = path / name
        st = os.lstat(entry)
        if name == INDEX_NAME and not _is_store_index(entry):
            return [f"{name} (not the store's index)"]
        if name == LOCK_NAME and not (stat.S_ISREG(st.st_mode) and st.st_size == 0):
            return [f"{name} (not an empty lock file)"]
        if name in _LAYOUT:
            if not stat.S_ISDIR(st.st_mode):
                return [f"{name} ({file_type(st.st_mode)})"]
            for child in sorted(os.listdir(entry)):
                mode = os.lstat(entry / child).st_mode
                if not stat.S_ISREG(mode) or not _LAYOUT[name].fullmatch(child):
                    return [f"{name}/{child}"]
    return []


def _is_store_index(path: Path) -> bool:
    try:
        raw = read_private(path, os.geteuid())
    except ValueError:
        return False
    return raw is not None and raw.startswith(f"{INDEX_MAGIC} ".encode())


def _write_marker(marker: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(marker, flags, 0o600)
    except FileExistsError:
        return  # another process marked it first
    except OSError as e:
        raise cannot(marker.parent, e, "mark it as a store") from None
    # Its existence is what marks the store: if the disk is full, it stays, empty.
    try:
        os.write(fd, MARKER_TEXT.encode())
        os.fsync(fd)
        fsync_dir(marker.parent)
    except OSError as e:
        raise cannot(marker.parent, e, "mark it as a store") from None
    finally:
        os.close(fd)


def check_store_dir(path: Path) -> None:
    """Refuse a store directory another user owns or that group/others may write."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise StoreUnavailableError(f"kernel cache {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InsecureStoreError(
            f"kernel cache {path} is not a directory; remove it or pick another"
        )
    if st.st_uid != os.geteuid():
        raise InsecureStoreError(
            f"kernel cache {path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()});"
            f" refusing to trust it. Use your own directory (--kernel-cache-dir) or"
            f" `chown {os.geteuid()} {path}` if it really is yours"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InsecureStoreError(
            f"kernel cache {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can"
            f" write it; refusing to trust it. Fix with `chmod 700 {path}`"
        )


def prepare_subdir(path: Path, warn: Callable[[str], None]) -> Path:
    """The store's own subdirectory ``path``: created 0700 when missing, and when something
    other than a directory has taken its place (a file, a FIFO), that is removed (one ``warn``)
    and the directory made again. A symlink is refused: it could point anywhere."""
    for _ in range(_ATTEMPTS):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass  # another process made it (or something else) a moment ago: look again
            except OSError as e:
                raise cannot(path, e, "create it") from None
            continue
        if stat.S_ISLNK(st.st_mode):
            raise InsecureStoreError(f"kernel cache {path} is a symlink; remove it: `rm {path}`")
        if stat.S_ISDIR(st.st_mode):
            _check_subdir(path, st)
            return path
        warn(
            f"kernel cache {path} is not a directory ({file_type(st.st_mode)});"
            " replacing it with an empty one"
        )
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)  # IsADirectoryError: another process already replaced it
    raise StoreUnavailableError(f"kernel cache {path}: keeps changing under us; run again")


def _check_subdir(path: Path, st: os.stat_result) -> None:
    """Refuse a subdirectory someone else could have written: whoever could write it may have
    planted files or swapped two artifacts' names, so its contents cannot be trusted."""
    if st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(st.st_mode)
        problem = f"has mode {mode:04o}: group or others can write it"
    else:
        return
    raise InsecureStoreError(
        f"kernel cache {path} {problem}, so what is in it may have been planted; refusing to"
        f" trust it. Remove it (`rm -rf {path}`): the store builds it again"
    )


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError as e:
        return e.errno == errno.EROFS

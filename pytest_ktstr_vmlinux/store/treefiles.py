"""The files of one published tree: its record (``tree.json``), the signatures that check it, its
last use, and its removal. ``trees.py`` keeps the trees; this module knows one at a time.

A record is JSON the store wrote: read without following a link, from a regular file ours alone
and of bounded size, and every entry checked (a plain relative path, a file or a link) before
anything is opened by it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KernelArtifactError
from .files import OPEN_FLAGS, fsync_dir, not_ours_alone, use_is_due

RECORD_NAME = "tree.json"
USED_NAME = "used"
_MAX_RECORD = 16 << 20


class TreeDamaged(KernelArtifactError):
    """A published tree is not what was published: a file of it changed, went or was added
    where a recorded one was. Remove it and build it again."""


@dataclass(frozen=True)
class TreeUsage:
    """What eviction and listings need of a tree: its size, its last use, whether it is held."""

    name: str
    path: Path
    size: int
    used_ns: int
    record: dict[str, Any]


def tree_usage(path: Path, owner: int) -> TreeUsage:
    """The size a tree's record gives (else what its files take) and its last use."""
    record: dict[str, Any] = {}
    size = None
    try:
        fd = os.open(path / RECORD_NAME, OPEN_FLAGS)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            body = read_record(fd, os.fstat(fd), path / RECORD_NAME, owner)
            record, size = body["record"], body["size"]
        except TreeDamaged:
            pass
        finally:
            os.close(fd)
    if size is None:
        size = _du(path)
    try:
        used_ns = os.lstat(path / USED_NAME).st_mtime_ns
    except OSError:
        used_ns = 0
    return TreeUsage(path.name, path, size, used_ns, record)


def remove_tree(path: Path, staging: Path) -> bool:
    """Remove the tree at ``path`` unless a process holds a pin on it; True when it is gone.

    Held exclusively, it is renamed into ``staging`` (it is gone for every reader at that
    instant) before its files are removed; a pin taken after the rename is on a file no longer
    at the tree's path, which the pinning process sees (Pins.pin)."""
    try:
        fd = os.open(path / RECORD_NAME, OPEN_FLAGS)
    except FileNotFoundError:
        fd = -1  # no record: damage or a stray directory, pinned by nobody
    except OSError:
        fd = -1
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        doomed = staging / f"removed-{secrets.token_hex(8)}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return True
    finally:
        if fd >= 0:
            os.close(fd)
    remove_tree_dir(doomed)
    return True


# --- internals ---------------------------------------------------------------------------------


def _entries(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every entry under ``root`` but directories (symlinks to directories included), in a fixed
    order: (path relative to ``root``, path, its lstat)."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(Path(directory, d))]):
            path = Path(directory, name)
            yield path.relative_to(root).as_posix(), path, os.lstat(path)


def freeze(root: Path) -> list[dict[str, Any]]:
    """Make every file under ``root`` read-only and list it with its signature and SHA-256:
    regular files and symlinks only, nothing reaching out of ``root``."""
    files: list[dict[str, Any]] = []
    for relative, path, st in _entries(root):
        if stat.S_ISLNK(st.st_mode):
            files.append({"path": relative, "type": "link", "target": os.readlink(path)})
            continue
        if not stat.S_ISREG(st.st_mode):
            raise KernelArtifactError(f"{path}: not a regular file; a tree holds files only")
        digest, st = _seal(path, hash_it=True)
        entry = {"path": relative, "type": "file", "size": st.st_size, "sig": _sig(st)}
        files.append({**entry, "sha256": digest})
    _fsync_dirs(root)
    return files


def refreeze(root: Path, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``files`` (whose content ``same_content`` found under ``root``) with the signatures their
    files have now, made read-only again."""
    out = []
    for entry in files:
        if entry["type"] == "file":
            _, st = _seal(root / entry["path"], hash_it=False)
            entry = {**entry, "sig": _sig(st)}
        out.append(entry)
    _fsync_dirs(root)
    return out


def _seal(path: Path, *, hash_it: bool) -> tuple[str, os.stat_result]:
    """Make ``path`` read-only and durable: its SHA-256 (when asked) and its stat after."""
    os.chmod(path, 0o444)
    fd = os.open(path, OPEN_FLAGS)
    try:
        digest = _sha256(fd) if hash_it else ""
        os.fsync(fd)
        return digest, os.fstat(fd)
    finally:
        os.close(fd)


def _fsync_dirs(root: Path) -> None:
    for directory, _, _ in os.walk(root):
        fsync_dir(Path(directory))


def same_content(root: Path, files: list[dict[str, Any]]) -> bool:
    """Whether ``root`` holds exactly the entries ``files`` lists with the bytes they had when
    published (each file's SHA-256), whatever their inodes and times: a tree copied or restored
    from an archive. False for a record without hashes (published before they were kept)."""
    listed = {entry["path"]: entry for entry in files}
    seen = 0
    for relative, path, st in _entries(root):
        entry = listed.get(relative)
        if entry is None:
            return False
        seen += 1
        if entry["type"] == "link":
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != entry["target"]:
                return False
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["size"] or "sha256" not in entry:
            return False
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) or _sha256(fd) != entry["sha256"]:
                return False
        finally:
            os.close(fd)
    return seen == len(listed)


def _sha256(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def verify(root: Path, files: list[dict[str, Any]]) -> None:
    for entry in files:
        path = root / entry["path"]
        try:
            st = os.lstat(path)
        except OSError as e:
            raise TreeDamaged(f"kernel cache tree {root.parent}: {path}: {e.strerror}") from None
        if entry["type"] == "link":
            if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != entry["target"]:
                raise TreeDamaged(f"kernel cache tree {root.parent}: {path} is not the link it was")
        elif _sig(st) != entry["sig"]:
            raise TreeDamaged(
                f"kernel cache tree {root.parent}: {path} changed since it was published"
            )


def _sig(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def read_json(fd: int, st: os.stat_result, path: Path, owner: int) -> dict[str, Any]:
    if not stat.S_ISREG(st.st_mode):
        raise TreeDamaged(f"kernel cache {path} is not a regular file")
    problem = not_ours_alone(st, owner)
    if problem is not None:
        raise TreeDamaged(f"kernel cache {path} is {problem}")
    if st.st_size > _MAX_RECORD:
        raise TreeDamaged(f"kernel cache {path} is {st.st_size} bytes: not a record of ours")
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    try:
        value = json.loads(b"".join(chunks))
    except ValueError as e:
        raise TreeDamaged(f"kernel cache {path} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise TreeDamaged(f"kernel cache {path} is not a record of ours")
    return value


def read_record(fd: int, st: os.stat_result, path: Path, owner: int) -> dict[str, Any]:
    body = read_json(fd, st, path, owner)
    files = body.get("files")
    valid = (
        body.get("name") == path.parent.name
        and isinstance(body.get("record"), dict)
        and type(body.get("size")) is int
        and isinstance(files, list)
        and all(_valid_file(f) for f in files)
    )
    if not valid:
        raise TreeDamaged(f"kernel cache tree record {path} is malformed")
    return body


def _valid_file(entry: object) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return False
    parts = entry["path"].split("/")
    if entry["path"].startswith("/") or any(p in ("", ".", "..") for p in parts):
        return False
    if entry.get("type") == "link":
        return isinstance(entry.get("target"), str)
    sig = entry.get("sig")
    return (
        entry.get("type") == "file"
        and type(entry.get("size")) is int
        and isinstance(sig, list)
        and len(sig) == 6
        and all(type(x) is int for x in sig)
    )


def record_use(path: Path) -> None:
    # A use is recorded at most once a tick: eviction needs the order, not the instant.
    with contextlib.suppress(OSError):
        if use_is_due(os.lstat(path).st_mtime_ns):
            touch(path)


def touch(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        now = time.time_ns()
        os.utime(fd, ns=(now, now))
    finally:
        os.close(fd)


def _du(path: Path) -> int:
    total = 0
    for directory, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(Path(directory, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def remove_tree_dir(path: Path) -> None:
    # Directories stay 0700 (only files are made read-only), so removal needs no chmod.
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

"""The store's index (``index.json``): which artifact files were built from which version of
which source, and when each file was last checked in full.

A header line (magic, version, SHA-256 of the body), then JSON. Readers check all three and the
shape of every entry before trusting any of it: the index names files the store will open, so an
entry that is not a hash-named artifact is refused outright, and a malformed entry costs only
itself (dropped with one warning, the index written back without it). A full disk is a
StoreFullError; writes that only record what a later call would find out again (stamps, settled
racy sources) are skipped when there is no room or, for stamps, when the lock is taken.

A stamp says a file was checked in full (every byte against its digest: a second for a 562 MiB
snapshot) on this boot, at this stat signature. A write through the filesystem always moves the
signature, all the more as the store first sets the file's mtime to an exact time of its own
(which is also its last use, read by eviction); so a file whose stamp is current still holds what
was checked, and the first open after a boot finds damage beneath the filesystem.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import KernelArtifactError
from .api import StoreFullError, check_key, full_error
from .files import OutOfSpace, publish, read_private, remove_path
from .lock import StoreLock
from .signature import StatSignature, sha256_file

INDEX_NAME = "index.json"
INDEX_MAGIC = "pytest-ktstr-vmlinux-index"
INDEX_VERSION = 1
BOOT_ID = "/proc/sys/kernel/random/boot_id"

# [boot id, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns], as the index records it.
Stamp = list[Any]


class IndexFile:
    """``index.json`` of the store at ``directory``: read, repaired, written atomically."""

    def __init__(
        self,
        directory: Path,
        *,
        tmp_dir: Path,
        owner: int,
        lock: StoreLock,
        warn: Callable[[str], None],
    ) -> None:
        self.directory = directory
        self.path = directory / INDEX_NAME
        self._tmp = tmp_dir
        self._owner = owner
        self._lock = lock
        self._warn = warn

    def read(self) -> dict[str, Any]:
        """The index, or an empty one (with one warning) when it is missing or unusable. A
        malformed entry is dropped alone (one warning) and the index written back without it."""
        dropped: list[str] = []
        index = load_index(self.path, self._owner, self._warn, dropped)
        if dropped:
            self._warn(dropped_message(self.path, dropped))
            self._repair()
        return index

    def write(self, index: dict[str, Any]) -> None:
        try:
            write_index(self.path, index, tmp_dir=self._tmp)
        except OutOfSpace as e:
            raise full_error(self.directory, e, "writing the index", e.needed) from None

    def write_if_room(self, index: dict[str, Any]) -> None:
        """Write an index whose changes are only worth keeping (stamps): when the disk is full,
        the next open makes them again."""
        with contextlib.suppress(StoreFullError):
            self.write(index)

    def record_check(
        self,
        key: str,
        signature: StatSignature,
        kind: str,
        version: int,
        path: Path,
        opened: StatSignature,
    ) -> None:
        """Stamp the artifact file ``path``, checked when it was opened with the signature
        ``opened``, as checked in full and used now, if the lock is free right now: a check or
        use not recorded is made again by a later open."""
        with self._lock.held_if_free() as held:
            if not held:
                return
            index = self.read()
            record = record_of(index, key, signature, kind, version)
            if record is None or record["file"] != path.name:
                return
            try:
                if StatSignature.from_stat(os.lstat(path)) != opened:
                    return  # changed since it was opened: the next open checks it again
                record["checked"] = touch(path)
            except OSError:
                return
            self.write_if_room(index)

    def reverify(self, key: str, signature: StatSignature, entry: dict[str, Any]) -> bool:
        """A racy entry: its content hash decides. A match is recorded so the check stops once
        the timestamp window has passed (when the disk has room for that)."""
        started_ns = time.time_ns()
        try:
            digest = sha256_file(key)
        except OSError:
            return False
        if digest != entry.get("sha256"):
            return False
        with contextlib.suppress(StoreFullError), self._lock.held():
            index = self.read()
            current = current_entry(index, key, signature)
            if current is not None:
                current["recorded_ns"] = max(current["recorded_ns"], started_ns)
                self.write(index)
        return True

    def _repair(self) -> None:
        """Write the index back without its malformed entries, if the lock is free right now: a
        holder writes the index soon anyway (and drops them too)."""
        with self._lock.held_if_free() as held:
            if not held:
                return
            dropped: list[str] = []
            index = load_index(self.path, self._owner, self._warn, dropped)
            if dropped:
                with contextlib.suppress(OSError, KernelArtifactError):
                    self.write(index)  # an optimization: the next write tries again


# --- entries ---------------------------------------------------------------------------------


def empty_index() -> dict[str, Any]:
    return {"sources": {}, "builds": 0}


def artifact_key(kind: str, version: int) -> str:
    return f"{kind}:{version}"


def signature_fields(signature: StatSignature) -> list[int]:
    """The signature as the index records it."""
    sig = signature
    return [sig.st_dev, sig.st_ino, sig.st_size, sig.st_mtime_ns, sig.st_ctime_ns]


def current_entry(
    index: dict[str, Any], key: str, signature: StatSignature
) -> dict[str, Any] | None:
    """The index entry of ``key`` if it was recorded for this version of the source."""
    entry: dict[str, Any] | None = index["sources"].get(key)
    if entry is None or entry["signature"] != signature_fields(signature):
        return None
    return entry


def record_of(
    index: dict[str, Any], key: str, signature: StatSignature, kind: str, version: int
) -> dict[str, Any] | None:
    """The index's record of the ``kind``/``version`` artifact of this version of ``key``."""
    entry = current_entry(index, key, signature)
    return None if entry is None else entry["artifacts"].get(artifact_key(kind, version))


def entry_files(entry: dict[str, Any]) -> list[str]:
    """The artifact files an entry names."""
    return [record["file"] for record in entry["artifacts"].values()]


# --- stamps ----------------------------------------------------------------------------------


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
    return [boot_id(), *signature_fields(signature)]


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


# --- the file --------------------------------------------------------------------------------


def load_index(
    path: Path, owner: int, warn: Callable[[str], None], dropped: list[str]
) -> dict[str, Any]:
    """The index at ``path``, or an empty one (with one ``warn``) when it is missing or cannot
    be used at all; malformed entries are dropped alone and described in ``dropped``."""
    try:
        raw = read_private(path, owner)
    except ValueError as e:
        warn(f"kernel cache index {path} {e}; rebuilding it")
        return empty_index()
    if raw is None:
        return empty_index()
    try:
        return parse_index(raw, dropped)
    except ValueError as e:
        warn(f"kernel cache index {path} is unusable: {e}; rebuilding it")
        return empty_index()


def dropped_message(path: Path, dropped: list[str]) -> str:
    one = len(dropped) == 1
    shown = "; ".join(dropped[:3]) + (f"; {len(dropped) - 3} more" if len(dropped) > 3 else "")
    return (
        f"kernel cache index {path}: dropped {len(dropped)} malformed"
        f" {'entry' if one else 'entries'} ({shown}); rebuilding {'it' if one else 'them'} when"
        " needed"
    )


def write_index(path: Path, index: dict[str, Any], *, tmp_dir: Path) -> None:
    """Publish ``index`` at ``path`` atomically (``store/files.py``); OutOfSpace when the disk is
    full. A directory in the way is removed: os.replace cannot put a file over one."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            remove_path(path)
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    header = f"{INDEX_MAGIC} {INDEX_VERSION} {hashlib.sha256(body).hexdigest()}\n".encode()
    publish(path, header + body, tmp_dir=tmp_dir, prefix="index-")


def parse_index(raw: bytes, dropped: list[str] | None = None) -> dict[str, Any]:
    """The index in ``raw``; ValueError when it cannot be used at all. With ``dropped``, each
    malformed entry is removed alone and described there (prune_index); without, any is an
    error."""
    header, newline, body = raw.partition(b"\n")
    if not newline:
        raise ValueError("truncated: no header line" if raw else "empty file")
    fields = header.decode("ascii", "replace").split(" ")
    if len(fields) != 3 or fields[0] != INDEX_MAGIC:
        raise ValueError("garbage: no index header")
    if fields[1] != str(INDEX_VERSION):
        raise ValueError(f"foreign index version {fields[1]}")
    if hashlib.sha256(body).hexdigest() != fields[2]:
        raise ValueError("checksum mismatch (torn or edited)")
    try:
        index = json.loads(body)
    except RecursionError:
        raise ValueError("malformed: nested too deeply") from None
    if dropped is None:
        validate_index(index)
    else:
        dropped.extend(prune_index(index))
    assert isinstance(index, dict)
    return index


# --- its shape -------------------------------------------------------------------------------


def validate_index(index: Any) -> None:
    """ValueError ("malformed: ...") for the first thing in ``index`` that is not well formed."""
    _check_top(index)
    for problem, _, _ in _problems(index):
        raise ValueError(f"malformed: {problem}")


def prune_index(index: Any) -> list[str]:
    """Drop each malformed entry of ``index`` alone: a source's whole entry when the entry itself
    is bad, one artifact record when only that record is; returns what was dropped. ValueError
    when there is nothing to keep (no ``sources`` mapping)."""
    _check_top(index)
    dropped = []
    for problem, source, key in list(_problems(index)):
        dropped.append(problem)
        if source is None:
            index["builds"] = 0
        elif key is None:
            del index["sources"][source]
        else:
            del index["sources"][source]["artifacts"][key]
    return dropped


def _check_top(index: Any) -> None:
    if not (isinstance(index, dict) and isinstance(index.get("sources"), dict)):
        raise ValueError("malformed: no sources")


def _problems(index: dict[str, Any]) -> Iterator[tuple[str, str | None, str | None]]:
    """(what is wrong, its source or None for the build counter, its artifact key or None)."""
    if not isinstance(index.get("builds", 0), int):
        yield "builds counter", None, None
    for source, entry in index["sources"].items():
        problem = _entry_problem(source, entry)
        if problem is not None:
            yield problem, source, None
            continue
        for key, record in entry["artifacts"].items():
            if not _is_artifact_key(key):
                yield f"artifact key {key!r} of {source}", source, key
            elif not (
                isinstance(record, dict)
                and isinstance(record.get("file"), str)
                and is_artifact_name(record["file"])
                and isinstance(record.get("builds"), int)
                and _stamps_are_sound(record)
            ):
                yield f"artifact {key} of {source}", source, key


def _entry_problem(source: str, entry: Any) -> str | None:
    if not source.startswith("/") or "\x00" in source:
        return f"source path {source!r}"
    if not isinstance(entry, dict):
        return f"entry for {source}"
    signature = entry.get("signature")
    if not (
        isinstance(signature, list)
        and len(signature) == 5
        and all(isinstance(x, int) for x in signature)
    ):
        return f"signature of {source}"
    if not isinstance(entry.get("recorded_ns"), int):
        return f"recorded_ns of {source}"
    if entry.get("sha256") is not None and not isinstance(entry["sha256"], str):
        return f"sha256 of {source}"
    if not isinstance(entry.get("artifacts"), dict):
        return f"artifacts of {source}"
    return None


def _stamps_are_sound(record: dict[str, Any]) -> bool:
    """The record's full-check stamps, of its file and of its exports, when present."""
    exports = record.get("exports", {})
    return (
        ("checked" not in record or is_stamp(record["checked"]))
        and isinstance(exports, dict)
        and all(isinstance(suffix, str) and is_stamp(v) for suffix, v in exports.items())
    )


def _is_artifact_key(key: str) -> bool:
    """``kind:version`` as the store writes them: a kind and version check_key accepts."""
    kind, colon, version = key.rpartition(":")
    if not colon or not (version.isascii() and version.isdigit()) or len(version) > 5:
        return False
    try:
        check_key(kind, int(version))
    except ValueError:
        return False
    return True


def is_artifact_name(name: str) -> bool:
    # Names are hashes: anything else (a path, '..') in the index is refused, never opened.
    stem, dot, suffix = name.partition(".")
    return (
        dot == "."
        and suffix == "art"
        and len(stem) == 64
        and all(c in "0123456789abcdef" for c in stem)
    )

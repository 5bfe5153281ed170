"""The store's index file: a header line (magic, version, SHA-256 of the body), then JSON.

Readers check all three and the shape of every entry before trusting any of it: the index names
files the store will open, so an entry that is not a hash-named artifact is refused outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .evict import remove_path
from .publish import fsync_dir, publish
from .served import check_key
from .signature import StatSignature, file_type, not_ours_alone
from .stamps import is_stamp

__all__ = [
    "fsync_dir",
    "parse_index",
    "prune_index",
    "read_index_file",
    "validate_index",
    "write_index",
]

INDEX_MAGIC = "pytest-ktstr-vmlinux-index"
INDEX_VERSION = 1
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def empty_index() -> dict[str, Any]:
    return {"sources": {}, "builds": 0}


def artifact_key(kind: str, version: int) -> str:
    return f"{kind}:{version}"


def signature_fields(signature: StatSignature) -> list[int]:
    """The signature as the index records it."""
    return [
        signature.st_dev,
        signature.st_ino,
        signature.st_size,
        signature.st_mtime_ns,
        signature.st_ctime_ns,
    ]


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


def list_entries(index: dict[str, Any], artifacts: Path) -> list[dict[str, Any]]:
    """Every source and its artifacts as ``index`` records them, with the sizes and last use of
    the artifact files in ``artifacts`` (those missing or not regular files are left out)."""
    listing = []
    for source, entry in sorted(index["sources"].items()):
        found = []
        for key, record in sorted(entry["artifacts"].items()):
            path = artifacts / record["file"]
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            kind, _, version = key.rpartition(":")
            found.append(
                {
                    "kind": kind,
                    "version": int(version),
                    "file": str(path),
                    "size": st.st_size,
                    "builds": record["builds"],
                    "last_used_ns": st.st_mtime_ns,
                }
            )
        listing.append({"source": source, "signature": entry["signature"], "artifacts": found})
    return listing


def load_index(
    path: Path, owner: int, warn: Callable[[str], None], dropped: list[str]
) -> dict[str, Any]:
    """The index at ``path``, or an empty one (with one ``warn``) when it is missing or cannot
    be used at all; malformed entries are dropped alone and described in ``dropped``."""
    try:
        raw = read_index_file(path, owner)
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


def read_index_file(path: Path, owner: int) -> bytes | None:
    """The raw index at ``path``, None when there is none. ValueError completes the sentence
    "the index ..." with why it cannot be used: not a regular file (never followed through a
    symlink, never blocked on by a FIFO), or not written by ``owner`` alone."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"is {file_type(st.st_mode)}, not a regular file")
        if (problem := not_ours_alone(st, owner)) is not None:
            raise ValueError(f"is {problem}; not trusted")
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object owns it now
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot be read ({e.strerror})") from None
    finally:
        if fd >= 0:
            os.close(fd)


def write_index(path: Path, index: dict[str, Any], *, tmp_dir: Path) -> None:
    """Publish ``index`` at ``path`` atomically (see publish.py); OutOfSpace when the disk is
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
    """The record's full-check stamps (stamps.py), of its file and of its exports, when present."""
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

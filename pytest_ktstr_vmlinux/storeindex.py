"""The store's index file: a header line (magic, version, SHA-256 of the body), then JSON.

Readers check all three and the shape of every entry before trusting any of it: the index names
files the store will open, so an entry that is not a hash-named artifact is refused outright.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from .publish import fsync_dir, publish
from .signature import file_type, not_ours_alone

__all__ = ["fsync_dir", "parse_index", "read_index_file", "validate_index", "write_index"]

INDEX_MAGIC = "pytest-ktstr-vmlinux-index"
# kind:version, as store._artifact_key writes them.
_ARTIFACT_KEY = re.compile(r"[\x21-\x7e]{1,64}:\d{1,9}", re.ASCII)
INDEX_VERSION = 1
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def empty_index() -> dict[str, Any]:
    return {"sources": {}, "builds": 0}


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
    """Publish ``index`` at ``path`` atomically (see publish.py)."""
    body = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    header = f"{INDEX_MAGIC} {INDEX_VERSION} {hashlib.sha256(body).hexdigest()}\n".encode()
    publish(path, header + body, tmp_dir=tmp_dir, prefix="index-")


def parse_index(raw: bytes) -> dict[str, Any]:
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
    validate_index(index)
    assert isinstance(index, dict)
    return index


def validate_index(index: Any) -> None:
    def check(condition: bool, what: str) -> None:
        if not condition:
            raise ValueError(f"malformed: {what}")

    check(isinstance(index, dict) and isinstance(index.get("sources"), dict), "no sources")
    check(isinstance(index.get("builds", 0), int), "builds")
    for source, entry in index["sources"].items():
        check(source.startswith("/") and "\x00" not in source, f"source path {source!r}")
        check(isinstance(entry, dict), f"entry for {source}")
        signature = entry.get("signature")
        check(
            isinstance(signature, list)
            and len(signature) == 5
            and all(isinstance(x, int) for x in signature),
            f"signature of {source}",
        )
        check(isinstance(entry.get("recorded_ns"), int), f"recorded_ns of {source}")
        check(
            entry.get("sha256") is None or isinstance(entry["sha256"], str), f"sha256 of {source}"
        )
        artifacts = entry.get("artifacts")
        check(isinstance(artifacts, dict), f"artifacts of {source}")
        for key, record in artifacts.items():
            check(_ARTIFACT_KEY.fullmatch(key) is not None, f"artifact key {key!r} of {source}")
            check(
                isinstance(record, dict)
                and isinstance(record.get("file"), str)
                and is_artifact_name(record["file"])
                and isinstance(record.get("builds"), int),
                f"artifact {key} of {source}",
            )


def is_artifact_name(name: str) -> bool:
    # Names are hashes: anything else (a path, '..') in the index is refused, never opened.
    stem, dot, suffix = name.partition(".")
    return (
        dot == "."
        and suffix == "art"
        and len(stem) == 64
        and all(c in "0123456789abcdef" for c in stem)
    )

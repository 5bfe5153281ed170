"""Unpack the few files a kernel needs out of a package, and nothing else.

``dpkg-deb --fsys-tarfile`` decompresses the package's data (whatever its compression) into a
pipe; the tar stream is read here to its end, member by member, and only the members ``wanted``
names are written. A debug package holds 2 GB of module debug files besides the one vmlinux:
they are read past, never written. The stream is the package's, and a package is data from the
network: a member is written only when it is a regular file or a symlink, its name is a plain
relative path, it is not there yet, and a symlink's target stays inside the root it is written
to. Files are created exclusively and never through a symlink.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .process import ToolError, spawn, stop

DPKG_DEB = "dpkg-deb"
_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePackage(Exception):
    """A member the package should not have: a path leaving the root, a link pointing out."""


@dataclass(frozen=True)
class Unpacked:
    """A member written: a file (with its size and SHA-256) or a symlink (with its target)."""

    path: str
    size: int = 0
    sha256: str = ""
    target: str | None = None


def unpack(
    dpkg_deb: str,
    deb: Path | str,
    root: Path,
    wanted: Callable[[str], bool],
    feed: Callable[[BinaryIO], None] | None = None,
) -> list[Unpacked]:
    """Write the members of ``deb`` that ``wanted`` accepts (by relative path, ``usr/lib/...``)
    under ``root``; with ``feed``, the package is not read from ``deb`` (then only its name) but
    from what ``feed`` writes into dpkg-deb's input, in a thread of its own (``follow.py``).
    ToolError when dpkg-deb fails; UnsafePackage for a member that would write outside ``root``
    or over what is there."""
    name = Path(deb).name
    # Its complaints go to a file: a pipe nobody reads while the data is read could fill up.
    with tempfile.TemporaryFile() as errors:
        source = "/dev/stdin" if feed is not None else str(deb)
        process = spawn(
            [dpkg_deb, "--fsys-tarfile", source],
            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stderr=errors,
        )
        assert process.stdout is not None
        feeder = None
        if feed is not None:
            assert process.stdin is not None
            feeder = threading.Thread(target=feed, args=(process.stdin,), daemon=True)
            feeder.start()
        written: list[Unpacked] = []
        damaged = None
        try:
            try:
                with tarfile.open(fileobj=process.stdout, mode="r|", bufsize=_CHUNK) as tar:
                    for member in tar:
                        path = _relative(member.name)
                        if path is not None and wanted(path):
                            written.append(_write(tar, member, path, root))
            except tarfile.TarError as e:
                damaged = str(e)  # dpkg-deb's own complaint, if it has one, says more
            # Read to the end: dpkg-deb must not be left writing into a pipe nobody reads.
            while process.stdout.read(_CHUNK):
                pass
            process.wait()
        except BaseException:
            stop(process)
            raise
        finally:
            if feeder is not None:
                feeder.join()
        process.stdout.close()
        if process.returncode != 0:
            errors.seek(0)
            said = errors.read().decode(errors="replace")
            raise ToolError(f"dpkg-deb --fsys-tarfile {name}", process.returncode, said)
        if damaged is not None:
            raise ToolError(f"reading the data of {name}", 0, damaged)
    return written


def _relative(name: str) -> str | None:
    """``./usr/lib/x`` -> ``usr/lib/x``; None for what is no plain relative path."""
    if name.startswith("/") or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str, root: Path) -> Unpacked:
    target = root / path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A link written earlier may stand for a directory of this member: it must stay inside.
    real, top = target.parent.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise UnsafePackage(f"{path}: its directory leads out of the root, to {real}")
    if member.issym():
        link = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), link))
        if posixpath.isabs(link) or resolved.startswith("../") or resolved == "..":
            raise UnsafePackage(f"{path}: a symlink to {link}, outside the package's root")
        try:
            os.symlink(link, target)
        except FileExistsError:
            raise UnsafePackage(f"{path}: in the package twice") from None
        return Unpacked(path, target=link)
    if not member.isreg():
        raise UnsafePackage(f"{path}: not a regular file or a symlink ({member.type!r})")
    source = tar.extractfile(member)
    assert source is not None
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(target, _CREATE, 0o600)
    except FileExistsError:
        raise UnsafePackage(f"{path}: in the package twice") from None
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    finally:
        os.close(fd)
    return Unpacked(path, size, digest.hexdigest())

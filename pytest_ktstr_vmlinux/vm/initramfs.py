"""The guest's initramfs: a static busybox, /init, the agent and the files a test adds.

No root filesystem and no kernel modules are needed, so any kernel with initramfs support, the
8250 UART and /dev/mem boots it. It is built once per content through the store: the source is
the busybox binary (an upgrade rebuilds it) and the kind names a hash of everything else.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

from ..formats.elf import NotElfError, read_elf_ident
from . import agent
from .cpio import Entry, write_archive
from .errors import GuestUnavailableError

if TYPE_CHECKING:
    from ..store.api import Store

BUSYBOX_PACKAGE = "busybox-static"
KIND_PREFIX = "vm-initramfs-"
VERSION = 1
_OWN = ("init", "bin/busybox", "dev/console", "ktstr", "run/ktstr")  # and what is under them
_DIRS: tuple[str, ...] = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys")
_DIRS += ("run", "run/ktstr", "tmp", "root", "ktstr")

# What a test may add: contents, or a host file (its permission bits come along).
FileSource = Union[bytes, str, "os.PathLike[str]"]


@dataclass(frozen=True)
class GuestFile:
    path: str  # absolute, normalized, in the guest
    data: bytes
    mode: int  # permission bits
    target: str | None = None  # a symlink to this guest path instead of a file


def find_busybox(arch: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """A statically linked busybox for ``arch``: ``explicit``, else ``busybox`` on PATH."""
    found = str(explicit) if explicit is not None else shutil.which("busybox")
    if found is None:
        raise GuestUnavailableError(
            f"no busybox on PATH: the guest's initramfs needs a static one; install"
            f" {BUSYBOX_PACKAGE}",
            (BUSYBOX_PACKAGE,),
        )
    path = Path(found)
    try:
        ident = read_elf_ident(path)
        static = not _has_interpreter(path)
    except (OSError, NotElfError) as e:
        raise GuestUnavailableError(
            f"{path}: not a readable busybox executable ({e}); install {BUSYBOX_PACKAGE}",
            (BUSYBOX_PACKAGE,),
        ) from None
    if not static:
        raise GuestUnavailableError(
            f"{path} is dynamically linked and the guest has no libraries; install"
            f" {BUSYBOX_PACKAGE} (a static busybox)",
            (BUSYBOX_PACKAGE,),
        )
    if ident.arch != arch:
        raise GuestUnavailableError(
            f"{path} is a busybox for {ident.arch}, the guest is {arch}: install"
            f" {BUSYBOX_PACKAGE} for {arch}",
            (f"{BUSYBOX_PACKAGE}:{arch}",),
        )
    return path


def guest_files(files: Mapping[str, FileSource] | None) -> tuple[GuestFile, ...]:
    """The files a test adds, read and checked: absolute guest paths, none of ours."""
    out = []
    for raw, source in (files or {}).items():
        path = _guest_path(raw)
        name = path.lstrip("/")
        if any(name == own or name.startswith(f"{own}/") for own in _OWN):
            raise ValueError(f"guest file {raw!r}: the initramfs's own {path} cannot be replaced")
        if isinstance(source, (bytes, bytearray, memoryview)):
            out.append(GuestFile(path, bytes(source), 0o644))
            continue
        try:
            st = os.stat(source)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"guest file {raw!r}: {source} is not a regular file")
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"guest file {raw!r}: cannot read {source}: {e.strerror}") from None
        out.append(GuestFile(path, data, stat.S_IMODE(st.st_mode)))
    return tuple(sorted(out, key=lambda f: f.path))


def content_kind(files: tuple[GuestFile, ...]) -> str:
    """The store kind of an initramfs: a hash of the scripts and the added files."""
    digest = hashlib.sha256()
    for part in (str(agent.PROTOCOL), agent.INIT, agent.AGENT):
        digest.update(part.encode() + b"\0")
    for f in files:
        digest.update(f"{f.path}\0{f.mode:o}\0{len(f.data)}\0{f.target}\0".encode())
        digest.update(f.data)
    return KIND_PREFIX + digest.hexdigest()[:40]


def write_initramfs(out: BinaryIO, busybox: Path, files: tuple[GuestFile, ...]) -> None:
    entries = [Entry.directory(d) for d in _DIRS]
    entries += [
        Entry.char_device("dev/console", 5, 1),
        Entry.file("bin/busybox", busybox.read_bytes(), 0o755),
        Entry.file("init", agent.INIT.encode(), 0o755),
        Entry.file(agent.AGENT_PATH, agent.AGENT.encode(), 0o644),
        Entry.file(agent.FSTAB_PATH, agent.FSTAB.encode(), 0o644),
        Entry.file(agent.FSTAB_DEV_PATH, agent.FSTAB_DEV.encode(), 0o644),
        Entry.fifo(agent.REQUESTS_FIFO),
    ]
    added = {f.path.lstrip("/") for f in files}
    entries += [Entry.symlink(a, "/bin/busybox") for a in applet_links(busybox) if a not in added]
    made = set(_DIRS)
    for f in files:
        name = f.path.lstrip("/")
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                entries.append(Entry.directory(parent))
        if f.target is not None:
            entries.append(Entry.symlink(name, f.target))
        else:
            entries.append(Entry.file(name, f.data, f.mode))
    write_archive(out, entries)


def merge_files(*groups: tuple[GuestFile, ...]) -> tuple[GuestFile, ...]:
    """Several groups of guest files as one, sorted by path; of two with one path, the later
    group's wins (a test's ``files`` over what ``programs`` packed)."""
    merged = {f.path: f for group in groups for f in group}
    return tuple(sorted(merged.values(), key=lambda f: f.path))


def initramfs_path(store: Store, busybox: Path, files: tuple[GuestFile, ...]) -> Path:
    """The initramfs for ``files``, built once through ``store``, as a file QEMU can read."""
    built = store.get_or_build(
        busybox, content_kind(files), VERSION, lambda path, out: write_initramfs(out, path, files)
    )
    return store.export(built, ".cpio")


def busybox_applets(busybox: Path) -> frozenset[str]:
    """The guest paths busybox's applets get (``/bin/sh``, ``/usr/bin/env``, ...), asked once
    per version of the binary."""
    st = busybox.stat()
    return _applets(str(busybox), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _applets(path: str, ino: int, size: int, mtime_ns: int) -> frozenset[str]:
    links = applet_links(Path(path))
    # A busybox that cannot run here: /init installs every applet in /bin.
    return frozenset(f"/{a}" for a in links) if links else frozenset({"/bin/sh", "/bin/env"})


def applet_links(busybox: Path) -> list[str]:
    """Where busybox's applets belong (``bin/sh``, ``usr/bin/awk``, ...), as busybox itself says;
    none when it cannot run here (another architecture's): then /init installs the links."""
    try:
        done = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    links = []
    for line in done.stdout.splitlines():
        parent = posixpath.dirname(line)
        if parent in _DIRS and posixpath.basename(line) not in ("", ".", "..", "busybox"):
            links.append(line)
    return links


def _guest_path(raw: str) -> str:
    if not isinstance(raw, str) or not raw.startswith("/"):
        raise ValueError(f"guest file {raw!r}: give an absolute guest path (/usr/bin/stress)")
    if "\0" in raw or "\n" in raw:
        raise ValueError(f"guest file {raw!r}: a path with a NUL or newline")
    path = posixpath.normpath(raw)
    if path == "/" or raw.endswith("/"):
        raise ValueError(f"guest file {raw!r}: names a directory, not a file")
    if any(part == ".." for part in raw.split("/")):
        raise ValueError(f"guest file {raw!r}: '..' is not allowed")
    return path


def _has_interpreter(path: Path) -> bool:
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        return any(seg["p_type"] == "PT_INTERP" for seg in ELFFile(f).iter_segments())

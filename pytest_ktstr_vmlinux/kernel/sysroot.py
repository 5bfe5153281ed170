"""Paths inside a sysroot (a guest root filesystem, a test fixture tree), resolved like a chroot.

A distro symlink such as ``/lib/modules/R/build -> /usr/src/linux-headers-R`` is absolute: followed
by the host it leaves the sysroot and lands on the host's own files. Resolving each component
against the sysroot keeps every probe inside it, as perf's ``--symfs`` and a chroot would.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

# Linux's own limit on symlinks followed in one path lookup (MAXSYMLINKS).
MAX_SYMLINK_HOPS = 40


class Sysroot:
    """A directory standing in for ``/`` when the locator probes absolute distro paths."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root: Path | None = Path(os.path.abspath(root)) if root is not None else None

    def __repr__(self) -> str:
        return f"Sysroot({str(self.root)!r})" if self.root else "Sysroot(None)"

    def prefix(self, absolute: str) -> Path:
        """The host path at which the sysroot keeps ``absolute`` (unchanged without a sysroot)."""
        if self.root is None:
            return Path(absolute)
        return self.root.joinpath(*PurePosixPath(absolute).parts[1:])

    def contains(self, path: Path) -> bool:
        return self.root is not None and (path == self.root or self.root in path.parents)

    def resolve(self, path: Path) -> Path:
        """Where ``path`` really is: symlinks under the sysroot are followed inside it.

        Paths outside the sysroot (or without one) are returned unchanged: the OS follows their
        symlinks as usual. A missing component ends resolution; the rest is joined as it is.
        """
        if self.root is None or not self.contains(path):
            return path
        return _resolve_in_root(self.root, path.relative_to(self.root))


def _resolve_in_root(root: Path, relative: Path) -> Path:
    pending = _components(relative.parts)
    resolved: list[str] = []
    hops = 0
    # Depth of the first missing component: below it nothing is a symlink, so names are joined
    # lexically, until a '..' climbs back above it.
    missing_at: int | None = None
    while pending:
        part = pending.pop(0)
        if part == "..":
            # '..' never climbs above the sysroot, as in a chroot.
            if resolved:
                resolved.pop()
            if missing_at is not None and len(resolved) <= missing_at:
                missing_at = None
            continue
        if missing_at is not None:
            resolved.append(part)
            continue
        current = root.joinpath(*resolved, part)
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            missing_at = len(resolved)
            resolved.append(part)
            continue
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(current))
        target = PurePosixPath(os.readlink(current))
        if target.is_absolute():
            resolved = []
        pending[:0] = _components(target.parts)
    return root.joinpath(*resolved)


def _components(parts: tuple[str, ...]) -> list[str]:
    # PurePosixPath keeps a leading "//" as its own root part; any rooted part restarts at the
    # sysroot (handled by the caller) and is not a name to join.
    return [p for p in parts if p not in ("", ".") and not p.startswith("/")]

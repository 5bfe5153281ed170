"""Which version of which file: canonical paths and stat signatures, shared by cache and store.

The signature is (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): a rename-over changes the
inode, an in-place rewrite moves ctime even when ``os.utime`` puts mtime back. What it cannot see
is a same-size rewrite inside one timestamp tick: an entry recorded within ``RACY_WINDOW_NS`` of
its file's last change is "racy" (git's term) and must be re-verified by content.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from ..errors import KernelArtifactError
from ..regularfile import open_regular

# Coarse enough for 2-second (FAT) and 1-second (ext3, HFS+) timestamps and for the kernel's
# jiffy-granular file clock, which can trail time.time_ns().
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class StatSignature:
    """The identity of one version of a file."""

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> StatSignature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def changed_ns(self) -> int:
        return max(self.st_mtime_ns, self.st_ctime_ns)


def is_racy(signature: StatSignature, recorded_ns: int, window_ns: int = RACY_WINDOW_NS) -> bool:
    """True when the file changed too close to ``recorded_ns`` for its signature to prove it."""
    return signature.changed_ns + window_ns > recorded_ns


def canonical_key(path: str | os.PathLike[str]) -> str:
    """The canonical path (symlinks resolved), or the absolute raw path when that fails."""
    try:
        return os.path.realpath(path, strict=True)
    except (OSError, ValueError):
        return os.path.abspath(path)


def stat_signature(key: str, shown: str | os.PathLike[str]) -> StatSignature:
    """The signature of the regular file ``key``; KernelArtifactError names ``shown`` if not."""
    try:
        st = os.stat(key)
    except OSError as e:
        raise read_error(shown, e) from None
    require_regular(shown, st)
    return StatSignature.from_stat(st)


def require_regular(shown: str | os.PathLike[str], st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise KernelArtifactError(f"{shown}: is {kind}; point at the vmlinux ELF file itself")


def read_error(shown: str | os.PathLike[str], error: OSError) -> KernelArtifactError:
    if isinstance(error, FileNotFoundError):
        if os.path.islink(shown):
            return KernelArtifactError(f"{shown}: dangling symlink; rebuild its target or fix it")
        return KernelArtifactError(f"{shown}: does not exist")
    if isinstance(error, PermissionError):
        return KernelArtifactError(
            f"{shown}: permission denied; make it readable (chmod a+r) or run as a user who can"
        )
    if error.errno == errno.ELOOP:
        return KernelArtifactError(f"{shown}: symlink loop; fix or remove the link")
    if isinstance(error, IsADirectoryError):
        return KernelArtifactError(f"{shown}: is a directory; point at the vmlinux ELF file")
    return KernelArtifactError(f"{shown}: cannot read: {error.strerror or error}")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The content hash that settles a racy entry."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

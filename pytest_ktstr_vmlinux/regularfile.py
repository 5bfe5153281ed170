"""Opening the files the plugin reads (images, vmlinux files, configs, notes, BTF): regular files
only, never a hang, never a SIGBUS.

A FIFO or a device planted where a kernel file belongs blocks ``open()`` or ``read()`` until
killed: every open here is non-blocking, and the descriptor is fstat'ed before a byte is read.
A user's file may be truncated by another process (a rebuild, ``cp`` over it) while it is read:
mapping it would kill the reader with SIGBUS, so these files are read, never mapped (only the
store's own artifacts, which are never rewritten, are mapped), and a file that changed under a
read is an error that says so, not a parser's complaint about damaged bytes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import KernelArtifactError

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FileProblem(KernelArtifactError):
    """A file the plugin must read is not something it can read as it stands."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        super().__init__(message)
        self.path = os.fspath(path)


class NotRegularFile(FileProblem):
    """A FIFO, device, socket or directory where a regular file was expected."""

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        self.kind = file_type(mode)
        super().__init__(
            path,
            f"{os.fspath(path)}: is {self.kind}, not a regular file; put the file itself there",
        )


class FileChanged(FileProblem):
    """The file was truncated, rewritten or grew while it was being read."""

    def __init__(self, path: str | os.PathLike[str], how: str) -> None:
        super().__init__(
            path,
            f"{os.fspath(path)}: changed while being read ({how}); a build or install is"
            " probably still writing it. Wait for it to finish and run again.",
        )


class FileTooShort(FileProblem):
    """A range that the file's own headers promise lies past its end."""

    def __init__(self, path: str | os.PathLike[str], offset: int, size: int, length: int) -> None:
        super().__init__(
            path,
            f"{os.fspath(path)}: {size} bytes at {offset:#x} run past the end of the file"
            f" ({length} bytes); it is truncated or damaged",
        )


def file_type(mode: int) -> str:
    """What a file is, for messages: "a regular file", "a directory", "a FIFO", ..."""
    for test, name in _FILE_TYPES:
        if test(mode):
            return name
    return "an unknown kind of file"


_FILE_TYPES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def is_symlink_loop(error: OSError) -> bool:
    return error.errno == errno.ELOOP


def open_regular(path: str | os.PathLike[str], *, buffering: int = -1) -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file.

    OSError as from ``open()`` when it cannot be opened (missing, permission, ELOOP);
    NotRegularFile when it is anything but a regular file. The non-blocking flag that made the
    open safe is cleared before the file is handed over.
    """
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket (or a FIFO without a writer, for O_WRONLY)
            with contextlib.suppress(OSError):
                raise NotRegularFile(path, os.stat(path).st_mode) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit + 1`` of them, so a caller can
    tell a file past its limit). Read to EOF, not to st_size: /proc and /sys report 0 or a
    page for files that hold more or less. Errors as for open_regular."""
    with open_regular(path) as f:
        return f.read() if limit is None else f.read(limit + 1)


class RegularFile:
    """An open regular file and the version of it that was opened: reads that never map it,
    and the check that it is still that version."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = open_regular(path)
        self.opened = os.fstat(self.file.fileno())

    @property
    def size(self) -> int:
        return self.opened.st_size

    def close(self) -> None:
        self.file.close()

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``: fewer only at the end of the file."""
        parts: list[bytes] = []
        while size > 0:
            chunk = os.pread(self.file.fileno(), min(size, 1 << 30), offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            size -= len(chunk)
        return b"".join(parts)

    def read_exact(self, offset: int, size: int) -> bytes:
        """Exactly ``size`` bytes at ``offset``; FileChanged when the file has shrunk since it
        was opened, FileTooShort when the range was never inside it."""
        data = self.pread(offset, size)
        if len(data) != size:
            self.require_unchanged()
            raise FileTooShort(self.path, offset, size, self.size)
        return data

    def changed(self) -> str | None:
        """How the file differs from the version opened (size, mtime, ctime), or None."""
        now = os.fstat(self.file.fileno())
        was = self.opened
        if now.st_size != was.st_size:
            return f"{was.st_size} bytes when opened, {now.st_size} now"
        if (now.st_mtime_ns, now.st_ctime_ns) != (was.st_mtime_ns, was.st_ctime_ns):
            return "rewritten in place"
        return None

    def require_unchanged(self) -> None:
        how = self.changed()
        if how is not None:
            raise FileChanged(self.path, how)


@contextlib.contextmanager
def stable_read(
    path: str | os.PathLike[str], *, check_at_end: bool = True
) -> Iterator[RegularFile]:
    """``path`` open for reading. A read that fails because the file changed under it raises
    FileChanged instead (a parser's "damaged ELF" would blame the bytes); with
    ``check_at_end``, a read that finished on a file that changed meanwhile raises it too.
    Store builds pass False: the store re-stats the source after the build and builds again."""
    f = RegularFile(path)
    try:
        try:
            yield f
        except FileProblem:
            raise
        except Exception:
            how = f.changed()
            if how is not None:
                raise FileChanged(path, how) from None
            raise
        if check_at_end:
            f.require_unchanged()
    finally:
        f.close()

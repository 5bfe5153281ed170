"""regularfile.py: only regular files are read, without ever blocking, and a file that another
process changes between two reads is said to have changed (issue 11, items 7 and 8)."""

from __future__ import annotations

import fcntl
import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.kconfig import _CHUNK, extract_ikconfig, ikconfig_in_file
from pytest_ktstr_vmlinux.regularfile import (
    FileChanged,
    FileTooShort,
    NotRegularFile,
    open_regular,
    read_regular,
    stable_read,
)


def _truncate_in_another_process(path: Path, size: int) -> None:
    subprocess.run(
        [sys.executable, "-c", f"import os; os.truncate({str(path)!r}, {size})"], check=True
    )


def test_a_fifo_without_a_writer_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "kernel.release"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match=rf"^{fifo}: is a FIFO, not a regular file") as e:
        read_regular(fifo)
    assert e.value.path == str(fifo) and e.value.kind == "a FIFO"


def test_other_special_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotRegularFile, match="is a directory, not a regular file"):
        open_regular(tmp_path)
    with pytest.raises(NotRegularFile, match="is a character device, not a regular file"):
        open_regular("/dev/null")
    sock_path = tmp_path / "notes"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(NotRegularFile, match="is a socket, not a regular file"):
            open_regular(sock_path)


def test_os_errors_stay_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        open_regular(loop)


def test_a_regular_file_is_handed_over_blocking(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_bytes(b"CONFIG_A=y\n" * 10)
    with open_regular(path) as f:
        assert not fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK
        assert f.read() == b"CONFIG_A=y\n" * 10
    assert read_regular(path, 15) == b"CONFIG_A=y\nCONFI"  # limit + 1: the caller sees "too big"


def _read_across_a_truncation(path: Path) -> None:
    with stable_read(path) as f:
        assert f.read_exact(0, 4096) == bytes(range(256)) * 16
        _truncate_in_another_process(path, 8192)  # between two steps of the read
        f.read_exact(65536, 4096)


def test_a_truncation_between_two_reads_is_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(bytes(range(256)) * 4096)
    expected = rf"^{path}: changed while being read \(1048576 bytes when opened, 8192 now\)"
    with pytest.raises(FileChanged, match=expected):
        _read_across_a_truncation(path)


def _fail_after_a_truncation(path: Path) -> None:
    with stable_read(path, check_at_end=False):
        _truncate_in_another_process(path, 0)
        raise KernelArtifactError("a parser's complaint about damaged bytes")


def _fail(path: Path) -> None:
    with stable_read(path):
        raise KernelArtifactError("damaged")


def _read_past_the_end(path: Path) -> None:
    with stable_read(path) as f:
        f.read_exact(16, 4)


def test_a_failure_caused_by_a_change_is_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(bytes(1 << 16))
    with pytest.raises(FileChanged, match="65536 bytes when opened, 0 now"):
        _fail_after_a_truncation(path)
    # Without a change, the parser's own error stands; a range never inside the file is said.
    with pytest.raises(KernelArtifactError, match=r"^damaged$"):
        _fail(path)
    with pytest.raises(FileTooShort, match=r"4 bytes at 0x10 run past the end of the file \(0"):
        _read_past_the_end(path)


def _rewrite_after_a_whole_read(path: Path, *, check_at_end: bool) -> None:
    with stable_read(path, check_at_end=check_at_end) as f:
        f.read_exact(0, f.size)
        with open(path, "r+b") as w:  # same size, other content: ctime moves
            w.write(b"x")
        os.utime(path, ns=(0, 0))


def test_a_change_after_a_whole_read_is_caught_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(bytes(1 << 16))
    with pytest.raises(FileChanged, match=r"\(rewritten in place\)"):
        _rewrite_after_a_whole_read(path, check_at_end=True)
    _rewrite_after_a_whole_read(path, check_at_end=False)  # a store build: the store re-stats


@pytest.mark.parametrize("at", [0, _CHUNK - 4, _CHUNK - 8, 3 * _CHUNK + 1])
def test_ikconfig_read_from_a_file_matches_the_search_in_memory(tmp_path: Path, at: int) -> None:
    # Markers and gzip streams that straddle the chunks the file is read in.
    blob = b"IKCFG_ST" + gzip.compress(b"CONFIG_X=y\n" * 2000, mtime=0) + b"IKCFG_ED"
    data = bytes(at) + b"IKCFG_ST-stray" + bytes(100) + blob + bytes(_CHUNK)
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    assert ikconfig_in_file(path) == extract_ikconfig(data, what="x") == "CONFIG_X=y\n" * 2000
    cut = data[: at + 14 + 100 + 50]  # inside the gzip stream
    path.write_bytes(cut)
    with pytest.raises(KernelArtifactError) as in_file:
        ikconfig_in_file(path)
    with pytest.raises(KernelArtifactError) as in_memory:
        extract_ikconfig(cut, what=str(path))
    assert str(in_file.value) == str(in_memory.value)

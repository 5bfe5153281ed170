"""A package unpacked while it downloads: a real writer thread plays apt (writing the file in
pieces, starting it over, giving up), a real dpkg-deb unpacks what the follower hands it, and the
result counts only when the bytes read were exactly the signed ones."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.kernel.fetch.follow import Follower
from pytest_ktstr_vmlinux.kernel.fetch.process import ToolError
from pytest_ktstr_vmlinux.kernel.fetch.unpack import unpack

DPKG_DEB = shutil.which("dpkg-deb")
pytestmark = pytest.mark.skipif(DPKG_DEB is None, reason="needs dpkg-deb (Debian's dpkg)")
PIECE = 64 << 10


def _package(tmp_path: Path) -> bytes:
    assert DPKG_DEB is not None
    src = tmp_path / "src"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN/control").write_text(
        "Package: p\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    (src / "boot").mkdir()
    # Incompressible, so the package is big enough to arrive in many pieces.
    (src / "boot/vmlinuz-R").write_bytes(hashlib.shake_256(b"k").digest(3 << 20))
    deb = tmp_path / "p.deb"
    subprocess.run([DPKG_DEB, "--build", str(src), str(deb)], check=True, capture_output=True)
    return deb.read_bytes()


def _apt(path: Path, pieces: list[bytes], done: threading.Event, pause: float = 0.005) -> None:
    """Write the file as apt does: under its final name, piece by piece; then say it is done."""
    with open(path, "wb") as f:
        for piece in pieces:
            f.write(piece)
            f.flush()
            time.sleep(pause)
    done.set()


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


def _follow(
    tmp_path: Path, data: bytes, written: list[bytes], *, expected: bytes | None = None
) -> tuple[Follower, list[str], Exception | None]:
    assert DPKG_DEB is not None
    path = tmp_path / "download" / "p.deb"
    path.parent.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    done, abort = threading.Event(), threading.Event()
    signed = hashlib.sha256(expected if expected is not None else data).hexdigest()
    follower = Follower(lambda: path if path.exists() else None, len(data), signed, done, abort)
    writer = threading.Thread(target=_apt, args=(path, written, done))
    writer.start()
    try:
        found = unpack(DPKG_DEB, "p.deb", root, "boot/vmlinuz-R".__eq__, follower.pump)
        error = None
    except ToolError as e:
        found, error = [], e
    writer.join()
    return follower, [u.path for u in found], error


def test_a_package_unpacked_as_it_arrives_counts(tmp_path: Path) -> None:
    data = _package(tmp_path)
    follower, found, error = _follow(tmp_path, data, _pieces(data))
    assert error is None
    assert follower.matched
    assert "boot/vmlinuz-R" in found
    assert (tmp_path / "root/boot/vmlinuz-R").read_bytes() == hashlib.shake_256(b"k").digest(
        3 << 20
    )


def test_bytes_that_are_not_the_signed_ones_do_not_count(tmp_path: Path) -> None:
    data = _package(tmp_path)
    # The lists say another package: what was unpacked must be done again from apt's file.
    follower, _, _ = _follow(tmp_path, data, _pieces(data), expected=data + b"x")
    assert not follower.matched


def test_a_download_apt_gave_up_on_ends_the_follower(tmp_path: Path) -> None:
    data = _package(tmp_path)
    started = time.monotonic()
    follower, _, error = _follow(tmp_path, data, _pieces(data)[:5])
    assert not follower.matched
    assert isinstance(error, ToolError)  # dpkg-deb met the end of a half package
    assert time.monotonic() - started < 60


def test_abort_stops_a_follower_waiting_for_its_file(tmp_path: Path) -> None:
    done, abort = threading.Event(), threading.Event()
    follower = Follower(lambda: None, 100, "0" * 64, done, abort)
    out = (tmp_path / "out").open("wb")
    thread = threading.Thread(target=follower.pump, args=(out,))
    thread.start()
    abort.set()
    thread.join(10)
    assert not thread.is_alive()
    assert out.closed
    assert not follower.matched

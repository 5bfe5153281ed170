"""Unpacking a package: only the files asked for, through Debian's own dpkg-deb, and a package
built to attack the host (paths out of the root, links out of it, a directory swapped for a link,
a FIFO, a member twice, garbage) never writes outside the root it is unpacked into."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.kernel.fetch.build import wanted_paths
from pytest_ktstr_vmlinux.kernel.fetch.process import ToolError
from pytest_ktstr_vmlinux.kernel.fetch.unpack import UnsafePackage, unpack

R = "7.2.13+deb14-cloud-amd64"
DPKG_DEB = shutil.which("dpkg-deb")
pytestmark = pytest.mark.skipif(DPKG_DEB is None, reason="needs dpkg-deb (Debian's dpkg)")


def _dpkg_deb() -> str:
    assert DPKG_DEB is not None
    return DPKG_DEB


def _built(tmp_path: Path) -> Path:
    """A package built by dpkg-deb itself, laid out as Debian's 2026 -dbg and binary packages."""
    src = tmp_path / "src"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN/control").write_text(
        "Package: linux-test\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    files = {
        f"usr/lib/modules/{R}/vmlinuz": b"image" * 1000,
        f"usr/lib/modules/{R}/config": b"CONFIG_X=y\n",
        f"usr/lib/debug/lib/modules/{R}/vmlinux": b"\x7fELF" + b"v" * 100_000,
        f"usr/lib/debug/lib/modules/{R}/kernel/fs/ext4.ko": b"module" * 1000,
    }
    for path, data in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    (src / "usr/lib/debug/boot").mkdir(parents=True)
    (src / f"usr/lib/debug/boot/vmlinux-{R}").symlink_to(f"../lib/modules/{R}/vmlinux")
    deb = tmp_path / "linux-test.deb"
    subprocess.run(
        [_dpkg_deb(), "--build", "-Zxz", str(src), str(deb)], check=True, capture_output=True
    )
    return deb


def test_only_the_wanted_files_are_unpacked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    found = unpack(_dpkg_deb(), _built(tmp_path), root, wanted_paths(R).__contains__)
    written = {u.path: u for u in found}
    assert set(written) == {
        f"usr/lib/modules/{R}/vmlinuz",
        f"usr/lib/modules/{R}/config",
        f"usr/lib/debug/lib/modules/{R}/vmlinux",
        f"usr/lib/debug/boot/vmlinux-{R}",
    }
    vmlinux = root / f"usr/lib/debug/lib/modules/{R}/vmlinux"
    assert (
        written[f"usr/lib/debug/lib/modules/{R}/vmlinux"].sha256
        == hashlib.sha256(vmlinux.read_bytes()).hexdigest()
    )
    assert written[f"usr/lib/debug/boot/vmlinux-{R}"].target == f"../lib/modules/{R}/vmlinux"
    assert (root / f"usr/lib/debug/boot/vmlinux-{R}").resolve() == vmlinux
    assert not (root / f"usr/lib/debug/lib/modules/{R}/kernel").exists()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _hostile(
    tmp_path: Path, members: Iterable[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]
) -> Path:
    """A .deb whose data.tar holds exactly ``members``, as no dpkg-deb --build would write it."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for member in members:
            info, payload = member if isinstance(member, tuple) else (member, b"")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload else None)
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as tar:
        text = b"Package: x\nVersion: 1\nArchitecture: all\nMaintainer: t\nDescription: t\n"
        info = tarfile.TarInfo("./control")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    deb = tmp_path / "hostile.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", control.getvalue())
        + _ar_member("data.tar", data.getvalue())
    )
    return deb


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _everything(path: str) -> bool:
    return True


def _outside_untouched(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.deb", "root"]


@pytest.mark.parametrize("name", ["../escape", "./../../escape", "/etc/escape"])
def test_members_named_out_of_the_root_are_never_written(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert unpack(_dpkg_deb(), _hostile(tmp_path, [_file(name)]), root, _everything) == []
    _outside_untouched(tmp_path)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("target", ["/etc/shadow", "../../../../../etc", "a/../../../../../.."])
def test_links_out_of_the_root_are_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = _hostile(tmp_path, [_link("usr/lib/debug/boot/vmlinux-R", target)])
    with pytest.raises(UnsafePackage, match="outside the package's root"):
        unpack(_dpkg_deb(), deb, root, _everything)


def test_a_directory_swapped_for_a_link_out_is_refused(tmp_path: Path) -> None:
    # Each link alone stays inside: d/s is the root, d/t is s/.. lexically d. But followed for
    # real, d/t is the root's parent, and a file written through it would land outside.
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    deb = _hostile(tmp_path, [_link("d/s", ".."), _link("d/t", "s/.."), _file("d/t/planted")])
    with pytest.raises(UnsafePackage, match="its directory leads out of the root"):
        unpack(_dpkg_deb(), deb, root, _everything)
    _outside_untouched(tmp_path)


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    fifo = tarfile.TarInfo("boot/vmlinuz-R")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(UnsafePackage, match="not a regular file or a symlink"):
        unpack(_dpkg_deb(), _hostile(tmp_path, [fifo]), root, _everything)


def test_a_member_twice_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = _hostile(tmp_path, [_file("boot/vmlinuz-R", b"one"), _file("boot/vmlinuz-R", b"two")])
    with pytest.raises(UnsafePackage, match="in the package twice"):
        unpack(_dpkg_deb(), deb, root, _everything)


def test_garbage_is_dpkg_debs_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = tmp_path / "garbage.deb"
    deb.write_bytes(b"!<arch>\nthis is not a package")
    with pytest.raises(ToolError, match=r"dpkg-deb --fsys-tarfile garbage.deb failed \(exit 2\)"):
        unpack(_dpkg_deb(), deb, root, _everything)


def test_a_truncated_package_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    deb = _built(tmp_path)
    deb.write_bytes(deb.read_bytes()[: deb.stat().st_size // 2])
    with pytest.raises(ToolError, match="failed"):
        unpack(_dpkg_deb(), deb, root, wanted_paths(R).__contains__)

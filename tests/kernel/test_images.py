"""find_image: all the spec tells of a kernel before any vmlinux is probed, in one result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.kernel.images import Candidate, FoundImage, arch_from_uname, find_image
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.kernel.spec import parse_kernel_spec
from pytest_ktstr_vmlinux.kernel.sysroot import Sysroot
from tests.helpers.fakes import make_build_tree, make_sysroot, write_image, write_vmlinux

R = "6.1.0-99-cloud-amd64"


def _found(raw: str, sysroot: Path | None = None) -> FoundImage:
    return find_image(parse_kernel_spec(raw), Sysroot(sysroot))


def test_a_build_tree_names_its_image_release_and_arch(tmp_path: Path) -> None:
    tree = make_build_tree(tmp_path / "linux", "6.9.0-tree")
    found = _found(str(tree))
    assert found == FoundImage(
        image=tree / "arch/x86/boot/bzImage",
        named_tree=tree,
        tree=tree,
        release="6.9.0-tree",
        arch="x86_64",
    )


def test_an_image_in_a_tree_belongs_to_it_but_does_not_name_it(tmp_path: Path) -> None:
    tree = make_build_tree(tmp_path / "linux", "6.9.0-tree")
    image = tree / "arch/x86/boot/bzImage"
    assert _found(str(image)) == FoundImage(image, None, tree, "6.9.0-tree", "x86_64")
    loose = write_image(tmp_path / "boot" / f"vmlinuz-{R}", None)
    assert _found(str(loose)) == FoundImage(loose, None, None, R, "x86_64")


def test_a_vmlinux_beside_a_makefile_and_config_is_in_its_tree(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    write_vmlinux(vmlinux)
    assert _found(str(vmlinux)) == FoundImage(None, None, None, None, None)
    (tmp_path / "Makefile").write_text("")
    (tmp_path / ".config").write_text("")
    (tmp_path / "include/config").mkdir(parents=True)
    (tmp_path / "include/config/kernel.release").write_text("6.9.0-beside\n")
    assert _found(str(vmlinux)) == FoundImage(None, None, tmp_path, "6.9.0-beside", None)


def test_a_release_finds_the_distro_image_and_reports_those_passed_over(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path / "root", R)
    found = _found(R, root)
    assert found == FoundImage(root / f"boot/vmlinuz-{R}", None, None, R, "x86_64")
    (root / f"boot/vmlinuz-{R}").unlink()
    os.mkfifo(root / f"boot/vmlinuz-{R}")
    found = _found(R, root)
    shown = root / f"boot/vmlinuz-{R}"
    refused = Candidate(shown, "distro image", "not a regular file: a FIFO")
    assert found == FoundImage(None, None, None, R, None, (refused,))
    # resolve_kernel carries them into the probe report, before the vmlinux candidates.
    report = resolve_kernel(R, sysroot=root).report
    assert report.images == (refused,)
    assert report.format().splitlines()[1] == refused.describe()


def test_the_running_kernel_falls_back_to_uname_for_its_arch(tmp_path: Path) -> None:
    found = _found("running", tmp_path)
    uname = os.uname()
    assert (found.image, found.release) == (None, uname.release)
    assert found.arch == arch_from_uname(uname.machine)
    assert arch_from_uname("aarch64") == "arm64" and arch_from_uname("pdp11") is None


def test_a_fifo_where_the_tree_image_goes_is_an_error_naming_it(tmp_path: Path) -> None:
    boot = tmp_path / "arch/x86/boot"
    boot.mkdir(parents=True)
    os.mkfifo(boot / "bzImage")
    with pytest.raises(KernelArtifactError, match="bzImage"):
        _found(str(tmp_path))

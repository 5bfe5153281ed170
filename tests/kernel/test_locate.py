"""The locator: the seed's behaviour, every layout, and why each refused candidate was refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux import find_vmlinux, probe_vmlinux
from pytest_ktstr_vmlinux.kernel.images import release_from_image_path
from pytest_ktstr_vmlinux.kernel.locate import DISTRO_VMLINUX_LAYOUTS, vmlinux_candidates
from pytest_ktstr_vmlinux.kernel.sysroot import Sysroot
from tests.helpers.fakes import (
    EM_AARCH64,
    make_sysroot,
    run_without_dac_override,
    write_image,
    write_vmlinux,
)

R = "6.1.0-99-cloud-amd64"


# --- the seed's tests, ported -------------------------------------------------------------------


def test_find_vmlinux_from_bzimage_path(tmp_path: Path) -> None:
    bzimage = write_image(tmp_path / "arch/x86/boot/bzImage")
    vmlinux = tmp_path / "vmlinux"
    write_vmlinux(vmlinux)
    assert find_vmlinux(bzimage) == vmlinux


def test_find_vmlinux_sibling(tmp_path: Path) -> None:
    write_vmlinux(tmp_path / "vmlinux")
    kernel = write_image(tmp_path / "bzImage")
    assert find_vmlinux(kernel) == tmp_path / "vmlinux"


def test_find_vmlinux_bare_filename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_vmlinux(Path("vmlinuz")) is None
    assert find_vmlinux("") is None


def test_find_vmlinux_root_parent() -> None:
    result = find_vmlinux(Path("/vmlinuz"))
    if not Path("/vmlinux").exists():
        assert result is None


def test_find_vmlinux_missing_returns_none(tmp_path: Path) -> None:
    kernel = write_image(tmp_path / "bzImage")
    assert find_vmlinux(kernel) is None


# --- layouts -------------------------------------------------------------------------------------


def test_sibling_wins_over_tree_root(tmp_path: Path) -> None:
    image = write_image(tmp_path / "arch/x86/boot/bzImage")
    write_vmlinux(tmp_path / "vmlinux")
    write_vmlinux(tmp_path / "arch/x86/boot/vmlinux")
    assert find_vmlinux(image) == tmp_path / "arch/x86/boot/vmlinux"


@pytest.mark.parametrize(("template", "layout"), DISTRO_VMLINUX_LAYOUTS)
def test_every_distro_layout_is_found_under_a_sysroot(
    tmp_path: Path, template: str, layout: str
) -> None:
    image = write_image(tmp_path / f"boot/vmlinuz-{R}", None)
    target = tmp_path / template.format(R=R).lstrip("/")
    write_vmlinux(target)
    probe = probe_vmlinux(image, sysroot=tmp_path)
    assert probe.path == target
    chosen = [c for c in probe.report.candidates if c.refused is None]
    assert [c.layout for c in chosen] == [layout]


def test_distro_layouts_are_probed_in_documented_order(tmp_path: Path) -> None:
    for template, _ in DISTRO_VMLINUX_LAYOUTS:
        write_vmlinux(tmp_path / template.format(R=R).lstrip("/"))
    probe = probe_vmlinux(release=R, sysroot=tmp_path)
    first = DISTRO_VMLINUX_LAYOUTS[0][0].format(R=R).lstrip("/")
    assert probe.path == tmp_path / first


def test_lib_modules_vmlinuz_pairs_with_build_vmlinux(tmp_path: Path) -> None:
    image = write_image(tmp_path / f"lib/modules/{R}/vmlinuz", None)
    build = tmp_path / "src" / "headers"
    write_vmlinux(build / "vmlinux")
    (tmp_path / f"lib/modules/{R}/build").symlink_to(build)
    probe = probe_vmlinux(image)
    assert probe.report.release == R  # from the parent directory
    assert probe.path == image.parent / "build" / "vmlinux"


def test_absolute_symlink_in_sysroot_stays_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / f"lib/modules/{R}").mkdir(parents=True)
    # On the guest, build/ points at /usr/src/...; on the host that path must not be used.
    (root / f"lib/modules/{R}/build").symlink_to(f"/usr/src/linux-headers-{R}")
    inside = root / f"usr/src/linux-headers-{R}/vmlinux"
    write_vmlinux(inside)
    probe = probe_vmlinux(release=R, sysroot=root)
    assert probe.path == inside


def test_release_sources(tmp_path: Path) -> None:
    assert release_from_image_path(Path(f"/boot/vmlinuz-{R}")) == R
    assert release_from_image_path(Path(f"/lib/modules/{R}/vmlinuz")) == R
    assert release_from_image_path(Path("/boot/vmlinuz")) is None
    assert release_from_image_path(Path("/boot/vmlinuz-..")) is None
    # The header beats a misleading name.
    image = write_image(tmp_path / "vmlinuz-9.9.9-renamed", "6.6.6-real (u@h) #1")
    assert probe_vmlinux(image).report.release == "6.6.6-real"


def test_candidates_are_unique_and_user_paths_are_not_rewritten(tmp_path: Path) -> None:
    image = tmp_path / "arch/x86/boot/bzImage"
    found = vmlinux_candidates(image, release=R, tree=tmp_path, sysroot=Sysroot(tmp_path / "sr"))
    paths = [p for p, _ in found]
    assert len(paths) == len(set(paths))
    assert paths[0] == tmp_path / "vmlinux"
    assert all(p.is_relative_to(tmp_path) for p in paths)


def test_symlinked_image_is_searched_beside_its_target(tmp_path: Path) -> None:
    image = write_image(tmp_path / "tree/arch/x86/boot/bzImage")
    write_vmlinux(tmp_path / "tree/vmlinux")
    link = tmp_path / "kernels/current"
    link.parent.mkdir()
    link.symlink_to(image)
    assert find_vmlinux(link) == tmp_path / "tree/vmlinux"


# --- the probe report ----------------------------------------------------------------------------


def test_report_says_why_each_candidate_was_refused(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path / "root", R)
    dbg = root / f"usr/lib/debug/boot/vmlinux-{R}"
    dbg.unlink()
    (root / f"usr/lib/debug/lib/modules/{R}/vmlinux").mkdir(parents=True)  # a directory
    (root / f"lib/modules/{R}").mkdir(parents=True)
    (root / f"lib/modules/{R}/vmlinux").write_bytes(b"not an elf at all")
    write_vmlinux(root / f"lib/modules/{R}/vmlinux.debug", e_machine=EM_AARCH64)
    (root / f"boot/vmlinux-{R}").symlink_to(root / "nowhere")
    probe = probe_vmlinux(root / f"boot/vmlinuz-{R}", sysroot=root)
    assert probe.path is None
    reasons = {c.layout: c.refused for c in probe.report.candidates}
    assert reasons["Debian/Ubuntu dbgsym"] == "missing"
    assert reasons["Fedora debuginfo"] == "not a regular file: a directory"
    assert reasons["SUSE"] is not None and reasons["SUSE"].startswith("not ELF")
    assert reasons["SUSE debug"] == "wrong machine: ELF for EM_AARCH64, the image is x86_64"
    assert reasons["/boot vmlinux"] == "missing"  # resolved inside the sysroot: target absent
    text = probe.report.format()
    assert f"release={R}" in text and "arch=x86_64" in text
    assert "hint: install the kernel's debug package" in text
    summary = probe.report.summary()
    assert summary.startswith(f"not found ({len(probe.report.candidates)} candidates refused")


def test_dangling_symlink_candidate_without_sysroot(tmp_path: Path) -> None:
    image = write_image(tmp_path / "bzImage")
    (tmp_path / "vmlinux").symlink_to(tmp_path / "gone")
    probe = probe_vmlinux(image)
    assert probe.report.candidates[0].refused == "dangling symlink"


def test_unreadable_candidate_is_refused_as_unreadable(tmp_path: Path) -> None:
    image = write_image(tmp_path / "bzImage")
    write_vmlinux(tmp_path / "vmlinux")
    (tmp_path / "vmlinux").chmod(0o000)
    code = (
        "import sys; from pytest_ktstr_vmlinux import probe_vmlinux\n"
        "p = probe_vmlinux(sys.argv[1]); print(p.report.candidates[0].refused)"
    )
    result = run_without_dac_override([sys.executable, "-c", code, str(image)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unreadable: Permission denied"

"""Where a kernel's config is found: the order find_config searches in, and /proc/config.gz."""

from __future__ import annotations

import gzip
import lzma
import os
import re
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.kconfig import IKCONFIG_START, parse_config
from pytest_ktstr_vmlinux.kernel import config
from pytest_ktstr_vmlinux.kernel.config import find_config
from pytest_ktstr_vmlinux.kernel.sysroot import Sysroot
from tests.helpers.fakes import ikconfig_blob
from tests.helpers.kernels import DebianKernel

R = "6.1.0-99-cloud-amd64"


# --- find_config ----------------------------------------------------------------------------------


def write_boot_config(root: Path, text: str, release: str = R) -> Path:
    path = root / "boot" / f"config-{release}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_find_config_order(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / ".config").write_text("CONFIG_FROM_TREE=y\n")
    sysroot = tmp_path / "sysroot"
    boot = write_boot_config(sysroot, "CONFIG_FROM_BOOT=y\n")
    blobs = [
        ("image payload", b"no config here"),
        ("image2", ikconfig_blob("CONFIG_FROM_IMAGE=y\n")),
        ("vmlinux", ikconfig_blob("CONFIG_FROM_VMLINUX=y\n")),
    ]

    cfg = find_config(tree=tree, release=R, sysroot=Sysroot(sysroot), blobs=blobs)
    assert cfg is not None and cfg.enabled("FROM_TREE")
    assert cfg.source == str(tree / ".config")

    cfg = find_config(tree=tmp_path / "no-tree", release=R, sysroot=Sysroot(sysroot), blobs=blobs)
    assert cfg is not None and cfg.enabled("FROM_BOOT") and cfg.source == str(boot)

    cfg = find_config(tree=tmp_path, release="6.0.0-other", sysroot=Sysroot(sysroot), blobs=blobs)
    assert cfg is not None and cfg.enabled("FROM_IMAGE") and cfg.source == "IKCONFIG in image2"

    cfg = find_config(blobs=blobs[2:])
    assert cfg is not None and cfg.source == "IKCONFIG in vmlinux"

    assert find_config() is None
    assert (
        find_config(tree=tmp_path, release="x", sysroot=Sysroot(sysroot), blobs=blobs[:1]) is None
    )


def test_find_config_release_without_sysroot_probes_slash_boot() -> None:
    # Whatever the host has, a release that cannot exist finds nothing and raises nothing.
    assert find_config(release="0.0.0-ktstr-no-such-kernel") is None


def test_find_config_release_that_is_not_one_component_is_skipped(tmp_path: Path) -> None:
    write_boot_config(tmp_path, "CONFIG_A=y\n", release="a/b")
    assert (tmp_path / "boot/config-a/b").is_file()
    assert find_config(release="a/b", sysroot=Sysroot(tmp_path)) is None
    assert find_config(release="a\x00b", sysroot=Sysroot(tmp_path)) is None
    assert find_config(release="", sysroot=Sysroot(tmp_path)) is None


def test_find_config_follows_absolute_symlinks_inside_the_sysroot(tmp_path: Path) -> None:
    real = tmp_path / "usr/lib/linux/config"
    real.parent.mkdir(parents=True)
    real.write_text("CONFIG_VIA_LINK=y\n")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{R}").symlink_to("/usr/lib/linux/config")
    cfg = find_config(release=R, sysroot=Sysroot(tmp_path))
    assert cfg is not None and cfg.enabled("VIA_LINK") and cfg.source == str(real)


def test_find_config_dangling_link_is_absent(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{R}").symlink_to("/nowhere")
    assert find_config(release=R, sysroot=Sysroot(tmp_path)) is None


def test_find_config_symlink_loop_raises(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{R}").symlink_to(f"/boot/config-{R}")
    with pytest.raises(KernelArtifactError, match="cannot resolve"):
        find_config(release=R, sysroot=Sysroot(tmp_path))


def test_find_config_broken_source_raises_instead_of_falling_through(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text("CONFIG_A=y\nnonsense\n")
    blobs = [("vmlinux", ikconfig_blob("CONFIG_B=y\n"))]
    with pytest.raises(KernelArtifactError, match=rf"^{re.escape(str(tmp_path))}/\.config:2: "):
        find_config(tree=tmp_path, blobs=blobs)
    with pytest.raises(KernelArtifactError, match="IKCONFIG gzip stream"):
        find_config(blobs=[("bad", IKCONFIG_START + b"\x1f\x8b\x08junk"), *blobs])


def test_find_config_refuses_non_regular_files(tmp_path: Path) -> None:
    (tmp_path / ".config").mkdir()
    with pytest.raises(KernelArtifactError, match="not a regular file"):
        find_config(tree=tmp_path)
    fifo_tree = tmp_path / "fifo"
    fifo_tree.mkdir()
    os.mkfifo(fifo_tree / ".config")
    with pytest.raises(KernelArtifactError, match="not a regular file"):
        find_config(tree=fifo_tree)


def test_find_config_refuses_huge_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 64)
    (tmp_path / ".config").write_text("CONFIG_A=y\n" * 10)
    with pytest.raises(KernelArtifactError, match="larger than"):
        find_config(tree=tmp_path)


# --- real kernels ---


@pytest.mark.real_kernel
def test_debian_boot_config(debian_kernel: DebianKernel) -> None:
    cfg = find_config(release=debian_kernel.release, sysroot=Sysroot(debian_kernel.sysroot))
    assert cfg is not None
    assert cfg.source == str(debian_kernel.sysroot / "boot" / f"config-{debian_kernel.release}")
    assert cfg.enabled("DEBUG_INFO_BTF") and cfg.enabled("CONFIG_DEBUG_INFO_BTF")
    assert cfg["DEBUG_INFO_BTF"] == "y"
    assert type(cfg["HZ"]) is int and cfg["HZ"] in (100, 250, 300, 1000)
    assert cfg["CONFIG_LOCALVERSION"] == ""
    assert cfg["DEFAULT_HOSTNAME"] == "(none)"
    assert isinstance(cfg["CC_VERSION_TEXT"], str) and "gcc" in cfg["CC_VERSION_TEXT"]
    assert cfg["PHYSICAL_START"] == 0x1000000
    assert "IKCONFIG" in cfg and cfg["IKCONFIG"] is None and not cfg.enabled("IKCONFIG")
    assert len(cfg) > 1000


@pytest.mark.real_kernel
def test_tinyconfig_tree_config_is_its_dot_config(tinyconfig_tree: Path) -> None:
    dot_config = tinyconfig_tree / ".config"
    found = find_config(tree=tinyconfig_tree)
    assert found is not None and found.source == str(dot_config)
    assert found == parse_config(dot_config.read_text(), str(dot_config))


@pytest.mark.real_kernel
def test_tinyconfig_bzimage_payload_ikconfig(tinyconfig_tree: Path) -> None:
    """The decompressed payload of the real bzImage (xz, as tinyconfig picks) carries the copy."""
    image = (tinyconfig_tree / "arch/x86/boot/bzImage").read_bytes()
    start = image.find(b"\xfd7zXZ\x00")
    if start < 0:
        pytest.skip("this tinyconfig bzImage is not xz-compressed")
    payload = lzma.LZMADecompressor().decompress(image[start:])
    dot_config = tinyconfig_tree / ".config"
    cfg = find_config(
        tree=tinyconfig_tree / "nonexistent", blobs=[("bzImage payload", memoryview(payload))]
    )
    assert cfg is not None and cfg.source == "IKCONFIG in bzImage payload"
    assert cfg == parse_config(dot_config.read_text(), str(dot_config))


# --- /proc/config.gz ------------------------------------------------------------------------------


def test_proc_config_gz(tmp_path: Path) -> None:
    path = tmp_path / "config.gz"
    assert config.read_proc_config(path) is None  # a kernel without CONFIG_IKCONFIG_PROC
    path.write_bytes(
        gzip.compress(b"CONFIG_SMP=y\nCONFIG_HZ=250\n# CONFIG_PREEMPT_RT is not set\n")
    )
    found = config.read_proc_config(path)
    assert found is not None
    assert (found.source, found["SMP"], found["HZ"], found["PREEMPT_RT"]) == (
        str(path),
        "y",
        250,
        None,
    )


def test_proc_config_gz_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.gz"
    path.write_bytes(gzip.compress(b"CONFIG_SMP=y\n" * 100)[:-12])
    with pytest.raises(KernelArtifactError, match=rf"{re.escape(str(path))}: .*truncated"):
        config.read_proc_config(path)
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 64)
    with pytest.raises(KernelArtifactError, match=rf"{re.escape(str(path))}: .*corrupt"):
        config.read_proc_config(path)
    with pytest.raises(KernelArtifactError, match="not a regular file"):
        config.read_proc_config(tmp_path)
    monkeypatch.setattr(config, "MAX_CONFIG_BYTES", 64)
    path.write_bytes(os.urandom(65))
    with pytest.raises(KernelArtifactError, match=r"larger than .*not a kernel config"):
        config.read_proc_config(path)

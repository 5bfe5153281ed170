"""Kernels installed the /usr way: Fedora's and Debian's packages from 2026 on put the image, config
and System.map in /usr/lib/modules/R/ and nothing in /boot; the debug vmlinux is
/usr/lib/debug/lib/modules/R/vmlinux, linked from /usr/lib/debug/boot/vmlinux-R and
/usr/lib/debug/vmlinux-R; /lib is a link to usr/lib. The config and the vmlinux must be found
there, inside the sysroot, and a config beside an image given by path must be found too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.kernel.artifacts import KernelArtifacts
from pytest_ktstr_vmlinux.kernel.config import DISTRO_CONFIG_LAYOUTS, find_config
from pytest_ktstr_vmlinux.kernel.images import config_beside_image
from pytest_ktstr_vmlinux.kernel.locate import DISTRO_VMLINUX_LAYOUTS
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.kernel.sysroot import Sysroot
from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import junit, run

REPO = Path(__file__).resolve().parents[2]
R = "6.1.0-99-cloud-amd64"
DEBUG_VMLINUX = "/usr/lib/debug/lib/modules/{R}/vmlinux"
DEBUG_LINKS = ("/usr/lib/debug/boot/vmlinux-{R}", "/usr/lib/debug/vmlinux-{R}")


def _in(root: Path, absolute: str) -> Path:
    return root / absolute.lstrip("/")


def _merged_usr_root(root: Path) -> Path:
    """An empty merged-/usr root: usr/lib and the link lib -> usr/lib, no boot/."""
    (root / "usr/lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    return root


# --- the config: probe order, merged /usr, symlinks kept inside the sysroot -----------------------


def test_config_layouts_are_the_documented_order() -> None:
    assert DISTRO_CONFIG_LAYOUTS == (
        "/boot/config-{R}",
        "/lib/modules/{R}/config",
        "/usr/lib/modules/{R}/config",
    )


@pytest.mark.parametrize("template", DISTRO_CONFIG_LAYOUTS)
def test_every_config_layout_is_found_under_a_sysroot(tmp_path: Path, template: str) -> None:
    path = _in(tmp_path, template.format(R=R))
    path.parent.mkdir(parents=True)
    path.write_text(f'CONFIG_FROM="{template}"\n')
    cfg = find_config(release=R, sysroot=Sysroot(tmp_path))
    assert cfg is not None and cfg["FROM"] == template and cfg.source == str(path)


def test_config_layouts_are_probed_in_order(tmp_path: Path) -> None:
    for template in DISTRO_CONFIG_LAYOUTS:
        path = _in(tmp_path, template.format(R=R))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'CONFIG_FROM="{template}"\n')
    for template in DISTRO_CONFIG_LAYOUTS:
        cfg = find_config(release=R, sysroot=Sysroot(tmp_path))
        assert cfg is not None and cfg["FROM"] == template
        _in(tmp_path, template.format(R=R)).unlink()
    assert find_config(release=R, sysroot=Sysroot(tmp_path)) is None


def test_merged_usr_config_is_read_through_lib_inside_the_root(tmp_path: Path) -> None:
    root = _merged_usr_root(tmp_path / "root")
    config = root / f"usr/lib/modules/{R}/config"
    config.parent.mkdir(parents=True)
    config.write_text("CONFIG_MERGED_USR=y\n")
    cfg = find_config(release=R, sysroot=Sysroot(root))
    # Found at /lib/modules/R/config, the first of the two, through lib -> usr/lib.
    assert cfg is not None and cfg.enabled("MERGED_USR") and cfg.source == str(config)


def test_config_links_out_of_the_sysroot_are_not_followed(tmp_path: Path) -> None:
    # A guest's links, absolute or climbing with '..', name files of the guest: on the host the
    # same names are other files, which must not be read as this kernel's config.
    outside = tmp_path / "host-config"
    outside.write_text("CONFIG_HOST=y\n")
    root = _merged_usr_root(tmp_path / "root")
    modules = root / f"usr/lib/modules/{R}"
    modules.mkdir(parents=True)
    (modules / "config").symlink_to(outside)
    (root / "boot").mkdir()
    (root / "boot" / f"config-{R}").symlink_to("../../../../../../.." + str(outside))
    assert find_config(release=R, sysroot=Sysroot(root)) is None
    # The same name inside the root is what the link means there.
    inside = _in(root, str(outside))
    inside.parent.mkdir(parents=True)
    inside.write_text("CONFIG_GUEST=y\n")
    cfg = find_config(release=R, sysroot=Sysroot(root))
    assert cfg is not None and cfg.enabled("GUEST") and cfg.source == str(inside)


def test_a_release_that_is_not_a_name_names_no_config(tmp_path: Path) -> None:
    # /lib/modules/../config and /lib/modules/./config are not the config of a release.
    (tmp_path / "lib/modules").mkdir(parents=True)
    (tmp_path / "lib/config").write_text("CONFIG_A=y\n")
    (tmp_path / "lib/modules/config").write_text("CONFIG_A=y\n")
    for release in ("..", "."):
        assert find_config(release=release, sysroot=Sysroot(tmp_path)) is None


# --- the config beside an image given by path -----------------------------------------------------


def test_config_beside_image_names(tmp_path: Path) -> None:
    assert config_beside_image(tmp_path / f"vmlinuz-{R}", R) == [tmp_path / f"config-{R}"]
    assert config_beside_image(tmp_path / "vmlinuz-local", R) == [
        tmp_path / "config-local",
        tmp_path / f"config-{R}",
    ]
    assert config_beside_image(tmp_path / "bzImage", None) == []
    modules = tmp_path / f"usr/lib/modules/{R}"
    assert config_beside_image(modules / "vmlinuz", R) == [
        modules / f"config-{R}",
        modules / "config",
    ]
    # Only a modules/R/ directory makes a bare `config` the image's.
    assert config_beside_image(tmp_path / "vmlinuz", None) == []
    assert config_beside_image(tmp_path / "vmlinuz-..", None) == []


def test_config_beside_a_symlinked_image_target(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / f"vmlinuz-{R}").write_bytes(b"")
    (tmp_path / "vmlinuz").symlink_to(f"boot/vmlinuz-{R}")
    assert config_beside_image(tmp_path / "vmlinuz", R) == [
        tmp_path / f"config-{R}",
        boot / f"config-{R}",
    ]


def test_missing_config_names_every_place_probed(tmp_path: Path) -> None:
    root = _merged_usr_root(tmp_path / "root")
    kernel = resolve_kernel(R, sysroot=root)
    expected = [str(_in(root, t.format(R=R))) for t in DISTRO_CONFIG_LAYOUTS]
    assert kernel.config_files == expected
    with pytest.raises(KernelArtifactError) as raised:
        KernelArtifacts(kernel).config()
    assert str(raised.value) == (
        f"no kernel config for {R!r}: none of {', '.join(expected)} exists;"
        " no IKCONFIG in the image or vmlinux"
    )


# --- Debian's 6.1 kernel installed the /usr way ---------------------------------------------------


@dataclass(frozen=True)
class UsrRoot:
    """A sysroot holding Debian's kernel in the /usr layout."""

    root: Path
    release: str
    build_id: str

    @property
    def modules(self) -> Path:
        return self.root / "usr/lib/modules" / self.release

    def path(self, template: str) -> Path:
        return _in(self.root, template.format(R=self.release))


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed here
        shutil.copyfile(source, target)


def _debian_vmlinux(kernel: DebianKernel) -> Path:
    for template in ("/usr/lib/debug/boot/vmlinux-{R}", DEBUG_VMLINUX):
        path = _in(kernel.sysroot, template.format(R=kernel.release))
        if path.is_file():
            return path
    pytest.fail(f"{kernel.sysroot} has no debug vmlinux for {kernel.release}", pytrace=False)


def _usr_root(kernel: DebianKernel, root: Path, vmlinux_at: str, links: tuple[str, ...]) -> UsrRoot:
    """``root`` built from the fetched Debian files: usr/lib/modules/R/{vmlinuz,config,System.map},
    the debug vmlinux at ``vmlinux_at`` with absolute ``links`` to it, lib -> usr/lib, no boot/."""
    release = kernel.release
    _merged_usr_root(root)
    modules = root / "usr/lib/modules" / release
    boot = kernel.sysroot / "boot"
    for name in ("vmlinuz", "config", "System.map"):
        _link_or_copy(boot / f"{name}-{release}", modules / name)
    target = vmlinux_at.format(R=release)
    _link_or_copy(_debian_vmlinux(kernel), _in(root, target))
    for link in links:
        path = _in(root, link.format(R=release))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Absolute, as Debian ships them: on the host they would name the host's files.
        path.symlink_to(target)
    assert not (root / "boot").exists()
    return UsrRoot(root, release, kernel.build_id)


@pytest.fixture(scope="module")
def usr_root(debian_kernel: DebianKernel, tmp_path_factory: pytest.TempPathFactory) -> UsrRoot:
    """Debian 2026's layout: the vmlinux in /usr/lib/debug/lib/modules/R/, linked from both."""
    root = tmp_path_factory.mktemp("usr-root")
    return _usr_root(debian_kernel, root, DEBUG_VMLINUX, DEBUG_LINKS)


@pytest.fixture(scope="module")
def debug_dir_root(
    debian_kernel: DebianKernel, tmp_path_factory: pytest.TempPathFactory
) -> UsrRoot:
    """Only /usr/lib/debug/vmlinux-R, a file of its own, holds the vmlinux."""
    root = tmp_path_factory.mktemp("debug-dir-root")
    return _usr_root(debian_kernel, root, "/usr/lib/debug/vmlinux-{R}", ())


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def cli_json(*args: str | os.PathLike[str], vmlinux: bool = True) -> dict[str, object]:
    """The --json report; without a vmlinux (``vmlinux=False``) the report is still printed,
    the exit status is 1 and stderr says what is missing."""
    done = cli(*args, "--json")
    if vmlinux:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1, done.stdout
        assert "no vmlinux for kernel" in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report


@pytest.mark.real_kernel
def test_locate_pairs_the_usr_layout_by_build_id(usr_root: UsrRoot) -> None:
    done = cli("locate", usr_root.release, "--kernel-sysroot", usr_root.root)
    assert done.returncode == 0, done.stderr
    # The image is found at /lib/modules/R/vmlinuz, through lib -> usr/lib inside the root.
    assert f"image    {usr_root.modules / 'vmlinuz'}\n" in done.stdout
    report = cli_json("locate", usr_root.release, "--kernel-sysroot", usr_root.root)
    # The first layout, Debian's boot/ link, is chosen: it resolves inside the sysroot.
    assert report["vmlinux"] == str(usr_root.path(DEBUG_VMLINUX))
    assert report["paired"] == "build-id"
    assert report["build_id"] == usr_root.build_id
    probes = report["probes"]
    assert isinstance(probes, list)
    assert probes[-1] == {
        "path": str(usr_root.path(DISTRO_VMLINUX_LAYOUTS[0][0])),
        "layout": DISTRO_VMLINUX_LAYOUTS[0][1],
        "refused": None,
    }


@pytest.mark.real_kernel
def test_locate_finds_a_vmlinux_only_in_usr_lib_debug(debug_dir_root: UsrRoot) -> None:
    report = cli_json("locate", debug_dir_root.release, "--kernel-sysroot", debug_dir_root.root)
    chosen = debug_dir_root.path("/usr/lib/debug/vmlinux-{R}")
    assert report["vmlinux"] == str(chosen)
    assert (report["paired"], report["build_id"]) == ("build-id", debug_dir_root.build_id)
    probes = report["probes"]
    assert isinstance(probes, list)
    refused = {p["layout"]: p["refused"] for p in probes}
    assert refused["Debian/Ubuntu dbgsym"] == "missing"
    assert refused["Fedora debuginfo"] == "missing"
    assert refused["debug dir, versioned"] is None


@pytest.mark.real_kernel
def test_info_reads_the_config_of_the_usr_layout(usr_root: UsrRoot) -> None:
    report = cli_json("info", usr_root.release, "--kernel-sysroot", usr_root.root)
    assert report["config"] == str(usr_root.modules / "config")
    assert report["vmlinux"] == str(usr_root.path(DEBUG_VMLINUX))
    done = cli("info", usr_root.release, "--kernel-sysroot", usr_root.root)
    assert done.returncode == 0, done.stderr
    assert f"config       {usr_root.modules / 'config'}\n" in done.stdout


@pytest.mark.real_kernel
def test_info_reads_the_config_beside_an_image_path(
    debian_kernel: DebianKernel, usr_root: UsrRoot, tmp_path: Path
) -> None:
    release = debian_kernel.release
    # vmlinuz-R next to config-R, no sysroot.
    _link_or_copy(debian_kernel.image, tmp_path / f"vmlinuz-{release}")
    host = [Path(t.format(R=release)) for t in DISTRO_CONFIG_LAYOUTS]
    if not any(path.exists() for path in host):  # else the host's own copy is found
        report = cli_json("info", tmp_path / f"vmlinuz-{release}", vmlinux=False)
        assert report["config"] is None
    _link_or_copy(
        debian_kernel.sysroot / "boot" / f"config-{release}", tmp_path / f"config-{release}"
    )
    # No vmlinux beside the image (and none installed for it on the host): info still reads
    # the config, and exits 1 for the missing vmlinux as locate does.
    done = cli("info", tmp_path / f"vmlinuz-{release}")
    assert done.returncode == 1, done.stdout
    assert f"config       {tmp_path / f'config-{release}'}\n" in done.stdout
    assert "vmlinux      none: " in done.stdout
    # .../modules/R/vmlinuz next to config, no sysroot.
    image = usr_root.modules / "vmlinuz"
    # Without the sysroot its vmlinux (under the root's /usr/lib/debug) is not looked for.
    report = cli_json("info", image, vmlinux=False)
    assert report["config"] == str(usr_root.modules / "config")


@pytest.mark.real_kernel
def test_kernel_config_fixture_on_the_usr_layout(
    pytester: pytest.Pytester, usr_root: UsrRoot
) -> None:
    config = usr_root.modules / "config"
    pytester.makepyfile(
        test_cfg=f"""
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test(config=["DEBUG_INFO_BTF", "!SCHED_CLASS_EXT", "HZ=250"])
        def test_config(kernel_config, kernel, vmlinux_path):
            assert kernel_config.source == {str(config)!r}
            assert kernel_config["CONFIG_DEBUG_INFO_BTF"] == "y"
            assert str(kernel.image) == {str(usr_root.modules / "vmlinuz")!r}
            assert kernel.paired == "build-id"
        """
    )
    run(pytester, f"--kernel-sysroot={usr_root.root}", f"--kernel={usr_root.release}")
    report = junit(pytester)
    assert {n: (c.outcome, c.message) for n, c in report.cases.items()} == {
        "test_cfg.py::test_config": ("passed", "")
    }


@pytest.mark.real_kernel
def test_examples_check_every_requirement_on_the_usr_layout(usr_root: UsrRoot) -> None:
    # As the README runs them: the real examples, from the checkout. The live-guest example
    # boots a VM, which says nothing about where the files are: tests/live runs it.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "examples/test_scheduler.py",
            "examples/test_vmlinux_examples.py",
            "-rs",
            f"--kernel-sysroot={usr_root.root}",
            f"--kernel={usr_root.release}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "cannot check" not in output
    skips = sorted(line.split(": ", 1)[1] for line in skip_lines_of(done.stdout))
    release = usr_root.release
    assert skips == [
        f"ktstr: kernel {release} is 6.1.0, needs >= 6.6",
        f"ktstr: kernel {release} lacks CONFIG_SCHED_CLASS_EXT; lacks BTF type struct scx_rq;"
        " lacks BTF member struct rq.scx",
    ]
    assert f"ktstr: kernel {release}: 7 passed, 0 failed, 2 skipped" in done.stdout


def skip_lines_of(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("SKIPPED [")]

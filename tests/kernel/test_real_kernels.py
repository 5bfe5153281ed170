"""pytest with the plugin against real kernels: Debian's 6.1 cloud kernel and a tinyconfig tree.

The kernels come from tests/kernels/fetch.sh and build.sh; without them these tests skip (and
fail under .ci/run, which sets KTSTR_REQUIRE_REAL_KERNELS=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

CHECKS = """
import hashlib, os
from pathlib import Path

def test_vmlinux_path(vmlinux_path, kernel):
    assert vmlinux_path == Path(os.environ["EXPECTED_VMLINUX"])
    assert kernel.release == os.environ["EXPECTED_RELEASE"]
    assert kernel.arch == "x86_64"

def test_vmlinux_bytes(vmlinux_bytes, vmlinux_path):
    assert vmlinux_bytes[:4] == b"\\x7fELF"
    assert int.from_bytes(vmlinux_bytes[18:20], "little") == 62  # EM_X86_64
    on_disk = hashlib.sha256(vmlinux_path.read_bytes()).digest()
    assert hashlib.sha256(vmlinux_bytes).digest() == on_disk
"""


@pytest.fixture
def checks(pytester: pytest.Pytester) -> Path:
    return pytester.makepyfile(test_real=CHECKS)


def _expect(monkeypatch: pytest.MonkeyPatch, vmlinux: Path, release: str) -> None:
    monkeypatch.setenv("EXPECTED_VMLINUX", str(vmlinux))
    monkeypatch.setenv("EXPECTED_RELEASE", release)


def _tree_release(tree: Path) -> str:
    return (tree / "include/config/kernel.release").read_text().strip()


def test_user_story_inside_a_build_tree(
    tinyconfig_tree: Path, checks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As docs/getting-started.md says: cd into the tree, `pytest --kernel=arch/x86/boot/bzImage`.
    _expect(monkeypatch, tinyconfig_tree / "vmlinux", _tree_release(tinyconfig_tree))
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("--kernel=arch/x86/boot/bzImage", "--rootdir", str(checks.parent), str(checks)),
        ],
        cwd=tinyconfig_tree,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert f"vmlinux={tinyconfig_tree}/vmlinux" in result.stdout


@pytest.mark.parametrize("form", ["image", "tree", "env"])
def test_tinyconfig_tree(
    pytester: pytest.Pytester,
    tinyconfig_tree: Path,
    checks: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
) -> None:
    _expect(monkeypatch, tinyconfig_tree / "vmlinux", _tree_release(tinyconfig_tree))
    args: list[str] = []
    if form == "image":
        args.append(f"--kernel={tinyconfig_tree}/arch/x86/boot/bzImage")
    elif form == "tree":
        args.append(f"--kernel={tinyconfig_tree}")
    else:
        monkeypatch.setenv("KTSTR_KERNEL", str(tinyconfig_tree))
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)
    source = "env" if form == "env" else "option"
    result.stdout.fnmatch_lines([f"ktstr: kernel=* (from {source}) image=*/bzImage vmlinux=*"])


@pytest.mark.parametrize("form", ["release", "image"])
@pytest.mark.parametrize("suite", ["bookworm", "sid"])
def test_debian_kernel_in_a_sysroot(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    checks: Path,
    monkeypatch: pytest.MonkeyPatch,
    form: str,
    suite: str,
) -> None:
    """Debian 12's /boot layout and sid's 2026 one (/usr/lib/modules/R/vmlinuz, the -dbg vmlinux
    in /usr/lib/debug/lib/modules/R) both resolve and pair by build-id."""
    debian_kernel: DebianKernel = request.getfixturevalue(
        "debian_kernel" if suite == "bookworm" else "sid_kernel"
    )
    _expect(monkeypatch, debian_kernel.vmlinux, debian_kernel.release)
    spec = debian_kernel.release if form == "release" else str(debian_kernel.image)
    result = pytester.runpytest_subprocess(
        f"--kernel={spec}", f"--kernel-sysroot={debian_kernel.sysroot}"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"ktstr: kernel={spec} (from option) image={debian_kernel.image}"
            f" vmlinux={debian_kernel.vmlinux} release={debian_kernel.release}"
            f" build_id={debian_kernel.build_id} paired=build-id"
        ]
    )


def test_debian_release_without_sysroot_errors_with_the_report(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, checks: Path
) -> None:
    # Named, but this host has no such vmlinux installed: every vmlinux test errors, none skip.
    if Path(f"/usr/lib/debug/boot/vmlinux-{debian_kernel.release}").exists():
        pytest.skip("this host has the Debian debug vmlinux installed")
    result = pytester.runpytest_subprocess(f"--kernel={debian_kernel.release}")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [f"*refused  /usr/lib/debug/boot/vmlinux-{debian_kernel.release} *: missing"]
    )


def test_tinyconfig_tree_under_xdist(
    pytester: pytest.Pytester, tinyconfig_tree: Path, checks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _expect(monkeypatch, tinyconfig_tree / "vmlinux", _tree_release(tinyconfig_tree))
    result = pytester.runpytest_subprocess("-n", "2", f"--kernel={tinyconfig_tree}")
    result.assert_outcomes(passed=2)


def test_tinyconfig_snapshot_shared_by_four_workers(
    pytester: pytest.Pytester, tinyconfig_tree: Path, checks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _expect(monkeypatch, tinyconfig_tree / "vmlinux", _tree_release(tinyconfig_tree))
    result = pytester.runpytest_subprocess("-n", "4", "--dist=each", f"--kernel={tinyconfig_tree}")
    result.assert_outcomes(passed=8)
    # Built once each: the image's and the vmlinux's identities (by the controller) and the
    # snapshot; every worker reuses both identities, three of them the snapshot.
    result.stdout.fnmatch_lines(["ktstr: artifacts built 3, reused 11 (store: *)"])
    store = ArtifactStore(os.environ["KTSTR_CACHE_DIR"])
    builds = {
        (entry["source"], item["kind"]): item["builds"]
        for entry in store.entries()
        for item in entry["artifacts"]
    }
    vmlinux, image = tinyconfig_tree / "vmlinux", tinyconfig_tree / "arch/x86/boot/bzImage"
    assert builds == {
        (str(vmlinux), "vmlinux-snapshot"): 1,
        (str(vmlinux), "vmlinux-identity"): 1,
        (str(image), "image-identity"): 1,
    }

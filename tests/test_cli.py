"""`python -m pytest_ktstr_vmlinux locate`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.snapshot import snapshot
from pytest_ktstr_vmlinux.store import ArtifactStore
from tests.fakes import banner_for, build_id_for, make_build_tree, make_sysroot, write_vmlinux

R = "6.1.0-99-cloud-amd64"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_locate_json_in_a_sysroot(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path / "guest", R)
    result = _cli("locate", R, "--kernel-sysroot", "guest", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {
        "arch",
        "release",
        "banner",
        "build_id",
        "compression",
        "vmlinux",
        "paired",
        "probes",
    }
    assert data["vmlinux"] == str(root / f"usr/lib/debug/boot/vmlinux-{R}")
    assert (data["release"], data["arch"], data["compression"]) == (R, "x86_64", "gzip")
    assert (data["build_id"], data["paired"]) == (build_id_for(R).hex(), "build-id")
    assert data["banner"] == banner_for(R)
    assert data["probes"][-1]["refused"] is None


def test_locate_text_shows_refusals_and_exits_1_when_not_found(tmp_path: Path) -> None:
    make_build_tree(tmp_path / "linux", vmlinux=False)
    result = _cli("locate", "linux", cwd=tmp_path)
    assert result.returncode == 1
    assert "vmlinux  none" in result.stdout
    assert f"refused  {tmp_path}/linux/vmlinux [build tree]: missing" in result.stdout


@pytest.mark.parametrize("verb", ["locate", "info"])
def test_a_bad_file_exits_1_with_one_line(tmp_path: Path, verb: str) -> None:
    result = _cli(verb, "./missing/bzImage", cwd=tmp_path)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    (tmp_path / "garbage").write_bytes(os.urandom(8192))
    result = _cli(verb, "garbage", cwd=tmp_path)
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1)
    assert "not a kernel image" in result.stderr
    assert "Traceback" not in result.stderr


def test_info_names_the_mismatch(tmp_path: Path) -> None:
    tree = make_build_tree(tmp_path / "linux")
    write_vmlinux(tree / "vmlinux", build_id=build_id_for("other"), banner=banner_for("6.1.0-test"))
    result = _cli("info", "linux", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["vmlinux"] is None and data["paired"] == "unverified"
    expected = (
        f"build-id mismatch: image {build_id_for('6.1.0-test').hex()}"
        f" vmlinux {build_id_for('other').hex()}"
    )
    assert data["probes"][0]["refused"] == expected
    assert data["config"] is None


def test_library_works_without_pytest(tmp_path: Path) -> None:
    tree = make_build_tree(tmp_path / "linux")
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None  # importing pytest now fails\n"
        "from pytest_ktstr_vmlinux import (\n"
        "    Kernel, KernelArtifactError, cached_vmlinux_bytes, find_vmlinux, resolve_kernel)\n"
        "kernel = resolve_kernel(sys.argv[1])\n"
        "assert isinstance(kernel, Kernel)\n"
        "assert find_vmlinux(kernel.image) == kernel.vmlinux\n"
        "print(kernel.vmlinux, len(cached_vmlinux_bytes(kernel.vmlinux)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tree)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tree / "vmlinux"), str((tree / "vmlinux").stat().st_size)]


def test_cache_path_list_clear(tmp_path: Path) -> None:
    tree = make_build_tree(tmp_path / "linux")
    store_dir = Path(os.environ["KTSTR_CACHE_DIR"])
    snapshot(ArtifactStore(store_dir), tree / "vmlinux")
    assert _cli("cache", "path", cwd=tmp_path).stdout.strip() == str(store_dir)
    listing = _cli("cache", "list", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert data["store"] == str(store_dir)
    [source] = data["sources"]
    assert source["source"] == str(tree / "vmlinux")
    [item] = source["artifacts"]
    assert (item["kind"], item["version"], item["builds"]) == ("vmlinux-snapshot", 1, 1)
    assert data["size"] == item["size"] > (tree / "vmlinux").stat().st_size
    text = _cli("cache", "list", cwd=tmp_path).stdout
    assert str(tree / "vmlinux") in text and "vmlinux-snapshot v1" in text
    cleared = _cli("cache", "clear", cwd=tmp_path)
    assert cleared.stdout.strip() == f"removed 1 artifacts from {store_dir}"
    assert json.loads(_cli("cache", "list", "--json", cwd=tmp_path).stdout)["sources"] == []
    other = tmp_path / "elsewhere"
    assert _cli("cache", "path", "--cache-dir", str(other), cwd=tmp_path).stdout.strip() == str(
        other
    )


def test_cache_list_refuses_an_insecure_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "shared"
    store_dir.mkdir(mode=0o777)
    store_dir.chmod(0o777)
    result = _cli("cache", "list", "--cache-dir", str(store_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "chmod 700" in result.stderr
    assert "Traceback" not in result.stderr

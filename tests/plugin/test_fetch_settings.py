"""The settings of fetched kernels, read as every setting is (option > environment > ini), and the
command line's ``kernels`` verb on a store without any: all without the network. A fresh store
offline proves the offline setting was read: a kernel it lacks is then a usage error that asks
nobody."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.runs import run

USAGE_ERROR = 4
NOT_CACHED = (
    "ERROR: ktstr: kernel 'debian:sid' is not in the kernel cache, and offline it cannot be"
    " fetched: run once online to fetch it"
)
TEST = "def test_vmlinux(vmlinux_path):\n    pass\n"


@pytest.mark.parametrize("value", ["1", "yes", "TRUE", "on"])
def test_offline_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    pytester.makepyfile(TEST)
    monkeypatch.setenv("KTSTR_KERNEL_OFFLINE", value)
    result = run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={tmp_path / 'store'}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([NOT_CACHED])


def test_offline_from_the_ini_file(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(TEST)
    pytester.makeini(
        f"[pytest]\nktstr_kernel = debian:sid\nktstr_kernel_offline = yes\n"
        f"ktstr_cache_dir = {tmp_path / 'store'}\n"
    )
    result = run(pytester)
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([NOT_CACHED])


def test_the_environment_turns_the_ini_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Online now, with a proxy that refuses everything: the run asks, so offline was off.
    pytester.makepyfile(TEST)
    pytester.makeini("[pytest]\nktstr_kernel_offline = 1\n")
    monkeypatch.setenv("KTSTR_KERNEL_OFFLINE", "0")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("PATH", str(tmp_path))  # and no apt: the error says so
    result = run(pytester, "--kernel=debian:sid", f"--kernel-cache-dir={tmp_path / 'store'}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(["*fetching a Debian kernel needs apt-get, apt-cache, dpkg-deb*"])


@pytest.mark.parametrize(
    ("where", "origin"), [("env", "$KTSTR_KERNEL_OFFLINE"), ("ini", "ini ktstr_kernel_offline")]
)
def test_an_offline_value_that_is_no_yes_or_no_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str, origin: str
) -> None:
    pytester.makepyfile(TEST)
    if where == "env":
        monkeypatch.setenv("KTSTR_KERNEL_OFFLINE", "maybe")
    else:
        pytester.makeini("[pytest]\nktstr_kernel_offline = maybe\n")
    result = run(pytester, "--kernel=debian:sid")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ktstr: {origin}: 'maybe' is not a yes or no*"])


def test_a_fetched_kernel_needs_the_on_disk_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TEST)
    result = run(pytester, "--kernel=debian:sid", "--no-kernel-cache")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ktstr: kernel 'debian:sid': a fetched kernel is kept in the on-disk kernel cache*"]
    )


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("ubuntu:noble", "ubuntu: kernels are not fetched yet; fetched distros: debian"),
        ("debian:Sid", "'Sid' is not a suite name"),
        ("old=debian:sid@/", "a fetched kernel has its own root in the kernel cache; drop @/"),
    ],
)
def test_bad_fetch_specs_are_usage_errors(pytester: pytest.Pytester, spec: str, says: str) -> None:
    pytester.makepyfile(TEST)
    result = run(pytester, f"--kernel={spec}")
    assert result.ret == USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ktstr: *{says}*"])


def _cli(*args: str, status: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args], capture_output=True, text=True
    )
    assert done.returncode == status, done.stderr
    return done


def test_kernels_on_a_store_without_any(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    assert (
        "none (name one as --kernel debian:SUITE to fetch it)"
        in _cli("kernels", "--cache-dir", store, status=0).stdout
    )
    assert json.loads(_cli("kernels", "--json", "--cache-dir", store, status=0).stdout) == {
        "store": store,
        "kernels": [],
    }
    said = _cli("kernels", "remove", "debian:sid", "--cache-dir", store, status=1).stderr
    assert "no fetched kernel is 'debian:sid'; the kernel cache has: none" in said
    said = _cli("kernels", "drop", "x", "--cache-dir", store, status=2).stderr
    assert "kernels takes no argument, or `remove SPEC`" in said

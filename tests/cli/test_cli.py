"""`python -m pytest_ktstr_vmlinux locate`, run as a user would."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

from pytest_ktstr_vmlinux.cli.main import main
from pytest_ktstr_vmlinux.cli.query import check_query_arguments, parse_address
from pytest_ktstr_vmlinux.formats.btf.queries import parse_member_path
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.snapshot import snapshot
from tests.helpers.fakes import (
    banner_for,
    build_id_for,
    make_build_tree,
    make_sysroot,
    write_vmlinux,
)
from tests.helpers.fuzz import argv_text
from tests.helpers.kernels import DebianKernel

R = "6.1.0-99-cloud-amd64"
PACKAGE = "pytest_ktstr_vmlinux"
PROG_M = f"python -m {PACKAGE}"  # what the command calls itself when run so


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
        "image_probes",
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
    (line,) = result.stderr.splitlines()
    assert re.match(
        r"python -m pytest_ktstr_vmlinux: no vmlinux for kernel 'linux' \(release 6\.1\.0-test\):"
        r" not found \(\d+ candidates refused: \d+ missing\); install its debug package",
        line,
    ), line


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_info_without_a_vmlinux_exits_1_as_locate_does_and_says_what_is_missing(
    tmp_path: Path, as_json: bool
) -> None:
    make_build_tree(tmp_path / "linux", vmlinux=False)
    result = _cli("info", "linux", *(["--json"] if as_json else []), cwd=tmp_path)
    assert result.returncode == _cli("locate", "linux", cwd=tmp_path).returncode == 1
    if as_json:
        assert json.loads(result.stdout)["vmlinux"] is None  # the report is printed all the same
    else:
        vmlinux = [line for line in result.stdout.splitlines() if line.startswith("vmlinux ")]
        assert len(vmlinux) == 1
        assert re.fullmatch(
            r"vmlinux +none: not found \(\d+ candidates refused: \d+ missing\)", vmlinux[0]
        )
        assert "release      6.1.0-test" in result.stdout.splitlines()
    (line,) = result.stderr.splitlines()
    assert re.match(
        r"python -m pytest_ktstr_vmlinux: no vmlinux for kernel 'linux' \(release 6\.1\.0-test\):"
        r" not found \(\d+ candidates refused: \d+ missing\); `python -m pytest_ktstr_vmlinux"
        r" locate` lists every path probed; install its debug package",
        line,
    ), line
    found = _cli("info", str(make_build_tree(tmp_path / "built")), cwd=tmp_path)
    assert (found.returncode, found.stderr) == (0, ""), found.stderr


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
    assert result.returncode == 1, result.stderr  # no vmlinux: as for locate
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
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1)
    assert "chmod 700" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.real_kernel
def test_a_reader_that_stops_early_ends_the_listing_quietly(debian_kernel: DebianKernel) -> None:
    # 119k symbols are megabytes: far more than a pipe holds, so the writer is still writing
    # when the reader goes, as with `symbols SPEC | head -3`.
    with subprocess.Popen(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", "symbols", str(debian_kernel.vmlinux)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()
        stderr = proc.stderr.read()
        status = proc.wait(timeout=300)
    assert all(re.fullmatch(r"[0-9a-f]{16} \S+\n", line) for line in head), head
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
    assert stderr == ""
    assert status == 128 + signal.SIGPIPE


def _bad_arguments_dir(tmp_path: Path) -> Path:
    make_build_tree(tmp_path / "linux")
    (tmp_path / "garbage").write_bytes(os.urandom(8192))
    (tmp_path / "adir").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["offsetof", "linux", "struct rq", "nr_running..x"], "member path 'nr_running..x'"),
        (["offsetof", "linux", "struct rq", "points[x]"], "member path 'points[x]'"),
        (["offsetof", "linux", "struct rq", ""], "member path ''"),
        (["offsetof", "linux", "", "nr_running"], "type '' is empty"),
        (["btf", "linux", " "], "type ' ' is empty"),
        (["addr", "linux", "0xzz"], "address '0xzz' is not a number"),
        (["addr", "linux", "-1"], "address '-1' is outside 0..0xffffffffffffffff"),
        (["addr", "linux", "0x10000000000000000"], "is outside 0..0xffffffffffffffff"),
        (["symbols", "linux", ""], "symbol name '' is empty"),
        (["symbols", "./missing"], "does not exist"),
        (["btf", "garbage", "struct rq"], "not a kernel image"),
        (["symbols", "/dev/null"], "is not a regular file"),
        (["symbols", "linux", "--kernel-sysroot", "nowhere"], "'nowhere' (from option)"),
        (["locate", "linux", "--kernel-sysroot", "garbage"], "is not a directory"),
        (["addr", "linux", "0x10", "--vmlinux", "adir"], "adir is not a regular file"),
        (["addr", "linux", "0x10", "--vmlinux", "garbage"], "is not an ELF file"),
        (["info", "linux", "--vmlinux", ""], "--vmlinux '': empty"),
        (["info", ""], "kernel '' (from argument): empty"),
        (["locate", ""], "kernel '' (from argument): empty"),
        (["cache", "list", "--cache-dir", ""], "--cache-dir '' is empty"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_1(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    result = _cli(*argv, cwd=_bad_arguments_dir(tmp_path))
    assert "Traceback" not in result.stderr
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1), result.stderr
    assert result.stderr.startswith("python -m pytest_ktstr_vmlinux: ")
    assert expected in result.stderr


def _is_one_line_naming(error: ValueError, text: str) -> bool:
    return "\n" not in str(error) and repr(text) in str(error)


@settings(max_examples=300, deadline=None)
@given(text=argv_text)
def test_query_argument_parsers_raise_only_value_errors_that_name_the_text(text: str) -> None:
    try:
        address = parse_address(text)
    except ValueError as e:
        assert _is_one_line_naming(e, text), e
    else:
        assert text.isascii() and 0 <= address < 2**64
    try:
        parts = parse_member_path(text)
    except ValueError as e:
        assert _is_one_line_naming(e, text), e
    else:
        assert len(parts) == text.count(".") + 1
        assert all(name is not None for name, _ in parts[1:])
        assert all(i >= 0 for _, indices in parts for i in indices)
    for namespace in (
        argparse.Namespace(verb="symbols", names=["runqueues", text]),
        argparse.Namespace(verb="addr", address=text),
        argparse.Namespace(verb="offsetof", type=text, member="nr_running"),
        argparse.Namespace(verb="offsetof", type="struct rq", member=text),
        argparse.Namespace(verb="btf", type=text),
    ):
        try:
            check_query_arguments(namespace)
        except ValueError as e:
            assert _is_one_line_naming(e, text), e


def test_a_missing_vmlinux_prints_the_probe_report_a_line_at_a_time(tmp_path: Path) -> None:
    make_build_tree(tmp_path / "linux", vmlinux=False)
    located = _cli("locate", "linux", cwd=tmp_path).stdout.splitlines()
    result = _cli("symbols", "linux", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    first, *report = result.stderr.splitlines()
    assert first == "python -m pytest_ktstr_vmlinux: no vmlinux for kernel 'linux' (from argument)"
    start = next(i for i, line in enumerate(located) if line.startswith("vmlinux probe for"))
    assert report == located[start:]
    assert any(line.startswith("  refused  ") for line in report)


def test_a_spec_on_the_command_line_is_said_to_come_from_the_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_build_tree(tmp_path / "linux")
    located = _cli("locate", "linux", cwd=tmp_path).stdout.splitlines()
    assert located[0] == "kernel   linux (tree, from argument)"
    missing = _cli("btf", "./missing", "struct rq", cwd=tmp_path).stderr
    assert missing.startswith(
        "python -m pytest_ktstr_vmlinux: kernel './missing' (from argument): "
    )
    monkeypatch.setenv("KTSTR_KERNEL", "linux")
    assert _cli("locate", cwd=tmp_path).stdout.splitlines()[0] == "kernel   linux (tree, from env)"


def test_usage_names_the_command_as_it_was_invoked(tmp_path: Path) -> None:
    script = shutil.which("ktstr-vmlinux", path=str(Path(sys.executable).parent))
    assert script is not None, "the console script is installed with the package (pip install)"
    as_script = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert as_script.stdout.startswith("usage: ktstr-vmlinux [-h]")
    as_module = _cli("--help", cwd=tmp_path)
    assert as_module.stdout.startswith("usage: python -m pytest_ktstr_vmlinux [-h]")
    missing = subprocess.run([script, "symbols"], capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "ktstr-vmlinux symbols: error: the following arguments are required" in missing.stderr
    # Its own messages too: a user sees the command they typed, not another spelling of it.
    for argv, name in (([script], "ktstr-vmlinux"), ([sys.executable, "-m", PACKAGE], PROG_M)):
        bad = subprocess.run(
            [*argv, "info", "./missing"], capture_output=True, text=True, check=False, cwd=tmp_path
        )
        assert bad.returncode == 1
        assert (
            bad.stderr
            == f"{name}: kernel './missing' (from argument): {tmp_path}/missing does not exist\n"
        )


def test_version(tmp_path: Path) -> None:
    version = importlib.metadata.version("pytest-ktstr-vmlinux")
    script = shutil.which("ktstr-vmlinux", path=str(Path(sys.executable).parent))
    assert script is not None
    for argv, name in (([script], "ktstr-vmlinux"), ([sys.executable, "-m", PACKAGE], PROG_M)):
        result = subprocess.run(
            [*argv, "--version"], capture_output=True, text=True, check=False, cwd=tmp_path
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{name} {version}\n", "")


def test_the_documented_synopsis_shows_kernel_sysroot_wherever_a_verb_takes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    synopsis: dict[str, str] = {}
    for line in page.splitlines():  # each verb's first line is its synopsis
        words = line.split()
        if line.startswith("python -m pytest_ktstr_vmlinux ") and not words[3].startswith("-"):
            synopsis.setdefault(words[3], line)
    assert set(synopsis) == {
        "info",
        "locate",
        "cache",
        "kernels",
        "symbols",
        "addr",
        "offsetof",
        "btf",
    }
    for verb, line in synopsis.items():
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        takes_it = "--kernel-sysroot" in capsys.readouterr().out
        assert ("[--kernel-sysroot DIR]" in line) == takes_it, line

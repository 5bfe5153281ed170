"""kernel_symbols and kernel_btf as fixtures and as CLI verbs, on real kernels and fakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings

from pytest_ktstr_vmlinux.formats.btf.queries import BTF, BitfieldError
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.fakes import make_build_tree
from tests.helpers.fuzz import argv_text
from tests.helpers.kernels import DebianKernel
from tests.helpers.oracles import bpftool_member_bits

HARNESS = """
import os, json

def test_harness(kernel_symbols, kernel_btf, kernel):
    # What a scheduler harness reads: addresses and offsets.
    report = {
        "runqueues": kernel_symbols["runqueues"],
        "runqueues_percpu": kernel_symbols.is_percpu("runqueues"),
        "per_cpu_offset": kernel_symbols["__per_cpu_offset"],
        "nr_running": kernel_btf.offsetof("struct rq", "nr_running"),
        "clock": kernel_btf.offsetof("struct rq", "clock"),
        "rq_size": kernel_btf.sizeof("struct rq"),
    }
    with open(os.environ["REPORT"], "w") as f:
        json.dump(report, f)
"""


def _nm(vmlinux: Path, name: str) -> int:
    out = subprocess.run(["nm", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    values = [int(line.split()[0], 16) for line in out.splitlines() if line.endswith(f" {name}")]
    assert len(values) == 1, values
    return values[0]


@pytest.mark.real_kernel
def test_fixtures_on_the_debian_kernel(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = pytester.path / "report.json"
    monkeypatch.setenv("REPORT", str(report))
    pytester.makepyfile(HARNESS)
    result = pytester.runpytest_subprocess(
        "-n", "2", f"--kernel={debian_kernel.release}", f"--kernel-sysroot={debian_kernel.sysroot}"
    )
    result.assert_outcomes(passed=1)
    seen = json.loads(report.read_text())
    vmlinux = debian_kernel.vmlinux
    assert seen["runqueues"] == _nm(vmlinux, "runqueues")
    assert seen["runqueues_percpu"] is True
    assert seen["per_cpu_offset"] == _nm(vmlinux, "__per_cpu_offset")
    assert seen["nr_running"] * 8 == bpftool_member_bits(vmlinux, "rq", "nr_running")
    assert seen["clock"] * 8 == bpftool_member_bits(vmlinux, "rq", "clock")


def test_named_kernel_without_btf_errors_default_skips(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux")  # fakes carry no .BTF
    pytester.makepyfile("def test_b(kernel_btf):\n    pass\n")
    result = pytester.runpytest_subprocess("--kernel=linux")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ktstr: no BTF for kernel 'linux'*CONFIG_DEBUG_INFO_BTF*"])


def test_extracted_vmlinux_has_no_symbols(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", vmlinux=False)
    pytester.makepyfile("def test_s(kernel_symbols):\n    pass\n")
    result = pytester.runpytest_subprocess("--kernel=linux", "--kernel-allow-extracted")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*is the ELF extracted from*no .symtab*linux-image-R-dbg*CONFIG_DEBUG_INFO*"]
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.real_kernel
def test_cli_verbs_on_the_tinyconfig_tree(tinyconfig_tree: Path) -> None:
    vmlinux = tinyconfig_tree / "vmlinux"
    tree = str(tinyconfig_tree)
    result = _cli("symbols", tree, "jiffies_64", "start_kernel", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert int(found["jiffies_64"], 16) == _nm(vmlinux, "jiffies_64")
    assert int(found["start_kernel"], 16) == _nm(vmlinux, "start_kernel")
    inside = _nm(vmlinux, "start_kernel") + 4
    assert _cli("addr", tree, hex(inside)).stdout.strip() == "start_kernel+0x4"
    result = _cli("offsetof", tree, "struct task_struct", "pid", "--json")
    assert result.returncode == 0, result.stderr
    offset = json.loads(result.stdout)["offset"]
    assert offset * 8 == bpftool_member_bits(vmlinux, "task_struct", "pid")
    layout = _cli("btf", tree, "struct list_head").stdout
    assert "struct list_head {" in layout and "next" in layout and "/* size: 16 */" in layout
    missing = _cli("offsetof", tree, "struct task_struct", "pidd")
    assert missing.returncode == 1
    assert "did you mean" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.real_kernel
def test_cli_lists_every_symbol_like_nm(tinyconfig_tree: Path) -> None:
    vmlinux = tinyconfig_tree / "vmlinux"
    ours = _cli("symbols", str(tinyconfig_tree)).stdout.splitlines()
    nm = subprocess.run(
        ["nm", "--defined-only", str(vmlinux)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Duplicated static names included: the same multiset of (address, name) as nm's.
    ours_pairs = sorted((int(a, 16), n) for a, n in (line.split() for line in ours))
    nm_pairs = sorted((int(f[0], 16), f[2]) for f in (line.split() for line in nm))
    assert ours_pairs == nm_pairs


@pytest.fixture(scope="module")
def debian_btf(debian_kernel: DebianKernel) -> BTF:
    return BTF.from_path(debian_kernel.vmlinux, MemoryStore())


# Few examples: a name that is not there costs a close-match search over 95k types.
@pytest.mark.real_kernel
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=argv_text)
@example(text="\udcff")  # the byte 0xff of an argv that is not UTF-8
def test_btf_lookups_of_any_argument_raise_only_lookup_errors(debian_btf: BTF, text: str) -> None:
    # What the CLI's offsetof and btf verbs hand the BTF, arguments with bytes that are not
    # UTF-8 included: a miss is a KeyError, a bad path a ValueError, never anything else.
    try:
        debian_btf.type(text)
    except KeyError as e:
        assert "\n" not in str(e)
    try:
        debian_btf.offsetof("struct rq", text)
    except (KeyError, ValueError, BitfieldError) as e:
        assert "\n" not in str(e)

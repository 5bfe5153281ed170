"""The examples/ suite, end to end, on Debian's 6.1 cloud kernel and the tinyconfig tree in one
run: every test's outcome on each kernel, and why the skipped ones skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DebianKernel
from tests.helpers.runs import junit, kernel_summary, run, tree_release

pytestmark = pytest.mark.real_kernel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SCHED_EXT = (
    "lacks CONFIG_SCHED_CLASS_EXT; lacks BTF type struct scx_rq; lacks BTF member struct rq.scx"
)


def expected(deb: str, tiny: str) -> dict[str, str | None]:
    """nodeid -> the skip reason, or None for a pass. Both kernels are 6.1: no sched_ext (6.12),
    no EEVDF (6.6); tinyconfig has no SMP, so no per-CPU offset table either."""
    deb_name, tiny_name = f"deb ({deb})", f"tiny ({tiny})"
    outcomes: dict[str, str | None] = {}
    for label, name, version in (("deb", deb_name, "6.1.0"), ("tiny", tiny_name, "6.1.192")):
        sched = f"test_scheduler.py::{{}}[{label}]"
        outcomes[sched.format("test_rq_layout_for_reading_nr_running")] = None
        outcomes[sched.format("test_per_cpu_runqueues")] = (
            None
            if label == "deb"
            else f"ktstr: kernel {name} lacks CONFIG_SMP; lacks symbol __per_cpu_offset"
        )
        outcomes[sched.format("test_sched_ext_local_dsq")] = f"ktstr: kernel {name} {SCHED_EXT}"
        outcomes[sched.format("test_eevdf_fields")] = (
            f"ktstr: kernel {name} is {version}, needs >= 6.6"
        )
        outcomes[sched.format("test_pre_eevdf_has_no_deadline")] = None
        outcomes[sched.format("test_not_realtime_on_x86")] = None
        for test in (
            "test_kernel_is_identified",
            "test_vmlinux_is_an_elf_for_the_kernel_arch",
            "test_vmlinux_has_symbols_and_btf",
        ):
            outcomes[f"test_vmlinux_examples.py::{test}[{label}]"] = None
    return outcomes


@pytest.fixture
def examples(pytester: pytest.Pytester) -> None:
    for name in ("test_scheduler.py", "test_vmlinux_examples.py"):
        shutil.copy(EXAMPLES / name, pytester.path / name)


@pytest.mark.parametrize("workers", [None, "2"])
@pytest.mark.usefixtures("examples")
def test_examples_on_debian_and_tinyconfig(
    pytester: pytest.Pytester,
    debian_kernel: DebianKernel,
    tinyconfig_tree: Path,
    workers: str | None,
) -> None:
    deb, tiny = debian_kernel.release, tree_release(tinyconfig_tree)
    result = run(
        pytester,
        "-rs",
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel=deb={deb}",
        f"--kernel=tiny={tinyconfig_tree}",
        *(["-n", workers] if workers else []),
    )
    want = expected(deb, tiny)
    report = junit(pytester)
    assert report.duplicates == []
    got = {nodeid: (case.outcome, case.message or None) for nodeid, case in report.cases.items()}
    assert got == {n: ("skipped", why) if why else ("passed", None) for n, why in want.items()}
    result.assert_outcomes(passed=13, skipped=5)
    assert kernel_summary(result) == [
        # Reasons as frequent as each other are in the order of their text, with xdist too.
        f"ktstr: kernel deb ({deb}): 7 passed, 0 failed, 2 skipped",
        f"  1 skipped: ktstr: kernel deb ({deb}) is 6.1.0, needs >= 6.6",
        f"  1 skipped: ktstr: kernel deb ({deb}) {SCHED_EXT}",
        f"ktstr: kernel tiny ({tiny}): 6 passed, 0 failed, 3 skipped",
        f"  1 skipped: ktstr: kernel tiny ({tiny}) is 6.1.192, needs >= 6.6",
        f"  1 skipped: ktstr: kernel tiny ({tiny}) {SCHED_EXT}",
        f"  1 skipped: ktstr: kernel tiny ({tiny}) lacks CONFIG_SMP; lacks symbol __per_cpu_offset",
    ]


@pytest.mark.usefixtures("examples")
def test_examples_strict_turns_every_skip_into_a_failure(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, tinyconfig_tree: Path
) -> None:
    deb, tiny = debian_kernel.release, tree_release(tinyconfig_tree)
    result = run(
        pytester,
        "--kernel-strict",
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel={deb}",
        f"--kernel={tinyconfig_tree}",
    )
    result.assert_outcomes(passed=13, errors=5)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = junit(pytester)
    skipped = {
        nodeid.replace("[deb]", f"[{deb}]").replace("[tiny]", f"[{tiny}]")
        for nodeid, why in expected(deb, tiny).items()
        if why
    }
    assert {nodeid for nodeid, case in report.cases.items() if case.outcome == "error"} == skipped
    # Labels are the releases here: the reasons name each kernel once.
    result.stdout.fnmatch_lines([f"ktstr: kernel {deb} {SCHED_EXT} (--kernel-strict)"])
    result.stdout.fnmatch_lines(
        [f"ktstr: kernel {tiny} is 6.1.192, needs >= 6.6 (--kernel-strict)"]
    )
    assert kernel_summary(result) == [
        f"ktstr: kernel {deb}: 7 passed, 2 failed, 0 skipped",
        f"ktstr: kernel {tiny}: 6 passed, 3 failed, 0 skipped",
    ]

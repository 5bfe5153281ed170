"""The examples/ suite, end to end, on Debian's 6.1 cloud kernel and the tinyconfig tree in one
run: every test's outcome on each kernel, and why the skipped ones skipped; a newcomer's first
run on a host without kernel files; the scheduler example's skips, none of which boots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import junit, kernel_summary, run, skip_lines, tree_release

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
        # A requirement checked at setup fails there: pytest's "errors", and the summary's.
        f"ktstr: kernel {deb}: 7 passed, 0 failed, 0 skipped, 2 errors",
        f"ktstr: kernel {tiny}: 6 passed, 0 failed, 0 skipped, 3 errors",
    ]


# --- a newcomer's first run: a host with nothing in /boot, no debug vmlinux --------------------


def _scx_line() -> int:
    """Where pytest puts a skip of the scheduler example: its first decorator's line."""
    lines = (EXAMPLES / "test_scx.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith("@pytest.mark."))


def _all_examples(pytester: pytest.Pytester) -> None:
    for path in EXAMPLES.glob("test_*.py"):
        shutil.copy(path, pytester.path / path.name)


def test_the_examples_pass_with_clear_skips_where_the_host_has_no_kernel_files(
    pytester: pytest.Pytester,
) -> None:
    """`pytest examples/` on a fresh Debian container (here: the running kernel in an empty
    sysroot): what needs what the host lacks skips, saying so; nothing errors, nothing boots."""
    _all_examples(pytester)
    empty = pytester.mkdir("empty")
    basetemp = pytester.path / "basetemp"
    result = run(pytester, "-rs", f"--kernel-sysroot={empty}", f"--basetemp={basetemp}")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) == outcomes.get("failed", 0) == 0, outcomes
    lines = skip_lines(result)
    assert len(lines) == outcomes["skipped"] >= 10
    release = os.uname().release
    for line in lines:
        where, reason = line.split(": ", 1)
        assert where.startswith("SKIPPED [1] test_"), line  # the test's line, not the plugin's
        assert reason.startswith("ktstr: ") and release in reason, line
    assert sum("no bootable image for the running kernel" in line for line in lines) == 2
    assert list(basetemp.rglob("vm-*")) == []  # no guest was started


def test_the_sched_ext_examples_skip_before_booting_a_kernel_without_sched_ext(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, scx_schedulers: Path
) -> None:
    """The scheduler example and the live example's sched_ext case, on Debian 12's 6.1: each
    skips at setup, saying which kernel lacks what (ktstr's words), and no guest boots."""
    for name in ("test_scx.py", "test_live_scheduler.py"):
        shutil.copy(EXAMPLES / name, pytester.path)
    basetemp = pytester.path / "basetemp"
    scheduler = scx_schedulers / "scx_simple"
    deb = f"deb ({debian_kernel.release})"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KTSTR_EXAMPLE_SCHEDULER", str(scheduler))
        result = run(
            pytester,
            "-rs",
            "-k",
            "sched_ext or scheduler_holds",
            f"--kernel-sysroot={debian_kernel.sysroot}",
            f"--kernel=deb={debian_kernel.release}",
            f"--basetemp={basetemp}",
        )
    result.assert_outcomes(skipped=2)
    live = (EXAMPLES / "test_live_scheduler.py").read_text().splitlines()
    at = next(i for i, line in enumerate(live, 1) if line.startswith("@ktstr_test("))
    assert sorted(skip_lines(result)) == [
        f"SKIPPED [1] test_live_scheduler.py:{at}: ktstr: kernel {deb} lacks"
        " CONFIG_SCHED_CLASS_EXT; lacks BTF member struct rq.scx.nr_running",
        f"SKIPPED [1] test_scx.py:{_scx_line()}: ktstr: kernel {deb} lacks"
        f" CONFIG_SCHED_CLASS_EXT (ktstr_vm scheduler={str(scheduler)!r} needs sched_ext)",
    ]
    assert list(basetemp.rglob("vm-*")) == []


def test_the_scheduler_example_without_a_scheduler_skips_saying_how_to_get_one(
    pytester: pytest.Pytester, sid_kernel: DebianKernel
) -> None:
    shutil.copy(EXAMPLES / "test_scx.py", pytester.path)
    basetemp = pytester.path / "basetemp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(pytester.mkdir("bin")))  # no scx_simple there
        result = run(
            pytester,
            "-rs",
            f"--kernel-sysroot={sid_kernel.sysroot}",
            f"--kernel={sid_kernel.release}",
            f"--basetemp={basetemp}",
        )
    result.assert_outcomes(skipped=1)
    (line,) = skip_lines(result)
    assert line.startswith(f"SKIPPED [1] test_scx.py:{_scx_line()}: no sched_ext scheduler on")
    assert "make -C tools/sched_ext" in line and "KTSTR_EXAMPLE_SCHEDULER" in line
    assert list(basetemp.rglob("vm-*")) == []

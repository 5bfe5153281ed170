"""The ktstr_checks marker as users run it (pytester, a real guest of Debian sid's kernel under
TCG): a test that keeps the checks passes and records them in its junit properties; one that
breaks a bound fails with what was seen and a PNG of it; mistakes are reported at collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import junit, run

VM_OPTIONS = ("--kernel-vm-accel=tcg", "--kernel-vm-timeout=900", "--kernel-vm-cpus=4")

TESTS = """
import pytest

BUSY = "timeout 3 sh -c 'while :; do :; done'"


def workers(cpus):
    return " ".join(f"taskset -c {c} {BUSY} &" for c in cpus) + " wait"


@pytest.mark.ktstr_checks(max_gap_ms=2500)
def test_spread(kernel_vm):
    kernel_vm.run(workers([0, 1, 2, 3]), timeout=300)


@pytest.mark.ktstr_checks(max_imbalance_ratio=2.0)
def test_pinned(kernel_vm):
    kernel_vm.run(workers([0] * 6), timeout=300)


@pytest.mark.ktstr_checks
def test_its_own_failure_wins(kernel_vm):
    kernel_vm.run("true")
    assert False, "the test's own assertion"
"""


@pytest.mark.real_kernel
def test_the_marker_passes_fails_and_records(
    pytester: pytest.Pytester, sid_kernel: DebianKernel, guest_tools: None
) -> None:
    pytester.makepyfile(test_checked=TESTS)
    result = run(
        pytester,
        f"--kernel={sid_kernel.release}@{sid_kernel.sysroot}",
        *VM_OPTIONS,
        "-rA",
    )
    report = junit(pytester)
    outcomes = {name.split("::")[-1]: case.outcome for name, case in report.cases.items()}
    assert outcomes == {
        "test_spread": "passed",
        "test_pinned": "failed",
        "test_its_own_failure_wins": "failed",
    }, result.stdout.str()
    spread = next(c for n, c in report.cases.items() if n.endswith("test_spread")).properties
    assert spread["ktstr_check_max_imbalance_ratio"] == "passed"
    assert spread["ktstr_check_not_starved"] == "passed"
    assert float(spread["ktstr_check_not_starved_worst"]) <= 2500
    assert int(spread["ktstr_checks_samples"]) >= 20  # 3 s, one per 100 ms
    assert spread["ktstr_check_max_fallback_rate"] == "not run"  # EEVDF: no sched_ext counters
    pinned = next(c for n, c in report.cases.items() if n.endswith("test_pinned"))
    assert pinned.properties["ktstr_check_max_imbalance_ratio"] == "failed"
    assert float(pinned.properties["ktstr_check_max_imbalance_ratio_worst"]) >= 6
    plot = Path(pinned.properties["ktstr_checks_plot"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 20_000  # several panels drawn, not an empty canvas
    out = result.stdout.str()
    assert "ktstr checks: 1 of 6 failed" in out
    assert "max_imbalance_ratio: FAILED: nr_running busiest/idlest" in out
    assert f"plot of the samples: {plot}" in out
    assert "the test's own assertion" in out  # its failure, not the checks', is the one shown
    own = next(c for n, c in report.cases.items() if n.endswith("test_its_own_failure_wins"))
    assert "ChecksFailed" not in own.message


MISTAKES = {
    "test_unknown": (
        "@pytest.mark.ktstr_checks(max_gap=5)\ndef test_it(kernel_vm):\n    pass\n",
        "test_unknown.py::test_it: ktstr_checks: unknown check threshold 'max_gap': the"
        " thresholds are not_starved, max_gap_ms",
    ),
    "test_value": (
        "@pytest.mark.ktstr_checks(sustained_samples=0)\ndef test_it(kernel_vm):\n    pass\n",
        "test_value.py::test_it: ktstr_checks: sustained_samples=0: a whole number >= 1",
    ),
    "test_guest": (
        "@pytest.mark.ktstr_checks\ndef test_it():\n    pass\n",
        "test_guest.py::test_it: the ktstr_checks marker watches the guest of kernel_vm, but the"
        " test does not request kernel_vm",
    ),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_mistakes_are_reported_at_collection(pytester: pytest.Pytester, name: str) -> None:
    source, expected = MISTAKES[name]
    pytester.makepyfile(**{name: f"import pytest\n\n{source}"})
    result = run(pytester, "--collect-only")
    out = result.stdout.str()
    assert result.ret != 0
    assert expected in out
    assert "During handling" not in out  # one message, no chained traceback

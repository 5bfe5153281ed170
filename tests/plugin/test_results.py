"""Per-kernel results: the tally of real pytest reports, whatever order they arrive in (xdist
sends them as workers finish), and the JUnit property values."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Literal

import pytest

from pytest_ktstr_vmlinux.kernel.resolve import Kernel, resolve_kernel
from pytest_ktstr_vmlinux.plugin.results import KernelTally, case_properties, suite_property
from tests.helpers.fakes import build_id_for, make_build_tree


@pytest.fixture
def fake_kernel(tmp_path: Path) -> Kernel:
    tree = make_build_tree(tmp_path / "linux", release="6.6.0-b")
    return dataclasses.replace(resolve_kernel(str(tree)), label="new")


Outcome = Literal["passed", "failed", "skipped"]
When = Literal["setup", "call", "teardown"]


def report(
    nodeid: str, outcome: Outcome, when: When = "call", reason: str = "", xfail: str | None = None
) -> pytest.TestReport:
    """A report as pytest makes one: a skip's longrepr is (file, line, "Skipped: reason")."""
    longrepr: tuple[str, int, str] | str | None = None
    if outcome == "skipped":
        longrepr = ("test_x.py", 3, f"Skipped: {reason}")
    elif outcome == "failed":
        longrepr = "AssertionError"
    rep = pytest.TestReport(nodeid, ("test_x.py", 3, nodeid), {}, outcome, longrepr, when)
    if xfail is not None:
        rep.wasxfail = xfail  # what pytest's skipping plugin sets
    return rep


def run_of(nodeid: str, *phases: tuple[When, Outcome]) -> list[pytest.TestReport]:
    return [report(nodeid, outcome, when) for when, outcome in phases]


REPORTS = [
    *run_of("t::a", ("setup", "passed"), ("call", "passed"), ("teardown", "passed")),
    *run_of("t::b", ("setup", "passed"), ("call", "failed"), ("teardown", "passed")),
    *run_of("t::c", ("setup", "passed"), ("call", "passed"), ("teardown", "failed")),
    *run_of("t::j", ("setup", "failed"), ("teardown", "passed")),
    *run_of("t::k", ("setup", "passed"), ("call", "failed"), ("teardown", "failed")),
    *run_of("t::l", ("setup", "failed"), ("teardown", "failed")),
    report("t::d", "skipped", "setup", reason="ktstr: kernel new lacks CONFIG_SMP"),
    report("t::e", "skipped", "setup", reason="ktstr: kernel new lacks CONFIG_SMP"),
    report("t::f", "skipped", "call", reason="by hand"),
    report("t::g", "skipped", "setup", reason="another"),
    report("t::h", "skipped", "call", xfail="known bug"),
    report("t::i", "passed", "call", xfail="maybe fixed"),
]


def test_tally_counts_each_test_once(fake_kernel: Kernel) -> None:
    tally = KernelTally()
    for rep in REPORTS:
        tally.add(rep)
    assert tally.outcomes == {
        "t::a": "passed",
        "t::b": "failed",
        "t::c": "error",  # a teardown that fails makes an error of a test that passed
        "t::j": "error",  # as pytest counts them: a setup or teardown failure is an error
        "t::k": "failed",  # its call failed: the teardown's error does not hide that
        "t::l": "error",
        "t::d": "skipped",
        "t::e": "skipped",
        "t::f": "skipped",
        "t::g": "skipped",
        "t::h": "xfailed",
        "t::i": "xpassed",
    }
    assert tally.lines(fake_kernel) == [
        "ktstr: kernel new (6.6.0-b): 1 passed, 2 failed, 4 skipped, 1 xfailed, 1 xpassed,"
        " 3 errors",
        "  2 skipped: ktstr: kernel new lacks CONFIG_SMP",
        "  1 skipped: another",
        "  1 skipped: by hand",
    ]
    # Where pytest lists the skips itself (-rs), the reasons are not said twice.
    assert tally.lines(fake_kernel, reasons=False) == [
        "ktstr: kernel new (6.6.0-b): 1 passed, 2 failed, 4 skipped, 1 xfailed, 1 xpassed, 3 errors"
    ]


def test_one_error_is_an_error(fake_kernel: Kernel) -> None:
    tally = KernelTally()
    for rep in run_of("t::a", ("setup", "failed"), ("teardown", "passed")):
        tally.add(rep)
    assert tally.lines(fake_kernel) == [
        "ktstr: kernel new (6.6.0-b): 0 passed, 0 failed, 0 skipped, 1 error"
    ]


def test_the_summary_does_not_depend_on_report_order(fake_kernel: Kernel) -> None:
    # Tests are whole units here: each test's own phases stay in order, tests interleave.
    tests = [list(group) for _, group in itertools.groupby(REPORTS, key=lambda r: r.nodeid)]
    seen = set()
    for order in itertools.islice(itertools.permutations(tests), 0, None, 997):
        tally = KernelTally()
        for test in order:
            for rep in test:
                tally.add(rep)
        seen.add(tuple(tally.lines(fake_kernel)))
    assert len(seen) == 1


def test_a_kernel_without_release_or_build_id(fake_kernel: Kernel) -> None:
    bare = dataclasses.replace(fake_kernel, label="custom", release=None, build_id=None)
    tally = KernelTally()
    tally.add(report("t::a", "passed"))
    assert tally.lines(bare) == ["ktstr: kernel custom: 1 passed, 0 failed, 0 skipped"]
    assert case_properties(bare) == [
        ("ktstr_kernel", "custom"),
        ("ktstr_release", ""),
        ("ktstr_build_id", ""),
    ]


def test_suite_property_is_json_of_every_kernel(fake_kernel: Kernel) -> None:
    other = dataclasses.replace(fake_kernel, label="again", vmlinux=None, image=None)
    assert json.loads(suite_property([fake_kernel, other])) == [
        {
            "label": "new",
            "spec": str(fake_kernel.spec.raw),
            "release": "6.6.0-b",
            "build_id": build_id_for("6.6.0-b").hex(),
            "image": str(fake_kernel.image),
            "vmlinux": str(fake_kernel.vmlinux),
        },
        {
            "label": "again",
            "spec": str(fake_kernel.spec.raw),
            "release": "6.6.0-b",
            "build_id": build_id_for("6.6.0-b").hex(),
            "image": "",
            "vmlinux": "",
        },
    ]

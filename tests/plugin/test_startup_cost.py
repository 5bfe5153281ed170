"""A suite that uses no kernel pays nothing for the plugin: the mechanism, not the timing
(bench/startup.py times it). In such a run the plugin imports none of the library and has no
hook that runs per test; in a run that mixes kernel and plain tests, the kernel tests still get
everything (JUnit properties, requirement checks, the per-kernel summary) and the plain ones
nothing. A conftest in each run records, after collection and at the end, which of the package's
modules are loaded, which of the plugin's hooks are registered per test, and each test's user
properties."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.fakes import make_build_tree
from tests.helpers.runs import junit, kernel_summary, run

# What the plugin may import before a kernel is needed; everything else is the library.
LIGHT = {
    "pytest_ktstr_vmlinux",
    "pytest_ktstr_vmlinux.errors",
    "pytest_ktstr_vmlinux.kernel",  # the subpackages' __init__ hold docstrings only
    "pytest_ktstr_vmlinux.kernel.kernelset",
    "pytest_ktstr_vmlinux.plugin",
    "pytest_ktstr_vmlinux.plugin.checks",
    "pytest_ktstr_vmlinux.plugin.fixtures",
    "pytest_ktstr_vmlinux.plugin.hooks",
    "pytest_ktstr_vmlinux.plugin.markers",
    "pytest_ktstr_vmlinux.plugin.monitor",
    "pytest_ktstr_vmlinux.plugin.options",
    "pytest_ktstr_vmlinux.plugin.results",
    "pytest_ktstr_vmlinux.plugin.run",
    "pytest_ktstr_vmlinux.plugin.settings",
    "pytest_ktstr_vmlinux.plugin.strict",
    "pytest_ktstr_vmlinux.plugin.vm",
    "pytest_ktstr_vmlinux.plugin.vmsettings",
}

RECORDER = """
import json
import sys

PER_TEST_HOOKS = (
    "pytest_itemcollected",
    "pytest_runtest_protocol",
    "pytest_runtest_logstart",
    "pytest_runtest_setup",
    "pytest_runtest_call",
    "pytest_pyfunc_call",
    "pytest_runtest_teardown",
    "pytest_runtest_makereport",
    "pytest_runtest_logreport",
    "pytest_report_teststatus",
    "pytest_runtest_logfinish",
)


def _ours(config, name):
    impls = getattr(config.hook, name).get_hookimpls()
    return sorted(
        {
            impl.plugin_name
            for impl in impls
            if (getattr(impl.function, "__module__", None) or "").startswith(
                "pytest_ktstr_vmlinux"
            )
        }
    )


def _record(session, when):
    # Not $PYTEST_XDIST_WORKER: a run made from an xdist worker inherits it.
    worker = getattr(session.config, "workerinput", {}).get("workerid", "main")
    state = {
        "modules": sorted(m for m in sys.modules if m.startswith("pytest_ktstr_vmlinux")),
        "hooks": {name: _ours(session.config, name) for name in PER_TEST_HOOKS},
        "properties": {i.nodeid: [list(p) for p in i.user_properties] for i in session.items},
    }
    path = session.config.rootpath / f"state-{when}-{worker}.json"
    path.write_text(json.dumps(state))


def pytest_collection_finish(session):
    _record(session, "collected")


def pytest_sessionfinish(session):
    _record(session, "finished")
"""

PLAIN = """
import pytest

def test_one():
    pass

@pytest.mark.parametrize("n", range(20))
def test_many(n):
    pass

class TestPlain:
    def test_method(self):
        pass
"""

MIXED = """
import os

import pytest

def test_plain():
    pass

def test_uses_kernel(kernel):
    assert kernel.release == os.uname().release

@pytest.mark.ktstr(min_version="999.0")
def test_needs_a_future_kernel():
    pass

class TestPlain:
    def test_method(self):
        pass
"""


def _state(pytester: pytest.Pytester, when: str, worker: str = "main") -> dict[str, Any]:
    state = json.loads((pytester.path / f"state-{when}-{worker}.json").read_text())
    assert isinstance(state, dict)
    return state


def _assert_costs_nothing(state: dict[str, Any]) -> None:
    assert set(state["modules"]) <= LIGHT, set(state["modules"]) - LIGHT
    assert state["hooks"] == {name: [] for name in state["hooks"]}
    assert all(props == [] for props in state["properties"].values())


def test_a_suite_without_kernel_tests_imports_and_hooks_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_plain=PLAIN)
    # -q: the report header, which names the kernel and so resolves it, is not shown.
    result = run(pytester, "-q")
    result.assert_outcomes(passed=22)
    for when in ("collected", "finished"):
        state = _state(pytester, when)
        assert len(state["properties"]) == 22
        _assert_costs_nothing(state)
    assert junit(pytester).properties == {}  # no kernel was needed, none is reported
    assert kernel_summary(result) == []
    assert "ktstr: artifacts built" not in result.stdout.str()


def test_xdist_workers_without_kernel_tests_import_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_plain=PLAIN)
    result = run(pytester, "-q", "-n", "2")
    result.assert_outcomes(passed=22)
    for worker in ("gw0", "gw1"):
        for when in ("collected", "finished"):
            _assert_costs_nothing(_state(pytester, when, worker))


def test_a_mixed_suite_gets_the_kernel_behaviour_on_its_kernel_tests(
    pytester: pytest.Pytester,
) -> None:
    """The running kernel (nothing named): resolved once collection finds a kernel test."""
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_mixed=MIXED)
    result = run(pytester, "-q", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    state = _state(pytester, "collected")
    assert "pytest_ktstr_vmlinux.kernel.resolve" in state["modules"]
    assert state["hooks"]["pytest_runtest_setup"] == ["ktstr-vmlinux-tests"]
    assert state["hooks"]["pytest_runtest_logreport"] == ["ktstr-vmlinux-results"]
    properties = state["properties"]
    assert properties["test_mixed.py::test_plain"] == []
    assert properties["test_mixed.py::TestPlain::test_method"] == []
    (kernel,) = junit(pytester).kernels()
    assert kernel["release"] == os.uname().release
    expected = [["ktstr_kernel", kernel["label"]], ["ktstr_release", kernel["release"]]]
    for name in ("test_uses_kernel", "test_needs_a_future_kernel"):
        assert properties[f"test_mixed.py::{name}"][:2] == expected
    assert (
        kernel_summary(result)[0]
        == f"ktstr: kernel {kernel['label']}: 1 passed, 0 failed, 1 skipped"
    )
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_mixed.py:*: ktstr: *999*"])


def test_a_mixed_suite_over_two_kernels_under_xdist(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux-a", release="6.1.0-a")
    make_build_tree(pytester.path / "linux-b", release="6.6.0-b")
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_mixed=MIXED.replace("os.uname().release", "kernel.release"))
    result = run(pytester, "-q", "-n", "2", "--kernel=a=linux-a", "--kernel=b=linux-b")
    result.assert_outcomes(passed=4, skipped=2)
    cases = junit(pytester).cases
    assert sorted(cases) == sorted(
        [
            "test_mixed.py::test_plain",
            "test_mixed.py::TestPlain::test_method",
            *(f"test_mixed.py::test_uses_kernel[{k}]" for k in "ab"),
            *(f"test_mixed.py::test_needs_a_future_kernel[{k}]" for k in "ab"),
        ]
    )
    assert cases["test_mixed.py::test_plain"].properties == {}
    assert cases["test_mixed.py::TestPlain::test_method"].properties == {}
    for label in "ab":
        assert (
            cases[f"test_mixed.py::test_uses_kernel[{label}]"].properties["ktstr_kernel"] == label
        )
    summary = kernel_summary(result)
    assert summary[0].startswith("ktstr: kernel a (6.1.0-a): 1 passed, 0 failed, 1 skipped")
    assert any(line.startswith("ktstr: kernel b (6.6.0-b): 1 passed") for line in summary)


def test_the_package_imports_its_public_names_on_first_use() -> None:
    script = (
        "import sys\n"
        "import pytest_ktstr_vmlinux as p\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('pytest_ktstr_vmlinux.'))\n"
        "assert loaded == [], loaded\n"
        "assert set(p.__all__) == set(p._EXPORTS), set(p.__all__) ^ set(p._EXPORTS)\n"
        "import importlib\n"
        "for name in p.__all__:\n"
        "    module = importlib.import_module('pytest_ktstr_vmlinux.' + p._EXPORTS[name])\n"
        "    assert getattr(p, name) is getattr(module, name), name\n"
        "assert set(p.__all__) <= set(dir(p))\n"
        "try:\n"
        "    p.no_such_name\n"
        "except AttributeError:\n"
        "    pass\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
        "from pytest_ktstr_vmlinux.store import index  # submodules still import\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])

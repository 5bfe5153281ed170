"""Results per kernel: what CI reads after a run over several kernels.

Each test that runs on a kernel carries ``ktstr_kernel`` (label), ``ktstr_release`` and
``ktstr_build_id`` in its user properties, which pytest's JUnit XML writes per test case and
pytest-xdist carries from workers to the controller. There, reports are tallied per label for
the terminal summary; the JUnit suite gets ``ktstr_kernels``, a JSON list of the kernels.

The summary counts as pytest does: a test whose setup or teardown failed is an error, one whose
call failed a failure. It lists why tests skipped unless pytest does (``-rs``, ``-ra``), so that
no reason is printed twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from ..kernel.kernelset import kernel_name

if TYPE_CHECKING:
    from ..kernel.resolve import Kernel

PROP_KERNEL = "ktstr_kernel"
PROP_RELEASE = "ktstr_release"
PROP_BUILD_ID = "ktstr_build_id"
PROP_FETCHED_SUITE = "ktstr_suite"
PROP_PACKAGE_VERSION = "ktstr_package_version"
PROP_SUITE = "ktstr_kernels"
_SKIPPED_PREFIX = "Skipped: "


def case_properties(kernel: Kernel) -> list[tuple[str, str]]:
    """The per-test-case JUnit properties; "" for what is unknown. A fetched kernel's also say
    the suite it came from and its package version."""
    properties = [
        (PROP_KERNEL, kernel.label),
        (PROP_RELEASE, kernel.release or ""),
        (PROP_BUILD_ID, kernel.build_id or ""),
    ]
    if kernel.fetched is not None:
        properties.append((PROP_FETCHED_SUITE, kernel.fetched.suite))
        properties.append((PROP_PACKAGE_VERSION, kernel.fetched.version))
    return properties


def suite_property(kernels: Sequence[Kernel]) -> str:
    """The JUnit suite property's value: every kernel, in the order given."""
    return json.dumps([_kernel_json(k) for k in kernels])


def _kernel_json(kernel: Kernel) -> dict[str, Any]:
    found: dict[str, Any] = {
        "label": kernel.label,
        "spec": kernel.spec.raw,
        "release": kernel.release or "",
        "build_id": kernel.build_id or "",
        "image": str(kernel.image or ""),
        "vmlinux": str(kernel.vmlinux or ""),
    }
    fetched = kernel.fetched
    if fetched is not None:
        found["fetched"] = {
            "spec": fetched.spec,
            "suite": fetched.suite,
            "package_version": fetched.version,
            "packages": list(fetched.packages),
            "status": fetched.status,
        }
    return found


@dataclass
class KernelTally:
    """Final outcomes of one kernel's tests, and why the skipped ones were skipped."""

    # nodeid -> passed/failed/error/skipped, or xfailed/xpassed for an expected failure
    outcomes: dict[str, str] = field(default_factory=dict)
    skip_reasons: dict[str, str] = field(default_factory=dict)

    def add(self, report: pytest.TestReport) -> None:
        """A test fails if its call fails, is an error if its setup or teardown fails (and its
        call did not), else is skipped if a phase skipped, else passes; pytest's xfail marks a
        skipped or passed report as expected to fail (``wasxfail``)."""
        nodeid, before = report.nodeid, self.outcomes.get(report.nodeid)
        expected_failure = hasattr(report, "wasxfail")
        if report.failed:
            failed = report.when == "call" or before == "failed"
            self.outcomes[nodeid] = "failed" if failed else "error"
        elif report.skipped and expected_failure and before not in ("failed", "error"):
            self.outcomes[nodeid] = "xfailed"
        elif report.skipped and before not in ("failed", "error"):
            self.outcomes[nodeid] = "skipped"
            self.skip_reasons[nodeid] = _skip_reason(report)
        elif report.when == "call" and before is None:
            self.outcomes[nodeid] = "xpassed" if expected_failure else "passed"

    def lines(self, kernel: Kernel, *, reasons: bool = True) -> list[str]:
        """The kernel's counts, then (with ``reasons``) why its tests skipped, a reason a line."""
        counts = Counter(self.outcomes.values())
        head = (
            f"ktstr: kernel {kernel_name(kernel)}: {counts['passed']} passed,"
            f" {counts['failed']} failed, {counts['skipped']} skipped"
        )
        head += "".join(f", {counts[x]} {x}" for x in ("xfailed", "xpassed") if counts[x])
        errors = counts["error"]
        head += f", {errors} error{'s' if errors > 1 else ''}" if errors else ""
        if not reasons:
            return [head]
        skipped = Counter(
            self.skip_reasons[n] for n, outcome in self.outcomes.items() if outcome == "skipped"
        )
        # Most frequent first, ties by reason: under xdist reports arrive in no fixed order.
        ordered = sorted(skipped.items(), key=lambda item: (-item[1], item[0]))
        return [head] + [f"  {n} skipped: {why}" for why, n in ordered]


class KernelResults:
    """The controller's (or a run without xdist) per-kernel tally of test reports.

    The plugin registers it only on the xdist controller and in a run that collected kernel
    tests, so a suite without any pays no hook per report. ``kernels`` gives the run's
    kernels; it is called only once a report of a kernel test arrives or a tally exists."""

    def __init__(self, kernels: Callable[[], Sequence[Kernel]]) -> None:
        self._kernels = kernels
        self._labels: frozenset[str] | None = None
        self.tallies: dict[str, KernelTally] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.user_properties:
            return
        label = dict(report.user_properties).get(PROP_KERNEL)
        if not isinstance(label, str):
            return
        if self._labels is None:
            self._labels = frozenset(k.label for k in self._kernels())
        if label in self._labels:
            self.tallies.setdefault(label, KernelTally()).add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.tallies:
            return
        # pytest lists every skip with its reason under -rs (and -ra): not twice.
        reasons = not terminalreporter.hasopt("s")
        for kernel in self._kernels():
            tally = self.tallies.get(kernel.label)
            if tally is not None and tally.outcomes:
                for line in tally.lines(kernel, reasons=reasons):
                    terminalreporter.write_line(line)


def add_suite_property(config: pytest.Config, kernels: Sequence[Kernel]) -> None:
    """Give the JUnit XML report (when --junitxml is on) its ``ktstr_kernels`` suite property."""
    xml = _junit_xml(config)
    if xml is not None:
        xml.add_global_property(PROP_SUITE, suite_property(kernels))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix(_SKIPPED_PREFIX)
    return str(longrepr)


def _junit_xml(config: pytest.Config) -> Any:
    """pytest's JUnit XML writer, when --junitxml is on; its stash key is not public API, so a
    pytest that moved it loses the suite property, not the run."""
    try:
        from _pytest.junitxml import xml_key
    except ImportError:
        return None
    return config.stash.get(xml_key, None)

"""Reading back a pytest run made with pytester: outcomes per test id (from its JUnit XML), the
``-rs`` skip lines and the plugin's per-kernel summary."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_SUMMARY_RE = re.compile(r"ktstr: kernel (?!=)\S+.*: \d+ passed, \d+ failed, \d+ skipped.*")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """pytest in a subprocess, as users run it, with a JUnit XML report to read back."""
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--junitxml=junit.xml", *args
    )


@dataclass(frozen=True)
class Case:
    """One test case of a JUnit XML report: its outcome, the message that goes with it (a
    skip reason, a failure's one-line summary) and its properties."""

    outcome: str  # passed, skipped, failed, error
    message: str = ""
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    cases: dict[str, Case]  # "file.py::Class::name[id]" -> case
    properties: dict[str, str]  # the test suite's
    duplicates: list[str]  # ids reported more than once

    def outcomes(self) -> dict[str, str]:
        return {nodeid: case.outcome for nodeid, case in self.cases.items()}

    def kernels(self) -> list[dict[str, Any]]:
        value = json.loads(self.properties["ktstr_kernels"])
        assert isinstance(value, list)
        return value


def junit(pytester: pytest.Pytester, name: str = "junit.xml") -> Report:
    """The report of a run in ``pytester.path`` (test files at its top, no packages)."""
    root = ET.parse(Path(pytester.path, name)).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    cases: dict[str, Case] = {}
    duplicates = []
    for element in suite.iter("testcase"):
        module, *classes = element.get("classname", "").split(".")
        nodeid = "::".join([f"{module}.py", *classes, element.get("name", "")])
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = element.find(tag)
            if child is not None:
                outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
                message = child.get("message", "")
                break
        props = {
            p.get("name", ""): p.get("value", "") for p in element.iterfind("properties/property")
        }
        if nodeid in cases:
            duplicates.append(nodeid)
        cases[nodeid] = Case(outcome, message, props)
    suite_props = {
        p.get("name", ""): p.get("value", "") for p in suite.iterfind("properties/property")
    }
    return Report(cases, suite_props, duplicates)


def skip_lines(result: pytest.RunResult) -> list[str]:
    """The ``-rs`` lines: ``SKIPPED [1] test_x.py:12: reason``."""
    return [line for line in result.outlines if line.startswith("SKIPPED [")]


def kernel_summary(result: pytest.RunResult) -> list[str]:
    """The plugin's per-kernel terminal summary: each kernel's counts, then its skip reasons."""
    lines, inside = [], False
    for line in result.outlines:
        if _SUMMARY_RE.fullmatch(line):
            lines.append(line)
            inside = True
        elif inside and re.match(r"  \d+ skipped: ", line):
            lines.append(line)
        else:
            inside = False
    return lines


def collected_ids(result: pytest.RunResult) -> list[str]:
    """The ids ``--collect-only -q`` lists."""
    return [line for line in result.outlines if "::" in line and not line.startswith(" ")]


def tree_release(tree: Path) -> str:
    return (tree / "include/config/kernel.release").read_text().strip()

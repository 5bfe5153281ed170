""".ci/results.py is what makes CI fail on a lost test or an unexpected skip: check that it does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / ".ci" / "results.py"


def _junit(path: Path, cases: list[tuple[str, str, str | None]]) -> Path:
    rows = []
    for classname, name, skip in cases:
        body = f'<skipped type="pytest.skip" message="{skip}"/>' if skip is not None else ""
        rows.append(f'<testcase classname="{classname}" name="{name}">{body}</testcase>')
    path.write_text(f"<testsuites><testsuite>{''.join(rows)}</testsuite></testsuites>")
    return path


def _verify(
    tmp_path: Path, collected: dict[str, bool], junit: Path
) -> subprocess.CompletedProcess[str]:
    collected_file = tmp_path / "collected.json"
    collected_file.write_text(json.dumps(collected))
    return subprocess.run(
        [sys.executable, str(RESULTS), "verify", str(collected_file), str(junit)],
        capture_output=True,
        text=True,
    )


COLLECTED = {
    "tests/test_a.py::test_one": False,
    "tests/test_a.py::TestK::test_real[p::q]": True,
}


def test_all_ran_passes(tmp_path: Path) -> None:
    junit = _junit(
        tmp_path / "j.xml",
        [("tests.test_a", "test_one", None), ("tests.test_a.TestK", "test_real[p::q]", None)],
    )
    done = _verify(tmp_path, COLLECTED, junit)
    assert done.returncode == 0, done.stderr
    assert "all 2 collected tests ran (1 real-kernel" in done.stdout


@pytest.mark.parametrize(
    ("cases", "problem"),
    [
        ([("tests.test_a", "test_one", None)], "1 tests collected but not run"),
        (
            [
                ("tests.test_a", "test_one", "some reason nobody allowed"),
                ("tests.test_a.TestK", "test_real[p::q]", None),
            ],
            "skip not in allowed-skips: tests/test_a.py::test_one",
        ),
        (
            [
                ("tests.test_a", "test_one", None),
                ("tests.test_a.TestK", "test_real[p::q]", "/proc/kallsyms unreadable: x"),
            ],
            "real-kernel test skipped",
        ),
        (
            [
                ("tests.test_a", "test_one", None),
                ("tests.test_a", "test_one", None),
                ("tests.test_a.TestK", "test_real[p::q]", None),
            ],
            "reported more than once",
        ),
    ],
    ids=["lost", "unexpected-skip", "real-kernel-skip", "twice"],
)
def test_unaccounted_run_fails(
    tmp_path: Path, cases: list[tuple[str, str, str | None]], problem: str
) -> None:
    done = _verify(tmp_path, COLLECTED, _junit(tmp_path / "j.xml", cases))
    assert done.returncode == 1
    assert problem in done.stderr


def test_allowed_skip_passes(tmp_path: Path) -> None:
    junit = _junit(
        tmp_path / "j.xml",
        [
            ("tests.test_a", "test_one", "/proc/kallsyms unreadable: EPERM"),
            ("tests.test_a.TestK", "test_real[p::q]", None),
        ],
    )
    done = _verify(tmp_path, COLLECTED, junit)
    assert done.returncode == 0, done.stderr
    assert "1 skipped with an allowed reason" in done.stdout

"""CI's account of a test run: every collected test ran once, no real-kernel test skipped, and
every other skip has a reason listed in .ci/allowed-skips.

    python .ci/results.py collect COLLECTED.json   # collect only (no xdist), write the test ids
    python .ci/results.py verify COLLECTED.json JUNIT.xml

The expected count comes from this collection, not from a number written down: a test that stops
being collected by the run (a worker that died, a module that collects differently under xdist)
or that is reported twice shows up as a difference between the two lists.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ALLOWED_SKIPS = Path(__file__).with_name("allowed-skips")


class _Collector:
    """A pytest plugin that records each collected item's id and whether it is real-kernel."""

    def __init__(self) -> None:
        self.items: dict[str, bool] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.items[item.nodeid] = item.get_closest_marker("real_kernel") is not None


def collect(out: Path) -> int:
    collector = _Collector()
    rc = pytest.main(["--collect-only", "-q", "-p", "no:xdist"], plugins=[collector])
    if rc != 0:
        print(f".ci/results.py: collection failed (pytest exit {rc})", file=sys.stderr)
        return 1
    if not collector.items:
        print(".ci/results.py: pytest collected no tests", file=sys.stderr)
        return 1
    out.write_text(json.dumps(collector.items, indent=0, sort_keys=True))
    real = sum(collector.items.values())
    print(f".ci/results.py: collected {len(collector.items)} tests, {real} of them real-kernel")
    return 0


def _junit_key(nodeid: str) -> tuple[str, str]:
    """A test id as JUnit XML names it: (classname, name).

    tests/test_x.py::TestY::test[a] is ("tests.test_x.TestY", "test[a]").
    """
    # A parameter id may itself contain "::"; only the part before "[" is the path.
    base, bracket, params = nodeid.partition("[")
    path, *parts = base.split("::")
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[:-1]]), parts[-1] + bracket + params


def allowed_skip_patterns(path: Path = ALLOWED_SKIPS) -> list[re.Pattern[str]]:
    """The file's patterns; each block of them must follow a comment that says why CI cannot run
    those tests (a blank line ends a block)."""
    patterns: list[re.Pattern[str]] = []
    why = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            why = False
        elif line.startswith("#"):
            why = why or bool(line.lstrip("# ").strip())
        else:
            if not why:
                sys.exit(f"{path}:{number}: a skip reason with no comment above it saying why")
            patterns.append(re.compile(line.strip()))
    return patterns


def verify(collected_file: Path, junit_file: Path) -> int:
    collected: dict[str, bool] = json.loads(collected_file.read_text())
    expected = {_junit_key(nodeid): nodeid for nodeid in collected}
    seen: dict[tuple[str, str], int] = {}
    skips: dict[str, str] = {}
    for case in ET.parse(junit_file).iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        seen[key] = seen.get(key, 0) + 1
        skipped = case.find("skipped")
        if skipped is not None:
            skips[expected.get(key, "::".join(key))] = skipped.get("message", "")

    problems = []
    missing = sorted(nodeid for key, nodeid in expected.items() if key not in seen)
    extra = sorted("::".join(key) for key in seen if key not in expected)
    twice = sorted("::".join(key) for key, count in seen.items() if count > 1)
    for what, ids in (("collected but not run", missing), ("run but not collected", extra)):
        if ids:
            problems.append(f"{len(ids)} tests {what}: " + ", ".join(ids[:20]))
    if twice:
        problems.append(f"{len(twice)} tests reported more than once: " + ", ".join(twice[:20]))

    patterns = allowed_skip_patterns()
    for nodeid, message in sorted(skips.items()):
        if collected.get(nodeid, False):
            problems.append(f"real-kernel test skipped: {nodeid}: {message}")
        elif not any(p.search(message) for p in patterns):
            problems.append(f"skip not in {ALLOWED_SKIPS.name}: {nodeid}: {message}")

    real = sum(collected.values())
    if problems:
        print(".ci/results.py: the run does not account for what was collected:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(
        f".ci/results.py: all {len(collected)} collected tests ran ({real} real-kernel, none"
        f" skipped); {len(skips)} skipped with an allowed reason"
    )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "collect":
        return collect(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "verify":
        return verify(Path(argv[1]), Path(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

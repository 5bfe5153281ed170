"""The documentation keeps its promises: every Python block marked runnable in the README and in
docs/*.md runs as a user runs it (pytest in a directory of its own, here on Debian unstable's
sched_ext kernel) and passes; the README stays short and links every page of docs/; every page is
in the site's table of contents.

A block is runnable when the line right before its ```` ```python ```` fence is
``<!-- runnable -->``; it is a whole test module. Blocks that boot a guest need QEMU and busybox
(``guest_tools``); blocks that name a sched_ext scheduler find the suite's on PATH
(``scx_schedulers``). All of them share one store, as a user's runs do.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.kernels import REQUIRE_REAL_KERNELS, DebianKernel
from tests.helpers.runs import junit, run

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
RUNNABLE = "<!-- runnable -->"
FENCE = "```python"
README_MAX_LINES = 220


def _documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _runnable(path: Path) -> Iterator[tuple[str, str]]:
    """(where, source) of each runnable block of one document; where is ``file:line`` of the
    block's first line of code."""
    lines = path.read_text().splitlines(keepends=True)
    name = path.relative_to(REPO).as_posix()
    for index, line in enumerate(lines):
        if line.strip() != RUNNABLE:
            continue
        fence = lines[index + 1].rstrip("\n") if index + 1 < len(lines) else ""
        if fence != FENCE:
            continue  # test_every_runnable_marker_is_right_before_a_python_block says so
        end = next(i for i in range(index + 2, len(lines)) if lines[i].startswith("```"))
        yield f"{name}:{index + 3}", "".join(lines[index + 2 : end])


BLOCKS = [block for path in _documents() for block in _runnable(path)]


def _require_program(name: str, package: str) -> None:
    if shutil.which(name) is None:
        message = f"this block packs {name} into its guest: apt-get install {package}"
        if REQUIRE_REAL_KERNELS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for every block: what one builds (symbols, BTF, DWARF globals, initramfs, the
    KVM verdict) the next reuses, as in a user's later runs."""
    return tmp_path_factory.mktemp("docs-store")


@pytest.mark.real_kernel
@pytest.mark.parametrize(("where", "source"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_runnable_block_passes(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    sid_kernel: DebianKernel,
    docs_store: Path,
    where: str,
    source: str,
) -> None:
    if "kernel_vm" in source:
        request.getfixturevalue("guest_tools")
    if "stress-ng" in source:
        _require_program("stress-ng", "stress-ng")
    if "scheduler=" in source:
        schedulers: Path = request.getfixturevalue("scx_schedulers")
        monkeypatch.setenv("PATH", f"{schedulers}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("KTSTR_CACHE_DIR", str(docs_store))
    pytester.makepyfile(test_block=source)
    result = run(
        pytester,
        f"--kernel-sysroot={sid_kernel.sysroot}",
        f"--kernel={sid_kernel.release}",
        "--kernel-vm-timeout=900",  # generous: CI boots under TCG on two busy cores
        "-rA",
    )
    outcomes = junit(pytester).outcomes()
    assert outcomes, f"{where}: no test ran\n{result.stdout.str()}"
    others = {test: outcome for test, outcome in outcomes.items() if outcome != "passed"}
    assert not others, f"{where}: {others}\n{result.stdout.str()}"
    result.assert_outcomes(passed=len(outcomes))


def test_the_documents_have_runnable_blocks() -> None:
    # The README's four examples at least: the artifacts, a guest, a live read, a scheduler.
    assert sum(1 for where, _ in BLOCKS if where.startswith("README.md:")) >= 4
    assert sum(1 for where, _ in BLOCKS if where.startswith("docs/")) >= 4


def _misplaced_markers(text: str) -> list[int]:
    """The lines (from 1) of runnable markers that are not right before a Python fence."""
    lines = text.splitlines()
    return [
        index + 1
        for index, line in enumerate(lines)
        if line.strip() == RUNNABLE and lines[index + 1 : index + 2] != [FENCE]
    ]


def test_every_runnable_marker_is_right_before_a_python_block() -> None:
    misplaced = [
        f"{path.relative_to(REPO)}:{line}"
        for path in _documents()
        for line in _misplaced_markers(path.read_text())
    ]
    assert not misplaced, f"{RUNNABLE} must be the line right before a {FENCE} fence: {misplaced}"


def test_the_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_links_every_page() -> None:
    readme = README.read_text()
    pages = sorted(p.relative_to(REPO).as_posix() for p in DOCS.glob("*.md"))
    assert "docs/index.md" in pages
    missing = [page for page in pages if f"]({page})" not in readme]
    assert not missing, f"README.md does not link {missing}"


def _toctree(index: str) -> list[str]:
    """The entries of index.md's toctree, in order."""
    found = re.search(r"^```\{toctree\}\n(.*?)^```", index, re.MULTILINE | re.DOTALL)
    assert found, "docs/index.md has no toctree"
    entries = [line.strip() for line in found.group(1).splitlines()]
    return [e for e in entries if e and not e.startswith(":")]


def test_every_page_is_in_the_table_of_contents() -> None:
    entries = _toctree((DOCS / "index.md").read_text())
    pages = {p.stem for p in DOCS.glob("*.md")} - {"index"}
    assert sorted(pages - set(entries)) == [], "add these to docs/index.md's toctree"
    assert "api" in entries  # the reference generated from the docstrings
    assert len(entries) == len(set(entries))


def test_the_checks_see_a_misplaced_marker_and_read_a_toctree() -> None:
    text = f"{RUNNABLE}\n{FENCE}\nx = 1\n```\n\n{RUNNABLE}\n\n{FENCE}\n```\n{RUNNABLE}\n```sh\n"
    assert _misplaced_markers(text) == [6, 10]
    assert _toctree("```{toctree}\n:maxdepth: 2\n\nkernels\napi\n```\n") == ["kernels", "api"]

"""The package's layering, checked from its imports: each subpackage imports only from below it.

    errors  <  regularfile  <  store  <  formats  <  kernel  <  live  <  vm  <  plugin, cli

``regularfile`` opens what a user names without hanging on a FIFO; ``store`` keeps bytes and
knows no kernel format; ``formats`` parse kernel files (and may build through a store);
``kernel`` turns what the user named into paired files; ``live`` reads a running kernel's
memory through them; ``vm`` boots them; ``plugin`` and
``cli`` are adapters over everything below and never import each other. The
top-level ``__init__`` is the public API: it may name anything, and nothing inside imports it.
Every import counts, including the lazy ones inside functions: a lazy import is still a
dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "pytest_ktstr_vmlinux"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

RANK = {
    "errors": 0,
    "regularfile": 1,
    "children": 1,
    "store": 2,
    "formats": 3,
    "kernel": 4,
    "live": 5,
    "vm": 6,
    "plugin": 7,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import of our package in one module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            modules = _modules()
            # `from . import x`: x is a module when the package has one by that name.
            named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            for module in named or [target]:
                yield node.lineno, module


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for _, target in _imports(name, path) if target in modules}
        for name, path in modules.items()
    }


def test_every_module_is_in_a_ranked_layer() -> None:
    unranked = sorted(
        m
        for m in _modules()
        if m != PACKAGE and _layer(m) not in RANK and m != f"{PACKAGE}.__main__"
    )
    assert not unranked, f"add these to a subpackage (or to RANK): {unranked}"


def _violations(name: str, path: Path) -> list[str]:
    here = _layer(name)
    wrong = []
    for line, target in _imports(name, path):
        there = _layer(target)
        if target == PACKAGE:
            wrong.append(f"line {line}: imports the top-level API ({target})")
        elif there != here and RANK.get(there, 99) >= RANK[here]:
            wrong.append(f"line {line}: {here}/ imports {target} ({there}/ is not below it)")
    return wrong


@pytest.mark.parametrize("name", sorted(_modules()))
def test_imports_only_from_below(name: str) -> None:
    if name in (PACKAGE, f"{PACKAGE}.__main__"):
        return  # the public API and `python -m` name whatever they expose
    path = _modules()[name]
    wrong = _violations(name, path)
    assert not wrong, f"{path.relative_to(ROOT.parent)}:\n  " + "\n  ".join(wrong)


def test_no_import_circles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule is not vacuous: upward, top-level and sideways imports are each reported."""
    module = tmp_path / "fake.py"
    module.write_text(
        "from ..kernel.resolve import Kernel\n"
        "from .. import resolve_kernel\n"
        "def lazy() -> None:\n"
        "    from pytest_ktstr_vmlinux.cli import main\n"
        "from .disk import ArtifactStore\n"
        "from ..errors import KernelArtifactError\n"
    )
    wrong = _violations(f"{PACKAGE}.store.fake", module)
    assert [w.split(":")[0] for w in wrong] == ["line 1", "line 2", "line 4"], wrong


# --- the test suite: shared code lives in tests/helpers/ ------------------------------------------

TESTS = Path(__file__).resolve().parent
HELPERS = "tests.helpers"


def _test_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import of the ``tests`` package in one file of the suite: its
    import statements, and the ones in the code it hands to child processes as strings."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for line in node.value.splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] in ("from", "import"):
                    yield node.lineno, words[1].rstrip(",")


def _test_import_violations(path: Path) -> list[str]:
    return [
        f"line {line}: imports {module}"
        for line, module in _test_imports(path)
        if (module == "tests" or module.startswith("tests."))
        and module != HELPERS
        and not module.startswith(f"{HELPERS}.")
    ]


@pytest.mark.parametrize(
    "path", sorted(TESTS.rglob("*.py")), ids=lambda p: str(p.relative_to(TESTS.parent))
)
def test_tests_share_code_only_through_helpers(path: Path) -> None:
    """A test module imports no other test module and not tests/conftest.py: what tests share
    (fixtures' support, file builders, oracles) is in tests/helpers/, so moving or deleting one
    test never breaks another."""
    wrong = _test_import_violations(path)
    assert not wrong, f"{path.relative_to(TESTS.parent)}:\n  " + "\n  ".join(wrong)


def test_the_test_import_checker_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "test_fake.py"
    t = "tests"  # spelled apart, so that this file keeps its own rule
    module.write_text(
        f"from {t}.conftest import KERNELS_DIR\n"
        f"from {t}.helpers.kernels import DebianKernel\n"
        f"import {t}.formats.test_btf\n"
        "CHILD = '''\n"
        f"from {t}.formats.test_btf import answers\n"
        "'''\n"
        f"from {t}.helpers import fakes\n"
    )
    wrong = _test_import_violations(module)
    assert [w.split(":")[0] for w in wrong] == ["line 1", "line 3", "line 4"], wrong

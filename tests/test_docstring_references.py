"""Every file and class a docstring of the package names in backticks exists.

Code moves; a docstring that still points at the old place sends its reader nowhere. Checked:
a module path (```store/files.py```, ```formats/btf/queries.py```: from the module's own
directory, one of its parents, or the repository), and a dotted name whose head is a module of
the package (```bytescache.Loader```, ```vm.guest.GuestVM```: from the module's own package, one
of its parents, or absolute), a class of the package (```Pins.pin```), or that has the shape
``module.Class`` (then its module must exist, here or installed). A ``.py`` name in a docstring
must be in backticks, so that it is checked at all.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

PACKAGE = "pytest_ktstr_vmlinux"
REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / PACKAGE

_SPAN = re.compile(r"``([^`]+?)``|`([^`\n]+)`")
_PATH = re.compile(r"[\w./-]*\w\.py")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")
_BARE_PATH = re.compile(r"(?<![\w/.-])[\w/.-]*\w\.py\b")
_MODULE = re.compile(r"[a-z_][a-z0-9_]*")
_CLASS = re.compile(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*")  # CapWords, not a CONSTANT


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _defined(body: list[ast.stmt]) -> set[str]:
    """The names a module or class body binds."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` and the like
            names |= _defined(node.body) | _defined(node.orelse)
    return names


@cache
def _classes() -> dict[str, list[ast.ClassDef]]:
    found: dict[str, list[ast.ClassDef]] = {}
    for path in _modules().values():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(node)
    return found


def _has_member(class_name: str, member: str, seen: frozenset[str] = frozenset()) -> bool:
    """True when a class of that name in the package (or a base of it) binds ``member``; a
    class with a base from outside the package may inherit anything."""
    for node in _classes().get(class_name, []):
        if member in _defined(node.body):
            return True
        for base in node.bases:
            name = base.id if isinstance(base, ast.Name) else None
            if name is None or name not in _classes():
                if not (isinstance(base, ast.Name) and base.id in ("Protocol", "object")):
                    return True
            elif name not in seen and _has_member(name, member, seen | {class_name}):
                return True
    return False


def _bases(module: str) -> list[str]:
    """Where a dotted name in ``module`` may start: its package, each parent, absolute."""
    package = module if _modules()[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)] + [""]


def _check_dotted(module: str, span: str) -> str | None:
    """Why the dotted ``span`` in ``module``'s docstrings names nothing, or None."""
    parts = span.removesuffix("()").split(".")
    if parts[0] == module.rpartition(".")[2]:
        return None  # a module names no part of itself so: a file (``lock.owner``), a key
    for base in _bases(module):
        for n in range(len(parts), 0, -1):
            name = ".".join(filter(None, [base, *parts[:n]]))
            if name not in _modules():
                continue
            rest = parts[n:]
            if not rest:
                return None
            if rest[0] not in _defined(_tree(_modules()[name]).body):
                if _installed(".".join(parts[: n + 1])):
                    return None  # a library's module that shares a name with one of ours
                return f"{name} defines no {rest[0]}"
            if len(rest) > 1 and rest[0] in _classes() and not _has_member(rest[0], rest[1]):
                return f"{name}.{rest[0]} has no {rest[1]}"
            return None
    head, second = parts[0], parts[1]
    if head in _classes():
        return None if _has_member(head, second) else f"class {head} has no {second}"
    if (
        _MODULE.fullmatch(head)
        and _CLASS.fullmatch(second)
        and importlib.util.find_spec(head) is None
    ):
        return f"no module {head}"
    return None


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _check_path(path: Path, span: str) -> str | None:
    here = path.parent
    places = [here, *[p for p in here.parents if p == ROOT or ROOT in p.parents], REPO]
    if any((place / span).is_file() for place in places):
        return None
    return "no such file"


def _docstrings(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield (node.body[0].lineno, doc)


def _problems(module: str, path: Path, tree: ast.Module) -> list[str]:
    wrong = []
    for line, doc in _docstrings(tree):
        for match in _SPAN.finditer(doc):
            span = (match.group(1) or match.group(2)).strip()
            if _PATH.fullmatch(span):
                problem = _check_path(path, span)
            elif _DOTTED.fullmatch(span):
                problem = _check_dotted(module, span)
            else:
                continue
            if problem is not None:
                wrong.append(f"line {line}: `{span}`: {problem}")
        for bare in _BARE_PATH.findall(_SPAN.sub("", doc)):
            wrong.append(f"line {line}: {bare} is not in backticks, so it is never checked")
    return wrong


@pytest.mark.parametrize("module", sorted(_modules()))
def test_docstrings_name_files_and_classes_that_exist(module: str) -> None:
    path = _modules()[module]
    wrong = _problems(module, path, _tree(path))
    assert not wrong, f"{path.relative_to(REPO)}:\n  " + "\n  ".join(wrong)


def test_the_checker_sees_what_is_gone() -> None:
    """Not vacuous: a gone file, a gone module, a gone class, a gone method and a bare file name
    are each reported; what exists, and a struct field, are not."""
    doc = (
        '"""`storedir.py` and `store/files.py`; `cache.Loader`, `bytescache.Loader`;'
        ' `disk.DiskStore`, `Pins.pin`, `Pins.release`; memstore.py; `rq.nr_running`."""\n'
    )
    wrong = _problems(f"{PACKAGE}.store.api", ROOT / "store" / "api.py", ast.parse(doc))
    assert [w.split(": ", 2)[1] for w in wrong] == [
        "`storedir.py`",
        "`cache.Loader`",
        "`disk.DiskStore`",
        "`Pins.release`",
        "memstore.py is not in backticks, so it is never checked",
    ], wrong

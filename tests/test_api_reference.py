"""The API reference (docs/api.md) is the docstrings: it documents every public name, and only
them, and every public name and member has a docstring for it to show.

The page's autodoc directives name exactly ``pytest_ktstr_vmlinux.__all__``; each of those names
has a docstring of its own, and so has every public method, property and field of the exported
classes (a field's is a ``#:`` comment above it, which autodoc shows; one without is not shown
at all); the live-kernel helpers each give an example, as drgn's do. When Sphinx is installed
(the ``docs`` extra), the page builds with no warning and every reference resolved.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import importlib.util
import inspect
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pytest_ktstr_vmlinux
from pytest_ktstr_vmlinux.live import helpers
from pytest_ktstr_vmlinux.live.scalar import Scalar

PACKAGE = "pytest_ktstr_vmlinux"
REPO = Path(__file__).resolve().parents[1]
API_PAGE = REPO / "docs" / "api.md"
DIRECTIVE = re.compile(
    rf"^\.\. auto(?P<kind>\w+):: {PACKAGE}\.(?P<name>\w+)(?P<signature>\(.*\))?$", re.MULTILINE
)
OPTION = re.compile(r"^   :(?P<option>[\w-]+):", re.MULTILINE)
# drgn gives its helpers an example; so do these (container_of and sizeof are drgn's too).
HELPERS = (*helpers.__all__, "container_of", "sizeof")


def _exported() -> dict[str, Any]:
    return {name: getattr(pytest_ktstr_vmlinux, name) for name in pytest_ktstr_vmlinux.__all__}


def _directives() -> list[tuple[str, str, str]]:
    """(kind, name, options) of every autodoc directive of the page."""
    text = API_PAGE.read_text()
    found = []
    for match in DIRECTIVE.finditer(text):
        rest = text[match.end() :].split("\n\n", 1)[0]
        options = " ".join(m.group("option") for m in OPTION.finditer(rest))
        found.append((match.group("kind"), match.group("name"), options))
    return found


def test_the_page_documents_every_public_name_once() -> None:
    documented = [name for _, name, options in _directives() if "no-index" not in options]
    public = set(pytest_ktstr_vmlinux.__all__)
    twice = sorted({n for n in documented if documented.count(n) > 1})
    assert not twice, f"documented more than once (add :no-index: to all but one): {twice}"
    assert not public - set(documented), (
        f"public but not in docs/api.md: {sorted(public - set(documented))}"
    )
    assert not set(documented) - public, (
        f"in docs/api.md but not public: {sorted(set(documented) - public)}"
    )


def test_each_directive_fits_what_it_documents() -> None:
    wrong = []
    for kind, name, _ in _directives():
        value = getattr(pytest_ktstr_vmlinux, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            expected = "exception"
        elif isinstance(value, type):
            expected = "class"
        elif callable(value):
            expected = "function"
        else:
            expected = "data"
        if kind != expected:
            wrong.append(f"{name}: auto{kind}, not auto{expected}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_reads_directives() -> None:
    text = (
        f".. autoclass:: {PACKAGE}.GuestVM()\n   :no-index:\n\n"
        f".. autofunction:: {PACKAGE}.boot_guest\n"
    )
    found = [
        (m.group("kind"), m.group("name"), m.group("signature")) for m in DIRECTIVE.finditer(text)
    ]
    assert found == [("class", "GuestVM", "()"), ("function", "boot_guest", None)]
    assert [m.group("option") for m in OPTION.finditer(text)] == ["no-index"]


# --- docstrings -------------------------------------------------------------------------------


@functools.cache
def _class_node(klass: type) -> ast.ClassDef:
    source = textwrap.dedent(inspect.getsource(klass))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef), klass
    return node


def _own_doc(value: Any) -> str:
    """The docstring ``value`` itself has: a class's from its source (a dataclass without one
    gets its signature, an Enum Enum's), not one it inherits or is given."""
    if isinstance(value, type):
        return ast.get_docstring(_class_node(value)) or ""
    return inspect.getdoc(value) or ""


def _function(member: Any) -> Any:
    """The function behind a method, property, class or static method; None for data."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    elif isinstance(member, property):
        member = member.fget
    elif isinstance(member, functools.cached_property):
        member = member.func
    return member if inspect.isfunction(member) else None


def _package_classes(klass: type, exported: set[type]) -> Iterator[type]:
    """The class and its bases in the package that are not documented on their own: what
    ``klass``'s public members come from."""
    for base in klass.__mro__:
        if base is klass or (base.__module__.startswith(PACKAGE) and base not in exported):
            yield base


def members_without_docs(name: str, klass: type, exported: set[type]) -> list[str]:
    """``name.member`` for each public method, property or field of ``klass`` (or of a base
    of it in the package that is not exported) that has no docstring (a field: no ``#:``
    comment, nor a string after it)."""
    missing: list[str] = []
    seen: set[str] = set()
    for base in _package_classes(klass, exported):
        fields = _fields(base)
        undocumented = set(fields_without_docs(base))
        for attribute in [*vars(base), *sorted(fields - set(vars(base)))]:
            if attribute.startswith("_") or attribute in seen:
                continue
            seen.add(attribute)  # the first in the MRO is the one that answers
            if attribute in fields:
                if attribute in undocumented:
                    missing.append(f"{name}.{attribute}")
                continue
            function = _function(vars(base)[attribute])
            if function is not None and not (function.__doc__ or "").strip():
                missing.append(f"{name}.{attribute}")
    return sorted(missing)


def _fields(klass: type) -> set[str]:
    """The public names a class body binds without a def: fields, enum members, constants."""
    return {name for name, _ in _bound(klass)}


def _bound(klass: type) -> Iterator[tuple[str, int]]:
    body = _class_node(klass).body
    for i, node in enumerate(body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        for target in targets:
            if isinstance(target, ast.Name) and not target.id.startswith("_"):
                yield target.id, i


def fields_without_docs(klass: type) -> list[str]:
    """The public names bound in ``klass``'s body with no ``#:`` comment on the line(s) above
    (or after it on its line) and no string statement after it: what autodoc does not show."""
    source = textwrap.dedent(inspect.getsource(klass)).splitlines()
    body = _class_node(klass).body
    missing = []
    for name, i in _bound(klass):
        node = body[i]
        line = source[node.lineno - 1]
        above = source[node.lineno - 2].strip() if node.lineno >= 2 else ""
        after = body[i + 1] if i + 1 < len(body) else None
        documented = (
            above.startswith("#:")
            or "#:" in line
            or (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            )
        )
        if not documented:
            missing.append(name)
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = sorted(name for name, value in _exported().items() if not _own_doc(value).strip())
    assert not missing, "give these a docstring (it is their API reference):\n  " + "\n  ".join(
        missing
    )


def test_every_public_member_has_a_docstring() -> None:
    exported = _exported()
    classes = {value for value in exported.values() if isinstance(value, type)}
    missing = [
        found
        for name, value in sorted(exported.items())
        if isinstance(value, type)
        for found in members_without_docs(name, value, classes)
    ]
    assert not missing, (
        "give these a docstring (a field or enum member: a #: comment above it):\n  "
        + "\n  ".join(missing)
    )


def test_the_helpers_give_an_example() -> None:
    bare = [name for name in HELPERS if "::" not in _own_doc(getattr(pytest_ktstr_vmlinux, name))]
    assert not bare, f"give these an example (a :: literal block), as drgn's helpers have: {bare}"


class _Documented:
    """A method with a docstring, a field with a #: comment, one with a string after it."""

    #: Documented.
    kept: int = 1
    said: int = 2
    """Documented too."""
    bare: int = 3
    _private: int = 4

    def method(self) -> None:
        """Documented."""

    def silent(self) -> None:
        pass

    @property
    def shown(self) -> int:
        return 1


@dataclasses.dataclass
class _Fields:
    """A dataclass: its generated ``__doc__`` is no docstring."""

    #: Documented.
    a: int
    b: int


class _Kind(enum.Enum):
    #: Documented.
    ONE = 1
    TWO = 2


def test_the_checker_finds_what_has_no_docstring() -> None:
    assert members_without_docs("D", _Documented, set()) == ["D.bare", "D.shown", "D.silent"]
    assert members_without_docs("F", _Fields, set()) == ["F.b"]
    assert members_without_docs("K", _Kind, set()) == ["K.TWO"]
    assert _own_doc(_Fields) and not _own_doc(_Kind)


def test_an_override_answers_for_its_base() -> None:
    """Object.type_name_ is documented; the undocumented Scalar.type_name_ it overrides is not
    what users reach, nor what the reference shows."""
    obj = pytest_ktstr_vmlinux.Object
    assert issubclass(obj, Scalar) and not Scalar.type_name_.__doc__
    assert "Object.type_name_" not in members_without_docs("Object", obj, set())


# --- the page builds ------------------------------------------------------------------------


def test_the_page_builds_strictly(tmp_path: Path) -> None:
    """The API page alone (the other pages are the site's: the whole site is built in CI), with
    -W -n: a docstring that does not render cleanly, or a reference to one of the package's
    names that does not resolve, fails."""
    for module in ("sphinx", "myst_parser", "furo"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' (CI does)")
    build = subprocess.run(
        [
            sys.executable, "-m", "sphinx", "-q", "-W", "-n", "--keep-going", "-b", "html",
            "-D", "root_doc=api", "-D", "include_patterns=api.md",
            str(API_PAGE.parent), str(tmp_path / "html"),
        ],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert build.returncode == 0, f"sphinx-build failed:\n{build.stderr}{build.stdout}"
    assert (tmp_path / "html" / "api.html").is_file()

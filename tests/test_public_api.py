"""One public API: the names ``pytest_ktstr_vmlinux`` exports, and only them.

What users copy (the README, docs/, examples/) names top-level names only, so the modules behind
them may move; every class the API's signatures take or return (parameters, return values,
properties, dataclass fields) is top-level too, unless it is a Protocol (any object with its
members fits, nothing to import) or an internal listed below with the reason users never need
it; and internals are not exported.
"""

from __future__ import annotations

import ast
import collections.abc
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pytest_ktstr_vmlinux

PACKAGE = "pytest_ktstr_vmlinux"
REPO = Path(__file__).resolve().parents[1]
CODE_BLOCK = re.compile(r"^```(?:python|py)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOTTED = re.compile(rf"\b{PACKAGE}\.(\w+)")

# Classes the API's signatures mention that are not exported, and why users never need them.
INTERNAL = {
    "Artifact": "StoredArtifact.file: the store's file; users read map(), read_bytes(), json()",
    "StatSignature": "StoredArtifact.signature: the store's record of the source's version",
    "Trees": "ArtifactStore.trees: where fetched kernels are unpacked; fetch_kernel uses it",
    "Expectation": "probe_vmlinux(expect=): how resolve_kernel pairs; resolve_kernel does it",
    "Sysroot": "probe_vmlinux(sysroot=) takes a path as well",
}
# Exported once, internal now: reached through what is public (cached_vmlinux_bytes, the store).
NOT_EXPORTED = ("StatSignature", "VmlinuxBytesCache")


def _documents() -> dict[str, str]:
    """The README and every page of docs/ (when there is one), by path."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return {str(p.relative_to(REPO)): p.read_text() for p in pages if p.is_file()}


def _examples() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(REPO.glob("examples/**/*.py"))}


def _code(name: str, text: str) -> Iterator[tuple[str, str]]:
    """(where, Python source) of a document's Python blocks, or of an example file."""
    if not name.endswith(".md"):
        yield name, text
        return
    for block in CODE_BLOCK.finditer(text):
        line = text.count("\n", 0, block.start()) + 2
        yield f"{name}:{line}", block.group(1)


def deep_imports(where: str, source: str) -> list[str]:
    """What ``source`` imports from inside the package, or names that are not exported."""
    wrong = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            wrong += [
                f"{where}: import {a.name}" for a in node.names if a.name.startswith(f"{PACKAGE}.")
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(f"{PACKAGE}."):
                wrong.append(f"{where}: from {node.module} import ...")
            elif node.module == PACKAGE:
                wrong += [
                    f"{where}: {a.name} is not a public name"
                    for a in node.names
                    if a.name not in pytest_ktstr_vmlinux.__all__
                ]
    return wrong


def test_what_users_copy_imports_only_public_names() -> None:
    sources = [
        found
        for name, text in {**_documents(), **_examples()}.items()
        for found in _code(name, text)
    ]
    # The README's examples and the pages' are all seen (a page's blocks too, not the README's).
    assert sum(1 for where, _ in sources if where.startswith("README.md:")) >= 4
    assert sum(1 for where, _ in sources if where.startswith("docs/")) >= 10
    wrong = [problem for where, source in sources for problem in deep_imports(where, source)]
    assert not wrong, "import these from the package itself:\n  " + "\n  ".join(wrong)
    readme = _documents()["README.md"]
    assert f"from {PACKAGE} import" in readme


def test_the_documents_name_no_module_inside_the_package() -> None:
    """Prose and shell blocks too: ``pytest_ktstr_vmlinux.X`` is a public name X, never a path
    into a subpackage (``...store.choose.open_store``)."""
    wrong = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in _documents().items()
        for m in DOTTED.finditer(text)
        if m.group(1) not in pytest_ktstr_vmlinux.__all__
    ]
    assert not wrong, "name the top-level name instead:\n  " + "\n  ".join(wrong)


def test_the_checker_sees_what_is_not_public() -> None:
    source = (
        f"from {PACKAGE} import Kernel, VmlinuxBytesCache\n"
        f"from {PACKAGE}.store.choose import open_store\n"
        f"import {PACKAGE}.vm\n"
        f"from {PACKAGE} import boot_guest\n"
    )
    assert deep_imports("x.py", source) == [
        "x.py: VmlinuxBytesCache is not a public name",
        f"x.py: from {PACKAGE}.store.choose import ...",
        f"x.py: import {PACKAGE}.vm",
    ]
    assert [m.group(1) for m in DOTTED.finditer(f"`{PACKAGE}.store.choose`, {PACKAGE}.Kernel")] == [
        "store",
        "Kernel",
    ]


def _namespace() -> dict[str, Any]:
    """Every class of the package by name, for annotations written under TYPE_CHECKING."""
    for info in pkgutil.walk_packages(pytest_ktstr_vmlinux.__path__, f"{PACKAGE}."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: dict[str, Any] = {"os": os}
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith(PACKAGE):
            found.update(
                (k, v) for k, v in vars(module).items() if isinstance(v, type) and k not in found
            )
    found.update((k, getattr(collections.abc, k)) for k in collections.abc.__all__)
    return found


def _classes_in(hint: Any) -> Iterator[type]:
    for arg in typing.get_args(hint):
        yield from _classes_in(arg)
    for candidate in (hint, typing.get_origin(hint)):
        if isinstance(candidate, type) and candidate.__module__.startswith(f"{PACKAGE}."):
            yield candidate


def _signatures(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """(where, annotated object) for a public function, or a class's public methods,
    properties and fields."""
    if inspect.isfunction(value):
        yield name, value
        return
    if not isinstance(value, type):
        return
    for klass in value.__mro__:
        if not klass.__module__.startswith(PACKAGE):
            continue
        if dataclasses.is_dataclass(klass) or "__annotations__" in vars(klass):
            yield f"{name} fields", klass
        for attribute, member in vars(klass).items():
            if attribute.startswith("_"):
                continue
            if isinstance(member, property):
                member = member.fget
            elif isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            member = getattr(member, "func", member)  # functools.cached_property
            if inspect.isfunction(member):
                yield f"{name}.{attribute}", member


def test_the_types_the_api_takes_and_returns_are_public() -> None:
    namespace = _namespace()
    exported = {getattr(pytest_ktstr_vmlinux, n) for n in pytest_ktstr_vmlinux.__all__}
    missing: dict[str, set[str]] = {}
    for name in pytest_ktstr_vmlinux.__all__:
        for where, annotated in _signatures(name, getattr(pytest_ktstr_vmlinux, name)):
            module = sys.modules[annotated.__module__]
            hints = typing.get_type_hints(annotated, globalns={**namespace, **vars(module)})
            for key, hint in hints.items():
                for klass in _classes_in(hint):
                    structural = getattr(klass, "_is_protocol", False)
                    if klass not in exported and not structural and klass.__name__ not in INTERNAL:
                        missing.setdefault(klass.__name__, set()).add(f"{where}: {key}")
    assert not missing, "export these (or say in INTERNAL why users never need them):\n  " + (
        "\n  ".join(f"{k} <- {sorted(v)}" for k, v in sorted(missing.items()))
    )


@pytest.mark.parametrize(
    "name",
    ["Store", "GuestMemory", "GuestQMP", "RamRegion", "KernelLayout", "GuestFactory", "open_store"],
)
def test_the_types_users_hold_are_top_level(name: str) -> None:
    assert name in pytest_ktstr_vmlinux.__all__
    assert getattr(pytest_ktstr_vmlinux, name).__name__ == name


@pytest.mark.parametrize("name", NOT_EXPORTED)
def test_internals_are_not_exported(name: str) -> None:
    assert name not in pytest_ktstr_vmlinux.__all__
    with pytest.raises(AttributeError):
        getattr(pytest_ktstr_vmlinux, name)


def test_the_package_says_where_its_api_ends() -> None:
    doc = pytest_ktstr_vmlinux.__doc__ or ""
    assert "only them" in doc and "internal" in doc

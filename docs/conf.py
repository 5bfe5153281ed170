"""Sphinx configuration for the documentation site.

Built strictly in CI (``sphinx-build -W -n``): a broken link or an unresolved reference fails the
build. Sphinx (not MkDocs) because pytest, pytest-xdist and drgn document themselves with it, and
autodoc turns the package's docstrings into the API reference; Furo because it reads well, is
maintained, and needs no network at build time.
"""

from __future__ import annotations

import importlib.metadata

import pytest_ktstr_vmlinux

project = "pytest-ktstr-vmlinux"
author = "pytest-ktstr-vmlinux developers"
try:
    release = importlib.metadata.version("pytest-ktstr-vmlinux")
except importlib.metadata.PackageNotFoundError:  # built from a tree that is not installed
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "pytest-ktstr-vmlinux"
html_static_path = ["_static"]

# The API reference (docs/api.md): members in source order, defaults as written, types in the
# signatures. In the signatures, not the description: the docstrings say what each parameter
# means in prose, so a description would list bare types that repeat the signature; and a class
# users never construct (GuestVM, LiveKernel, ...) is given as ``autoclass:: NAME()``, which
# hides its constructor only when the types are in the signature. Long signatures are wrapped, a
# parameter a line; resolved names are shown unqualified (``Kernel``, not the dotted path).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}
python_maximum_signature_line_length = 90
python_use_unqualified_type_names = True
# Protocols the API is annotated with (internal: they keep the layers apart), whose one
# implementation users meet is the class named here, as each protocol's docstring says ("What
# helpers ... need: a LiveKernel"): shown, and linked, as that class.
autodoc_type_aliases = {
    "Program": "pytest_ktstr_vmlinux.LiveKernel",  # the helpers' live=
    "Memory": "pytest_ktstr_vmlinux.LiveKernel",  # Object.prog_
    "MemberDecoder": "pytest_ktstr_vmlinux.BTF",  # BTFType.btf
    "Guest": "pytest_ktstr_vmlinux.GuestVM",  # LiveKernel.from_guest
}

# Strict (-n): every reference must resolve. Targets outside this package (the standard library,
# pytest, typing's internals) are not linked (no network at build time, so no intersphinx), so
# they are not errors; a target that is this package's (dotted from it, or a public name such as
# ``Symbol.percpu`` in a docstring's role) must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", rf"(?!pytest_ktstr_vmlinux\b)(?!(?:{'|'.join(pytest_ktstr_vmlinux.__all__)})\b).*"),
]
# Internal classes the API's signatures name, which the reference does not document (each is in
# tests/test_public_api.py's INTERNAL, with why users never need it), and type variables.
nitpick_ignore = [
    ("py:class", "pytest_ktstr_vmlinux.store.artifact.Artifact"),  # StoredArtifact.file
    ("py:class", "pytest_ktstr_vmlinux.store.signature.StatSignature"),  # StoredArtifact.signature
    ("py:class", "pytest_ktstr_vmlinux.store.trees.Trees"),  # ArtifactStore.trees
    ("py:class", "pytest_ktstr_vmlinux.kernel.identity.Expectation"),  # probe_vmlinux(expect=)
    ("py:class", "pytest_ktstr_vmlinux.kernel.sysroot.Sysroot"),  # probe_vmlinux(sysroot=)
    # FetchOptions.progress: a Protocol (step(), transfer()), described where it is taken.
    ("py:class", "pytest_ktstr_vmlinux.kernel.fetch.progress.Progress"),
    ("py:class", "pytest_ktstr_vmlinux.plugin.markers.F"),  # ktstr_test: the decorated function
    ("py:class", "pytest_ktstr_vmlinux.vm.qmp.T"),  # GuestQMP.call: the reply's type
]

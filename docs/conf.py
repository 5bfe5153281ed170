"""Sphinx configuration for the documentation site.

Built strictly in CI (``sphinx-build -W -n``): a broken link or an unresolved reference fails the
build. Sphinx (not MkDocs) because pytest, pytest-xdist and drgn document themselves with it, and
autodoc turns the package's docstrings into the API reference; Furo because it reads well, is
maintained, and needs no network at build time.
"""

from __future__ import annotations

import importlib.metadata

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

# The API reference: signatures as written, members in source order, types in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": False}

# Strict (-n): every reference must resolve. Targets outside this package (the standard library,
# pytest, typing's internals) are not linked (no network at build time, so no intersphinx), so
# they are not errors.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!pytest_ktstr_vmlinux\b).*"),
]

"""Several kernels in one run: ``[label=]spec[@sysroot]`` items and the labels that name them in
test ids.

A label is what a developer calls a kernel (``v6.12``, ``deb``); without one it is the kernel's
release (for a fetched kernel, its suite and package version: ``sid-7.2.13-1``), or the file or
directory name when the release is unknown. An item is ``label=spec`` when the text before the
first ``=`` is a label (letters, digits, ``._+-``, no ``/``), so a path that holds ``=`` is
written with a ``/`` before it (``./a=b``).

An item may carry its own sysroot after the last ``@`` that is followed by a path (``/``, ``~``
or ``.``): ``old=6.1.0-57-cloud-amd64@/srv/bookworm-root``. Several kernels of a run can so live
in several roots; a kernel without one takes the run's ``--kernel-sysroot``. A spec that exists
as a path is taken whole, ``@`` and all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import KernelSpecError

if TYPE_CHECKING:
    from .resolve import Kernel

LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*", re.ASCII)
_SYSROOT_RE = re.compile(r"(.*)@([/~.].*)", re.DOTALL)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+", re.ASCII)


@dataclass(frozen=True)
class KernelItem:
    """One kernel setting item: the user's label (None: derive one), the spec text and the
    kernel's own sysroot (None: the run's)."""

    label: str | None
    spec: str
    sysroot: str | None = None


def split_kernel_list(text: str) -> list[str]:
    """``v6.12=../linux;deb=6.1.0-56-cloud-amd64`` (ini values may use newlines too)."""
    return [item.strip() for item in re.split(r"[;\n]", text) if item.strip()]


def parse_kernel_item(
    text: str, origin: str, base: str | os.PathLike[str] | None = None
) -> KernelItem:
    """Split ``label=spec@sysroot``; KernelSpecError naming ``origin`` for a malformed label.
    ``base`` is where relative paths are taken from, to tell a path holding ``@`` whole."""
    text = text.strip()
    head, sep, tail = text.partition("=")
    if not sep or "/" in head or head.startswith("~"):
        return _with_sysroot(None, text, origin, base)
    if not LABEL_RE.fullmatch(head):
        raise KernelSpecError(
            f"kernel {text!r} (from {origin}): label {head!r} may hold only letters, digits and"
            " ._+- (a path containing '=' is written with a '/': ./a=b)"
        )
    if not tail.strip():
        raise KernelSpecError(f"kernel {text!r} (from {origin}): no kernel after {head}=")
    return _with_sysroot(head, tail.strip(), origin, base)


def _with_sysroot(
    label: str | None, text: str, origin: str, base: str | os.PathLike[str] | None
) -> KernelItem:
    match = _SYSROOT_RE.fullmatch(text)
    whole = Path(base or os.getcwd(), os.path.expanduser(text))
    if match is None or os.path.lexists(whole):
        return KernelItem(label, text)
    spec, sysroot = match.group(1).strip(), match.group(2).strip()
    if not spec:
        raise KernelSpecError(f"kernel {text!r} (from {origin}): no kernel before @{sysroot}")
    return KernelItem(label, spec, sysroot)


def default_label(kernel: Kernel) -> str:
    """A fetched kernel's suite and package version (``sid-7.2.13-1``), else the release, else
    the name of the path the spec gave, made safe for a test id."""
    if kernel.fetched is not None:
        name = f"{kernel.fetched.suite}-{kernel.fetched.version}"
    elif kernel.release:
        name = kernel.release
    elif kernel.spec.path is not None:
        path = kernel.spec.path
        # ``.../arch/x86/boot/bzImage`` says less than the tree it sits in.
        name = (kernel.tree or path).name or str(path)
    else:
        name = kernel.spec.raw
    return _UNSAFE.sub("_", name).strip("_") or "kernel"


def kernel_name(kernel: Kernel) -> str:
    """How reports name a kernel: ``6.1.0-56-cloud-amd64`` when the label is the release, else
    ``deb (6.1.0-56-cloud-amd64)``."""
    if kernel.release and kernel.release != kernel.label:
        return f"{kernel.label} ({kernel.release})"
    return kernel.label


def assign_labels(items: Sequence[KernelItem], kernels: Sequence[Kernel]) -> list[str]:
    """Each kernel's label; KernelSpecError when two kernels would share one."""
    labels = [item.label or default_label(k) for item, k in zip(items, kernels, strict=True)]
    seen: dict[str, int] = {}
    for index, label in enumerate(labels):
        if label in seen:
            first, second = items[seen[label]].spec, items[index].spec
            raise KernelSpecError(
                f"kernels {first!r} and {second!r} are both labelled {label!r}; give each its"
                f" own label: --kernel a={first} --kernel b={second}"
            )
        seen[label] = index
    return labels

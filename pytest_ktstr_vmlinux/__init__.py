"""Find the vmlinux that belongs to a kernel image and serve it to tests, cached.

The library works without pytest; ``pytest_ktstr_vmlinux.plugin`` adapts it to fixtures.

Every name below is imported on first use (PEP 562): pytest imports this package whenever the
plugin is installed, and a test run that uses no kernel must not pay for the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import VmlinuxBytesCache, cached_vmlinux_bytes, load_vmlinux_bytes
    from .errors import KernelArtifactError, KernelSpecError
    from .kernel import Kernel, resolve_kernel
    from .locate import Candidate, Probe, ProbeReport, find_vmlinux, probe_vmlinux
    from .markers import ktstr_test
    from .signature import StatSignature
    from .spec import KernelSpec, SpecKind, SpecSource, parse_kernel_spec

# Public name -> the module that defines it; __all__ lists the same names (a test checks).
_EXPORTS = {
    "Candidate": "locate",
    "Kernel": "kernel",
    "KernelArtifactError": "errors",
    "KernelSpec": "spec",
    "KernelSpecError": "errors",
    "Probe": "locate",
    "ProbeReport": "locate",
    "SpecKind": "spec",
    "SpecSource": "spec",
    "StatSignature": "signature",
    "VmlinuxBytesCache": "cache",
    "cached_vmlinux_bytes": "cache",
    "find_vmlinux": "locate",
    "ktstr_test": "markers",
    "load_vmlinux_bytes": "cache",
    "parse_kernel_spec": "spec",
    "probe_vmlinux": "locate",
    "resolve_kernel": "kernel",
}

__all__ = [
    "Candidate",
    "Kernel",
    "KernelArtifactError",
    "KernelSpec",
    "KernelSpecError",
    "Probe",
    "ProbeReport",
    "SpecKind",
    "SpecSource",
    "StatSignature",
    "VmlinuxBytesCache",
    "cached_vmlinux_bytes",
    "find_vmlinux",
    "ktstr_test",
    "load_vmlinux_bytes",
    "parse_kernel_spec",
    "probe_vmlinux",
    "resolve_kernel",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""Find the vmlinux that belongs to a kernel image and serve it to tests, cached.

The library works without pytest; ``pytest_ktstr_vmlinux.plugin`` adapts it to fixtures.

Every name below is imported on first use (PEP 562): pytest imports this package whenever the
plugin is installed, and a test run that uses no kernel must not pay for the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import KernelArtifactError, KernelSpecError
    from .kernel.images import Candidate
    from .kernel.locate import Probe, ProbeReport, find_vmlinux, probe_vmlinux
    from .kernel.resolve import Kernel, resolve_kernel
    from .kernel.spec import KernelSpec, SpecKind, SpecSource, parse_kernel_spec
    from .plugin.markers import ktstr_test
    from .store.bytescache import VmlinuxBytesCache, cached_vmlinux_bytes, load_vmlinux_bytes
    from .store.signature import StatSignature

# Public name -> the module that defines it; __all__ lists the same names (a test checks).
_EXPORTS = {
    "Candidate": "kernel.images",
    "Kernel": "kernel.resolve",
    "KernelArtifactError": "errors",
    "KernelSpec": "kernel.spec",
    "KernelSpecError": "errors",
    "Probe": "kernel.locate",
    "ProbeReport": "kernel.locate",
    "SpecKind": "kernel.spec",
    "SpecSource": "kernel.spec",
    "StatSignature": "store.signature",
    "VmlinuxBytesCache": "store.bytescache",
    "cached_vmlinux_bytes": "store.bytescache",
    "find_vmlinux": "kernel.locate",
    "ktstr_test": "plugin.markers",
    "load_vmlinux_bytes": "store.bytescache",
    "parse_kernel_spec": "kernel.spec",
    "probe_vmlinux": "kernel.locate",
    "resolve_kernel": "kernel.resolve",
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

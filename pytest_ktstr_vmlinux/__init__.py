"""Find the vmlinux that belongs to a kernel image and serve it to tests, cached.

The library works without pytest; ``pytest_ktstr_vmlinux.plugin`` adapts it to fixtures.
"""

from __future__ import annotations

from .cache import VmlinuxBytesCache, cached_vmlinux_bytes, load_vmlinux_bytes
from .errors import KernelArtifactError, KernelSpecError
from .kernel import Kernel, resolve_kernel
from .locate import Candidate, Probe, ProbeReport, find_vmlinux, probe_vmlinux
from .markers import ktstr_test
from .signature import StatSignature
from .spec import KernelSpec, SpecKind, SpecSource, parse_kernel_spec

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

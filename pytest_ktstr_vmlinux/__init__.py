"""Find the vmlinux that belongs to a kernel image, read it, boot it, and serve it to tests.

The public API is the names this module exports (``__all__``), and only them: every name a user
needs, including the types the API takes and returns, is importable from here
(``from pytest_ktstr_vmlinux import GuestVM``). The subpackages that define them (``kernel``,
``formats``, ``store``, ``live``, ``vm``; ``plugin`` adapts them to pytest, ``cli`` to the shell)
are internal: what is inside may move between releases.

Every name is imported on first use (PEP 562): pytest imports this package whenever the plugin
is installed, and a test run that uses no kernel must not pay for the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import KernelArtifactError, KernelSpecError, VmlinuxNotFoundError
    from .formats.btf.queries import BTF
    from .formats.btf.types import BitfieldError, BTFKeyError, BTFType, Member, Route
    from .formats.dwarf.globaltypes import GlobalTypeError, GlobalTypes, GlobalVariable
    from .formats.image import ImageInfo
    from .formats.kconfig import KernelConfig
    from .formats.symbols import KernelSymbols, Symbol
    from .kernel.fetch.fetch import FetchedKernel, FetchOptions, fetch_kernel
    from .kernel.fetch.specs import FetchSpec
    from .kernel.images import Candidate
    from .kernel.locate import Probe, ProbeReport, find_vmlinux, probe_vmlinux
    from .kernel.resolve import Kernel, resolve_kernel
    from .kernel.spec import KernelSpec, SpecKind, SpecSource, parse_kernel_spec
    from .live.checks import Checks, ChecksFailed, Thresholds, Verdict
    from .live.errors import LiveKernelError, LiveMemoryError, MissingMemberError
    from .live.helpers.cpumask import (
        cpumask_to_cpulist,
        for_each_cpu,
        for_each_online_cpu,
        for_each_possible_cpu,
        for_each_present_cpu,
    )
    from .live.helpers.idr import idr_find, idr_for_each, idr_for_each_entry
    from .live.helpers.list import (
        hlist_empty,
        hlist_for_each,
        hlist_for_each_entry,
        list_empty,
        list_for_each,
        list_for_each_entry,
    )
    from .live.helpers.percpu import per_cpu_ptr
    from .live.helpers.pid import find_task, for_each_task, pid_task
    from .live.helpers.rbtree import rbtree_inorder_for_each, rbtree_inorder_for_each_entry
    from .live.helpers.sched import task_cpu, task_state_to_char
    from .live.helpers.xarray import xa_for_each, xa_is_value, xa_is_zero, xa_load, xa_to_value
    from .live.kernel import LiveKernel
    from .live.layout import KernelLayout
    from .live.monitor import Sampler
    from .live.objects import Enumerator, Object, container_of, sizeof
    from .live.sampling import Samples
    from .live.scx import SchedExt
    from .plugin.markers import ktstr_test
    from .plugin.vm import GuestFactory
    from .store.api import (
        InsecureStoreError,
        NotAStoreError,
        Store,
        StoredArtifact,
        StoreFullError,
        StoreLockTimeout,
        StoreStats,
        StoreUnavailableError,
        StoreWarning,
    )
    from .store.bytescache import cached_vmlinux_bytes, load_vmlinux_bytes
    from .store.choose import open_store
    from .store.disk import ArtifactStore
    from .store.memory import MemoryStore
    from .vm.boot import boot_guest
    from .vm.errors import (
        GuestBootError,
        GuestCommandError,
        GuestError,
        GuestProgramError,
        GuestProtocolError,
        GuestResult,
        GuestStoppedError,
        GuestTimeoutError,
        GuestUnavailableError,
        GuestWarning,
    )
    from .vm.guest import GuestVM
    from .vm.layout import RamRegion
    from .vm.memory import GuestMemory
    from .vm.qmp import GuestQMP
    from .vm.scheduler import Scheduler, SchedulerError

# Public name -> the module that defines it; __all__ lists the same names (a test checks).
_EXPORTS = {
    "Checks": "live.checks",
    "ChecksFailed": "live.checks",
    "SchedExt": "live.scx",
    "Thresholds": "live.checks",
    "Verdict": "live.checks",
    "ArtifactStore": "store.disk",
    "BTF": "formats.btf.queries",
    "BTFKeyError": "formats.btf.types",
    "BTFType": "formats.btf.types",
    "BitfieldError": "formats.btf.types",
    "Candidate": "kernel.images",
    "GlobalTypeError": "formats.dwarf.globaltypes",
    "GlobalTypes": "formats.dwarf.globaltypes",
    "GlobalVariable": "formats.dwarf.globaltypes",
    "FetchOptions": "kernel.fetch.fetch",
    "FetchSpec": "kernel.fetch.specs",
    "FetchedKernel": "kernel.fetch.fetch",
    "GuestBootError": "vm.errors",
    "GuestCommandError": "vm.errors",
    "GuestError": "vm.errors",
    "GuestProgramError": "vm.errors",
    "GuestResult": "vm.errors",
    "GuestProtocolError": "vm.errors",
    "GuestStoppedError": "vm.errors",
    "GuestTimeoutError": "vm.errors",
    "GuestUnavailableError": "vm.errors",
    "GuestWarning": "vm.errors",
    "GuestFactory": "plugin.vm",
    "GuestMemory": "vm.memory",
    "GuestQMP": "vm.qmp",
    "GuestVM": "vm.guest",
    "ImageInfo": "formats.image",
    "InsecureStoreError": "store.api",
    "Kernel": "kernel.resolve",
    "KernelArtifactError": "errors",
    "KernelConfig": "formats.kconfig",
    "KernelLayout": "live.layout",
    "KernelSpec": "kernel.spec",
    "KernelSpecError": "errors",
    "KernelSymbols": "formats.symbols",
    "cpumask_to_cpulist": "live.helpers.cpumask",
    "for_each_cpu": "live.helpers.cpumask",
    "for_each_online_cpu": "live.helpers.cpumask",
    "for_each_possible_cpu": "live.helpers.cpumask",
    "for_each_present_cpu": "live.helpers.cpumask",
    "idr_find": "live.helpers.idr",
    "idr_for_each": "live.helpers.idr",
    "idr_for_each_entry": "live.helpers.idr",
    "hlist_empty": "live.helpers.list",
    "hlist_for_each": "live.helpers.list",
    "hlist_for_each_entry": "live.helpers.list",
    "list_empty": "live.helpers.list",
    "list_for_each": "live.helpers.list",
    "list_for_each_entry": "live.helpers.list",
    "find_task": "live.helpers.pid",
    "for_each_task": "live.helpers.pid",
    "pid_task": "live.helpers.pid",
    "rbtree_inorder_for_each": "live.helpers.rbtree",
    "rbtree_inorder_for_each_entry": "live.helpers.rbtree",
    "per_cpu_ptr": "live.helpers.percpu",
    "task_cpu": "live.helpers.sched",
    "task_state_to_char": "live.helpers.sched",
    "xa_for_each": "live.helpers.xarray",
    "xa_is_value": "live.helpers.xarray",
    "xa_is_zero": "live.helpers.xarray",
    "xa_load": "live.helpers.xarray",
    "xa_to_value": "live.helpers.xarray",
    "LiveKernel": "live.kernel",
    "LiveKernelError": "live.errors",
    "LiveMemoryError": "live.errors",
    "Member": "formats.btf.types",
    "Route": "formats.btf.types",
    "MemoryStore": "store.memory",
    "MissingMemberError": "live.errors",
    "NotAStoreError": "store.api",
    "Object": "live.objects",
    "Enumerator": "live.objects",
    "container_of": "live.objects",
    "sizeof": "live.objects",
    "Probe": "kernel.locate",
    "ProbeReport": "kernel.locate",
    "Sampler": "live.monitor",
    "Samples": "live.sampling",
    "Scheduler": "vm.scheduler",
    "SchedulerError": "vm.scheduler",
    "SpecKind": "kernel.spec",
    "RamRegion": "vm.layout",
    "SpecSource": "kernel.spec",
    "Store": "store.api",
    "StoredArtifact": "store.api",
    "StoreStats": "store.api",
    "StoreFullError": "store.api",
    "StoreLockTimeout": "store.api",
    "StoreUnavailableError": "store.api",
    "StoreWarning": "store.api",
    "Symbol": "formats.symbols",
    "VmlinuxNotFoundError": "errors",
    "boot_guest": "vm.boot",
    "cached_vmlinux_bytes": "store.bytescache",
    "fetch_kernel": "kernel.fetch.fetch",
    "find_vmlinux": "kernel.locate",
    "ktstr_test": "plugin.markers",
    "load_vmlinux_bytes": "store.bytescache",
    "open_store": "store.choose",
    "parse_kernel_spec": "kernel.spec",
    "probe_vmlinux": "kernel.locate",
    "resolve_kernel": "kernel.resolve",
}

__all__ = [
    "BTF",
    "ArtifactStore",
    "BTFKeyError",
    "BTFType",
    "BitfieldError",
    "Candidate",
    "Checks",
    "ChecksFailed",
    "Enumerator",
    "FetchOptions",
    "FetchSpec",
    "FetchedKernel",
    "GlobalTypeError",
    "GlobalTypes",
    "GlobalVariable",
    "GuestBootError",
    "GuestCommandError",
    "GuestError",
    "GuestFactory",
    "GuestMemory",
    "GuestProgramError",
    "GuestProtocolError",
    "GuestQMP",
    "GuestResult",
    "GuestStoppedError",
    "GuestTimeoutError",
    "GuestUnavailableError",
    "GuestVM",
    "GuestWarning",
    "ImageInfo",
    "InsecureStoreError",
    "Kernel",
    "KernelArtifactError",
    "KernelConfig",
    "KernelLayout",
    "KernelSpec",
    "KernelSpecError",
    "KernelSymbols",
    "LiveKernel",
    "LiveKernelError",
    "LiveMemoryError",
    "Member",
    "MemoryStore",
    "MissingMemberError",
    "NotAStoreError",
    "Object",
    "Probe",
    "ProbeReport",
    "RamRegion",
    "Route",
    "Sampler",
    "Samples",
    "SchedExt",
    "Scheduler",
    "SchedulerError",
    "SpecKind",
    "SpecSource",
    "Store",
    "StoreFullError",
    "StoreLockTimeout",
    "StoreStats",
    "StoreUnavailableError",
    "StoreWarning",
    "StoredArtifact",
    "Symbol",
    "Thresholds",
    "Verdict",
    "VmlinuxNotFoundError",
    "boot_guest",
    "cached_vmlinux_bytes",
    "container_of",
    "cpumask_to_cpulist",
    "fetch_kernel",
    "find_task",
    "find_vmlinux",
    "for_each_cpu",
    "for_each_online_cpu",
    "for_each_possible_cpu",
    "for_each_present_cpu",
    "for_each_task",
    "hlist_empty",
    "hlist_for_each",
    "hlist_for_each_entry",
    "idr_find",
    "idr_for_each",
    "idr_for_each_entry",
    "ktstr_test",
    "list_empty",
    "list_for_each",
    "list_for_each_entry",
    "load_vmlinux_bytes",
    "open_store",
    "parse_kernel_spec",
    "per_cpu_ptr",
    "pid_task",
    "probe_vmlinux",
    "rbtree_inorder_for_each",
    "rbtree_inorder_for_each_entry",
    "resolve_kernel",
    "sizeof",
    "task_cpu",
    "task_state_to_char",
    "xa_for_each",
    "xa_is_value",
    "xa_is_zero",
    "xa_load",
    "xa_to_value",
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

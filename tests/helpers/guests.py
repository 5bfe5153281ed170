"""A real test kernel booted in a TCG guest, as the guest tests boot one: the kernel resolved in
a store of its own (a MemoryStore: a module's guest shares nothing with the user's store), TCG
(CI has no usable KVM; the tests' timings do not depend on it), and a boot timeout that allows
for a loaded 2-core CI machine."""

from __future__ import annotations

from typing import Any

from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestVM, boot_guest
from pytest_ktstr_vmlinux.vm.layout import MiB

from .kernels import DebianKernel

BOOT_TIMEOUT = 900.0
MEMORY = 384 * MiB


def tcg_guest(kernel: DebianKernel, **options: Any) -> GuestVM:
    """``boot_guest`` of ``kernel`` under TCG with ``options`` (``memory`` and ``timeout``
    default to MEMORY and BOOT_TIMEOUT)."""
    store = MemoryStore()
    resolved = resolve_kernel(kernel.release, sysroot=kernel.sysroot, store=store)
    options.setdefault("memory", MEMORY)
    options.setdefault("timeout", BOOT_TIMEOUT)
    return boot_guest(resolved, store=store, accel="tcg", **options)

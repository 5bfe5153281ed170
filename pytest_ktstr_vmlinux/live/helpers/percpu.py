"""Per-CPU memory (include/linux/percpu-defs.h): ``per_cpu_ptr``, as the kernel and drgn name it.

A ``__percpu`` pointer (what ``alloc_percpu()`` returns, ``scx_root->pcpu``) holds an address in
the per-CPU address space; CPU n's copy is at that address plus ``__per_cpu_offset[n]``, in u64
arithmetic (from 6.15 the offsets can be "negative"). drgn's per_cpu_ptr returns a pointer; this
one returns what it points to, as a member access through a pointer does here, so
``per_cpu_ptr(scx_root.pcpu, cpu).event_stats`` reads like the C.
"""

from __future__ import annotations

from ...formats.address import u64
from ..errors import LiveKernelError
from ..objects import Object
from .walk import program, where

__all__ = ["per_cpu_ptr"]


def per_cpu_ptr(ptr: Object, cpu: int) -> Object:
    """CPU ``cpu``'s copy of what the ``__percpu`` pointer ``ptr`` points to (drgn's returns
    a pointer to it; this, what it points to)::

        root = live.object("scx_root")  # struct scx_sched *, 6.16 and later
        stats = per_cpu_ptr(root.pcpu, 0).event_stats  # CPU 0's (6.18 and later)

    A per-CPU variable (not a pointer) is ``LiveKernel.per_cpu(name, cpu)``.
    """
    if not isinstance(ptr, Object):
        raise TypeError(f"per_cpu_ptr() takes an Object of a pointer, not {type(ptr).__name__}")
    kernel = ptr.prog_
    real = kernel.real_type(ptr.type_id_)
    if real.kind != "PTR" or not real.target:
        raise LiveKernelError(
            f"per_cpu_ptr() takes a __percpu pointer, not the {ptr.type_name_()} at"
            f" {where(kernel, ptr.address_)}"
        )
    live = program(kernel)
    if live is None:
        raise LiveKernelError("per_cpu_ptr() needs an Object of a LiveKernel (its per-CPU offsets)")
    base = int(ptr.value_())
    if base == 0:
        raise LiveKernelError(
            f"per_cpu_ptr(): the __percpu pointer {ptr.type_name_()} at"
            f" {where(kernel, ptr.address_)} is NULL"
        )
    return Object(kernel, real.target, u64(base + live.per_cpu_offset(cpu)), fixed=False)

"""Kernel addresses are unsigned 64-bit: arithmetic on them wraps at 2**64, as the kernel's does.

A kernel that links ``.data..percpu`` in place (x86_64 from 6.15) keeps "negative" values in
``__per_cpu_offset`` and a wrapped ``phys_base``: ``&var + __per_cpu_offset[cpu]`` lands in the
direct map only modulo 2**64. Python's integers do not wrap, so every address the library
computes goes through ``u64``.
"""

from __future__ import annotations

U64_MASK = (1 << 64) - 1


def u64(value: int) -> int:
    """``value`` modulo 2**64: what a u64 computed as ``value`` holds."""
    return value & U64_MASK


def s64(value: int) -> int:
    """The u64 ``value`` as the signed 64-bit number it also is (for showing a wrapped offset)."""
    value &= U64_MASK
    return value - (1 << 64) if value >> 63 else value

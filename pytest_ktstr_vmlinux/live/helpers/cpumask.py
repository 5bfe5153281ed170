"""CPU masks (include/linux/cpumask.h): the CPUs a ``struct cpumask`` holds, and the kernel's
online, possible and present masks.

A mask's ``bits`` array is sized for NR_CPUS, but only its first ``nr_cpu_ids`` bits mean
anything: the kernel may leave bits above them set (``cpumask_setall()`` fills whole words),
so the CPUs are the set bits below ``nr_cpu_ids``, read from the kernel. A kernel without that
variable (NR_CPUS of 1, CONFIG_FORCE_NR_CPUS) has a mask exactly as long as its CPUs' words,
and then the whole array is read.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import LiveKernelError
from ..objects import Object
from .walk import Program, expect, kernel_of, program

__all__ = [
    "cpumask_to_cpulist",
    "for_each_cpu",
    "for_each_online_cpu",
    "for_each_possible_cpu",
    "for_each_present_cpu",
]

CPUMASK = "struct cpumask"


def for_each_cpu(mask: Object) -> Iterator[int]:
    """The CPUs set in ``mask``: a ``struct cpumask``, a pointer to one, or a
    ``cpumask_var_t`` (an array of one mask without CONFIG_CPUMASK_OFFSTACK)::

        allowed = list(for_each_cpu(find_task(live, 1).cpus_mask))  # [0, 1, 2, 3]
    """
    mask = _mask(mask, "for_each_cpu")
    raw = mask.bits.read_()
    data, count = int.from_bytes(raw, "little"), 8 * len(raw)
    prog = program(mask.prog_)
    if prog is not None and "nr_cpu_ids" in prog.symbols:  # an unsigned int, always
        count = min(count, int.from_bytes(prog.read(prog.symbols["nr_cpu_ids"], 4), "little"))
    cpu = 0
    while data and cpu < count:
        if data & 1:
            yield cpu
        data >>= 1
        cpu += 1


def for_each_online_cpu(live: Program) -> Iterator[int]:
    """The online CPUs, from the kernel's ``__cpu_online_mask``::

        for cpu in for_each_online_cpu(live):
            print(cpu, live.per_cpu("runqueues", cpu).nr_running.value_())

    The mask is read once, when the walk begins.
    """
    return for_each_cpu(kernel_of(live, "for_each_online_cpu").object("__cpu_online_mask", CPUMASK))


def for_each_possible_cpu(live: Program) -> Iterator[int]:
    """The possible CPUs (those the kernel has per-CPU areas for), ``__cpu_possible_mask``::

        len(list(for_each_possible_cpu(live)))

    The mask is read once, when the walk begins.
    """
    return for_each_cpu(
        kernel_of(live, "for_each_possible_cpu").object("__cpu_possible_mask", CPUMASK)
    )


def for_each_present_cpu(live: Program) -> Iterator[int]:
    """The present CPUs, from ``__cpu_present_mask``::

        list(for_each_present_cpu(live))  # [0, 1]

    The mask is read once, when the walk begins.
    """
    return for_each_cpu(
        kernel_of(live, "for_each_present_cpu").object("__cpu_present_mask", CPUMASK)
    )


def cpumask_to_cpulist(mask: Object) -> str:
    """``mask`` in the kernel's cpulist format, as sysfs shows it: ``"0-3,8,10-11"``::

        cpumask_to_cpulist(find_task(live, 1).cpus_mask)  # "0-3"

    Only the CPUs below ``nr_cpu_ids`` count, as for ``for_each_cpu``.
    """
    parts: list[str] = []
    start = end = -2
    for cpu in for_each_cpu(mask):
        if cpu != end + 1:
            if start >= 0:
                parts.append(f"{start}" if start == end else f"{start}-{end}")
            start = cpu
        end = cpu
    if start >= 0:
        parts.append(f"{start}" if start == end else f"{start}-{end}")
    return ",".join(parts)


def _mask(mask: Object, helper: str) -> Object:
    if isinstance(mask, Object):
        real = mask.prog_.real_type(mask.type_id_)
        if real.kind == "ARRAY" and len(mask) == 1:  # cpumask_var_t on the stack
            mask = mask[0]
    found = expect(mask, helper, CPUMASK)
    bits = found.get_("bits")
    if bits is None or found.prog_.real_type(bits.type_id_).kind != "ARRAY":
        raise LiveKernelError(f"{helper}(): {found.type_name_()} has no bits array")
    return found

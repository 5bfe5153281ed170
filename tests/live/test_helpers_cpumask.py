"""for_each_cpu, cpumask_to_cpulist and the kernel's online/possible/present masks over masks
laid out by the test: only bits below nr_cpu_ids count (the kernel may set the rest), and the
cpulist is sysfs's format."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux import (
    LiveKernelError,
    cpumask_to_cpulist,
    for_each_cpu,
    for_each_online_cpu,
    for_each_possible_cpu,
    for_each_present_cpu,
)
from tests.helpers.cdecl import CTypes
from tests.helpers.fakelive import World
from tests.helpers.livemem import FakeKernel

BITS = 128  # struct cpumask { unsigned long bits[2]; }: NR_CPUS of 128


def _types() -> CTypes:
    t = CTypes()
    t.struct("cpumask", [("bits", f"unsigned long[{BITS // 64}]")])
    t.struct("holder", [("var", "struct cpumask[1]"), ("ptr", "struct cpumask *"), ("n", "int")])
    return t


BTF_ = _types().btf()


def _cpulist(cpus: list[int]) -> str:
    """The reference: runs of consecutive CPUs as a-b, lone ones as a."""
    runs: list[list[int]] = []
    for cpu in cpus:
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


@given(st.integers(0, (1 << BITS) - 1), st.integers(1, BITS))
@settings(max_examples=200, deadline=None)
def test_the_cpus_of_a_mask(bits: int, nr_cpu_ids: int) -> None:
    world = World(BTF_, {"holder": "struct holder"}, cpus=2, ram=1 << 20)
    world.write(world.live.symbols["nr_cpu_ids"], nr_cpu_ids.to_bytes(4, "little"))
    holder = world.var("holder", "struct holder")
    world.write(holder.var[0].address_, bits.to_bytes(BITS // 8, "little"))
    world.set(holder.ptr, holder.var[0].address_)
    expected = [cpu for cpu in range(nr_cpu_ids) if bits >> cpu & 1]
    for mask in (holder.var[0], holder.var, holder.ptr):  # a mask, cpumask_var_t, a pointer
        assert list(for_each_cpu(mask)) == expected
        assert cpumask_to_cpulist(mask) == _cpulist(expected)


def test_a_mask_without_nr_cpu_ids_counts_every_bit() -> None:
    """A kernel with NR_CPUS of 1 or CONFIG_FORCE_NR_CPUS has no nr_cpu_ids variable: its
    masks are exactly as long as its CPUs' words."""
    kernel = FakeKernel(BTF_, {0xFFFF888000001000: 0x1000})
    kernel.write(0xFFFF888000001000, ((1 << 127) | 0b1011).to_bytes(16, "little"))
    mask = kernel.object("struct cpumask", 0xFFFF888000001000)
    assert list(for_each_cpu(mask)) == [0, 1, 3, 127]
    assert cpumask_to_cpulist(mask) == "0-1,3,127"


def test_the_kernels_masks() -> None:
    world = World(BTF_, {}, cpus=4, ram=1 << 20)
    live = world.live
    assert list(for_each_online_cpu(live)) == [0, 1, 2, 3]
    world.set(live.object("__cpu_online_mask", "struct cpumask").bits[0], 0b1101)
    world.set(live.object("__cpu_present_mask", "struct cpumask").bits[0], 0b0111)
    assert list(for_each_online_cpu(live)) == [0, 2, 3]
    assert list(for_each_present_cpu(live)) == [0, 1, 2]
    assert list(for_each_possible_cpu(live)) == [0, 1, 2, 3]
    assert list(for_each_online_cpu(live)) == list(live.cpus)  # LiveKernel.cpus agrees
    assert cpumask_to_cpulist(live.object("__cpu_online_mask", "struct cpumask")) == "0,2-3"


def test_the_wrong_type() -> None:
    world = World(BTF_, {"holder": "struct holder"}, cpus=2, ram=1 << 20)
    holder = world.var("holder", "struct holder")
    with pytest.raises(LiveKernelError, match=r"for_each_cpu\(\) takes a struct cpumask .or a poi"):
        list(for_each_cpu(holder))
    with pytest.raises(LiveKernelError, match=r"not the int at"):
        cpumask_to_cpulist(holder.n)
    with pytest.raises(TypeError, match=r"for_each_online_cpu\(\) takes the LiveKernel"):
        list(for_each_online_cpu(holder))  # type: ignore[arg-type]

"""Object over hand-built BTF and a fake memory: drgn's naming (no C member is ever hidden by the
API), scalar comparisons and conversions, and u64 address arithmetic that wraps as the kernel's."""

from __future__ import annotations

import struct

import pytest

from pytest_ktstr_vmlinux import Enumerator, Object, container_of, sizeof
from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.live.errors import LiveKernelError, LiveMemoryError, MissingMemberError
from tests.helpers.btf import TYPEDEF, Builder
from tests.helpers.livemem import FakeKernel

BASE = 0xFFFF888000001000
TOP = 0xFFFFFFFFFFFFF000  # the last page of the address space: arithmetic past it wraps to 0

# Member names that are (or were) the API's own attributes, and names drgn's API uses.
API_LIKE = [
    "type",
    "size",
    "index",
    "value",
    "address",
    "read",
    "get",
    "string",
    "member",
    "fixed",
    "deref",
    "reader",
    "type_name",
    "type_id",
    "container_of",
    "prog",
]


def _btf() -> BTF:
    b = Builder()
    u32 = b.int_("unsigned int", 4)
    s32 = b.int_("int", 4, signed=True)
    u64 = b.add(TYPEDEF, "u64", st=b.int_("long long unsigned int", 8))
    char = b.int_("char", 1, signed=True)
    boolean = b.int_("_Bool", 1, bits=8)
    b.struct("api_like", 4 * len(API_LIKE), [(n, u32, 32 * i) for i, n in enumerate(API_LIKE)])
    colour = b.enum("system_states", {"BOOT": 0, "RUN": 2})
    node_ptr = b.ptr(b.count + 2)  # struct list_head *, the struct added next
    node = b.struct("list_head", 16, [("next", node_ptr, 0), ("prev", node_ptr, 64)])
    comm = b.array(char, 8)
    task_ptr = b.ptr(b.count + 2)  # struct task *, the struct added next
    b.struct(
        "task",
        48,
        [
            ("__state", u32, 0),
            ("prio", s32, 32),
            ("tasks", node, 64),
            ("comm", comm, 192),
            ("on", boolean, 256),
            ("colour", colour, 288),
            ("parent", task_ptr, 320),
        ],
    )
    b.struct("holder", 24, [("nums", b.array(u64, 3), 0)])
    return BTF.from_bytes(b.blob(), what="test BTF")


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(_btf(), {BASE: 0x1000, TOP: 0x1000, 0: 0x1000})


def test_every_member_named_like_an_api_attribute_is_the_member(kernel: FakeKernel) -> None:
    for i in range(len(API_LIKE)):
        kernel.write(BASE + 4 * i, struct.pack("<I", 100 + i))
    obj = kernel.object("struct api_like", BASE)
    for i, name in enumerate(API_LIKE):
        member = getattr(obj, name)
        assert isinstance(member, Object), name
        assert member.value_() == 100 + i, name
        assert member.address_ == BASE + 4 * i
        assert obj[name].value_() == 100 + i
        assert obj.member_(name).value_() == 100 + i


def test_the_api_is_only_names_ending_in_an_underscore() -> None:
    # C members reached as obj.name become properties of Object: they are members, not API.
    public = [n for n in dir(Object) if not n.startswith("_")]
    assert public, "Object has an API"
    assert all(n.endswith("_") for n in public), [n for n in public if not n.endswith("_")]


def test_members_like_dunder_state_are_members(kernel: FakeKernel) -> None:
    kernel.write(BASE, struct.pack("<I", 0x402))
    task = kernel.object("struct task", BASE)
    assert task.__state.value_() == 0x402  # task_struct.__state since 5.14
    with pytest.raises(AttributeError):
        task.__nonexistent_dunder__  # noqa: B018


def test_scalars_compare_and_convert_by_value(kernel: FakeKernel) -> None:
    kernel.write(BASE + 4, struct.pack("<i", -7))
    kernel.write(BASE + 32, b"\x01")
    task = kernel.object("struct task", BASE)
    prio = task.prio
    assert prio == -7
    assert prio != 7
    assert prio < 0 <= 1
    assert prio >= -7
    assert not prio > -7
    assert int(prio) == -7
    assert float(prio) == -7.0
    assert bool(prio)
    assert [10, 20, 30][task.__state] == 10  # __index__: 0
    assert not task.__state
    assert task.on == 1
    assert isinstance(task.on, Object)  # an Object, not the bool it equals
    assert prio == task.prio  # Object == Object compares values
    assert task.__state < prio or task.__state > prio
    assert hex(task.__state) == "0x0"


def test_comparing_a_struct_or_array_is_a_type_error(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    with pytest.raises(TypeError, match=r"struct task .* no single value"):
        _ = task == 0
    with pytest.raises(TypeError, match="struct task"):
        _ = task == kernel.object("struct task", BASE)
    with pytest.raises(TypeError, match=r"char\[8\]"):
        _ = task.comm < 3
    with pytest.raises(TypeError):
        bool(task)
    with pytest.raises(TypeError):
        int(task.tasks)
    with pytest.raises(TypeError, match="unhashable"):
        hash(task.prio)


def test_pointers_compare_as_addresses_and_are_true_unless_null(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    assert not task.parent
    assert task.parent == 0
    kernel.write_u64(BASE + 40, BASE)
    assert task.parent
    assert task.parent == BASE
    assert task.parent.deref_().address_ == BASE
    assert task.parent.parent == BASE  # through the pointer, as C's ->


def test_an_enum_value_is_an_int_with_its_name(kernel: FakeKernel) -> None:
    kernel.write(BASE + 36, struct.pack("<I", 2))
    colour = kernel.object("struct task", BASE).colour
    value = colour.value_()
    assert isinstance(value, Enumerator)
    assert value == 2
    assert value.name == "RUN"
    assert colour == 2
    assert int(colour) == 2
    kernel.write(BASE + 36, struct.pack("<I", 9))
    assert colour.value_().name is None
    assert colour.value_() == 9


def test_arrays_iterate_and_have_a_length(kernel: FakeKernel) -> None:
    for i in range(3):
        kernel.write_u64(BASE + 8 * i, 11 * (i + 1))
    nums = kernel.object("struct holder", BASE).nums
    assert len(nums) == 3
    assert [int(n) for n in nums] == [11, 22, 33]
    assert nums.value_() == [11, 22, 33]
    assert nums[2] == 33
    with pytest.raises(LiveKernelError, match="out of range"):
        nums[3]
    with pytest.raises(TypeError, match="not an array"):
        len(kernel.object("struct task", BASE))
    assert sizeof(nums) == 24
    kernel.write(BASE + 24, b"swapper\0")
    assert kernel.object("struct task", BASE).comm.string_() == "swapper"


def test_member_addresses_wrap_at_2_64(kernel: FakeKernel) -> None:
    """An object in the last bytes of the address space: its members are at the start of it,
    as the kernel's u64 arithmetic puts them (6.15's per-CPU areas reached with "negative"
    offsets work this way)."""
    start = (1 << 64) - 8  # task.__state and .prio in the last 8 bytes, .tasks past the end
    kernel.write(start, struct.pack("<Ii", 5, -1))
    kernel.write_u64(0, 0xABC)  # tasks.next, wrapped to address 0
    task = kernel.object("struct task", start)
    assert task.__state == 5
    assert task.prio == -1
    assert task.tasks.address_ == 0
    assert task.tasks.next == 0xABC
    assert task.comm.address_ == 16
    obj = Object(kernel, task.type_id_, start + (1 << 64))  # a computed address, normalised
    assert obj.address_ == start


def test_container_of_is_a_function_and_wraps(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    kernel.write_u64(BASE + 8, BASE + 8)  # tasks.next points at itself: a ring of one
    again = container_of(task.tasks.next, "struct task", "tasks")
    assert again.address_ == BASE
    assert container_of(task.tasks, "struct task", "tasks").address_ == BASE
    kernel.write_u64(BASE + 8, 4)  # a list_head at 4: its task_struct would start below 0
    assert container_of(task.tasks.next, "struct task", "tasks").address_ == (1 << 64) - 4
    with pytest.raises(MissingMemberError, match="taks"):
        container_of(task.tasks, "struct task", "taks")
    kernel.write_u64(BASE + 8, 0)
    with pytest.raises(LiveMemoryError, match="NULL"):
        container_of(task.tasks.next, "struct task", "tasks")


def test_get_and_missing_members(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    assert task.get_("scx.nr_running", "absent") == "absent"
    assert task.get_("prio").address_ == task.prio.address_
    with pytest.raises(MissingMemberError, match="did you mean 'prio'"):
        task.pri  # noqa: B018
    assert not hasattr(task, "pri")
    assert "prio" in dir(task)
    assert "value_" in dir(task)


def test_member_paths_through_pointers_agree_with_steps(kernel: FakeKernel) -> None:
    """member_() replays the BTF's route of (type, path); step by step (``_walk``) is what it
    falls back on to say what is wrong: both land on the same member, every time."""
    child, parent, grand = BASE, BASE + 0x100, BASE + 0x200
    kernel.write_u64(child + 40, parent)  # child.parent
    kernel.write_u64(parent + 40, grand)
    kernel.write(grand + 4, struct.pack("<i", -3))  # grand.prio
    kernel.write_u64(grand + 8, grand + 8)  # grand.tasks.next: itself
    task = kernel.object("struct task", child)
    for path in ("parent.parent.prio", "parent.parent.tasks.next.next", "parent[0].prio"):
        fast, slow = task.member_(path), task._walk(path)
        assert (fast.address_, fast.type_id_, fast.fixed_) == (
            slow.address_,
            slow.type_id_,
            slow.fixed_,
        )
    assert task.member_("parent.parent.prio") == -3
    assert task["parent.parent.tasks.next"].address_ == grand + 8
    assert task.parent.parent.prio.address_ == grand + 4
    assert task.member_("parent[2]").address_ == parent + 2 * 48  # ptr[i]: C's indexing
    assert task.prio.fixed_
    assert not task.member_("parent.prio").fixed_  # a pointer on the way may change
    kernel.write_u64(parent + 40, 0)  # the second pointer is now NULL: said, not cached
    with pytest.raises(LiveMemoryError, match=r"NULL pointer: struct task \* at 0x"):
        task.member_("parent.parent.prio")
    kernel.write_u64(parent + 40, grand)
    assert task.member_("parent.parent.prio") == -3


def test_a_member_of_one_type_is_not_anothers(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    kernel.write(BASE + 4, struct.pack("<i", 9))
    assert task.prio == 9
    node = kernel.object("struct list_head", BASE)
    with pytest.raises(MissingMemberError, match="no member 'prio'"):
        node.prio  # noqa: B018
    assert not hasattr(node, "prio")
    assert "prio" not in dir(node)


def test_missing_paths_say_which_step(kernel: FakeKernel) -> None:
    task = kernel.object("struct task", BASE)
    kernel.write_u64(BASE + 40, BASE)  # task.parent: itself
    with pytest.raises(MissingMemberError, match="did you mean 'prio'"):
        task.member_("parent.prioo")
    with pytest.raises(LiveKernelError, match="index 3 is out of range"):
        kernel.object("struct holder", BASE).member_("nums[3]")
    with pytest.raises(LiveKernelError, match="malformed member path"):
        task.member_("parent..prio")
    with pytest.raises(MissingMemberError, match="not a struct or union"):
        task.member_("prio.x")

"""BTF.route: a member path resolved once, through the pointers on the way (what the live layer
replays for each read), over BTF built by hand."""

from __future__ import annotations

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf.queries import BTF, BTFKeyError, Route
from tests.helpers.btf import PTR, TYPEDEF, Builder


def _btf() -> BTF:
    b = Builder()
    u32 = b.int_("unsigned int", 4)
    u8 = b.int_("unsigned char", 1)
    ids = b.array(u32, 2)
    task_ptr = b.ptr(b.count + 4)  # struct task *: the struct added below
    task_pp = b.ptr(task_ptr)  # struct task **
    link = b.add(TYPEDEF, "task_link", st=task_ptr)
    task = b.struct(
        "task",
        32,
        [
            ("pid", u32, 0),
            ("flag", u8, 34, 3),  # 3 bits at bit 34: a bitfield
            ("parent", link, 64),
            ("pp", task_pp, 128),
            ("ids", ids, 192),
        ],
    )
    assert task == task_ptr + 3
    loop = b.count + 1
    b.add(PTR, st=loop + 1)
    b.add(PTR, st=loop)  # two pointers that point at each other: damaged BTF
    b.struct("damaged", 8, [("p", loop, 0)])
    return BTF.from_bytes(b.blob(), what="test BTF")


def test_routes_through_pointers() -> None:
    btf = _btf()
    task = btf.type("struct task").id
    assert btf.route(task, "pid") == Route((0,), btf.member(task, "pid").type_id, 0)
    assert btf.route(task, "ids[1]").offsets == (192 + 32,)
    assert btf.route(task, "flag") == Route((34,), btf.member(task, "flag").type_id, 3)
    # parent (through a typedef) is read at bit 64, then pid is 0 bits into what it points to.
    assert btf.route(task, "parent.pid").offsets == (64, 0)
    assert btf.route(task, "parent.parent.ids[1]").offsets == (64, 64, 224)
    assert btf.route(task, "pp.pid").offsets == (128, 0, 0)  # a pointer to a pointer: twice
    assert btf.route(task, "parent[2].pid").offsets == (64, 2 * 32 * 8)  # ptr[i]
    route = btf.route("struct task", "parent.pid")
    assert route is btf.route("struct task", "parent.pid")  # kept


def test_routes_that_do_not_exist() -> None:
    btf = _btf()
    with pytest.raises(BTFKeyError, match="did you mean 'pid'"):
        btf.route("struct task", "parent.pidd")
    with pytest.raises(BTFKeyError, match="not a struct or union"):
        btf.route("struct task", "pid.x")
    with pytest.raises(BTFKeyError, match="not a struct or union"):
        btf.route("struct task", "flag.x")  # a bitfield has no members
    with pytest.raises(BTFKeyError, match="index 2 is out of range"):
        btf.route("struct task", "ids[2]")
    with pytest.raises(BTFKeyError, match="is not an array"):
        btf.route("struct task", "pid[0]")
    with pytest.raises(ValueError, match="malformed member path"):
        btf.route("struct task", "parent..pid")
    with pytest.raises(KernelArtifactError, match="type chain loops"):
        btf.route("struct damaged", "p.x")
    with pytest.raises(BTFKeyError):  # errors are not kept: asked again, raised again
        btf.route("struct task", "parent.pidd")


def test_kept_sizes_and_encodings_answer_as_before() -> None:
    btf = _btf()
    task = btf.type("struct task").id
    assert [btf.sizeof(task), btf.sizeof(task)] == [32, 32]
    flag = btf.member(task, "flag").type_id
    assert btf.int_encoding(flag) == btf.int_encoding(flag) == (8, False, False)
    with pytest.raises(BTFKeyError, match="not an integer type"):
        btf.int_encoding(task)
    with pytest.raises(BTFKeyError, match="not an integer type"):
        btf.int_encoding(task)

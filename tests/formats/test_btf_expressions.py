"""BTF answers for C type expressions: named parts are its own types, derived parts (pointers,
arrays, qualifiers, prototypes) are made in an overlay that every query, and Object, understands.
BTF written by hand (tests/helpers/btf.py), of gcc's and of clang's base type names."""

from __future__ import annotations

import struct
import threading

import pytest

from pytest_ktstr_vmlinux.formats.btf.queries import BTF, BTFKeyError
from pytest_ktstr_vmlinux.live.objects import Object, sizeof
from tests.helpers.btf import FWD, TYPEDEF, VAR, Builder
from tests.helpers.livemem import FakeKernel

BASE = 0xFFFF888000001000


def _btf(*, clang: bool = False, long_size: int = 8) -> BTF:
    """A kernel's shapes: struct rq, a typedef u64, char, a function prototype, a FWD, and the
    base types spelled as gcc (or clang) names them."""
    b = Builder()
    names = ("unsigned long", "int", "char") if clang else ("long unsigned int", "int", "char")
    ulong = b.int_(names[0], long_size)
    b.int_("long int" if not clang else "long", long_size, signed=True)
    int_ = b.int_(names[1], 4, signed=True)
    char = b.int_(names[2], 1, signed=True)
    u64 = b.add(TYPEDEF, "u64", st=b.int_("long long unsigned int", 8))
    b.struct("rq", 24, [("nr_running", ulong, 0), ("clock", u64, 64), ("cpu", int_, 128)])
    b.add(FWD, "opaque")
    proto = b.func_proto(int_, [("rq", b.ptr(b.count - 1)), ("n", int_)])
    b.ptr(proto)
    b.add(VAR, "runqueues", st=b.count - 5, extra=b.u32(1))
    del char
    return BTF.from_bytes(b.blob(), what="test BTF")


def test_a_pointer_the_btf_lacks_is_derived() -> None:
    btf = _btf()
    ptr = btf.type("struct rq *")
    assert ptr.kind == "PTR" and ptr.id > len(btf)
    assert ptr.target == btf.type("struct rq").id
    assert btf.type("struct rq *").id == ptr.id == btf.type("struct   rq*").id  # made once
    assert "struct rq *" in btf and ptr.id in btf
    assert btf.sizeof("struct rq *") == 8
    assert btf.type_name(ptr.id) == "struct rq *"
    assert btf.type(ptr.id) == ptr


def test_pointer_size_follows_the_btfs_long() -> None:
    assert _btf(long_size=4).sizeof("struct rq *") == 4


def test_arrays_have_their_lengths_and_paths_go_through_them() -> None:
    btf = _btf()
    arr = btf.type("u64[4]")
    assert (arr.kind, arr.target) == ("ARRAY", btf.type("u64").id)
    assert btf.sizeof("u64[4]") == 32
    assert btf.sizeof("struct rq *[8]") == 64
    assert btf.type_name(btf.type("struct rq *[8]").id) == "struct rq *[8]"
    assert btf.offsetof("struct rq[3]", "[2].cpu") == 2 * 24 + 16
    assert btf.sizeof("int[2][3]") == 24
    assert btf.sizeof("char[]") == 0
    assert btf.type_name(btf.type("struct rq (*)[2]").id) == "struct rq (*)[2]"


@pytest.mark.parametrize("clang", [False, True])
def test_base_types_by_any_spelling(clang: bool) -> None:
    btf = _btf(clang=clang)
    ulong = btf.type("unsigned long")
    assert ulong.kind == "INT" and ulong.id <= len(btf)
    assert btf.type("long unsigned int").id == ulong.id
    assert btf.type("unsigned long int").id == ulong.id
    assert btf.type("signed").id == btf.type("int").id


def test_qualifiers_and_functions() -> None:
    btf = _btf()
    p = btf.type("const char *")
    const = btf.type(p.target or 0)
    assert (const.kind, btf.type(const.target or 0).name) == ("CONST", "char")
    assert btf.type_name(p.id) == "const char *"
    assert btf.type_name(btf.type("char *const").id) == "char *const"
    f = btf.type("int (*)(struct rq *, int)")
    proto = btf.type(f.target or 0)
    assert proto.kind == "FUNC_PROTO" and proto.vlen == 2
    assert btf.type_name(f.id) == "int (*)(struct rq *, int)"
    assert btf.sizeof(f.id) == 8
    # The BTF's own prototype prints with its parameters too.
    own = next(t for t in range(1, len(btf) + 1) if btf.type(t).kind == "FUNC_PROTO")
    assert btf.type_name(own) == "int (struct rq *, int)"
    assert btf.type_name(own + 1) == "int (*)(struct rq *, int)"
    variadic = btf.type("void (*)(int, ...)")
    assert btf.type_name(variadic.id) == "void (*)(int, ...)"


def test_what_cannot_be_resolved_is_said() -> None:
    btf = _btf()
    with pytest.raises(BTFKeyError, match=r"no type 'struct rx'; did you mean 'struct rq'"):
        btf.type("struct rx *")
    with pytest.raises(BTFKeyError, match="not a C type expression: 'struct rq \\*\\['"):
        btf.type("struct rq *[")
    with pytest.raises(BTFKeyError, match="an array of struct opaque, which has no size"):
        btf.type("struct opaque[2]")
    assert "struct rx *" not in btf
    assert "struct rq *[" not in btf
    btf.type("struct opaque *")  # a pointer to a declared struct is fine


def test_objects_read_through_derived_types_unchanged() -> None:
    """Object has no special case: a derived pointer and array read as BTF's own would."""
    btf = _btf()
    mem = FakeKernel(btf, {BASE: 0x1000})
    rq = BASE + 0x100
    mem.write_u64(BASE, rq)
    mem.write(rq, struct.pack("<QQi", 3, 99, 7))
    root = Object(mem, btf.type("struct rq *").id, BASE)
    assert root.nr_running == 3 and root.clock == 99 and root.cpu == 7
    assert root.value_() == rq and bool(root)
    assert root.type_name_() == "struct rq *" and sizeof(root) == 8
    for i in range(4):
        mem.write_u64(BASE + 0x200 + 8 * i, 10 * i)
    arr = Object(mem, btf.type("u64[4]").id, BASE + 0x200)
    assert len(arr) == 4 and arr.value_() == [0, 10, 20, 30] and arr[3] == 30
    ptrs = Object(mem, btf.type("struct rq *[2]").id, BASE)
    assert ptrs[0].cpu == 7


def test_one_expression_one_id_across_threads() -> None:
    btf = _btf()
    found: list[int] = []
    barrier = threading.Barrier(8)

    def resolve() -> None:
        barrier.wait()
        found.append(btf.type("struct rq *[5]").id)

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1 and len(found) == 8


def test_per_cpu_datasecs_are_counted() -> None:
    b = Builder()
    int_ = b.int_("int", 4, signed=True)
    a = b.add(VAR, "a", st=int_, extra=b.u32(1))
    c = b.add(VAR, "c", st=int_, extra=b.u32(1))
    b.datasec(".data..percpu", 8, [(a, 0, 4), (c, 4, 4)])
    b.datasec(".bss", 4, [(c, 0, 4)])
    assert BTF.from_bytes(b.blob(), what="t").datasecs() == {".data..percpu": 2, ".bss": 1}
    assert _btf().datasecs() == {}

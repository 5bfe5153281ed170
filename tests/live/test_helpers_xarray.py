"""xa_for_each, xa_load and the IDR helpers over XArrays (and pre-4.20 radix trees) laid out by
the test as the kernel lays them out (tests/helpers/kstructs.py's xa_store): random sets of
entries (multi-index, value, retry and zero entries, deep trees, 64- and 16-slot nodes) against
what was stored, and hostile trees (a node pointing at itself, a node reached twice, shifts that
do not descend, internal entries no XArray stores) against the errors that name them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux import (
    LiveKernelError,
    LiveMemoryError,
    Object,
    idr_find,
    idr_for_each,
    idr_for_each_entry,
    xa_for_each,
    xa_is_value,
    xa_is_zero,
    xa_load,
    xa_to_value,
)
from pytest_ktstr_vmlinux.live.helpers.xarray import XA_RETRY_ENTRY, XA_ZERO_ENTRY
from tests.helpers.cdecl import CTypes
from tests.helpers.fakelive import World
from tests.helpers.kstructs import XEntry, kernel_types, xa_store

FLAVOURS = {
    (radix, chunk): kernel_types(radix=radix, chunk=chunk).btf()
    for radix in (False, True)
    for chunk in (64, 16)
}
POINTERS = 0xFFFF888000400000
UNMAPPED = 0xFFFFC90000001000


def _world(radix: bool = False, chunk: int = 64) -> World:
    btf = FLAVOURS[radix, chunk]
    return World(btf, {"an_idr": "struct idr"}, ram=2 << 20)


def _root(world: World) -> Object:
    return world.var("an_idr", "struct idr").idr_rt


@st.composite
def stored(draw: st.DrawFn, radix: bool, chunk: int) -> list[XEntry]:
    """Non-overlapping entries, each aligned to its order, of every kind the flavour has."""
    bits = chunk.bit_length() - 1
    kinds = ["pointer", "value", "retry"] + ([] if radix else ["zero"])
    entries: list[XEntry] = []
    for _ in range(draw(st.integers(0, 10))):
        order = draw(st.sampled_from([0, 0, 0, 1, 2, bits - 1, bits, bits + 1]))
        index = draw(
            st.one_of(
                st.integers(0, 2 * chunk),
                st.integers(0, 1 << 20),
                st.sampled_from([0, 1, chunk - 1, chunk, (1 << 32) - 1, 1 << 40, (1 << 64) - 1]),
            )
        )
        index = index >> order << order
        if index + (1 << order) > 1 << 64 or any(
            index < e.index + (1 << e.order) and e.index < index + (1 << order) for e in entries
        ):
            continue
        kind = draw(st.sampled_from(kinds))
        number = draw(st.integers(0, 1 << 20))
        value = {
            "pointer": POINTERS + 64 * number,
            "value": number << 1 | 1 if not radix else number << 2 | 2,  # xa_mk_value, exceptional
            "retry": 1 if radix else XA_RETRY_ENTRY,
            "zero": XA_ZERO_ENTRY,
        }[kind]
        entries.append(XEntry(index, value, order))
    return sorted(entries, key=lambda e: e.index)


def _hidden(value: int, radix: bool) -> bool:
    """Retry and zero entries: only the advanced API sees them."""
    return value in ((1,) if radix else (XA_RETRY_ENTRY, XA_ZERO_ENTRY))


@pytest.mark.parametrize(("radix", "chunk"), list(FLAVOURS))
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_every_stored_entry_is_found(radix: bool, chunk: int, data: st.DataObject) -> None:
    world = _world(radix, chunk)
    root = _root(world)
    entries = data.draw(stored(radix, chunk))
    xa_store(world, root, entries, radix=radix)
    found = [(i, slot.value_()) for i, slot in xa_for_each(root)]
    assert found == [(e.index, e.value) for e in entries if not _hidden(e.value, radix)]
    advanced = [(i, slot.value_()) for i, slot in xa_for_each(root, advanced=True)]
    assert advanced == [(e.index, e.value) for e in entries]
    assert all(slot.type_name_() == "void *" for _, slot in xa_for_each(root))
    for e in entries:  # every index a multi-index entry covers loads it
        for index in {e.index, e.index + (1 << e.order) - 1, e.index + (1 << e.order) // 2}:
            slot = xa_load(root, index)
            assert (None if slot is None else slot.value_()) == (
                None if _hidden(e.value, radix) else e.value
            )
            slot = xa_load(root, index, advanced=True)
            assert slot is not None
            assert slot.value_() == e.value
    for probe in data.draw(st.lists(st.integers(0, (1 << 64) - 1), max_size=5)):
        if not any(e.index <= probe < e.index + (1 << e.order) for e in entries):
            assert xa_load(root, probe, advanced=True) is None


def test_value_and_zero_entries() -> None:
    world = _world()
    root = _root(world)
    xa_store(world, root, [XEntry(3, 42 << 1 | 1), XEntry(5, XA_ZERO_ENTRY), XEntry(9, POINTERS)])
    slots = dict(xa_for_each(root, advanced=True))
    assert xa_is_value(slots[3])
    assert xa_to_value(slots[3]) == 42
    assert xa_is_zero(slots[5])
    assert not xa_is_value(slots[9])
    assert not xa_is_zero(slots[9])


@pytest.mark.parametrize("base", [0, 1, 1000])
def test_an_idr(base: int) -> None:
    world = _world()
    idr = world.var("an_idr", "struct idr")
    world.set(idr.idr_base, base)
    progs = {}
    for index in (0, 1, 63, 64, 4095, 70000):
        prog = progs[index + base] = world.alloc("struct bpf_prog")
        world.set(prog.len, index)
    xa_store(world, idr.idr_rt, [XEntry(i - base, p.address_) for i, p in sorted(progs.items())])
    assert [(i, s.value_()) for i, s in idr_for_each(idr)] == [
        (i, p.address_) for i, p in progs.items()
    ]
    typed = list(idr_for_each_entry(idr, "struct bpf_prog"))
    assert [(i, p.len.value_()) for i, p in typed] == [(i, i - base) for i in progs]
    for i, prog in progs.items():
        slot = idr_find(idr, i)
        assert slot is not None
        assert slot.value_() == prog.address_
    assert idr_find(idr, base + 2) is None
    assert idr_find(idr, base - 1) is None
    # An ID allocated before its pointer is stored (idr_alloc(NULL), then idr_replace()).
    xa_store(world, idr.idr_rt, [XEntry(5, 0), XEntry(6, progs[base].address_)])
    assert [i for i, _ in idr_for_each(idr)] == [base + 6]
    assert idr_find(idr, base + 5) is None


def test_an_idr_before_4_11_is_refused() -> None:
    t = CTypes()
    t.struct("idr_layer", [("prefix", "int"), ("ary", "struct idr_layer *[256]")])
    t.struct("idr", [("top", "struct idr_layer *"), ("layers", "int")])
    world = World(t.btf(), {"old_idr": "struct idr"}, ram=1 << 20)
    with pytest.raises(
        LiveKernelError, match=r"has no idr_rt: an IDR of layers .before Linux 4.11"
    ):
        list(idr_for_each(world.var("old_idr", "struct idr")))


def _tree(world: World) -> tuple[Object, list[Object]]:
    """Entries at 0, 100 and 200: a top node (shift 6) over three leaves (shift 0)."""
    root = _root(world)
    xa_store(world, root, [XEntry(0, POINTERS), XEntry(100, POINTERS), XEntry(200, POINTERS)])
    tid = world.btf.type("struct xa_node").id
    top = Object(world.live, tid, root.xa_head.value_() - 2)
    leaves = [Object(world.live, tid, top.slots[i].value_() - 2) for i in (0, 1, 3)]
    return root, [top, *leaves]


def test_a_node_that_points_at_itself_or_up() -> None:
    world = _world()
    root, (top, low, _, _) = _tree(world)
    world.set(low.slots[5], low.address_ | 2)  # a leaf whose slot holds the leaf itself
    with pytest.raises(
        LiveKernelError, match=r"slot 5 of the node at 0x[0-9a-f]+ \(shift 0, a lea"
    ):
        list(xa_for_each(root))
    world.set(low.slots[5], 0)
    world.set(top.slots[2], top.address_ | 2)  # the top node in its own slot
    with pytest.raises(
        LiveKernelError, match=r"slot 2 of the node at (0x[0-9a-f]+) leads back to \1"
    ):
        list(xa_for_each(root))
    with pytest.raises(LiveKernelError, match=r"the XArray at 0x[0-9a-f]+ \(an_idr\): slot 2 of"):
        xa_load(root, 2 << 6)
    stray = world.alloc("struct xa_node")  # a node as high as its parent: not its child
    world.set(stray.shift, 6)
    world.set(top.slots[2], stray.address_ | 2)
    with pytest.raises(LiveKernelError, match=r"has shift 6 where 0 belongs: a node that points b"):
        list(xa_for_each(root))


def test_a_node_reached_twice() -> None:
    world = _world()
    root, (top, low, _, _) = _tree(world)
    world.set(top.slots[3], low.address_ | 2)  # two slots, one node
    with pytest.raises(
        LiveKernelError,
        match=r"slot 3 of the node at .* visited before \(after 3 nodes\): a loop, or two links to",
    ):
        list(xa_for_each(root))


def test_damaged_nodes() -> None:
    world = _world()
    root, (top, low, _, _) = _tree(world)
    world.set(top.shift, 7)
    with pytest.raises(
        LiveKernelError, match=r"the top node at 0x[0-9a-f]+ has shift 7, not a mul"
    ):
        list(xa_for_each(root))
    world.set(top.shift, 6)
    world.set(low.slots[7], 300 << 2 | 2)
    with pytest.raises(
        LiveKernelError, match=r"slot 7 .* holds 0x4b2, an internal entry that no X"
    ):
        list(xa_for_each(root))
    world.set(low.slots[7], 9 << 2 | 2)  # a sibling of slot 9, after it
    with pytest.raises(LiveKernelError, match="is a sibling of slot 9, which does not come before"):
        list(xa_for_each(root))
    world.set(low.slots[7], 0)
    world.set(top.slots[2], UNMAPPED | 2)
    with pytest.raises(
        LiveMemoryError,
        match=r"node at 0xffffc90000001000 \(slot 2 of the node at 0x[0-9a-f]+\) cannot be read",
    ):
        list(xa_for_each(root))
    world.set(top.slots[2], 0)
    assert len(list(xa_for_each(root, limit=4))) == 3  # four nodes, three entries
    with pytest.raises(LiveKernelError, match=r"more than 3 nodes \(limit=3\)"):
        list(xa_for_each(root, limit=3))
    world.set(root.xa_head, 5 << 2 | 2)  # a sibling where only an entry or a node may be
    with pytest.raises(LiveKernelError, match="the head holds 0x16, an internal entry that is no"):
        list(xa_for_each(root))


def test_the_wrong_type() -> None:
    world = _world()
    idr = world.var("an_idr", "struct idr")
    with pytest.raises(LiveKernelError, match=r"xa_for_each\(\) takes a struct xarray or a struct"):
        list(xa_for_each(idr))
    with pytest.raises(
        LiveKernelError, match=r"idr_for_each\(\) takes a struct idr .* not the str"
    ):
        list(idr_for_each(idr.idr_rt))

"""rbtree_inorder_for_each(_entry) over trees laid out by the test: random shapes against the
in-order of their keys, and random child pointers (loops, shared subtrees, unmapped nodes)
against what the graph allows: the walk yields each node once and ends, with an error where
the graph is no tree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux import (
    LiveKernelError,
    LiveMemoryError,
    Object,
    container_of,
    rbtree_inorder_for_each,
    rbtree_inorder_for_each_entry,
)
from tests.helpers.fakelive import World
from tests.helpers.kstructs import kernel_types

BTF_ = kernel_types().btf()
SE = "struct sched_entity"
UNMAPPED = 0xFFFFC90000001000


def _world() -> World:
    return World(BTF_, {"a_timeline": "struct rb_root_cached"}, ram=1 << 20)


def _insert(world: World, root: Object, keys: list[int]) -> list[Object]:
    """Entities with vruntime ``keys``, inserted into the (unbalanced) search tree at ``root``
    in that order, equal keys to the right as the kernel's rb_add_cached() puts them."""
    made = []
    for key in keys:
        se = world.alloc(SE)
        world.set(se.vruntime, key)
        link = root.rb_node
        while link.value_():
            parent = container_of(link, SE, "run_node")
            link = parent.run_node.rb_left if key < parent.vruntime else parent.run_node.rb_right
        world.set(link, se.run_node.address_)
        made.append(se)
    return made


@given(st.lists(st.integers(0, 50), max_size=40))
@settings(max_examples=60, deadline=None)
def test_in_order_is_sorted_by_key(keys: list[int]) -> None:
    world = _world()
    timeline = world.var("a_timeline", "struct rb_root_cached")
    made = _insert(world, timeline.rb_root, keys)
    walked = list(rbtree_inorder_for_each_entry(SE, timeline, "run_node"))
    assert [se.vruntime.value_() for se in walked] == sorted(keys)
    assert sorted(se.address_ for se in walked) == sorted(se.address_ for se in made)
    nodes = list(rbtree_inorder_for_each(timeline.rb_root))
    assert [n.address_ for n in nodes] == [se.run_node.address_ for se in walked]
    assert all(n.type_name_() == "struct rb_node" for n in nodes)
    if made:  # a struct rb_node * of the root, as a node's own pointers hold
        pointer = made[0].run_node.rb_left
        world.set(pointer, timeline.rb_root.address_)
        assert pointer.deref_().address_ == timeline.rb_root.address_


# A node's child: another node, NULL, or an address that is not mapped.
_CHILD = st.one_of(st.integers(0, 7), st.sampled_from(["null", "null", "null", "unmapped"]))


@given(st.lists(st.tuples(_CHILD, _CHILD), min_size=1, max_size=8))
@settings(max_examples=300, deadline=None)
def test_any_child_graph_ends(children: list[tuple[int | str, int | str]]) -> None:
    """Random rb_left/rb_right over up to eight nodes, the first the root: when the graph from
    the root is a tree, the walk is its in-order; otherwise it ends with the error of the first
    node reached twice or that cannot be read, having yielded each node at most once."""
    world = _world()
    root = world.var("a_timeline", "struct rb_root_cached").rb_root
    nodes = [world.alloc("struct rb_node") for _ in children]

    def address(child: int | str) -> int:
        if isinstance(child, int):
            return nodes[child % len(nodes)].address_
        return 0 if child == "null" else UNMAPPED

    world.set(root.rb_node, nodes[0].address_)
    for node, (left, right) in zip(nodes, children, strict=True):
        world.set(node.rb_left, address(left))
        world.set(node.rb_right, address(right))

    def inorder(i: int, seen: list[int], out: list[int]) -> str:
        """The reference walk: recursion, with the trouble it meets first named."""
        if i in seen:
            return "twice"
        seen.append(i)
        for side, child in enumerate(children[i]):
            if child == "unmapped":
                return "unmapped"
            if isinstance(child, int):
                trouble = inorder(child % len(nodes), seen, out)
                if trouble:
                    return trouble
            if side == 0:
                out.append(nodes[i].address_)
        return ""

    expected: list[int] = []
    trouble = inorder(0, [], expected)
    walked: list[int] = []
    if not trouble:
        walked.extend(n.address_ for n in rbtree_inorder_for_each(root))
    else:
        error = LiveMemoryError if trouble == "unmapped" else LiveKernelError
        with pytest.raises(error, match="cannot be read" if trouble == "unmapped" else "visited"):
            walked.extend(n.address_ for n in rbtree_inorder_for_each(root))
    assert walked == expected  # up to the trouble, if any: each node once


def test_a_child_that_points_up_and_the_limit() -> None:
    world = _world()
    timeline = world.var("a_timeline", "struct rb_root_cached")
    made = _insert(world, timeline.rb_root, [5, 3, 8, 1])
    world.set(made[3].run_node.rb_right, made[0].run_node.address_)  # 1's right: the root
    with pytest.raises(LiveKernelError) as e:
        list(rbtree_inorder_for_each_entry(SE, timeline, "run_node"))
    assert "the rbtree of struct sched_entity.run_node at" in str(e.value)
    assert "(a_timeline)" in str(e.value)
    assert f"the rb_right of {made[3].run_node.address_:#x} leads back to" in str(e.value)
    world.set(made[3].run_node.rb_right, 0)
    assert len(list(rbtree_inorder_for_each(timeline, limit=4))) == 4
    with pytest.raises(LiveKernelError, match=r"more than 3 nodes \(limit=3\)"):
        list(rbtree_inorder_for_each(timeline, limit=3))


def test_the_wrong_type() -> None:
    world = _world()
    timeline = world.var("a_timeline", "struct rb_root_cached")
    with pytest.raises(LiveKernelError, match=r"takes a struct rb_root or a struct rb_root_cach"):
        list(rbtree_inorder_for_each(timeline.rb_root.rb_node))
    with pytest.raises(LiveKernelError, match=r"sched_entity.vruntime is a u64, not a struct rb_n"):
        list(rbtree_inorder_for_each_entry(SE, timeline, "vruntime"))

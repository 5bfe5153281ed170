"""Red-black trees (include/linux/rbtree.h), walked in order: the CFS/EEVDF runqueue's
``tasks_timeline``, hrtimer queues, the deadline class's trees.

The walk keeps its own stack of the nodes whose left subtree it is in, and never follows
``__rb_parent_color``: parent pointers and colours are the kernel's business while it
rebalances, and a tree walked from the host is only read. Each node is read once (its
children together), visited once and at most ``limit`` of them (``walk.py``): a child pointer that
leads back up the tree, or to a node already seen, is a LiveKernelError, never a hang.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from ..objects import Memory, Object
from .walk import LIMIT, Nodes, Walk, entries_of, expect, memo, nodes_of

__all__ = ["rbtree_inorder_for_each", "rbtree_inorder_for_each_entry"]

RB_ROOT, RB_ROOT_CACHED, RB_NODE = "struct rb_root", "struct rb_root_cached", "struct rb_node"
_U64 = struct.Struct("<Q")


def rbtree_inorder_for_each(root: Object, *, limit: int = LIMIT) -> Iterator[Object]:
    """The ``struct rb_node`` nodes of ``root`` (a ``struct rb_root`` or ``struct
    rb_root_cached``, or a pointer to one), in order: leftmost first; at most ``limit`` of
    them::

        rq = live.per_cpu("runqueues", 0)
        queued = sum(1 for _ in rbtree_inorder_for_each(rq.cfs.tasks_timeline))
    """
    root = _root(root, "rbtree_inorder_for_each")
    walk: Nodes = lambda what: _inorder(root, what, limit)  # noqa: E731
    return nodes_of(root, "rbtree", RB_NODE, walk, "rbtree_inorder_for_each")


def rbtree_inorder_for_each_entry(
    type: str | int, root: Object, member: str, *, limit: int = LIMIT
) -> Iterator[Object]:
    """The ``type`` entries linked through their ``member`` (a ``struct rb_node``) in the tree
    ``root``, in order; at most ``limit`` of them::

        rq = live.per_cpu("runqueues", 0)
        timeline = rq.cfs.tasks_timeline
        for se in rbtree_inorder_for_each_entry("struct sched_entity", timeline, "run_node"):
            print(se.vruntime.value_())  # CFS/EEVDF's queue on CPU 0, leftmost first
    """
    root = _root(root, "rbtree_inorder_for_each_entry")
    walk: Nodes = lambda what: _inorder(root, what, limit)  # noqa: E731
    return entries_of(type, root, member, "rbtree", RB_NODE, walk, "rbtree_inorder_for_each_entry")


def _root(root: Object, helper: str) -> Object:
    found = expect(root, helper, RB_ROOT, RB_ROOT_CACHED)
    cached = found.prog_.real_type(found.type_id_).name == "rb_root_cached"
    return found.rb_root if cached else found


def _offsets(kernel: Memory) -> tuple[int, int, int]:
    btf = kernel.btf
    return (
        btf.offsetof(RB_NODE, "rb_left"),
        btf.offsetof(RB_NODE, "rb_right"),
        btf.offsetof(RB_ROOT, "rb_node"),
    )


def _inorder(root: Object, what: Callable[[], str], limit: int) -> Iterator[int]:
    kernel = root.prog_
    walk = Walk(kernel, what, limit)
    left_at, right_at, node_at = memo(kernel, "rbtree", lambda: _offsets(kernel))
    span = max(left_at, right_at) + 8
    node = walk.read_u64(root.address_ + node_at, "the root")
    via = "the root's rb_node"
    stack: list[tuple[int, int]] = []  # (node, its right child): the path to come back up
    while True:
        while node:
            walk.visit(node, via)
            raw = walk.read(node, span, f"the node at {node:#x} ({via})")
            left, right = _U64.unpack_from(raw, left_at)[0], _U64.unpack_from(raw, right_at)[0]
            stack.append((node, right))
            node, via = left, f"the rb_left of {node:#x}"
        if not stack:
            return
        node, right = stack.pop()
        yield node
        node, via = right, f"the rb_right of {node:#x}"

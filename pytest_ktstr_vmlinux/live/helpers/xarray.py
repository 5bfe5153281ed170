"""XArrays (include/linux/xarray.h), and the radix trees they replaced in 4.20, read as the
kernel's ``xa_load()`` and ``xa_for_each()`` read them.

``xa_head`` is NULL (empty), an entry (when only index 0 is used), or a node: an internal entry
(low bits ``10``) above 4096, the node's address + 2. A node's ``slots`` (XA_CHUNK_SIZE of them:
64, or 16 with CONFIG_BASE_SMALL; the BTF array's length says which) each cover ``1 << shift``
indices; ``shift`` is a multiple of XA_CHUNK_SHIFT, and a child's is its parent's less
XA_CHUNK_SHIFT, down to 0. A slot holds NULL, an entry (a pointer, or an odd value entry), a
node, a sibling (internal entry ``n`` below XA_CHUNK_SIZE - 1: the rest of a multi-index
entry whose first slot is ``n``), XA_RETRY_ENTRY (a node being freed) or XA_ZERO_ENTRY (an
index reserved, which reads as NULL). Radix trees before 4.20 (``struct radix_tree_root``,
``rnode``) mark internal entries with low bits ``01``: a node is the entry - 1, a sibling points
into its own node's slots, and the retry entry is 1.

The bound: a node's shift must be its parent's less XA_CHUNK_SHIFT, so a node that points to
itself or an ancestor is refused and the depth is at most 64 / XA_CHUNK_SHIFT; each node is
visited once, at most ``limit`` of them (``walk.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ..errors import LiveKernelError
from ..objects import Memory, Object
from .walk import LIMIT, Walk, expect, memo, where

__all__ = ["xa_for_each", "xa_is_value", "xa_is_zero", "xa_load", "xa_to_value"]

XA_RETRY_ENTRY = 256 << 2 | 2  # xa_mk_internal(256)
XA_ZERO_ENTRY = 257 << 2 | 2  # xa_mk_internal(257)
_NODE_MIN = 4096  # xa_is_node(): internal entries above this are nodes
EMPTY, ENTRY, NODE, SIBLING, RETRY, ZERO, BAD = range(7)


class Layout(NamedTuple):
    """Where an XArray's (or radix tree's) head is, and its nodes' shift and slots."""

    xarray: bool  # an XArray (4.20), not a radix tree
    head_at: int
    shift_at: int
    slots_at: int
    slot_tid: int
    chunk: int


class Tree:
    """One XArray (or pre-4.20 radix tree), as the walks read it."""

    def __init__(
        self, xa: Object, helper: str, limit: int, what: Callable[[], str] | None = None
    ) -> None:
        xa = expect(xa, helper, "struct xarray", "struct radix_tree_root")
        kernel = self.kernel = xa.prog_
        name = kernel.real_type(xa.type_id_).name
        layout = memo(kernel, ("xarray", name), lambda: _layout(kernel, name, helper))
        self.xarray, head_at, self.shift_at, self.slots_at, self.slot_tid, self.chunk = layout
        self.head_at = xa.address_ + head_at
        self.chunk_shift = self.chunk.bit_length() - 1
        kind = "XArray" if self.xarray else "radix tree"
        named = what or (lambda: f"the {kind} at {where(kernel, xa.address_)}")
        self.walk = Walk(kernel, named, limit)

    def kind(self, entry: int, slots: int) -> tuple[int, int]:
        """What ``entry`` is, in a node whose slots start at ``slots`` (-1 for the head), and
        its number: the node's address, the sibling's canonical slot."""
        if entry == 0:
            return EMPTY, 0
        if self.xarray:
            if entry & 3 != 2:
                return ENTRY, entry
            if entry > _NODE_MIN:
                return NODE, entry - 2
            if entry >> 2 < self.chunk - 1 and slots >= 0:
                return SIBLING, entry >> 2
            return {XA_RETRY_ENTRY: RETRY, XA_ZERO_ENTRY: ZERO}.get(entry, BAD), entry
        if entry & 3 != 1:
            return ENTRY, entry
        if entry == 1:
            return RETRY, entry
        target = entry - 1
        if 0 <= slots <= target < slots + 8 * self.chunk:
            return (SIBLING, (target - slots) // 8) if (target - slots) % 8 == 0 else (BAD, entry)
        return NODE, target

    def shift(self, node: int, expected: int | None, via: str) -> int:
        """The node's shift, checked against what its place in the tree requires."""
        self.walk.visit(node, via)
        shift = self.walk.read(node + self.shift_at, 1, f"the node at {node:#x} ({via})")[0]
        if expected is None:
            if shift % self.chunk_shift or shift >= 64:
                raise self.walk.fail(
                    f"the top node at {node:#x} has shift {shift}, not a multiple of"
                    f" {self.chunk_shift} below 64: not a node"
                )
        elif shift != expected:
            raise self.walk.fail(
                f"the node at {node:#x} ({via}) has shift {shift} where {expected} belongs: a"
                " node that points back up the tree, or no node at all"
            )
        return shift

    def slots(self, node: int) -> tuple[int, ...]:
        raw = self.walk.read(node + self.slots_at, 8 * self.chunk, f"the node at {node:#x}")
        return struct.unpack(f"<{self.chunk}Q", raw)

    def entries(self, advanced: bool) -> Iterator[tuple[int, int, int]]:
        """(index, slot address, entry) of every entry, in index order; a multi-index entry
        once, at its first index; retry and zero entries only when ``advanced``."""
        entry = self.walk.read_u64(self.head_at, "the head")
        kind, number = self.kind(entry, -1)
        if kind == NODE:
            yield from self._node(number, 0, None, "the head", advanced)
        elif kind == ENTRY or (advanced and kind in (RETRY, ZERO)):
            yield 0, self.head_at, entry
        elif kind in (SIBLING, BAD):
            raise self.walk.fail(f"the head holds {entry:#x}, an internal entry that is no node")

    def _node(
        self, node: int, base: int, expected: int | None, via: str, advanced: bool
    ) -> Iterator[tuple[int, int, int]]:
        shift = self.shift(node, expected, via)
        at = node + self.slots_at
        for i, entry in enumerate(self.slots(node)):
            kind, number = self.kind(entry, at)
            index = base + (i << shift)
            if kind == NODE:
                here = f"slot {i} of the node at {node:#x}"
                if shift == 0:
                    raise self.walk.fail(f"{here} (shift 0, a leaf) holds a node, {entry:#x}")
                yield from self._node(number, index, shift - self.chunk_shift, here, advanced)
            elif kind == ENTRY or (advanced and kind in (RETRY, ZERO)):
                yield index, at + 8 * i, entry
            elif kind == SIBLING and number >= i:
                raise self.walk.fail(
                    f"slot {i} of the node at {node:#x} is a sibling of slot {number}, which"
                    " does not come before it"
                )
            elif kind == BAD:
                raise self.walk.fail(
                    f"slot {i} of the node at {node:#x} holds {entry:#x}, an internal entry"
                    " that no XArray stores"
                )

    def load(self, index: int) -> tuple[int, int, int] | None:
        """(slot address, entry, kind) of ``index``'s entry, as ``xa_load()`` descends."""
        at, expected, via = self.head_at, None, "the head"
        entry = self.walk.read_u64(at, via)
        kind, number = self.kind(entry, -1)
        while kind == NODE:
            node = number
            shift = self.shift(node, expected, via)
            if expected is None and index >> shift >= self.chunk:
                return None  # beyond what the top node covers
            slots, offset = node + self.slots_at, index >> shift & (self.chunk - 1)
            at, via = slots + 8 * offset, f"slot {offset} of the node at {node:#x}"
            entry = self.walk.read_u64(at, via)
            kind, number = self.kind(entry, slots)
            if kind == SIBLING:
                at, via = slots + 8 * number, f"slot {number} of the node at {node:#x}"
                entry = self.walk.read_u64(at, via)
                kind, number = self.kind(entry, slots)
            if kind == NODE and shift == 0:
                raise self.walk.fail(f"{via} (shift 0, a leaf) holds a node, {entry:#x}")
            expected = shift - self.chunk_shift
        if kind == EMPTY or (at == self.head_at and index != 0):
            return None
        if kind in (SIBLING, BAD):
            raise self.walk.fail(f"{via} holds {entry:#x}, an internal entry that is no node")
        return at, entry, kind


def _layout(kernel: Memory, name: str, helper: str) -> Layout:
    btf = kernel.btf
    xarray = name == "xarray"
    try:
        head_at = btf.offsetof(f"struct {name}", "xa_head" if xarray else "rnode")
        node = btf.type("struct xa_node" if xarray else "struct radix_tree_node").id
        slots = btf.member(node, "slots")
        shift_at = btf.offsetof(node, "shift")
    except KeyError as e:
        raise LiveKernelError(f"{helper}(): {e.args[0] if e.args else e}") from None
    chunk = btf.sizeof(slots.type_id) // 8
    if chunk < 2 or chunk & (chunk - 1):
        raise LiveKernelError(f"{helper}(): a node with {chunk} slots is no XArray's")
    slot_tid = kernel.real_type(slots.type_id).target or 0
    return Layout(xarray, head_at, shift_at, slots.bit_offset // 8, slot_tid, chunk)


def xa_for_each(
    xa: Object, *, advanced: bool = False, limit: int = LIMIT
) -> Iterator[tuple[int, Object]]:
    """(index, slot) of every entry of ``xa`` (a ``struct xarray``, a ``struct
    radix_tree_root``, or a pointer to one), in index order; the slot is a ``void *`` Object
    whose ``value_()`` is the entry. A multi-index entry comes once, at its first index.
    ``advanced`` also yields retry and zero entries, as the kernel's advanced API sees them.
    At most ``limit`` nodes are walked::

        for index, entry in xa_for_each(mapping.i_pages):  # a struct address_space's
            if xa_is_value(entry):
                print(index, "shadow", xa_to_value(entry))  # of an evicted page
            else:
                print(index, hex(entry.value_()))  # a struct folio *
    """
    tree = Tree(xa, "xa_for_each", limit)
    for index, at, _ in tree.entries(advanced):
        yield index, Object(tree.kernel, tree.slot_tid, at, fixed=False)


def xa_load(xa: Object, index: int, *, advanced: bool = False) -> Object | None:
    """The slot holding ``index``'s entry, as in ``xa_for_each``, or None when there is none
    (or a zero or retry entry, unless ``advanced``)::

        slot = xa_load(mapping.i_pages, 0)  # the first page's entry, or None
    """
    tree = Tree(xa, "xa_load", LIMIT)
    found = tree.load(index)
    if found is None or (found[2] in (RETRY, ZERO) and not advanced):
        return None
    return Object(tree.kernel, tree.slot_tid, found[0], fixed=False)


def xa_is_value(entry: Object) -> bool:
    """Whether the entry (a slot from ``xa_for_each`` or ``xa_load``) is a value entry (an
    integer stored with ``xa_mk_value()``), not a pointer::

        values = {i: xa_to_value(e) for i, e in xa_for_each(xa) if xa_is_value(e)}
    """
    return bool(int(entry.value_()) & 1)


def xa_to_value(entry: Object) -> int:
    """The integer a value entry stores (one that ``xa_is_value`` accepts; of a pointer,
    nothing meaningful)::

        entry = xa_load(xa, 3)
        number = xa_to_value(entry) if entry is not None and xa_is_value(entry) else None
    """
    return int(entry.value_()) >> 1


def xa_is_zero(entry: Object) -> bool:
    """Whether the entry is XA_ZERO_ENTRY (reserved, reads as NULL), which only
    ``advanced`` walks yield::

        reserved = [i for i, e in xa_for_each(xa, advanced=True) if xa_is_zero(e)]
    """
    return int(entry.value_()) == XA_ZERO_ENTRY

"""IDRs (include/linux/idr.h): an ID to pointer map, built on a radix tree since 4.11 and so
on an XArray since 4.20 (``idr_rt``); BPF programs (``prog_idr``), maps (``map_idr``) and
every PID namespace's PIDs live in one.

IDs are the tree's indices plus ``idr_base`` (4.16; 0 before, and for most IDRs). The IDR
allocates an ID before it stores the pointer, so an ID may show a NULL for a moment: it is
skipped, as the kernel's ``idr_for_each()`` skips it. The IDRs before 4.11 (layers of
``struct idr_layer``) are not read: a LiveKernelError says so.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import LiveKernelError
from ..objects import Object
from .walk import LIMIT, expect, field, resolve, where
from .xarray import ENTRY, Tree

__all__ = ["idr_find", "idr_for_each", "idr_for_each_entry"]

IDR = "struct idr"


def idr_for_each(idr: Object, *, limit: int = LIMIT) -> Iterator[tuple[int, Object]]:
    """(id, slot) of every pointer in ``idr`` (a ``struct idr`` or a pointer to one), in ID
    order; the slot is a ``void *`` Object whose ``value_()`` is the pointer; at most
    ``limit`` nodes are walked::

        for id, slot in idr_for_each(live.object("map_idr", "struct idr")):
            print(id, hex(slot.value_()))  # each BPF map's ID and struct bpf_map *
    """
    tree, base = _tree(idr, "idr_for_each", limit)
    for index, at, _ in tree.entries(advanced=False):
        yield base + index, Object(tree.kernel, tree.slot_tid, at, fixed=False)


def idr_for_each_entry(
    idr: Object, type: str | int, *, limit: int = LIMIT
) -> Iterator[tuple[int, Object]]:
    """(id, entry) for every pointer in ``idr``, the entry being the ``type`` it points to::

        progs = live.object("prog_idr", "struct idr")
        for id, prog in idr_for_each_entry(progs, "struct bpf_prog"):
            print(id, prog.aux.name.string_())

    An ID allocated but holding no pointer yet is skipped; at most ``limit`` nodes are walked.
    """
    tree, base = _tree(idr, "idr_for_each_entry", limit)
    tid = resolve(tree.kernel, type, "idr_for_each_entry")
    for index, _, entry in tree.entries(advanced=False):
        yield base + index, Object(tree.kernel, tid, entry, fixed=False)


def idr_find(idr: Object, id: int) -> Object | None:
    """The slot holding ``id``'s pointer (as in ``idr_for_each``), or None when the ID is not
    allocated or holds no pointer yet::

        slot = idr_find(live.object("prog_idr", "struct idr"), 1)  # BPF program 1's
    """
    tree, base = _tree(idr, "idr_find", LIMIT)
    if id < base:
        return None
    found = tree.load(id - base)
    if found is None or found[2] != ENTRY:
        return None
    return Object(tree.kernel, tree.slot_tid, found[0], fixed=False)


def _tree(idr: Object, helper: str, limit: int) -> tuple[Tree, int]:
    idr = expect(idr, helper, IDR)
    rt = field(idr, "idr_rt")
    if rt is None:
        raise LiveKernelError(
            f"{helper}(): the {idr.type_name_()} at {idr.address_:#x} has no idr_rt: an IDR"
            " of layers (before Linux 4.11), which is not read"
        )
    base = field(idr, "idr_base")  # 4.16
    kernel = idr.prog_
    tree = Tree(rt, helper, limit, lambda: f"the IDR at {where(kernel, idr.address_)}")
    return tree, 0 if base is None else int(base.value_())

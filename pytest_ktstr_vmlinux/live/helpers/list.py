"""Linked lists (include/linux/list.h): ``struct list_head`` rings and ``struct hlist_head``
chains, named as the kernel and drgn name their walks.

A ``list_head`` ring ends when it comes back to its head; an ``hlist`` chain ends at NULL.
Each walk is bounded (``walk.py``): a ring whose next pointers close a loop that misses the head,
a NULL next in a ring, a deleted entry's LIST_POISON, or more than ``limit`` nodes is a
LiveKernelError naming the list and the node where it went wrong, never a hang. A node's next
pointer is read before the node is yielded (as ``list_for_each_safe()`` does), so a node that
cannot be read is reported as the step that led to it. What is yielded is the node (or entry)
itself, an Object at its address, as ``container_of`` gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..objects import Memory, Object
from .walk import LIMIT, Nodes, Walk, entries_of, expect, memo, nodes_of

__all__ = [
    "hlist_empty",
    "hlist_for_each",
    "hlist_for_each_entry",
    "list_empty",
    "list_for_each",
    "list_for_each_entry",
]

LIST_HEAD, HLIST_HEAD, HLIST_NODE = "struct list_head", "struct hlist_head", "struct hlist_node"


def list_empty(head: Object) -> bool:
    """Whether the ``struct list_head`` ring ``head`` (or a pointer to one) has no entries::

        list_empty(live["init_task"].children)  # False: init and kthreadd

    Only the head's ``next`` is read.
    """
    head = expect(head, "list_empty", LIST_HEAD)
    kernel = head.prog_
    return kernel.read_u64(head.address_ + _offset(kernel, LIST_HEAD, "next")) == head.address_


def list_for_each(head: Object, *, limit: int = LIMIT) -> Iterator[Object]:
    """The ``struct list_head`` nodes of the ring ``head`` (or a pointer to one), head
    excluded, in ``next`` order, each an Object at the node (``container_of`` finds its
    entry); at most ``limit`` of them::

        for node in list_for_each(live["init_task"].children):
            child = container_of(node, "struct task_struct", "sibling")
    """
    head = expect(head, "list_for_each", LIST_HEAD)
    return nodes_of(head, "list", LIST_HEAD, lambda what: _ring(head, what, limit), "list_for_each")


def list_for_each_entry(
    type: str | int, head: Object, member: str, *, limit: int = LIMIT
) -> Iterator[Object]:
    """The ``type`` entries linked through their ``member`` (a ``struct list_head``) on the
    ring ``head`` (or a pointer to one), in ``next`` order; at most ``limit`` of them::

        init = live["init_task"]
        for task in list_for_each_entry("struct task_struct", init.tasks, "tasks"):
            print(task.pid.value_(), task.comm.string_())  # each thread group's leader
    """
    head = expect(head, "list_for_each_entry", LIST_HEAD)
    walk: Nodes = lambda what: _ring(head, what, limit)  # noqa: E731
    return entries_of(type, head, member, "list", LIST_HEAD, walk, "list_for_each_entry")


def hlist_empty(head: Object) -> bool:
    """Whether the ``struct hlist_head`` chain ``head`` (or a pointer to one) is empty::

        hlist_empty(find_task(live, 1).thread_pid.tasks[0])  # False: the task has its PID

    Only the head's ``first`` is read.
    """
    head = expect(head, "hlist_empty", HLIST_HEAD)
    kernel = head.prog_
    return kernel.read_u64(head.address_ + _offset(kernel, HLIST_HEAD, "first")) == 0


def hlist_for_each(head: Object, *, limit: int = LIMIT) -> Iterator[Object]:
    """The ``struct hlist_node`` nodes of the chain ``head`` (or a pointer to one), from its
    ``first`` to NULL; at most ``limit`` of them::

        pid = find_task(live, 1).thread_pid  # a struct pid * (4.19 and later)
        for node in hlist_for_each(pid.tasks[0]):
            task = container_of(node, "struct task_struct", "pid_links[0]")
    """
    head = expect(head, "hlist_for_each", HLIST_HEAD)
    walk: Nodes = lambda what: _chain(head, what, limit)  # noqa: E731
    return nodes_of(head, "hlist", HLIST_NODE, walk, "hlist_for_each")


def hlist_for_each_entry(
    type: str | int, head: Object, member: str, *, limit: int = LIMIT
) -> Iterator[Object]:
    """The ``type`` entries linked through their ``member`` (a ``struct hlist_node``) on the
    chain ``head`` (or a pointer to one); at most ``limit`` of them::

        pid = find_task(live, 1).thread_pid  # a struct pid * (4.19 and later)
        for task in hlist_for_each_entry("struct task_struct", pid.tasks[0], "pid_links[0]"):
            print(task.comm.string_())
    """
    head = expect(head, "hlist_for_each_entry", HLIST_HEAD)
    walk: Nodes = lambda what: _chain(head, what, limit)  # noqa: E731
    return entries_of(type, head, member, "hlist", HLIST_NODE, walk, "hlist_for_each_entry")


def _offset(kernel: Memory, struct: str, member: str) -> int:
    return memo(kernel, ("offset", struct, member), lambda: kernel.btf.offsetof(struct, member))


def _ring(head: Object, what: Callable[[], str], limit: int) -> Iterator[int]:
    return ring(head.prog_, head.address_, what, limit)


def ring(kernel: Memory, start: int, what: Callable[[], str], limit: int) -> Iterator[int]:
    """Addresses of the nodes of the ring whose head is at ``start``, from its next until
    ``start`` comes round again; each node's next is read before the node is yielded, so
    every node yielded could be read."""
    walk = Walk(kernel, what, limit)
    next_at = _offset(kernel, LIST_HEAD, "next")
    via = "the head's next"
    node = walk.read_u64(start + next_at, via)
    while node != start:
        if node == 0:
            raise walk.fail(
                f"{via} is NULL after {len(walk.seen)} nodes: the ring is broken (or the head"
                " was never initialised)"
            )
        walk.visit(node, via)
        following = walk.read_u64(node + next_at, f"node {len(walk.seen)} at {node:#x} ({via})")
        yield node
        via, node = f"the next of node {len(walk.seen)} at {node:#x}", following


def _chain(head: Object, what: Callable[[], str], limit: int) -> Iterator[int]:
    """Addresses of an hlist's nodes, from ``head.first`` to NULL, each read before it is
    yielded."""
    kernel = head.prog_
    walk = Walk(kernel, what, limit)
    next_at = _offset(kernel, HLIST_NODE, "next")
    via = "the head's first"
    node = walk.read_u64(head.address_ + _offset(kernel, HLIST_HEAD, "first"), via)
    while node:
        walk.visit(node, via)
        following = walk.read_u64(node + next_at, f"node {len(walk.seen)} at {node:#x} ({via})")
        yield node
        via, node = f"the next of node {len(walk.seen)} at {node:#x}", following

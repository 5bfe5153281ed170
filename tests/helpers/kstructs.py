"""The kernel structs the helpers walk, declared as C (cdecl.py) in the shapes releases gave
them, and builders that lay them out in a World (fakelive.py) as the kernel would: list rings,
XArrays (multi-index, value, retry and zero entries), tasks with threads and PIDs.

The variants are the version differences the helpers must handle: ``state`` (``__state`` from
5.14), ``cpu`` (``task``: task->cpu 4.9-5.15, ``thread_info``: 5.16+, ``stack``: no
THREAD_INFO_IN_TASK, ``none``: no SMP), ``pid_links`` (4.19; ``pids[].node`` before),
``pid_idr`` (PIDs in an IDR, 4.15), ``radix`` (an IDR on a pre-4.20 radix tree), ``chunk``
(XA_CHUNK_SIZE 64, or 16 with CONFIG_BASE_SMALL).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from pytest_ktstr_vmlinux.live.objects import Object
from tests.helpers.cdecl import CTypes
from tests.helpers.fakelive import World

PIDTYPES = {"PIDTYPE_PID": 0, "PIDTYPE_TGID": 1, "PIDTYPE_PGID": 2, "PIDTYPE_SID": 3}


def kernel_types(
    *,
    state: str = "__state",
    cpu: str = "thread_info",
    radix: bool = False,
    chunk: int = 64,
    pid_links: bool = True,
    pid_idr: bool = True,
) -> CTypes:
    t = CTypes()
    t.struct("list_head", [("next", "struct list_head *"), ("prev", "struct list_head *")])
    t.struct("hlist_head", [("first", "struct hlist_node *")])
    t.struct("hlist_node", [("next", "struct hlist_node *"), ("pprev", "struct hlist_node **")])
    t.struct("cpumask", [("bits", "unsigned long[2]")])
    info = [("flags", "unsigned long")] + ([("cpu", "u32")] if cpu != "none" else [])
    t.struct("thread_info", info)
    t.struct("rb_node", [("__rb_parent_color", "unsigned long"), ("rb_right", "struct rb_node *"),
                         ("rb_left", "struct rb_node *")])  # fmt: skip
    t.struct("rb_root", [("rb_node", "struct rb_node *")])
    t.struct("rb_root_cached", [("rb_root", "struct rb_root"), ("rb_leftmost", "struct rb_node *")])
    t.struct("sched_entity", [("load", "u64"), ("run_node", "struct rb_node"), ("vruntime", "u64")])
    t.struct("signal_struct", [("nr_threads", "int"), ("thread_head", "struct list_head")])
    task: list[tuple[str, str]] = []
    task += [("thread_info", "struct thread_info")] if cpu in ("thread_info", "none") else []
    task += [(state, "long" if state == "state" else "unsigned int"), ("stack", "void *")]
    task += [("cpu", "unsigned int")] if cpu == "task" else []
    task += [("se", "struct sched_entity"), ("tasks", "struct list_head"), ("exit_state", "int"),
             ("pid", "int"), ("tgid", "int"), ("signal", "struct signal_struct *"),
             ("thread_node", "struct list_head"),
             ("pid_links", "struct hlist_node[4]") if pid_links else ("pids", "struct pid_link[4]"),
             ("comm", "char[16]")]  # fmt: skip
    t.struct("pid_link", [("node", "struct hlist_node"), ("pid", "struct pid *")])
    t.struct("task_struct", task)
    t.struct("cfs_rq", [("nr_running", "unsigned int"),
                        ("tasks_timeline", "struct rb_root_cached")])  # fmt: skip
    t.struct("rq", [("cpu", "int"), ("curr", "struct task_struct *"),
                    ("idle", "struct task_struct *"), ("cfs", "struct cfs_rq")])  # fmt: skip
    t.var("runqueues", "struct rq")
    t.enum("pid_type", {**PIDTYPES, "PIDTYPE_MAX": 4})
    t.struct("upid", [("nr", "int"), ("ns", "struct pid_namespace *")])
    t.struct("pid", [("count", "int"), ("level", "unsigned int"),
                     ("tasks", "struct hlist_head[4]"), ("numbers", "struct upid[1]")])  # fmt: skip
    slots = f"void *[{chunk}]"
    if radix:
        t.struct("radix_tree_root", [("gfp_mask", "unsigned int"),
                                     ("rnode", "struct radix_tree_node *")])  # fmt: skip
        t.struct("radix_tree_node", [("shift", "u8"), ("offset", "u8"), ("count", "u8"),
                 ("exceptional", "u8"), ("parent", "struct radix_tree_node *"),
                 ("root", "struct radix_tree_root *"), ("private_list", "struct list_head"),
                 ("slots", slots), ("tags", "unsigned long[3]")])  # fmt: skip
        root = "struct radix_tree_root"
    else:
        t.struct("xarray", [("xa_lock", "unsigned int"), ("xa_flags", "unsigned int"),
                            ("xa_head", "void *")])  # fmt: skip
        t.struct("xa_node", [("shift", "u8"), ("offset", "u8"), ("count", "u8"),
                 ("nr_values", "u8"), ("parent", "struct xa_node *"), ("array", "struct xarray *"),
                 ("private_list", "struct list_head"), ("slots", slots),
                 ("marks", "unsigned long[3]")])  # fmt: skip
        root = "struct xarray"
    t.struct("idr", [("idr_rt", root), ("idr_base", "unsigned int"), ("idr_next", "unsigned int")])
    t.struct("pid_namespace", [("idr", "struct idr")] * pid_idr + [("level", "unsigned int")])
    t.struct("bpf_prog", [("pages", "u32"), ("type", "u32"), ("len", "u32")])
    return t


def ring(world: World, head: Object, nodes: list[Object]) -> None:
    """Link ``nodes`` (list_heads) into the ring at ``head``, next and prev, as list_add_tail."""
    for a, b in itertools.pairwise([head, *nodes, head]):
        world.set(a.next, b.address_)
        world.set(b.prev, a.address_)


def chain(world: World, head: Object, nodes: list[Object]) -> None:
    """Link ``nodes`` (hlist_nodes) into the hlist at ``head``."""
    world.set(head.first, nodes[0].address_ if nodes else 0)
    for a, b in zip(nodes, [*nodes[1:], None], strict=True):
        world.set(a.next, 0 if b is None else b.address_)


@dataclass
class XEntry:
    """An entry to store: ``value`` (a pointer, a value entry, or an internal entry such as
    XA_ZERO_ENTRY) at ``index`` covering 2**``order`` indices (aligned)."""

    index: int
    value: int
    order: int = 0


@dataclass(frozen=True)
class Sibling:
    """A slot that continues the multi-index entry whose first slot is ``first``."""

    first: int


@dataclass
class XNode:
    shift: int
    slots: dict[int, int | XNode | Sibling] = field(default_factory=dict)


def xa_store(world: World, xa: Object, entries: list[XEntry], *, radix: bool = False) -> None:
    """Lay ``entries`` out in the XArray (or radix tree) ``xa`` as the kernel would: the
    smallest top shift that covers the largest index, a node per chunk of slots used, a
    multi-index entry in the node whose shift its order reaches, followed by its siblings."""
    slots = "rnode" if radix else "xa_head"
    node_type = "struct radix_tree_node" if radix else "struct xa_node"
    chunk = world.btf.sizeof(world.btf.member(node_type, "slots").type_id) // 8
    bits = chunk.bit_length() - 1
    if not entries:
        world.set(xa[slots], 0)
        return
    if len(entries) == 1 and entries[0].index == 0 and entries[0].order == 0:
        world.set(xa[slots], entries[0].value)
        return
    top = 0
    while any((e.index + (1 << e.order) - 1) >> (top + bits) for e in entries) or any(
        e.order >= top + bits for e in entries
    ):
        top += bits
    root = XNode(top)
    for e in entries:
        node = root
        while e.order < node.shift:  # down to the node whose slots are this entry's size
            offset = e.index >> node.shift & (chunk - 1)
            child = node.slots.setdefault(offset, XNode(node.shift - bits))
            assert isinstance(child, XNode)
            node = child
        first = e.index >> node.shift & (chunk - 1)
        node.slots[first] = e.value
        for sibling in range(first + 1, first + (1 << (e.order - node.shift))):
            node.slots[sibling] = Sibling(first)
    world.set(xa[slots], _emit(world, root, node_type, 0, radix))


def _emit(world: World, node: XNode, node_type: str, offset: int, radix: bool) -> int:
    obj = world.alloc(node_type)
    world.set(obj.shift, node.shift)
    world.set(obj.offset, offset)
    world.set(obj.count, len(node.slots))
    for i, slot in node.slots.items():
        if isinstance(slot, XNode):
            value = _emit(world, slot, node_type, i, radix)
        elif isinstance(slot, Sibling):  # xa_mk_sibling(); a radix tree's points at the slot
            value = obj.slots[slot.first].address_ | 1 if radix else slot.first << 2 | 2
        else:
            value = slot
        world.set(obj.slots[i], value)
    return obj.address_ | (1 if radix else 2)  # node_to_entry / xa_mk_node


@dataclass
class Process:
    """A thread group: its leader's ``pid`` and ``comm``, and its other threads' IDs."""

    pid: int
    comm: str
    threads: list[int] = field(default_factory=list)


def spawn(
    world: World, init: Object, processes: list[Process], ns: Object | None = None
) -> dict[int, Object]:
    """Lay ``processes`` out as the kernel keeps them: each leader on ``init.tasks``, each
    group's threads (leader first) on its ``signal->thread_head``, and, given the PID namespace
    ``ns``, a ``struct pid`` per thread in ``ns->idr`` with the task on its
    ``tasks[PIDTYPE_PID]`` chain. Returns the tasks by ID."""
    ring(world, init.tasks, [])
    made: dict[int, Object] = {}
    pids: list[XEntry] = []
    leaders = []
    for process in processes:
        signal = world.alloc("struct signal_struct")
        group = []
        for tid in [process.pid, *process.threads]:
            task = made[tid] = world.alloc("struct task_struct")
            world.set(task.pid, tid)
            world.set(task.tgid, process.pid)
            world.write(task.comm.address_, process.comm.encode()[:15] + b"\0")
            world.set(task.signal, signal.address_)
            group.append(task.thread_node)
            if ns is not None:
                pid = world.alloc("struct pid")
                world.set(pid.numbers[0].nr, tid)
                world.set(pid.numbers[0].ns, ns.address_)
                link = task.get_("pid_links[0]")
                link = task["pids[0].node"] if link is None else link
                chain(world, pid.tasks[PIDTYPES["PIDTYPE_PID"]], [link])
                pids.append(XEntry(tid, pid.address_))
        ring(world, signal.thread_head, group)
        world.set(signal.nr_threads, len(group))
        leaders.append(made[process.pid].tasks)
    ring(world, init.tasks, leaders)
    if ns is not None and ns.get_("idr") is not None:
        radix = ns.idr.idr_rt.get_("rnode") is not None
        xa_store(world, ns.idr.idr_rt, sorted(pids, key=lambda e: e.index), radix=radix)
    return made

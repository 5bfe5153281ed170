"""Tasks and PIDs (include/linux/pid.h, kernel/pid.c): every task, and the task of a PID.

``for_each_task`` walks what the kernel's ``for_each_process_thread()`` walks: the thread
group leaders on ``init_task.tasks``, and each one's threads on ``signal->thread_head``
(``thread_node``, 3.14 and later); so it yields every thread, as drgn's does, and not the idle
tasks unless asked (``init_task`` is the ring's head, CPU 0's idle task).

``find_task`` looks the PID up as ``find_task_by_pid_ns()`` does: in ``init_pid_ns``'s IDR
(4.15 and later) to its ``struct pid``, whose ``tasks[PIDTYPE_PID]`` chain holds the task
(``pid_links``, 4.19; ``pids[].node`` before). A kernel without that IDR, or whose symbols lack
``init_pid_ns``, is searched by walking every task for ``task->pid``. Each walk is bounded
(walk.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from ...formats.address import u64
from ..objects import Object
from .cpumask import for_each_online_cpu
from .idr import idr_find
from .list import list_for_each_entry
from .walk import LIMIT, Program, expect

__all__ = ["find_task", "for_each_task", "pid_task"]

TASK_STRUCT = "struct task_struct"


def for_each_task(live: Program, *, idle: bool = False, limit: int = LIMIT) -> Iterator[Object]:
    """Every task (every thread) of the kernel, as ``struct task_struct`` Objects: each
    thread group's leader, then its other threads; first each online CPU's idle task when
    ``idle``."""
    if idle:
        for cpu in for_each_online_cpu(live):
            yield live.per_cpu("runqueues", cpu).idle.deref_()
    init = live.object("init_task", TASK_STRUCT)
    for leader in list_for_each_entry(TASK_STRUCT, init.tasks, "tasks", limit=limit):
        threads = leader.signal.thread_head
        yield from list_for_each_entry(TASK_STRUCT, threads, "thread_node", limit=limit)


def find_task(live: Program, pid: int) -> Object | None:
    """The task with PID ``pid`` (in the initial PID namespace, as the host sees it: a
    thread's ID finds the thread), or None when there is none."""
    ns = None
    if "init_pid_ns" in live.symbols:
        ns = live.object("init_pid_ns", "struct pid_namespace")
    idr = None if ns is None else ns.get_("idr")
    if idr is None:
        return next((t for t in for_each_task(live) if t.pid == pid), None)
    slot = idr_find(idr, pid)
    if slot is None or not slot:
        return None
    tid = live.btf.type("struct pid").id
    return pid_task(Object(live, tid, int(slot.value_()), fixed=False), _pidtype_pid(live))


def pid_task(pid: Object, type: int) -> Object | None:
    """The first task on ``pid``'s (a ``struct pid`` or a pointer to one) ``type`` chain
    (``PIDTYPE_PID``: the task with that PID), or None."""
    pid = expect(pid, "pid_task", "struct pid")
    first = int(pid.tasks[type].first.value_())
    if not first:
        return None
    kernel = pid.prog_
    btf = kernel.btf
    member = f"pid_links[{type}]"
    if not btf.has_member(TASK_STRUCT, member):
        member = f"pids[{type}].node"  # before 4.19
    tid = btf.type(TASK_STRUCT).id
    return Object(kernel, tid, u64(first - btf.offsetof(tid, member)), fixed=False)


def _pidtype_pid(live: Program) -> int:
    try:
        return live.btf.enum_value("PIDTYPE_PID")
    except KeyError:
        return 0  # the first of enum pid_type since it was made

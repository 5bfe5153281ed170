"""Tasks and PIDs (include/linux/pid.h, kernel/pid.c): every task, and the task of a PID.

``for_each_task`` walks what the kernel's ``for_each_process_thread()`` walks: the thread
group leaders on ``init_task.tasks``, and each one's threads on ``signal->thread_head``
(``thread_node``, 3.14 and later); so it yields every thread, as drgn's does, and not the idle
tasks unless asked (``init_task`` is the ring's head, CPU 0's idle task).

``find_task`` looks the PID up as ``find_task_by_pid_ns()`` does: in ``init_pid_ns``'s IDR
(4.15 and later) to its ``struct pid``, whose ``tasks[PIDTYPE_PID]`` chain holds the task
(``pid_links``, 4.19; ``pids[].node`` before). A kernel without that IDR, or whose symbols lack
``init_pid_ns``, is searched by walking every task for ``task->pid``. Each walk is bounded
(``walk.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ...formats.address import u64
from ..errors import LiveKernelError, LiveMemoryError
from ..objects import Memory, Object
from .cpumask import for_each_online_cpu
from .idr import idr_find
from .list import ring
from .walk import LIMIT, Program, expect, field, kernel_of, memo, resolve, where

__all__ = ["find_task", "for_each_task", "pid_task"]

TASK_STRUCT = "struct task_struct"


class Tasks(NamedTuple):
    """Where the task walks' links are: task_struct's type id, its ``tasks``, ``signal`` and
    ``thread_node``, and signal_struct's ``thread_head``."""

    tid: int
    tasks: int
    signal: int
    thread_node: int
    thread_head: int


def for_each_task(live: Program, *, idle: bool = False, limit: int = LIMIT) -> Iterator[Object]:
    """Every task (every thread) of the kernel, as ``struct task_struct`` Objects: each
    thread group's leader, then its other threads; first each online CPU's idle task when
    ``idle``. Each list is walked for at most ``limit`` nodes::

        for task in for_each_task(live):
            print(task.pid.value_(), task.comm.string_(), task_state_to_char(task))
    """
    live = kernel_of(live, "for_each_task")
    if idle:
        for cpu in for_each_online_cpu(live):
            yield live.per_cpu("runqueues", cpu).idle.deref_()
    at = memo(live, "tasks", lambda: _tasks(live))
    head = live.object("init_task", TASK_STRUCT).address_ + at.tasks

    def leaders() -> str:
        return f"the list of struct task_struct.tasks at {where(live, head)}"

    for node in ring(live, head, leaders, limit):
        leader = u64(node - at.tasks)
        try:
            signal = live.read_u64(leader + at.signal)
        except LiveMemoryError as e:
            message = f"{leaders()}: the signal of the task at {leader:#x} cannot be read: {e}"
            raise LiveMemoryError(message, e.address) from None
        if not signal:
            raise LiveKernelError(f"{leaders()}: the task at {leader:#x} has a NULL signal")
        threads = signal + at.thread_head

        def group(threads: int = threads, leader: int = leader) -> str:
            return (
                f"the list of struct task_struct.thread_node at {where(live, threads)} (the"
                f" threads of the task at {leader:#x})"
            )

        for thread in ring(live, threads, group, limit):
            yield Object(live, at.tid, u64(thread - at.thread_node), fixed=False)


def _tasks(live: Program) -> Tasks:
    btf = live.btf
    try:
        tid = btf.type(TASK_STRUCT).id
        return Tasks(
            tid,
            btf.offsetof(tid, "tasks"),
            btf.offsetof(tid, "signal"),
            btf.offsetof(tid, "thread_node"),
            btf.offsetof("struct signal_struct", "thread_head"),
        )
    except KeyError as e:  # thread_head came with 3.14
        raise LiveKernelError(f"for_each_task(): {e.args[0] if e.args else e}") from None


def find_task(live: Program, pid: int) -> Object | None:
    """The task with PID ``pid`` (in the initial PID namespace, as the host sees it: a
    thread's ID finds the thread), or None when there is none::

        init = find_task(live, 1)
        init.comm.string_()  # "init"
    """
    live = kernel_of(live, "find_task")
    idr = memo(live, "init_pid_ns.idr", lambda: _pid_idr(live))
    if idr is None:
        return next((t for t in for_each_task(live) if t.pid == pid), None)
    slot = idr_find(idr, pid)
    if slot is None or not slot:
        return None
    tid = resolve(live, "struct pid", "find_task")
    pidtype = memo(live, "PIDTYPE_PID", lambda: _pidtype_pid(live))
    return pid_task(Object(live, tid, int(slot.value_()), fixed=False), pidtype)


def _pid_idr(live: Program) -> Object | None:
    """init_pid_ns's IDR, where the kernel has both (4.15 and later)."""
    if "init_pid_ns" not in live.symbols:
        return None
    return field(live.object("init_pid_ns", "struct pid_namespace"), "idr")


def pid_task(pid: Object, type: int) -> Object | None:
    """The first task on ``pid``'s (a ``struct pid`` or a pointer to one) ``type`` chain
    (``PIDTYPE_PID``: the task with that PID), or None::

        init = find_task(live, 1)
        pid_task(init.thread_pid, live.btf.enum_value("PIDTYPE_PID"))  # init itself
    """
    pid = expect(pid, "pid_task", "struct pid")
    kernel = pid.prog_
    first_at, link_at, tid = memo(kernel, ("pid_task", type), lambda: _links(kernel, type))
    first = kernel.read_u64(pid.address_ + first_at)
    return Object(kernel, tid, u64(first - link_at), fixed=False) if first else None


def _links(kernel: Memory, type: int) -> tuple[int, int, int]:
    """(the offset of ``struct pid``'s tasks[type].first, of the task's link on it, and
    task_struct's type id)."""
    btf = kernel.btf
    tid = btf.type(TASK_STRUCT).id
    member = f"pid_links[{type}]"
    if not btf.has_member(tid, member):
        member = f"pids[{type}].node"  # before 4.19
    return btf.offsetof("struct pid", f"tasks[{type}].first"), btf.offsetof(tid, member), tid


def _pidtype_pid(live: Program) -> int:
    try:
        return live.btf.enum_value("PIDTYPE_PID")
    except KeyError:
        return 0  # the first of enum pid_type since it was made

"""Helpers over the live kernel's data structures, one module per subsystem, each named as the
kernel and drgn name it: lists (``list``), tasks and PIDs (``pid``, ``sched``), CPU masks
(``cpumask``), IDRs and XArrays (``idr``, ``xarray``), red-black trees (``rbtree``). Every walk
is bounded (``walk``): a loop, a broken link or an overlong structure in guest memory is a
LiveKernelError naming the structure and where it went wrong, never a hang.
"""

from .cpumask import (
    cpumask_to_cpulist,
    for_each_cpu,
    for_each_online_cpu,
    for_each_possible_cpu,
    for_each_present_cpu,
)
from .idr import idr_find, idr_for_each, idr_for_each_entry
from .list import (
    hlist_empty,
    hlist_for_each,
    hlist_for_each_entry,
    list_empty,
    list_for_each,
    list_for_each_entry,
)
from .percpu import per_cpu_ptr
from .pid import find_task, for_each_task, pid_task
from .rbtree import rbtree_inorder_for_each, rbtree_inorder_for_each_entry
from .sched import task_cpu, task_state_to_char
from .xarray import xa_for_each, xa_is_value, xa_is_zero, xa_load, xa_to_value

__all__ = [
    "cpumask_to_cpulist",
    "find_task",
    "for_each_cpu",
    "for_each_online_cpu",
    "for_each_possible_cpu",
    "for_each_present_cpu",
    "for_each_task",
    "hlist_empty",
    "hlist_for_each",
    "hlist_for_each_entry",
    "idr_find",
    "idr_for_each",
    "idr_for_each_entry",
    "list_empty",
    "list_for_each",
    "list_for_each_entry",
    "per_cpu_ptr",
    "pid_task",
    "rbtree_inorder_for_each",
    "rbtree_inorder_for_each_entry",
    "task_cpu",
    "task_state_to_char",
    "xa_for_each",
    "xa_is_value",
    "xa_is_zero",
    "xa_load",
    "xa_to_value",
]

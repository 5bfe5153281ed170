"""Reading the running guest kernel from the host: its RAM translated through the guest's own
page tables (``translate``), the KASLR slide and physical base found in the guest (``layout``),
values typed by BTF (``objects``), and ``LiveKernel``, which puts them together (``kernel``);
walks over the kernel's lists, tasks, CPU masks, IDRs, XArrays and rbtrees (``helpers``);
``monitor`` samples per-CPU fields on a host thread into a ``Samples`` table (``sampling``).
"""

from .errors import LiveKernelError, LiveMemoryError
from .helpers import (
    cpumask_to_cpulist,
    find_task,
    for_each_cpu,
    for_each_online_cpu,
    for_each_possible_cpu,
    for_each_present_cpu,
    for_each_task,
    hlist_empty,
    hlist_for_each,
    hlist_for_each_entry,
    idr_find,
    idr_for_each,
    idr_for_each_entry,
    list_empty,
    list_for_each,
    list_for_each_entry,
    per_cpu_ptr,
    pid_task,
    rbtree_inorder_for_each,
    rbtree_inorder_for_each_entry,
    task_cpu,
    task_state_to_char,
    xa_for_each,
    xa_is_value,
    xa_is_zero,
    xa_load,
    xa_to_value,
)
from .kernel import LiveKernel
from .monitor import Sampler
from .objects import Enumerator, Object, container_of, sizeof
from .sampling import Samples

__all__ = [
    "Enumerator",
    "LiveKernel",
    "LiveKernelError",
    "LiveMemoryError",
    "Object",
    "Sampler",
    "Samples",
    "container_of",
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
    "sizeof",
    "task_cpu",
    "task_state_to_char",
    "xa_for_each",
    "xa_is_value",
    "xa_is_zero",
    "xa_load",
    "xa_to_value",
]

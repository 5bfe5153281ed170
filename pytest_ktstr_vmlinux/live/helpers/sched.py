"""Tasks as the scheduler sees them (include/linux/sched.h): the CPU a task is on, and its
state as the letter ``ps`` and /proc/PID/stat show.

Where a task's CPU is: ``task->cpu`` from 4.9 to 5.15 with CONFIG_THREAD_INFO_IN_TASK;
``task->thread_info.cpu`` with it otherwise (5.16 moved it back); ``thread_info->cpu`` at the
bottom of the task's stack without it; nowhere without SMP (CPU 0). The first that the BTF has
is the one, as drgn checks them.

The state letter is fs/proc/array.c's: ``fls((__state | exit_state) & TASK_REPORT)`` indexes
``task_state_array`` ("R (running)", "S (sleeping)", ...), read from the kernel itself when its
symbols have it, so the letters and TASK_REPORT are that release's (TASK_REPORT ends below the
first letter past "RSDTtXZP"). From 4.14 the array has a letter past TASK_REPORT, "I", for
TASK_IDLE (TASK_UNINTERRUPTIBLE | TASK_NOLOAD); TASK_RTLOCK_WAIT (5.15) and TASK_FROZEN (6.1)
show as "D". The kernel tests ``(state & TASK_IDLE) == TASK_IDLE`` since 6.1 and ``state ==
TASK_IDLE`` before; the two differ only for states combined with TASK_IDLE that kernels before
6.1 did not make (TASK_FREEZABLE came with 6.1), so the newer test is used for all. Without the
array the letters are those of 4.14 and later. The state field is ``__state`` from 5.14,
``state`` before.
"""

from __future__ import annotations

import re
import struct
import weakref

from ..errors import LiveKernelError, LiveMemoryError
from ..objects import Memory, Object
from .walk import expect, program

__all__ = ["task_cpu", "task_state_to_char"]

TASK_STRUCT = "struct task_struct"
TASK_UNINTERRUPTIBLE, TASK_NOLOAD = 0x2, 0x400
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
TASK_RTLOCK_WAIT, TASK_FROZEN = 0x1000, 0x8000  # 5.15, 6.1: reported as D
REPORTED = "RSDTtXZP"  # the letters TASK_REPORT may cover
LETTERS = "RSDTtXZPI"  # task_state_array from 4.14 on
_STATE_TEXT = re.compile(rb"[A-Za-z] \([a-z ]+\)")
_MOST_STATES = 32
_states: weakref.WeakKeyDictionary[Memory, tuple[str, int]] = weakref.WeakKeyDictionary()


def task_cpu(task: Object) -> int:
    """The CPU ``task`` (a ``struct task_struct`` or a pointer to one) is on, or last ran on::

        task_cpu(find_task(live, 1))

    Read where the kernel's release keeps it (``task->cpu``, ``task->thread_info.cpu``, or the
    ``thread_info`` at the bottom of the task's stack); 0 without SMP.
    """
    task = expect(task, "task_cpu", TASK_STRUCT)
    cpu = task.get_("cpu")
    if cpu is None:
        info = task.get_("thread_info")
        if info is None and "struct thread_info" in task.prog_.btf:
            stack = task.get_("stack")  # CONFIG_THREAD_INFO_IN_TASK=n: at the stack's bottom
            if stack is not None:
                tid = task.prog_.btf.type("struct thread_info").id
                info = Object(task.prog_, tid, int(stack.value_()), fixed=False)
        cpu = None if info is None else info.get_("cpu")
    return 0 if cpu is None else int(cpu.value_())


def task_state_to_char(task: Object) -> str:
    """The state letter /proc/PID/stat shows for ``task``: R, S, D, T, t, X, Z, P or I::

        running = [t for t in for_each_task(live) if task_state_to_char(t) == "R"]

    The letters are the kernel's own (its ``task_state_array``) when its symbols have them.
    """
    task = expect(task, "task_state_to_char", TASK_STRUCT)
    letters, report = _report(task.prog_)
    field = task.get_("__state")
    if field is None:
        field = task.state
    state = int(field.value_()) & 0xFFFFFFFF
    index = ((state | int(task.exit_state.value_())) & report).bit_length()
    if len(letters) > report.bit_length() + 1:  # a letter past TASK_REPORT: 4.14 and later
        if state & TASK_IDLE == TASK_IDLE:
            index = report.bit_length() + 1
        if state & (TASK_RTLOCK_WAIT | TASK_FROZEN):
            index = TASK_UNINTERRUPTIBLE.bit_length()
    if index >= len(letters):
        raise LiveKernelError(
            f"the task at {task.address_:#x} has state {state:#x}, beyond the {len(letters)}"
            f" states the kernel names ({letters})"
        )
    return letters[index]


def _report(kernel: Memory) -> tuple[str, int]:
    """(the state letters, TASK_REPORT) of the kernel, read once."""
    found = _states.get(kernel)
    if found is None:
        letters = _letters(kernel) or LETTERS
        last = max(i for i, c in enumerate(letters) if c in REPORTED)
        found = _states[kernel] = letters, (1 << last) - 1
    return found


def _letters(kernel: Memory) -> str:
    """The first letters of the kernel's task_state_array, "" when its symbols lack it."""
    prog = program(kernel)
    if prog is None or "task_state_array" not in prog.symbols:
        return ""
    symbol = prog.symbols.symbol("task_state_array")
    count = min(symbol.size // 8 or _MOST_STATES, _MOST_STATES)
    letters = ""
    for (pointer,) in struct.iter_unpack("<Q", prog.read(symbol.value, 8 * count)):
        try:
            text = prog.read_string(pointer, 40)
        except LiveMemoryError:
            break
        if not _STATE_TEXT.fullmatch(text):
            break
        letters += chr(text[0])
    if not letters or not any(c in REPORTED for c in letters):
        raise LiveKernelError(
            f"task_state_array at {symbol.value:#x} holds no task states ({letters!r}): the"
            " symbols do not fit this kernel"
        )
    return letters

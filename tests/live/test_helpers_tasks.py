"""for_each_task, find_task, task_cpu and task_state_to_char over tasks laid out by the test in
every shape the releases gave them (``__state``/``state``, the CPU in the task, its thread_info
or at its stack's bottom, PIDs in an IDR or not, ``pid_links`` or ``pids[].node``), read through
a real LiveKernel (tests/helpers/fakelive.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_ktstr_vmlinux import (
    LiveKernelError,
    Object,
    find_task,
    for_each_task,
    task_cpu,
    task_state_to_char,
)
from tests.helpers.fakelive import World
from tests.helpers.kstructs import Process, kernel_types, spawn

TASK = "struct task_struct"
PROCESSES = [
    Process(1, "init"),
    Process(2, "kthreadd"),
    Process(100, "app", [101, 102, 70000]),
    Process(300, "a-very-long-command-name"),
]
STATICS: dict[str, str | int] = {
    "init_task": TASK,
    "init_pid_ns": "struct pid_namespace",
    "task_state_array": 72,
}
# fs/proc/array.c's task_state_array: from 4.14, and as 4.13 and before had it (no P, no I).
MODERN = ["R (running)", "S (sleeping)", "D (disk sleep)", "T (stopped)", "t (tracing stop)",
          "X (dead)", "Z (zombie)", "P (parked)", "I (idle)"]  # fmt: skip
OLD = MODERN[:7]


def _world(statics: dict[str, str | int] = STATICS, **shape: Any) -> World:
    btf = kernel_types(**shape).btf()
    return World(btf, statics, percpu={"runqueues": "struct rq"}, ram=1 << 20)


def _spawn(world: World) -> dict[int, Object]:
    init = world.var("init_task", TASK)
    world.write(init.comm.address_, b"swapper/0\0")
    ns = None
    if "init_pid_ns" in world.live.symbols:
        ns = world.var("init_pid_ns", "struct pid_namespace")
    return spawn(world, init, PROCESSES, ns)


def _ids() -> list[int]:
    return [tid for p in PROCESSES for tid in [p.pid, *p.threads]]


@pytest.mark.parametrize(
    "shape",
    [{}, {"pid_links": False}, {"pid_idr": False}, {"radix": True}, {"state": "state"}],
    ids=["6.x", "before-4.19", "before-4.15", "radix-tree-idr", "before-5.14"],
)
def test_every_task_and_each_by_pid(shape: dict[str, Any]) -> None:
    world = _world(**shape)
    made = _spawn(world)
    live = world.live
    tasks = list(for_each_task(live))
    assert [t.pid.value_() for t in tasks] == _ids()  # leaders, each followed by its threads
    assert [t.address_ for t in tasks] == [made[tid].address_ for tid in _ids()]
    assert {t.comm.string_() for t in tasks if t.pid == 300} == {"a-very-long-com"}
    for tid in _ids():
        found = find_task(live, tid)
        assert found is not None
        assert found.address_ == made[tid].address_
        assert found.type_name_() == TASK
    for missing in (0, 3, 103, 69999, 70001, 1 << 22, 1 << 40):
        assert find_task(live, missing) is None


def test_find_task_without_init_pid_ns_walks_the_tasks() -> None:
    world = _world({k: v for k, v in STATICS.items() if k != "init_pid_ns"})
    made = _spawn(world)
    found = find_task(world.live, 101)
    assert found is not None
    assert found.address_ == made[101].address_
    assert find_task(world.live, 5) is None


def test_idle_tasks_come_first_when_asked() -> None:
    world = _world()
    _spawn(world)
    live = world.live
    init = live.object("init_task", TASK)
    other = world.alloc(TASK)
    world.write(other.comm.address_, b"swapper/1\0")
    world.set(live.per_cpu("runqueues", 0).idle, init.address_)
    world.set(live.per_cpu("runqueues", 1).idle, other.address_)
    tasks = list(for_each_task(live, idle=True))
    assert [t.comm.string_() for t in tasks[:2]] == ["swapper/0", "swapper/1"]
    assert [t.pid.value_() for t in tasks[2:]] == _ids()


def test_a_broken_thread_list_names_itself() -> None:
    world = _world()
    made = _spawn(world)
    world.set(made[102].thread_node.next, made[101].thread_node.address_)
    with pytest.raises(LiveKernelError, match=r"the list of struct task_struct.thread_node at 0x"):
        list(for_each_task(world.live))
    world.set(made[102].thread_node.next, made[70000].thread_node.address_)
    world.set(made[2].tasks.next, made[1].tasks.address_)  # leaders 1, 2, 1, ...
    with pytest.raises(LiveKernelError, match=r"task_struct.tasks at 0x[0-9a-f]+ \(init_task\+"):
        list(for_each_task(world.live))


@pytest.mark.parametrize("where", ["task", "thread_info", "stack", "none"])
def test_task_cpu_wherever_the_release_keeps_it(where: str) -> None:
    world = _world(cpu=where)
    task = _spawn(world)[100]
    if where == "task":
        world.set(task.cpu, 1)
    elif where == "thread_info":
        world.set(task.thread_info.cpu, 1)
    elif where == "stack":  # no THREAD_INFO_IN_TASK: thread_info at the bottom of the stack
        info = world.alloc("struct thread_info")
        world.set(info.cpu, 1)
        world.set(task.stack, info.address_)
    assert task_cpu(task) == (0 if where == "none" else 1)  # no SMP: CPU 0
    pointer = world.live.per_cpu("runqueues", 0).curr
    world.set(pointer, task.address_)
    assert task_cpu(pointer) == task_cpu(task)  # a struct task_struct * works as well


def _state_array(world: World, texts: list[str]) -> None:
    at = world.live.symbols["task_state_array"]
    for i, text in enumerate(texts):
        string = world.alloc("char", 32)
        world.write(string.address_, text.encode() + b"\0")
        world.write(at + 8 * i, string.address_.to_bytes(8, "little"))


# (__state, exit_state): the letter from 4.14 on, and on a kernel with the pre-4.14 array.
STATES = [
    (0x0, 0, "R", "R"),
    (0x1, 0, "S", "S"),
    (0x2, 0, "D", "D"),
    (0x104, 0, "T", "T"),  # TASK_STOPPED: TASK_WAKEKILL | __TASK_STOPPED
    (0x8, 0, "t", "t"),  # TASK_TRACED
    (0x80, 0x10, "X", "X"),  # TASK_DEAD, EXIT_DEAD
    (0x80, 0x20, "Z", "Z"),  # EXIT_ZOMBIE
    (0x40, 0, "P", "R"),  # TASK_PARKED: beyond the old TASK_REPORT
    (0x402, 0, "I", "D"),  # TASK_IDLE
    (0x2402, 0, "I", "D"),  # TASK_IDLE | TASK_FREEZABLE (6.1)
    (0x102, 0, "D", "D"),  # TASK_KILLABLE
    (0x8001, 0, "D", "S"),  # TASK_FROZEN (6.1): reported as D
    (0x1000, 0, "D", "R"),  # TASK_RTLOCK_WAIT (5.15): reported as D
    (0x200, 0, "R", "R"),  # TASK_WAKING
    (0x800, 0, "R", "R"),  # TASK_NEW
]


@pytest.mark.parametrize("array", ["modern", "none", "old"])
@pytest.mark.parametrize("field", ["__state", "state"])
def test_task_state_letters(array: str, field: str) -> None:
    statics: dict[str, str | int] = STATICS if array != "none" else {"init_task": TASK}
    world = _world(statics, state=field)
    if array != "none":
        _state_array(world, MODERN if array == "modern" else OLD)
    task = world.alloc(TASK)
    for state, exit_state, modern, old in STATES:
        world.set(task[field], state)
        world.set(task.exit_state, exit_state)
        assert task_state_to_char(task) == (old if array == "old" else modern), hex(state)


def test_a_task_state_array_that_is_not_one() -> None:
    world = _world()
    _state_array(world, ["running", "sleeping"])
    with pytest.raises(LiveKernelError, match=r"task_state_array at 0x[0-9a-f]+ holds no task st"):
        task_state_to_char(world.alloc(TASK))


def test_the_wrong_type() -> None:
    world = _world()
    made = _spawn(world)
    with pytest.raises(LiveKernelError, match=r"task_cpu\(\) takes a struct task_struct .or a p"):
        task_cpu(made[1].tasks)
    with pytest.raises(LiveKernelError, match=r"task_state_to_char\(\) takes a struct task_str"):
        task_state_to_char(made[1].signal)
    with pytest.raises(TypeError, match=r"for_each_task\(\) takes the LiveKernel .* not Object"):
        list(for_each_task(made[1]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"find_task\(\) takes the LiveKernel .* not int"):
        find_task(1, 1)  # type: ignore[arg-type]

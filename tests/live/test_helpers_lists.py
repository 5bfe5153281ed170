"""list_for_each, list_for_each_entry, list_empty and the hlist walks over memory laid out by
the test and read through a real LiveKernel (tests/helpers/fakelive.py): what they yield, and
that hostile memory (a ring that loops without coming back to its head, a node seen twice, a
NULL next, LIST_POISON, an unmapped node, an overlong list) ends every walk with an error that
names the list and the step, never a hang."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux import (
    LiveKernelError,
    LiveMemoryError,
    Object,
    hlist_empty,
    hlist_for_each,
    hlist_for_each_entry,
    list_empty,
    list_for_each,
    list_for_each_entry,
)
from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from tests.helpers.fakelive import World
from tests.helpers.kstructs import chain, kernel_types, ring

BTF_ = kernel_types().btf()
TASK = "struct task_struct"
UNMAPPED = 0xFFFFC90000001000  # vmalloc space: no page table maps it here
POISON1 = 0xDEAD000000000100


def _world(btf: BTF = BTF_) -> World:
    return World(btf, {"init_task": TASK, "a_list": "struct list_head"}, ram=1 << 20)


def _tasks(world: World, n: int) -> tuple[Object, list[Object]]:
    """init_task's ``tasks`` ring with ``n`` tasks (pid i + 1) on it."""
    init = world.var("init_task", TASK)
    tasks = [world.alloc(TASK) for _ in range(n)]
    for i, task in enumerate(tasks):
        world.set(task.pid, i + 1)
    ring(world, init.tasks, [t.tasks for t in tasks])
    return init, tasks


@given(st.integers(0, 40))
@settings(max_examples=25, deadline=None)
def test_a_ring_is_walked_in_order(n: int) -> None:
    world = _world()
    init, tasks = _tasks(world, n)
    nodes = list(list_for_each(init.tasks))
    assert [node.address_ for node in nodes] == [t.tasks.address_ for t in tasks]
    assert all(node.type_name_() == "struct list_head" and not node.fixed_ for node in nodes)
    entries = list(list_for_each_entry(TASK, init.tasks, "tasks"))
    assert [e.address_ for e in entries] == [t.address_ for t in tasks]
    assert [e.pid.value_() for e in entries] == list(range(1, n + 1))
    assert list_empty(init.tasks) == (n == 0)
    # The same ring from a pointer to its head, and by type id.
    pointer = tasks[-1].tasks.next if tasks else init.tasks.next
    assert [n.address_ for n in list_for_each(pointer)] == [t.tasks.address_ for t in tasks]
    tid = world.btf.type(TASK).id
    assert [e.address_ for e in list_for_each_entry(tid, init.tasks, "tasks")] == [
        t.address_ for t in tasks
    ]


def test_an_uninitialised_head_is_not_empty_and_not_walked() -> None:
    """A zeroed list_head (never INIT_LIST_HEAD'ed): the kernel's list_empty() says no, and a
    walk stops at the NULL at once."""
    world = _world()
    head = world.var("a_list", "struct list_head")
    assert not list_empty(head)
    with pytest.raises(LiveKernelError, match=r"a_list\).*the head's next is NULL after 0 nodes"):
        list(list_for_each(head))


def test_a_ring_that_loops_without_coming_back_to_its_head() -> None:
    world = _world()
    init, tasks = _tasks(world, 5)
    world.set(tasks[4].tasks.next, tasks[1].tasks.address_)  # 1 -> 2 -> 3 -> 4 -> 5 -> 2 ...
    walked: list[int] = []
    with pytest.raises(LiveKernelError) as e:
        walked.extend(t.pid.value_() for t in list_for_each_entry(TASK, init.tasks, "tasks"))
    assert walked == [1, 2, 3, 4, 5]  # each node once, then the error
    message = str(e.value)
    assert "the list of struct task_struct.tasks at" in message
    assert f"{init.tasks.address_:#x} (init_task+" in message
    assert f"the next of node 5 at {tasks[4].tasks.address_:#x} leads back to" in message
    assert f"{tasks[1].tasks.address_:#x}, visited before (after 5 nodes): a loop" in message


def test_a_node_that_points_to_itself() -> None:
    world = _world()
    init, tasks = _tasks(world, 2)
    world.set(tasks[0].tasks.next, tasks[0].tasks.address_)
    with pytest.raises(LiveKernelError, match=r"visited before \(after 1 nodes\): a loop"):
        list(list_for_each(init.tasks))


def test_a_null_next() -> None:
    world = _world()
    init, tasks = _tasks(world, 3)
    world.set(tasks[1].tasks.next, 0)
    with pytest.raises(LiveKernelError, match=r"the next of node 2 at 0x[0-9a-f]+ is NULL after 2"):
        list(list_for_each(init.tasks))


def test_a_deleted_entry_and_an_unmapped_node() -> None:
    world = _world()
    init, tasks = _tasks(world, 3)
    world.set(tasks[1].tasks.next, POISON1)  # list_del() while we walked
    with pytest.raises(LiveKernelError, match="0xdead000000000100, LIST_POISON: an entry was del"):
        list(list_for_each(init.tasks))
    world.set(tasks[1].tasks.next, UNMAPPED)
    with pytest.raises(
        LiveMemoryError, match=r"node 3 at 0xffffc90000001000 \(the next of node 2"
    ) as e:
        list(list_for_each(init.tasks))
    assert e.value.address == UNMAPPED
    assert "init_task+" in str(e.value)


def test_an_overlong_list_stops_at_the_limit() -> None:
    world = _world()
    init, _ = _tasks(world, 10)
    assert len(list(list_for_each(init.tasks, limit=10))) == 10
    with pytest.raises(LiveKernelError, match=r"more than 9 nodes \(limit=9\)"):
        list(list_for_each_entry(TASK, init.tasks, "tasks", limit=9))
    with pytest.raises(ValueError, match="limit"):
        list(list_for_each(init.tasks, limit=-1))


# Where a node's next may point, in a random graph of nodes: the head, a node, or trouble.
_TARGETS = st.one_of(
    st.integers(0, 7).map(lambda i: ("node", i)),
    st.sampled_from([("head", 0), ("null", 0), ("unmapped", 0), ("poison", 0)]),
)


@given(st.lists(_TARGETS, min_size=1, max_size=8), _TARGETS)
@settings(max_examples=300, deadline=None)
def test_any_next_graph_ends_as_its_simulation_says(
    nexts: list[tuple[str, int]], first: tuple[str, int]
) -> None:
    """Random next pointers over up to eight nodes: the walk yields the nodes the pointers
    visit from the head, each once, and then ends: at the head, or with the error of the first
    pointer that goes wrong. Never more than the nodes, never a hang."""
    world = _world()
    head = world.var("a_list", "struct list_head")
    nodes = [world.alloc("struct list_head") for _ in nexts]

    def address(target: tuple[str, int]) -> int:
        kind, i = target
        found = {"head": head.address_, "null": 0, "unmapped": UNMAPPED, "poison": POISON1}
        return nodes[i % len(nodes)].address_ if kind == "node" else found[kind]

    world.set(head.next, address(first))
    for node, target in zip(nodes, nexts, strict=True):
        world.set(node.next, address(target))
    expected, seen, at, outcome = [], set(), first, "done"
    while at[0] != "head":
        if at[0] in ("null", "unmapped", "poison"):
            outcome = at[0]
            break
        i = at[1] % len(nodes)
        if i in seen:
            outcome = "loop"
            break
        seen.add(i)
        expected.append(nodes[i].address_)
        at = nexts[i]
    walked: list[int] = []
    if outcome == "done":
        walked.extend(n.address_ for n in list_for_each(head))
    else:
        error = LiveMemoryError if outcome == "unmapped" else LiveKernelError
        text = {"null": "is NULL", "unmapped": "cannot be read", "poison": "LIST_POISON"}
        with pytest.raises(error, match=text.get(outcome, "visited before")):
            walked.extend(n.address_ for n in list_for_each(head))
    # An unmapped next is found when the node that holds it is read, before it is yielded.
    assert walked == expected[: len(walked)]
    assert len(walked) >= len(expected) - (outcome == "unmapped")


def test_hlists() -> None:
    world = _world()
    pid = world.alloc("struct pid")
    tasks = [world.alloc(TASK) for _ in range(3)]
    for i, task in enumerate(tasks):
        world.set(task.pid, 10 + i)
    head = pid.tasks[0]
    assert hlist_empty(head)
    assert list(hlist_for_each(head)) == []
    chain(world, head, [t.pid_links[0] for t in tasks])
    assert not hlist_empty(head)
    assert [n.address_ for n in hlist_for_each(head)] == [t.pid_links[0].address_ for t in tasks]
    found = hlist_for_each_entry(TASK, head, "pid_links[0]")
    assert [t.pid.value_() for t in found] == [10, 11, 12]
    world.set(tasks[2].pid_links[0].next, tasks[0].pid_links[0].address_)
    with pytest.raises(LiveKernelError, match=r"the hlist of struct task_struct.pid_links\[0\] at"):
        list(hlist_for_each_entry(TASK, head, "pid_links[0]"))
    with pytest.raises(LiveKernelError, match="more than 2 nodes"):
        list(hlist_for_each(head, limit=2))


def test_the_wrong_type_says_what_the_helper_takes() -> None:
    world = _world()
    init, _ = _tasks(world, 1)
    takes = r"list_for_each\(\) takes a struct list_head \(or a pointer to one\), not the struct"
    with pytest.raises(LiveKernelError, match=takes + r" task_struct at 0x[0-9a-f]+ \(init_task\)"):
        list(list_for_each(init))
    with pytest.raises(LiveKernelError, match=r"not the int at"):
        list_empty(init.pid)
    with pytest.raises(LiveKernelError, match=r"hlist_for_each\(\) takes a struct hlist_head"):
        list(hlist_for_each(init.tasks))
    with pytest.raises(TypeError, match=r"list_for_each\(\) takes an Object of struct list_head"):
        list(list_for_each(world.live))  # type: ignore[arg-type]
    with pytest.raises(LiveKernelError, match=r"task_struct.comm is a char\[16\], not a struct"):
        list(list_for_each_entry(TASK, init.tasks, "comm"))
    with pytest.raises(LiveKernelError, match="did you mean 'tasks'"):
        list(list_for_each_entry(TASK, init.tasks, "taks"))
    with pytest.raises(LiveKernelError, match="struct task_strct"):
        list(list_for_each_entry("struct task_strct", init.tasks, "tasks"))

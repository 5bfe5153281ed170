"""What the monitor's thread watches besides the runqueues, at a pace of its own: the workload's
tasks (``TaskWatch``) and sched_ext's event counters (``EventWatch``).

Both are called on every monitor tick and act only when their own interval has passed, so the
runqueues can be read at 1 kHz while tasks are looked at every 25 ms and the counters every
check interval. A task is read through views of its ``task_struct`` (slab memory, in the direct
map) taken when it was first found; the task list is walked again every ``rescan`` seconds to
find new tasks and forget gone ones, and a view whose ``pid`` no longer reads as the task's (its
memory freed and reused) is dropped at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..helpers.pid import for_each_task
from ..helpers.sched import task_cpu
from ..helpers.walk import Program
from ..objects import Object
from ..scx import SchedExt
from .events import EventSample
from .starvation import TaskSample, TaskTrack

TASK_RUNNING = 0


@dataclass(frozen=True)
class _TaskReaders:
    pid: Callable[[], int]
    state: Callable[[], int]
    on_rq: Callable[[], int]
    runtime: Callable[[], int]
    cpu: Callable[[], int]


class TaskWatch:
    """Every task alive while the monitor runs, the workload's and the kernel's own threads
    (a kworker starved by a scheduler stalls the system as surely as a starved worker; the
    idle tasks are not tasks), each looked at every ``every`` seconds: ``tracks`` by pid,
    ``looks`` taken."""

    def __init__(self, live: Program, *, every: float = 0.025, rescan: float = 0.5) -> None:
        self.live, self.every, self.rescan = live, every, rescan
        self.tracks: dict[int, TaskTrack] = {}
        self.looks = 0
        self._readers: dict[int, _TaskReaders] = {}
        self._next_look = 0.0
        self._next_scan = 0.0
        btf = live.btf
        self._state = "__state" if btf.has_member("struct task_struct", "__state") else "state"

    def tick(self, at: float) -> None:
        if at >= self._next_scan:
            self._scan()
            self._next_scan = at + self.rescan
        if at >= self._next_look:
            self._look(at)
            self._next_look = at + self.every

    def _scan(self) -> None:
        seen = set()
        for task in for_each_task(self.live):
            if int(task.exit_state):
                continue
            pid = int(task.pid)
            seen.add(pid)
            if pid not in self._readers:
                self._readers[pid] = self._readers_of(task)
            comm = task.comm.string_()  # again at every scan: exec changes it
            track = self.tracks.get(pid)
            if track is None:
                self.tracks[pid] = TaskTrack(pid, comm)
            else:
                track.comm = comm
        for gone in set(self._readers) - seen:
            del self._readers[gone]

    def _readers_of(self, task: Object) -> _TaskReaders:
        cpu = task.get_("cpu")
        if cpu is None:
            info = task.get_("thread_info")
            cpu = None if info is None else info.get_("cpu")
        return _TaskReaders(
            pid=task.pid.reader_(),
            state=task.member_(self._state).reader_(),
            on_rq=task.on_rq.reader_(),
            runtime=task.se.sum_exec_runtime.reader_(),
            cpu=cpu.reader_() if cpu is not None else lambda: task_cpu(task),
        )

    def _look(self, at: float) -> None:
        self.looks += 1
        for pid, read in list(self._readers.items()):
            if read.pid() != pid:  # the task_struct was freed and reused
                del self._readers[pid]
                continue
            runnable = read.state() == TASK_RUNNING and read.on_rq() != 0
            sample = TaskSample(at, runnable, read.runtime(), read.cpu())
            self.tracks[pid].samples.append(sample)


class EventWatch:
    """Which sched_ext scheduler is attached and its event counters of ``cpus``, summed, every
    ``every`` seconds: ``samples``; ``schedulers`` seen (by ops name); ``missing``, why the
    kernel has no counters (None when it has them)."""

    def __init__(self, scx: SchedExt, cpus: Sequence[int], *, every: float) -> None:
        self.scx, self.cpus, self.every = scx, tuple(cpus), every
        self.missing = scx.events_missing()
        self.names = scx.event_names if self.missing is None else ()
        self.samples: list[EventSample] = []
        self.schedulers: dict[int, str] = {}  # attached scheduler -> its ops name
        self._root = -1
        self._readers: dict[str, list[Callable[[], int]]] = {}
        self._next = 0.0

    def tick(self, at: float) -> None:
        """Which scheduler is attached, and (when the kernel has them) its counters."""
        if not self.scx.present or at < self._next:
            return
        self._next = at + self.every
        root = self.scx.attached()
        if root != self._root:
            self._root = root
            self._readers = self._readers_now() if root and self.missing is None else {}
            if root:
                self.schedulers[root] = self.scx.ops_name() or "?"
        totals = {name: sum(read() for read in reads) for name, reads in self._readers.items()}
        self.samples.append(EventSample(at, root, totals))

    def _readers_now(self) -> dict[str, list[Callable[[], int]]]:
        stats = [self.scx.events(cpu) for cpu in self.cpus]
        if any(s is None for s in stats):  # detached between the two reads
            return {}
        return {
            name: [s.member_(name).reader_() for s in stats if s is not None] for name in self.names
        }

"""sched_ext as the host reads it from the guest kernel's memory: ``SchedExt``.

Where things are moved between releases, so each is found through the kernel's own symbols and
BTF, never by release number:

- the state: ``scx_enable_state_var`` (an ``atomic_t`` holding an ``enum scx_enable_state``),
  what /sys/kernel/sched_ext/state prints;
- the attached scheduler: ``scx_root`` (a ``struct scx_sched *``, 6.16 and later; NULL when none
  is attached), its ``ops.name`` and ``exit_kind``; before 6.16 the one ``scx_ops``;
- the event counters (``struct scx_event_stats``: SCX_EV_SELECT_CPU_FALLBACK, ...), per CPU:
  ``scx_root->pcpu->event_stats`` (6.18 and later), ``scx_root->event_stats_cpu`` (6.16, 6.17),
  the per-CPU variable ``event_stats_cpu`` (6.15). A kernel with none of them has no counters,
  and says so: no zero is reported that was not read.

Distro BTF has no VARs for these globals, so their types are named here as the kernel declares
them; their addresses are the symbols'.
"""

from __future__ import annotations

from .errors import LiveKernelError
from .helpers.percpu import per_cpu_ptr
from .helpers.walk import Program
from .objects import Object

STATE = "scx_enable_state_var"
EVENTS = "struct scx_event_stats"


class SchedExt:
    """sched_ext in the guest kernel's memory, read from the host: its state, the attached
    scheduler and its event counters, wherever the kernel's release keeps them::

        scx = SchedExt(kernel_vm.kernel)
        if scx.present and scx.state() == "enabled":
            print(scx.ops_name(), scx.events(0).SCX_EV_SELECT_CPU_FALLBACK.value_())
    """

    def __init__(self, live: Program) -> None:
        #: The live kernel read.
        self.live = live
        symbols, btf = live.symbols, live.btf
        #: Whether the kernel has sched_ext (CONFIG_SCHED_CLASS_EXT).
        self.present = STATE in symbols and "struct scx_rq" in btf
        self._states: dict[int, str] = {}
        if self.present and "enum scx_enable_state" in btf:
            for name, value in btf.type("enum scx_enable_state").enumerators:
                self._states[value] = name.removeprefix("SCX_").lower()
        self._root_type = btf.type("struct scx_sched").id if "struct scx_sched" in btf else None

    def _require(self) -> None:
        if not self.present:
            raise LiveKernelError(
                "the guest's kernel has no sched_ext (no scx_enable_state_var, no struct"
                " scx_rq): it is built without CONFIG_SCHED_CLASS_EXT"
            )

    def state(self) -> str:
        """What /sys/kernel/sched_ext/state shows: ``disabled``, ``enabling``, ``enabled``..."""
        self._require()
        value = int(self.live.object(STATE, "atomic_t").counter)
        return self._states.get(value, f"unknown state {value}")

    def root_address(self) -> int:
        """The value of ``scx_root`` (0 when no scheduler is attached; 0 before 6.16, which
        has no scx_root)."""
        if "scx_root" not in self.live.symbols:
            return 0
        return int(self.live.read_u64(self.live.symbols["scx_root"]))

    def attached(self) -> int:
        """Which scheduler is attached, as a number that changes when another attaches:
        ``scx_root`` (6.16 and later), else ``scx_enable_seq`` while the state is enabled; 0
        when none is."""
        if not self.present:
            return 0
        if "scx_root" in self.live.symbols:
            return self.root_address()
        if self.state() != "enabled":
            return 0
        if "scx_enable_seq" in self.live.symbols:
            return int(self.live.object("scx_enable_seq", "atomic_long_t").counter) or 1
        return 1

    def root(self) -> Object | None:
        """The attached ``struct scx_sched`` (6.16 and later), None when none is attached."""
        self._require()
        address = self.root_address()
        if not address or self._root_type is None:
            return None
        return Object(self.live, self._root_type, address, fixed=False)

    def ops_name(self) -> str | None:
        """The attached scheduler's ``ops.name``, None when none is attached."""
        root = self.root()
        if root is not None:
            return root.ops.name.string_()
        if "scx_ops" in self.live.symbols and self.state() == "enabled":  # before 6.16
            return self.live.object("scx_ops", "struct sched_ext_ops").name.string_()
        return None

    @property
    def event_names(self) -> tuple[str, ...]:
        """The counters this kernel has (``struct scx_event_stats``'s members)."""
        btf = self.live.btf
        if EVENTS not in btf:
            return ()
        return tuple(m.name for m in btf.type(EVENTS).members if m.name)

    def events_missing(self) -> str | None:
        """Why this kernel has no event counters to read, or None when it has them."""
        if not self.present:
            return "the kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT)"
        btf = self.live.btf
        if EVENTS not in btf:
            return "the kernel's sched_ext has no event counters (struct scx_event_stats, 6.15+)"
        where = ("struct scx_sched", "pcpu"), ("struct scx_sched", "event_stats_cpu")
        if any(t in btf and btf.has_member(t, m) for t, m in where):
            return None
        if "event_stats_cpu" in self.live.symbols:
            return None
        return "the kernel keeps its sched_ext event counters where this reader does not look"

    def events(self, cpu: int) -> Object | None:
        """CPU ``cpu``'s ``struct scx_event_stats`` of the attached scheduler; None when none
        is attached. LiveKernelError when the kernel has no counters (events_missing())."""
        missing = self.events_missing()
        if missing is not None:
            raise LiveKernelError(f"no sched_ext event counters to read: {missing}")
        if "event_stats_cpu" in self.live.symbols and self.live.symbols.is_percpu(
            "event_stats_cpu"
        ):
            if self.state() != "enabled":  # 6.15: one set, kept across schedulers
                return None
            return self.live.per_cpu("event_stats_cpu", cpu)
        root = self.root()
        if root is None:
            return None
        pcpu = root.get_("pcpu")
        if pcpu is not None:
            return per_cpu_ptr(pcpu, cpu).event_stats
        return per_cpu_ptr(root.event_stats_cpu, cpu)

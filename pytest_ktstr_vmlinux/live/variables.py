"""The type of a kernel variable, from the best source the kernel has, checked against its symbol.

A variable's type is, in order: its BTF VAR (kernels' BTF has these for per-CPU variables
only); else what the debug vmlinux's DWARF says (the globals table,
``formats/dwarf/globaltypes.py``, a C type expression that BTF resolves); else, for a few
variables every kernel has, a type known here (``WELL_KNOWN``). The table is loaded on the first
variable BTF does not type, so a run that never reads a global pays nothing for it; a table that
cannot be made (no DWARF) is remembered with why, and said in every error it explains.

A type the user names instead is any C type expression BTF can resolve ("struct scx_sched *",
"u64[4]"), and must be as large as the symbol (.symtab's st_size): reading an 8-byte pointer as
the struct it points to would read past it silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import KernelArtifactError
from ..formats.btf.queries import BTF
from ..formats.btf.typeexpr import Array, TypeExpressionError, parse, spell
from ..formats.btf.types import BTFKeyError
from ..formats.dwarf.globaltypes import GlobalTypeError, GlobalTypes
from ..formats.symbols import KernelSymbols
from .errors import LiveKernelError

# Variables every kernel has, with types that have not changed in years: what a type comes from
# when the BTF has no VAR and there is no DWARF (a vmlinux without debug info).
WELL_KNOWN = {
    "init_task": "struct task_struct",
    "init_uts_ns": "struct uts_namespace",
    "jiffies_64": "u64",
    "jiffies": "long unsigned int",  # no DWARF: the linker script makes it an alias
    "system_state": "enum system_states",
    "nr_cpu_ids": "unsigned int",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
}
PERCPU_SECTION = ".data..percpu"
TableSource = GlobalTypes | Callable[[], GlobalTypes] | None


class VariableTypes:
    """Types of one kernel's variables: ``of(name)``, ``named(name, type)``."""

    def __init__(self, btf: BTF, symbols: KernelSymbols, table: TableSource = None) -> None:
        """``symbols`` as the vmlinux has them (link-time addresses: DWARF's); ``table`` the
        globals table, or what makes it (called once, when first needed)."""
        self.btf, self.symbols = btf, symbols
        self._source = table
        self._table: GlobalTypes | None = None
        self._why_not: str | None = None if table is not None else "none was given"
        self._lock = threading.Lock()

    @property
    def table(self) -> GlobalTypes | None:
        """The DWARF globals table, made on first use; None when there is none (``why_not``)."""
        with self._lock:
            if self._table is None and self._why_not is None:
                source = self._source
                try:
                    self._table = source() if callable(source) else source
                except KernelArtifactError as e:
                    self._why_not = str(e)
        return self._table

    @property
    def why_not(self) -> str | None:
        """Why there is no DWARF table (after ``table`` was asked for), else None."""
        return self._why_not

    def of(self, name: str) -> int:
        """The BTF type id of variable ``name``; LiveKernelError saying what this kernel has."""
        if f"var {name}" in self.btf:
            var = self.btf.type(f"var {name}")
            if var.target is not None:
                return var.target
        table, told = self.table, None
        if table is not None:
            try:
                spelled = table.type_of(name, self._address(name))
            except GlobalTypeError as e:
                told = str(e)
            else:
                return self._from_dwarf(name, spelled)
        if name in WELL_KNOWN:
            return self.btf.type(WELL_KNOWN[name]).id
        raise LiveKernelError(self._missing(name, told))

    def named(self, name: str, spec: str | int, size: int) -> int:
        """The id of type ``spec`` for variable ``name`` of ``size`` bytes (its st_size),
        LiveKernelError when BTF has no such type or its size is not the variable's."""
        try:
            tid = self.btf.type(spec).id
            found = self.btf.sizeof(tid)
        except BTFKeyError as e:
            raise LiveKernelError(str(e)) from None
        except KernelArtifactError as e:
            raise LiveKernelError(f"{name!r} cannot be read as {spec!r}: {e}") from None
        exact = self.symbols.sizes_exact
        if size and (found != size if exact else found > size):
            known = self._known_type(name)
            hint = f"its type is {known!r}" if known else f"name a type of {size} bytes"
            raise LiveKernelError(
                f"{name!r} is {size} bytes ({'its st_size' if exact else 'at most, by kallsyms'})"
                f" but {self.btf.type_name(tid)!r} is {found} bytes: {hint}"
            )
        return tid

    def static(self, name: str, filename: str) -> tuple[int, int]:
        """(index in ``symbols.all(name)``, BTF type id) of the variable ``name`` that the file
        ``filename`` (its path, or a tail of it: "dsargs.c") defines; from the DWARF table,
        which knows each static's file."""
        table = self.table
        if table is None:
            raise LiveKernelError(
                f"choosing {name!r} by file needs the DWARF globals table: {self._why_not}"
            )
        every = table.variables(name)
        found = [v for v in every if v.unit == filename or v.unit.endswith("/" + filename)]
        if len(found) != 1:
            files = ", ".join(v.unit for v in every[:8]) or "none"
            files += f", and {len(every) - 8} more" if len(every) > 8 else ""
            raise LiveKernelError(
                f"{len(found) or 'no'} variables called {name!r} are defined in a file"
                f" {filename!r}; their files: {files}"
            )
        v = found[0]
        addresses = [s.value for s in self.symbols.all(name)]
        if v.address not in addresses or v.type is None:
            why = v.problem or f"no symbol {name!r} is at its address {v.address:#x}"
            raise LiveKernelError(f"{name!r} of {v.unit}: {why}")
        return addresses.index(v.address), self._from_dwarf(name, v.type)

    def ambiguous(self, name: str, said: str) -> str:
        """The error for a name several symbols have (``said``, the symbols' own), with what
        DWARF knows of each: its file and type."""
        table = self.table
        if table is not None:
            try:
                table.type_of(name)
            except GlobalTypeError as e:
                return f"{said}; {e}; pick one with object({name!r}, filename=...)"
        return said

    # --- internals ------------------------------------------------------------------------------

    def _address(self, name: str) -> int | None:
        """The link-time address of ``name`` (DWARF's), None when several symbols have it."""
        try:
            return self.symbols[name]
        except KeyError:
            return None

    def _size(self, name: str) -> int:
        try:
            return self.symbols.symbol(name).size
        except KeyError:
            return 0

    def _from_dwarf(self, name: str, spelled: str) -> int:
        """The BTF id of DWARF's type for ``name``: an array declared ``[]`` gets its length
        from the symbol's size."""
        try:
            t = parse(spelled)
            if isinstance(t, Array) and t.length is None and self.symbols.sizes_exact:
                element = self.btf.sizeof(spell(t.element))
                size = self._size(name)
                if element and size % element == 0:
                    spelled = spell(Array(t.element, size // element))
            return self.btf.type(spelled).id
        except (BTFKeyError, TypeExpressionError, KernelArtifactError) as e:
            raise LiveKernelError(
                f"{name!r}: the DWARF of {self._table_source()} gives its type as {spelled!r},"
                f" which {self.btf.what}'s BTF cannot resolve ({e}); name a type it has"
            ) from None

    def _known_type(self, name: str) -> str | None:
        table = self.table
        if table is not None:
            try:
                return table.type_of(name, self._address(name))
            except GlobalTypeError:
                pass
        if f"var {name}" in self.btf:
            return self.btf.type_name(self.of(name))
        return None

    def _table_source(self) -> str:
        return self._table.source if self._table is not None else "the vmlinux"

    def missing(self, name: str) -> str:
        """Why ``name`` cannot be read, for a name with no symbol: the error ``of`` gives, from
        what is known already (a missing symbol does not load the DWARF table to say so)."""
        return self._missing(name, None)

    def _missing(self, name: str, told: str | None) -> str:
        """What is true of this kernel when ``name`` has no type: its BTF's VARs, its DWARF
        table (or why there is none), and whether the symbol exists at all."""
        sections = self.btf.datasecs()
        others = sum(n for s, n in sections.items() if s != PERCPU_SECTION)
        percpu = sections.get(PERCPU_SECTION, 0)
        if others:
            btf = f"its BTF has {others} VARs outside per-CPU data, none for {name!r}"
        else:
            btf = (
                f"its BTF has VARs for per-CPU variables only ({percpu}; the kernel's build asks"
                " pahole for those alone)"
            )
        parts = [btf]
        if told is not None:
            parts.append(told)
        elif self._why_not is not None:
            parts.append(f"no DWARF globals table: {self._why_not}")
        elif self._table is not None:
            try:
                parts.append(f"its DWARF says {self._table.type_of(name)!r}")
            except GlobalTypeError as e:
                parts.append(str(e))
        if name in self.symbols:
            parts.append(f"the symbol exists ({self._size(name)} bytes)")
        else:
            try:
                self.symbols[name]
            except KeyError as e:
                parts.append(str(e.args[0]))
        return (
            f"no type for variable {name!r} of {self.btf.what}: {'; '.join(parts)}."
            f" Name its type: object({name!r}, 'struct ...')"
        )

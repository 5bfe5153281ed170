"""``GlobalTypes``: the type of every global variable of a kernel, from its debug vmlinux's DWARF.

Distro BTF records per-CPU variables only, so a global's type (``scx_root`` is a ``struct
scx_sched *``) comes from DWARF. Walking a vmlinux's DWARF takes seconds
(``live/variables.py``), so it is done once per vmlinux through the artifact store and the result
kept as one artifact that a warm load maps and bisects in place, as the packed symbols are
(``formats/symbols.py``)::

    header   magic, variables n, units u, string bytes, units read, units skipped, first skip,
             DWARF versions (bit v set: a unit of version v)
    u64[n]   address      u32[n]  name       u32[n]  type (or problem)   u32[n]  unit
    u32[u]   unit names   u8[n]   flags (1: external, 2: no type, the text is why)
    strings  NUL-terminated, each once

Variables are sorted by (name bytes, address): the several statics of one name in different
files are neighbours, and the address a symbol has picks one of them. Types are C type
expressions (``btf/typeexpr.py``) that BTF resolves when a variable is read. The byte order is the
host's, and the store kind says which, so another one is simply a miss.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ...errors import KernelArtifactError
from ...regularfile import FileProblem, stable_read
from ...store.api import Store
from ...store.memory import MemoryStore
from ...store.signature import read_error
from ..btf.types import suggest
from .sections import debug_sections
from .variables import Walk

KIND = f"dwarf-globals-{sys.byteorder}"
VERSION = 1
MAGIC = b"KTGLOBL\x00"
HEADER = struct.Struct("=8s7I")
EXTERNAL, PROBLEM = 1, 2
NONE = 0xFFFFFFFF


class GlobalTypeError(KeyError):
    """No single type for a name: absent, ambiguous, or a type DWARF could not spell."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class GlobalVariable:
    """One variable of the table: ``type`` a C type expression, or None with ``problem``."""

    #: The variable's name.
    name: str
    #: Its address in the vmlinux (before KASLR moves it).
    address: int
    #: Its C type, as an expression BTF resolves (``"struct scx_sched *"``); None with ``problem``.
    type: str | None
    #: Why DWARF gives it no type that can be spelled, when it does not.
    problem: str | None
    #: The compilation unit (source file) that defines it.
    unit: str
    #: Whether it is visible outside its unit (not ``static``).
    external: bool


def build_from_vmlinux(path: Path, out: BinaryIO) -> None:
    """The store's build: walk the DWARF of ``path``, write the table."""
    shown = str(path)
    try:
        with stable_read(path, check_at_end=False) as f:
            walk = Walk(debug_sections(f, shown), f)
            found = sorted(
                walk.variables(),
                key=lambda v: (v.name.encode("utf-8", "surrogateescape"), v.address),
            )
    except FileProblem:
        raise
    except OSError as e:
        raise read_error(path, e) from None
    if walk.units and len(walk.skipped) == walk.units:
        first = next(iter(walk.skipped.values()))
        raise KernelArtifactError(f"{shown}: no unit of .debug_info could be read: {first}")
    strings = _Strings()
    units: dict[str, int] = {}
    columns = [array("Q"), array("I"), array("I"), array("I")]
    flags = bytearray()
    for v in found:
        columns[0].append(v.address)
        columns[1].append(strings.add(v.name))
        columns[2].append(strings.add(v.type if v.type is not None else v.problem or ""))
        columns[3].append(units.setdefault(v.unit, len(units)))
        flags.append((EXTERNAL if v.external else 0) | (PROBLEM if v.type is None else 0))
    unit_names = array("I", [strings.add(u) for u in units])
    first_skip = strings.add(next(iter(walk.skipped.values()))) if walk.skipped else NONE
    blob = bytes(strings.data)
    versions = sum(1 << v for v in walk.versions)
    header = HEADER.pack(
        MAGIC, len(found), len(units), len(blob), walk.units, len(walk.skipped), first_skip,
        versions,
    )  # fmt: skip
    out.write(b"".join([header, *(c.tobytes() for c in columns), unit_names.tobytes()]))
    out.write(bytes(flags) + blob)


class _Strings:
    def __init__(self) -> None:
        self.data = bytearray(b"\0")
        self.at: dict[str, int] = {"": 0}

    def add(self, text: str) -> int:
        found = self.at.get(text)
        if found is None:
            found = self.at[text] = len(self.data)
            self.data += text.encode("utf-8", "surrogateescape") + b"\0"
        return found


class GlobalTypes:
    """The globals table of one vmlinux, for the types BTF lacks (distro BTF has only per-CPU
    variables)::

        table = GlobalTypes.from_vmlinux("/usr/lib/debug/boot/vmlinux-6.1.0-56-cloud-amd64")
        table.type_of("init_task")  # "struct task_struct"
        "scx_root" in table  # a kernel with sched_ext
    """

    def __init__(self, payload: bytes | memoryview, source: str = "<globals>") -> None:
        """Wrap a table as the store holds it, without copying its columns."""
        self.source = source
        view = memoryview(payload).cast("B")
        try:
            magic, n, u, nstr, self.units_read, self.units_skipped, skip, versions = (
                HEADER.unpack_from(view)
            )
        except struct.error:
            raise self._damaged("shorter than its header") from None
        sizes = (8 * n, 4 * n, 4 * n, 4 * n, 4 * u, n, nstr)
        if magic != MAGIC or HEADER.size + sum(sizes) != len(view):
            raise self._damaged("foreign or torn")
        at = HEADER.size
        parts = []
        for size in sizes:
            parts.append(view[at : at + size])
            at += size
        self._address = parts[0].cast("Q")
        self._name, self._type, self._unit, self._units = (p.cast("I") for p in parts[1:5])
        self._flags, self._strings = parts[5], bytes(parts[6])
        if self._strings[-1:] not in (b"", b"\0"):
            raise self._damaged("strings not NUL-terminated")
        self.first_skip = self._text(skip) if skip != NONE else None
        #: The DWARF versions of the units read (a vmlinux's are all one: 5 from gcc 11 on).
        self.dwarf_versions = tuple(v for v in range(32) if versions >> v & 1)

    @classmethod
    def from_vmlinux(cls, path: str | os.PathLike[str], store: Store | None = None) -> GlobalTypes:
        """The table of ``path``'s DWARF, built once per store (on disk: once across processes
        and runs) and mapped from it; KernelArtifactError when it has no DWARF."""
        store = store if store is not None else MemoryStore()
        stored = store.get_or_build(path, KIND, VERSION, build_from_vmlinux)
        return cls(stored.map(), os.fspath(path))

    def __repr__(self) -> str:
        versions = "/".join(map(str, self.dwarf_versions))
        return f"GlobalTypes({self.source!r}, {len(self)} variables, DWARF {versions})"

    def __len__(self) -> int:
        return len(self._address)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._range(name))

    def variables(self, name: str) -> list[GlobalVariable]:
        """Every variable called ``name`` (statics of several files), by address."""
        return [self._variable(i) for i in self._range(name)]

    def type_of(self, name: str, address: int | None = None) -> str:
        """The C type of variable ``name``; of the one at ``address`` when several have the
        name (statics in several files: a symbol's address says which). GlobalTypeError says
        why there is no single answer."""
        found = self.variables(name)
        if not found:
            raise GlobalTypeError(self._missing(name))
        if address is not None:
            at = [v for v in found if v.address == address]
            if not at:
                where = ", ".join(f"{v.address:#x} ({v.unit})" for v in found)
                raise GlobalTypeError(
                    f"{self.source}: DWARF has {name!r} at {where}, the symbol is at"
                    f" {address:#x}: not the same variable"
                )
            found = at
        if len({v.address for v in found}) == 1:
            # One variable described twice (a declaration given a location, as "extern const
            # char linux_banner[]" is in 6.1): the complete description wins.
            found = [min(found, key=lambda v: (v.type is None, "[]" in (v.type or "")))]
        if len(found) > 1:
            where = "; ".join(f"{v.unit} at {v.address:#x}: {v.type or '?'}" for v in found)
            raise GlobalTypeError(
                f"{self.source}: {len(found)} variables are called {name!r} (statics of"
                f" several files): {where}"
            )
        v = found[0]
        if v.type is None:
            raise GlobalTypeError(f"{self.source}: {name!r} ({v.unit}): {v.problem}")
        return v.type

    # --- internals ------------------------------------------------------------------------------

    def _damaged(self, what: str) -> KernelArtifactError:
        return KernelArtifactError(f"{self.source}: the globals table is damaged ({what})")

    def _raw(self, offset: int) -> bytes:
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise self._damaged(f"string offset {offset} is past its strings")
        return self._strings[offset:end]

    def _text(self, offset: int) -> str:
        return self._raw(offset).decode("utf-8", "surrogateescape")

    def _range(self, name: str) -> range:
        key = name.encode("utf-8", "surrogateescape")
        names = self._name
        lo = bisect_left(range(len(names)), key, key=lambda i: self._raw(names[i]))
        hi = lo
        while hi < len(names) and self._raw(names[hi]) == key:
            hi += 1
        return range(lo, hi)

    def _variable(self, i: int) -> GlobalVariable:
        flags, text = self._flags[i], self._text(self._type[i])
        unit = self._unit[i]
        if unit >= len(self._units):
            raise self._damaged(f"variable {i} names unit {unit} of {len(self._units)}")
        return GlobalVariable(
            self._text(self._name[i]), self._address[i], None if flags & PROBLEM else text,
            text if flags & PROBLEM else None, self._text(self._units[unit]),
            bool(flags & EXTERNAL),
        )  # fmt: skip

    def _missing(self, name: str) -> str:
        key = name.encode("utf-8", "surrogateescape")
        names = self._name
        at = bisect_left(range(len(names)), key, key=lambda i: self._raw(names[i]))
        near = {self._text(names[i]) for i in range(max(at - 32, 0), min(at + 32, len(names)))}
        skipped = ""
        if self.units_skipped:
            skipped = (
                f"; {self.units_skipped} of its {self.units_read} units could not be read"
                f" ({self.first_skip})"
            )
        return (
            f"{self.source}: its DWARF describes no variable {name!r} at file scope (one"
            f" defined in assembly or by the linker script has none){skipped}" + suggest(name, near)
        )

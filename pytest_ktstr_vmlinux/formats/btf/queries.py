"""BTF, the BPF Type Format: the kernel's description of its own types, read without libbpf.

It answers ``sizeof("struct rq")``, ``offsetof("struct rq", "cfs.nr_running")``, a member's bit
offset and bitfield width, and an enumerator's value, from raw BTF (/sys/kernel/btf/vmlinux) or
the ``.BTF`` section of a vmlinux ELF, of either byte order.

Format (Documentation/bpf/btf.rst): a header {magic 0xEB9F, version 1, flags, hdr_len, type_off,
type_len, str_off, str_len}, a type section and a string section. Types are numbered from 1 in
order of appearance (0 is void); each is a 12-byte record {name_off, info, size_or_type} and
kind-specific data whose length follows from the kind (info bits 24-28) and vlen (bits 0-15).

Speed: finding type N means walking every record before it. The cold load walks them once,
storing each type's offset (a u32 array), and sorts the named types and the enumerators by name
(u32 arrays, binary-searched). Those arrays and the BTF bytes form one artifact kept in the
artifact store, so a warm load maps it and wraps the arrays: no walk, no sort, no pickle.
Members are decoded when asked for.

Checks: the load checks the header, that every record fits, that every kind is 1-19, that the
names of named types and enumerators lie in the string section and that the type ids of
reference kinds exist. What is read only on demand (member names and types, array element types,
loops in typedef/const chains) is checked when read. Every problem is a KernelArtifactError
naming the input; a name that is not there is a KeyError with close matches.

Pointer size: BTF does not record it. We take 8 bytes, or 4 when the BTF's ``long int`` (or
``long unsigned int``) is a 4-byte INT, as on 32-bit kernels.

The format's constants and the cold path (read, walk, index) live in ``format.py``; the reads
by type id in ``table.py``; member paths in ``paths.py``; the values and errors queries return
(BTFType, Member, BTFKeyError, BitfieldError) in ``types.py``.
"""

from __future__ import annotations

import os
import re
import struct
from bisect import bisect_left
from collections.abc import Iterable

from ...errors import KernelArtifactError
from ...store.api import Store
from ...store.memory import MemoryStore
from .format import (
    _IS_REF,
    _SIZED,
    ARRAY,
    ARTIFACT_KIND,
    ARTIFACT_VERSION,
    DATASEC,
    INT,
    KIND_NAMES,
    _build,
    _index,
)
from .overlay import Overlay
from .paths import parse_member_path
from .typeexpr import is_expression
from .types import BitfieldError, BTFKeyError, BTFType, Member, Route, suggest

__all__ = [
    "BTF",
    "BTFKeyError",
    "BTFType",
    "BitfieldError",
    "Member",
    "Route",
    "parse_member_path",
]

_FLAVOR = re.compile(r"___[^.\[]*")  # CO-RE: "nr_running___v2" is nr_running in another shape


class BTF(Overlay):
    """A parsed BTF blob: the kernel's types, sizes, member offsets and enumerators. Build with
    ``from_bytes`` or ``from_path``::

        btf = BTF.from_path("/sys/kernel/btf/vmlinux")  # or a vmlinux's .BTF section
        btf.sizeof("struct rq")
        btf.offsetof("struct task_struct", "se.vruntime")
        btf.member("struct rq", "nr_running").type_name  # "unsigned int"
        btf.enum_value("PIDTYPE_PID")

    Every query takes a type id or a name (``"struct rq"``, ``"u64"``, or a C type expression
    such as ``"char *"``); a name that is not there is a BTFKeyError suggesting close ones.
    """

    # --- construction ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, what: str) -> BTF:
        """Parse raw BTF; ``what`` names it in errors."""
        view = memoryview(data).cast("B")
        return cls(memoryview(b"".join(_index(view, what))), what=what)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], store: Store | None = None) -> BTF:
        """Raw BTF, or the ``.BTF`` section of an ELF, indexed once per ``store`` (on disk: once
        across processes and runs) and mapped from it."""
        store = store or MemoryStore()
        stored = store.get_or_build(path, ARTIFACT_KIND, ARTIFACT_VERSION, _build)
        return cls(stored.map(), what=str(path))

    def __repr__(self) -> str:
        return f"BTF({self.what!r}, {len(self)} types)"

    # --- queries --------------------------------------------------------------------------------

    def type(self, spec: str | int) -> BTFType:
        """A type by id, or by name: "struct rq", "union x", "enum x", "typedef x", "func x",
        "var x", "datasec x", or a bare name when only one kind has it. Of several of one kind
        the largest definition wins, then the lowest id (a FWD only when nothing else has the
        name); ``types`` lists them all, and every query takes an id to pick another."""
        return self._record(self._lookup(spec))

    def types(self, spec: str | int) -> list[BTFType]:
        """Every type ``spec`` names, of every kind it allows, the one ``type`` picks first
        (when one kind has the name): their ids pick a definition other than the largest.
        BTFKeyError, with close matches, when there is none."""
        return [self._record(tid) for tid in self._candidates(spec)]

    def _record(self, tid: int) -> BTFType:
        rec = self._rec(tid)
        if rec.kind == ARRAY:
            target: int | None = self._array(rec)[0]
        else:
            target = rec.st if _IS_REF[rec.kind] else None
        size = rec.st if rec.kind in _SIZED else None
        name = self._text(rec.name_off)
        return BTFType(tid, KIND_NAMES[rec.kind], name, size, rec.vlen, target, self)

    def __contains__(self, spec: object) -> bool:
        """Whether some type answers ``spec``: an id, "struct rq", or a bare name that any kind
        has (even one several kinds share, which type() refuses). Builds no error message: a
        miss costs a lookup, not the close-match search type() would run for its KeyError."""
        if isinstance(spec, int):
            return 0 < spec <= len(self) or spec in self._synthetic
        if not isinstance(spec, str):
            return False
        if self._types_named(spec)[2]:
            return True
        if not is_expression(spec):
            return False
        try:
            self._lookup(spec)
        except (BTFKeyError, KernelArtifactError):
            return False
        return True

    def sizeof(self, spec: str | int) -> int:
        """Size in bytes: typedefs and qualifiers resolved, arrays = element size x count,
        pointers = ``pointer_size``, VARs = their type's size."""
        return self._size(self._lookup(spec))

    def offsetof(self, spec: str | int, path: str) -> int:
        """Byte offset of ``path`` ("nr_running", "cfs.nr_running", "arr[2].field") from the
        start of the type; through anonymous members. BitfieldError for a bitfield."""
        _, bits, width = self._locate(spec, path)
        if width or bits % 8:
            raise BitfieldError(
                f"{self.what}: {spec}: {path} is a bitfield ({width} bits at bit offset {bits}):"
                f" it has no byte offset; use member({spec!r}, {path!r}).bit_offset and"
                " .bitfield_size"
            )
        return bits // 8

    def member(self, spec: str | int, path: str) -> Member:
        """The member at ``path``, with its bit offset from the start of the outer type."""
        current, bits, width = self._locate(spec, path)
        return Member(path, current, self.type_name(current), bits, width)

    def has_member(self, spec: str | int, path: str) -> bool:
        """Whether ``path`` leads to a member of ``spec`` (a field that moved between releases);
        a CO-RE ``___flavor`` suffix on a part of it matches the part's base name."""
        return self._present(spec, path) is not None

    def member_any(self, spec: str | int, paths: Iterable[str]) -> Member:
        """The first of ``paths`` that ``spec`` has, as ``member`` gives it (``___flavor``
        suffixes dropped): one lookup for a field spelled differently across kernel releases;
        BTFKeyError naming all of them."""
        tried = list(paths)
        for path in tried:
            found = self._present(spec, path)
            if found is not None:
                return self.member(spec, found)
        raise BTFKeyError(f"{self.what}: {spec} has none of the members {', '.join(tried)}")

    def _present(self, spec: str | int, path: str) -> str | None:
        """``path``, or it without ``___flavor`` suffixes, whichever ``spec`` has; else None."""
        for candidate in dict.fromkeys((path, _FLAVOR.sub("", path))):
            try:
                self._locate(spec, candidate)
            except (BTFKeyError, ValueError):
                continue
            return candidate
        return None

    def datasecs(self) -> dict[str, int]:
        """Each DATASEC's name and how many VARs it lists: kernels' BTF has ``.data..percpu``
        alone (the build asks pahole for per-CPU variables only: --btf_features=var, not
        global_var), so where a global's type comes from depends on this."""
        names, found = self._names, dict[str, int]()
        at = bisect_left(names, b".", key=self._name_key)  # section names start with "."
        while at < len(names) and self._name_key(names[at]).startswith(b"."):
            rec = self._rec(names[at])
            if rec.kind == DATASEC:
                name = self._text(rec.name_off)
                found[name] = found.get(name, 0) + rec.vlen
            at += 1
        return found

    def int_encoding(self, spec: str | int) -> tuple[int, bool, bool]:
        """(bits, signed, bool) of the INT ``spec`` names, typedefs and qualifiers resolved."""
        found = self._encodings.get(spec)
        if found is None:
            found = self._encodings[spec] = self._encoding(spec)
        return found

    def _encoding(self, spec: str | int) -> tuple[int, bool, bool]:
        tid = self._resolve(self._lookup(spec))
        rec = self._rec(tid) if tid else None
        if rec is None or rec.kind != INT:
            raise BTFKeyError(f"{self.what}: {self.type_name(tid)} is not an integer type")
        (encoding,) = struct.unpack_from(self._order + "I", self._types, rec.body)
        return encoding & 0xFF, bool(encoding >> 24 & 1), bool(encoding >> 24 & 4)

    def enum_value(self, name: str) -> int:
        """The value of enumerator ``name`` (ENUM or ENUM64; signed when the enum's kind_flag
        is set). Duplicates must agree, else KeyError naming the enums."""
        key = name.encode("utf-8", "surrogateescape")
        n = len(self._enums) // 2
        at = bisect_left(range(n), key, key=self._enumerator_name)
        values: dict[int, int] = {}
        while at < n and self._enumerator_name(at) == key:
            tid, index = self._enums[2 * at], self._enums[2 * at + 1]
            values.setdefault(self._enumerator(self._rec(tid), index)[1], tid)
            at += 1
        if len(values) == 1:
            return next(iter(values))
        if not values:
            every = (self._enumerator_name(i).decode("utf-8", "replace") for i in range(n))
            raise BTFKeyError(f"{self.what}: no enumerator {name!r}" + suggest(name, every))
        owners = ", ".join(f"{self.type_name(t)} [{t}] = {v}" for v, t in values.items())
        raise BTFKeyError(f"{self.what}: enumerator {name!r} has different values: {owners}")

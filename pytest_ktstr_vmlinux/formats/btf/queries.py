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

The format's constants and the cold path (read, walk, index) live in btfformat.py; the values
and errors queries return (BTFType, Member, BTFKeyError, BitfieldError) in btftypes.py.
"""

from __future__ import annotations

import os
import re
import struct
from bisect import bisect_left
from collections.abc import Iterable
from typing import NamedTuple

from ...errors import KernelArtifactError
from ...store.memory import MemoryStore, Store
from .format import (
    _ART,
    _ART_MAGIC,
    _COMPOSITE,
    _IS_REF,
    _RECORD,
    _SIZED,
    _TRANSPARENT,
    ARRAY,
    ARTIFACT_KIND,
    ARTIFACT_VERSION,
    CONST,
    DATASEC,
    DECL_TAG,
    ENUM,
    ENUM64,
    FLOAT,
    FUNC,
    FUNC_PROTO,
    FWD,
    INT,
    KIND_NAMES,
    PTR,
    RESTRICT,
    STRUCT,
    TYPE_TAG,
    TYPEDEF,
    UNION,
    VAR,
    VOLATILE,
    _build,
    _index,
    _pad4,
    _sections,
    _u32,
    _word,
)
from .types import BitfieldError, BTFKeyError, BTFType, Member, suggest

__all__ = ["BTF", "BTFKeyError", "BTFType", "BitfieldError", "Member"]

# Words that may start a type() query, and the kinds each one finds.
_KIND_WORDS: dict[str, frozenset[int]] = {
    "struct": frozenset({STRUCT}),
    "union": frozenset({UNION}),
    "enum": frozenset({ENUM, ENUM64}),
    "typedef": frozenset({TYPEDEF}),
    "func": frozenset({FUNC}),
    "var": frozenset({VAR}),
    "datasec": frozenset({DATASEC}),
}

# [0-9], not \d: int() would take any script's digits, and no C index is written in them.
_PATH_PART = re.compile(r"([A-Za-z_$][\w$]*)?((?:\[[0-9]+\])*)")
_INDEX = re.compile(r"\[([0-9]+)\]")
_FLAVOR = re.compile(r"___[^.\[]*")  # CO-RE: "nr_running___v2" is nr_running in another shape


class _Rec(NamedTuple):
    kind: int
    vlen: int
    kflag: int
    name_off: int
    st: int  # size or type
    body: int  # offset of the kind-specific data in the type section


class BTF:
    """A parsed BTF blob. Build with ``from_bytes`` or ``from_path``."""

    def __init__(self, payload: memoryview, *, what: str) -> None:
        """Wrap an artifact payload made by ``_index`` (no walk over the types happens here)."""
        self.what = what
        if len(payload) < _ART.size:
            raise self._error("index artifact is truncated")
        magic, ntypes, n_names, n_enums, btf_len = _ART.unpack_from(payload)
        at = _ART.size + _pad4(btf_len)
        ends = at + 4 * (ntypes + n_names + 2 * n_enums)
        if magic != _ART_MAGIC or ntypes < 1 or ends != len(payload):
            raise self._error("index artifact is damaged; clear the kernel cache")
        raw = payload[_ART.size : _ART.size + btf_len]
        self._order, self._types, strs = _sections(raw, what)
        self._strs = bytes(strs)
        self._unpack = struct.Struct(self._order + "III").unpack_from
        self._offsets = _u32(payload, at, ntypes)
        self._names = _u32(payload, at + 4 * ntypes, n_names)
        self._enums = _u32(payload, at + 4 * (ntypes + n_names), 2 * n_enums)
        self._ids: dict[str, int] = {}
        self._paths: dict[tuple[int, str], tuple[int, int, int]] = {}
        self._flats: dict[int, dict[str, tuple[int, int, int]]] = {}
        self._pointer_size: int | None = None

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

    def __len__(self) -> int:
        """The number of types; their ids are 1 .. len(self)."""
        return len(self._offsets) - 1

    @property
    def byteorder(self) -> str:
        return "little" if self._order == "<" else "big"

    @property
    def pointer_size(self) -> int:
        """8, or 4 when ``long`` is a 4-byte INT (BTF has no pointer size of its own)."""
        if self._pointer_size is None:
            self._pointer_size = 8
            for name in (b"long int", b"long unsigned int", b"long"):
                for tid in self._named(name):
                    rec = self._rec(tid)
                    if rec.kind == INT and rec.st == 4:
                        self._pointer_size = 4
        return self._pointer_size

    # --- queries --------------------------------------------------------------------------------

    def type(self, spec: str | int) -> BTFType:
        """A type by id, or by name: "struct rq", "union x", "enum x", "typedef x", "func x",
        "var x", "datasec x", or a bare name when only one kind has it. Among same-kind
        duplicates the first complete one wins (a FWD only when nothing else has the name)."""
        tid = self._lookup(spec)
        rec = self._rec(tid)
        if rec.kind == ARRAY:
            target: int | None = self._unpack(self._types, rec.body)[0]
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
            return 0 < spec <= len(self)
        return isinstance(spec, str) and bool(self._types_named(spec)[2])

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

    def int_encoding(self, spec: str | int) -> tuple[int, bool, bool]:
        """(bits, signed, bool) of the INT ``spec`` names, typedefs and qualifiers resolved."""
        tid = self._resolve(self._lookup(spec))
        rec = self._rec(tid) if tid else None
        if rec is None or rec.kind != INT:
            raise BTFKeyError(f"{self.what}: {self.type_name(tid)} is not an integer type")
        (encoding,) = struct.unpack_from(self._order + "I", self._types, rec.body)
        return encoding & 0xFF, bool(encoding >> 24 & 1), bool(encoding >> 24 & 4)

    def type_name(self, tid: int, _depth: int = 0) -> str:
        """A C-like spelling of type ``tid``: "struct rq", "u64", "char *", "int[4]"."""
        if tid == 0:
            return "void"
        if _depth > 8:
            return "..."
        rec = self._rec(tid)
        kind, name = rec.kind, self._text(rec.name_off)
        if kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            word = "union" if kind == UNION or (kind == FWD and rec.kflag) else "struct"
            return f"{'enum' if kind in (ENUM, ENUM64) else word} {name or '(anon)'}"
        if kind in (INT, FLOAT, TYPEDEF):
            return name
        if kind == ARRAY:
            elem, _, nelems = self._unpack(self._types, rec.body)
            base, bracket, dims = self.type_name(elem, _depth + 1).partition("[")
            return f"{base}[{nelems}]{bracket}{dims}"  # char[2][3]: 2 arrays of char[3]
        if kind == PTR:
            return f"{self.type_name(rec.st, _depth + 1)} *"
        if kind in (CONST, VOLATILE, RESTRICT):
            return f"{KIND_NAMES[kind].lower()} {self.type_name(rec.st, _depth + 1)}"
        if kind == TYPE_TAG:
            return self.type_name(rec.st, _depth + 1)
        if kind == FUNC_PROTO:
            return f"{self.type_name(rec.st, _depth + 1)} (*)()"
        return f"{KIND_NAMES[kind].lower()} {name}"

    # --- internals ------------------------------------------------------------------------------

    def _error(self, message: str) -> KernelArtifactError:
        return KernelArtifactError(f"{self.what}: {message}")

    def _rec(self, tid: int) -> _Rec:
        if not 0 < tid < len(self._offsets):
            raise self._error(f"type id {tid} is out of range (ids are 1..{len(self)})")
        at = self._offsets[tid]
        name_off, info, st = self._unpack(self._types, at)
        return _Rec(info >> 24 & 0x1F, info & 0xFFFF, info >> 31, name_off, st, at + _RECORD)

    def _bytes(self, offset: int) -> bytes:
        if offset >= len(self._strs):
            raise self._error(
                f"string offset {offset} is past the {len(self._strs)}-byte string section"
            )
        return self._strs[offset : self._strs.index(0, offset)]

    def _text(self, offset: int) -> str:
        return self._bytes(offset).decode("utf-8", "replace") if offset else ""

    def _name_key(self, tid: int) -> bytes:
        return self._bytes(self._unpack(self._types, self._offsets[tid])[0])

    def _named(self, name: bytes) -> list[int]:
        names, found = self._names, []
        at = bisect_left(names, name, key=self._name_key)
        while at < len(names) and self._name_key(names[at]) == name:
            found.append(names[at])
            at += 1
        return found

    def _lookup(self, spec: str | int) -> int:
        if isinstance(spec, int):
            if not 0 < spec <= len(self):
                raise BTFKeyError(f"{self.what}: type id {spec} is out of range (1..{len(self)})")
            return spec
        tid = self._ids.get(spec)
        if tid is None:
            tid = self._ids[spec] = self._find_type(spec)
        return tid

    def _find_type(self, spec: str) -> int:
        name, wanted, by_word = self._types_named(spec)
        if len(by_word) == 1:
            return min(next(iter(by_word.values())))[1]
        if by_word:
            which = ", ".join(repr(f"{w} {name}") for w in sorted(by_word))
            raise BTFKeyError(
                f"{self.what}: {name!r} names several kinds of type; ask for one of {which}"
            )
        raise BTFKeyError(f"{self.what}: no type {spec!r}" + suggest(spec, self._spellings(wanted)))

    def _types_named(
        self, spec: str
    ) -> tuple[str, frozenset[int] | None, dict[str, list[tuple[bool, int]]]]:
        """(name, kinds asked for, kind word -> [(incomplete, id)]) of the types ``spec`` names."""
        word, _, rest = spec.strip().partition(" ")
        wanted = _KIND_WORDS.get(word) if rest.strip() else None
        name = rest.strip() if wanted is not None else spec.strip()
        by_word: dict[str, list[tuple[bool, int]]] = {}
        # surrogateescape: a name from argv with bytes that are not UTF-8 looks up those bytes.
        for tid in self._named(name.encode("utf-8", "surrogateescape")):
            rec = self._rec(tid)
            kinds = (STRUCT, UNION)[rec.kflag] if rec.kind == FWD else rec.kind
            if wanted is None or kinds in wanted:
                incomplete = rec.kind == FWD or (rec.kind in (ENUM, ENUM64) and not rec.vlen)
                by_word.setdefault(_word(kinds), []).append((incomplete, tid))
        return name, wanted, by_word

    def _spellings(self, wanted: frozenset[int] | None) -> Iterable[str]:
        for tid in self._names:
            rec = self._rec(tid)
            kind = (STRUCT, UNION)[rec.kflag] if rec.kind == FWD else rec.kind
            if wanted is None:
                yield self._text(rec.name_off)
            elif kind in wanted:
                yield f"{_word(kind)} {self._text(rec.name_off)}"

    def _resolve(self, tid: int) -> int:
        """Strip typedefs, qualifiers and type tags; KernelArtifactError on a loop."""
        seen = [tid]
        while tid:
            rec = self._rec(tid)
            if rec.kind not in _TRANSPARENT:
                return tid
            tid = rec.st
            self._no_loop(tid, seen)
        return tid

    def _no_loop(self, tid: int, seen: list[int]) -> None:
        if tid in seen:
            chain = " -> ".join(f"[{t}]" for t in [*seen, tid])
            raise self._error(f"type chain loops: {chain}")
        seen.append(tid)

    def _size(self, tid: int) -> int:
        seen, count = [tid], 1
        while True:
            rec = self._rec(tid) if tid else None
            if rec is None or rec.kind in (FWD, FUNC, FUNC_PROTO, DECL_TAG):
                why = "is only declared (FWD)" if rec is not None and rec.kind == FWD else ""
                raise self._error(
                    f"sizeof type [{seen[0]}] ({self.type_name(seen[0])}): {self.type_name(tid)}"
                    f" {why or 'has no size'}"
                )
            if rec.kind in _SIZED:
                return count * rec.st
            if rec.kind == PTR:
                return count * self.pointer_size
            if rec.kind == ARRAY:
                tid, _, nelems = self._unpack(self._types, rec.body)
                count *= nelems
            else:  # typedefs, qualifiers, type tags, VAR
                tid = rec.st
            self._no_loop(tid, seen)

    def _rows(self, tid: int) -> list[tuple[int, int, int, int]]:
        """(name_off, type, bit offset, bitfield size) of each member of STRUCT/UNION ``tid``."""
        rec = self._rec(tid)
        if rec.kind not in _COMPOSITE:
            return []
        end = rec.body + _RECORD * rec.vlen
        rows = struct.iter_unpack(self._order + "III", self._types[rec.body : end])
        if rec.kflag:
            return [(n, t, o & 0xFFFFFF, o >> 24) for n, t, o in rows]
        out = []
        for name_off, mtype, offset in rows:
            width = 0
            member = self._rec(mtype) if mtype else None
            if member is not None and member.kind == INT:
                # Without kind_flag a bitfield's width and extra offset are in its INT encoding.
                (encoding,) = struct.unpack_from(self._order + "I", self._types, member.body)
                bits, shift = encoding & 0xFF, encoding >> 16 & 0xFF
                if shift or bits != member.st * 8:
                    width, offset = bits, offset + shift
            out.append((name_off, mtype, offset, width))
        return out

    def _members(self, tid: int) -> tuple[Member, ...]:
        return tuple(
            Member(self._text(n), t, self.type_name(t), o, w) for n, t, o, w in self._rows(tid)
        )

    def _enumerators(self, tid: int) -> tuple[tuple[str, int], ...]:
        rec = self._rec(tid)
        if rec.kind not in (ENUM, ENUM64):
            return ()
        pairs = (self._enumerator(rec, index) for index in range(rec.vlen))
        return tuple((self._text(name_off), value) for name_off, value in pairs)

    def _enumerator(self, rec: _Rec, index: int) -> tuple[int, int]:
        """(name_off, value) of enumerator ``index`` of ENUM/ENUM64 ``rec``."""
        if rec.kind == ENUM:
            layout = "Ii" if rec.kflag else "II"
            return struct.unpack_from(self._order + layout, self._types, rec.body + 8 * index)
        name_off, low, high = self._unpack(self._types, rec.body + 12 * index)
        value = high << 32 | low
        return name_off, value - (1 << 64) if rec.kflag and value >= 1 << 63 else value

    def _enumerator_name(self, i: int) -> bytes:
        tid, index = self._enums[2 * i], self._enums[2 * i + 1]
        return self._bytes(self._enumerator(self._rec(tid), index)[0])

    def _locate(self, spec: str | int, path: str) -> tuple[int, int, int]:
        """(type, bit offset, bitfield size) of ``path`` in ``spec``; memoized."""
        tid = self._lookup(spec)
        found = self._paths.get((tid, path))
        if found is None:
            found = self._paths[(tid, path)] = self._walk_path(spec, tid, path)
        return found

    def _walk_path(self, spec: str | int, tid: int, path: str) -> tuple[int, int, int]:
        current, bits, width = tid, 0, 0
        for name, indices in parse_member_path(path):
            if name is not None:
                outer = self._resolve(current)
                if not outer or self._rec(outer).kind not in _COMPOSITE:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: cannot look up {name!r} in"
                        f" {self.type_name(current)}: not a struct or union"
                    )
                members = self._flat(outer)
                if name not in members:
                    raise BTFKeyError(
                        f"{self.what}: {self.type_name(outer)} has no member {name!r}"
                        + suggest(name, members)
                    )
                offset, width, current = members[name]
                bits += offset
            for index in indices:
                array_id = self._resolve(current)
                if not array_id or self._rec(array_id).kind != ARRAY:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: {path}: {self.type_name(current)} is not an array"
                    )
                elem, _, nelems = self._unpack(self._types, self._rec(array_id).body)
                if nelems and index >= nelems:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: {path}: index {index} is out of"
                        f" range for {self.type_name(array_id)}"
                    )
                bits += index * self._size(elem) * 8
                current, width = elem, 0
        return current, bits, width

    def _flat(self, tid: int) -> dict[str, tuple[int, int, int]]:
        """Member name -> (bit offset, bitfield size, type) for STRUCT/UNION ``tid``, with the
        members of its anonymous struct/union members (and theirs); decoded once per type."""
        flat = self._flats.get(tid)
        if flat is not None:
            return flat
        flat, stack, seen = {}, [(tid, 0)], {tid}
        while stack:
            current, base = stack.pop()
            nested = []
            for name_off, mtype, offset, width in self._rows(current):
                if name_off:
                    flat.setdefault(self._text(name_off), (base + offset, width, mtype))
                elif mtype:
                    inner = self._resolve(mtype)
                    if inner and inner not in seen and self._rec(inner).kind in _COMPOSITE:
                        seen.add(inner)
                        nested.append((inner, base + offset))
            stack.extend(reversed(nested))
        self._flats[tid] = flat
        return flat


def parse_member_path(path: str) -> list[tuple[str | None, list[int]]]:
    """Split a member path: "a.b[2].c" -> [("a", []), ("b", [2]), ("c", [])]; "[1].x" starts
    with an index (the outer type is an array). ValueError saying which part is malformed."""
    parts = []
    for i, part in enumerate(path.split(".")):
        match = _PATH_PART.fullmatch(part.strip())
        if match is None or not part.strip() or (match[1] is None and i):
            what = f"{part!r} is not a name or name[index]" if part.strip() else "an empty part"
            raise ValueError(
                f"malformed member path {path!r}: {what}; use names, dots and [index], as in"
                " cfs.nr_running or arr[2].x"
            )
        parts.append((match[1], [int(n) for n in _INDEX.findall(match[2])]))
    return parts

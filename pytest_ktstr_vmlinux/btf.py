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

About 720 lines: queries (the BTF class) first, then the cold path (``read_btf_bytes``,
``_index``, ``_walk``), which could move to a module of its own.
"""

from __future__ import annotations

import difflib
import os
import re
import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .errors import KernelArtifactError
from .memstore import MemoryStore, Store

__all__ = ["BTF", "BTFKeyError", "BTFType", "BitfieldError", "Member"]

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC) = range(1, 13)
(FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(13, 20)
# fmt: off
KIND_NAMES = (
    "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
    "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG", "TYPE_TAG",
    "ENUM64",
)
# fmt: on

BTF_MAGIC = 0xEB9F
_HEADER_SIZE = 24
_RECORD = 12
# Bytes after a record: a fixed part, and a part per vlen item. -1 marks kinds we do not know.
_FIXED_BYTES = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_ITEM_BYTES = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_FIXED = [_FIXED_BYTES.get(k, 0) if INT <= k <= ENUM64 else -1 for k in range(32)]
_PER_ITEM = [_ITEM_BYTES.get(k, 0) for k in range(32)]
# Kinds whose size_or_type is a type id; named kinds that type() finds by name; enums. As lists
# indexed by kind for the walk's inner loop.
_REFS = frozenset({PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DECL_TAG})
_REFS |= {TYPE_TAG}
_INDEXED = frozenset({INT, STRUCT, UNION, ENUM, FWD, TYPEDEF, FUNC, VAR, DATASEC, FLOAT, ENUM64})
_IS_REF = [k in _REFS for k in range(32)]
_IS_INDEXED = [k in _INDEXED for k in range(32)]
_IS_ENUM = [k in (ENUM, ENUM64) for k in range(32)]
_SIZED = frozenset({INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC})
_TRANSPARENT = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_COMPOSITE = frozenset({STRUCT, UNION})

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

# The artifact: header {magic, ntypes (void included), named types, enumerators, BTF length},
# the BTF bytes padded to 4, then native-order u32 arrays: offsets[ntypes] (type i's offset in
# the type section), names[n] (named type ids by (name, id)), enumerators[2n] ((enum id, index)
# pairs by (name, id, index)). The store kind names the byte order, so a foreign one is a miss.
ARTIFACT_KIND = f"btf-index-{sys.byteorder}"
ARTIFACT_VERSION = 1
_ART = struct.Struct("=8s4I")
_ART_MAGIC = b"KTBTFIX\x00"
_PATH_PART = re.compile(r"([A-Za-z_$][\w$]*)?((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
if array("I").itemsize != 4:  # pragma: no cover - every Linux ABI has a 4-byte unsigned int
    raise ImportError("btf.py needs a 4-byte array('I')")


class BTFKeyError(KeyError):
    """A type, member or enumerator that is not in the BTF; the message suggests close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BitfieldError(KernelArtifactError):
    """offsetof() of a bitfield, which has no byte offset: use BTF.member()."""


@dataclass(frozen=True)
class Member:
    """A struct/union member. From ``BTFType.members`` ``bit_offset`` counts from the start of
    its struct; from ``BTF.member()`` ``name`` is the path and ``bit_offset`` counts from the
    start of the outer type. ``bitfield_size`` is 0 for a member that is not a bitfield."""

    name: str
    type_id: int
    type_name: str
    bit_offset: int
    bitfield_size: int

    @property
    def offset(self) -> int:
        """Offset in bytes; BitfieldError for a bitfield (or a member not on a byte boundary)."""
        if self.bitfield_size or self.bit_offset % 8:
            raise BitfieldError(
                f"{self.name} is a bitfield ({self.bitfield_size} bits at bit offset"
                f" {self.bit_offset}): it has no byte offset; use member().bit_offset and"
                " .bitfield_size"
            )
        return self.bit_offset // 8


@dataclass(frozen=True)
class BTFType:
    """One BTF type. ``size`` is the size field of INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and
    DATASEC (None otherwise; BTF.sizeof() resolves the rest); ``target`` is the type referred
    to (the pointee, typedef'd or qualified type, an array's element, a FUNC's prototype, a VAR's
    type, a FUNC_PROTO's return type), None for kinds that refer to none."""

    id: int
    kind: str
    name: str
    size: int | None
    vlen: int
    target: int | None
    btf: BTF = field(repr=False, compare=False)

    @property
    def members(self) -> tuple[Member, ...]:
        """STRUCT/UNION members, decoded now; () for other kinds."""
        return self.btf._members(self.id)

    @property
    def enumerators(self) -> tuple[tuple[str, int], ...]:
        """ENUM/ENUM64 (name, value) pairs, decoded now; () for other kinds."""
        return self.btf._enumerators(self.id)


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

    def enum_value(self, name: str) -> int:
        """The value of enumerator ``name`` (ENUM or ENUM64; signed when the enum's kind_flag
        is set). Duplicates must agree, else KeyError naming the enums."""
        key = name.encode()
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
            raise BTFKeyError(f"{self.what}: no enumerator {name!r}" + _suggest(name, every))
        owners = ", ".join(f"{self.type_name(t)} [{t}] = {v}" for v, t in values.items())
        raise BTFKeyError(f"{self.what}: enumerator {name!r} has different values: {owners}")

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
        word, _, rest = spec.strip().partition(" ")
        wanted = _KIND_WORDS.get(word) if rest.strip() else None
        name = rest.strip() if wanted is not None else spec.strip()
        by_word: dict[str, list[tuple[bool, int]]] = {}
        for tid in self._named(name.encode()):
            rec = self._rec(tid)
            kinds = (STRUCT, UNION)[rec.kflag] if rec.kind == FWD else rec.kind
            if wanted is None or kinds in wanted:
                incomplete = rec.kind == FWD or (rec.kind in (ENUM, ENUM64) and not rec.vlen)
                by_word.setdefault(_word(kinds), []).append((incomplete, tid))
        if len(by_word) == 1:
            return min(next(iter(by_word.values())))[1]
        if by_word:
            which = ", ".join(repr(f"{w} {name}") for w in sorted(by_word))
            raise BTFKeyError(
                f"{self.what}: {name!r} names several kinds of type; ask for one of {which}"
            )
        raise BTFKeyError(
            f"{self.what}: no type {spec!r}" + _suggest(spec, self._spellings(wanted))
        )

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
        for name, indices in _parse_path(path):
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
                        + _suggest(name, members)
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


# --- the cold path: reading, walking, indexing ----------------------------------------------------


def read_btf_bytes(path: str | os.PathLike[str]) -> bytes:
    """The BTF of ``path``: the whole file if it is raw BTF, its ``.BTF`` section if an ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
                return head + f.read()
            if head != b"\x7fELF":
                raise KernelArtifactError(
                    f"{path}: neither raw BTF (magic 0xEB9F) nor an ELF with a .BTF section"
                )
            size = os.fstat(f.fileno()).st_size
            try:
                section = ELFFile(f).get_section_by_name(".BTF")
                if section is None:
                    raise KernelArtifactError(
                        f"{path}: ELF without a .BTF section; the kernel was built without"
                        " CONFIG_DEBUG_INFO_BTF=y (needs pahole), or it was stripped"
                    )
                offset, length = section.header.sh_offset, section.header.sh_size
            except (
                ELFError,
                struct.error,
                ValueError,
                IndexError,
                KeyError,
                TypeError,
                OverflowError,
                MemoryError,
            ) as e:
                raise KernelArtifactError(f"{path}: not a readable ELF ({e})") from None
            if section.header.sh_type == "SHT_NOBITS" or offset + length > size:
                raise KernelArtifactError(f"{path}: .BTF section runs past the end of the file")
            f.seek(offset)
            return f.read(length)
    except OSError as e:
        raise KernelArtifactError(f"{path}: cannot read: {e.strerror or e}") from None


def _build(path: Path, out: BinaryIO) -> None:
    for chunk in _index(memoryview(read_btf_bytes(path)), str(path)):
        out.write(chunk)


def _sections(data: memoryview, what: str) -> tuple[str, memoryview, memoryview]:
    """Byte order ("<" or ">"), type section and string section of raw BTF."""
    if len(data) < _HEADER_SIZE:
        raise KernelArtifactError(f"{what}: BTF truncated: {len(data)} bytes, no full header")
    order = {b"\x9f\xeb": "<", b"\xeb\x9f": ">"}.get(bytes(data[:2]))
    if order is None:
        raise KernelArtifactError(
            f"{what}: not BTF: no magic 0xEB9F at the start (found {bytes(data[:2]).hex(' ')})"
        )
    fields = struct.unpack_from(order + "HBBIIIII", data)
    version, hdr_len, type_off, type_len, str_off, str_len = fields[1], *fields[3:]
    if version != 1:
        raise KernelArtifactError(f"{what}: BTF version {version}; only version 1 is known")
    if not _HEADER_SIZE <= hdr_len <= len(data):
        raise KernelArtifactError(f"{what}: BTF header length {hdr_len} is impossible")
    types_end, strs_end = hdr_len + type_off + type_len, hdr_len + str_off + str_len
    if max(types_end, strs_end) > len(data):
        raise KernelArtifactError(
            f"{what}: BTF truncated: sections end at byte {max(types_end, strs_end)}, the data"
            f" at {len(data)}"
        )
    strs = data[hdr_len + str_off : strs_end]
    if strs and strs[-1] != 0:
        raise KernelArtifactError(f"{what}: BTF string section does not end in NUL")
    return order, data[hdr_len + type_off : types_end], strs


def _index(data: memoryview, what: str) -> list[bytes]:
    """The artifact payload for raw BTF ``data``, in chunks; checks what the load promises."""
    order, types, strs_view = _sections(data, what)
    strs = bytes(strs_view)
    offsets, named_ids, named_offs, enums = _walk(types, order, what)
    ntypes = len(offsets)

    def string_error(offset: int, owner: str) -> KernelArtifactError:
        split = " (split BTF of a module? give the base vmlinux BTF)" if offset > len(strs) else ""
        return KernelArtifactError(
            f"{what}: {owner} has name offset {offset}, past the"
            f" {len(strs)}-byte string section{split}"
        )

    if named_offs and max(named_offs) >= len(strs):
        bad = next(i for i, o in enumerate(named_offs) if o >= len(strs))
        raise string_error(named_offs[bad], f"type [{named_ids[bad]}]")
    keys = [strs[o : strs.index(0, o)] for o in named_offs]
    names = array("I", [named_ids[i] for i in sorted(range(len(keys)), key=keys.__getitem__)])
    enumerators: list[tuple[bytes, int, int]] = []
    for tid in enums:
        at = offsets[tid]
        _, info, _ = struct.unpack_from(order + "III", types, at)
        layout = "II" if info >> 24 & 0x1F == ENUM else "III"
        body = types[at + _RECORD : at + _RECORD + 4 * len(layout) * (info & 0xFFFF)]
        for index, (name_off, *_) in enumerate(struct.iter_unpack(order + layout, body)):
            if name_off >= len(strs):
                raise string_error(name_off, f"enumerator {index} of type [{tid}]")
            if name_off:
                enumerators.append((strs[name_off : strs.index(0, name_off)], tid, index))
    enumerators.sort()
    pairs = array("I", [v for _, tid, index in enumerators for v in (tid, index)])
    head = _ART.pack(_ART_MAGIC, ntypes, len(names), len(enumerators), len(data))
    padding = bytes(_pad4(len(data)) - len(data))
    return [head, bytes(data), padding, offsets.tobytes(), names.tobytes(), pairs.tobytes()]


def _walk(
    types: memoryview, order: str, what: str
) -> tuple[array[int], list[int], list[int], list[int]]:
    """One pass over the records: each type's offset, the ids and name offsets of named types,
    the ids of enums. Checks that each record fits and its kind is known."""
    unpack = struct.Struct(order + "III").unpack_from
    fixed, per_item, is_ref, is_indexed, is_enum = _FIXED, _PER_ITEM, _IS_REF, _IS_INDEXED, _IS_ENUM
    offsets = array("I", [0])
    named_ids: list[int] = []
    named_offs: list[int] = []
    enums: list[int] = []
    end, at, tid, max_ref, max_ref_by = len(types), 0, 0, 0, 0
    while at < end:
        if end - at < _RECORD:
            raise KernelArtifactError(f"{what}: BTF truncated: type [{tid + 1}] is cut short")
        name_off, info, st = unpack(types, at)
        kind = info >> 24 & 0x1F
        tid += 1
        extra = fixed[kind]
        if extra < 0:
            raise KernelArtifactError(
                f"{what}: type [{tid}] has unknown BTF kind {kind} (known: 1-19); a newer"
                " kernel's BTF needs a newer pytest-ktstr-vmlinux"
            )
        offsets.append(at)
        if name_off and is_indexed[kind]:
            named_ids.append(tid)
            named_offs.append(name_off)
        if is_enum[kind]:
            enums.append(tid)
        if is_ref[kind] and st > max_ref:
            max_ref, max_ref_by = st, tid
        at += _RECORD + extra + per_item[kind] * (info & 0xFFFF)
    if at > end:
        raise KernelArtifactError(
            f"{what}: BTF truncated: type [{tid}] runs past the end of the type section"
        )
    if max_ref >= len(offsets):
        raise KernelArtifactError(
            f"{what}: type [{max_ref_by}] refers to type id {max_ref},"
            f" out of range (ids are 1..{len(offsets) - 1})"
        )
    return offsets, named_ids, named_offs, enums


def _u32(payload: memoryview, at: int, count: int) -> memoryview:
    return payload[at : at + 4 * count].cast("I")


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _word(kind: int) -> str:
    return "enum" if kind == ENUM64 else KIND_NAMES[kind].lower()


def _parse_path(path: str) -> list[tuple[str | None, list[int]]]:
    """Split a member path: "a.b[2].c" -> [("a", []), ("b", [2]), ("c", [])]; "[1].x" starts
    with an index (the outer type is an array). ValueError if malformed."""
    parts = []
    for i, part in enumerate(path.split(".")):
        match = _PATH_PART.fullmatch(part.strip())
        if match is None or not part or (match[1] is None and (i or not match[2])):
            raise ValueError(f"malformed member path {path!r}: use names, dots and [index]")
        parts.append((match[1], [int(n) for n in _INDEX.findall(match[2])]))
    return parts


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""

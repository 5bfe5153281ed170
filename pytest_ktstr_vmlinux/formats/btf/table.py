"""The type table of a BTF blob: records found by id, names by binary search, sizes and spellings.

This is what every query stands on: the artifact made by ``format.py``'s ``_index`` wrapped as it is
(a u32 offset per type, the named types and the enumerators sorted by name), and the reads of one
record, one string, one member list, and a type's id from a name ("struct rq"). Member paths
("cfs.nr_running") are ``paths.py``'s; the queries a user calls are BTF's, in ``queries.py``.
"""

from __future__ import annotations

import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable
from typing import NamedTuple

from ...errors import KernelArtifactError
from .format import (
    _ART,
    _ART_MAGIC,
    _COMPOSITE,
    _RECORD,
    _SIZED,
    _TRANSPARENT,
    ARRAY,
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
    _pad4,
    _sections,
    _u32,
    _word,
)
from .typeexpr import (
    Array,
    Base,
    Function,
    Pointer,
    Qualified,
    Tagged,
    Typedef,
    TypeExpr,
    Void,
    spell,
)
from .types import BTFKeyError, Member, Route, suggest

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


class _Rec(NamedTuple):
    kind: int
    vlen: int
    kflag: int
    name_off: int
    st: int  # size or type
    body: int  # offset of the kind-specific data in the type section


class TypeTable:
    """The types of one BTF artifact, read by id or found by name; BTF adds the public queries."""

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
        self._routes: dict[tuple[str | int, str], Route] = {}
        # Answers kept per type id: the live layer asks for the same few again each sample.
        self._sizes: dict[int, int] = {}
        self._encodings: dict[str | int, tuple[int, bool, bool]] = {}
        self._pointer_size: int | None = None
        # The overlay (overlay.py): derived types an expression named that the BTF lacks, with
        # ids after its own. Records by id, and each one's array or prototype data by id.
        self._synthetic: dict[int, _Rec] = {}
        self._derived: dict[int, tuple[int, ...]] = {}
        self._made: dict[tuple[int, int, tuple[int, ...]], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """The number of types; their ids are 1 .. len(self)."""
        return len(self._offsets) - 1

    @property
    def byteorder(self) -> str:
        """``"little"`` or ``"big"``: the BTF's byte order, and so its kernel's."""
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

    def type_name(self, tid: int) -> str:
        """A C spelling of type ``tid``: "struct rq", "u64", "char *", "int[4]", "int (*)[4]"
        (``typeexpr.py``'s); "..." where a chain goes on too long (or loops)."""
        rec = self._rec(tid) if tid else None
        if rec is not None and rec.kind in (FUNC, VAR, DATASEC, DECL_TAG):
            return f"{KIND_NAMES[rec.kind].lower()} {self._text(rec.name_off)}"
        return spell(self._expression(tid, 0))

    def _expression(self, tid: int, depth: int) -> TypeExpr:
        """Type ``tid`` as a type expression tree, ``depth`` steps into a chain."""
        if tid == 0:
            return Void()
        if depth > 8:
            return Typedef("...")
        rec = self._rec(tid)
        kind, name = rec.kind, self._text(rec.name_off)
        if kind in (STRUCT, UNION, ENUM, ENUM64, FWD):
            word = "union" if kind == UNION or (kind == FWD and rec.kflag) else "struct"
            return Tagged("enum" if kind in (ENUM, ENUM64) else word, name or "(anon)")
        if kind in (INT, FLOAT):
            return Base(name)
        if kind == ARRAY:
            elem, _, nelems = self._array(rec)
            return Array(self._expression(elem, depth + 1), nelems)
        if kind == PTR:
            return Pointer(self._expression(rec.st, depth + 1))
        if kind in (CONST, VOLATILE, RESTRICT):
            return Qualified(self._expression(rec.st, depth + 1), KIND_NAMES[kind].lower())
        if kind == TYPE_TAG:
            return self._expression(rec.st, depth + 1)
        if kind == FUNC_PROTO:
            params = self._params(tid, rec)
            variadic = bool(params) and params[-1] == 0
            made = tuple(self._expression(p, depth + 1) for p in params[: -1 if variadic else None])
            return Function(self._expression(rec.st, depth + 1), made, variadic)
        return Typedef(name or f"{KIND_NAMES[kind].lower()} [{tid}]")  # TYPEDEF, or no type

    def _array(self, rec: _Rec) -> tuple[int, int, int]:
        """(element type, index type, element count) of ARRAY ``rec``, real or derived."""
        if rec.body < 0:
            elem, index, nelems = self._derived[-rec.body]
            return elem, index, nelems
        elem, index, nelems = self._unpack(self._types, rec.body)
        return elem, index, nelems

    def _params(self, tid: int, rec: _Rec) -> tuple[int, ...]:
        """The parameter types of FUNC_PROTO ``rec`` (a last 0: variadic)."""
        if rec.body < 0:
            return self._derived.get(tid, ())
        end = rec.body + 8 * rec.vlen
        return tuple(
            t for _, t in struct.iter_unpack(self._order + "II", self._types[rec.body : end])
        )

    # --- internals ------------------------------------------------------------------------------

    def _error(self, message: str) -> KernelArtifactError:
        return KernelArtifactError(f"{self.what}: {message}")

    def _rec(self, tid: int) -> _Rec:
        if not 0 < tid < len(self._offsets):
            derived = self._synthetic.get(tid)
            if derived is not None:
                return derived
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
            if not 0 < spec <= len(self) and spec not in self._synthetic:
                raise BTFKeyError(f"{self.what}: type id {spec} is out of range (1..{len(self)})")
            return spec
        tid = self._ids.get(spec)
        if tid is None:
            tid = self._ids[spec] = self._find_type(spec)
        return tid

    def _find_type(self, spec: str) -> int:
        name, wanted, by_word = self._types_named(spec)
        if len(by_word) == 1:
            return min(next(iter(by_word.values())))[-1]
        if by_word:
            which = ", ".join(repr(f"{w} {name}") for w in sorted(by_word))
            raise BTFKeyError(
                f"{self.what}: {name!r} names several kinds of type; ask for one of {which}"
            )
        raise self._no_type(spec, wanted)

    def _candidates(self, spec: str | int) -> list[int]:
        """Every type ``spec`` names, of any kind, in _find_type's order of preference."""
        if isinstance(spec, int):
            return [self._lookup(spec)]
        _, wanted, by_word = self._types_named(spec)
        if not by_word:
            raise self._no_type(spec, wanted)
        return [rank[-1] for rank in sorted(r for ranks in by_word.values() for r in ranks)]

    def _no_type(self, spec: str, wanted: frozenset[int] | None) -> BTFKeyError:
        return BTFKeyError(
            f"{self.what}: no type {spec!r}" + suggest(spec, self._spellings(wanted))
        )

    def _types_named(
        self, spec: str
    ) -> tuple[str, frozenset[int] | None, dict[str, list[tuple[bool, int, int]]]]:
        """(name, kinds asked for, kind word -> [rank]) of the types ``spec`` names; the least
        rank wins: (incomplete, -size, id). One name can hold several definitions (a kernel's
        BTF keeps each struct of that name whose layout differs); the largest is taken, as ktstr
        does, a declaration only when there is no definition, and ids settle ties."""
        word, _, rest = spec.strip().partition(" ")
        wanted = _KIND_WORDS.get(word) if rest.strip() else None
        name = rest.strip() if wanted is not None else spec.strip()
        by_word: dict[str, list[tuple[bool, int, int]]] = {}
        # surrogateescape: a name from argv with bytes that are not UTF-8 looks up those bytes.
        for tid in self._named(name.encode("utf-8", "surrogateescape")):
            rec = self._rec(tid)
            kinds = (STRUCT, UNION)[rec.kflag] if rec.kind == FWD else rec.kind
            if wanted is None or kinds in wanted:
                incomplete = rec.kind == FWD or (rec.kind in (ENUM, ENUM64) and not rec.vlen)
                size = rec.st if rec.kind in _SIZED else 0
                by_word.setdefault(_word(kinds), []).append((incomplete, -size, tid))
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
        found = self._sizes.get(tid)
        if found is None:
            found = self._sizes[tid] = self._measure(tid)
        return found

    def _measure(self, tid: int) -> int:
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
                tid, _, nelems = self._array(rec)
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

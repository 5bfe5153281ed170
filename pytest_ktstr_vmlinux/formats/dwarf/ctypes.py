"""A DWARF type entry as a C type expression: what BTF can resolve by name.

A variable's DW_AT_type is followed through pointers, qualifiers, arrays (their subranges give
the lengths) and function types (their parameters) down to a name: a struct, union or enum tag,
a typedef, a base type. The name ends the walk, so only the few entries on the way are decoded,
never a struct's members. The result is a typeexpr tree; its spelling is what the globals table
stores and BTF resolves when the variable is read.

Bounds: a chain longer than MAX_CHAIN or one that comes back to an entry it passed is a
DwarfError, as is a reference outside the unit (another unit's entries are reached through
``load``, which checks the offset is in .debug_info).
"""

from __future__ import annotations

from collections.abc import Callable

from ..btf.typeexpr import (
    Array,
    Base,
    Function,
    Pointer,
    Tagged,
    Typedef,
    TypeExpr,
    TypeExpressionError,
    Void,
    parse,
    qualify,
)
from .abbrevs import (
    AT_COUNT,
    AT_LOWER_BOUND,
    AT_NAME,
    AT_PROTOTYPED,
    AT_TYPE,
    AT_UPPER_BOUND,
    DwarfError,
    uleb,
)
from .dies import (
    Foreign,
    Strings,
    Unit,
    Value,
    read_attrs,
)
from .entries import children

(TAG_ARRAY, TAG_CLASS, TAG_ENUM, TAG_PARAMETER, TAG_POINTER, TAG_REFERENCE) = (1, 2, 4, 5, 15, 16)
(TAG_STRUCT, TAG_SUBROUTINE, TAG_TYPEDEF, TAG_UNION, TAG_VARIADIC) = (0x13, 0x15, 0x16, 0x17, 0x18)
(TAG_SUBRANGE, TAG_BASE, TAG_CONST, TAG_VOLATILE, TAG_RESTRICT) = (0x21, 0x24, 0x26, 0x35, 0x37)
TAG_ATOMIC, TAG_UNSPECIFIED, TAG_IMMUTABLE = 0x47, 0x3B, 0x4B
_TAGGED = {TAG_STRUCT: "struct", TAG_CLASS: "struct", TAG_UNION: "union", TAG_ENUM: "enum"}
_QUALIFIERS = {TAG_CONST: "const", TAG_VOLATILE: "volatile", TAG_RESTRICT: "restrict"}
_TRANSPARENT = frozenset({TAG_ATOMIC, TAG_IMMUTABLE})  # no BTF kind: the type under it
MAX_CHAIN = 64


class Unnamed(DwarfError):
    """A variable's type reaches a struct, union or enum without a name: BTF finds types by
    name, so such a variable's type must be named by the user."""


Load = Callable[[int], Unit]  # the unit holding a .debug_info offset


class TypeNamer:
    """C type expressions of the type entries of one unit, each worked out once."""

    def __init__(self, unit: Unit, strings: Strings, load: Load) -> None:
        self.unit, self.strings, self.load = unit, strings, load
        self._memo: dict[int, TypeExpr] = {}

    def expression(self, offset: int | None) -> TypeExpr:
        """The type at .debug_info ``offset`` (None: void, as DWARF omits DW_AT_type)."""
        return self._walk(offset, ())

    def _walk(self, offset: int | None, path: tuple[int, ...]) -> TypeExpr:
        if offset is None:
            return Void()
        found = self._memo.get(offset)
        if found is not None:
            return found
        if offset in path or len(path) >= MAX_CHAIN:
            why = "comes back to itself" if offset in path else f"is over {MAX_CHAIN} long"
            raise DwarfError(f"{self.unit}: the type chain through {offset:#x} {why}")
        unit = self.unit if self._inside(self.unit, offset) else self.load(offset)
        tag, attrs = _entry(unit, offset, self.strings)
        t = self._make(unit, offset, tag, attrs, (*path, offset))
        self._memo[offset] = t
        return t

    @staticmethod
    def _inside(unit: Unit, offset: int) -> bool:
        return unit.offset + unit.first_die <= offset < unit.offset + len(unit.data)

    def _make(
        self, unit: Unit, offset: int, tag: int, attrs: dict[int, Value], path: tuple[int, ...]
    ) -> TypeExpr:
        target = _ref(unit, attrs.get(AT_TYPE), offset)
        name = attrs.get(AT_NAME)
        if tag in _TAGGED:
            if not isinstance(name, str) or not name:
                raise Unnamed(f"{unit}: the type at {offset:#x} is an anonymous {_TAGGED[tag]}")
            return Tagged(_TAGGED[tag], name)
        if tag == TAG_TYPEDEF:
            return Typedef(_text(name, unit, offset))
        if tag == TAG_BASE:
            return _base(_text(name, unit, offset))
        if tag == TAG_UNSPECIFIED:
            return Void()
        if tag in (TAG_POINTER, TAG_REFERENCE):
            return Pointer(self._walk(target, path))
        if tag in _QUALIFIERS:
            return qualify(self._walk(target, path), _QUALIFIERS[tag])
        if tag in _TRANSPARENT:
            return self._walk(target, path)
        if tag == TAG_ARRAY:
            t = self._walk(target, path)
            lengths = [_length(a) for a in self._children(unit, offset, TAG_SUBRANGE)]
            for length in reversed(lengths or [None]):
                t = Array(t, length)
            return t
        if tag == TAG_SUBROUTINE:
            returns = self._walk(target, path)
            if not attrs.get(AT_PROTOTYPED):
                return Function(returns, None)
            params, variadic = [], False
            for child_tag, child in self._entries(unit, offset):
                if child_tag == TAG_PARAMETER:
                    params.append(self._walk(_ref(unit, child.get(AT_TYPE), offset), path))
                variadic |= child_tag == TAG_VARIADIC
            return Function(returns, tuple(params), variadic)
        raise DwarfError(f"{unit}: the type at {offset:#x} has tag {tag:#x}, not a C type")

    def _entries(self, unit: Unit, offset: int) -> list[tuple[int, dict[int, Value]]]:
        return [
            (abbrev.tag, read_attrs(unit, pos, abbrev, self.strings)[0])
            for _, abbrev, pos in children(unit, offset - unit.offset)
        ]

    def _children(self, unit: Unit, offset: int, tag: int) -> list[dict[int, Value]]:
        return [attrs for child_tag, attrs in self._entries(unit, offset) if child_tag == tag]


def _entry(unit: Unit, offset: int, strings: Strings) -> tuple[int, dict[int, Value]]:
    """(tag, attributes) of the entry at .debug_info ``offset`` in ``unit``."""
    at = offset - unit.offset
    with unit.reading(f"the entry at {offset:#x}"):
        code, pos = uleb(unit.data, at)
        abbrev = unit.abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(
                f"{unit}: entry at {offset:#x} has abbreviation {code}, not in its table"
            )
        return abbrev.tag, read_attrs(unit, pos, abbrev, strings)[0]


def _ref(unit: Unit, value: Value | None, offset: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, Foreign):
        raise DwarfError(
            f"{unit}: the entry at {offset:#x} refers to a type in another file or type unit"
            f" (form {value.form:#x}), which is not read"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise DwarfError(f"{unit}: the entry at {offset:#x} has a DW_AT_type that is no reference")
    return value


def _text(name: Value | None, unit: Unit, offset: int) -> str:
    if not isinstance(name, str) or not name:
        raise DwarfError(f"{unit}: the type at {offset:#x} has no name")
    return name


def _base(name: str) -> TypeExpr:
    """A base type by its DWARF name: C's keywords when it is spelled with them ("long
    unsigned int"), else the name as BTF holds it ("_Float16", "__int128 unsigned")."""
    try:
        t = parse(name)
    except TypeExpressionError:
        t = None
    if isinstance(t, (Base, Void)):
        return t
    return Typedef(name) if name.isidentifier() else Base(name)


def _length(subrange: dict[int, Value]) -> int | None:
    """An array dimension's length from its subrange: DW_AT_count, else the bounds; None when
    there is none (an array declared with []) or it is not a constant (a variable length)."""
    count = subrange.get(AT_COUNT)
    if isinstance(count, int) and not isinstance(count, bool):
        return count if count >= 0 else None
    upper = subrange.get(AT_UPPER_BOUND)
    lower = subrange.get(AT_LOWER_BOUND, 0)
    if not isinstance(upper, int) or isinstance(upper, bool) or not isinstance(lower, int):
        return None
    if upper in (0xFFFFFFFF, (1 << 64) - 1, -1):  # upper bound -1: a zero-length array
        return 0
    return max(upper - lower + 1, 0)

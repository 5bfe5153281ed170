"""Types named by C expressions, and the overlay that holds the ones BTF does not.

``btf.type("struct scx_sched *")``, ``sizeof("u64[4]")``, ``type("unsigned long")``: a name
that is no type of the BTF but parses as a C type expression (``typeexpr.py``) is resolved part by
part. Named parts (struct, union, enum, typedef and base type names) must be BTF's own types;
the derived parts (pointers, arrays, qualifiers, function prototypes) are made here when asked
for, as records of the kinds BTF has (PTR, ARRAY, CONST, ...) with ids after the BTF's last.

Invariant: a derived id answers every query a real id does (type, sizeof, type_name, real types
through typedefs, member paths through arrays), because it lives in the table's own record
lookup (``table.py`` ``_rec``), not beside it; and one expression always gives one id (a derived
type is made once per BTF, under a lock, and found again by its parts). Derived types are never
stored: they cost nothing until named, and the BTF artifact stays what the kernel holds.
"""

from __future__ import annotations

from ...errors import KernelArtifactError
from .format import ARRAY, CONST, FLOAT, FUNC_PROTO, INT, PTR, RESTRICT, VOLATILE
from .paths import MemberPaths
from .table import _Rec
from .typeexpr import (
    Array,
    Base,
    Pointer,
    Qualified,
    Tagged,
    Typedef,
    TypeExpr,
    TypeExpressionError,
    Void,
    base_spellings,
    is_expression,
    parse,
)
from .types import BTFKeyError

_QUALIFIER_KINDS = {"const": CONST, "volatile": VOLATILE, "restrict": RESTRICT}
# Not a valid index type, but nothing reads it: BTF's own arrays name an int type there.
_NO_INDEX = 0


class Overlay(MemberPaths):
    """The type table and member paths, with C type expressions resolved into derived ids."""

    def _find_type(self, spec: str) -> int:
        try:
            return super()._find_type(spec)
        except BTFKeyError:
            if not is_expression(spec):
                raise
        try:
            expression = parse(spec)
        except TypeExpressionError as e:
            raise BTFKeyError(f"{self.what}: {e}") from None
        return self._resolve_expression(expression)

    def _resolve_expression(self, t: TypeExpr) -> int:
        """The id of the type ``t`` spells: BTF's own for names, derived for the rest."""
        if isinstance(t, Void):
            return 0
        if isinstance(t, Tagged):
            return super()._find_type(f"{t.word} {t.name}")
        if isinstance(t, Typedef):
            if self._types_named(f"typedef {t.name}")[2]:
                return super()._find_type(f"typedef {t.name}")
            return super()._find_type(t.name)
        if isinstance(t, Base):
            return self._base(t.name)
        if isinstance(t, Qualified):
            return self._derive(_QUALIFIER_KINDS[t.qualifier], self._resolve_expression(t.target))
        if isinstance(t, Pointer):
            return self._derive(PTR, self._resolve_expression(t.target))
        if isinstance(t, Array):
            element = self._resolve_expression(t.element)
            try:
                self._size(element)
            except KernelArtifactError:
                raise BTFKeyError(
                    f"{self.what}: an array of {self.type_name(element)}, which has no size"
                ) from None
            return self._derive(ARRAY, element, (element, _NO_INDEX, t.length or 0))
        returns = self._resolve_expression(t.returns)
        params = tuple(self._resolve_expression(p) for p in t.params or ())
        return self._derive(FUNC_PROTO, returns, params + ((0,) if t.variadic else ()))

    def _base(self, name: str) -> int:
        """A base type by any spelling a producer gives it (gcc's, clang's)."""
        spellings = base_spellings(name)
        for spelling in spellings:
            for tid in self._named(spelling.encode()):
                if self._rec(tid).kind in (INT, FLOAT):
                    return tid
        shown = " or ".join(map(repr, spellings))
        raise BTFKeyError(f"{self.what}: no base type {shown}")

    def _derive(self, kind: int, target: int, data: tuple[int, ...] = ()) -> int:
        """The derived type of ``kind`` over ``target`` (with an array's or a prototype's
        ``data``), made on first use."""
        key = (kind, target, data)
        found = self._made.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._made.get(key)
            if found is None:
                found = len(self._offsets) + len(self._synthetic)
                vlen = len(data) if kind == FUNC_PROTO else 0
                st = 0 if kind == ARRAY else target
                self._synthetic[found] = _Rec(kind, vlen, 0, 0, st, -found)
                if data:
                    self._derived[found] = data
                self._made[key] = found
        return found

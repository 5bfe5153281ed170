"""drgn's conversions and comparisons of a value that may be a scalar: ``Scalar``, which Object is.

``int(obj)``, ``float(obj)``, ``bool(obj)``, ``obj == 2``, ``a < b`` use the value a subclass's
``_scalar`` gives, and that raises TypeError for a struct, union or array, which has no single
value: a comparison is never a silent ``False``. Not hashable: the value can change under it.
"""

from __future__ import annotations


class Scalar:
    """A value that compares and converts as the number ``_scalar`` reads."""

    __slots__ = ()

    def _scalar(self, doing: str) -> int | float:
        """The value as a number; TypeError saying it cannot ``doing`` when there is none."""
        raise NotImplementedError

    def type_name_(self) -> str:
        raise NotImplementedError

    def _other(self, other: object, doing: str) -> int | float | None:
        if isinstance(other, Scalar):
            return other._scalar(doing)
        if isinstance(other, (int, float)):
            return other
        return None

    def __eq__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") == theirs

    def __ne__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") != theirs

    def __lt__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") < theirs

    def __le__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") <= theirs

    def __gt__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") > theirs

    def __ge__(self, other: object) -> bool:
        theirs = self._other(other, "compare")
        return NotImplemented if theirs is None else self._scalar("compare") >= theirs

    # As in drgn, an Object is no dict key.
    __hash__ = None  # type: ignore[assignment]

    def __int__(self) -> int:
        return int(self._scalar("convert to int"))

    def __index__(self) -> int:
        value = self._scalar("use as an index")
        if isinstance(value, float):
            raise TypeError(f"{self.type_name_()} is a floating-point type, not an integer")
        return value

    def __float__(self) -> float:
        return float(self._scalar("convert to float"))

    def __bool__(self) -> bool:
        return bool(self._scalar("test the truth of"))

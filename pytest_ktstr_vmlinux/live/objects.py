"""A value in the live kernel typed by BTF: ``Object``.

An Object is an address and a type, nothing read yet: member access, indexing and pointer
dereference make new Objects by arithmetic on BTF offsets, and only ``value()``/``string()``
read guest memory, and then only the bytes of that member. A pointer is dereferenced when a
member is looked up through it (``task.mm.owner``), as in C's ``->``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Protocol

from ..formats.btf.queries import BTF, parse_member_path
from ..formats.btf.types import BTFKeyError, BTFType
from .errors import LiveKernelError, LiveMemoryError, MissingMemberError

_TRANSPARENT = frozenset({"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"})
_MISSING = object()
STRING_LIMIT = 4096  # a char * is read up to its NUL, at most this far


class Memory(Protocol):
    """What an Object reads through (a LiveKernel)."""

    btf: BTF

    def read(self, address: int, size: int, physical: bool = False) -> bytes: ...
    def read_u64(self, address: int) -> int: ...
    def read_string(self, address: int, limit: int) -> bytes: ...
    def real_type(self, tid: int) -> BTFType: ...
    def view(self, address: int, size: int) -> memoryview: ...


class Object:
    """``address``, ``type`` (the BTF type as declared); ``value()``, ``string()``,
    ``obj.member``, ``obj["a.b[2].c"]``, ``obj[3]``, ``deref()``, ``get(path, default)``."""

    __slots__ = ("_bit", "_kernel", "_width", "address", "fixed", "type_id")

    def __init__(
        self,
        kernel: Memory,
        type_id: int,
        address: int,
        bit: int = 0,
        width: int = 0,
        fixed: bool = True,
    ) -> None:
        self._kernel, self.type_id, self.address = kernel, type_id, address
        self._bit, self._width = bit, width  # a bitfield: its bits from ``address``
        # Whether the address is fixed: reached without following a pointer, which can change.
        self.fixed = fixed

    # --- the type ---------------------------------------------------------------------------

    @property
    def type(self) -> BTFType:
        return self._kernel.btf.type(self.type_id)

    @property
    def type_name(self) -> str:
        return self._kernel.btf.type_name(self.type_id)

    def _real(self) -> BTFType:
        """The type with typedefs and qualifiers stripped (a typedef chain of any length)."""
        return self._kernel.real_type(self.type_id)

    def __repr__(self) -> str:
        return f"Object({self.type_name!r} at {self.address:#x})"

    # --- navigating -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Object:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.member(name)

    def __getitem__(self, key: int | str) -> Object:
        if isinstance(key, int):
            return self.index(key)
        return self.member(key)

    def member(self, path: str) -> Object:
        """The member at ``path`` (dots, [index]); pointers on the way are dereferenced."""
        try:
            parts = parse_member_path(path)
        except ValueError as e:
            raise LiveKernelError(str(e)) from None
        current = self
        for name, indices in parts:
            if name is not None:
                current = current._field(name)
            for index in indices:
                current = current.index(index)
        return current

    def get(self, path: str, default: Any = None) -> Any:
        """The member at ``path``, or ``default`` when the type has no such member (a field
        that moved between kernel releases); an unreadable address still raises."""
        try:
            return self.member(path)
        except MissingMemberError:
            return default

    def _field(self, name: str) -> Object:
        real = self._real()
        if real.kind == "PTR":
            return self.deref()._field(name)
        if real.kind not in ("STRUCT", "UNION"):
            raise MissingMemberError(
                f"{self.type_name} at {self.address:#x} is not a struct or union: it has no"
                f" member {name!r}"
            )
        try:
            m = self._kernel.btf.member(real.id, name)
        except BTFKeyError as e:
            raise MissingMemberError(str(e)) from None
        if m.bitfield_size:
            bits = self._bit + m.bit_offset
            start = self.address + bits // 8
            return Object(self._kernel, m.type_id, start, bits % 8, m.bitfield_size, self.fixed)
        return Object(self._kernel, m.type_id, self.address + m.bit_offset // 8, fixed=self.fixed)

    def index(self, i: int) -> Object:
        """Element ``i`` of an array (bounds checked), or ``ptr[i]`` of a pointer."""
        real = self._real()
        if real.kind == "ARRAY":
            assert real.target is not None
            size = self._kernel.btf.sizeof(real.target)
            count = self._kernel.btf.sizeof(real.id) // size if size else 0
            if count and not 0 <= i < count:
                raise LiveKernelError(f"index {i} is out of range for {self.type_name}")
            return Object(self._kernel, real.target, self.address + i * size, fixed=self.fixed)
        if real.kind == "PTR":
            target = self.deref()
            return Object(
                self._kernel, target.type_id, target.address + i * target.size, fixed=False
            )
        raise LiveKernelError(f"{self.type_name} at {self.address:#x} cannot be indexed")

    def deref(self) -> Object:
        """What a pointer points to; LiveMemoryError for NULL."""
        real = self._real()
        if real.kind != "PTR":
            raise LiveKernelError(f"{self.type_name} at {self.address:#x} is not a pointer")
        target = self._kernel.read_u64(self.address)
        if target == 0:
            raise LiveMemoryError(
                f"NULL pointer: {self.type_name} at {self.address:#x} is NULL", target
            )
        return Object(self._kernel, real.target or 0, target, fixed=False)

    def container_of(self, type_spec: str | int, member: str) -> Object:
        """The ``type_spec`` whose ``member`` this object is (list_head rings): C's container_of."""
        btf = self._kernel.btf
        tid = btf.type(type_spec).id
        target = self.deref() if self._real().kind == "PTR" else self
        return Object(self._kernel, tid, target.address - btf.offsetof(tid, member))

    # --- reading ----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._kernel.btf.sizeof(self.type_id)

    def read(self) -> bytes:
        """This object's bytes, and no more."""
        return self._kernel.read(self.address, self.size)

    def value(self) -> Any:
        """int, bool, float, (name, value) for an enum, the address for a pointer, bytes for a
        char array, a list for another array, a dict for a struct or union."""
        real = self._real()
        kind = real.kind
        if kind == "INT":
            return self._int(real)
        if kind in ("ENUM", "ENUM64"):
            signed = any(v < 0 for _, v in real.enumerators)
            number = int.from_bytes(self.read(), "little", signed=signed)
            names = [n for n, v in real.enumerators if v == number]
            return (names[0] if names else None, number)
        if kind == "PTR":
            return self._kernel.read_u64(self.address)
        if kind == "FLOAT":
            data = self.read()
            if len(data) not in (4, 8):  # long double: no Python float holds it
                return data
            return struct.unpack("<f" if len(data) == 4 else "<d", data)[0]
        if kind == "ARRAY":
            assert real.target is not None
            if self._is_char(real.target):
                return self.read()
            count = self.size // max(self._kernel.btf.sizeof(real.target), 1)
            return [self.index(i).value() for i in range(count)]
        if kind in ("STRUCT", "UNION"):
            return {m.name: self._field(m.name).value() for m in _named_members(self, real)}
        raise LiveKernelError(f"{self.type_name} at {self.address:#x} has no value to read")

    def reader(self) -> Callable[[], Any]:
        """A function that reads ``value()`` again: for an integer, an enum's number or a
        pointer, a view of its bytes in guest RAM taken now and read as often as called (a
        fraction of a microsecond); for anything else, ``value``. The view does not notice a
        guest that has shut down: it goes on reading the RAM's last contents."""
        real = self._real()
        if self._width or real.kind not in ("INT", "ENUM", "ENUM64", "PTR"):
            return self.value
        signed = real.kind == "INT" and self._kernel.btf.int_encoding(real.id)[1]
        view = self._kernel.view(self.address, self.size)
        if real.kind == "INT" and self._kernel.btf.int_encoding(real.id)[2]:
            return lambda: view[0] != 0
        return lambda: int.from_bytes(view, "little", signed=signed)

    def _int(self, real: BTFType) -> int | bool:
        _, signed, is_bool = self._kernel.btf.int_encoding(real.id)
        if self._width:
            nbytes = (self._bit + self._width + 7) // 8
            raw = int.from_bytes(self._kernel.read(self.address, nbytes), "little")
            number = raw >> self._bit & ((1 << self._width) - 1)
            if signed and number >> (self._width - 1):
                number -= 1 << self._width
            return number
        number = int.from_bytes(self.read(), "little", signed=signed)
        return bool(number) if is_bool else number

    def _is_char(self, tid: int) -> bool:
        real = self._kernel.real_type(tid)
        return real.kind == "INT" and real.size == 1

    def string(self) -> str:
        """A char array up to its NUL, or the string a ``char *`` points to."""
        real = self._real()
        if real.kind == "ARRAY" and real.target is not None and self._is_char(real.target):
            data = self.read()
        elif real.kind == "PTR" and real.target is not None and self._is_char(real.target):
            data = self._kernel.read_string(self.deref().address, STRING_LIMIT)
        else:
            raise LiveKernelError(f"{self.type_name} at {self.address:#x} is not a string")
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def __int__(self) -> int:
        value = self.value()
        return int(value[1] if isinstance(value, tuple) else value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Object):
            return (self.address, self.type_id) == (other.address, other.type_id)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.address, self.type_id))


def _named_members(obj: Object, real: BTFType) -> list[Any]:
    """Members by name, with those of anonymous struct/union members brought up."""
    out = []
    for m in real.members:
        if m.name:
            out.append(m)
        else:
            inner = obj._kernel.real_type(m.type_id)
            if inner.kind in ("STRUCT", "UNION"):
                out.extend(_named_members(obj, inner))
    return out

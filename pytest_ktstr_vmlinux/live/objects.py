"""A value in the live kernel typed by BTF: ``Object``, with drgn's conventions.

An Object is an address and a type, nothing read yet: member access, indexing and pointer
dereference make new Objects by arithmetic on BTF offsets (u64, wrapping as the kernel's does),
and only ``value_()``/``string_()``/``read_()`` read guest memory, and then only the bytes of that
member. A pointer is dereferenced when a member is looked up through it (``task.mm.owner``, C's
``->``).

The invariant that keeps C's names usable: every attribute of Object's own ends in ``_``
(``address_``, ``type_``, ``value_()``, ...) and no C member does, so ``obj.NAME`` is always the
member NAME: ``page.index``, ``bpf_prog.type``, ``kmem_cache.size``. A member that does end in
``_`` is reached with ``member_("name_")`` or ``obj["name_"]``.

Speed: what a (type, member path) resolves to, through pointers, is the BTF's ``route``, kept
per pair; sizes and integer encodings are kept per type id; so a member lookup is a dict hit
and one read per pointer on the way, and ``value_()`` of an integer one read.

Scalars compare and convert by value (``rq.nr_running == 2``, ``int(obj)``, ``bool(ptr)``); a
struct, union or array has no single value to compare, which is a ``TypeError``, never a silent
``False`` (``scalar.py``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import KernelArtifactError
from ..formats.address import U64_MASK
from ..formats.btf.queries import BTF, parse_member_path
from ..formats.btf.types import BitfieldError, BTFKeyError, BTFType
from .errors import LiveKernelError, LiveMemoryError, MissingMemberError
from .scalar import Scalar

_TRANSPARENT = frozenset({"TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"})
_SCALAR = frozenset({"INT", "ENUM", "ENUM64", "PTR", "FLOAT"})
STRING_LIMIT = 4096  # a char * is read up to its NUL, at most this far


class Memory(Protocol):
    """What an Object reads through (a LiveKernel)."""

    btf: BTF

    def read(self, address: int, size: int, physical: bool = False) -> bytes: ...
    def read_u64(self, address: int) -> int: ...
    def read_string(self, address: int, limit: int) -> bytes: ...
    def real_type(self, tid: int) -> BTFType: ...
    def view(self, address: int, size: int) -> memoryview: ...


class Enumerator(int):
    """An enum's value: an ``int`` in every way (it compares, hashes and formats as its number)
    that also carries ``name``, the enumerator with that value (None when the enum has none)::

        state = live["system_state"].value_()  # an enum system_states
        state.name, int(state)  # "SYSTEM_RUNNING" and its value
    """

    #: The enumerator's name, None when the enum has no enumerator of this value.
    name: str | None

    def __new__(cls, value: int, name: str | None) -> Enumerator:
        made = super().__new__(cls, value)
        made.name = name
        return made

    def __repr__(self) -> str:
        return f"{self.name or '?'}({int(self)})"


class Object(Scalar):
    """A value in the live kernel, as drgn's Object: an address and a BTF type, read only when
    asked. Members are attributes (``obj.name``) or paths (``obj["a.b[2].c"]``), elements are
    indexes (``obj[3]``), and a member looked up through a pointer dereferences it, as C's
    ``->`` does; everything Object itself has ends in ``_``, so no C member is hidden::

        task = find_task(live, 1)
        task.comm.string_()  # "init"
        task.se.vruntime.value_()  # an int
        task.real_parent.pid.value_()  # through a pointer
        task.address_, task.type_name_()  # 0xffff..., "struct task_struct"
        task.prio < 120, bool(task.mm)  # scalars compare and convert by value

    Scalars (integers, enums, pointers, floats) compare and convert by value; a struct, union or
    array has no single value, and comparing one is a TypeError. ``get_(path, default)`` reads a
    member that moved between releases. Objects come from ``LiveKernel.object``, ``per_cpu``
    and the helpers.
    """

    __slots__ = ("_bit", "_kernel", "_type_id", "_width", "address_", "fixed_")

    def __init__(
        self,
        kernel: Memory,
        type_id: int,
        address: int,
        bit: int = 0,
        width: int = 0,
        fixed: bool = True,
    ) -> None:
        self._kernel, self._type_id = kernel, type_id
        #: The object's address, kernel virtual.
        self.address_ = address & U64_MASK
        self._bit, self._width = bit, width  # a bitfield: its bits from ``address_``
        #: Whether the address is fixed: reached without following a pointer, which can change.
        self.fixed_ = fixed

    # --- the type ---------------------------------------------------------------------------

    @property
    def type_(self) -> BTFType:
        """The BTF type as declared (typedefs and qualifiers kept)."""
        return self._kernel.btf.type(self._type_id)

    @property
    def type_id_(self) -> int:
        """The id of the type as declared, in the kernel's BTF."""
        return self._type_id

    @property
    def prog_(self) -> Memory:
        """What this object reads through: the LiveKernel (drgn's ``prog_``), which helpers
        such as ``task_state_to_char`` ask for the kernel's symbols."""
        return self._kernel

    def type_name_(self) -> str:
        """The type as C spells it: ``"struct rq"``, ``"u64"``, ``"char *"``."""
        return self._kernel.btf.type_name(self._type_id)

    def _real(self) -> BTFType:
        """The type with typedefs and qualifiers stripped (a typedef chain of any length)."""
        return self._kernel.real_type(self._type_id)

    def _size(self) -> int:
        return self._kernel.btf.sizeof(self._type_id)

    def __repr__(self) -> str:
        return f"Object({self.type_name_()!r}, address_={self.address_:#x})"

    def __dir__(self) -> list[str]:
        real = self._real()
        if real.kind == "PTR" and real.target:
            real = self._kernel.real_type(real.target) if real.target else real
        names = [m.name for m in _named_members(self._kernel, real)]
        return sorted({*names, *(n for n in type(self).__dict__ if n.endswith("_"))})

    # --- navigating -------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Object:
        # Only Python's own dunders are refused: C has members like task_struct.__state.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self.member_(name)

    def __getitem__(self, key: int | str) -> Object:
        if isinstance(key, int):
            return self._element(key)
        return self.member_(key)

    def member_(self, path: str) -> Object:
        """The member at ``path`` (dots, [index]); pointers on the way are dereferenced."""
        kernel = self._kernel
        try:
            # Resolved once per (type, path) by the BTF; only the pointers are read each time.
            offsets, tid, width = kernel.btf.route(self._type_id, path)
        except (BTFKeyError, ValueError, KernelArtifactError):
            return self._walk(path)  # step by step, to say what is wrong where
        address, fixed = self.address_, self.fixed_
        if len(offsets) > 1:
            fixed = False
            for bits in offsets[:-1]:
                target = kernel.read_u64((address + (bits >> 3)) & U64_MASK)
                if not target:
                    return self._walk(path)  # names the NULL pointer
                address = target
        bits = offsets[-1]
        if width:
            return Object(kernel, tid, address + (bits >> 3), bits & 7, width, fixed)
        return Object(kernel, tid, address + (bits >> 3), fixed=fixed)

    def _walk(self, path: str) -> Object:
        """``member_`` one step at a time: slower, and its errors say which step failed."""
        try:
            parts = parse_member_path(path)
        except ValueError as e:
            raise LiveKernelError(str(e)) from None
        current = self
        for name, indices in parts:
            if name is not None:
                current = current._field(name)
            for index in indices:
                current = current._element(index)
        return current

    def get_(self, path: str, default: Any = None) -> Any:
        """The member at ``path``, or ``default`` when the type has no such member (a field
        that moved between kernel releases); an unreadable address still raises."""
        try:
            return self.member_(path)
        except MissingMemberError:
            return default

    def _field(self, name: str) -> Object:
        real = self._real()
        if real.kind == "PTR":
            return self.deref_()._field(name)
        if real.kind not in ("STRUCT", "UNION"):
            raise MissingMemberError(
                f"{self.type_name_()} at {self.address_:#x} is not a struct or union: it has no"
                f" member {name!r}"
            )
        try:
            m = self._kernel.btf.member(real.id, name)
        except BTFKeyError as e:
            raise MissingMemberError(str(e)) from None
        if m.bitfield_size:
            bits = self._bit + m.bit_offset
            start = self.address_ + bits // 8
            return Object(self._kernel, m.type_id, start, bits % 8, m.bitfield_size, self.fixed_)
        return Object(self._kernel, m.type_id, self.address_ + m.bit_offset // 8, fixed=self.fixed_)

    def _element(self, i: int) -> Object:
        """Element ``i`` of an array (bounds checked), or ``ptr[i]`` of a pointer (C's)."""
        real = self._real()
        if real.kind == "ARRAY":
            assert real.target is not None
            size = self._kernel.btf.sizeof(real.target)
            count = self._kernel.btf.sizeof(real.id) // size if size else 0
            if count and not 0 <= i < count:
                raise LiveKernelError(f"index {i} is out of range for {self.type_name_()}")
            return Object(self._kernel, real.target, self.address_ + i * size, fixed=self.fixed_)
        if real.kind == "PTR":
            target = self.deref_()
            size = target._size()
            return Object(self._kernel, target._type_id, target.address_ + i * size, fixed=False)
        raise LiveKernelError(f"{self.type_name_()} at {self.address_:#x} cannot be indexed")

    def __iter__(self) -> Iterator[Object]:
        """The elements of an array."""
        for i in range(len(self)):
            yield self._element(i)

    def __len__(self) -> int:
        """The number of elements of an array (drgn's ``len()``)."""
        real = self._real()
        if real.kind != "ARRAY" or real.target is None:
            raise TypeError(f"{self.type_name_()} is not an array: it has no length")
        size = self._kernel.btf.sizeof(real.target)
        return self._kernel.btf.sizeof(real.id) // size if size else 0

    def deref_(self) -> Object:
        """What a pointer points to; LiveMemoryError for NULL."""
        real = self._real()
        if real.kind != "PTR":
            raise LiveKernelError(f"{self.type_name_()} at {self.address_:#x} is not a pointer")
        target = self._kernel.read_u64(self.address_)
        if target == 0:
            raise LiveMemoryError(
                f"NULL pointer: {self.type_name_()} at {self.address_:#x} is NULL", target
            )
        return Object(self._kernel, real.target or 0, target, fixed=False)

    # --- reading ----------------------------------------------------------------------------

    def read_(self) -> bytes:
        """This object's bytes, and no more."""
        return self._kernel.read(self.address_, self._size())

    def value_(self) -> Any:
        """int, bool, float, an ``Enumerator`` (an int with its ``name``) for an enum, the
        address for a pointer, bytes for a char array, a list for another array, a dict for a
        struct or union."""
        real = self._kernel.real_type(self._type_id)
        kind = real.kind
        if kind == "INT":
            return self._int(real)
        if kind in ("ENUM", "ENUM64"):
            signed = any(v < 0 for _, v in real.enumerators)
            number = int.from_bytes(self.read_(), "little", signed=signed)
            names = [n for n, v in real.enumerators if v == number]
            return Enumerator(number, names[0] if names else None)
        if kind == "PTR":
            return self._kernel.read_u64(self.address_)
        if kind == "FLOAT":
            data = self.read_()
            if len(data) not in (4, 8):  # long double: no Python float holds it
                return data
            return struct.unpack("<f" if len(data) == 4 else "<d", data)[0]
        if kind == "ARRAY":
            assert real.target is not None
            if self._is_char(real.target):
                return self.read_()
            return [element.value_() for element in self]
        if kind in ("STRUCT", "UNION"):
            members = _named_members(self._kernel, real)
            return {m.name: self._field(m.name).value_() for m in members}
        raise LiveKernelError(f"{self.type_name_()} at {self.address_:#x} has no value to read")

    def reader_(self) -> Callable[[], Any]:
        """A function that reads ``value_()`` again: for an integer, an enum's number or a
        pointer, a view of its bytes in guest RAM taken now and read as often as called (a
        fraction of a microsecond); for anything else, ``value_``. The view does not notice a
        guest that has shut down: it goes on reading the RAM's last contents."""
        real = self._real()
        if self._width or real.kind not in ("INT", "ENUM", "ENUM64", "PTR"):
            return self.value_
        signed = real.kind == "INT" and self._kernel.btf.int_encoding(real.id)[1]
        view = self._kernel.view(self.address_, self._size())
        if real.kind == "INT" and self._kernel.btf.int_encoding(real.id)[2]:
            return lambda: view[0] != 0
        return lambda: int.from_bytes(view, "little", signed=signed)

    def _int(self, real: BTFType) -> int | bool:
        kernel = self._kernel
        _, signed, is_bool = kernel.btf.int_encoding(real.id)
        if self._width:
            nbytes = (self._bit + self._width + 7) // 8
            raw = int.from_bytes(kernel.read(self.address_, nbytes), "little")
            number = raw >> self._bit & ((1 << self._width) - 1)
            if signed and number >> (self._width - 1):
                number -= 1 << self._width
            return number
        # An INT's own size: the declared type's (a typedef of it) is the same.
        number = int.from_bytes(kernel.read(self.address_, real.size or 0), "little", signed=signed)
        return bool(number) if is_bool else number

    def _is_char(self, tid: int) -> bool:
        real = self._kernel.real_type(tid)
        return real.kind == "INT" and real.size == 1

    def string_(self) -> str:
        """A char array up to its NUL, or the string a ``char *`` points to."""
        real = self._real()
        if real.kind == "ARRAY" and real.target is not None and self._is_char(real.target):
            data = self.read_()
        elif real.kind == "PTR" and real.target is not None and self._is_char(real.target):
            target = self.deref_().address_
            data = self._kernel.read_string(target, STRING_LIMIT + 1)
            if len(data) > STRING_LIMIT:  # no NUL where one was due: never cut it silently
                raise LiveKernelError(
                    f"{self.type_name_()} at {self.address_:#x}: no NUL ends the string at"
                    f" {target:#x} within {STRING_LIMIT} bytes (a longer string, or a pointer"
                    " to something else); read_() its bytes to see them"
                )
        else:
            raise LiveKernelError(f"{self.type_name_()} at {self.address_:#x} is not a string")
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")

    # --- a scalar as a Python number (drgn's conversions and comparisons: scalar.py) --------

    def _scalar(self, doing: str) -> int | float:
        real = self._real()
        if real.kind in _SCALAR:
            value = self.value_()
            if isinstance(value, (int, float)):
                return value
        raise TypeError(
            f"cannot {doing} {self.type_name_()} at {self.address_:#x}: a"
            f" {real.kind.lower()} has no single value (compare its members, or value_())"
        )


def container_of(ptr: Object, type: str | int, member: str) -> Object:
    """The ``type`` whose ``member`` ``ptr`` points to (or is): C's and drgn's container_of,
    as for the nodes of a ``list_head`` ring::

        for node in list_for_each(live["init_task"].tasks):
            task = container_of(node, "struct task_struct", "tasks")
            print(task.pid.value_(), task.comm.string_())

    ``member`` may be a path (``"pid_links[0]"``, ``"se.run_node"``).
    """
    kernel = ptr._kernel
    btf = kernel.btf
    try:
        tid = btf.type(type).id
        offset = btf.offsetof(tid, member)
    except BTFKeyError as e:
        raise MissingMemberError(str(e)) from None
    except BitfieldError as e:
        raise LiveKernelError(f"container_of({type!r}, {member!r}): {e}") from None
    address = ptr.deref_().address_ if ptr._real().kind == "PTR" else ptr.address_
    return Object(kernel, tid, address - offset, fixed=False)


def sizeof(obj: Object) -> int:
    """The size in bytes of ``obj``'s type (drgn's ``sizeof``)::

        sizeof(live.per_cpu("runqueues", 0))  # sizeof(struct rq)

    A pointer's is the pointer's size, an array's that of all its elements.
    """
    return obj._size()


def _named_members(
    kernel: Memory, real: BTFType, _outer: frozenset[int] = frozenset()
) -> list[Any]:
    """Members by name, with those of anonymous struct/union members brought up (a damaged
    BTF whose anonymous member contains itself is walked once, not forever)."""
    out = []
    for m in real.members:
        if m.name:
            out.append(m)
        else:
            inner = kernel.real_type(m.type_id)
            if inner.kind in ("STRUCT", "UNION") and inner.id not in _outer:
                out.extend(_named_members(kernel, inner, _outer | {real.id}))
    return out

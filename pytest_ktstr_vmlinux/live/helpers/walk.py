"""What every helper's walk shares: the checks that make a walk over guest memory end.

A walk follows pointers the guest wrote, and a guest that is hostile, broken, or changing the
structure while it is read may have made them into a loop, a NULL, or a list longer than any
kernel keeps. Each walk keeps the set of node addresses it has visited and stops with a
``LiveKernelError`` at the first address visited twice (a loop, wherever it closes), at a NULL
where the structure needs a pointer, at a deleted entry's LIST_POISON, and after ``limit``
nodes; a read that fails is a ``LiveMemoryError`` saying which node's pointer led there. So a
walk ends after at most ``limit`` nodes, whatever the guest's memory holds, and its error
names the structure (its type, member and address, with the symbol the address is in when the
kernel's symbols know it) and the step where it went wrong.

What a type name, a member or a link resolves to is looked up in the BTF once per kernel
(``memo``, ``field``): a walk then costs its reads, not its lookups.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol, TypeGuard, TypeVar, runtime_checkable

from ...errors import KernelArtifactError
from ...formats.address import u64
from ...formats.symbols import KernelSymbols
from ..errors import LiveKernelError, LiveMemoryError
from ..objects import Memory, Object

# PID_MAX_LIMIT on 64-bit kernels: no list of tasks is longer, and few lists of anything are.
LIMIT = 1 << 22
# POISON_POINTER_DELTA (CONFIG_ILLEGAL_POINTER_VALUE on x86_64 and arm64): list_del() leaves
# LIST_POISON1/2 (this + 0x100, + 0x122) in a deleted entry's next and prev.
POISON = 0xDEAD000000000000
T = TypeVar("T")
_memos: weakref.WeakKeyDictionary[Memory, dict[Hashable, Any]] = weakref.WeakKeyDictionary()
_programs: dict[type, bool] = {}


@runtime_checkable
class Program(Memory, Protocol):
    """What helpers that start from the kernel rather than an Object need: a LiveKernel."""

    @property
    def symbols(self) -> KernelSymbols: ...
    def object(self, name: str, type: str | int | None = None) -> Object: ...
    def per_cpu(self, name: str, cpu: int) -> Object: ...
    def per_cpu_offset(self, cpu: int) -> int: ...


def _is_program(found: object) -> TypeGuard[Program]:
    # A runtime protocol check looks up every member: once per class is enough.
    kind = type(found)
    known = _programs.get(kind)
    if known is None:
        known = _programs[kind] = isinstance(found, Program)
    return known


def program(kernel: Memory) -> Program | None:
    """The LiveKernel behind an Object's memory, or None for a bare Memory (no symbols)."""
    return kernel if _is_program(kernel) else None


def kernel_of(live: object, helper: str) -> Program:
    """``live`` when it is a LiveKernel; otherwise a TypeError saying what the helper takes."""
    if not _is_program(live):
        raise TypeError(
            f"{helper}() takes the LiveKernel (kernel_vm.kernel), not {type(live).__name__}"
        )
    return live


def where(kernel: Memory, address: int) -> str:
    """``0xffffffff82a14c58 (init_task+0x8e8)``: an address, and the symbol it is in if any."""
    found = None
    prog = program(kernel)
    if prog is not None:
        try:
            found = prog.symbols.lookup(address)
        except KernelArtifactError:  # a damaged table: the address alone still says where
            found = None
    if found is None:
        return f"{address:#x}"
    name, offset = found
    return f"{address:#x} ({name}+{offset:#x})" if offset else f"{address:#x} ({name})"


def expect(obj: object, helper: str, *structs: str) -> Object:
    """``obj`` if it is one of ``structs`` ("struct list_head"), or what it points to when it
    points to one; otherwise a LiveKernelError saying what the helper takes and what it got."""
    if not isinstance(obj, Object):
        raise TypeError(
            f"{helper}() takes an Object of {' or '.join(structs)}, not {type(obj).__name__}"
        )
    kernel = obj.prog_
    real = kernel.real_type(obj.type_id_)
    if real.kind == "PTR" and real.target:
        target = kernel.real_type(real.target)
        if _struct_name(target.kind, target.name) in structs:
            return obj.deref_()
    elif _struct_name(real.kind, real.name) in structs:
        return obj
    raise LiveKernelError(
        f"{helper}() takes a {' or a '.join(structs)} (or a pointer to one), not the"
        f" {obj.type_name_()} at {where(kernel, obj.address_)}"
    )


def _struct_name(kind: str, name: str) -> str:
    return f"{kind.lower()} {name}" if kind in ("STRUCT", "UNION") else ""


def memo(kernel: Memory, key: Hashable, make: Callable[[], T]) -> T:
    """``make()``, made once per kernel and ``key``: what types and members resolve to, which
    the kernel's BTF fixes (an error is not kept: it is raised again next time)."""
    table = _memos.get(kernel)
    if table is None:
        table = _memos[kernel] = {}
    if key not in table:
        table[key] = make()
    found: T = table[key]
    return found


def field(obj: Object, name: str) -> Object | None:
    """Member ``name`` of the struct ``obj``, or None when its type has none (a member that
    moved between releases): ``obj.get_(name)``, with what the name resolves to kept."""
    kernel, tid = obj.prog_, obj.type_id_
    found = memo(kernel, ("field", tid, name), lambda: _field(kernel, tid, name))
    if found is None:
        return None
    return Object(kernel, found[0], obj.address_ + found[1], fixed=obj.fixed_)


def _field(kernel: Memory, tid: int, name: str) -> tuple[int, int] | None:
    btf = kernel.btf
    real = kernel.real_type(tid).id
    if not btf.has_member(real, name):
        return None
    return btf.member(real, name).type_id, btf.offsetof(real, name)


def resolve(kernel: Memory, type: str | int, helper: str) -> int:
    """The type id of ``type`` (a name or an id), or a LiveKernelError naming the helper."""
    try:
        return memo(kernel, ("type", type), lambda: kernel.btf.type(type).id)
    except KeyError as e:
        raise LiveKernelError(f"{helper}(): {e.args[0] if e.args else e}") from None


def member_offset(kernel: Memory, tid: int, member: str, node: str, helper: str) -> int:
    """The byte offset of ``member`` in type ``tid``, which must be a ``node`` ("struct
    list_head"): the link an entry walk goes through."""
    return memo(
        kernel, ("link", tid, member, node), lambda: _link(kernel, tid, member, node, helper)
    )


def _link(kernel: Memory, tid: int, member: str, node: str, helper: str) -> int:
    btf = kernel.btf
    try:
        found = btf.member(tid, member)
        offset = btf.offsetof(tid, member)
    except (KeyError, ValueError, KernelArtifactError) as e:
        raise LiveKernelError(f"{helper}(): {e.args[0] if e.args else e}") from None
    real = kernel.real_type(found.type_id)
    if _struct_name(real.kind, real.name) != node:
        raise LiveKernelError(
            f"{helper}(): {btf.type_name(tid)}.{member} is a {btf.type_name(found.type_id)},"
            f" not a {node}"
        )
    return offset


# A walk over one structure: given how to name it in an error, the addresses of its nodes.
Nodes = Callable[[Callable[[], str]], Iterator[int]]


def nodes_of(head: Object, label: str, link: str, walk: Nodes, helper: str) -> Iterator[Object]:
    """The ``link`` ("struct list_head") Objects at the addresses ``walk`` yields."""
    kernel = head.prog_
    tid = resolve(kernel, link, helper)
    for node in walk(lambda: f"the {label} at {where(kernel, head.address_)}"):
        yield Object(kernel, tid, node, fixed=False)


def entries_of(
    type: str | int, head: Object, member: str, label: str, link: str, walk: Nodes, helper: str
) -> Iterator[Object]:
    """The ``type`` Objects whose ``member`` (a ``link``) is at the addresses ``walk`` yields:
    what the kernel's ``*_for_each_entry()`` macros walk, through ``container_of``."""
    kernel = head.prog_
    tid = resolve(kernel, type, helper)
    offset = member_offset(kernel, tid, member, link, helper)

    def what() -> str:
        name = kernel.btf.type_name(tid)
        return f"the {label} of {name}.{member} at {where(kernel, head.address_)}"

    for node in walk(what):
        yield Object(kernel, tid, u64(node - offset), fixed=False)


class Walk:
    """One walk's visited addresses and its bound. ``what`` names the structure, made only
    when an error needs it (a symbol lookup costs more than a step)."""

    def __init__(self, kernel: Memory, what: Callable[[], str], limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be at least 0, not {limit}")
        self.kernel, self.what, self.limit = kernel, what, limit
        self.seen: set[int] = set()

    def visit(self, address: int, via: str) -> None:
        """Count the node at ``address``, reached through ``via``; refuse a second visit and
        one node past the limit."""
        if address & ~0xFFFF == POISON:
            raise self.fail(
                f"{via} is {address:#x}, LIST_POISON: an entry was deleted while the walk ran"
            )
        if address in self.seen:
            raise self.fail(
                f"{via} leads back to {address:#x}, visited before (after {len(self.seen)}"
                " nodes): a loop, or two links to one node"
            )
        if len(self.seen) >= self.limit:
            raise self.fail(
                f"more than {self.limit} nodes (limit={self.limit}): it loops through nodes"
                " that change, or it is longer than the limit; pass a larger limit if it is"
            )
        self.seen.add(address)

    def read_u64(self, address: int, via: str) -> int:
        try:
            return self.kernel.read_u64(address)
        except LiveMemoryError as e:
            raise self._unreadable(e, via) from None

    def read(self, address: int, size: int, via: str) -> bytes:
        try:
            return self.kernel.read(address, size)
        except LiveMemoryError as e:
            raise self._unreadable(e, via) from None

    def _unreadable(self, e: LiveMemoryError, via: str) -> LiveMemoryError:
        return LiveMemoryError(f"{self.what()}: {via} cannot be read: {e}", e.address)

    def fail(self, problem: str) -> LiveKernelError:
        return LiveKernelError(f"{self.what()}: {problem}")

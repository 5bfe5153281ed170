"""What BTF queries return: types and members as values, and the errors they raise.

Kept apart from the parser and its queries so that code which only handles results, or catches
their errors, needs none of the parsing machinery; the bottom of btf/: a BTFType decodes its
members through the MemberDecoder it was made by (a BTF), named here as what it needs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ...errors import KernelArtifactError


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

    #: The member's name (from ``BTF.member()``, the path asked for).
    name: str
    #: The id of its type, as declared.
    type_id: int
    #: Its type as C spells it (``"struct list_head"``, ``"u64"``).
    type_name: str
    #: Its offset in bits (see above for from where).
    bit_offset: int
    #: Its width in bits when it is a bitfield, else 0.
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


class Route(NamedTuple):
    """How memory reaches member path P of type T, pointers followed as C's ``->`` does: the
    member is ``offsets[0]`` bits from the object's start when there is one offset; else a
    pointer is read there, and each further offset counts from where the pointer before it
    points (``rq.curr.pid``: ``curr``'s offset in ``struct rq``, then ``pid``'s in
    ``struct task_struct``). ``type_id`` is the member's type as declared, ``bitfield_size`` 0
    unless it is a bitfield."""

    #: Bit offsets: the member's, or each pointer's on the way and then the member's.
    offsets: tuple[int, ...]
    #: The member's type id, as declared.
    type_id: int
    #: The member's width in bits when it is a bitfield, else 0.
    bitfield_size: int


class MemberDecoder(Protocol):
    """What a BTFType asks of the BTF it came from: its members and enumerators, by type id."""

    def _members(self, tid: int) -> tuple[Member, ...]: ...

    def _enumerators(self, tid: int) -> tuple[tuple[str, int], ...]: ...


@dataclass(frozen=True)
class BTFType:
    """One BTF type. ``size`` is the size field of INT, STRUCT, UNION, ENUM, ENUM64, FLOAT and
    DATASEC (None otherwise; BTF.sizeof() resolves the rest); ``target`` is the type referred
    to (the pointee, typedef'd or qualified type, an array's element, a FUNC's prototype, a VAR's
    type, a FUNC_PROTO's return type), None for kinds that refer to none."""

    #: The type id (1 and up; 0 is ``void``).
    id: int
    #: The BTF kind: ``"INT"``, ``"PTR"``, ``"ARRAY"``, ``"STRUCT"``, ``"UNION"``, ``"ENUM"``,
    #: ``"FWD"``, ``"TYPEDEF"``, ``"VOLATILE"``, ``"CONST"``, ``"RESTRICT"``, ``"FUNC"``,
    #: ``"FUNC_PROTO"``, ``"VAR"``, ``"DATASEC"``, ``"FLOAT"``, ``"DECL_TAG"``, ``"TYPE_TAG"``
    #: or ``"ENUM64"``.
    kind: str
    #: Its name, ``""`` for an anonymous type.
    name: str
    #: The size field (see above), or None.
    size: int | None
    #: The kind's count: members, enumerators, parameters, variables of a DATASEC.
    vlen: int
    #: The type id it refers to (see above), or None.
    target: int | None
    #: The BTF it came from, which decodes its members.
    btf: MemberDecoder = field(repr=False, compare=False)

    @property
    def members(self) -> tuple[Member, ...]:
        """STRUCT/UNION members, decoded now; () for other kinds."""
        return self.btf._members(self.id)

    @property
    def enumerators(self) -> tuple[tuple[str, int], ...]:
        """ENUM/ENUM64 (name, value) pairs, decoded now; () for other kinds."""
        return self.btf._enumerators(self.id)


def suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""

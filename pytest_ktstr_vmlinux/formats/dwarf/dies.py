"""DWARF's debugging information entries, read by hand: unit headers, abbreviation tables, and
attribute values by form (DWARF 2 to 5, 32- and 64-bit, either byte order).

Only what a name -> type table needs is decoded: a unit's top-level entries are skipped over
(by their DW_AT_sibling, or by their sizes when every form has a fixed one) and the few entries
asked for are decoded. pyelftools decodes every entry of every unit into Python objects, which
is what makes it minutes for a distro vmlinux (``bench/globals.py``).

Invariant: a damaged unit is a DwarfError saying where, never an IndexError or a hang. Every
read is from one unit's own bytes, so running off them is an IndexError that ``Unit.reading``
turns into a DwarfError; every walk only moves forward (a sibling that points back is refused);
references are checked to fall inside their section before they are followed.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from .abbrevs import (
    ADDRX,
    BLOCK,
    BLOCK_1,
    BLOCK_2,
    BLOCK_4,
    FORM_FLAG,
    FORM_GNU_REF_ALT,
    FORM_GNU_STRP_ALT,
    FORM_IMPLICIT_CONST,
    FORM_INDIRECT,
    FORM_LINE_STRP,
    FORM_REF_SIG8,
    FORM_REF_SUP4,
    FORM_REF_SUP8,
    FORM_SDATA,
    FORM_STRP,
    FORM_STRP_SUP,
    SIZES,
    STRING,
    STRX,
    ULEB,
    UNIT_REFS,
    Abbrev,
    AbbrevCache,
    DwarfError,
    Sizes,
    abbrev_table,
    declare,
    sleb,
    uleb,
)

# Unit types (DWARF 5): those with a type signature or a DWO id in their header.
UT_COMPILE, UT_TYPE, UT_PARTIAL, UT_SKELETON, UT_SPLIT_COMPILE, UT_SPLIT_TYPE = range(1, 7)
_UNIT_EXTRA = {UT_TYPE: 8, UT_SKELETON: 8, UT_SPLIT_COMPILE: 8, UT_SPLIT_TYPE: 8}
ORDER: dict[str, Literal["little", "big"]] = {"<": "little", ">": "big"}


class Strings(NamedTuple):
    """The string and address sections attribute values point into."""

    debug_str: bytes
    line_str: bytes
    str_offsets: bytes
    addr: bytes


@dataclass
class Unit:
    """One unit of .debug_info: its bytes (header included; unit offsets index them)."""

    offset: int  # of its header in .debug_info
    data: bytes
    version: int
    unit_type: int
    sizes: Sizes
    abbrev_offset: int
    first_die: int
    order: str  # "<" or ">"
    abbrevs: dict[int, Abbrev] = field(default_factory=dict)
    str_offsets_base: int = 0
    addr_base: int = 0

    @property
    def address_size(self) -> int:
        return self.sizes.addr

    @property
    def offset_size(self) -> int:
        return self.sizes.offset

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Turns running off the unit's bytes (or a damaged value) into a DwarfError."""
        try:
            yield
        except (IndexError, struct.error) as e:
            raise DwarfError(f"{self}: {what}: runs past the unit's end ({e})") from None

    def __str__(self) -> str:
        return f"unit at .debug_info+{self.offset:#x}"


def unit_header(data: bytes, offset: int, order: str) -> tuple[int, int, int]:
    """(unit length with its length field, offset size, version) of the unit at ``offset``."""
    (length,) = struct.unpack_from(order + "I", data, offset)
    if length == 0xFFFFFFFF:
        (length,) = struct.unpack_from(order + "Q", data, offset + 4)
        return length + 12, 8, struct.unpack_from(order + "H", data, offset + 12)[0]
    if length >= 0xFFFFFFF0:
        raise DwarfError(f"unit at .debug_info+{offset:#x}: reserved length {length:#x}")
    return length + 4, 4, struct.unpack_from(order + "H", data, offset + 4)[0]


def parse_unit(
    data: bytes, offset: int, order: str, abbrev_section: bytes, cache: AbbrevCache | None = None
) -> Unit:
    """The unit whose bytes (header included) are ``data``, at ``offset`` in .debug_info."""
    where = f"unit at .debug_info+{offset:#x}"
    try:
        _, offset_size, version = unit_header(data, 0, order)
        if not 2 <= version <= 5:
            raise DwarfError(f"{where}: DWARF version {version} (known: 2-5)")
        at = (12 if offset_size == 8 else 4) + 2
        off = "Q" if offset_size == 8 else "I"
        unit_type = UT_COMPILE
        if version >= 5:
            unit_type, address_size = data[at], data[at + 1]
            (abbrev_offset,) = struct.unpack_from(order + off, data, at + 2)
            at += 2 + offset_size + _UNIT_EXTRA.get(unit_type, 0)
        else:
            (abbrev_offset,) = struct.unpack_from(order + off, data, at)
            address_size = data[at + offset_size]
            at += offset_size + 1
    except (IndexError, struct.error):
        raise DwarfError(f"{where}: header truncated") from None
    if address_size not in (4, 8):
        raise DwarfError(f"{where}: address size {address_size} (known: 4, 8)")
    if at > len(data):
        raise DwarfError(f"{where}: header longer than the unit")
    sizes = Sizes(address_size, offset_size, address_size if version == 2 else offset_size)
    unit = Unit(offset, data, version, unit_type, sizes, abbrev_offset, at, order)
    unit.abbrevs = abbrev_table(abbrev_section, abbrev_offset, sizes, where, cache)
    return unit


def skip_attrs(data: bytes, pos: int, abbrev: Abbrev, unit: Unit, count: int = -1) -> int:
    """The position after the values of an entry of ``abbrev`` starting at ``pos`` (after its
    first ``count`` values, when given)."""
    if abbrev.fixed >= 0 and count < 0:
        return pos + abbrev.fixed
    for size in abbrev.sizes[:count] if count >= 0 else abbrev.sizes:
        if size >= 0:
            pos += size
        elif size == ULEB:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        elif size == STRING:
            pos = _nul(data, pos) + 1
        elif size == BLOCK:
            length, pos = uleb(data, pos)
            pos += length
        elif size == BLOCK_1:
            pos += 1 + data[pos]
        elif size in (BLOCK_2, BLOCK_4):
            code = "H" if size == BLOCK_2 else "I"
            pos += struct.calcsize(code) + struct.unpack_from(unit.order + code, data, pos)[0]
        else:  # INDIRECT: the form is in the entry
            form, pos = uleb(data, pos)
            if form in (FORM_INDIRECT, FORM_IMPLICIT_CONST) or form not in SIZES:
                raise DwarfError(f"{unit}: indirect form {form:#x} at {pos:#x} is not allowed")
            pos = skip_attrs(data, pos, declare(0, False, ((0, form, 0),), unit.sizes), unit)
    if pos > len(data):
        raise IndexError(pos)
    return pos


class Foreign(NamedTuple):
    """A value in another file or section this reader does not follow: a type unit's signature
    (DW_FORM_ref_sig8), a supplementary (dwz) file's reference or string."""

    form: int


Value = int | bool | str | bytes | Foreign


def read_attrs(
    unit: Unit, pos: int, abbrev: Abbrev, strings: Strings, *, indexes: bool = True
) -> tuple[dict[int, Value], int]:
    """The attribute values of the entry whose values start at ``pos``, and the position after
    them. References are offsets in .debug_info; strings are decoded (UTF-8, bad bytes
    replaced); blocks and expressions are bytes; addrx and strx are looked up (with
    ``indexes``; else left as the index, for the unit entry that holds their bases)."""
    data, byteorder = unit.data, ORDER[unit.order]
    out: dict[int, Value] = {}
    for (attr, form, implicit), size in zip(abbrev.attrs, abbrev.sizes, strict=True):
        if form == FORM_INDIRECT:
            form, pos = uleb(data, pos)
            if form in (FORM_INDIRECT, FORM_IMPLICIT_CONST) or form not in SIZES:
                raise DwarfError(f"{unit}: indirect form {form:#x} at {pos:#x} is not allowed")
            size = declare(0, False, ((0, form, 0),), unit.sizes).sizes[0]
        value: Value
        if size > 0:
            end = pos + size
            if end > len(data):
                raise IndexError(end)
            raw = int.from_bytes(data[pos:end], byteorder)
            pos = end
            value = bool(raw) if form == FORM_FLAG else _resolve(unit, form, raw, strings, indexes)
        elif size == 0:
            value = implicit if form == FORM_IMPLICIT_CONST else True  # or flag_present
        elif size == ULEB:
            raw, pos = (sleb if form == FORM_SDATA else uleb)(data, pos)
            value = _resolve(unit, form, raw, strings, indexes)
        elif size == STRING:
            end = _nul(data, pos)
            value, pos = data[pos:end].decode("utf-8", "replace"), end + 1
        else:  # a block: its length first
            if size == BLOCK:
                length, pos = uleb(data, pos)
            else:
                width = {BLOCK_1: 1, BLOCK_2: 2, BLOCK_4: 4}[size]
                length, pos = int.from_bytes(data[pos : pos + width], byteorder), pos + width
            if pos + length > len(data):
                raise IndexError(pos + length)
            value, pos = data[pos : pos + length], pos + length
        out[attr] = value
    return out, pos


def _resolve(unit: Unit, form: int, raw: int, strings: Strings, indexes: bool) -> Value:
    if not indexes and (form in STRX or form in ADDRX):
        return raw
    if form in UNIT_REFS:
        return unit.offset + raw
    if form == FORM_STRP:
        return _string(strings.debug_str, raw, ".debug_str", unit)
    if form == FORM_LINE_STRP:
        return _string(strings.line_str, raw, ".debug_line_str", unit)
    if form in STRX:
        at = unit.str_offsets_base + raw * unit.offset_size
        entry = strings.str_offsets[at : at + unit.offset_size]
        if len(entry) != unit.offset_size:
            raise DwarfError(f"{unit}: string index {raw} is past .debug_str_offsets")
        return _string(strings.debug_str, int.from_bytes(entry, ORDER[unit.order]), "", unit)
    if form in ADDRX:
        at = unit.addr_base + raw * unit.address_size
        entry = strings.addr[at : at + unit.address_size]
        if len(entry) != unit.address_size:
            raise DwarfError(f"{unit}: address index {raw} is past .debug_addr")
        return int.from_bytes(entry, ORDER[unit.order])
    if form in (FORM_REF_SIG8, FORM_GNU_REF_ALT, FORM_GNU_STRP_ALT, FORM_STRP_SUP):
        return Foreign(form)
    if form in (FORM_REF_SUP4, FORM_REF_SUP8):
        return Foreign(form)
    return raw  # data, addresses, section offsets, ref_addr (already a .debug_info offset)


def _string(section: bytes, offset: int, name: str, unit: Unit) -> str:
    end = section.find(b"\0", offset)
    if offset >= len(section) or end < 0:
        raise DwarfError(
            f"{unit}: string offset {offset:#x} is past {name or '.debug_str'}"
            f" ({len(section)} bytes) or has no NUL"
        )
    return section[offset:end].decode("utf-8", "replace")


def _nul(data: bytes, pos: int) -> int:
    """Where the string at ``pos`` ends; IndexError (the unit ends first) when it has no NUL."""
    end = data.find(0, pos)
    if end < 0:
        raise IndexError(pos)
    return end

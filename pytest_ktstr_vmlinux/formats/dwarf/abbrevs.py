"""DWARF's abbreviation tables, forms and LEB128 numbers: what decoding any entry stands on.

A unit's entries each start with an abbreviation code; the unit's table (in .debug_abbrev) gives
the code's tag, whether it has children, and each attribute with its form. Here the table is
read, and each declaration is annotated for skipping entries of it fast: its size when every
form has a fixed one, and where its DW_AT_sibling is.

Facts: DWARF 5, sections 7.5 (tags, attributes, forms) and 7.6 (LEB128).
"""

from __future__ import annotations

import re
from typing import NamedTuple

# Tags and attributes (DWARF 5, section 7.5).
TAG_COMPILE_UNIT, TAG_PARTIAL_UNIT, TAG_VARIABLE = 0x11, 0x3C, 0x34
AT_SIBLING, AT_LOCATION, AT_NAME, AT_BYTE_SIZE, AT_TYPE = 0x01, 0x02, 0x03, 0x0B, 0x49
AT_UPPER_BOUND, AT_COUNT, AT_LOWER_BOUND = 0x2F, 0x37, 0x22
AT_EXTERNAL, AT_DECLARATION, AT_SPECIFICATION, AT_ABSTRACT_ORIGIN = 0x3F, 0x3C, 0x47, 0x31
AT_PROTOTYPED, AT_STR_OFFSETS_BASE, AT_ADDR_BASE = 0x27, 0x72, 0x73
AT_GNU_ADDR_BASE = 0x2133

# Forms whose size is fixed: bytes, or "addr"/"offset" (the unit's address or offset size).
(FORM_ADDR, FORM_BLOCK2, FORM_BLOCK4, FORM_DATA2, FORM_DATA4, FORM_DATA8) = (1, 3, 4, 5, 6, 7)
(FORM_STRING, FORM_BLOCK, FORM_BLOCK1, FORM_DATA1, FORM_FLAG, FORM_SDATA) = range(8, 14)
(FORM_STRP, FORM_UDATA, FORM_REF_ADDR, FORM_REF1, FORM_REF2, FORM_REF4) = range(14, 20)
(FORM_REF8, FORM_REF_UDATA, FORM_INDIRECT, FORM_SEC_OFFSET, FORM_EXPRLOC) = range(20, 25)
(FORM_FLAG_PRESENT, FORM_STRX, FORM_ADDRX, FORM_REF_SUP4, FORM_STRP_SUP) = range(25, 30)
(FORM_DATA16, FORM_LINE_STRP, FORM_REF_SIG8, FORM_IMPLICIT_CONST) = range(30, 34)
(FORM_LOCLISTX, FORM_RNGLISTX, FORM_REF_SUP8) = range(34, 37)
(FORM_STRX1, FORM_STRX2, FORM_STRX3, FORM_STRX4) = range(0x25, 0x29)
(FORM_ADDRX1, FORM_ADDRX2, FORM_ADDRX3, FORM_ADDRX4) = range(0x29, 0x2D)
FORM_GNU_ADDR_INDEX, FORM_GNU_STR_INDEX, FORM_GNU_REF_ALT, FORM_GNU_STRP_ALT = (
    0x1F01, 0x1F02, 0x1F20, 0x1F21,
)  # fmt: skip

# Sizes that are not fixed: a ULEB128/SLEB128, a NUL-terminated string, a block whose length
# comes first (as a ULEB128, or in 1, 2 or 4 bytes), or a form given in the entry itself.
ULEB, STRING, BLOCK, BLOCK_1, BLOCK_2, BLOCK_4, INDIRECT = -1, -2, -3, -4, -5, -6, -7
SIZES: dict[int, int | str] = {
    FORM_ADDR: "addr", FORM_BLOCK2: BLOCK_2, FORM_BLOCK4: BLOCK_4, FORM_DATA2: 2, FORM_DATA4: 4,
    FORM_DATA8: 8, FORM_STRING: STRING, FORM_BLOCK: BLOCK, FORM_BLOCK1: BLOCK_1, FORM_DATA1: 1,
    FORM_FLAG: 1, FORM_SDATA: ULEB, FORM_STRP: "offset", FORM_UDATA: ULEB,
    FORM_REF_ADDR: "ref_addr", FORM_REF1: 1, FORM_REF2: 2, FORM_REF4: 4, FORM_REF8: 8,
    FORM_REF_UDATA: ULEB, FORM_INDIRECT: INDIRECT, FORM_SEC_OFFSET: "offset",
    FORM_EXPRLOC: BLOCK, FORM_FLAG_PRESENT: 0, FORM_STRX: ULEB, FORM_ADDRX: ULEB,
    FORM_REF_SUP4: 4, FORM_STRP_SUP: "offset", FORM_DATA16: 16, FORM_LINE_STRP: "offset",
    FORM_REF_SIG8: 8, FORM_IMPLICIT_CONST: 0, FORM_LOCLISTX: ULEB, FORM_RNGLISTX: ULEB,
    FORM_REF_SUP8: 8, FORM_STRX1: 1, FORM_STRX2: 2, FORM_STRX3: 3, FORM_STRX4: 4,
    FORM_ADDRX1: 1, FORM_ADDRX2: 2, FORM_ADDRX3: 3, FORM_ADDRX4: 4, FORM_GNU_ADDR_INDEX: ULEB,
    FORM_GNU_STR_INDEX: ULEB, FORM_GNU_REF_ALT: "offset", FORM_GNU_STRP_ALT: "offset",
}  # fmt: skip
UNIT_REFS = frozenset({FORM_REF1, FORM_REF2, FORM_REF4, FORM_REF8, FORM_REF_UDATA})
STRX = frozenset({FORM_STRX, FORM_STRX1, FORM_STRX2, FORM_STRX3, FORM_STRX4, FORM_GNU_STR_INDEX})
ADDRX = frozenset(
    {FORM_ADDRX, FORM_ADDRX1, FORM_ADDRX2, FORM_ADDRX3, FORM_ADDRX4, FORM_GNU_ADDR_INDEX}
)
MAX_ABBREV_ATTRS = 256  # more attributes than any producer writes: a damaged table


class DwarfError(ValueError):
    """DWARF that cannot be read: the message says which unit or table and what is wrong."""


class Sizes(NamedTuple):
    """The sizes forms take in one unit: its address size, offset size (4 in 32-bit DWARF, 8 in
    64-bit), and DW_FORM_ref_addr's (the address size in DWARF 2, the offset size after)."""

    addr: int
    offset: int
    ref_addr: int


class Abbrev(NamedTuple):
    """One abbreviation declaration, sized for the units that use it."""

    tag: int
    children: bool
    attrs: tuple[tuple[int, int, int], ...]  # (attribute, form, implicit constant)
    sizes: tuple[int, ...]  # per attribute: its size in bytes, or ULEB, STRING, BLOCK...
    fixed: int  # an entry's size after its code when every size is fixed, else -1
    sibling: int  # the index of DW_AT_sibling (a unit reference) in attrs, else -1
    sibling_at: int  # its value's offset after the code when the sizes before it are fixed
    sibling_form: int
    located: bool  # has a DW_AT_location


def uleb(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the ULEB128 at ``pos``."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 70:  # a DWARF value never needs more than 64 bits; no endless run
            raise DwarfError(f"a LEB128 at {pos:#x} runs on past 10 bytes")


def sleb(data: bytes, pos: int) -> tuple[int, int]:
    start = pos
    value, pos = uleb(data, pos)
    bits = 7 * (pos - start)
    return (value - (1 << bits) if value >> (bits - 1) & 1 else value), pos


# One abbreviation declaration: its code, tag, children byte, then (attribute, form) pairs, an
# implicit constant after form 0x21, up to the (0, 0) pair. Matched in C by re, so a table of
# thousands of declarations costs a match each; the values are decoded once per distinct
# declaration (AbbrevCache), as the tables of a vmlinux's units share most of them.
_U = rb"[\x80-\xff]*[\x00-\x7f]"
_FORM = rb"(?:\x21" + _U + rb"|[\x80-\xff]+[\x00-\x7f]|[\x00-\x20\x22-\x7f])"
_ATTR = rb"(?:[\x01-\x7f]|[\x80-\xff]+[\x00-\x7f])"  # never 0: (0, 0) ends the list
_DECLARATION = re.compile(
    rb"\x00|(" + _U + rb")(" + _U + rb"[\x00\x01](?:" + _ATTR + _FORM + rb")*\x00\x00)"
)


class AbbrevCache:
    """Declarations decoded once by their bytes (after the code) and the sizes they were sized
    for: the tables of a vmlinux's units repeat most of them (12 thousand of 420 thousand in
    Debian's 7.2). One per build, shared by its units."""

    def __init__(self) -> None:
        self.decoded: dict[tuple[bytes, Sizes], Abbrev] = {}


def abbrev_table(
    section: bytes, offset: int, sizes: Sizes, where: str, cache: AbbrevCache | None = None
) -> dict[int, Abbrev]:
    """The abbreviations (code -> declaration) at ``offset`` in .debug_abbrev; ``where`` names
    the unit that uses them in errors."""
    if offset >= len(section):
        raise DwarfError(
            f"{where}: abbreviation table offset {offset:#x} is past .debug_abbrev"
            f" ({len(section)} bytes)"
        )
    decoded = (cache or AbbrevCache()).decoded
    table: dict[int, Abbrev] = {}
    pos = offset
    for found in _DECLARATION.finditer(section, offset):
        if found.start() != pos:
            break
        pos = found.end()
        code, body = found.group(1, 2)
        if code is None:  # the table's terminating 0
            return table
        abbrev = decoded.get((body, sizes))
        if abbrev is None:
            abbrev = decoded[(body, sizes)] = _declaration(body, sizes, where)
        table[uleb(code, 0)[0]] = abbrev
    if pos >= len(section):
        raise DwarfError(
            f"{where}: the abbreviation table at .debug_abbrev+{offset:#x} runs past its end"
        )
    raise DwarfError(
        f"{where}: the abbreviation table at .debug_abbrev+{offset:#x} is damaged at"
        f" +{pos - offset:#x} (no declaration starts there)"
    )


def _declaration(body: bytes, sizes: Sizes, where: str) -> Abbrev:
    """The Abbrev of one declaration's bytes after its code (as _DECLARATION matched them)."""
    tag, pos = uleb(body, 0)
    children = body[pos] != 0
    pos += 1
    attrs: list[tuple[int, int, int]] = []
    while pos < len(body) - 2:
        attr, pos = uleb(body, pos)
        form, pos = uleb(body, pos)
        implicit = 0
        if form == FORM_IMPLICIT_CONST:
            implicit, pos = sleb(body, pos)
        if form not in SIZES or attr == 0:
            what = f"unknown form {form:#x}" if attr else "attribute 0"
            raise DwarfError(f"{where}: an abbreviation (tag {tag:#x}) has {what}")
        attrs.append((attr, form, implicit))
        if len(attrs) > MAX_ABBREV_ATTRS:
            raise DwarfError(f"{where}: an abbreviation (tag {tag:#x}) has no end")
    return declare(tag, children, tuple(attrs), sizes)


def declare(
    tag: int, children: bool, attrs: tuple[tuple[int, int, int], ...], sizes: Sizes
) -> Abbrev:
    """An Abbrev with its sizes worked out for units of ``sizes``."""
    named = sizes._asdict()
    each = tuple(s if isinstance(s, int) else named[s] for s in (SIZES[f] for _, f, _ in attrs))
    fixed = sum(each) if all(s >= 0 for s in each) else -1
    sibling = sibling_at = -1
    sibling_form, before = 0, 0
    for index, ((attr, form, _), size) in enumerate(zip(attrs, each, strict=True)):
        if attr == AT_SIBLING and form in UNIT_REFS:
            sibling, sibling_form = index, form
            sibling_at = before
            break
        before = before + size if size >= 0 and before >= 0 else -1
    located = any(attr == AT_LOCATION for attr, _, _ in attrs)
    return Abbrev(tag, children, attrs, each, fixed, sibling, sibling_at, sibling_form, located)

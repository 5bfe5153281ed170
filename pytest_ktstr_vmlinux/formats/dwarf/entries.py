"""Stepping over a unit's entries: siblings, children, and the hot loop over a unit's top level.

An entry with children is stepped over through its DW_AT_sibling when it has one (the offset of
the next sibling, checked to lie after it and inside the unit), else by walking its children to
their null entry; one without, by its values' sizes. Every step moves forward, so a walk ends.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from .abbrevs import (
    FORM_REF1,
    FORM_REF2,
    FORM_REF4,
    FORM_REF8,
    FORM_REF_UDATA,
    Abbrev,
    DwarfError,
    uleb,
)
from .dies import ORDER, Unit, skip_attrs

_WIDTH = {FORM_REF1: 1, FORM_REF2: 2, FORM_REF4: 4, FORM_REF8: 8}
_MAX_LISTED = 1 << 16  # codes above this (no producer's) take the slow path, not a huge list


def siblings(unit: Unit, pos: int) -> Iterator[tuple[int, Abbrev, int]]:
    """(offset, abbreviation, position of its values) of each entry among the siblings that
    start at ``pos``, up to their null entry or the unit's end; each entry's values and children
    are skipped after it is yielded (through DW_AT_sibling where there is one)."""
    data, end = unit.data, len(unit.data)
    try:
        while pos < end:
            die = pos
            code, pos = uleb(data, pos)
            if code == 0:
                return
            abbrev = _abbrev(unit, die, code)
            yield die, abbrev, pos
            pos = _after(unit, die, pos, abbrev)
    except (IndexError, struct.error):
        raise DwarfError(f"{unit}: an entry runs past the unit's end") from None


def children(unit: Unit, die: int) -> Iterator[tuple[int, Abbrev, int]]:
    """The children of the entry at unit offset ``die`` (none when it has none)."""
    try:
        code, pos = uleb(unit.data, die)
        abbrev = _abbrev(unit, die, code)
        if abbrev.children:
            yield from siblings(unit, skip_attrs(unit.data, pos, abbrev, unit))
    except (IndexError, struct.error):
        raise DwarfError(f"{unit}: the entry at {die:#x} runs past the unit's end") from None


def top_level(unit: Unit, pos: int, wanted: Callable[[Abbrev], bool]) -> list[int]:
    """The unit offsets of the entries whose abbreviation is ``wanted`` among the siblings
    starting at ``pos``: the hot loop of a table's build (millions of entries), so the common
    ways of stepping over an entry are inline: a fixed size, a DW_AT_sibling at a fixed place."""
    data, end = unit.data, len(unit.data)
    byteorder = ORDER[unit.order]
    # Indexed by code (producers number them from 1): a list index is cheaper than a dict's.
    plans: list[tuple[int, int, int, bool, Abbrev] | None] = [None] * (
        min(max(unit.abbrevs, default=0), _MAX_LISTED) + 1
    )
    for code, a in unit.abbrevs.items():
        if code < len(plans):
            fixed, sibling_at = (-1, a.sibling_at) if a.children else (a.fixed, -1)
            plans[code] = (fixed, sibling_at, _WIDTH.get(a.sibling_form, 0), wanted(a), a)
    found: list[int] = []
    listed = len(plans)
    try:
        while pos < end:
            die = pos
            code = data[pos]
            pos += 1
            if code >= 0x80:
                code, pos = uleb(data, die)
            elif not code:
                break
            plan = plans[code] if code < listed else None
            if plan is None:
                _abbrev(unit, die, code)
                raise AssertionError  # pragma: no cover - _abbrev raised
            fixed, sibling_at, width, take, abbrev = plan
            if take:
                found.append(die)
            if fixed >= 0:
                pos += fixed
            elif sibling_at >= 0 and width:
                at = pos + sibling_at
                target = int.from_bytes(data[at : at + width], byteorder)
                if not die < target <= end or at + width > end:
                    _sibling(unit, die, at, abbrev.sibling_form)
                pos = target
            else:
                pos = _after(unit, die, pos, abbrev)
    except (IndexError, struct.error):
        raise DwarfError(f"{unit}: an entry runs past the unit's end") from None
    return found


def _abbrev(unit: Unit, die: int, code: int) -> Abbrev:
    abbrev = unit.abbrevs.get(code)
    if abbrev is None:
        raise DwarfError(f"{unit}: entry at {die:#x} has abbreviation {code}, not in its table")
    return abbrev


def _after(unit: Unit, die: int, pos: int, abbrev: Abbrev) -> int:
    """The position after the entry at ``die`` whose values start at ``pos``, its children
    included: through its DW_AT_sibling when it has one, else by walking them."""
    if abbrev.children and abbrev.sibling >= 0:
        at = skip_attrs(unit.data, pos, abbrev, unit, abbrev.sibling)
        return _sibling(unit, die, at, abbrev.sibling_form)
    pos = skip_attrs(unit.data, pos, abbrev, unit)
    return _skip_children(unit, pos) if abbrev.children else pos


def _sibling(unit: Unit, die: int, at: int, form: int) -> int:
    """Where DW_AT_sibling (at ``at``, of the entry at ``die``) says the next sibling is."""
    if form == FORM_REF_UDATA:
        target, _ = uleb(unit.data, at)
    else:
        width = _WIDTH[form]
        if at + width > len(unit.data):
            raise IndexError(at)
        target = int.from_bytes(unit.data[at : at + width], ORDER[unit.order])
    if not die < target <= len(unit.data):
        raise DwarfError(
            f"{unit}: the entry at {die:#x} says its sibling is at {target:#x}, outside the"
            f" unit's {len(unit.data)} bytes or not after it"
        )
    return target


def _skip_children(unit: Unit, pos: int) -> int:
    """The position after the children starting at ``pos`` and their null entry."""
    data, depth = unit.data, 1
    while depth:
        die = pos
        code, pos = uleb(data, pos)
        if code == 0:
            depth -= 1
            continue
        abbrev = _abbrev(unit, die, code)
        if abbrev.children and abbrev.sibling >= 0:
            pos = _after(unit, die, pos, abbrev)
            continue
        pos = skip_attrs(data, pos, abbrev, unit)
        depth += abbrev.children
    return pos

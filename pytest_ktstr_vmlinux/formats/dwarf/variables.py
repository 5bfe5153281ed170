"""Every variable with a static address in an ELF's DWARF, with its type as a C expression.

Walks each compilation unit's top level only (file scope: function-local statics are left out,
they have symbols of their own such as ``name.0``), takes each DW_TAG_variable whose
DW_AT_location is a single address (DW_OP_addr, DW_OP_addrx), and completes it from the
declaration its DW_AT_specification (or DW_AT_abstract_origin) names: a definition in a .c file
usually takes its name and type from the header's extern declaration.

A unit that cannot be read (an unknown form, a damaged entry) is skipped and counted with its
error (``Walk.skipped``), so one odd unit costs its own variables, not the table; a unit header
whose length runs past .debug_info ends the walk with a KernelArtifactError, since no later unit
can be found after it.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from ...errors import KernelArtifactError
from ...regularfile import RegularFile
from ..btf.typeexpr import spell
from .abbrevs import (
    AT_ABSTRACT_ORIGIN,
    AT_ADDR_BASE,
    AT_DECLARATION,
    AT_EXTERNAL,
    AT_GNU_ADDR_BASE,
    AT_LOCATION,
    AT_NAME,
    AT_SPECIFICATION,
    AT_STR_OFFSETS_BASE,
    AT_TYPE,
    TAG_COMPILE_UNIT,
    TAG_VARIABLE,
    Abbrev,
    AbbrevCache,
    DwarfError,
    uleb,
)
from .ctypes import TypeNamer
from .dies import (
    Strings,
    Unit,
    Value,
    parse_unit,
    read_attrs,
    skip_attrs,
    unit_header,
)
from .entries import top_level
from .sections import DebugSections

DW_OP_ADDR, DW_OP_ADDRX, DW_OP_GNU_ADDR_INDEX = 0x03, 0xA1, 0xFB
MAX_SPECIFICATIONS = 8  # a declaration of a declaration of ...: C has one level
_LOADED = 4


@dataclass(frozen=True)
class Variable:
    """One variable: ``type`` is a C type expression, or None with ``problem`` saying why."""

    name: str
    address: int
    type: str | None
    problem: str | None
    unit: str  # the compilation unit's DW_AT_name, as the compiler was given the file
    external: bool


@dataclass
class Walk:
    """The walk over one ELF's units; ``variables()`` yields, then ``skipped`` says what was
    passed over (unit offset -> error)."""

    debug: DebugSections
    file: RegularFile | None = None
    skipped: dict[int, str] = field(default_factory=dict)
    units: int = 0
    versions: set[int] = field(default_factory=set)  # of the units read
    _cache: AbbrevCache = field(default_factory=AbbrevCache)
    _starts: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), in order
    _loaded: dict[int, Unit] = field(default_factory=dict)  # units other units referred into

    def variables(self) -> Iterator[Variable]:
        for offset, length in self._units():
            self.units += 1
            try:
                unit = self._unit(offset, length)
                yield from self._unit_variables(unit)
            except DwarfError as e:
                self.skipped[offset] = str(e)

    def _units(self) -> list[tuple[int, int]]:
        """(offset, length with header) of each unit of .debug_info, by their headers: all of
        them first (a read of a few bytes each), so a reference into a later unit finds it."""
        if self._starts:
            return self._starts
        offset, end = 0, self.debug.info_size
        while offset < end:
            head = self.debug.read_info(self.file, offset, min(16, end - offset))
            try:
                length, _, _ = unit_header(head, 0, self.debug.order)
            except (DwarfError, IndexError, ValueError, struct.error) as e:
                raise KernelArtifactError(
                    f"{self.debug.path}: .debug_info: the unit header at +{offset:#x} is"
                    f" damaged ({e})"
                ) from None
            if offset + length > end:
                raise KernelArtifactError(
                    f"{self.debug.path}: .debug_info: the unit at +{offset:#x} says it is"
                    f" {length} bytes, past the section's end ({end} bytes)"
                )
            self._starts.append((offset, length))
            offset += length
        return self._starts

    def _unit(self, offset: int, length: int) -> Unit:
        data = self.debug.read_info(self.file, offset, length)
        unit = parse_unit(data, offset, self.debug.order, self.debug.abbrev, self._cache)
        self.versions.add(unit.version)
        return unit

    def _load(self, offset: int) -> Unit:
        """The unit holding .debug_info ``offset``: what a DW_FORM_ref_addr into another unit
        leads to. The last few are kept: such references come in runs."""
        at = bisect_right(self._starts, (offset, 1 << 64)) - 1
        if at < 0:
            raise DwarfError(f"a reference to .debug_info+{offset:#x} leads into no unit")
        start, length = self._starts[at]
        unit = self._loaded.get(start)
        if unit is None:
            unit = self._unit(start, length)
            _set_bases(unit, self.debug.strings)
            if len(self._loaded) >= _LOADED:
                del self._loaded[next(iter(self._loaded))]
            self._loaded[start] = unit
        if not unit.offset + unit.first_die <= offset < unit.offset + len(unit.data):
            raise DwarfError(f"a reference to .debug_info+{offset:#x} leads into no entry")
        return unit

    def _unit_variables(self, unit: Unit) -> Iterator[Variable]:
        data, strings = unit.data, self.debug.strings
        with unit.reading("the unit's first entry"):
            code, pos = uleb(data, unit.first_die)
        root = unit.abbrevs.get(code)
        if root is None or root.tag != TAG_COMPILE_UNIT or not root.children:
            return  # a partial or type unit, or an empty one: no variables of its own
        name = _set_bases(unit, strings)
        with unit.reading("the unit's entry"):
            first = skip_attrs(data, pos, root, unit)
        namer = TypeNamer(unit, strings, self._load)
        for die in top_level(unit, first, _located_variable):
            found = self._variable(unit, die, namer, name)
            if found is not None:
                yield found

    def _variable(self, unit: Unit, die: int, namer: TypeNamer, cu: str) -> Variable | None:
        """The variable defined at ``die``, None for one without an address or a name; a type
        that cannot be read (an anonymous struct, a damaged chain) is the variable's problem,
        not the unit's."""
        strings = self.debug.strings
        attrs = _attrs(unit, die, strings)
        address = _address(attrs.get(AT_LOCATION), unit, strings)
        if address is None or attrs.get(AT_DECLARATION):
            return None
        merged = dict(attrs)
        try:
            origin = attrs.get(AT_SPECIFICATION, attrs.get(AT_ABSTRACT_ORIGIN))
            for _ in range(MAX_SPECIFICATIONS):
                if not isinstance(origin, int) or isinstance(origin, bool):
                    break
                home = unit if TypeNamer._inside(unit, origin) else self._load(origin)
                declared = _attrs(home, origin - home.offset, strings)
                for key, value in declared.items():
                    merged.setdefault(key, value)
                origin = declared.get(AT_SPECIFICATION, declared.get(AT_ABSTRACT_ORIGIN))
        except DwarfError as e:
            problem: str | None = str(e)
        else:
            problem = None
        name = merged.get(AT_NAME)
        if not isinstance(name, str) or not name:
            return None
        external = bool(merged.get(AT_EXTERNAL))
        if problem is None:
            type_ref = merged.get(AT_TYPE)
            try:
                if type_ref is not None and not isinstance(type_ref, int):
                    raise DwarfError(f"{unit}: {name!r} has a DW_AT_type that is no reference")
                spelled = spell(namer.expression(type_ref))
            except DwarfError as e:
                problem = str(e)
            else:
                return Variable(name, address, spelled, None, cu, external)
        return Variable(name, address, None, problem, cu, external)


def _located_variable(abbrev: Abbrev) -> bool:
    """A variable entry with a location: a definition (declarations have none)."""
    return abbrev.tag == TAG_VARIABLE and abbrev.located


def _set_bases(unit: Unit, strings: Strings) -> str:
    """Set the unit's DW_AT_str_offsets_base and DW_AT_addr_base from its entry (the strx and
    addrx values of every entry need them, the unit entry's own name included); its name."""
    with unit.reading("the unit's entry"):
        code, pos = uleb(unit.data, unit.first_die)
        root = unit.abbrevs.get(code)
        if root is None:
            raise DwarfError(f"{unit}: its first entry has abbreviation {code}, not in its table")
        raw = read_attrs(unit, pos, root, strings, indexes=False)[0]
        for attr, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool):
                if attr == AT_STR_OFFSETS_BASE:
                    unit.str_offsets_base = value
                elif attr in (AT_ADDR_BASE, AT_GNU_ADDR_BASE):
                    unit.addr_base = value
        return _name(read_attrs(unit, pos, root, strings)[0])


def _name(attrs: dict[int, Value]) -> str:
    name = attrs.get(AT_NAME)
    return name if isinstance(name, str) else ""


def _attrs(unit: Unit, die: int, strings: Strings) -> dict[int, Value]:
    with unit.reading(f"the entry at {unit.offset + die:#x}"):
        code, pos = uleb(unit.data, die)
        abbrev = unit.abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(
                f"{unit}: entry at {unit.offset + die:#x} has abbreviation {code}, not in its table"
            )
        return read_attrs(unit, pos, abbrev, strings)[0]


def _address(location: Value | None, unit: Unit, strings: Strings) -> int | None:
    """The address a location expression names when it is only that (DW_OP_addr A, or
    DW_OP_addrx I); None for anything else (a location list, a register, a computation)."""
    if not isinstance(location, bytes) or not location:
        return None
    op = location[0]
    if op == DW_OP_ADDR and len(location) == 1 + unit.address_size:
        return int.from_bytes(location[1:], "little" if unit.order == "<" else "big") or None
    if op in (DW_OP_ADDRX, DW_OP_GNU_ADDR_INDEX):
        try:
            index, end = uleb(location, 1)
        except IndexError:
            return None
        if end != len(location):
            return None
        at = unit.addr_base + index * unit.address_size
        entry = strings.addr[at : at + unit.address_size]
        if len(entry) != unit.address_size:
            raise DwarfError(f"{unit}: address index {index} is past .debug_addr")
        return int.from_bytes(entry, "little" if unit.order == "<" else "big") or None
    return None

"""An ELF's section and program header tables, read by hand and checked against the file first.

pyelftools takes the ELF header on trust: with 5 million section headers it spent minutes and
2 GB (a Python object per header) before the error. Here every count, entry size and offset of
the ELF header, and of section header 0 where extended numbering keeps the counts that do not
fit 16 bits, is checked to fit the file before a table is read, and the error names the field as
the ELF spec does. The tables are then read in bounded chunks, each entry a small tuple the
caller drops, so memory stays small whatever the count and time is a pass over the table.

Errors are ElfLayoutError (a ValueError): the callers put the file's name in front.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from .elf import EHDR_IDENT_AND_MACHINE, ELFCLASS64, ELFDATA2LSB, NotElfError, parse_elf_ident

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00  # section indexes from here on are special (SHN_ABS, ...), not sections
SHN_XINDEX = 0xFFFF  # e_shstrndx: the real index is section 0's sh_link
PN_XNUM = 0xFFFF  # e_phnum: the real count is section 0's sh_info
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NOBITS = 8

# Per class (wide: ELFCLASS64): the ELF header after e_ident, its size; a section header, its
# size; the fields p_type, p_offset, p_filesz of a program header, its size.
_LAYOUT = {
    True: ("HHIQQQIHHHHHH", 64, "IIQQQQIIQQ", 64, "I4xQ16xQ16x", 56),
    False: ("HHIIIIIHHHHHH", 52, "10I", 40, "II8xI12x", 32),
}
# Headers read per chunk: 256 KiB of ELF64 section headers.
_CHUNK = 4096

Source = BinaryIO | bytes | bytearray | memoryview


class ElfLayoutError(ValueError):
    """A header field of the ELF points outside the file, or is not what the spec allows."""


class Section(NamedTuple):
    """One section header, the fields named as in Elf64_Shdr."""

    number: int
    sh_name: int
    sh_type: int
    sh_flags: int
    sh_addr: int
    sh_offset: int
    sh_size: int
    sh_link: int
    sh_info: int
    sh_addralign: int
    sh_entsize: int


class Segment(NamedTuple):
    """The fields of a program header that say where its bytes are."""

    number: int
    p_type: int
    p_offset: int
    p_filesz: int


class ElfTables:
    """An ELF (an open file, or bytes in memory) whose header was checked to fit it.

    Memory sources hand back views, never copies: the payload of an image is already in memory.
    """

    def __init__(self, source: Source) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._view: memoryview | None = memoryview(source).cast("B")
            self._file: BinaryIO | None = None
            self.size = len(self._view)
        else:
            self._view, self._file = None, source
            self.size = source.seek(0, os.SEEK_END)
        try:
            ident = parse_elf_ident(bytes(self._read(0, min(self.size, EHDR_IDENT_AND_MACHINE))))
        except NotElfError as e:
            raise ElfLayoutError(str(e)) from None
        self.ident = ident
        self.wide = ident.ei_class == ELFCLASS64
        self.little_endian = ident.ei_data == ELFDATA2LSB
        order = "<" if self.little_endian else ">"
        ehdr, ehsize, shdr, self.shentsize, phdr, self.phentsize = _LAYOUT[self.wide]
        self._shdr, self._phdr = struct.Struct(order + shdr), struct.Struct(order + phdr)
        if self.size < ehsize:
            raise ElfLayoutError(
                f"the ELF header needs {ehsize} bytes, the file has {self.size}; it is truncated"
            )
        fields = struct.unpack(order + ehdr, self._read(16, ehsize - 16))
        e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = fields[4:]
        # An offset of 0 means there is no such table (gABI), whatever the count says.
        self.shoff, self.phoff = e_shoff, e_phoff
        self.shnum, self.shstrndx, self.phnum = 0, SHN_UNDEF, e_phnum if e_phoff else 0
        phnum_field, shstrndx_field = "e_phnum", "e_shstrndx"
        if e_shoff:
            self._entsize("e_shentsize", e_shentsize, self.shentsize, "Shdr")
            self._fits("section header 0", "e_shoff", e_shoff, self.shentsize)
            zero = Section(0, *self._shdr.unpack(self._read(e_shoff, self.shentsize)))
            # Extended numbering: counts too big for their 16-bit fields are kept in section 0.
            self.shnum = e_shnum or zero.sh_size
            counted = "e_shnum" if e_shnum else "section 0's sh_size: e_shnum is 0"
            self._fits(
                f"{self.shnum} section headers ({counted}) of e_shentsize {e_shentsize} bytes",
                "e_shoff",
                e_shoff,
                self.shnum * self.shentsize,
            )
            self.shstrndx = e_shstrndx
            if e_shstrndx == SHN_XINDEX:
                self.shstrndx = zero.sh_link
                shstrndx_field = "section 0's sh_link: e_shstrndx is SHN_XINDEX"
            if e_phnum == PN_XNUM and e_phoff:
                self.phnum, phnum_field = zero.sh_info, "section 0's sh_info: e_phnum is PN_XNUM"
        if self.shstrndx != SHN_UNDEF and self.shstrndx >= self.shnum:
            raise ElfLayoutError(
                f"the section name table's index {self.shstrndx} ({shstrndx_field}) is not a"
                f" section: there are {self.shnum}"
            )
        if self.phnum:
            self._entsize("e_phentsize", e_phentsize, self.phentsize, "Phdr")
            self._fits(
                f"{self.phnum} program headers ({phnum_field}) of e_phentsize {e_phentsize} bytes",
                "e_phoff",
                e_phoff,
                self.phnum * self.phentsize,
            )
        self._names: bytes | None = None

    def sections(self, start: int = 0, stop: int | None = None) -> Iterator[Section]:
        """Section headers ``start`` up to ``stop`` (default: all), read a chunk at a time."""
        stop = self.shnum if stop is None else min(stop, self.shnum)
        for index, fields in self._table(self.shoff, self._shdr, start, stop):
            yield Section(index, *fields)

    def section(self, index: int) -> Section:
        if not 0 <= index < self.shnum:
            raise ElfLayoutError(f"section index {index} is not a section: there are {self.shnum}")
        return next(self.sections(index, index + 1))

    def segments(self) -> Iterator[Segment]:
        for index, fields in self._table(self.phoff, self._phdr, 0, self.phnum):
            yield Segment(index, *fields)

    def names(self) -> bytes:
        """The section name string table (e_shstrndx), empty when there is none."""
        if self._names is None:
            names = b""
            if self.shstrndx != SHN_UNDEF:
                table = self.section(self.shstrndx)
                if table.sh_type == SHT_NOBITS or not self._inside(table.sh_offset, table.sh_size):
                    raise ElfLayoutError(
                        f"the section name table (e_shstrndx {self.shstrndx}) at sh_offset"
                        f" {table.sh_offset:#x}, sh_size {table.sh_size:#x} is not inside the"
                        f" file ({self.size} bytes)"
                    )
                names = bytes(self._read(table.sh_offset, table.sh_size))
            self._names = names
        return self._names

    def name(self, section: Section) -> str:
        names = self.names()
        if section.sh_name >= len(names):
            if not section.sh_name:
                return ""
            raise ElfLayoutError(
                f"section {section.number}'s sh_name {section.sh_name} is past the end of the"
                f" {len(names)}-byte section name table (e_shstrndx {self.shstrndx})"
            )
        end = names.find(b"\0", section.sh_name)
        raw = names[section.sh_name : end if end >= 0 else len(names)]
        return raw.decode("utf-8", "surrogateescape")

    def is_named(self, section: Section, name: bytes) -> bool:
        """``name(section) == name`` without decoding: a scan of 5 million headers stays fast."""
        return self.names().startswith(name + b"\0", section.sh_name)

    def section_data(self, section: Section) -> bytes | memoryview:
        """The section's bytes (none for SHT_NOBITS); ElfLayoutError if they pass the end."""
        if section.sh_type == SHT_NOBITS:
            return b""
        self.check_section(section)
        return self._read(section.sh_offset, section.sh_size)

    def check_section(self, section: Section) -> None:
        """Refuse a section whose bytes would pass the end of the file."""
        if section.sh_type != SHT_NOBITS and not self._inside(section.sh_offset, section.sh_size):
            try:
                label = repr(self.name(section))
            except ElfLayoutError:
                label = f"sh_name {section.sh_name}"
            raise ElfLayoutError(
                f"section {section.number} ({label}): sh_offset {section.sh_offset:#x} + sh_size"
                f" {section.sh_size:#x} runs past the end of the file ({self.size} bytes)"
            )

    def check_segment(self, segment: Segment) -> None:
        if not self._inside(segment.p_offset, segment.p_filesz):
            raise ElfLayoutError(
                f"program header {segment.number}: p_offset {segment.p_offset:#x} + p_filesz"
                f" {segment.p_filesz:#x} runs past the end of the file ({self.size} bytes)"
            )

    def segment_data(self, segment: Segment) -> bytes | memoryview:
        self.check_segment(segment)
        return self._read(segment.p_offset, segment.p_filesz)

    def contents(self) -> bytes | memoryview:
        """The whole file: read for a file, a view for memory."""
        return self._read(0, self.size)

    def _table(
        self, offset: int, entry: struct.Struct, start: int, stop: int
    ) -> Iterator[tuple[int, tuple[int, ...]]]:
        """(index, fields) of entries ``start`` up to ``stop``, read _CHUNK entries at a time."""
        for first in range(start, stop, _CHUNK):
            count = min(_CHUNK, stop - first)
            raw = self._read(offset + first * entry.size, count * entry.size)
            yield from enumerate(entry.iter_unpack(raw), first)

    def _inside(self, offset: int, size: int) -> bool:
        return offset + size <= self.size

    def _entsize(self, field: str, value: int, expected: int, kind: str) -> None:
        if value != expected:
            name = f"Elf{64 if self.wide else 32}_{kind}"
            raise ElfLayoutError(f"{field} {value}, not {expected} (the size of an {name})")

    def _fits(self, what: str, field: str, offset: int, size: int) -> None:
        """Refuse a table that does not fit the file before any of it is read."""
        if not self._inside(offset, size):
            raise ElfLayoutError(
                f"{what} at {field} {offset:#x} would end at byte {offset + size}, past the end"
                f" of the file ({self.size} bytes): the ELF is truncated or damaged"
            )

    def _read(self, offset: int, size: int) -> bytes | memoryview:
        """``size`` bytes at ``offset``, which the caller checked to be inside the file."""
        if self._view is not None:
            return self._view[offset : offset + size]
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            now = self._file.seek(0, os.SEEK_END)
            raise ElfLayoutError(
                f"{size} bytes at offset {offset:#x} could not be read: the file shrank from"
                f" {self.size} to {now} bytes while it was read"
            )
        return data

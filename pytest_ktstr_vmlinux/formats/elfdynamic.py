"""What a dynamically linked ELF program asks of the dynamic loader: ``PT_INTERP`` and the
``DT_NEEDED``, ``DT_RUNPATH``, ``DT_RPATH``, ``DT_SONAME`` and ``DT_FLAGS_1`` of its dynamic
section, read from the bytes without running anything.

Everything is read through the program headers (the view the loader has; sections may be
stripped): ``PT_INTERP`` holds the interpreter's path, ``PT_DYNAMIC`` the tag/value pairs, and
the string table ``DT_STRTAB`` names is a virtual address, turned into a file offset through the
``PT_LOAD`` segment that maps it. Every offset, size and count is checked against the file before
it is used, so a damaged or hostile file is an ``ElfDynamicError`` saying which field is wrong,
never an IndexError or a read past the end. Either class and byte order are read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .elf import ELFCLASS64, ELFDATA2LSB, ElfIdent, NotElfError, parse_elf_ident

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
ET_EXEC = 2
ET_DYN = 3
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_STRSZ = 10
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_NODEFLIB = 0x800  # the loader skips ld.so.cache and its default directories
PN_XNUM = 0xFFFF

_MAX_PATH = 4096  # PATH_MAX: an interpreter or a name longer than this is damage


class ElfDynamicError(ValueError):
    """A header of the ELF is not what the spec allows or points outside the file; the message
    names the field. Callers put the file's name in front."""


@dataclass(frozen=True)
class DynamicInfo:
    """The dynamic loader's view of one ELF file."""

    ident: ElfIdent
    e_type: int
    interpreter: str | None  # PT_INTERP: "/lib64/ld-linux-x86-64.so.2"
    needed: tuple[str, ...]  # DT_NEEDED, in order
    runpath: tuple[str, ...] | None  # DT_RUNPATH split at ':', None when absent
    rpath: tuple[str, ...] | None  # DT_RPATH, None when absent (or ignored: RUNPATH is there)
    soname: str | None
    flags_1: int

    @property
    def dynamic(self) -> bool:
        """Whether the dynamic loader is involved: an interpreter or a dynamic section."""
        return self.interpreter is not None or bool(self.needed) or self.soname is not None

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)


# Per class: ELF header fields after e_ident (e_type .. e_shstrndx) and where they start; a
# program header's fields in file order and the order of (p_type, p_offset, p_vaddr, p_filesz);
# a dynamic entry.
_EHDR = {True: "HHIQQQIHHHHHH", False: "HHIIIIIHHHHHH"}
_PHDR = {True: ("IIQQQQQQ", (0, 2, 3, 5)), False: ("IIIIIIII", (0, 1, 2, 4))}
_DYN = {True: "qQ", False: "iI"}
_SHDR0_INFO = {True: ("I", 44), False: ("I", 28)}  # sh_info of section header 0


@dataclass(frozen=True)
class _Segment:
    p_type: int
    offset: int
    vaddr: int
    filesz: int


def parse_dynamic(data: bytes | bytearray | memoryview) -> DynamicInfo:
    """The loader's view of the ELF file ``data``; NotElfError for anything that is not ELF
    (a script), ElfDynamicError for an ELF whose headers are damaged."""
    view = memoryview(data).cast("B")
    ident = parse_elf_ident(bytes(view[:20]))
    wide = ident.ei_class == ELFCLASS64
    order = "<" if ident.ei_data == ELFDATA2LSB else ">"
    ehdr = struct.Struct(order + _EHDR[wide])
    if len(view) < 16 + ehdr.size:
        raise NotElfError(f"ELF header truncated at {len(view)} bytes")
    fields = ehdr.unpack_from(view, 16)
    e_type, e_phoff, e_phentsize, e_phnum = fields[0], fields[4], fields[8], fields[9]
    e_shoff, e_shentsize = fields[5], fields[10]
    if e_phnum == PN_XNUM:  # extended numbering: the count is section header 0's sh_info
        fmt, at = _SHDR0_INFO[wide]
        _check_range(view, e_shoff, max(e_shentsize, at + 4), "section header 0 (e_shoff)")
        e_phnum = struct.unpack_from(order + fmt, view, e_shoff + at)[0]
    segments = _segments(view, order, wide, e_phoff, e_phentsize, e_phnum)
    interpreter = None
    for seg in segments:
        if seg.p_type == PT_INTERP:
            interpreter = _string(view, seg.offset, seg.filesz, "PT_INTERP")
            break
    dynamic = next((s for s in segments if s.p_type == PT_DYNAMIC), None)
    if dynamic is None:
        return DynamicInfo(ident, e_type, interpreter, (), None, None, None, 0)
    entries = _dynamic_entries(view, order, wide, dynamic)
    # As glibc's loader reads them: of a tag that is not a list, the last entry counts.
    last = dict(entries)
    strtab, strsz = last.get(DT_STRTAB), last.get(DT_STRSZ)
    wanted = (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH)
    if any(t in wanted for t in last) and (strtab is None or strsz is None):
        raise ElfDynamicError("the dynamic section names strings but has no DT_STRTAB/DT_STRSZ")
    table = b""
    if strtab is not None and strsz is not None:
        offset = _file_offset(segments, strtab, strsz)
        table = bytes(view[offset : offset + strsz])

    def text(value: int, tag: str) -> str:
        if value >= len(table):
            raise ElfDynamicError(f"{tag} string at {value} is past DT_STRSZ ({len(table)})")
        end = table.find(b"\0", value, value + _MAX_PATH)
        if end < 0:
            raise ElfDynamicError(f"{tag} string at {value} has no NUL within DT_STRSZ")
        return table[value:end].decode("utf-8", "surrogateescape")

    def search_path(tag: int, name: str) -> tuple[str, ...] | None:
        return None if tag not in last else tuple(text(last[tag], name).split(":"))

    needed = tuple(text(v, "DT_NEEDED") for t, v in entries if t == DT_NEEDED)
    soname = text(last[DT_SONAME], "DT_SONAME") if DT_SONAME in last else None
    runpath = search_path(DT_RUNPATH, "DT_RUNPATH")
    # glibc: an object with DT_RUNPATH has its DT_RPATH ignored.
    rpath = None if runpath is not None else search_path(DT_RPATH, "DT_RPATH")
    flags_1 = last.get(DT_FLAGS_1, 0)
    return DynamicInfo(ident, e_type, interpreter, needed, runpath, rpath, soname, flags_1)


def _segments(
    view: memoryview, order: str, wide: bool, phoff: int, phentsize: int, phnum: int
) -> list[_Segment]:
    fmt, picks = _PHDR[wide]
    phdr = struct.Struct(order + fmt)
    if phnum == 0:
        return []
    if phentsize < phdr.size:
        raise ElfDynamicError(f"e_phentsize {phentsize} is smaller than a program header")
    _check_range(view, phoff, phentsize * phnum, f"program headers (e_phoff, e_phnum {phnum})")
    out = []
    for i in range(phnum):
        values = phdr.unpack_from(view, phoff + i * phentsize)
        out.append(_Segment(*(values[p] for p in picks)))
    return out


def _dynamic_entries(
    view: memoryview, order: str, wide: bool, seg: _Segment
) -> list[tuple[int, int]]:
    _check_range(view, seg.offset, seg.filesz, "PT_DYNAMIC")
    entry = struct.Struct(order + _DYN[wide])
    out = []
    for at in range(seg.offset, seg.offset + seg.filesz - entry.size + 1, entry.size):
        tag, value = entry.unpack_from(view, at)
        if tag == DT_NULL:
            break
        out.append((tag, value))
    return out


def _file_offset(segments: list[_Segment], vaddr: int, size: int) -> int:
    """The file offset of virtual ``[vaddr, vaddr + size)``, through the PT_LOAD mapping it."""
    for seg in segments:
        if seg.p_type == PT_LOAD and seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
            return seg.offset + vaddr - seg.vaddr
    raise ElfDynamicError(
        f"DT_STRTAB {vaddr:#x} (+{size:#x}) is in no PT_LOAD segment's file contents"
    )


def _check_range(view: memoryview, offset: int, size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > len(view):
        raise ElfDynamicError(
            f"{what} at {offset:#x} (+{size:#x}) lies past the end of the file ({len(view):#x})"
        )


def _string(view: memoryview, offset: int, size: int, what: str) -> str:
    _check_range(view, offset, size, what)
    raw = bytes(view[offset : offset + min(size, _MAX_PATH)])
    end = raw.find(b"\0")
    if end <= 0:
        raise ElfDynamicError(f"{what} is not a NUL-terminated path")
    return raw[:end].decode("utf-8", "surrogateescape")

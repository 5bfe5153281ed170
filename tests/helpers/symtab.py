"""A small ELF writer for symbol tables: .text, .data..percpu, .symtab and .strtab in any ELF
class and byte order (binutils cannot make the ones this host's objcopy refuses), with the
section-header arithmetic tests use to damage what it wrote."""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from pathlib import Path

STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_ABS = 0xFFF1
TEXT, PERCPU, SYMTAB = 1, 2, 3  # section indexes in what build_elf writes
TEXT_ADDR = 0xFFFFFFFF81000000
TEXT_ADDR32 = 0xC1000000
# e_machine per (class, little): machines whose ELF really has that class and order.
MACHINES = {(64, True): 62, (64, False): 22, (32, True): 3, (32, False): 20}


@dataclass(frozen=True)
class Sym:
    name: str
    value: int
    size: int = 0
    type: int = STT_FUNC
    bind: int = STB_GLOBAL
    shndx: int = TEXT


def build_elf(
    symbols: list[Sym], *, elfclass: int = 64, little: bool = True, percpu_addr: int = 0
) -> bytes:
    """An ET_EXEC ELF whose .symtab holds a null entry, a FILE and a SECTION symbol (which
    KernelSymbols must skip), then ``symbols`` (locals first, as ELF requires)."""
    o = "<" if little else ">"
    wide = elfclass == 64
    entries = [Sym("", 0, 0, STT_NOTYPE, STB_LOCAL, 0), Sym("fake.c", 0, 0, STT_FILE, 0, SHN_ABS)]
    entries.append(Sym("", TEXT_ADDR if wide else TEXT_ADDR32, 0, STT_SECTION, STB_LOCAL, TEXT))
    entries += sorted(symbols, key=lambda s: s.bind != STB_LOCAL)
    strtab, symtab = bytearray(b"\0"), bytearray()
    for s in entries:
        st_name = len(strtab) if s.name else 0
        strtab += s.name.encode() + b"\0" if s.name else b""
        info = s.bind << 4 | s.type
        if wide:
            symtab += struct.pack(f"{o}IBBHQQ", st_name, info, 0, s.shndx, s.value, s.size)
        else:
            symtab += struct.pack(f"{o}IIIBBH", st_name, s.value, s.size, info, 0, s.shndx)
    first_global = next(i for i, s in enumerate([*entries, Sym("", 0)]) if s.bind != STB_LOCAL)
    text_addr = TEXT_ADDR if wide else TEXT_ADDR32
    # name, type, addr, data, link, info, entsize
    sections = [
        (".text", 1, text_addr, bytes(256), 0, 0, 0),
        (".data..percpu", 1, percpu_addr, bytes(64), 0, 0, 0),
        (".symtab", 2, 0, bytes(symtab), 4, first_global, 24 if wide else 16),
        (".strtab", 3, 0, bytes(strtab), 0, 0, 0),
    ]
    shstrtab = b"\0" + b"".join(s[0].encode() + b"\0" for s in sections) + b".shstrtab\0"
    sections.append((".shstrtab", 3, 0, shstrtab, 0, 0, 0))
    ehsize, shentsize = (64, 64) if wide else (52, 40)
    body, headers, name_at = bytearray(), [bytes(shentsize)], 1
    for name, sh_type, addr, data, link, info, entsize in sections:
        body += bytes(-(ehsize + len(body)) % 8)
        offset = ehsize + len(body)
        fields = (name_at, sh_type, 0, addr, offset, len(data), link, info, 8, entsize)
        headers.append(struct.pack(f"{o}IIQQQQIIQQ" if wide else f"{o}10I", *fields))
        name_at += len(name) + 1
        body += data
    body += bytes(-(ehsize + len(body)) % 8)
    shoff = ehsize + len(body)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1 if little else 2, 1]) + bytes(9)
    machine = MACHINES[(elfclass, little)]
    count = len(headers)
    if wide:
        ehdr = struct.pack(
            f"{o}HHIQQQIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, 64, 56, 0, 64, count, 5
        )
    else:
        ehdr = struct.pack(
            f"{o}HHIIIIIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, 52, 32, 0, 40, count, 5
        )
    return ident + ehdr + bytes(body) + b"".join(headers)


def section_header_at(elf: bytes, index: int) -> tuple[int, str, bool]:
    """(file offset of section header ``index``, struct prefix, wide) read by hand."""
    wide, o = elf[4] == 2, "<" if elf[5] == 1 else ">"
    shoff = struct.unpack_from(f"{o}Q" if wide else f"{o}I", elf, 0x28 if wide else 0x20)[0]
    shentsize = struct.unpack_from(f"{o}H", elf, 0x3A if wide else 0x2E)[0]
    return shoff + index * shentsize, o, wide


def symtab_index(elf: bytes) -> int:
    """The index of the SHT_SYMTAB section, found by walking the headers by hand."""
    wide, o = elf[4] == 2, "<" if elf[5] == 1 else ">"
    count = struct.unpack_from(f"{o}H", elf, 0x3C if wide else 0x30)[0]
    for index in range(count):
        at, o, wide = section_header_at(elf, index)
        if struct.unpack_from(f"{o}I", elf, at + 4)[0] == 2:
            return index
    raise AssertionError("no SHT_SYMTAB")


# Field offsets inside a section header: (wide, narrow).
SH_OFFSET, SH_SIZE, SH_LINK, SH_ENTSIZE = (0x18, 0x10), (0x20, 0x14), (0x28, 0x18), (0x38, 0x24)


def damaged(elf: bytes, field: tuple[int, int], value: int) -> bytes:
    at, o, wide = section_header_at(elf, symtab_index(elf))
    code = "I" if field == SH_LINK or not wide else "Q"
    out = bytearray(elf)
    struct.pack_into(f"{o}{code}", out, at + field[0 if wide else 1], value)
    return bytes(out)


SAMPLE = [
    Sym("start_kernel", TEXT_ADDR + 0x10, 0x20),
    Sym("helper", TEXT_ADDR + 0x30, 0x10, bind=STB_LOCAL),
    Sym("helper", TEXT_ADDR + 0x40, 0x10, bind=STB_LOCAL),
    Sym("dup_one_global", TEXT_ADDR + 0x50, 8, bind=STB_LOCAL),
    Sym("dup_one_global", TEXT_ADDR + 0x58, 8),
    Sym("weak_thing", TEXT_ADDR + 0x60, 8, bind=STB_WEAK),
    Sym("label", TEXT_ADDR + 0x68, 0, STT_NOTYPE),
    Sym("runqueues", 0x1000, 0x40, STT_OBJECT, shndx=PERCPU),
    Sym("jiffies_64", TEXT_ADDR + 0x80, 8, STT_OBJECT),
    Sym("abs_marker", 0x1234, 0, STT_NOTYPE, shndx=SHN_ABS),
    Sym("undefined_ref", 0, 0, STT_NOTYPE, shndx=0),
]


def narrow(symbols: list[Sym]) -> list[Sym]:
    """The same symbols with .text addresses an ELF32 can hold."""
    return [
        dataclasses.replace(s, value=s.value - TEXT_ADDR + TEXT_ADDR32)
        if s.value >= TEXT_ADDR
        else s
        for s in symbols
    ]


def write(tmp: Path, data: bytes, name: str = "vmlinux") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path

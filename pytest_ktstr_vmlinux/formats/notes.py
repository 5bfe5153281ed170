"""The kernel's own GNU build-id in a flat kernel (an arm64 or riscv ``Image``), told by structure.

A flat Image keeps the bytes of the kernel's ``.notes``, but not alone: the kernel's data holds
complete ELF files of its own (the vDSO images ``vdso.so`` and ``vdso32.so``, user-mode helpers),
and each of those carries a GNU build-id note too. Debian's 6.1 arm64 Image has three, and the
kernel's is the last; no rule of position says so. The kernel's note is the one that lies in no
embedded ELF file:

1. every ``\\x7fELF`` after the first byte whose header is plausible and self-consistent (EI_CLASS,
   EI_DATA, EI_VERSION, e_version, e_type, e_ehsize, e_phentsize and e_shentsize for its class;
   program and section header tables, and every segment's and section's data, inside the buffer)
   is an embedded ELF, spanning from its magic to the furthest of those ends;
2. every GNU build-id note (n_namesz 4, name "GNU\\0", n_type NT_GNU_BUILD_ID, n_descsz 8..64,
   4-byte aligned, either byte order) that starts inside such a span belongs to that ELF;
3. the notes left over name the kernel if they agree on one build-id. Several different ones, or
   none, leave the build-id unknown (None) with the reason in ``FlatBuildId.problem``: a guess
   would pair the image with the wrong vmlinux.

flat_build_id never raises for damaged or hostile bytes: a header that does not hold together is
not an embedded ELF, and work is bounded by the caps below (past them, the build-id is unknown).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from .elf import (
    EI_CLASS,
    EI_DATA,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    NT_GNU_BUILD_ID,
)

EI_VERSION = 6
EI_NIDENT = 16
EV_CURRENT = 1
ET_REL, ET_CORE = 1, 4  # e_type of a real ELF file lies in ET_REL..ET_CORE
SHT_NULL = 0
SHT_NOBITS = 8
SHN_UNDEF = 0
GNU_NAME = b"GNU\x00"
BUILD_ID_MIN, BUILD_ID_MAX = 8, 64  # n_descsz: sha1 is 20, md5/uuid 16, xxhash 8

# Per class: (e_ehsize, e_phentsize, e_shentsize, Ehdr fields after e_ident, Phdr, Shdr formats,
# index of p_offset and p_filesz in a Phdr, of sh_type, sh_offset and sh_size in a Shdr).
_CLASS = {
    ELFCLASS32: (52, 32, 40, "HHIIIIIHHHHHH", "8I", "10I", (1, 4), (1, 4, 5)),
    ELFCLASS64: (64, 56, 64, "HHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ", (2, 5), (1, 4, 5)),
}

# Bounds on the work hostile bytes can demand; past them the build-id is left unknown.
MAX_ELF_MAGICS = 4096
MAX_TABLE_ENTRIES = 1 << 18
MAX_NOTES = 4096


@dataclass(frozen=True)
class BuildIdNote:
    """A GNU build-id note found in the bytes, and the embedded ELF holding it (None: none)."""

    offset: int
    build_id: str
    embedded_in: int | None


@dataclass(frozen=True)
class FlatBuildId:
    """The kernel's build-id in a flat image, every note seen, and why it is None when it is."""

    build_id: str | None
    notes: tuple[BuildIdNote, ...]
    problem: str | None


class ScanLimitError(ValueError):
    """The bytes hold more ELF magics, table entries or notes than a kernel does (the caps
    above): the scan stops rather than let hostile input set its cost."""


def scan_gnu_build_id(data: bytes | bytearray | memoryview) -> str | None:
    """The kernel's GNU build-id in a flat image: the one note in no embedded ELF, else None."""
    return flat_build_id(data).build_id


def flat_build_id(data: bytes | bytearray | memoryview) -> FlatBuildId:
    """Every GNU build-id note in ``data``, which embedded ELF holds each, and the kernel's."""
    raw = data if isinstance(data, (bytes, bytearray)) else bytes(data)  # searched in place
    try:
        spans = embedded_elf_spans(raw)
        found = _build_id_notes(raw)
    except ScanLimitError as e:
        return FlatBuildId(None, (), f"{e}; the kernel's GNU build-id is not determined")
    notes = tuple(
        BuildIdNote(at, build_id, next((s for s, end in spans if s <= at < end), None))
        for at, build_id in found
    )
    loose = [n for n in notes if n.embedded_in is None]
    ids = sorted({n.build_id for n in loose})
    if len(ids) == 1:
        return FlatBuildId(ids[0], notes, None)
    if not notes:
        return FlatBuildId(None, notes, "no GNU build-id note")
    if not loose:
        inside = ", ".join(f"{n.build_id} in the ELF at {n.embedded_in:#x}" for n in notes)
        return FlatBuildId(
            None, notes, f"every GNU build-id note lies in an embedded ELF file ({inside})"
        )
    listed = ", ".join(f"{n.build_id} at {n.offset:#x}" for n in loose)
    return FlatBuildId(
        None,
        notes,
        f"{len(ids)} different GNU build-id notes lie in no embedded ELF file ({listed});"
        " which is the kernel's cannot be told",
    )


def embedded_elf_spans(data: bytes | bytearray) -> list[tuple[int, int]]:
    """[start, end) of every plausible ELF file embedded in ``data`` after its first byte.

    The data itself is what is being identified, so an ELF header at offset 0 is not embedded.
    Raises ScanLimitError past MAX_ELF_MAGICS magics or MAX_TABLE_ENTRIES table entries.
    """
    spans: list[tuple[int, int]] = []
    budget = [MAX_TABLE_ENTRIES]
    at = data.find(ELFMAG, 1)
    examined = 0
    while at >= 0:
        examined += 1
        if examined > MAX_ELF_MAGICS:
            raise ScanLimitError(f"more than {MAX_ELF_MAGICS} ELF magics in the payload")
        end = _elf_span_end(data, at, budget)
        if end is not None:
            spans.append((at, end))
        at = data.find(ELFMAG, at + 1)
    return spans


def _elf_span_end(data: bytes | bytearray, at: int, budget: list[int]) -> int | None:
    """Where the ELF whose header starts at ``at`` ends, or None if the header is not plausible."""
    ident = data[at : at + EI_NIDENT]
    if len(ident) < EI_NIDENT or ident[EI_CLASS] not in _CLASS or ident[EI_VERSION] != EV_CURRENT:
        return None
    if ident[EI_DATA] not in (ELFDATA2LSB, ELFDATA2MSB):
        return None
    ehsize, phentsize, shentsize, ehdr, phdr, shdr, ph_fields, sh_fields = _CLASS[ident[EI_CLASS]]
    order = "<" if ident[EI_DATA] == ELFDATA2LSB else ">"
    available = len(data) - at
    if available < ehsize:
        return None
    (
        e_type,
        _e_machine,
        e_version,
        _e_entry,
        e_phoff,
        e_shoff,
        _e_flags,
        e_ehsize,
        e_phentsize,
        e_phnum,
        e_shentsize,
        e_shnum,
        e_shstrndx,
    ) = struct.unpack_from(order + ehdr, data, at + EI_NIDENT)
    if not ET_REL <= e_type <= ET_CORE or e_version != EV_CURRENT or e_ehsize != ehsize:
        return None
    if e_phnum == 0 and e_shnum == 0:
        return None
    if e_phnum and (e_phentsize != phentsize or e_phoff < ehsize):
        return None
    if e_shnum and (e_shentsize != shentsize or e_shoff < ehsize):
        return None
    if e_shnum and e_shstrndx != SHN_UNDEF and e_shstrndx >= e_shnum:
        return None
    ph_end = e_phoff + e_phnum * phentsize if e_phnum else 0
    sh_end = e_shoff + e_shnum * shentsize if e_shnum else 0
    if ph_end > available or sh_end > available:
        return None
    budget[0] -= e_phnum + e_shnum
    if budget[0] < 0:
        raise ScanLimitError(f"more than {MAX_TABLE_ENTRIES} ELF table entries in the payload")
    # Where the file's bytes end: its tables, and the data of every segment and section that
    # occupies the file (SHT_NOBITS and SHT_NULL do not). Data past the buffer: not a real ELF.
    ends = [ehsize, ph_end, sh_end]
    p_offset, p_filesz = ph_fields
    phdrs = data[at + e_phoff : at + ph_end] if e_phnum else b""
    ends += [p[p_offset] + p[p_filesz] for p in struct.iter_unpack(order + phdr, phdrs)]
    sh_type, sh_offset, sh_size = sh_fields
    shdrs = data[at + e_shoff : at + sh_end] if e_shnum else b""
    ends += [
        s[sh_offset] + s[sh_size]
        for s in struct.iter_unpack(order + shdr, shdrs)
        if s[sh_type] not in (SHT_NULL, SHT_NOBITS)
    ]
    end = max(ends)
    return at + end if end <= available else None


def _build_id_notes(data: bytes | bytearray) -> list[tuple[int, str]]:
    """(offset, hex) of every well-formed GNU build-id note in ``data``, in offset order."""
    found: list[tuple[int, str]] = []
    byteorder: Literal["little", "big"]
    for byteorder in ("little", "big"):
        # n_type then the name: the fixed bytes of the note, 8 bytes after its start.
        key = NT_GNU_BUILD_ID.to_bytes(4, byteorder) + GNU_NAME
        at = data.find(key, 8)
        while at >= 0:
            start = at - 8
            n_namesz = int.from_bytes(data[start : start + 4], byteorder)
            n_descsz = int.from_bytes(data[start + 4 : start + 8], byteorder)
            desc = start + 12 + len(GNU_NAME)
            if (
                start % 4 == 0
                and n_namesz == len(GNU_NAME)
                and BUILD_ID_MIN <= n_descsz <= BUILD_ID_MAX
                and desc + n_descsz <= len(data)
            ):
                found.append((start, data[desc : desc + n_descsz].hex()))
                if len(found) > MAX_NOTES:
                    raise ScanLimitError(f"more than {MAX_NOTES} GNU build-id notes in the payload")
            at = data.find(key, at + 1)
    return sorted(found)

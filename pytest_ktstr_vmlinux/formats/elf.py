"""ELF facts about kernels: the identification the locator checks, and the identity pairing uses.

``e_ident`` and ``e_machine`` are read by hand: probing a dozen candidates must not parse section
tables of 600 MB files. Build-ids and banners come from sections found by elftables.py, which
checks every header count against the file before it reads a table; notes are walked by hand
because the same walk serves /sys/kernel/notes, which is no ELF. A flat Image's build-id is found
by notes.py, which tells the kernel's note from those of the ELF files inside it.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal

from ..errors import KernelArtifactError
from ..regularfile import NotRegularFile, open_regular

if TYPE_CHECKING:
    from .elftables import ElfTables

ELFMAG = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
E_MACHINE_OFFSET = 18
EHDR_IDENT_AND_MACHINE = 20

# e_machine values (ELF gABI / <elf.h>) mapped to the kernel's ARCH= names.
EM_386 = 3
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258
EM_PPC64 = 21
EM_S390 = 22

# e_machine -> arch name as `uname -m` style tools and the CLI's JSON spell it; RISC-V and
# LoongArch take their width from EI_CLASS.
_ARCH_BY_MACHINE: dict[int, str] = {
    EM_386: "i386",
    EM_X86_64: "x86_64",
    EM_ARM: "arm",
    EM_AARCH64: "arm64",
    EM_RISCV: "riscv",
    EM_LOONGARCH: "loongarch",
    EM_PPC64: "ppc64",
    EM_S390: "s390x",
}
_SIZED = {"riscv", "loongarch"}

# Arch names and the family (the kernel's ARCH= directory) each belongs to. A family name on its
# own means "this family, width unknown" (a build tree's arch/x86/, a pre-2.12 bzImage).
ARCH_FAMILY: dict[str, str] = {
    "x86_64": "x86",
    "i386": "x86",
    "x86": "x86",
    "arm64": "arm64",
    "arm": "arm",
    "riscv64": "riscv",
    "riscv32": "riscv",
    "riscv": "riscv",
    "loongarch64": "loongarch",
    "loongarch": "loongarch",
    "ppc64": "powerpc",
    "s390x": "s390",
}


def arch_matches(a: str, b: str) -> bool:
    """Same machine: equal names, or one is the other's family (width unknown)."""
    if a == b:
        return True
    family_a, family_b = ARCH_FAMILY.get(a, a), ARCH_FAMILY.get(b, b)
    return family_a == family_b and (a == family_a or b == family_b)


_MACHINE_NAMES: dict[int, str] = {
    EM_386: "EM_386",
    EM_X86_64: "EM_X86_64",
    EM_ARM: "EM_ARM",
    EM_AARCH64: "EM_AARCH64",
    EM_RISCV: "EM_RISCV",
    EM_LOONGARCH: "EM_LOONGARCH",
    EM_PPC64: "EM_PPC64",
    EM_S390: "EM_S390",
}


class NotElfError(ValueError):
    """The bytes do not start with a well-formed ELF identification."""


@dataclass(frozen=True)
class ElfIdent:
    """``EI_CLASS``, ``EI_DATA`` and ``e_machine`` of an ELF file."""

    ei_class: int
    ei_data: int
    e_machine: int

    @property
    def machine_name(self) -> str:
        return _MACHINE_NAMES.get(self.e_machine, f"EM_{self.e_machine}")

    @property
    def arch(self) -> str | None:
        """``x86_64``, ``arm64``, ``riscv64``, ... for ``e_machine``; None if unknown."""
        name = _ARCH_BY_MACHINE.get(self.e_machine)
        if name in _SIZED:
            return f"{name}{64 if self.ei_class == ELFCLASS64 else 32}"
        return name


def parse_elf_ident(header: bytes) -> ElfIdent:
    """Decode the first 20 bytes of an ELF file; raise NotElfError saying what is wrong."""
    if len(header) < len(ELFMAG) or header[: len(ELFMAG)] != ELFMAG:
        raise NotElfError("no ELF magic (7f 45 4c 46)")
    if len(header) < EHDR_IDENT_AND_MACHINE:
        raise NotElfError(f"ELF header truncated at {len(header)} bytes")
    ei_class, ei_data = header[EI_CLASS], header[EI_DATA]
    if ei_class not in (ELFCLASS32, ELFCLASS64):
        raise NotElfError(f"bad EI_CLASS {ei_class}")
    if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise NotElfError(f"bad EI_DATA {ei_data}")
    raw_machine = header[E_MACHINE_OFFSET:EHDR_IDENT_AND_MACHINE]
    e_machine = int.from_bytes(raw_machine, "little" if ei_data == ELFDATA2LSB else "big")
    return ElfIdent(ei_class=ei_class, ei_data=ei_data, e_machine=e_machine)


def read_elf_ident(path: str | os.PathLike[str]) -> ElfIdent:
    """Read the ELF identification of ``path``; OSError and NotElfError propagate, and
    NotRegularFile for anything but a regular file."""
    with open_regular(path) as f:
        return parse_elf_ident(f.read(EHDR_IDENT_AND_MACHINE))


def is_elf(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable file starting with a valid ELF identification."""
    try:
        read_elf_ident(path)
    except (OSError, NotElfError, NotRegularFile):
        return False
    return True


# --- identity: GNU build-id and linux_banner -----------------------------------------------------

NT_GNU_BUILD_ID = 3
PT_NOTE = 4
BANNER_PREFIX = b"Linux version "
_BANNER_MAX = 512
# The prefix, a digit, then the rest of the line up to NUL, newline or the end of the data, all
# within _BANNER_MAX bytes. The lookahead lets the next search start right after the prefix.
_BANNER = re.compile(
    rb"(?=(%s\d[^\n\x00]{0,%d})(?:[\n\x00]|\Z))" % (BANNER_PREFIX, _BANNER_MAX - 15)
)
_BUILD_NUMBER = re.compile(r"\) #\d")


@dataclass(frozen=True)
class ElfIdentity:
    """What a kernel ELF says about itself: build-id, banner, release, arch, and whether it has
    the ``.symtab`` a debug vmlinux carries (an ELF extracted from an image does not)."""

    build_id: str | None
    banner: str | None
    release: str | None
    arch: str | None
    has_symtab: bool


def parse_notes(
    blob: bytes | memoryview, byteorder: Literal["little", "big"] = "little"
) -> Iterator[Note]:
    """Walk an ELF notes blob (SHT_NOTE/PT_NOTE contents, /sys/kernel/notes); stop at damage."""
    offset = 0
    while offset + 12 <= len(blob):
        namesz = int.from_bytes(blob[offset : offset + 4], byteorder)
        descsz = int.from_bytes(blob[offset + 4 : offset + 8], byteorder)
        n_type = int.from_bytes(blob[offset + 8 : offset + 12], byteorder)
        name_start = offset + 12
        desc_start = name_start + _align4(namesz)
        end = desc_start + _align4(descsz)
        if end > len(blob) or namesz > len(blob) or descsz > len(blob):
            return
        name = bytes(blob[name_start : name_start + namesz]).rstrip(b"\x00")
        yield Note(name, n_type, bytes(blob[desc_start : desc_start + descsz]))
        offset = end


@dataclass(frozen=True)
class Note:
    n_name: bytes
    n_type: int
    n_desc: bytes


def gnu_build_id(
    blob: bytes | memoryview, byteorder: Literal["little", "big"] = "little"
) -> str | None:
    """The NT_GNU_BUILD_ID of a notes blob, as hex."""
    for note in parse_notes(blob, byteorder):
        if note.n_name == b"GNU" and note.n_type == NT_GNU_BUILD_ID and note.n_desc:
            return note.n_desc.hex()
    return None


def find_banner(data: bytes | bytearray | memoryview) -> str | None:
    """The ``linux_banner`` string ("Linux version 6.1.0-... #1 SMP ...") in ``data``.

    Since 6.1 a kernel carries two: a weak placeholder ("... # SMP") in init/version.o and the
    real one, with the build number, from init/version-timestamp.o. The real one is preferred.
    The search runs in place (a regex scans any buffer): a payload is never copied for it.
    """
    found = [
        m.group(1).decode("ascii", errors="replace")
        for m in itertools.islice(_BANNER.finditer(data), 8)
    ]
    numbered = [b for b in found if _BUILD_NUMBER.search(b)]
    best = numbered or found
    return best[0] if best else None


def release_from_banner(banner: str | None) -> str | None:
    if banner is None:
        return None
    token = banner[len("Linux version ") :].split(" ", 1)[0]
    return token or None


def read_elf_identity(
    source: BinaryIO | bytes | bytearray | memoryview, *, what: str
) -> ElfIdentity:
    """Build-id (from SHT_NOTE sections, else PT_NOTE segments), banner (from ``.rodata``, else
    the whole file), arch and ``.symtab`` presence of a kernel ELF: an open file, or in memory.

    Raises KernelArtifactError naming ``what`` for a header that points outside the file.
    """
    from .elftables import ElfLayoutError, ElfTables  # elftables builds on this module

    try:
        return _read_elf_identity(ElfTables(source))
    except (ElfLayoutError, OSError) as e:
        raise KernelArtifactError(f"{what}: not a readable ELF ({e})") from None


def _read_elf_identity(elf: ElfTables) -> ElfIdentity:
    from .elftables import SHT_NOTE, SHT_SYMTAB

    byteorder: Literal["little", "big"] = "little" if elf.little_endian else "big"
    build_id = None
    has_symtab = False
    rodata = None
    for section in elf.sections():
        elf.check_section(section)  # no section may point past the file, used or not
        if section.sh_type == SHT_NOTE and build_id is None:
            build_id = gnu_build_id(elf.section_data(section), byteorder)
        elif section.sh_type == SHT_SYMTAB:
            has_symtab = True
        elif elf.is_named(section, b".rodata"):
            rodata = section
    if build_id is None:
        for segment in elf.segments():
            elf.check_segment(segment)
            if segment.p_type == PT_NOTE:
                build_id = gnu_build_id(elf.segment_data(segment), byteorder)
                if build_id:
                    break
    banner = find_banner(elf.section_data(rodata)) if rodata is not None else None
    if banner is None and rodata is None:
        banner = find_banner(elf.contents())
    return ElfIdentity(build_id, banner, release_from_banner(banner), elf.ident.arch, has_symtab)


def _align4(n: int) -> int:
    return (n + 3) & ~3

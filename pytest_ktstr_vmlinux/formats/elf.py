"""ELF identification: the class, byte order and machine the locator checks, and arch names.

``e_ident`` and ``e_machine`` are read by hand: probing a dozen candidates must not parse section
tables of 600 MB files. This is the bottom of the ELF readers: ``elftables.py`` checks the header
tables against the file, ``elfidentity.py`` reads the build-id and banner pairing uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..regularfile import NotRegularFile, open_regular

ELFMAG = b"\x7fELF"
EI_CLASS = 4
EI_DATA = 5
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ELFDATA2MSB = 2
E_MACHINE_OFFSET = 18
EHDR_IDENT_AND_MACHINE = 20
NT_GNU_BUILD_ID = 3  # n_type of the GNU build-id note (elfidentity.py, notes.py)

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

"""The few ELF header fields the locator needs to accept or refuse a vmlinux candidate.

Only ``e_ident`` and ``e_machine`` are read, by hand, because probing a dozen candidates must not
parse section tables of 600 MB files; section and symbol work lives with pyelftools later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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

_ARCH_BY_MACHINE: dict[int, str] = {
    EM_386: "x86",
    EM_X86_64: "x86",
    EM_ARM: "arm",
    EM_AARCH64: "arm64",
    EM_RISCV: "riscv",
    EM_LOONGARCH: "loongarch",
    EM_PPC64: "powerpc",
    EM_S390: "s390",
}

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
        """The kernel ARCH= name for ``e_machine`` (``x86``, ``arm64``, ...), None if unknown."""
        return _ARCH_BY_MACHINE.get(self.e_machine)


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
    """Read the ELF identification of ``path``; OSError and NotElfError propagate."""
    with open(path, "rb") as f:
        return parse_elf_ident(f.read(EHDR_IDENT_AND_MACHINE))


def is_elf(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a readable file starting with a valid ELF identification."""
    try:
        read_elf_ident(path)
    except (OSError, NotElfError):
        return False
    return True

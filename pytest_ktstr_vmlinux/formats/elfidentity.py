"""What a kernel ELF says about itself: the GNU build-id and ``linux_banner`` pairing uses.

Build-ids and banners come from sections found by ``elftables.py``, which checks every header
count against the file before it reads a table; notes are walked by hand because the same walk
serves /sys/kernel/notes, which is no ELF. A flat Image's build-id is found by ``notes.py``,
which tells the kernel's note from those of the ELF files inside it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from ..errors import KernelArtifactError
from .elf import NT_GNU_BUILD_ID
from .elftables import SHT_NOTE, SHT_SYMTAB, ElfLayoutError, ElfTables

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
    try:
        return _read_elf_identity(ElfTables(source))
    except (ElfLayoutError, OSError) as e:
        raise KernelArtifactError(f"{what}: not a readable ELF ({e})") from None


def _read_elf_identity(elf: ElfTables) -> ElfIdentity:
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

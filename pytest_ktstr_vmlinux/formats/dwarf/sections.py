"""The DWARF sections of an ELF: found through its checked section headers, read with bounds.

.debug_info is read a unit at a time (a distro vmlinux's is 150-250 MB; its largest unit a few
MB), the sections it points into whole (.debug_abbrev, .debug_str, .debug_line_str,
.debug_str_offsets, .debug_addr: a few MB each). Nothing is mapped: a vmlinux rebuilt under a
mapping would SIGBUS the reader, while a read sees a short file and says so. Sections compressed
in the ELF way (SHF_COMPRESSED, zlib or zstd, as some distros ship debug info) are decompressed
whole, bounded by the size their header states.

Errors are KernelArtifactError naming the file, and for a missing .debug_info, why and where a
vmlinux that has it comes from.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ...errors import KernelArtifactError
from ...regularfile import RegularFile
from ..decompress import DecompressError, decompress
from ..elftables import SHT_NOBITS, ElfLayoutError, ElfTables, Section
from .dies import Strings

SHF_COMPRESSED = 0x800
ELFCOMPRESS_ZLIB, ELFCOMPRESS_ZSTD = 1, 2
ET_REL = 1
# The sections values point into: read whole. Their sizes in a distro vmlinux are a few MB.
_POINTED_INTO = (
    ".debug_abbrev", ".debug_str", ".debug_line_str", ".debug_str_offsets", ".debug_addr",
)  # fmt: skip
MAX_SECTION = 1 << 30  # a compressed section claiming more is refused, not allocated
NO_DEBUG_INFO_HELP = (
    "the vmlinux has no DWARF: it is stripped, or the kernel was built without"
    " CONFIG_DEBUG_INFO; the debug vmlinux has it (Debian/Ubuntu linux-image-<release>-dbg or"
    " -dbgsym, Fedora kernel-debuginfo)"
)


@dataclass
class DebugSections:
    """The DWARF of one ELF: .debug_info's place in the file (or its bytes, when compressed)
    and the sections its values point into."""

    path: str
    order: str
    abbrev: bytes
    strings: Strings
    info_offset: int
    info_size: int
    info_bytes: bytes | None  # set when .debug_info was compressed (or is given in memory)

    @classmethod
    def in_memory(
        cls, info: bytes, abbrev: bytes, strings: Strings, *, order: str = "<", what: str = "DWARF"
    ) -> DebugSections:
        """Sections given as bytes (a test's, or a fuzzer's), read without a file."""
        return cls(what, order, abbrev, strings, 0, len(info), info)

    def read_info(self, f: RegularFile | None, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` in .debug_info, checked to be inside it."""
        if offset < 0 or size < 0 or offset + size > self.info_size:
            raise KernelArtifactError(
                f"{self.path}: .debug_info: a unit at +{offset:#x} of {size} bytes runs past the"
                f" section's end ({self.info_size} bytes)"
            )
        if self.info_bytes is not None:
            return self.info_bytes[offset : offset + size]
        assert f is not None, "a .debug_info in the file is read through the file"
        return f.read_exact(self.info_offset + offset, size)


def debug_sections(f: RegularFile, shown: str) -> DebugSections:
    """The DWARF sections of the ELF open as ``f``; KernelArtifactError saying what is wrong."""
    try:
        elf = ElfTables(f.file)
        head = f.read_exact(0, 18)
        order = "<" if elf.little_endian else ">"
        if struct.unpack_from(order + "H", head, 16)[0] == ET_REL:
            raise KernelArtifactError(
                f"{shown}: a relocatable object (.o or .ko): its DWARF holds offsets that only"
                " relocations complete; give the linked vmlinux"
            )
        found: dict[str, Section] = {}
        for section in elf.sections():
            name = elf.name(section)
            if name == ".debug_info" or name in _POINTED_INTO:
                found.setdefault(name, section)
            elif name == ".zdebug_info":
                raise KernelArtifactError(
                    f"{shown}: .zdebug_info (GNU-style compressed DWARF) is not read;"
                    " decompress it with `objcopy --decompress-debug-sections`"
                )
        info = found.get(".debug_info")
        if info is None or info.sh_type == SHT_NOBITS or info.sh_size == 0:
            why = "is empty (NOBITS)" if info is not None else "is missing"
            raise KernelArtifactError(f"{shown}: .debug_info {why}: {NO_DEBUG_INFO_HELP}")
        parts = {
            name: _section(f, elf, found[name], shown, name) if name in found else b""
            for name in _POINTED_INTO
        }
        info_bytes = None
        info_size = info.sh_size
        if info.sh_flags & SHF_COMPRESSED:
            info_bytes = _section(f, elf, info, shown, ".debug_info")
            info_size = len(info_bytes)
        else:
            elf.check_section(info)
    except ElfLayoutError as e:
        raise KernelArtifactError(f"{shown}: damaged ELF ({e})") from None
    strings = Strings(
        parts[".debug_str"], parts[".debug_line_str"], parts[".debug_str_offsets"],
        parts[".debug_addr"],
    )  # fmt: skip
    return DebugSections(
        shown, order, parts[".debug_abbrev"], strings, info.sh_offset, info_size, info_bytes
    )


def _section(f: RegularFile, elf: ElfTables, section: Section, shown: str, name: str) -> bytes:
    """A whole section's bytes, decompressed when SHF_COMPRESSED."""
    if section.sh_type == SHT_NOBITS:
        return b""
    elf.check_section(section)
    data = f.read_exact(section.sh_offset, section.sh_size)
    if not section.sh_flags & SHF_COMPRESSED:
        return data
    header = struct.Struct(("<" if elf.little_endian else ">") + ("IIQQ" if elf.wide else "III"))
    if len(data) < header.size:
        raise KernelArtifactError(f"{shown}: {name}: compressed, but shorter than its header")
    fields = header.unpack_from(data)
    kind, size = fields[0], fields[2] if elf.wide else fields[1]
    if size > MAX_SECTION:
        raise KernelArtifactError(
            f"{shown}: {name}: its compression header claims {size} bytes, more than"
            f" {MAX_SECTION} a section may hold here"
        )
    body = memoryview(data)[header.size :]
    try:
        if kind == ELFCOMPRESS_ZLIB:
            inflater = zlib.decompressobj()
            out = inflater.decompress(body, size + 1)
        elif kind == ELFCOMPRESS_ZSTD:
            out = bytes(decompress(body, "zstd", max_output=size, what=f"{shown}: {name}"))
        else:
            raise KernelArtifactError(
                f"{shown}: {name}: compressed with ELF compression type {kind} (known: 1 zlib,"
                " 2 zstd)"
            )
    except (zlib.error, DecompressError) as e:
        raise KernelArtifactError(f"{shown}: {name}: cannot decompress ({e})") from None
    if len(out) != size:
        raise KernelArtifactError(
            f"{shown}: {name}: decompressed to {len(out)} bytes, its header says {size}"
        )
    return out

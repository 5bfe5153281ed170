"""The packed symbols artifact: its layout, built from a vmlinux's ``.symtab`` or kallsyms.

``elftables.py`` reads the ELF and section headers, checked against the file; the table is unpacked
in bulk, a column at a time, from strided views of a mapping of the file (pyelftools'
``iter_symbols`` would take ~2 s for a distro vmlinux). The result is one store artifact, laid
out to be used in place (``symbols.py``'s KernelSymbols wraps it)::

    header   magic, flags, per-CPU section index, counts (struct HEADER, little-endian)
    u64[n]   st_value     u64[n]  st_size
    u32[n]   st_name      u32[k]  by_name     u32[s]  by_addr
    u16[n]   st_shndx     u8[n]   st_info (type | binding << 4)
    strtab   the ELF's own string table (NUL-terminated), then the section names, NUL-joined

``n`` counts every .symtab entry. Kept, and so in ``by_name`` (by name bytes; a duplicated name
in .symtab order): the ``k`` defined (st_shndx not SHN_UNDEF), named entries other than
STT_SECTION and STT_FILE. ``by_addr`` orders the ``s`` kept ones with a size by address (locals
first at one address, as in .symtab, so walking back meets a global first). Both orders are
sorted by :mod:`.symsort`, in C when it was built, to the same bytes either way.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import KernelArtifactError
from ..regularfile import FileProblem, RegularFile, stable_read
from ..store.signature import read_error
from . import symsort
from .elftables import SHN_LORESERVE, SHT_STRTAB, SHT_SYMTAB, ElfTables

KIND = "symbols"
VERSION = 1
MAGIC = b"KSYMS\x00\x00\x01"
HEADER = struct.Struct("<8sIIQQQQQ")  # magic, flags, percpu, n, k, s, strtab, section names
ZERO_BASED_PERCPU = 1  # flag: per-CPU symbols are offsets (x86_64 SMP), never slid by KASLR
NO_SECTION = 0xFFFFFFFF
PERCPU_SECTION = ".data..percpu"
STT_SECTION, STT_FILE = 3, 4
_KEEP_INFO = bytes(0 if i & 0xF in (STT_SECTION, STT_FILE) else 1 for i in range(256))
_NONZERO = bytes([0] + [1] * 255)
LITTLE = sys.byteorder == "little"
ColumnCode = Literal["Q", "I", "H"]
NO_SYMTAB_HELP = (
    "it is a stripped kernel ELF (like the one extracted from a bzImage). Symbols need the"
    " debug vmlinux of the same build: Debian/Ubuntu linux-image-<release>-dbg or"
    " linux-image-<release>-dbgsym, Fedora kernel-debuginfo; or build the kernel with"
    " CONFIG_DEBUG_INFO and use the vmlinux at the top of the build tree"
)


@dataclass
class _Table:
    """Columns of every entry, which are kept (a 0/1 byte each), and what the header records."""

    values: array[int]
    sizes: array[int]
    name_off: array[int]
    shndx: array[int]
    info: bytes
    strtab: bytes
    keep: bytes
    sections: list[str]
    percpu: int = NO_SECTION
    flags: int = 0


def build_from_vmlinux(path: Path, out: BinaryIO) -> None:
    """The store's build: read the ELF's table, write the packed artifact."""
    try:
        # A failure because the file changed under the read is FileChanged (stable_read); no
        # check after a success: the store re-stats the source and builds again if it moved.
        with stable_read(path, check_at_end=False) as f:
            try:
                table = _columns(f)
            except FileProblem:
                raise
            except KernelArtifactError as e:
                raise KernelArtifactError(f"{path}: {e}") from None
            except (ValueError, OSError) as e:  # ElfLayoutError is a ValueError
                raise KernelArtifactError(f"{path}: damaged ELF or .symtab ({e})") from None
    except OSError as e:
        raise read_error(path, e) from None
    pack(table, out, str(path))


def pack(t: _Table, out: BinaryIO, source: str) -> None:
    """Write the artifact: name and address orders sorted here, once, for every later load."""
    try:
        by_name = symsort.by_name(t.strtab, t.name_off, t.keep)
    except ValueError as e:
        raise KernelArtifactError(f"{source}: {e}") from None
    n = len(t.values)
    sized = (_nonzero(t.sizes) & int.from_bytes(t.keep, "little")).to_bytes(n, "little")
    by_addr = symsort.by_addr(t.values, sized)
    sections = "\0".join(t.sections).encode("utf-8", "surrogateescape")
    counts = (n, len(by_name), len(by_addr), len(t.strtab), len(sections))
    columns = (t.values, t.sizes, t.name_off, by_name, by_addr, t.shndx)
    if not LITTLE:
        for column in columns:
            column.byteswap()
    header = HEADER.pack(MAGIC, t.flags, t.percpu, *counts)
    out.write(b"".join((header, *columns, t.info, t.strtab, sections)))


def _nonzero(column: array[int]) -> int:
    """Byte i (little-endian) of the result is 1 when ``column[i]`` is non-zero: each field's
    bytes OR-ed into its first byte by shifting the whole column as one integer, at C speed."""
    width, folded = column.itemsize, int.from_bytes(column.tobytes(), "little")
    shift = width // 2
    while shift:
        folded |= folded >> 8 * shift
        shift //= 2
    firsts = folded.to_bytes(len(column) * width, "little")[::width]
    return int.from_bytes(firsts.translate(_NONZERO), "little")


def _columns(f: RegularFile) -> _Table:
    """The .symtab of an open ELF as columns; ValueError says what is damaged (ElfLayoutError:
    a header field), KernelArtifactError that there is no table at all."""
    elf = ElfTables(f.file)
    wide = elf.wide
    # One pass over the headers, keeping what the artifact needs: symbols name sections below
    # SHN_LORESERVE only (indexes from there on are SHN_ABS and the like), so only those names.
    names, symtab = [], None
    for section in elf.sections():
        if section.number < SHN_LORESERVE:
            names.append(elf.name(section))
        if section.sh_type == SHT_SYMTAB and symtab is None:
            symtab = section
    if symtab is None:
        raise KernelArtifactError(f"has no .symtab; {NO_SYMTAB_HELP}")
    entsize = 24 if wide else 16
    if symtab.sh_entsize != entsize or symtab.sh_size % entsize:
        raise ValueError(
            f".symtab sh_entsize {symtab.sh_entsize}, sh_size {symtab.sh_size}: not whole"
            f" {entsize}-byte entries"
        )
    if not 0 < symtab.sh_link < elf.shnum or elf.section(symtab.sh_link).sh_type != SHT_STRTAB:
        raise ValueError(f".symtab sh_link {symtab.sh_link} is no string table")
    strings = elf.section(symtab.sh_link)
    for h in (symtab, strings):
        elf.check_section(h)
    n = symtab.sh_size // entsize
    if n >= 1 << 32:
        raise ValueError(f"{n} symbols")
    # Read, not mapped: a rebuild truncating the vmlinux under a mapping would SIGBUS us.
    table = memoryview(f.read_exact(symtab.sh_offset, symtab.sh_size))
    fields = (8, 16, 0, 6) if wide else (4, 8, 0, 14)  # st_value, st_size, st_name, st_shndx
    codes: tuple[ColumnCode, ...] = ("Q", "Q", "I", "H") if wide else ("I", "I", "I", "H")
    swap = elf.little_endian != LITTLE
    values, sizes, name_off, shndx = (
        _column(table, entsize, at, code, swap) for at, code in zip(fields, codes, strict=True)
    )
    if not wide:
        values, sizes = array("Q", values), array("Q", sizes)
    info = table[4 if wide else 12 :: entsize].tobytes()
    strtab = f.read_exact(strings.sh_offset, strings.sh_size)
    if strtab[-1:] not in (b"", b"\0"):
        raise ValueError("the string table is not NUL-terminated")
    keep = int.from_bytes(info.translate(_KEEP_INFO), "little")
    keep &= _nonzero(shndx) & _nonzero(name_off)  # defined and named
    percpu = names.index(PERCPU_SECTION) if PERCPU_SECTION in names else NO_SECTION
    zero_based = percpu != NO_SECTION and elf.section(percpu).sh_addr == 0
    return _Table(
        values, sizes, name_off, shndx, info, strtab, keep.to_bytes(n, "little"), names,
        percpu=percpu, flags=ZERO_BASED_PERCPU if zero_based else 0,
    )  # fmt: skip


def _column(table: memoryview, entsize: int, at: int, code: ColumnCode, swap: bool) -> array[int]:
    """One field of every entry: a strided view of the mapping copied out in one C call."""
    width = struct.calcsize(code)
    column = array(code, table.cast(code)[at // width :: entsize // width].tobytes())
    if swap:
        column.byteswap()
    return column


def parse_kallsyms(text: str, shown: str) -> _Table:
    """``address type name [module]`` lines; all-zero addresses mean kptr_restrict hid them."""
    values: list[int] = []
    letters, names = bytearray(), []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) == 4 and fields[3].startswith("["):
            continue
        try:
            address, letter, name = fields
            values.append(int(address, 16))
            if not 0 <= values[-1] < 1 << 64:
                raise ValueError(address)
        except ValueError:
            raise KernelArtifactError(f"{shown}:{number}: not a kallsyms line: {line!r}") from None
        letters += letter[:1].encode("ascii", "replace")
        names.append(name.encode("utf-8", "surrogateescape"))
    if not values:
        raise KernelArtifactError(f"{shown}: no symbols")
    if not any(values):
        raise KernelArtifactError(
            f"{shown}: every address is 0: kernel.kptr_restrict hides them from this user; run as"
            " root (or with CAP_SYSLOG), or set `sysctl kernel.kptr_restrict=0`"
        )
    next_address = dict(itertools.pairwise(sorted(set(values))))
    sizes = [next_address.get(v, v) - v for v in values]
    offsets = list(itertools.accumulate((len(name) + 1 for name in names), initial=1))[:-1]
    shndx = array("H", bytes(2 * len(names)))  # unknown: no section, nothing per-CPU
    strtab = b"\0" + b"\0".join(names) + b"\0"
    return _Table(
        array("Q", values), array("Q", sizes), array("I", offsets), shndx,
        bytes(map(_kallsyms_info, letters)), strtab, keep=b"\1" * len(names), sections=[""],
    )  # fmt: skip


def _kallsyms_info(letter: int) -> int:
    """st_info for an nm-style letter: T text is FUNC, data/bss/rodata OBJECT; case is binding."""
    c = chr(letter)
    kind = 2 if c in "Tt" else 1 if c in "DdBbRrVvGgSs" else 0
    return kind | (2 if c in "WwVv" else 1 if c.isupper() else 0) << 4

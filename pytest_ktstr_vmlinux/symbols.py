"""Kernel symbols: a vmlinux's whole ``.symtab`` (or /proc/kallsyms), packed once, looked up fast.

pyelftools reads the ELF and section headers; the table itself is unpacked in bulk, column by
column, from strided views of a mapping of the file (``iter_symbols`` costs ~16 us a symbol, ~2 s
for a distro vmlinux). The result is one artifact in the store, laid out to be used in place::

    header   magic, flags, per-CPU section index, counts (struct _HEADER, little-endian)
    u64[n]   value        u64[n]  size
    u32[n]   name offset  u32[k]  by_name     u32[s]  by_addr
    u16[n]   section index         u8[n]   st_info (type | binding << 4)
    strtab   the ELF's own string table (NUL-terminated strings); then section names, NUL-joined

``n`` counts every .symtab entry; ``by_name`` orders the ``k`` kept ones by name (duplicates in
.symtab order), ``by_addr`` orders the ``s`` kept ones with a non-zero size by address (locals
first at one address, so a global is found first walking back). Kept: defined (st_shndx not
SHN_UNDEF) and named, but not STT_SECTION or STT_FILE. A warm load maps the artifact and wraps
the columns with ``memoryview.cast``: nothing per symbol, no dict; names are binary-searched.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import mmap
import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .errors import KernelArtifactError
from .memstore import MemoryStore, Store
from .signature import read_error

KIND = "symbols"
VERSION = 1
MAGIC = b"KSYMS\x00\x00\x01"
# magic, flags, per-CPU shndx, n, k (by name), s (by address), strtab and section-names lengths
_HEADER = struct.Struct("<8sIIQQQQQ")
ZERO_BASED_PERCPU = 1  # flag: per-CPU symbols are offsets (x86_64 SMP), never slid by KASLR
NO_SECTION = 0xFFFFFFFF
PERCPU_SECTION = ".data..percpu"
STT_SECTION, STT_FILE, STB_GLOBAL = 3, 4, 1
TYPES = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE", 5: "COMMON", 6: "TLS"}
TYPES[10] = "GNU_IFUNC"
BINDINGS = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "GNU_UNIQUE"}
_KEEP_INFO = bytes(0 if i & 0xF in (STT_SECTION, STT_FILE) else 1 for i in range(256))
_NONZERO = bytes(range(256)).translate(bytes([0] + [1] * 255))
_LITTLE = sys.byteorder == "little"
_Code = Literal["Q", "I", "H"]
_SUGGEST_WINDOW = 32  # names either side of where a missing name would sort
_WALK_BACK = 16  # sized symbols before an address tried for one containing it
_PARSE_ERRORS = (
    struct.error, ValueError, IndexError, KeyError, TypeError, OverflowError, MemoryError,
    RecursionError, AttributeError, EOFError,
)  # fmt: skip
NO_SYMTAB_HELP = (
    "it is a stripped kernel ELF (like the one extracted from a bzImage). Symbols need the"
    " debug vmlinux of the same build: Debian/Ubuntu linux-image-<release>-dbg or"
    " linux-image-<release>-dbgsym, Fedora kernel-debuginfo; or build the kernel with"
    " CONFIG_DEBUG_INFO and use the vmlinux at the top of the build tree"
)


@dataclass(frozen=True)
class Symbol:
    """One symbol. ``type``/``binding`` are ELF names (STT_FUNC, STB_GLOBAL); ``section`` is None
    when unknown (kallsyms, SHN_ABS); ``percpu``: in .data..percpu, ``value`` is an offset."""

    name: str
    value: int
    size: int
    type: str
    binding: str
    shndx: int
    section: str | None
    percpu: bool


@dataclass
class _Table:
    """Columns of every entry, the entries kept, and what the packed header records."""

    values: array[int]
    sizes: array[int]
    name_off: array[int]
    shndx: array[int]
    info: bytes
    strtab: bytes
    keep: bytes  # 1 for each entry kept, else 0
    sections: list[str]
    percpu: int = NO_SECTION
    flags: int = 0


class KernelSymbols:
    """Symbols of one kernel: by name (``ksyms["runqueues"]``) and by address (``lookup``)."""

    def __init__(self, payload: bytes | memoryview, source: str = "<symbols>") -> None:
        """Wrap a packed payload (what the store holds) without copying its columns."""
        self.source = source
        self._offset = 0
        self._memo: dict[bytes, tuple[int, ...]] = {}
        view = memoryview(payload).cast("B")
        try:
            fields = _HEADER.unpack_from(view)
        except struct.error:
            raise self._damaged("shorter than its header") from None
        magic, self._flags, self._percpu, n, k, s, strtab_len, sections_len = fields
        sizes = (8 * n, 8 * n, 4 * n, 4 * k, 4 * s, 2 * n, n, strtab_len, sections_len)
        if magic != MAGIC or _HEADER.size + sum(sizes) != len(view):
            raise self._damaged("foreign or torn")
        bounds = list(itertools.accumulate(sizes, initial=_HEADER.size))
        parts = [view[a:b] for a, b in itertools.pairwise(bounds)]
        self._values, self._sizes = _cast(parts[0], "Q"), _cast(parts[1], "Q")
        self._name_off, self._by_name, self._by_addr = (_cast(p, "I") for p in parts[2:5])
        self._shndx, self._info = _cast(parts[5], "H"), parts[6]
        self._strtab = bytes(parts[7])
        if self._strtab and self._strtab[-1]:
            raise self._damaged("string table not NUL-terminated")
        self._sections = bytes(parts[8]).decode("utf-8", "surrogateescape").split("\0")

    @classmethod
    def from_vmlinux(
        cls, path: str | os.PathLike[str], store: Store | None = None
    ) -> KernelSymbols:
        """The ``.symtab`` of a vmlinux (ELF32/64, either byte order), built once per store."""
        store = store if store is not None else MemoryStore()
        return cls(store.get_or_build(path, KIND, VERSION, _build).map(), os.fspath(path))

    @classmethod
    def from_kallsyms(cls, path: str | os.PathLike[str] = "/proc/kallsyms") -> KernelSymbols:
        """The running kernel's symbols, core kernel only (lines with a [module] are skipped).

        kallsyms has no sizes: each symbol is taken to reach the next address, as the kernel's
        own lookups do. It has no section indexes either, so nothing is known to be per-CPU.
        """
        try:
            text = Path(path).read_text("utf-8", "surrogateescape")
        except OSError as e:
            raise read_error(path, e) from None
        out = _Buffer()
        _pack(_parse_kallsyms(text, os.fspath(path)), out)
        return cls(out.getvalue(), os.fspath(path))

    # --- by name ------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> int:
        return self._value(self._pick(name))

    def get(self, name: str, default: int | None = None) -> int | None:
        """The address of ``name``, ``default`` if absent; an ambiguous name still raises."""
        return self._value(self._pick(name)) if self._matches(name) else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._matches(name))

    def symbol(self, name: str) -> Symbol:
        return self._symbol(self._pick(name))

    def all(self, name: str) -> list[Symbol]:
        """Every symbol called ``name`` (static functions of several files), in .symtab order."""
        return [self._symbol(i) for i in self._matches(name)]

    def is_percpu(self, name: str) -> bool:
        """Whether ``name`` lives in .data..percpu (its value is then a per-CPU offset)."""
        found = self._matches(name)
        if not found:
            raise KeyError(self._missing(name))
        return any(self._shndx[i] == self._percpu for i in found)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[str]:
        """Names in byte order, a duplicated name once per symbol."""
        return (self._name(i) for i in self._by_name)

    # --- by address ---------------------------------------------------------------------------

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the nearest sized symbol at or before ``addr`` that contains it."""
        found = self._lookup(addr - self._offset, slid=True)
        if found is None and self._offset and self._flags & ZERO_BASED_PERCPU:
            found = self._lookup(addr, slid=False)
        return found

    def relocated(self, kaslr_offset: int) -> KernelSymbols:
        """A view slid by ``kaslr_offset`` (zero-based per-CPU offsets excepted); no copies."""
        view = copy.copy(self)
        view._offset = self._offset + kaslr_offset
        return view

    @property
    def kaslr_offset(self) -> int:
        return self._offset

    def __repr__(self) -> str:
        return f"KernelSymbols({self.source!r}, {len(self)} symbols, offset={self._offset:#x})"

    # --- internals ----------------------------------------------------------------------------

    def _damaged(self, what: str) -> KernelArtifactError:
        return KernelArtifactError(f"{self.source}: packed symbols are damaged ({what})")

    def _raw(self, i: int) -> bytes:
        if i >= len(self._values):
            raise self._damaged(f"symbol index {i} past the table")
        at = self._name_off[i]
        return self._strtab[at : self._strtab.find(b"\0", at)]

    def _name(self, i: int) -> str:
        return self._raw(i).decode("utf-8", "surrogateescape")

    def _matches(self, name: str) -> tuple[int, ...]:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return ()
        found = self._memo.get(raw)
        if found is None:
            by_name, key = self._by_name, self._raw
            lo = hi = bisect_left(by_name, raw, key=key)
            while hi < len(by_name) and key(by_name[hi]) == raw:
                hi += 1
            found = tuple(by_name[lo:hi])
            if found:
                self._memo[raw] = found
        return found

    def _pick(self, name: str) -> int:
        found = self._matches(name)
        if len(found) == 1:
            return found[0]
        if not found:
            raise KeyError(self._missing(name))
        globals_ = [i for i in found if self._info[i] >> 4 == STB_GLOBAL]
        if len(globals_) == 1:
            return globals_[0]
        if len({self._values[i] for i in found}) == 1:
            return found[0]  # aliases of one address
        raise KeyError(
            f"{name!r} is ambiguous in {self.source}: {len(found)} symbols, {len(globals_)}"
            f" global; use .all({name!r}) and choose"
        )

    def _missing(self, name: str) -> str:
        """The KeyError text, with close matches among a few hundred likely names (not all)."""
        close = difflib.get_close_matches(name, self._candidates(name), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"no symbol {name!r} in {self.source}{hint}"

    def _candidates(self, name: str) -> set[str]:
        raw = name.encode("utf-8", "replace")
        at = bisect_left(self._by_name, raw, key=self._raw)
        window = self._by_name[max(at - _SUGGEST_WINDOW, 0) : at + _SUGGEST_WINDOW]
        found = {self._name(i) for i in window}
        tail = raw[len(raw) // 2 :]  # a typo early in the name: names sharing its second half
        hit = self._strtab.find(tail) if len(tail) >= 3 else -1
        for _ in range(200):
            if hit < 0:
                break
            start, end = self._strtab.rfind(b"\0", 0, hit) + 1, self._strtab.find(b"\0", hit)
            candidate = self._strtab[start:end].decode("utf-8", "surrogateescape")
            if candidate in self:  # strtab also holds file names and tails of other names
                found.add(candidate)
            hit = self._strtab.find(tail, end)
        return found

    def _slides(self, i: int) -> bool:
        return not (self._flags & ZERO_BASED_PERCPU and self._shndx[i] == self._percpu)

    def _value(self, i: int) -> int:
        value = self._values[i]
        return value + self._offset if self._offset and self._slides(i) else value

    def _symbol(self, i: int) -> Symbol:
        info, shndx = self._info[i], self._shndx[i]
        return Symbol(
            name=self._name(i),
            value=self._value(i),
            size=self._sizes[i],
            type="STT_" + TYPES.get(info & 0xF, str(info & 0xF)),
            binding="STB_" + BINDINGS.get(info >> 4, str(info >> 4)),
            shndx=shndx,
            section=(self._sections[shndx] or None) if 0 < shndx < len(self._sections) else None,
            percpu=shndx == self._percpu,
        )

    def _lookup(self, addr: int, *, slid: bool) -> tuple[str, int] | None:
        try:
            at = bisect_right(self._by_addr, addr, key=self._values.__getitem__) - 1
        except IndexError:
            raise self._damaged("an address index points past the table") from None
        for j in range(at, max(at - _WALK_BACK, -1), -1):
            i = self._by_addr[j]
            name, start = self._raw(i), self._values[i]  # _raw checks i
            if addr < start + self._sizes[i] and (not self._offset or self._slides(i) == slid):
                return name.decode("utf-8", "surrogateescape"), addr - start
        return None


class _Buffer(bytearray):
    """Enough of BinaryIO for _pack: write() appends."""

    def write(self, data: Any) -> int:
        self.extend(data)
        return len(data)

    def getvalue(self) -> bytes:
        return bytes(self)


def _cast(part: memoryview, code: _Code) -> Sequence[int]:
    """A column in native order: the mapping itself when little-endian, else a swapped copy."""
    if _LITTLE:
        return part.cast(code)
    column = array(code, part.tobytes())
    column.byteswap()
    return column


def _build(path: Path, out: BinaryIO) -> None:
    _pack(_read_symtab(path), out)


def _pack(t: _Table, out: BinaryIO | _Buffer) -> None:
    """Write the artifact: name and address orders sorted here, once, for every later load."""
    text, n = t.strtab.decode("latin-1"), len(t.values)  # latin-1: sorting str sorts bytes
    offsets = t.name_off.tolist()
    if max(itertools.compress(offsets, t.keep), default=-1) >= len(text):
        raise ValueError("a symbol name lies past the end of the string table")
    find = text.find
    names = [text[at : find("\0", at)] for at in offsets]
    by_name = array("I", sorted(itertools.compress(range(n), t.keep), key=names.__getitem__))
    sized = (_nonzero(t.sizes) & int.from_bytes(t.keep, "little")).to_bytes(n, "little")
    by_addr = array("I", sorted(itertools.compress(range(n), sized), key=t.values.__getitem__))
    sections = "\0".join(t.sections).encode("utf-8", "surrogateescape")
    counts = (n, len(by_name), len(by_addr), len(t.strtab), len(sections))
    out.write(_HEADER.pack(MAGIC, t.flags, t.percpu, *counts))
    for column in (t.values, t.sizes, t.name_off, by_name, by_addr, t.shndx):
        if not _LITTLE:
            column.byteswap()
        out.write(column)
    for blob in (t.info, t.strtab, sections):
        out.write(blob)


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


def _read_symtab(path: Path) -> _Table:
    # Imported here: pyelftools costs ~20 ms to import, and warm loads never need it.
    from elftools.common.exceptions import ELFError

    try:
        with open(path, "rb") as f:
            return _columns(f, path)
    except OSError as e:
        raise read_error(path, e) from None
    except (ELFError, *_PARSE_ERRORS) as e:
        raise KernelArtifactError(f"{path}: damaged ELF or .symtab ({e})") from None


def _columns(f: BinaryIO, path: Path) -> _Table:
    from elftools.elf.elffile import ELFFile

    size = os.fstat(f.fileno()).st_size
    elf = ELFFile(f)
    wide = elf.elfclass == 64
    count, shentsize = elf.num_sections(), elf["e_shentsize"]
    if count and (shentsize != (64 if wide else 40) or elf["e_shoff"] + count * shentsize > size):
        raise ValueError(f"{count} section headers of {shentsize} bytes do not fit the file")
    headers, names = [], []
    for i in range(count):
        headers.append(elf._get_section_header(i))  # no Section objects: a link may be damaged
        names.append(elf._get_section_name(headers[-1]))
    symtab = next((h for h in headers if h.sh_type == "SHT_SYMTAB"), None)
    if symtab is None:
        raise KernelArtifactError(f"{path}: has no .symtab; {NO_SYMTAB_HELP}")
    entsize = 24 if wide else 16
    if symtab.sh_entsize != entsize or symtab.sh_size % entsize:
        raise ValueError(f"entry size {symtab.sh_entsize}, size {symtab.sh_size}, not {entsize}")
    if not 0 < symtab.sh_link < len(headers) or headers[symtab.sh_link].sh_type != "SHT_STRTAB":
        raise ValueError(f"sh_link {symtab.sh_link} is no string table")
    strings = headers[symtab.sh_link]
    for h in (symtab, strings):
        if h.sh_offset + h.sh_size > size:
            raise ValueError(f"a table ({h.sh_offset:#x} + {h.sh_size:#x}) runs past EOF {size}")
    n = symtab.sh_size // entsize
    if n >= 1 << 32:
        raise ValueError(f"{n} symbols")
    mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # freed with its last view
    table = memoryview(mapping)[symtab.sh_offset : symtab.sh_offset + symtab.sh_size]
    swap = elf.little_endian != _LITTLE
    fields = (8, 16, 0, 6) if wide else (4, 8, 0, 14)  # st_value, st_size, st_name, st_shndx
    codes: tuple[_Code, ...] = ("Q", "Q", "I", "H") if wide else ("I", "I", "I", "H")
    values, sizes, name_off, shndx = (
        _column(table, entsize, at, code, swap) for at, code in zip(fields, codes, strict=True)
    )
    if not wide:
        values, sizes = array("Q", values), array("Q", sizes)
    info = table[4 if wide else 12 :: entsize].tobytes()
    strtab = mapping[strings.sh_offset : strings.sh_offset + strings.sh_size]
    if strtab and strtab[-1]:
        raise ValueError("the string table is not NUL-terminated")
    keep = int.from_bytes(info.translate(_KEEP_INFO), "little")
    keep &= _nonzero(shndx) & _nonzero(name_off)  # defined and named
    percpu = names.index(PERCPU_SECTION) if PERCPU_SECTION in names else NO_SECTION
    zero_based = percpu != NO_SECTION and headers[percpu].sh_addr == 0
    return _Table(
        values, sizes, name_off, shndx, info, strtab,
        keep=keep.to_bytes(n, "little"),
        sections=names, percpu=percpu, flags=ZERO_BASED_PERCPU if zero_based else 0,
    )  # fmt: skip


def _column(table: memoryview, entsize: int, at: int, code: _Code, swap: bool) -> array[int]:
    """One field of every entry: a strided view of the mapping copied out in one C call."""
    width = struct.calcsize(code)
    column = array(code, table.cast(code)[at // width :: entsize // width].tobytes())
    if swap:
        column.byteswap()
    return column


def _parse_kallsyms(text: str, shown: str) -> _Table:
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
    if not any(values):
        raise KernelArtifactError(
            f"{shown}: every address is 0: kernel.kptr_restrict hides them from this user; run as"
            " root (or with CAP_SYSLOG), or set `sysctl kernel.kptr_restrict=0`"
            if values
            else f"{shown}: no symbols"
        )
    ends = sorted(set(values))
    next_address = dict(itertools.pairwise(ends))
    sizes = [next_address.get(v, v) - v for v in values]
    offsets = list(itertools.accumulate((len(n) + 1 for n in names), initial=1))[:-1]
    info = bytes(_kallsyms_info(chr(c)) for c in letters)
    shndx = array("H", bytes(2 * len(names)))
    return _Table(
        array("Q", values), array("Q", sizes), array("I", offsets), shndx, info,
        b"\0" + b"\0".join(names) + b"\0", keep=b"\1" * len(names), sections=[""],
    )  # fmt: skip


def _kallsyms_info(letter: str) -> int:
    """st_info for an nm-style letter: T text is FUNC, data/bss/rodata OBJECT; case is binding."""
    kind = 2 if letter in "Tt" else 1 if letter in "DdBbRrVvGgSs" else 0
    binding = 2 if letter in "WwVv" else 1 if letter.isupper() else 0
    return kind | binding << 4

"""Kernel symbols: a vmlinux's whole ``.symtab`` (or /proc/kallsyms), looked up fast.

KernelSymbols wraps the packed artifact ``symbolpack.py`` builds, as it lies in the store: a warm
load maps it and casts the columns: nothing per symbol, no dict; names are bisected in place.
"""

from __future__ import annotations

import copy
import difflib
import io
import itertools
import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..errors import KernelArtifactError
from ..regularfile import read_regular
from ..store.api import Store
from ..store.memory import MemoryStore
from ..store.signature import read_error
from .address import u64
from .symbolpack import (
    HEADER,
    KIND,
    LITTLE,
    MAGIC,
    VERSION,
    ZERO_BASED_PERCPU,
    ColumnCode,
    build_from_vmlinux,
    pack,
    parse_kallsyms,
)

__all__ = ["FUNCTIONS_ONLY_HELP", "KIND", "VERSION", "KernelSymbols", "Symbol"]

STB_GLOBAL, SHN_ABS = 1, 0xFFF1
TYPES = dict(enumerate(("NOTYPE", "OBJECT", "FUNC", "SECTION", "FILE", "COMMON", "TLS")))
TYPES[10], BINDINGS = "GNU_IFUNC", {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "GNU_UNIQUE"}
_FENCE = 64  # every 64th name, bisected in C before the mapped names are
_SUGGEST_WINDOW = 32  # names either side of where a missing name would sort
_WALK_BACK = 16  # sized symbols before an address tried for one containing it
FUNCTIONS_ONLY_HELP = (
    "lists functions only (the kernel was built without CONFIG_KALLSYMS_ALL): data symbols"
    " need the debug vmlinux"
)


@dataclass(frozen=True)
class Symbol:
    """One symbol. ``type``/``binding`` are ELF names (STT_FUNC, STB_GLOBAL); ``section`` is None
    when unknown (kallsyms, SHN_ABS); ``percpu``: in .data..percpu, so ``value`` is the offset in
    each CPU's area where that section is linked at 0 (x86_64), else the template's address."""

    #: The symbol's name.
    name: str
    #: Its address (``st_value``), slid by the KASLR offset of the table it came from.
    value: int
    #: Its size in bytes (from kallsyms, the distance to the next symbol).
    size: int
    #: ``"FUNC"``, ``"OBJECT"``, ``"NOTYPE"``, ...
    type: str
    #: ``"GLOBAL"``, ``"LOCAL"``, ``"WEAK"``, ...
    binding: str
    #: The ELF section index (``st_shndx``).
    shndx: int
    #: The section's name (``".data"``), None when unknown.
    section: str | None
    #: Whether it is a per-CPU variable (see above).
    percpu: bool


class KernelSymbols:
    """Symbols of one kernel: by name (``ksyms["runqueues"]``) and by address (``lookup``)::

        ksyms = KernelSymbols.from_vmlinux(kernel.require_vmlinux())
        ksyms["init_task"]  # its address
        ksyms.lookup(ksyms["init_task"] + 8)  # ("init_task", 8)
        ksyms.symbol("schedule").type  # "FUNC"

    ``from_kallsyms`` reads the running kernel's instead.
    """

    def __init__(self, payload: bytes | memoryview, source: str = "<symbols>") -> None:
        """Wrap a packed payload (what the store holds) without copying its columns."""
        #: Where the symbols were read from.
        self.source = source
        #: kallsyms of a kernel built without CONFIG_KALLSYMS_ALL: a missing name may be data.
        self.functions_only = False
        #: Whether ``st_size`` is each symbol's own size (.symtab), or only the distance to the
        #: next symbol (kallsyms has no sizes): an upper bound.
        self.sizes_exact = True
        self._offset = 0
        self._memo: dict[bytes, tuple[int, ...]] = {}  # names looked up; shared by views
        self._fence: list[bytes] = []
        view = memoryview(payload).cast("B")
        try:
            magic, self._flags, self._percpu, n, k, s, *blobs = HEADER.unpack_from(view)
        except struct.error:
            raise self._damaged("shorter than its header") from None
        sizes = (8 * n, 8 * n, 4 * n, 4 * k, 4 * s, 2 * n, n, *blobs)
        if magic != MAGIC or HEADER.size + sum(sizes) != len(view):
            raise self._damaged("foreign or torn")
        bounds = itertools.pairwise(itertools.accumulate(sizes, initial=HEADER.size))
        parts = [view[a:b] for a, b in bounds]
        self._values, self._sizes = _cast(parts[0], "Q"), _cast(parts[1], "Q")
        self._name_off, self._by_name, self._by_addr = (_cast(p, "I") for p in parts[2:5])
        self._shndx, self._info = _cast(parts[5], "H"), parts[6]
        self._strtab = bytes(parts[7])
        if self._strtab[-1:] not in (b"", b"\0"):
            raise self._damaged("string table not NUL-terminated")
        self._sections = bytes(parts[8]).decode("utf-8", "surrogateescape").split("\0")

    @classmethod
    def from_vmlinux(
        cls, path: str | os.PathLike[str], store: Store | None = None
    ) -> KernelSymbols:
        """The ``.symtab`` of a vmlinux (ELF32/64, either byte order), built once per store."""
        store = store if store is not None else MemoryStore()
        return cls(
            store.get_or_build(path, KIND, VERSION, build_from_vmlinux).map(), os.fspath(path)
        )

    @classmethod
    def from_kallsyms(cls, path: str | os.PathLike[str] = "/proc/kallsyms") -> KernelSymbols:
        """The running kernel's symbols, core kernel only (lines with a [module] are skipped).

        kallsyms has no sizes: each symbol is taken to reach the next address, as the kernel's
        own lookups do. It has no section indexes either, so nothing is known to be per-CPU.
        Without CONFIG_KALLSYMS_ALL it lists functions only (``functions_only``): told by the
        absence of ``jiffies_64``, data that every kernel defines.
        """
        try:
            text = read_regular(path).decode("utf-8", "surrogateescape")
        except OSError as e:
            raise read_error(path, e) from None
        out = io.BytesIO()
        pack(parse_kallsyms(text, os.fspath(path)), out, os.fspath(path))
        ksyms = cls(out.getvalue(), os.fspath(path))
        ksyms.functions_only = "jiffies_64" not in ksyms
        ksyms.sizes_exact = False
        return ksyms

    def __getitem__(self, name: str) -> int:
        return self._value(self._pick(name))

    def get(self, name: str, default: int | None = None) -> int | None:
        """The address of ``name``, ``default`` if absent; an ambiguous name still raises."""
        return self._value(self._pick(name)) if self._matches(name) else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._matches(name))

    def symbol(self, name: str) -> Symbol:
        """The symbol called ``name`` (of several, the one global one, or the first of aliases of
        one address); KeyError, with close names, when there is none or no one stands out
        (``all`` lists them)."""
        return self._symbol(self._pick(name))

    def all(self, name: str) -> list[Symbol]:
        """Every symbol called ``name`` (static functions of several files), in .symtab order."""
        return [self._symbol(i) for i in self._matches(name)]

    def is_percpu(self, name: str) -> bool:
        """Whether ``name`` lives in .data..percpu (see :attr:`Symbol.percpu`)."""
        found = self._matches(name)
        if not found:
            raise KeyError(self._missing(name))
        return any(self._shndx[i] == self._percpu for i in found)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[str]:
        """Names in byte order, a duplicated name once per symbol."""
        return (name for name, _ in self.items())

    def items(self) -> Iterator[tuple[str, int]]:
        """(name, address) of every symbol in name order, ambiguous names included."""
        try:
            for i in self._by_name:
                yield self._name(i), self._value(i)
        except IndexError:
            raise self._damaged("a name index points past the table") from None

    def lookup(self, addr: int) -> tuple[str, int] | None:
        """(name, offset) of the nearest sized symbol at or before ``addr`` that contains it."""
        found = self._lookup(u64(addr - self._offset), slid=True)
        if found is None and self._offset:
            found = self._lookup(addr, slid=False)
        return found

    def relocated(self, kaslr_offset: int) -> KernelSymbols:
        """A view slid by ``kaslr_offset``, sharing the tables. SHN_ABS constants and zero-based
        per-CPU offsets do not move: KASLR relocates only what is linked at an address."""
        view = copy.copy(self)
        view._offset = u64(self._offset + kaslr_offset)
        return view

    @property
    def kaslr_offset(self) -> int:
        """How far ``relocated`` slid this view (0 for the table as linked)."""
        return self._offset

    def __repr__(self) -> str:
        return f"KernelSymbols({self.source!r}, {len(self)} symbols, offset={self._offset:#x})"

    def _damaged(self, what: str) -> KernelArtifactError:
        return KernelArtifactError(f"{self.source}: packed symbols are damaged ({what})")

    def _raw(self, i: int) -> bytes:
        at = self._name_off[i]  # an index past the table raises IndexError
        return self._strtab[at : self._strtab.find(b"\0", at)]

    def _name(self, i: int) -> str:
        return self._raw(i).decode("utf-8", "surrogateescape")

    def _first(self, raw: bytes) -> int:
        """The position in ``by_name`` of the first name not below ``raw``."""
        by_name, fence = self._by_name, self._fence
        if not fence and by_name:  # whole, in one step: another thread may be reading it
            fence[:] = [self._raw(i) for i in by_name[::_FENCE]]
        j = bisect_left(fence, raw)
        lo, hi = max(j - 1, 0) * _FENCE, min(j * _FENCE, len(by_name))
        return bisect_left(by_name, raw, lo, hi, key=self._raw)

    def _matches(self, name: str) -> tuple[int, ...]:
        try:
            raw = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return ()
        found = self._memo.get(raw)
        if found is None:
            try:
                lo = hi = self._first(raw)
                while hi < len(self._by_name) and self._raw(self._by_name[hi]) == raw:
                    hi += 1
            except IndexError:
                raise self._damaged("a name index points past the table") from None
            found = tuple(self._by_name[lo:hi])
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
        """The KeyError text, with close matches among a few hundred likely names: those sorting
        next to ``name``, and those sharing its second half (a typo early in the name)."""
        raw, strtab, likely = name.encode("utf-8", "replace"), self._strtab, set()
        tail, hit = raw[len(raw) // 2 :], strtab.find(raw[len(raw) // 2 :])
        for _ in range(200 if len(tail) >= 3 and hit >= 0 else 0):
            start, end = strtab.rfind(b"\0", 0, hit) + 1, strtab.find(b"\0", hit)
            likely.add(strtab[start:end].decode("utf-8", "surrogateescape"))
            if (hit := strtab.find(tail, end)) < 0:
                break
        try:  # strtab also holds file names and the tails of other names: only symbols count
            at = self._first(raw)
            window = self._by_name[max(at - _SUGGEST_WINDOW, 0) : at + _SUGGEST_WINDOW]
            likely = {n for n in likely if n in self} | {self._name(i) for i in window}
        except IndexError:
            raise self._damaged("a name index points past the table") from None
        close = difflib.get_close_matches(name, likely, n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        if self.functions_only:
            hint += f"; {self.source} {FUNCTIONS_ONLY_HELP}"
        return f"no symbol {name!r} in {self.source}{hint}"

    def _slides(self, i: int) -> bool:
        shndx = self._shndx[i]
        return shndx != SHN_ABS and not (self._flags & ZERO_BASED_PERCPU and shndx == self._percpu)

    def _value(self, i: int) -> int:
        value = self._values[i]
        return u64(value + self._offset) if self._offset and self._slides(i) else value

    def _symbol(self, i: int) -> Symbol:
        info, shndx = self._info[i], self._shndx[i]
        kind = "STT_" + TYPES.get(info & 0xF, str(info & 0xF))
        binding = "STB_" + BINDINGS.get(info >> 4, str(info >> 4))
        section = (self._sections[shndx] or None) if 0 < shndx < len(self._sections) else None
        name, value, size = self._name(i), self._value(i), self._sizes[i]
        return Symbol(name, value, size, kind, binding, shndx, section, shndx == self._percpu)

    def _lookup(self, addr: int, *, slid: bool) -> tuple[str, int] | None:
        values, sizes, by_addr = self._values, self._sizes, self._by_addr
        try:
            at = bisect_right(by_addr, addr, key=values.__getitem__) - 1
            for j in range(at, max(at - _WALK_BACK, -1), -1):
                i = by_addr[j]
                if addr < values[i] + sizes[i] and (not self._offset or self._slides(i) == slid):
                    return self._name(i), addr - values[i]
        except IndexError:
            raise self._damaged("an address index points past the table") from None
        return None


def _cast(part: memoryview, code: ColumnCode) -> Sequence[int]:
    """A column in native order: the mapping itself when little-endian, else a swapped copy."""
    if LITTLE:
        return part.cast(code)
    column = array(code, part.tobytes())
    column.byteswap()
    return column

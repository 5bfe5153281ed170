"""glibc's ``/etc/ld.so.cache`` (written by ldconfig), read and written by hand.

The format is glibc's ``glibc-ld.so.cache1.1`` (sysdeps/generic/dl-cache.h): a 48-byte header
(magic and version, ``nlibs``, ``len_strings``, an endianness byte, ``extension_offset``), then
``nlibs`` 24-byte entries ``{int32 flags; uint32 key, value, osversion; uint64 hwcap}`` whose key
(the soname) and value (the path) are offsets of NUL-terminated strings from the start of the
new-format header, then the strings, then an optional extension directory (magic 0xEAA42174:
the generator's name, the glibc-hwcaps subdirectory names). Caches from before glibc 2.32 may
start with the libc5-era ``ld.so-1.7.0`` table; the new one follows it, 8-byte aligned, and is
the only one read here.

The loader binary-searches the entries, so they are sorted descending by ``libcmp`` (glibc's
``_dl_cache_libcmp``: digit runs compare as numbers). ``build_cache`` writes them so, and
``parse_cache`` reads anything, refusing with an ``LdCacheError`` naming the field.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

OLD_MAGIC = b"ld.so-1.7.0"
MAGIC = b"glibc-ld.so.cache1.1"
EXTENSION_MAGIC = 0xEAA42174
EXTENSION_GENERATOR = 0
EXTENSION_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62  # hwcap's top half says: the low half indexes the glibc-hwcaps names
ENDIAN_UNSET, ENDIAN_INVALID, ENDIAN_LITTLE, ENDIAN_BIG = 0, 1, 2, 3

# flags: the type in the low byte (1 ELF, 3 ELF with libc6), the ABI in the next one.
FLAG_TYPE_MASK = 0x00FF
FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003
FLAG_REQUIRED_MASK = 0xFF00
FLAG_SPARC_LIB64 = 0x0100
FLAG_IA64_LIB64 = 0x0200
FLAG_X8664_LIB64 = 0x0300
FLAG_S390_LIB64 = 0x0400
FLAG_POWERPC_LIB64 = 0x0500
FLAG_AARCH64_LIB64 = 0x0A00
FLAG_RISCV_FLOAT_ABI_DOUBLE = 0x1000
FLAG_LARCH_FLOAT_ABI_DOUBLE = 0x1200

_HEADER_FMT = "20sIIB3xI12x"
_HEADER = struct.Struct("<" + _HEADER_FMT)
_ENDIAN_AT = 28
_ENTRY_FMT = "iIIIQ"
_OLD_ENTRY_SIZE = 12  # {int32 flags; uint32 key, value}
_MAX_STRING = 4096


class LdCacheError(ValueError):
    """The bytes are not a cache this parser can trust; the message names the field."""


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the soname the loader looks up: "libc.so.6"
    path: str  # where it is: "/lib/x86_64-linux-gnu/libc.so.6"
    flags: int
    hwcap: int = 0

    @property
    def hwcaps_index(self) -> int | None:
        """The glibc-hwcaps subdirectory this entry is for (an index into ``LdCache.hwcaps``);
        None for a baseline entry or a legacy-hwcap one."""
        if self.hwcap >> 32 == HWCAP_EXTENSION >> 32:
            return self.hwcap & 0xFFFFFFFF
        return None


@dataclass(frozen=True)
class LdCache:
    entries: tuple[CacheEntry, ...]
    generator: str | None = None  # "ldconfig (Debian GLIBC 2.36-9+deb12u14)"
    hwcaps: tuple[str, ...] = ()  # glibc-hwcaps subdirectory names ("x86-64-v3")

    def lookup(self, name: str, flags: int | None = None) -> list[CacheEntry]:
        """The entries for soname ``name`` in the loader's order, only baseline ones (no
        hwcap: those are for the host's CPU), and of ``flags`` when given."""
        return [
            e
            for e in self.entries
            if e.name == name and e.hwcap == 0 and (flags is None or e.flags == flags)
        ]


def libcmp(a: str, b: str) -> int:
    """glibc's ``_dl_cache_libcmp`` on x86 (where ``char`` is signed): negative, 0 or positive
    as ``a`` sorts before, with or after ``b``. Runs of digits compare as numbers, and a digit
    sorts after any other byte."""
    p1, p2 = _signed(a), _signed(b)
    i = j = 0
    while i < len(p1):
        if _digit(p1[i]):
            if j >= len(p2) or not _digit(p2[j]):
                return 1
            i2, j2 = _digits_end(p1, i), _digits_end(p2, j)
            v1, v2 = _number(p1[i:i2]), _number(p2[j:j2])
            if v1 != v2:
                return v1 - v2
            i, j = i2, j2
        elif j < len(p2) and _digit(p2[j]):
            return -1
        elif j >= len(p2) or p1[i] != p2[j]:
            return p1[i] - (p2[j] if j < len(p2) else 0)
        else:
            i, j = i + 1, j + 1
    return -(p2[j] if j < len(p2) else 0)


def _signed(s: str) -> list[int]:
    return [c - 256 if c > 127 else c for c in s.encode("utf-8", "surrogateescape")]


def _digit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _digits_end(s: list[int], at: int) -> int:
    while at < len(s) and _digit(s[at]):
        at += 1
    return at


def _number(digits: list[int]) -> int:
    return int(bytes(digits))


def parse_cache(data: bytes | bytearray | memoryview) -> LdCache:
    """The entries (in file order) of the ld.so.cache ``data``."""
    view = bytes(data)
    base = 0
    if view.startswith(OLD_MAGIC):  # the libc5 table first; the new one follows it, aligned
        if len(view) < len(OLD_MAGIC) + 1 + 4:
            raise LdCacheError(f"old-format header truncated at {len(view)} bytes")
        nlibs = struct.unpack_from("<I", view, 12)[0]
        base = _align(16 + nlibs * _OLD_ENTRY_SIZE, 8)
        if base > len(view):
            raise LdCacheError(f"old-format table of {nlibs} entries runs past the end")
    if not view.startswith(MAGIC, base):
        raise LdCacheError(f"no {MAGIC.decode()} header at offset {base}")
    if len(view) < base + _HEADER.size:
        raise LdCacheError(f"header truncated at {len(view) - base} bytes")
    # An unset byte order is the writer's own, which for the loader reading it is its own.
    order = {ENDIAN_UNSET: "<", ENDIAN_LITTLE: "<", ENDIAN_BIG: ">"}.get(
        view[base + _ENDIAN_AT] & 3
    )
    if order is None:
        raise LdCacheError("flags say the cache's byte order is invalid")
    _, nlibs, len_strings, _, ext_offset = struct.unpack_from(order + _HEADER_FMT, view, base)
    entry = struct.Struct(order + _ENTRY_FMT)
    table = base + _HEADER.size
    if table + nlibs * entry.size > len(view):
        raise LdCacheError(f"nlibs {nlibs}: the entries run past the end ({len(view)} bytes)")
    if table + nlibs * entry.size + len_strings > len(view):
        raise LdCacheError(f"len_strings {len_strings} runs past the end ({len(view)} bytes)")
    strings = functools.partial(_string, view, base)
    entries = []
    for i in range(nlibs):
        flags, key, value, _, hwcap = entry.unpack_from(view, table + i * entry.size)
        entries.append(CacheEntry(strings(key, "key"), strings(value, "value"), flags, hwcap))
    generator: str | None = None
    hwcaps: tuple[str, ...] = ()
    if ext_offset:
        generator, hwcaps = _extensions(view, base, ext_offset, order)
    return LdCache(tuple(entries), generator, hwcaps)


def build_cache(entries: list[CacheEntry], generator: str = "pytest-ktstr-vmlinux") -> bytes:
    """A little-endian cache of ``entries`` (their hwcap must be 0), sorted as the loader's
    binary search needs and with each string stored once."""
    if any(e.hwcap for e in entries):
        raise ValueError("build_cache writes baseline entries only (hwcap 0)")
    ordered = sorted(entries, key=functools.cmp_to_key(_descending))
    start = _HEADER.size + len(ordered) * struct.calcsize("<" + _ENTRY_FMT)
    pool: dict[str, int] = {}
    blob = bytearray()
    for e in ordered:
        for s in (e.name, e.path):
            if s not in pool:
                if "\0" in s:
                    raise ValueError(f"cache string {s!r} holds a NUL")
                pool[s] = start + len(blob)
                blob += s.encode("utf-8", "surrogateescape") + b"\0"
    gen = generator.encode() + b"\0"
    ext_offset = _align(start + len(blob), 4)
    out = bytearray(_HEADER.pack(MAGIC, len(ordered), len(blob), ENDIAN_LITTLE, ext_offset))
    for e in ordered:
        out += struct.pack("<" + _ENTRY_FMT, e.flags, pool[e.name], pool[e.path], 0, 0)
    out += blob + b"\0" * (ext_offset - start - len(blob))
    out += struct.pack("<II", EXTENSION_MAGIC, 1)
    out += struct.pack("<IIII", EXTENSION_GENERATOR, 0, ext_offset + 24, len(gen))
    return bytes(out + gen)


def _descending(a: CacheEntry, b: CacheEntry) -> int:
    """ldconfig's order: names descending by libcmp, one name's entries by path."""
    return -libcmp(a.name, b.name) or (a.path > b.path) - (a.path < b.path)


def _string(view: bytes, base: int, offset: int, what: str) -> str:
    at = base + offset
    if at >= len(view):
        raise LdCacheError(f"an entry's {what} string at {offset} is past the end")
    end = view.find(b"\0", at, at + _MAX_STRING)
    if end < 0:
        raise LdCacheError(f"an entry's {what} string at {offset} has no NUL")
    return view[at:end].decode("utf-8", "surrogateescape")


def _extensions(
    view: bytes, base: int, offset: int, order: str
) -> tuple[str | None, tuple[str, ...]]:
    at = base + offset
    if offset % 4 or at + 8 > len(view):
        raise LdCacheError(f"extension_offset {offset} is unaligned or past the end")
    magic, count = struct.unpack_from(order + "II", view, at)
    if magic != EXTENSION_MAGIC:
        raise LdCacheError(f"extension directory magic {magic:#x}, not {EXTENSION_MAGIC:#x}")
    if at + 8 + count * 16 > len(view):
        raise LdCacheError(f"extension directory of {count} sections runs past the end")
    generator: str | None = None
    hwcaps: tuple[str, ...] = ()
    for i in range(count):
        tag, _, sec_offset, size = struct.unpack_from(order + "IIII", view, at + 8 + i * 16)
        if sec_offset + size > len(view) - base:
            raise LdCacheError(f"extension section {tag} runs past the end")
        body = view[base + sec_offset : base + sec_offset + size]
        if tag == EXTENSION_GENERATOR:
            generator = body.rstrip(b"\0").decode("utf-8", "replace")
        elif tag == EXTENSION_HWCAPS:
            if size % 4:
                raise LdCacheError(f"glibc-hwcaps section of {size} bytes, not whole u32s")
            offsets = struct.unpack(order + f"{size // 4}I", body)
            hwcaps = tuple(_string(view, base, o, "glibc-hwcaps") for o in offsets)
    return generator, hwcaps


def _align(value: int, to: int) -> int:
    return -(-value // to) * to

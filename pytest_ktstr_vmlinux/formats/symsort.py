"""Ordering a symbol table: the ``by_name`` and ``by_addr`` indexes of the packed symbols.

Both are stable argsorts over the chosen entries (equal keys keep .symtab order). The optional C
module ``_symsort`` (built by ``setup.py`` when a compiler is there) sorts ~7x faster than
``sorted()``, which is what makes a cold load beat ``nm``. Without it the Python sorts below
run; they give the same bytes, so an artifact never depends on which one built it.
"""

from __future__ import annotations

import itertools
from array import array

try:
    from ._symsort import by_addr as _native_by_addr
    from ._symsort import by_name as _native_by_name

    NATIVE = True  # tests and bench/symbols.py switch it off to reach the fallback
except ImportError:  # installed without a C compiler
    NATIVE = False


def by_name(strtab: bytes, st_name: array[int], keep: bytes) -> array[int]:
    """Indexes of the entries with a non-zero ``keep`` byte, by the NUL-terminated name at
    ``strtab[st_name[i]]`` compared as unsigned bytes. ValueError when a kept name lies outside
    ``strtab`` or ``strtab`` does not end with NUL: a damaged table."""
    if NATIVE:
        return array("I", _native_by_name(strtab, st_name, keep))
    return python_by_name(strtab, st_name, keep)


def by_addr(st_value: array[int], sized: bytes) -> array[int]:
    """Indexes of the entries with a non-zero ``sized`` byte, by ``st_value`` (u64)."""
    if NATIVE:
        return array("I", _native_by_addr(st_value, sized))
    return python_by_addr(st_value, sized)


def python_by_name(strtab: bytes, st_name: array[int], keep: bytes) -> array[int]:
    """:func:`by_name` without the C module."""
    text, n = strtab.decode("latin-1"), len(st_name)  # latin-1: sorting str sorts bytes
    offsets = st_name.tolist()
    # Each name runs from its offset to the next NUL; chained maps keep the loop in C.
    ends = map(text.find, itertools.repeat("\0"), offsets)
    names = list(map(text.__getitem__, map(slice, offsets, ends)))
    order = array("I", sorted(itertools.compress(range(n), keep), key=names.__getitem__))
    if order and not names[order[0]]:  # "" sorts first: empty, or past the table (find gave -1)
        size = len(strtab)
        for i in itertools.compress(range(n), keep):
            if offsets[i] >= size:
                raise ValueError(outside(i, offsets[i], size))
    if order and strtab[-1:] != b"\0":
        raise ValueError("the string table does not end with NUL")
    return order


def python_by_addr(st_value: array[int], sized: bytes) -> array[int]:
    """:func:`by_addr` without the C module."""
    # A list's __getitem__ is a faster sort key than an array's (no int boxing per call).
    values = st_value.tolist()
    return array("I", sorted(itertools.compress(range(len(values)), sized), key=values.__getitem__))


def outside(i: int, offset: int, size: int) -> str:
    """The ValueError text for a name past the string table; _symsort.c words it the same."""
    return f"symbol {i}'s name (st_name {offset}) lies outside its string table ({size} bytes)"

"""Stable argsorts of a symbol table in C (_symsort.c); symsort.py has the Python equivalents."""

from typing_extensions import Buffer

def by_name(strtab: Buffer, st_name: Buffer, keep: Buffer, /) -> bytes:
    """Native u32 indexes of entries with a non-zero ``keep`` byte, by name, then index."""

def by_addr(st_value: Buffer, sized: Buffer, /) -> bytes:
    """Native u32 indexes of entries with a non-zero ``sized`` byte, by value, then index."""

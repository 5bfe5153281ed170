"""BTF's binary format, and the cold path: read the bytes, walk every type once, build the index.

The walk records each type's offset (a u32 array) and sorts the named types and enumerators by
name; with the BTF bytes they form one artifact the store keeps, so a warm load
(``queries.py``) maps it and never walks again. Facts: Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from pathlib import Path
from typing import BinaryIO

from ...errors import KernelArtifactError
from ...regularfile import stable_read
from ..elftables import SHT_NOBITS, ElfLayoutError, ElfTables

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC) = range(1, 13)
(FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(13, 20)
# fmt: off
KIND_NAMES = (
    "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
    "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG", "TYPE_TAG",
    "ENUM64",
)
# fmt: on

BTF_MAGIC = 0xEB9F
_HEADER_SIZE = 24
_RECORD = 12
# Bytes after a record: a fixed part, and a part per vlen item. -1 marks kinds we do not know.
_FIXED_BYTES = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_ITEM_BYTES = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_FIXED = [_FIXED_BYTES.get(k, 0) if INT <= k <= ENUM64 else -1 for k in range(32)]
_PER_ITEM = [_ITEM_BYTES.get(k, 0) for k in range(32)]
# Kinds whose size_or_type is a type id; named kinds that type() finds by name; enums. As lists
# indexed by kind for the walk's inner loop.
_REFS = frozenset({PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DECL_TAG})
_REFS |= {TYPE_TAG}
_INDEXED = frozenset({INT, STRUCT, UNION, ENUM, FWD, TYPEDEF, FUNC, VAR, DATASEC, FLOAT, ENUM64})
_IS_REF = [k in _REFS for k in range(32)]
_IS_INDEXED = [k in _INDEXED for k in range(32)]
_IS_ENUM = [k in (ENUM, ENUM64) for k in range(32)]
_SIZED = frozenset({INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC})
_TRANSPARENT = frozenset({TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG})
_COMPOSITE = frozenset({STRUCT, UNION})

# The artifact: header {magic, ntypes (void included), named types, enumerators, BTF length},
# the BTF bytes padded to 4, then native-order u32 arrays: offsets[ntypes] (type i's offset in
# the type section), names[n] (named type ids by (name, id)), enumerators[2n] ((enum id, index)
# pairs by (name, id, index)). The store kind names the byte order, so a foreign one is a miss.
ARTIFACT_KIND = f"btf-index-{sys.byteorder}"
ARTIFACT_VERSION = 1
_ART = struct.Struct("=8s4I")
_ART_MAGIC = b"KTBTFIX\x00"
if array("I").itemsize != 4:  # pragma: no cover - every Linux ABI has a 4-byte unsigned int
    raise ImportError("formats/btf needs a 4-byte array('I')")


# --- the cold path: reading, walking, indexing ----------------------------------------------------


def read_btf_bytes(path: str | os.PathLike[str]) -> bytes:
    """The BTF of ``path``: the whole file if it is raw BTF, its ``.BTF`` section if an ELF.
    A read that fails because the file changed meanwhile is FileChanged; the store re-stats
    the source after a build that succeeded."""
    try:
        with stable_read(path, check_at_end=False) as opened:
            f = opened.file
            head = f.read(4)
            if head[:2] in (b"\x9f\xeb", b"\xeb\x9f"):
                return opened.read_exact(0, opened.size)
            if head != b"\x7fELF":
                raise KernelArtifactError(
                    f"{path}: neither raw BTF (magic 0xEB9F) nor an ELF with a .BTF section"
                )
            try:
                elf = ElfTables(f)
                section = next((s for s in elf.sections() if elf.is_named(s, b".BTF")), None)
            except ElfLayoutError as e:
                raise KernelArtifactError(f"{path}: not a readable ELF ({e})") from None
            if section is None:
                raise KernelArtifactError(
                    f"{path}: ELF without a .BTF section; the kernel was built without"
                    " CONFIG_DEBUG_INFO_BTF=y (needs pahole), or it was stripped"
                )
            if section.sh_type == SHT_NOBITS or section.sh_offset + section.sh_size > elf.size:
                raise KernelArtifactError(f"{path}: .BTF section runs past the end of the file")
            return opened.read_exact(section.sh_offset, section.sh_size)
    except OSError as e:
        raise KernelArtifactError(f"{path}: cannot read: {e.strerror or e}") from None


def _build(path: Path, out: BinaryIO) -> None:
    for chunk in _index(memoryview(read_btf_bytes(path)), str(path)):
        out.write(chunk)


def _sections(data: memoryview, what: str) -> tuple[str, memoryview, memoryview]:
    """Byte order ("<" or ">"), type section and string section of raw BTF."""
    if len(data) < _HEADER_SIZE:
        raise KernelArtifactError(f"{what}: BTF truncated: {len(data)} bytes, no full header")
    order = {b"\x9f\xeb": "<", b"\xeb\x9f": ">"}.get(bytes(data[:2]))
    if order is None:
        raise KernelArtifactError(
            f"{what}: not BTF: no magic 0xEB9F at the start (found {bytes(data[:2]).hex(' ')})"
        )
    fields = struct.unpack_from(order + "HBBIIIII", data)
    version, hdr_len, type_off, type_len, str_off, str_len = fields[1], *fields[3:]
    if version != 1:
        raise KernelArtifactError(f"{what}: BTF version {version}; only version 1 is known")
    if not _HEADER_SIZE <= hdr_len <= len(data):
        raise KernelArtifactError(f"{what}: BTF header length {hdr_len} is impossible")
    types_end, strs_end = hdr_len + type_off + type_len, hdr_len + str_off + str_len
    if max(types_end, strs_end) > len(data):
        raise KernelArtifactError(
            f"{what}: BTF truncated: sections end at byte {max(types_end, strs_end)}, the data"
            f" at {len(data)}"
        )
    strs = data[hdr_len + str_off : strs_end]
    if strs and strs[-1] != 0:
        raise KernelArtifactError(f"{what}: BTF string section does not end in NUL")
    return order, data[hdr_len + type_off : types_end], strs


def _index(data: memoryview, what: str) -> list[bytes]:
    """The artifact payload for raw BTF ``data``, in chunks; checks what the load promises."""
    order, types, strs_view = _sections(data, what)
    strs = bytes(strs_view)
    offsets, named_ids, named_offs, enums = _walk(types, order, what)
    ntypes = len(offsets)

    def string_error(offset: int, owner: str) -> KernelArtifactError:
        split = " (split BTF of a module? give the base vmlinux BTF)" if offset > len(strs) else ""
        return KernelArtifactError(
            f"{what}: {owner} has name offset {offset}, past the"
            f" {len(strs)}-byte string section{split}"
        )

    if named_offs and max(named_offs) >= len(strs):
        bad = next(i for i, o in enumerate(named_offs) if o >= len(strs))
        raise string_error(named_offs[bad], f"type [{named_ids[bad]}]")
    keys = [strs[o : strs.index(0, o)] for o in named_offs]
    names = array("I", [named_ids[i] for i in sorted(range(len(keys)), key=keys.__getitem__)])
    enumerators: list[tuple[bytes, int, int]] = []
    for tid in enums:
        at = offsets[tid]
        _, info, _ = struct.unpack_from(order + "III", types, at)
        layout = "II" if info >> 24 & 0x1F == ENUM else "III"
        body = types[at + _RECORD : at + _RECORD + 4 * len(layout) * (info & 0xFFFF)]
        for index, (name_off, *_) in enumerate(struct.iter_unpack(order + layout, body)):
            if name_off >= len(strs):
                raise string_error(name_off, f"enumerator {index} of type [{tid}]")
            if name_off:
                enumerators.append((strs[name_off : strs.index(0, name_off)], tid, index))
    enumerators.sort()
    pairs = array("I", [v for _, tid, index in enumerators for v in (tid, index)])
    head = _ART.pack(_ART_MAGIC, ntypes, len(names), len(enumerators), len(data))
    padding = bytes(_pad4(len(data)) - len(data))
    return [head, bytes(data), padding, offsets.tobytes(), names.tobytes(), pairs.tobytes()]


def _walk(
    types: memoryview, order: str, what: str
) -> tuple[array[int], list[int], list[int], list[int]]:
    """One pass over the records: each type's offset, the ids and name offsets of named types,
    the ids of enums. Checks that each record fits and its kind is known."""
    unpack = struct.Struct(order + "III").unpack_from
    fixed, per_item, is_ref, is_indexed, is_enum = _FIXED, _PER_ITEM, _IS_REF, _IS_INDEXED, _IS_ENUM
    offsets = array("I", [0])
    named_ids: list[int] = []
    named_offs: list[int] = []
    enums: list[int] = []
    end, at, tid, max_ref, max_ref_by = len(types), 0, 0, 0, 0
    while at < end:
        if end - at < _RECORD:
            raise KernelArtifactError(f"{what}: BTF truncated: type [{tid + 1}] is cut short")
        name_off, info, st = unpack(types, at)
        kind = info >> 24 & 0x1F
        tid += 1
        extra = fixed[kind]
        if extra < 0:
            raise KernelArtifactError(
                f"{what}: type [{tid}] has unknown BTF kind {kind} (known: 1-19); a newer"
                " kernel's BTF needs a newer pytest-ktstr-vmlinux"
            )
        offsets.append(at)
        if name_off and is_indexed[kind]:
            named_ids.append(tid)
            named_offs.append(name_off)
        if is_enum[kind]:
            enums.append(tid)
        if is_ref[kind] and st > max_ref:
            max_ref, max_ref_by = st, tid
        at += _RECORD + extra + per_item[kind] * (info & 0xFFFF)
    if at > end:
        raise KernelArtifactError(
            f"{what}: BTF truncated: type [{tid}] runs past the end of the type section"
        )
    if max_ref >= len(offsets):
        raise KernelArtifactError(
            f"{what}: type [{max_ref_by}] refers to type id {max_ref},"
            f" out of range (ids are 1..{len(offsets) - 1})"
        )
    return offsets, named_ids, named_offs, enums


def _u32(payload: memoryview, at: int, count: int) -> memoryview:
    return payload[at : at + 4 * count].cast("I")


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _word(kind: int) -> str:
    return "enum" if kind == ENUM64 else KIND_NAMES[kind].lower()

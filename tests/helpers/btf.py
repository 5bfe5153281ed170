"""A tiny BTF builder for tests: BTF blobs written by hand, every kind, either byte order."""

from __future__ import annotations

import struct

# BTF kinds (Documentation/bpf/btf.rst), spelled out here rather than imported.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)


class Builder:
    """BTF written by hand: type ids from 1 in the order added, either byte order."""

    def __init__(self, order: str = "<") -> None:
        self.order = order
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        at = len(self.strings)
        self.strings += text.encode() + b"\0"
        return at

    def u32(self, *values: int) -> bytes:
        return struct.pack(self.order + "I" * len(values), *(v & 0xFFFFFFFF for v in values))

    def add(
        self,
        kind: int,
        name: str | int = "",
        *,
        vlen: int = 0,
        kflag: int = 0,
        st: int = 0,
        extra: bytes = b"",
    ) -> int:
        name_off = name if isinstance(name, int) else self.name(name)
        self.types += self.u32(name_off, kflag << 31 | kind << 24 | vlen, st) + extra
        self.count += 1
        return self.count

    def int_(
        self, name: str, size: int, *, signed: bool = False, bits: int = 0, shift: int = 0
    ) -> int:
        encoding = (1 if signed else 0) << 24 | shift << 16 | (bits or size * 8)
        return self.add(INT, name, st=size, extra=self.u32(encoding))

    def ptr(self, target: int) -> int:
        return self.add(PTR, st=target)

    def array(self, elem: int, nelems: int, index: int = 1) -> int:
        return self.add(ARRAY, extra=self.u32(elem, index, nelems))

    def struct(
        self,
        name: str,
        size: int,
        members: list[tuple[str, int, int] | tuple[str, int, int, int]],
        *,
        kind: int = STRUCT,
    ) -> int:
        kflag = int(any(len(m) == 4 for m in members))
        extra = b""
        for member in members:
            bits = member[3] if len(member) == 4 else 0
            offset = bits << 24 | member[2] if kflag else member[2]
            extra += self.u32(self.name(member[0]), member[1], offset)
        return self.add(kind, name, vlen=len(members), kflag=kflag, st=size, extra=extra)

    def union(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        return self.struct(name, size, list(members), kind=UNION)

    def enum(self, name: str, values: dict[str, int], *, signed: bool = False) -> int:
        extra = b"".join(self.u32(self.name(k), v) for k, v in values.items())
        return self.add(ENUM, name, vlen=len(values), kflag=int(signed), st=4, extra=extra)

    def enum64(self, name: str, values: dict[str, int], *, signed: bool = False) -> int:
        extra = b"".join(self.u32(self.name(k), v, v >> 32) for k, v in values.items())
        return self.add(ENUM64, name, vlen=len(values), kflag=int(signed), st=8, extra=extra)

    def func_proto(self, ret: int, params: list[tuple[str, int]]) -> int:
        extra = b"".join(self.u32(self.name(n), t) for n, t in params)
        return self.add(FUNC_PROTO, vlen=len(params), st=ret, extra=extra)

    def datasec(self, name: str, size: int, entries: list[tuple[int, int, int]]) -> int:
        extra = b"".join(self.u32(*entry) for entry in entries)
        return self.add(DATASEC, name, vlen=len(entries), st=size, extra=extra)

    def blob(
        self, *, version: int = 1, type_len: int | None = None, str_len: int | None = None
    ) -> bytes:
        types_len = len(self.types) if type_len is None else type_len
        strs_len = len(self.strings) if str_len is None else str_len
        magic = struct.pack(self.order + "HBB", 0xEB9F, version, 0)
        header = magic + self.u32(24, 0, types_len, len(self.types), strs_len)
        return header + bytes(self.types) + bytes(self.strings)

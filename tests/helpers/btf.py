"""A tiny BTF builder for tests: BTF blobs written by hand, every kind, either byte order; and
``sample()``, one blob with every kind, nested anonymous members, bitfields and chains."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_ktstr_vmlinux.formats.btf.queries import BTF

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


@dataclass
class Sample:
    """Every kind, nested anonymous members, arrays of structs, bitfields, chains."""

    blob: bytes
    count: int
    ids: dict[str, int] = field(default_factory=dict)


def sample(order: str = "<", *, long_size: int = 8) -> Sample:
    b = Builder(order)
    ids: dict[str, int] = {}
    int_ = ids["int"] = b.int_("int", 4, signed=True)
    uint = b.int_("unsigned int", 4)
    long_ = b.int_("long int", long_size, signed=True)
    char = b.int_("char", 1, signed=True)
    u64 = ids["u64"] = b.add(TYPEDEF, "u64", st=b.int_("long long unsigned int", 8))
    point = b.struct("point", 8, [("x", int_, 0), ("y", int_, 32)])
    anon_s = b.struct("", 8, [("lo", uint, 0), ("hi", uint, 32)])
    anon_u = b.union("", 8, [("whole", u64, 0), ("", anon_s, 0)])
    points = ids["points"] = b.array(point, 4)
    flags = b.struct("flags", 4, [("a", uint, 0, 1), ("b", uint, 1, 3), ("c", uint, 8, 8)])
    cv = ids["cv"] = b.add(CONST, st=b.add(VOLATILE, st=u64))
    restricted = b.add(RESTRICT, st=b.ptr(char))
    tagged = ids["tagged"] = b.ptr(b.add(TYPE_TAG, "user", st=char))
    grid = ids["grid"] = b.array(b.array(char, 3), 2)
    three = b.int_("", 4, bits=3, shift=2)  # an old-style bitfield: width in the INT encoding
    old = b.struct("old_bits", 4, [("x", three, 5), ("y", uint, 0)])
    ids["opaque"] = b.add(FWD, "opaque")
    b.add(FWD, "later")
    ids["later"] = b.struct("later", 4, [("v", int_, 0)])
    ids["outer"] = b.struct(
        "outer",
        96,
        [
            ("id", long_, 0),
            ("", anon_u, 64),
            ("points", points, 128),
            ("fl", flags, 384),
            ("name", restricted, 448),
            ("cv", cv, 512),
            ("tag", tagged, 576),
            ("grid", grid, 640),
            ("old", old, 704),
        ],
    )
    b.enum("colour", {"RED": 0, "GREEN": 1, "NEG": -5}, signed=True)
    b.enum("", {"BIGU": 0xFFFFFFF0})
    b.enum64("wide", {"BIG": 1 << 40, "HUGE": (1 << 64) - 1})
    b.enum64("swide", {"MINUS": (1 << 64) - 2}, signed=True)
    proto = b.func_proto(int_, [("a", int_), ("p", tagged)])
    ids["func"] = b.add(FUNC, "do_thing", vlen=1, st=proto)
    b.add(DECL_TAG, "bpf_kfunc", st=ids["func"], extra=b.u32(0xFFFFFFFF))
    var = ids["var"] = b.add(VAR, "counter", st=long_, extra=b.u32(1))
    b.datasec(".data", 8, [(var, 0, 8)])
    b.add(FLOAT, "double", st=8)
    b.struct("dup", 4, [("d", int_, 0)])
    b.add(FUNC, "dup", vlen=1, st=proto)
    b.struct("chksum", 4, [("first", int_, 0)])
    b.struct("chksum", 8, [("second", long_, 0)])  # same name, later and larger: it wins
    return Sample(b.blob(), b.count, ids)


def answers(btf: BTF) -> list[object]:
    """What a few queries that go through every layer answer on ``sample()``'s BTF: compared
    across stores and processes."""
    return [
        len(btf),
        btf.sizeof("struct outer"),
        btf.offsetof("struct outer", "points[2].y"),
        btf.member("struct outer", "fl.b").bit_offset,
        btf.enum_value("HUGE"),
        btf.type("func do_thing").target,
    ]

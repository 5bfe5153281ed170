"""BTF for tests written as C declarations: ``types.struct("list_head", [("next", "struct
list_head *"), ("prev", "struct list_head *")])``, laid out as a C compiler lays it out on x86_64
(each member at its natural alignment, the struct padded to its largest), and emitted through
tests/helpers/btf.py's Builder with type ids planned first, so a pointer may name a struct
declared after it."""

from __future__ import annotations

import re

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from tests.helpers.btf import VAR, Builder

# Integer types by the names C (and the kernel's typedefs) give them: (size, signed).
INTS = {
    "char": (1, True),
    "unsigned char": (1, False),
    "u8": (1, False),
    "short": (2, True),
    "u16": (2, False),
    "int": (4, True),
    "unsigned int": (4, False),
    "u32": (4, False),
    "long": (8, True),
    "long unsigned int": (8, False),
    "unsigned long": (8, False),
    "u64": (8, False),
    "s64": (8, True),
}
Key = tuple[str, ...]
_ARRAY = re.compile(r"(.*)\[(\d+)\]")


class CTypes:
    """Structs, unions and enums declared in order; ``btf()`` makes the BTF."""

    def __init__(self) -> None:
        self.records: dict[Key, list[tuple[str, str]]] = {}
        self.enums: dict[str, dict[str, int]] = {}
        self.vars: dict[str, str] = {}

    def struct(self, name: str, members: list[tuple[str, str]]) -> None:
        self.records[("struct", name)] = members

    def union(self, name: str, members: list[tuple[str, str]]) -> None:
        self.records[("union", name)] = members

    def enum(self, name: str, values: dict[str, int]) -> None:
        self.enums[name] = values

    def var(self, name: str, type: str) -> None:
        """A BTF VAR, as pahole records per-CPU variables (and, from 1.26, globals)."""
        self.vars[name] = type

    def key(self, text: str) -> Key:
        text = text.strip()
        array = _ARRAY.fullmatch(text)
        if array:
            return ("array", array[2], *self.key(array[1]))
        if text.endswith("*"):
            return ("ptr", *self.key(text[:-1]))
        if text == "void":
            return ("void",)
        if text in INTS:
            return ("int", text)
        kind, _, name = text.partition(" ")
        if kind in ("struct", "union", "enum") and name:
            return (kind, name)
        raise ValueError(f"no such type: {text!r}")

    def size(self, key: Key) -> int:
        kind = key[0]
        if kind == "int":
            return INTS[key[1]][0]
        if kind in ("ptr", "enum"):
            return 8 if kind == "ptr" else 4
        if kind == "array":
            return int(key[1]) * self.size(key[2:])
        return self.layout(key)[1]

    def align(self, key: Key) -> int:
        if key[0] == "array":
            return self.align(key[2:])
        if key[0] in ("struct", "union"):
            return max((self.align(self.key(t)) for _, t in self.records[key]), default=1)
        return self.size(key)

    def layout(self, key: Key) -> tuple[list[tuple[str, Key, int]], int]:
        """(members with their byte offsets, the size)."""
        members, at, end = [], 0, 0
        for name, text in self.records[key]:
            member = self.key(text)
            align = self.align(member)
            offset = 0 if key[0] == "union" else (at + align - 1) // align * align
            members.append((name, member, offset))
            at = offset + self.size(member)
            end = max(end, at)
        align = self.align(key)
        return members, (end + align - 1) // align * align

    def btf(self) -> BTF:
        ids: dict[Key, int] = {}
        order: list[Key] = []

        def plan(key: Key) -> None:
            if key in ids or key == ("void",):
                return
            ids[key] = len(order) + 1
            order.append(key)
            if key[0] == "ptr":
                plan(key[1:])
            elif key[0] == "array":
                plan(key[2:])
            elif key[0] in ("struct", "union"):
                for _, text in self.records[key]:
                    plan(self.key(text))

        plan(("int", "int"))  # id 1: every array's index type
        for record in self.records:
            plan(record)
        for name in self.enums:
            plan(("enum", name))
        for type in self.vars.values():
            plan(self.key(type))
        b = Builder()
        for key in order:
            kind = key[0]
            if kind == "int":
                size, signed = INTS[key[1]]
                b.int_(key[1], size, signed=signed)
            elif kind == "ptr":
                b.ptr(ids.get(key[1:], 0))
            elif kind == "array":
                b.array(ids[key[2:]], int(key[1]), index=ids[("int", "int")])
            elif kind == "enum":
                b.enum(key[1], self.enums[key[1]])
            else:
                members, size = self.layout(key)
                fields = [(n, ids[k], 8 * offset) for n, k, offset in members]
                if kind == "union":
                    b.union(key[1], size, fields)
                else:
                    b.struct(key[1], size, list(fields))
            assert b.count == ids[key], key
        for name, type in self.vars.items():
            b.add(VAR, name, st=ids[self.key(type)], extra=b.u32(1))  # linkage: global
        return BTF.from_bytes(b.blob(), what="test kernel BTF")

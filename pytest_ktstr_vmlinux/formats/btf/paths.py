"""Member paths: "cfs.nr_running", "arr[2].x", resolved to a type and a bit offset.

A path goes through anonymous struct/union members as C does, and through array indices; each
outer type's members are flattened once and each (type, path) answer is kept, because a test
asks for the same few offsets again and again. ``route`` also goes through pointers (``->``),
saying where they are read: what the live layer computes once per (type, path) and replays for
each read, since BTF is immutable and only the pointers' values change.
"""

from __future__ import annotations

import re

from .format import _COMPOSITE, ARRAY, PTR
from .table import TypeTable
from .types import BTFKeyError, Route, suggest

# [0-9], not \d: int() would take any script's digits, and no C index is written in them.
_PATH_PART = re.compile(r"([A-Za-z_$][\w$]*)?((?:\[[0-9]+\])*)")
_INDEX = re.compile(r"\[([0-9]+)\]")


class MemberPaths(TypeTable):
    """The type table, with member paths resolved (and memoized) within it."""

    def _locate(self, spec: str | int, path: str) -> tuple[int, int, int]:
        """(type, bit offset, bitfield size) of ``path`` in ``spec``; memoized."""
        tid = self._lookup(spec)
        found = self._paths.get((tid, path))
        if found is None:
            (bits,), current, width = self._walk(spec, tid, path, pointers=False)
            found = self._paths[(tid, path)] = (current, bits, width)
        return found

    def route(self, spec: str | int, path: str) -> Route:
        """How ``path`` is reached from ``spec`` through the pointers on the way (``Route``);
        memoized. ``ptr.name`` follows ``ptr`` (as often as pointers to pointers ask) and
        ``ptr[i]`` indexes what it points to, as ``Object.member_`` does. BTFKeyError (or
        ValueError for a malformed path) when there is no such member."""
        found = self._routes.get((spec, path))
        if found is None:
            found = self._walk(spec, self._lookup(spec), path, pointers=True)
            self._routes[(spec, path)] = found
        return found

    def _walk(self, spec: str | int, tid: int, path: str, *, pointers: bool) -> Route:
        """``path`` from ``tid``, through pointers when ``pointers`` (else one offset)."""
        offsets: list[int] = []
        current, bits, width = tid, 0, 0
        for name, indices in parse_member_path(path):
            if name is not None:
                outer, seen = self._resolve(current), [current]
                while pointers and outer and not width and self._rec(outer).kind == PTR:
                    offsets.append(bits)
                    current, bits = self._rec(outer).st, 0
                    self._no_loop(current, seen)
                    outer = self._resolve(current)
                if width or not outer or self._rec(outer).kind not in _COMPOSITE:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: cannot look up {name!r} in"
                        f" {self.type_name(current)}: not a struct or union"
                    )
                members = self._flat(outer)
                if name not in members:
                    raise BTFKeyError(
                        f"{self.what}: {self.type_name(outer)} has no member {name!r}"
                        + suggest(name, members)
                    )
                offset, width, current = members[name]
                bits += offset
            for index in indices:
                real = self._resolve(current)
                kind = self._rec(real).kind if real and not width else None
                if kind == PTR and pointers:
                    offsets.append(bits)
                    current = self._rec(real).st
                    bits = index * self._size(current) * 8
                    continue
                if kind != ARRAY:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: {path}: {self.type_name(current)} is not an array"
                    )
                elem, _, nelems = self._unpack(self._types, self._rec(real).body)
                if nelems and index >= nelems:
                    raise BTFKeyError(
                        f"{self.what}: {spec}: {path}: index {index} is out of"
                        f" range for {self.type_name(real)}"
                    )
                bits += index * self._size(elem) * 8
                current, width = elem, 0
        offsets.append(bits)
        return Route(tuple(offsets), current, width)

    def _flat(self, tid: int) -> dict[str, tuple[int, int, int]]:
        """Member name -> (bit offset, bitfield size, type) for STRUCT/UNION ``tid``, with the
        members of its anonymous struct/union members (and theirs); decoded once per type."""
        flat = self._flats.get(tid)
        if flat is not None:
            return flat
        flat, stack, seen = {}, [(tid, 0)], {tid}
        while stack:
            current, base = stack.pop()
            nested = []
            for name_off, mtype, offset, width in self._rows(current):
                if name_off:
                    flat.setdefault(self._text(name_off), (base + offset, width, mtype))
                elif mtype:
                    inner = self._resolve(mtype)
                    if inner and inner not in seen and self._rec(inner).kind in _COMPOSITE:
                        seen.add(inner)
                        nested.append((inner, base + offset))
            stack.extend(reversed(nested))
        self._flats[tid] = flat
        return flat


def parse_member_path(path: str) -> list[tuple[str | None, list[int]]]:
    """Split a member path: "a.b[2].c" -> [("a", []), ("b", [2]), ("c", [])]; "[1].x" starts
    with an index (the outer type is an array). ValueError saying which part is malformed."""
    parts = []
    for i, part in enumerate(path.split(".")):
        match = _PATH_PART.fullmatch(part.strip())
        if match is None or not part.strip() or (match[1] is None and i):
            what = f"{part!r} is not a name or name[index]" if part.strip() else "an empty part"
            raise ValueError(
                f"malformed member path {path!r}: {what}; use names, dots and [index], as in"
                " cfs.nr_running or arr[2].x"
            )
        parts.append((match[1], [int(n) for n in _INDEX.findall(match[2])]))
    return parts

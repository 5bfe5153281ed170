"""The CLI's symbol and BTF verbs: ``symbols``, ``addr``, ``offsetof`` and ``btf``."""

from __future__ import annotations

import argparse
import json

from ..errors import KernelArtifactError
from ..formats.btf.queries import BTF, parse_member_path
from ..kernel.artifacts import load_btf, load_symbols
from ..kernel.resolve import Kernel

EXIT_OK = 0
# Addresses are unsigned and no kernel has more than 64 bits of them.
ADDRESS_LIMIT = 1 << 64


def check_query_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the first argument of a query verb that cannot be right, so that it is
    refused before the kernel's symbols or BTF are loaded."""
    if args.verb == "symbols":
        for name in args.names:
            _require_text("symbol name", name)
    if args.verb == "addr":
        parse_address(args.address)
    if args.verb in ("offsetof", "btf"):
        _require_text("type", args.type)
    if args.verb == "offsetof":
        parse_member_path(args.member)


def parse_address(text: str) -> int:
    """``addr``'s ADDRESS as Python spells integers (0x..., 0o..., 0b... or decimal), ASCII only,
    0 to 2**64 - 1; ValueError naming the text and what is wrong with it."""
    try:
        value = int(text, 0) if text.isascii() else None
    except ValueError:
        value = None
    if value is None:
        raise ValueError(f"address {text!r} is not a number (e.g. 0xffffffff81000000)")
    if not 0 <= value < ADDRESS_LIMIT:
        raise ValueError(f"address {text!r} is outside 0..{ADDRESS_LIMIT - 1:#x}")
    return value


def run_query(args: argparse.Namespace, kernel: Kernel) -> int:
    if args.verb == "symbols":
        ksyms = load_symbols(kernel)
        # Every symbol, duplicates (static functions of several files) included, or the names
        # asked for, each of which must be unambiguous.
        found = list(ksyms.items()) if not args.names else [(n, ksyms[n]) for n in args.names]
        if args.json:
            listing = [{"name": name, "address": f"{value:#x}"} for name, value in found]
            print(json.dumps(listing if not args.names else dict(_hex(found)), indent=2))
        else:
            for name, value in found:
                print(f"{value:016x} {name}")
    elif args.verb == "addr":
        address = parse_address(args.address)
        hit = load_symbols(kernel).lookup(address)
        if hit is None:
            raise KernelArtifactError(f"no sized symbol contains {address:#x}")
        name, offset = hit
        if args.json:
            print(json.dumps({"address": f"{address:#x}", "symbol": name, "offset": offset}))
        else:
            print(f"{name}+{offset:#x}")
    elif args.verb == "offsetof":
        member = load_btf(kernel).member(args.type, args.member)
        report = {
            "type": args.type,
            "member": args.member,
            "offset": member.bit_offset // 8 if not member.bitfield_size else None,
            "bit_offset": member.bit_offset,
            "bitfield_size": member.bitfield_size,
            "member_type": member.type_name,
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(member.offset if not member.bitfield_size else _bitfield(member.bit_offset))
    else:
        print(layout(load_btf(kernel), args.type))
    return EXIT_OK


def layout(btf: BTF, spec: str) -> str:
    """A pahole-like print: each member with its type, byte offset and size."""
    t = btf.type(spec)
    lines = [f"{t.kind.lower()} {t.name or '(anon)'} {{"]
    for m in t.members:
        try:
            size = btf.sizeof(m.type_id)
        except KernelArtifactError:
            size = 0
        where = (
            _bitfield(m.bit_offset, m.bitfield_size)
            if m.bitfield_size
            else f"{m.bit_offset // 8:6}"
        )
        lines.append(f"\t{m.type_name:<32} {m.name or '(anon)':<28} /* {where} {size:6} */")
    lines.append(f"}};  /* size: {btf.sizeof(t.id)} */")
    return "\n".join(lines)


def _bitfield(bit_offset: int, bits: int = 0) -> str:
    suffix = f":{bits}" if bits else ""
    return f"{bit_offset // 8}:{bit_offset % 8}{suffix}"


def _require_text(what: str, text: str) -> None:
    if not text.strip():
        raise ValueError(f"{what} {text!r} is empty")


def _hex(found: list[tuple[str, int]]) -> list[tuple[str, str]]:
    return [(name, f"{value:#x}") for name, value in found]

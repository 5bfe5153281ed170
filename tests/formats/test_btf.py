"""BTF: hand-built blobs for every kind and every kind of damage, real kernels checked against
bpftool (an oracle we did not write), the store's reuse across processes, and fuzzing."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf import format as btfformat
from pytest_ktstr_vmlinux.formats.btf.queries import BTF, BitfieldError, BTFKeyError
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.btf import (
    ARRAY,
    CONST,
    DATASEC,
    DECL_TAG,
    ENUM,
    ENUM64,
    FUNC_PROTO,
    FWD,
    INT,
    STRUCT,
    TYPEDEF,
    UNION,
    VAR,
    Builder,
    answers,
    sample,
)
from tests.helpers.kernels import REQUIRE_REAL_KERNELS, DebianKernel

RUNNING_BTF = Path("/sys/kernel/btf/vmlinux")
SAMPLE = 500


LE = sample("<")


def parse(blob: bytes, what: str = "test-blob") -> BTF:
    return BTF.from_bytes(blob, what=what)


# --- hand-built blobs: what the queries answer ------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_sizes_and_offsets_of_every_kind(order: str) -> None:
    s = sample(order)
    btf = parse(s.blob)
    assert btf.byteorder == ("little" if order == "<" else "big")
    assert len(btf) == s.count
    assert btf.sizeof("struct outer") == 96
    assert btf.sizeof("outer") == 96
    assert btf.sizeof("u64") == btf.sizeof("typedef u64") == 8
    assert btf.sizeof(s.ids["points"]) == 32
    assert btf.sizeof(s.ids["cv"]) == 8
    assert btf.sizeof(s.ids["tagged"]) == 8
    assert btf.sizeof(s.ids["grid"]) == 6
    assert btf.sizeof("var counter") == 8
    assert btf.sizeof("datasec .data") == btf.sizeof(".data") == 8
    assert btf.sizeof("double") == 8
    assert btf.sizeof("enum colour") == 4 and btf.sizeof("enum wide") == 8
    # Through the anonymous union, and the anonymous struct inside it.
    assert btf.offsetof("struct outer", "whole") == 8
    assert btf.offsetof("struct outer", "lo") == 8
    assert btf.offsetof("struct outer", "hi") == 12
    assert btf.offsetof("struct outer", "points") == 16
    assert btf.offsetof("struct outer", "points[2]") == 32
    assert btf.offsetof("struct outer", "points[2].y") == 36
    assert btf.offsetof("struct outer", "points[3].x") == 40
    assert btf.offsetof("struct outer", "grid[1][2]") == 80 + 5
    assert btf.member("struct outer", "fl.c").bit_offset == 392  # byte-aligned, still a bitfield
    assert btf.offsetof(s.ids["outer"], "cv") == 64
    assert btf.offsetof(s.ids["points"], "[1].y") == 12
    hi = btf.member("struct outer", "hi")
    assert (hi.bit_offset, hi.bitfield_size, hi.type_name) == (96, 0, "unsigned int")
    assert hi.offset == 12
    assert btf.member("struct outer", "cv").type_name == "const volatile u64"
    assert (
        btf.member("struct outer", "name").type_name == "char *restrict"
    )  # C spells a restrict pointer so
    assert btf.member("struct outer", "grid").type_name == "char[2][3]"


def test_bitfields_have_bit_offsets_and_no_byte_offset() -> None:
    btf = parse(LE.blob)
    b = btf.member("struct outer", "fl.b")
    assert (b.bit_offset, b.bitfield_size) == (384 + 1, 3)
    assert btf.member("struct flags", "a").bitfield_size == 1
    with pytest.raises(BitfieldError, match=r"fl\.b is a bitfield .*use member"):
        btf.offsetof("struct outer", "fl.b")
    with pytest.raises(BitfieldError):
        _ = b.offset
    assert issubclass(BitfieldError, KernelArtifactError)
    # Without kind_flag the width and the extra shift come from the member's INT encoding.
    x = btf.member("struct old_bits", "x")
    assert (x.bit_offset, x.bitfield_size) == (7, 3)
    assert btf.member("struct old_bits", "y").bitfield_size == 0
    members = btf.type("struct flags").members
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in members] == [
        ("a", 0, 1),
        ("b", 1, 3),
        ("c", 8, 8),
    ]


def test_type_records() -> None:
    btf = parse(LE.blob)
    outer = btf.type("struct outer")
    assert (outer.id, outer.kind, outer.name, outer.size) == (
        LE.ids["outer"],
        "STRUCT",
        "outer",
        96,
    )
    assert [m.name for m in outer.members][:3] == ["id", "", "points"]
    assert btf.type("func do_thing").kind == "FUNC"
    assert btf.type(btf.type("func do_thing").target or 0).kind == "FUNC_PROTO"
    assert btf.type("var counter").target == btf.type("long int").id
    assert btf.type(LE.ids["points"]).target == btf.type("struct point").id
    assert btf.type("int").size == 4 and btf.type("int").members == ()
    assert dict(btf.type("enum colour").enumerators) == {"RED": 0, "GREEN": 1, "NEG": -5}
    assert btf.type("struct opaque").kind == "FWD"
    assert btf.type("struct later").kind == "STRUCT"  # the definition, not the declaration
    assert btf.type("later").kind == "STRUCT"
    assert btf.type("struct chksum").size == 8  # duplicates: the largest, as ktstr takes
    assert btf.type_name(0) == "void"


def test_several_structs_of_one_name_the_largest_wins_and_an_id_picks_another() -> None:
    b = Builder()
    int_, long_ = b.int_("int", 4, signed=True), b.int_("long int", 8, signed=True)
    declared = b.add(FWD, "foo")
    small = b.struct("foo", 8, [("a", int_, 0), ("only_small", int_, 32)])
    large = b.struct("foo", 16, [("b", long_, 0), ("a", long_, 64)])
    tie = b.struct("foo", 16, [("a", long_, 0), ("c", long_, 64)])  # as large, later: loses
    btf = parse(b.blob())
    assert btf.type("struct foo").id == btf.type("foo").id == large
    assert btf.sizeof("struct foo") == 16
    assert btf.offsetof("struct foo", "a") == 8
    assert btf.member("struct foo", "a").type_id == long_
    assert btf.has_member("struct foo", "b") and not btf.has_member("struct foo", "only_small")
    assert not btf.has_member("struct foo", "c")
    assert btf.member_any("struct foo", ["only_small", "c", "b"]).name == "b"
    # types(): every candidate, the chosen first; their ids pick any other.
    found = btf.types("struct foo")
    assert [(t.id, t.kind, t.size) for t in found] == [
        (large, "STRUCT", 16),
        (tie, "STRUCT", 16),
        (small, "STRUCT", 8),
        (declared, "FWD", None),
    ]
    assert btf.types("foo") == found and btf.types(small) == [btf.type(small)]
    assert btf.type(small).size == btf.sizeof(small) == 8
    assert btf.offsetof(small, "a") == 0 and btf.member(small, "only_small").bit_offset == 32
    assert btf.has_member(small, "only_small") and not btf.has_member(small, "b")
    assert btf.member_any(small, ["b", "only_small"]).name == "only_small"
    assert btf.offsetof(tie, "c") == 8
    with pytest.raises(KeyError, match=r"no type 'struct fooo'.*'struct foo'"):
        btf.types("struct fooo")
    with pytest.raises(KeyError, match="out of range"):
        btf.types(len(btf) + 1)


def test_enumerators_signed_unsigned_and_64_bit() -> None:
    btf = parse(LE.blob)
    assert btf.enum_value("GREEN") == 1
    assert btf.enum_value("NEG") == -5
    assert btf.enum_value("BIGU") == 0xFFFFFFF0
    assert btf.enum_value("BIG") == 1 << 40
    assert btf.enum_value("HUGE") == (1 << 64) - 1
    assert btf.enum_value("MINUS") == -2


def test_pointer_size_follows_long() -> None:
    assert parse(sample(long_size=8).blob).sizeof(LE.ids["tagged"]) == 8
    btf32 = parse(sample(long_size=4).blob)
    assert btf32.pointer_size == 4
    assert btf32.sizeof(LE.ids["tagged"]) == 4


def test_missing_names_are_key_errors_with_suggestions() -> None:
    btf = parse(LE.blob, "blob.btf")
    with pytest.raises(KeyError, match=r"blob\.btf: no type 'struct outr'.*'struct outer'"):
        btf.type("struct outr")
    with pytest.raises(KeyError, match=r"has no member 'pionts'.*'points'"):
        btf.offsetof("struct outer", "pionts")
    with pytest.raises(KeyError, match=r"has no member 'hii'.*'hi'"):
        btf.offsetof("struct outer", "hii")  # suggestions reach into anonymous members
    with pytest.raises(KeyError, match=r"no enumerator 'GREN'.*'GREEN'"):
        btf.enum_value("GREN")
    with pytest.raises(KeyError, match=r"several kinds.*'func dup', 'struct dup'"):
        btf.type("dup")
    assert btf.type("struct dup").kind == "STRUCT"
    assert btf.type("func dup").kind == "FUNC"
    with pytest.raises(KeyError, match="out of range"):
        btf.offsetof("struct outer", "points[4]")
    with pytest.raises(KeyError, match="not an array"):
        btf.offsetof("struct outer", "id[0]")
    with pytest.raises(KeyError, match="not a struct or union"):
        btf.offsetof("struct outer", "id.x")
    with pytest.raises(KeyError, match="out of range"):
        btf.type(10_000)
    with pytest.raises(ValueError, match="malformed member path"):
        btf.offsetof("struct outer", "points..x")
    assert str(BTFKeyError("plain")) == "plain"


def test_contains_answers_without_raising() -> None:
    btf = parse(LE.blob, "blob.btf")
    assert "struct outer" in btf
    assert "outer" in btf  # a bare name
    assert "dup" in btf  # one that several kinds share, which type() refuses
    assert "struct dup" in btf and "func dup" in btf and "union dup" not in btf
    assert "struct outr" not in btf and "nothing" not in btf
    assert 1 in btf and len(btf) in btf
    assert 0 not in btf and len(btf) + 1 not in btf and b"outer" not in btf


def test_things_without_a_size() -> None:
    btf = parse(LE.blob, "blob.btf")
    with pytest.raises(KernelArtifactError, match=r"blob\.btf: .*struct opaque is only declared"):
        btf.sizeof("struct opaque")
    with pytest.raises(KernelArtifactError, match="has no size"):
        btf.sizeof("func do_thing")
    with pytest.raises(KernelArtifactError, match="has no size"):
        btf.sizeof(btf.type("func do_thing").target or 0)


# --- hand-built blobs: damage -----------------------------------------------------------------


def test_unknown_kind_names_the_kind_and_the_type() -> None:
    b = Builder()
    b.int_("int", 4)
    b.add(20, "future")
    with pytest.raises(KernelArtifactError, match=r"blob: type \[2\] has unknown BTF kind 20"):
        parse(b.blob(), "blob")


def test_kind_zero_is_unknown_too() -> None:
    b = Builder()
    b.add(0, "unkn")
    with pytest.raises(KernelArtifactError, match=r"type \[1\] has unknown BTF kind 0"):
        parse(b.blob())


def test_big_endian_answers_equal_little_endian() -> None:
    assert answers(parse(sample(">").blob)) == answers(parse(LE.blob))
    assert parse(sample(">").blob).enum_value("MINUS") == -2


def test_paths_into_void() -> None:
    b = Builder()
    void_t = b.add(TYPEDEF, "nothing", st=0)
    b.struct("s", 8, [("v", void_t, 0)])
    btf = parse(b.blob())
    with pytest.raises(KeyError, match="not a struct or union"):
        btf.offsetof("struct s", "v.x")
    with pytest.raises(KeyError, match="not an array"):
        btf.offsetof("struct s", "v[0]")
    with pytest.raises(KernelArtifactError, match="void has no size"):
        btf.sizeof("nothing")


def test_truncation_anywhere_is_an_error_naming_the_input() -> None:
    blob = LE.blob
    for cut in sorted({0, 1, 2, 23, 24, 25, 100, len(blob) // 2, len(blob) - 1}):
        with pytest.raises(KernelArtifactError, match=r"^cut\.btf: "):
            parse(blob[:cut], "cut.btf")


def test_records_cut_short_inside_the_type_section() -> None:
    b = Builder()
    b.int_("int", 4)
    b.struct("s", 4, [("a", 1, 0)])
    for short in (4, 8, 12, 16):
        with pytest.raises(KernelArtifactError, match=r"type \[2\]"):
            parse(b.blob(type_len=len(b.types) - short))


def test_header_damage() -> None:
    with pytest.raises(KernelArtifactError, match="not BTF: no magic 0xEB9F"):
        parse(b"hello, world" * 4)
    with pytest.raises(KernelArtifactError, match="version 2"):
        parse(sample().blob.replace(b"\x9f\xeb\x01", b"\x9f\xeb\x02", 1))
    with pytest.raises(KernelArtifactError, match="string section does not end in NUL"):
        parse(LE.blob[:-1] + b"x")


def test_string_offset_out_of_range() -> None:
    b = Builder()
    b.add(INT, 9999, st=4, extra=b.u32(32))
    with pytest.raises(KernelArtifactError, match=r"type \[1\] has name offset 9999"):
        parse(b.blob())
    # A member's name is read on demand: checked then.
    b = Builder()
    int_ = b.int_("int", 4)
    b.types += b.u32(b.name("s"), STRUCT << 24 | 1, 4) + b.u32(7777, int_, 0)
    b.count += 1
    btf = parse(b.blob(), "members.btf")
    with pytest.raises(KernelArtifactError, match=r"members\.btf: string offset 7777"):
        btf.offsetof("struct s", "a")
    with pytest.raises(KernelArtifactError, match="string offset 7777"):
        _ = btf.type("struct s").members


def test_type_id_out_of_range() -> None:
    b = Builder()
    b.int_("int", 4)
    b.add(TYPEDEF, "broken", st=99)
    with pytest.raises(KernelArtifactError, match=r"type \[2\] refers to type id 99"):
        parse(b.blob(), "refs.btf")
    b = Builder()
    int_ = b.int_("int", 4)
    arr = b.array(77, 2, index=int_)
    b.struct("s", 8, [("a", 66, 0), ("b", int_, 32)])
    b.struct("t", 8, [("arr", arr, 0)])
    btf = parse(b.blob(), "lazy.btf")
    with pytest.raises(KernelArtifactError, match=r"lazy\.btf: type id 77 is out of range"):
        btf.sizeof(arr)
    with pytest.raises(KernelArtifactError, match="type id 66 is out of range"):
        btf.offsetof("struct s", "b")
    with pytest.raises(KernelArtifactError, match="type id 77 is out of range"):
        btf.offsetof("struct t", "arr[1]")


def test_typedef_loop() -> None:
    b = Builder()
    b.add(TYPEDEF, "a", st=2)
    b.add(CONST, st=3)
    b.add(TYPEDEF, "c", st=1)
    b.array(4, 2)  # an array of itself
    b.struct("s", 4, [("", 1, 0), ("x", 3, 0)])
    btf = parse(b.blob(), "loop.btf")
    with pytest.raises(KernelArtifactError, match=r"loop\.btf: type chain loops: \[1\] -> \[2\]"):
        btf.sizeof("a")
    with pytest.raises(KernelArtifactError, match="loops"):
        btf.sizeof(4)
    with pytest.raises(KernelArtifactError, match="loops"):
        btf.offsetof("struct s", "x")
    assert btf.type_name(2) == "const c"
    assert "..." in btf.type_name(4)


def test_self_containing_anonymous_members_terminate() -> None:
    b = Builder()
    b.struct("", 4, [("", 1, 0), ("y", 2, 0)])
    b.int_("int", 4)
    btf = parse(b.blob())
    assert btf.offsetof(1, "y") == 0


# --- files and the store ----------------------------------------------------------------------


@pytest.fixture
def blob_file(tmp_path: Path) -> Path:
    path = tmp_path / "vmlinux.btf"
    path.write_bytes(LE.blob)
    return path


def test_from_path_reuses_the_store(tmp_path: Path, blob_file: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    first = BTF.from_path(blob_file, store)
    second = BTF.from_path(blob_file, store)
    assert (store.stats.built, store.stats.reused) == (1, 1)
    assert answers(first) == answers(second) == answers(parse(LE.blob))
    assert repr(second) == f"BTF({str(blob_file)!r}, {len(first)} types)"


def test_a_fresh_process_builds_nothing(tmp_path: Path, blob_file: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    expected = answers(BTF.from_path(blob_file, store))
    script = (
        "import json, sys\n"
        "from pytest_ktstr_vmlinux.formats.btf.queries import BTF\n"
        "from pytest_ktstr_vmlinux.store.disk import ArtifactStore\n"
        "from tests.helpers.btf import answers\n"
        "store = ArtifactStore(sys.argv[1])\n"
        "got = answers(BTF.from_path(sys.argv[2], store))\n"
        "print(json.dumps([store.stats.built, store.stats.reused, got]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store"), str(blob_file)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    ).stdout
    assert json.loads(out) == [0, 1, expected]


def test_errors_are_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "bad.btf"
    path.write_bytes(LE.blob[:100])
    store = ArtifactStore(tmp_path / "store")
    for _ in range(2):
        with pytest.raises(KernelArtifactError, match=r"bad\.btf: BTF truncated"):
            BTF.from_path(path, store)
    assert (store.stats.built, store.stats.reused) == (0, 0)


def test_files_that_are_not_btf(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a kernel\n")
    with pytest.raises(KernelArtifactError, match="neither raw BTF"):
        BTF.from_path(text)
    with pytest.raises(KernelArtifactError, match="does not exist"):
        BTF.from_path(tmp_path / "missing")
    with pytest.raises(KernelArtifactError, match=r"ELF without a \.BTF section"):
        BTF.from_path(Path(sys.executable).resolve(), MemoryStore())
    elf = tmp_path / "broken-elf"
    elf.write_bytes(b"\x7fELF" + bytes(12))
    with pytest.raises(KernelArtifactError, match="not a readable ELF"):
        BTF.from_path(elf)


def elf_with_btf(btf: bytes, *, big_endian: bool = False, claimed_size: int | None = None) -> bytes:
    """A minimal ELF64 relocatable file: sections null, .shstrtab and .BTF."""
    order = ">" if big_endian else "<"
    names = b"\0.shstrtab\0.BTF\0"
    btf_at = 64 + len(names)
    sh_at = (btf_at + len(btf) + 7) & ~7
    ident = b"\x7fELF" + bytes([2, 2 if big_endian else 1, 1]) + bytes(9)
    # e_type ET_REL, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize,
    # e_phentsize, e_phnum, e_shentsize, e_shnum (3), e_shstrndx (1)
    fields = (1, 62, 1, 0, 0, sh_at, 0, 64, 0, 0, 64, 3, 1)
    header = struct.pack(order + "16sHHIQQQIHHHHHH", ident, *fields)
    section = struct.Struct(order + "IIQQQQIIQQ")
    size = len(btf) if claimed_size is None else claimed_size
    sections = [
        section.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        section.pack(1, 3, 0, 0, 64, len(names), 0, 0, 1, 0),  # SHT_STRTAB
        section.pack(11, 1, 0, 0, btf_at, size, 0, 0, 4, 0),  # SHT_PROGBITS
    ]
    body = header + names + btf
    return body + bytes(sh_at - len(body)) + b"".join(sections)


@pytest.mark.parametrize("big_endian", [False, True])
def test_btf_section_of_an_elf(tmp_path: Path, big_endian: bool) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(elf_with_btf(sample(">" if big_endian else "<").blob, big_endian=big_endian))
    assert answers(BTF.from_path(path)) == answers(parse(LE.blob))
    assert BTF.from_path(path).byteorder == ("big" if big_endian else "little")


def test_btf_section_past_the_end_of_the_elf(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(elf_with_btf(LE.blob, claimed_size=1 << 20))
    with pytest.raises(KernelArtifactError, match=r"\.BTF section runs past the end"):
        BTF.from_path(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(KernelArtifactError, match="is a directory, not a regular file"):
        btfformat.read_btf_bytes(tmp_path)


def test_a_damaged_artifact_payload_is_refused() -> None:
    payload = b"".join(btfformat._index(memoryview(LE.blob), "x"))
    with pytest.raises(KernelArtifactError, match="index artifact is damaged"):
        BTF(memoryview(payload[:-4]), what="x")
    with pytest.raises(KernelArtifactError, match="truncated"):
        BTF(memoryview(payload[:10]), what="x")


# --- real kernels against bpftool --------------------------------------------------------------


@dataclass
class Dump:
    """What `bpftool btf dump file F` (raw format) says: kinds and names of every type, struct
    and union sizes and members, enumerator values."""

    kinds: list[tuple[str, str]] = field(default_factory=lambda: [("VOID", "")])
    composites: dict[int, tuple[int, list[tuple[str, int, int, int]]]] = field(default_factory=dict)
    enumerators: dict[str, set[int]] = field(default_factory=dict)


_TYPE_LINE = re.compile(r"\[(\d+)\] (\w+) '([^']*)'(.*)")
_MEMBER_LINE = re.compile(r"\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?$")
_VALUE_LINE = re.compile(r"\t'([^']*)' val=(-?\d+)")


def parse_bpftool(text: str) -> Dump:
    dump = Dump()
    members: list[tuple[str, int, int, int]] | None = None
    kind = ""
    for line in text.splitlines():
        if not line.startswith("\t"):
            match = _TYPE_LINE.match(line)
            assert match, line
            assert int(match[1]) == len(dump.kinds)
            kind, name = match[2], match[3]
            dump.kinds.append((kind, "" if name == "(anon)" else name))
            members = None
            if kind in ("STRUCT", "UNION"):
                members = []
                size = int(re.search(r"size=(\d+)", match[4])[1])  # type: ignore[index]
                dump.composites[int(match[1])] = (size, members)
        elif members is not None:
            m = _MEMBER_LINE.match(line)
            assert m, line
            name = "" if m[1] == "(anon)" else m[1]
            members.append((name, int(m[2]), int(m[3]), int(m[4] or 0)))
        elif kind in ("ENUM", "ENUM64"):
            v = _VALUE_LINE.match(line)
            assert v, line
            dump.enumerators.setdefault(v[1], set()).add(int(v[2]))
    return dump


def _bpftool() -> str:
    found = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "bpftool not found: `apt-get install bpftool` (the oracle for the BTF tests)"
        if REQUIRE_REAL_KERNELS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


@dataclass
class RealBTF:
    source: str
    path: Path
    btf: BTF
    dump: Dump


@functools.cache
def _load_real(source: str, path: Path) -> RealBTF:
    out = subprocess.run(
        [_bpftool(), "btf", "dump", "file", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return RealBTF(source, path, BTF.from_path(path), parse_bpftool(out))


@pytest.fixture(scope="session", params=["running", "debian", "tinyconfig"])
def real(request: pytest.FixtureRequest) -> RealBTF:
    """A real kernel's BTF with bpftool's account of it, each made once per session."""
    source: str = request.param
    if source == "running":
        if not os.access(RUNNING_BTF, os.R_OK):
            pytest.skip(f"{RUNNING_BTF} is not readable on this machine")
        path = RUNNING_BTF
    elif source == "debian":
        kernel: DebianKernel = request.getfixturevalue("debian_kernel")
        path = kernel.vmlinux
    else:
        path = request.getfixturevalue("tinyconfig_tree") / "vmlinux"
    _bpftool()
    return _load_real(source, path)


def _flattened(dump: Dump, tid: int, base: int = 0) -> Iterator[tuple[str, int, int]]:
    """(name, bit offset, bitfield size) of every member reachable by name: bpftool's members,
    and those of anonymous struct/union members, recursively."""
    for name, mtype, bits, width in dump.composites[tid][1]:
        if name:
            yield name, base + bits, width
        elif mtype in dump.composites:
            yield from _flattened(dump, mtype, base + bits)


@pytest.mark.real_kernel
def test_every_type_has_bpftools_kind_and_name(real: RealBTF) -> None:
    btf, dump = real.btf, real.dump
    assert len(btf) == len(dump.kinds) - 1
    for tid in range(1, len(dump.kinds)):
        record = btf.type(tid)
        assert (record.kind, record.name) == dump.kinds[tid], tid


@pytest.mark.real_kernel
@pytest.mark.parametrize("kind", ["STRUCT", "UNION"])
def test_layouts_match_bpftool(real: RealBTF, kind: str) -> None:
    btf, dump = real.btf, real.dump
    ids = [t for t in dump.composites if dump.kinds[t][0] == kind]
    rng = random.Random(f"{real.source}-{kind}")
    chosen = ids if len(ids) <= SAMPLE else rng.sample(ids, SAMPLE)
    checked = bitfields = nested = 0
    for tid in chosen:
        size, members = dump.composites[tid]
        assert btf.sizeof(tid) == size, tid
        got = [(m.name, m.type_id, m.bit_offset, m.bitfield_size) for m in btf.type(tid).members]
        assert got == members, tid
        direct = {name for name, *_ in members}
        for name, bits, width in _flattened(dump, tid):
            nested += name not in direct
            if width:
                found = btf.member(tid, name)
                assert (found.bit_offset, found.bitfield_size) == (bits, width), (tid, name)
                bitfields += 1
            elif bits % 8 == 0:
                assert btf.offsetof(tid, name) == bits // 8, (tid, name)
            checked += 1
        for name, mtype, bits, width in members:
            # Our sizeof of each member's type must fit it inside bpftool's struct size.
            if not width:
                assert bits // 8 + btf.sizeof(mtype) <= size, (tid, name)
    assert checked > 0 and len(chosen) == min(len(ids), SAMPLE)
    if kind == "STRUCT" and real.source != "tinyconfig":
        assert bitfields > 0 and nested > 0  # the sample reached both


@pytest.mark.real_kernel
def test_several_structs_of_one_name_match_bpftool(real: RealBTF) -> None:
    by_name: dict[str, list[int]] = {}
    for tid, (kind, name) in enumerate(real.dump.kinds):
        if kind == "STRUCT" and name:
            by_name.setdefault(name, []).append(tid)
    several = {name: ids for name, ids in by_name.items() if len(ids) > 1}
    for name, ids in several.items():
        ranked = sorted(ids, key=lambda t: (-real.dump.composites[t][0], t))
        found = real.btf.types(f"struct {name}")
        assert [t.id for t in found if t.kind == "STRUCT"] == ranked, name
        assert real.btf.type(f"struct {name}").id == ranked[0], name
    if real.source == "debian":
        assert len(several) >= 5  # Debian 6.1 has ten, chksum_desc_ctx and irq_info among them


@pytest.mark.real_kernel
def test_enumerators_match_bpftool(real: RealBTF) -> None:
    unique = sorted(n for n, values in real.dump.enumerators.items() if len(values) == 1)
    chosen = random.Random(real.source).sample(unique, min(len(unique), SAMPLE))
    for name in chosen:
        assert real.btf.enum_value(name) == next(iter(real.dump.enumerators[name])), name


@pytest.mark.real_kernel
def test_debian_kernel_facts(debian_kernel: DebianKernel) -> None:
    btf = BTF.from_path(debian_kernel.vmlinux)
    rq = btf.type("struct rq")
    names = {m.name for m in rq.members}
    assert {"nr_running", "clock", "cfs"} <= names
    assert btf.member("struct rq", "clock").type_name == "u64"
    assert btf.sizeof("struct rq") == rq.size
    assert 0 < btf.offsetof("struct rq", "nr_running") < btf.offsetof("struct rq", "clock")
    assert btf.offsetof("struct rq", "cfs.nr_running") == btf.offsetof(
        "struct rq", "cfs"
    ) + btf.offsetof("struct cfs_rq", "nr_running")
    assert btf.type("task_struct").kind == "STRUCT"
    assert btf.member("struct task_struct", "comm").type_name == "char[16]"
    comm = btf.offsetof("struct task_struct", "comm")
    assert btf.offsetof("struct task_struct", "comm[3]") == comm + 3
    assert btf.offsetof("struct task_struct", "se.vruntime") == btf.offsetof(
        "struct task_struct", "se"
    ) + btf.offsetof("struct sched_entity", "vruntime")
    # struct page's lru lives in an anonymous struct inside an anonymous union.
    assert "lru" not in {m.name for m in btf.type("struct page").members}
    assert btf.offsetof("struct page", "lru") == 8
    assert btf.enum_value("TASK_COMM_LEN") == 16
    assert btf.enum_value("BPF_MAP_TYPE_HASH") == 1
    assert btf.pointer_size == 8
    assert btf.sizeof("struct list_head") == 2 * btf.pointer_size
    # C's own types: (bits, signed, bool), through typedef chains.
    assert btf.int_encoding("u64") == (64, False, False)
    assert btf.int_encoding("int") == (32, True, False)
    assert btf.int_encoding("bool") == (8, False, True)
    with pytest.raises(BTFKeyError, match="struct rq is not an integer type"):
        btf.int_encoding("struct rq")
    # Version-tolerant lookups: sched_ext (6.12) is not in 6.1; rq.nr_running is.
    assert not btf.has_member("struct rq", "scx.nr_running")
    assert btf.has_member("struct rq", "cfs.nr_running")
    found = btf.member_any("struct rq", ["scx.nr_running", "nr_running"])
    assert (found.name, found.bit_offset) == (
        "nr_running",
        btf.member("struct rq", "nr_running").bit_offset,
    )
    # CO-RE flavors: "___suffix" on a part matches its base name.
    assert btf.has_member("struct rq", "cfs___v61.nr_running___x")
    assert btf.member_any("struct rq", ["scx___new.nr_running", "nr_running___old"]) == found
    with pytest.raises(BTFKeyError, match=r"none of the members scx\.nr_running, scx_nr"):
        btf.member_any("struct rq", ["scx.nr_running", "scx_nr"])


# --- fuzzing --------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SPECS: list[str | int] = ["struct outer", "point", "u64", "enum colour", "func do_thing", "x"]


def exercise(btf: BTF) -> None:
    """Every query, on every type: only KernelArtifactError and KeyError may come out."""
    calls: list[Callable[[], object]] = [
        lambda: btf.offsetof("struct outer", "points[2].y"),
        lambda: btf.member("outer", "a.x[1]"),
        lambda: btf.offsetof(1, "[0].a"),
        lambda: btf.offsetof("struct outer", "hi"),
        lambda: btf.member("struct outer", "fl.b"),
        lambda: btf.enum_value("GREEN"),
        lambda: btf.enum_value("HUGE"),
        lambda: btf.pointer_size,
    ]
    for spec in [*SPECS, *range(min(len(btf), 64) + 2)]:
        calls += [
            functools.partial(btf.type, spec),
            functools.partial(btf.sizeof, spec),
            functools.partial(btf.offsetof, spec, "x"),
            functools.partial(_members_and_enumerators, btf, spec),
        ]
        if isinstance(spec, int):
            calls.append(functools.partial(btf.type_name, spec))
    for call in calls:
        with contextlib.suppress(KernelArtifactError, KeyError):
            call()


def _members_and_enumerators(btf: BTF, spec: str | int) -> object:
    record = btf.type(spec)
    return record.members, record.enumerators


def _fuzz_parse(blob: bytes) -> None:
    try:
        btf = parse(blob, "fuzz")
    except KernelArtifactError as e:
        assert str(e).startswith("fuzz: ")
        return
    exercise(btf)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=256),
        st.tuples(st.sampled_from([b"\x9f\xeb\x01\x00", b"\xeb\x9f\x01\x00"]), st.binary()).map(
            b"".join
        ),
    )
)
def test_fuzz_arbitrary_bytes(blob: bytes) -> None:
    _fuzz_parse(blob)


@FUZZ
@given(
    base=st.sampled_from([sample("<").blob, sample(">").blob]),
    edits=st.lists(
        st.tuples(st.integers(0, len(LE.blob) - 1), st.integers(0, 0xFFFFFFFF), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    cut=st.one_of(st.just(0), st.integers(1, 8)),
)
def test_fuzz_mutated_valid_blobs(
    base: bytes, edits: list[tuple[int, int, bool]], cut: int
) -> None:
    blob = bytearray(base)
    for at, value, whole_word in edits:
        if whole_word:  # a u32 field: kinds, vlens, ids, offsets
            at -= at % 4
            blob[at : at + 4] = value.to_bytes(4, "little")[: len(blob) - at]
        else:
            blob[at] = value & 0xFF
    _fuzz_parse(bytes(blob[: len(blob) - cut]))


NAMES = st.sampled_from(["", "x", "a", "outer", "point", "u64", "GREEN", "HUGE", "colour"])


@st.composite
def generated_blobs(draw: st.DrawFn) -> bytes:
    """Well-formed BTF of random types of every kind, with random (maybe dangling, maybe
    looping) references and random names from a few that exercise() asks for."""
    b = Builder(draw(st.sampled_from("<>")))
    n = draw(st.integers(1, 12))
    ref = st.integers(0, n + 1)
    word = st.integers(0, 0xFFFFFFFF)
    for _ in range(n):
        kind, name = draw(st.integers(1, 19)), draw(NAMES)
        if kind == INT:
            size = draw(st.sampled_from([1, 2, 4, 8, 16]))
            b.int_(name, size, bits=draw(st.integers(0, 128)), shift=draw(st.integers(0, 9)))
        elif kind == ARRAY:
            b.array(draw(ref), draw(st.integers(0, 5)), draw(ref))
        elif kind in (STRUCT, UNION):
            rows = draw(st.lists(st.tuples(NAMES, ref, st.integers(0, 300)), max_size=4))
            if draw(st.booleans()):
                members = [(*row, draw(st.integers(0, 9))) for row in rows]
                b.struct(name, draw(st.integers(0, 64)), list(members), kind=kind)
            else:
                b.struct(name, draw(st.integers(0, 64)), list(rows), kind=kind)
        elif kind in (ENUM, ENUM64):
            values = draw(st.dictionaries(NAMES.filter(bool), word, max_size=3))
            signed = draw(st.booleans())
            (b.enum if kind == ENUM else b.enum64)(name, values, signed=signed)
        elif kind == FUNC_PROTO:
            b.func_proto(draw(ref), draw(st.lists(st.tuples(NAMES, ref), max_size=3)))
        elif kind == DATASEC:
            b.datasec(name, draw(word), draw(st.lists(st.tuples(ref, word, word), max_size=2)))
        elif kind in (VAR, DECL_TAG):
            b.add(kind, name, st=draw(ref), extra=b.u32(draw(word)))
        else:
            b.add(kind, name, st=draw(ref), kflag=draw(st.integers(0, 1)), vlen=draw(ref))
    return b.blob()


@FUZZ
@given(
    blob=generated_blobs(),
    edits=st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 255)), max_size=3),
)
def test_fuzz_generated_blobs(blob: bytes, edits: list[tuple[int, int]]) -> None:
    mutated = bytearray(blob)
    for at, value in edits:
        mutated[at % len(mutated)] = value
    _fuzz_parse(bytes(mutated))

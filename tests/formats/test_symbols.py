"""KernelSymbols against oracles the project did not write: binutils' nm on real kernels, on
objects binutils' as writes, and on ELFs built here in the classes and byte orders binutils cannot
produce on this host (objcopy refuses to change endianness); /proc/kallsyms; and fuzzing."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.symbols import KIND, VERSION, KernelSymbols, Symbol
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.fakes import banner_for, build_id_for, kernel_elf
from tests.helpers.fuzz import mutations
from tests.helpers.kernels import DebianKernel
from tests.helpers.symtab import (
    PERCPU,
    SAMPLE,
    SH_ENTSIZE,
    SH_LINK,
    SH_OFFSET,
    SH_SIZE,
    STT_OBJECT,
    SYMTAB,
    TEXT_ADDR,
    Sym,
    build_elf,
    damaged,
    narrow,
    section_header_at,
    write,
)

ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def nm(path: Path, *args: str) -> list[tuple[int, str, str]]:
    """(address, type letter, name) of every defined symbol, as binutils' nm reports them."""
    out = subprocess.run(
        ["nm", "--defined-only", *args, str(path)], capture_output=True, text=True, check=True
    ).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        rows.append((int(fields[0], 16), fields[-2], fields[-1]))
    return rows


def nm_sized(path: Path) -> list[tuple[int, int, str, str]]:
    """(address, size, letter, name) of the defined symbols nm -S gives a size."""
    out = subprocess.run(
        ["nm", "--defined-only", "-S", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [
        (int(f[0], 16), int(f[1], 16), f[2], f[3])
        for f in (line.split() for line in out.splitlines())
        if len(f) == 4
    ]


def by_name(rows: list[tuple[int, str, str]]) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for address, letter, name in rows:
        found[name].append((address, letter))
    return found


def binding_for(letter: str) -> str | None:
    """The ELF binding an nm letter implies; None for "?" (nm could not classify the section)."""
    if letter == "?":
        return None
    if letter in "WwVv":
        return "STB_WEAK"
    if letter == "u":
        return "STB_GNU_UNIQUE"
    return "STB_GLOBAL" if letter.isupper() else "STB_LOCAL"


# --- the hand-built ELFs: every class and byte order, checked against nm and by construction ----


@pytest.mark.parametrize(("elfclass", "little"), [(64, True), (64, False), (32, True), (32, False)])
def test_every_class_and_byte_order(tmp_path: Path, elfclass: int, little: bool) -> None:
    symbols = SAMPLE if elfclass == 64 else narrow(SAMPLE)
    path = write(tmp_path, build_elf(symbols, elfclass=elfclass, little=little))
    ksyms = KernelSymbols.from_vmlinux(path)
    kept = [s for s in symbols if s.shndx != 0]
    assert len(ksyms) == len(kept)
    assert sorted(ksyms) == sorted(s.name for s in kept)
    for s in kept:
        assert s in [Sym(x.name, x.value, x.size, *_codes(x), x.shndx) for x in ksyms.all(s.name)]
    # nm reads what we wrote the same way (an oracle for the builder as much as for the reader)
    assert sorted((a, n) for a, _, n in nm(path)) == sorted((s.value, s.name) for s in kept)
    assert "undefined_ref" not in ksyms and "fake.c" not in ksyms and "" not in ksyms
    start = ksyms.symbol("start_kernel")
    assert start.type == "STT_FUNC" and start.binding == "STB_GLOBAL" and start.section == ".text"
    assert ksyms.lookup(start.value + 5) == ("start_kernel", 5)
    assert ksyms.symbol("abs_marker").section is None
    assert ksyms.symbol("weak_thing").binding == "STB_WEAK"


ASSEMBLY = """
    .text
    .globl entry
    .type entry, @function
entry:
    nop
    nop
    ret
    .size entry, . - entry
    .type helper, @function
helper:
    ret
    .size helper, . - helper
    .data
    .globl counter
    .type counter, @object
counter:
    .long 0
    .size counter, 4
    .weak maybe
maybe:
    .long 0
    .long undefined_elsewhere
"""


@pytest.mark.parametrize("width", ["--32", "--64"])
def test_objects_binutils_assembled(tmp_path: Path, width: str) -> None:
    if shutil.which("as") is None:
        pytest.skip("binutils' as is not installed")
    source, obj = tmp_path / "x.s", tmp_path / "x.o"
    source.write_text(ASSEMBLY)
    subprocess.run(["as", width, "-o", str(obj), str(source)], check=True)
    ksyms = KernelSymbols.from_vmlinux(obj)
    rows = nm(obj)
    assert (
        sorted(ksyms)
        == sorted(name for *_, name in rows)
        == ["counter", "entry", "helper", "maybe"]
    )
    for address, letter, name in rows:
        assert ksyms[name] == address and ksyms.symbol(name).binding == binding_for(letter)
    assert ksyms.symbol("entry").size == 3 and ksyms.symbol("entry").section == ".text"
    assert "undefined_elsewhere" not in ksyms  # (in an object every section starts at 0, so
    # addresses overlap and lookup(addr) means nothing: it is for linked images)


def _codes(symbol: Symbol) -> tuple[int, int]:
    types = {"STT_NOTYPE": 0, "STT_OBJECT": 1, "STT_FUNC": 2}
    binds = {"STB_LOCAL": 0, "STB_GLOBAL": 1, "STB_WEAK": 2}
    return types[symbol.type], binds[symbol.binding]


def test_names_addresses_and_missing(tmp_path: Path) -> None:
    ksyms = KernelSymbols.from_vmlinux(write(tmp_path, build_elf(SAMPLE)))
    assert ksyms["start_kernel"] == TEXT_ADDR + 0x10
    assert ksyms.get("start_kernel") == TEXT_ADDR + 0x10
    assert ksyms.get("nope") is None and ksyms.get("nope", 7) == 7
    assert "start_kernel" in ksyms and "start_kerne" not in ksyms and 42 not in ksyms
    assert "\udcff\ud800" not in ksyms  # not encodable: simply absent
    assert list(ksyms) == sorted(ksyms, key=str.encode)
    with pytest.raises(KeyError, match="did you mean start_kernel"):
        ksyms["start_kernal"]
    with pytest.raises(KeyError, match="did you mean start_kernel"):
        ksyms["xstart_kernel"]  # a typo at the front: found through the name's second half
    with pytest.raises(KeyError, match="no symbol 'zzz'"):
        ksyms.symbol("zzz")
    with pytest.raises(KeyError):
        ksyms.is_percpu("zzz")
    assert ksyms.all("zzz") == []
    assert "symbols" in repr(ksyms)


def test_duplicates(tmp_path: Path) -> None:
    ksyms = KernelSymbols.from_vmlinux(write(tmp_path, build_elf(SAMPLE)))
    assert [s.value for s in ksyms.all("helper")] == [TEXT_ADDR + 0x30, TEXT_ADDR + 0x40]
    with pytest.raises(KeyError, match=r"ambiguous.*\.all\('helper'\)"):
        ksyms["helper"]
    with pytest.raises(KeyError, match="ambiguous"):
        ksyms.get("helper")  # present but ambiguous: not silently the default
    assert "helper" in ksyms
    assert [v for n, v in ksyms.items() if n == "helper"] == [TEXT_ADDR + 0x30, TEXT_ADDR + 0x40]
    assert [n for n, _ in ksyms.items()] == list(ksyms)
    assert ksyms["dup_one_global"] == TEXT_ADDR + 0x58  # the one global wins
    assert ksyms.symbol("dup_one_global").binding == "STB_GLOBAL"


def test_lookup_by_address(tmp_path: Path) -> None:
    ksyms = KernelSymbols.from_vmlinux(write(tmp_path, build_elf(SAMPLE)))
    assert ksyms.lookup(TEXT_ADDR + 0x10) == ("start_kernel", 0)
    assert ksyms.lookup(TEXT_ADDR + 0x2F) == ("start_kernel", 0x1F)
    assert ksyms.lookup(TEXT_ADDR + 0x30) == ("helper", 0)
    assert ksyms.lookup(TEXT_ADDR + 0x68) is None  # only an unsized label there
    assert ksyms.lookup(TEXT_ADDR) is None  # before every sized symbol
    assert ksyms.lookup(TEXT_ADDR + 0x88) is None  # just past the last one
    assert ksyms.lookup(0x1010) == ("runqueues", 0x10)
    assert ksyms.lookup(-1) is None and ksyms.lookup(1 << 70) is None


def test_percpu_and_relocation(tmp_path: Path) -> None:
    ksyms = KernelSymbols.from_vmlinux(write(tmp_path, build_elf(SAMPLE)))
    assert ksyms.is_percpu("runqueues") and ksyms.symbol("runqueues").percpu
    assert not ksyms.is_percpu("jiffies_64") and not ksyms.symbol("jiffies_64").percpu
    assert ksyms.symbol("runqueues").section == ".data..percpu"
    slide = 0x2A00000
    moved = ksyms.relocated(slide)
    assert moved.kaslr_offset == slide and ksyms.kaslr_offset == 0
    assert moved["start_kernel"] == ksyms["start_kernel"] + slide
    assert moved.symbol("jiffies_64").value == ksyms["jiffies_64"] + slide
    assert [s.value for s in moved.all("helper")] == [
        TEXT_ADDR + 0x30 + slide,
        TEXT_ADDR + 0x40 + slide,
    ]
    assert moved.lookup(ksyms["start_kernel"] + slide + 3) == ("start_kernel", 3)
    assert moved.lookup(ksyms["start_kernel"] + 3) is None
    # zero-based per-CPU symbols are offsets into each CPU's area: KASLR does not move them
    assert moved["runqueues"] == 0x1000 and moved.lookup(0x1008) == ("runqueues", 8)
    assert moved["abs_marker"] == 0x1234  # an SHN_ABS constant is no address
    twice = moved.relocated(-slide)
    assert twice["start_kernel"] == ksyms["start_kernel"] and twice.kaslr_offset == 0
    # where .data..percpu has a real address (arm64), per-CPU symbols slide like the rest
    based = [Sym("runqueues", TEXT_ADDR + 0x1000, 0x40, STT_OBJECT, shndx=PERCPU)]
    path = write(tmp_path, build_elf(based, percpu_addr=TEXT_ADDR + 0x1000), "based")
    arm = KernelSymbols.from_vmlinux(path).relocated(slide)
    assert arm.is_percpu("runqueues") and arm["runqueues"] == TEXT_ADDR + 0x1000 + slide


# --- errors: no .symtab, damaged tables -----------------------------------------------------------


def test_no_symtab_says_which_packages(tmp_path: Path) -> None:
    path = write(tmp_path, kernel_elf(build_id_for("x"), banner_for("6.1.0-x"), symtab=False))
    with pytest.raises(KernelArtifactError) as info:
        KernelSymbols.from_vmlinux(path)
    message = str(info.value)
    assert str(path) in message and "no .symtab" in message
    for hint in ("-dbg", "-dbgsym", "kernel-debuginfo", "CONFIG_DEBUG_INFO"):
        assert hint in message


def test_an_empty_symtab_is_no_error(tmp_path: Path) -> None:
    path = write(tmp_path, kernel_elf(build_id_for("x"), banner_for("6.1.0-x")))
    ksyms = KernelSymbols.from_vmlinux(path)
    assert len(ksyms) == 0 and list(ksyms) == [] and ksyms.lookup(0) is None


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (SH_OFFSET, 0xFFFFFF00, "sh_offset .* runs past the end of the file"),
        (SH_SIZE, 0xFFFFFFF0, "sh_size .* runs past the end of the file"),
        (SH_ENTSIZE, 23, "sh_entsize 23"),
        (SH_ENTSIZE, 0, None),
        (SH_LINK, 1, "no string table"),
        (SH_LINK, 999, "no string table"),
        (SH_LINK, 3, "no string table"),
    ],
)
@pytest.mark.parametrize(("elfclass", "little"), [(64, True), (32, False)])
def test_damaged_symtab(
    tmp_path: Path,
    field: tuple[int, int],
    value: int,
    words: str | None,
    elfclass: int,
    little: bool,
) -> None:
    symbols = SAMPLE if elfclass == 64 else narrow(SAMPLE)
    elf = build_elf(symbols, elfclass=elfclass, little=little)
    path = write(tmp_path, damaged(elf, field, value))
    with pytest.raises(KernelArtifactError, match=words) as info:
        KernelSymbols.from_vmlinux(path)
    assert str(path) in str(info.value)


def test_name_offsets_past_the_string_table(tmp_path: Path) -> None:
    elf = bytearray(build_elf(SAMPLE))
    at, o, _ = section_header_at(bytes(elf), SYMTAB)
    table = struct.unpack_from(f"{o}Q", elf, at + 0x18)[0]
    struct.pack_into(f"{o}I", elf, table + 4 * 24, 0xFFFFFF)  # the first real symbol's st_name
    path = write(tmp_path, bytes(elf))
    with pytest.raises(KernelArtifactError, match="string table") as info:
        KernelSymbols.from_vmlinux(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x7fELF", b"not an elf at all" * 10])
def test_not_an_elf(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, content)
    with pytest.raises(KernelArtifactError, match=re.escape(str(path))):
        KernelSymbols.from_vmlinux(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KernelArtifactError, match="does not exist"):
        KernelSymbols.from_vmlinux(tmp_path / "nope")


def test_packed_garbage_is_refused() -> None:
    for payload in (b"", b"KSYMS", bytes(200)):
        with pytest.raises(KernelArtifactError, match="damaged"):
            KernelSymbols(payload, "test")


# --- the store: built once, mapped everywhere else ----------------------------------------------


def test_store_builds_once_and_reuses(tmp_path: Path) -> None:
    path = write(tmp_path, build_elf(SAMPLE))
    store = ArtifactStore(tmp_path / "store")
    first = KernelSymbols.from_vmlinux(path, store)
    second = KernelSymbols.from_vmlinux(path, store)
    assert (store.stats.built, store.stats.reused) == (1, 1)
    other = ArtifactStore(tmp_path / "store")  # as another worker would open it
    third = KernelSymbols.from_vmlinux(path, other)
    assert (other.stats.built, other.stats.reused) == (0, 1)
    for ksyms in (second, third):
        assert list(ksyms) == list(first)
        assert [ksyms.all(n) for n in ksyms] == [first.all(n) for n in first]
        assert ksyms.lookup(TEXT_ADDR + 0x31) == first.lookup(TEXT_ADDR + 0x31)


def test_memory_store_reuses() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), build_elf(SAMPLE))
        store = MemoryStore()
        KernelSymbols.from_vmlinux(path, store)
        again = KernelSymbols.from_vmlinux(path, store)
        assert (store.stats.built, store.stats.reused) == (1, 1)
        assert again["start_kernel"] == TEXT_ADDR + 0x10


CHILD = """
import json, sys
from pytest_ktstr_vmlinux.formats import symbolpack, symbols
from pytest_ktstr_vmlinux.store.disk import ArtifactStore

def no_parse(*args):
    raise SystemExit("the warm load parsed the ELF")

symbolpack._columns = no_parse  # a warm load must map the artifact, never read the ELF
store = ArtifactStore(sys.argv[1])
ksyms = symbols.KernelSymbols.from_vmlinux(sys.argv[2], store)
print(json.dumps({
    "built": store.stats.built, "reused": store.stats.reused, "start": ksyms["start_kernel"],
    "lookup": ksyms.lookup(ksyms["start_kernel"] + 4), "count": len(ksyms),
}))
"""


def test_warm_load_in_a_fresh_process_builds_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, build_elf(SAMPLE))
    store_dir = tmp_path / "store"
    KernelSymbols.from_vmlinux(path, ArtifactStore(store_dir))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(store_dir), str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    ).stdout
    child = json.loads(out)
    assert (child["built"], child["reused"]) == (0, 1)
    assert child["start"] == TEXT_ADDR + 0x10 and child["lookup"] == ["start_kernel", 4]
    assert child["count"] == len([s for s in SAMPLE if s.shndx])


# --- kallsyms ------------------------------------------------------------------------------------

KALLSYMS = """\
ffffffff81000000 T _text
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000180 t helper
ffffffff81000200 W weak_func
ffffffff82000000 D jiffies_64
ffffffff82000040 d static_data
ffffffff82000080 B bss_thing
ffffffff82000100 R rodata_thing
ffffffffc0001000 t ext4_fill_super\t[ext4]
"""


def test_kallsyms_synthetic(tmp_path: Path) -> None:
    ksyms = KernelSymbols.from_kallsyms(write(tmp_path, KALLSYMS.encode(), "kallsyms"))
    assert len(ksyms) == 9 and "ext4_fill_super" not in ksyms  # module symbols skipped
    assert ksyms["_stext"] == 0xFFFFFFFF81000000 == ksyms["_text"]
    text = ksyms.symbol("_text")
    assert (text.type, text.binding, text.size, text.percpu) == (
        "STT_FUNC",
        "STB_GLOBAL",
        0x100,
        False,
    )
    assert text.section is None
    assert ksyms.symbol("weak_func").binding == "STB_WEAK"
    assert ksyms.symbol("jiffies_64").type == "STT_OBJECT"
    assert [s.value for s in ksyms.all("helper")] == [0xFFFFFFFF81000100, 0xFFFFFFFF81000180]
    assert all(s.binding == "STB_LOCAL" for s in ksyms.all("helper"))
    assert ksyms.lookup(0xFFFFFFFF81000185) == ("helper", 5)
    assert ksyms.lookup(0xFFFFFFFF81000010) in (("_text", 0x10), ("_stext", 0x10))
    assert ksyms.lookup(0xFFFFFFFF82000110) is None  # the last symbol has no known end
    assert not ksyms.is_percpu("jiffies_64")
    assert ksyms.relocated(0x1000)["jiffies_64"] == 0xFFFFFFFF82001000


def test_kallsyms_without_kallsyms_all_is_functions_only(tmp_path: Path) -> None:
    full = KernelSymbols.from_kallsyms(write(tmp_path, KALLSYMS.encode(), "full"))
    assert not full.functions_only
    text_only = "".join(line + "\n" for line in KALLSYMS.splitlines() if " T " in line)
    ksyms = KernelSymbols.from_kallsyms(write(tmp_path, text_only.encode(), "text"))
    assert ksyms.functions_only
    with pytest.raises(KeyError, match="CONFIG_KALLSYMS_ALL") as info:
        ksyms["runqueues"]
    assert "debug vmlinux" in str(info.value)
    with pytest.raises(KeyError) as info:
        full["runqueues"]
    assert "KALLSYMS_ALL" not in str(info.value)


def test_kallsyms_hidden_addresses(tmp_path: Path) -> None:
    hidden = "".join(f"0000000000000000 {line[17:]}\n" for line in KALLSYMS.splitlines())
    path = write(tmp_path, hidden.encode(), "kallsyms")
    with pytest.raises(KernelArtifactError, match="kptr_restrict") as info:
        KernelSymbols.from_kallsyms(path)
    assert "root" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "bad", ["zzzz T name", "ffff T", "ffff T a b c", f"{1 << 64:x} T huge", "-1 T neg"]
)
def test_kallsyms_malformed(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, (KALLSYMS + bad + "\n").encode(), "kallsyms")
    with pytest.raises(KernelArtifactError, match=r"kallsyms:11: not a kallsyms line"):
        KernelSymbols.from_kallsyms(path)


def test_kallsyms_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(KernelArtifactError, match="does not exist"):
        KernelSymbols.from_kallsyms(tmp_path / "nope")
    with pytest.raises(KernelArtifactError, match="no symbols"):
        KernelSymbols.from_kallsyms(write(tmp_path, b"", "kallsyms"))


def test_kallsyms_of_this_machine() -> None:
    try:
        lines = Path("/proc/kallsyms").read_text().splitlines()
    except OSError as e:
        pytest.skip(f"/proc/kallsyms unreadable: {e}")
    core = [line.split() for line in lines if len(line.split()) == 3]
    if not any(int(fields[0], 16) for fields in core):
        with pytest.raises(KernelArtifactError, match="kptr_restrict"):
            KernelSymbols.from_kallsyms()
        return
    ksyms = KernelSymbols.from_kallsyms()
    assert len(ksyms) == len(core)
    assert ksyms.functions_only == all(fields[2] != "jiffies_64" for fields in core)
    counts: dict[str, list[int]] = defaultdict(list)
    for address, _, name in core:
        counts[name].append(int(address, 16))
    unique = [name for name, found in counts.items() if len(found) == 1]
    for name in random.Random(0).sample(unique, min(500, len(unique))):
        assert ksyms[name] == counts[name][0], name


# --- real kernels: nm is the oracle -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tinyconfig_tree: Path) -> tuple[Path, KernelSymbols]:
    path = tinyconfig_tree / "vmlinux"
    return path, KernelSymbols.from_vmlinux(path)


@pytest.mark.real_kernel
def test_tinyconfig_agrees_with_nm(tiny: tuple[Path, KernelSymbols]) -> None:
    path, ksyms = tiny
    rows = nm(path)
    assert len(ksyms) == len(rows)
    found = by_name(rows)
    assert sorted(ksyms) == sorted(name for _, _, name in rows)
    unique = {name: entries[0] for name, entries in found.items() if len(entries) == 1}
    assert len(unique) > 10000
    for name, (address, letter) in unique.items():
        assert ksyms[name] == address, name
        assert binding_for(letter) in (ksyms.symbol(name).binding, None), name
    sizes = {name: size for _, size, _, name in nm_sized(path) if name in unique}
    assert len(sizes) > 5000
    for name, size in sizes.items():
        assert ksyms.symbol(name).size == size, name


@pytest.mark.real_kernel
def test_tinyconfig_duplicates_agree_with_nm(tiny: tuple[Path, KernelSymbols]) -> None:
    path, ksyms = tiny
    duplicated = {n: e for n, e in by_name(nm(path)).items() if len(e) > 1}
    assert duplicated  # static functions of the same name in several files
    one_global = 0
    for name, entries in duplicated.items():
        assert sorted(s.value for s in ksyms.all(name)) == sorted(a for a, _ in entries), name
        globals_ = [a for a, letter in entries if binding_for(letter) == "STB_GLOBAL"]
        if len(globals_) == 1:
            assert ksyms[name] == globals_[0]
            one_global += 1
        elif len({a for a, _ in entries}) > 1:
            with pytest.raises(KeyError, match="ambiguous"):
                ksyms[name]
    assert len(duplicated) - one_global > 0


@pytest.mark.real_kernel
def test_tinyconfig_lookup_agrees_with_nm(tiny: tuple[Path, KernelSymbols]) -> None:
    path, ksyms = tiny
    sized = sorted((a, s, letter, n) for a, s, letter, n in nm_sized(path) if s)
    starts = [a for a, *_ in sized]
    aliases = Counter(starts)
    # functions no other sized symbol shares or starts inside: lookup must name them exactly
    alone = [
        (a, s, n)
        for a, s, letter, n in sized
        if letter in "Tt"
        and aliases[a] == 1
        and bisect_right(starts, a) == bisect_left(starts, a + s)
    ]
    for address, size, name in random.Random(1).sample(alone, 300):
        assert ksyms.lookup(address) == (name, 0)
        assert ksyms.lookup(address + size // 2) == (name, size // 2)
        assert ksyms.lookup(address + size - 1) == (name, size - 1)
    # the end of a symbol that no sized symbol covers: nothing contains it
    reach = list(itertools.accumulate((a + s for a, s, *_ in sized), max))
    gaps = [a + s for a, s, *_ in sized if reach[bisect_right(starts, a + s) - 1] <= a + s]
    assert len(gaps) > 10
    for end in gaps:
        assert ksyms.lookup(end) is None, hex(end)


@pytest.mark.real_kernel
def test_tinyconfig_relocated(tiny: tuple[Path, KernelSymbols]) -> None:
    _, ksyms = tiny
    slide = 0x1E00000
    moved = ksyms.relocated(slide)
    assert dict(moved.items())["start_kernel"] == ksyms["start_kernel"] + slide
    for name in ("start_kernel", "jiffies_64", "schedule"):
        assert moved[name] == ksyms[name] + slide
        assert moved.lookup(moved[name] + 1) == ksyms.lookup(ksyms[name] + 1) == (name, 1)


@pytest.mark.real_kernel
def test_tinyconfig_stripped_copy(tiny: tuple[Path, KernelSymbols], tmp_path: Path) -> None:
    path, _ = tiny
    stripped = tmp_path / "vmlinux"
    subprocess.run(["objcopy", "--strip-all", str(path), str(stripped)], check=True)
    with pytest.raises(KernelArtifactError, match=r"no \.symtab.*-dbg"):
        KernelSymbols.from_vmlinux(stripped)


@pytest.mark.real_kernel
def test_tinyconfig_damaged_copy(tiny: tuple[Path, KernelSymbols], tmp_path: Path) -> None:
    path, _ = tiny
    size = path.stat().st_size
    copy = write(tmp_path, damaged(path.read_bytes(), SH_SIZE, size - size % 24))
    with pytest.raises(KernelArtifactError, match="past the end of the file") as info:
        KernelSymbols.from_vmlinux(copy)
    assert str(copy) in str(info.value)


@pytest.mark.real_kernel
def test_debian_spot_check(debian_kernel: DebianKernel) -> None:
    names = ("runqueues", "__per_cpu_offset", "jiffies_64", "kernel_cpustat")
    expected = {n: a for a, _, n in nm(debian_kernel.vmlinux) if n in names}
    assert sorted(expected) == sorted(names)
    ksyms = KernelSymbols.from_vmlinux(debian_kernel.vmlinux)
    assert len(ksyms) > 100_000
    for name in names:
        assert ksyms[name] == expected[name], name
    assert ksyms.is_percpu("runqueues") and ksyms.is_percpu("kernel_cpustat")
    assert not ksyms.is_percpu("__per_cpu_offset") and not ksyms.is_percpu("jiffies_64")
    assert ksyms.symbol("runqueues").section == ".data..percpu"
    moved = ksyms.relocated(0x3C00000)
    assert moved["runqueues"] == expected["runqueues"]  # zero-based per-CPU offset
    assert moved["jiffies_64"] == expected["jiffies_64"] + 0x3C00000
    assert moved["phys_startup_64"] == ksyms["phys_startup_64"]  # SHN_ABS: a constant
    with pytest.raises(KeyError, match="did you mean runqueues"):
        ksyms["runqeues"]


# --- fuzzing: only KernelArtifactError escapes --------------------------------------------------


def _seed_payload() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), build_elf(SAMPLE))
        store = MemoryStore()
        KernelSymbols.from_vmlinux(path, store)
        return store.get_or_build(path, KIND, VERSION, _never).read_bytes()


def _never(path: Path, out: object) -> None:
    raise AssertionError("built twice")


SEED_PAYLOAD = _seed_payload()
SEED_ELFS = [
    build_elf(SAMPLE),
    build_elf(SAMPLE, little=False),
    build_elf(narrow(SAMPLE), elfclass=32),
    build_elf(narrow(SAMPLE), elfclass=32, little=False),
]


def _exercise(ksyms: KernelSymbols) -> None:
    """Everything a caller may do; KeyError is the API's answer for absent or ambiguous names."""
    names = list(ksyms)[:50]
    for name in [*names, "start_kernel", "runqueues", "nope"]:
        with contextlib.suppress(KeyError):
            ksyms.get(name)
        try:
            ksyms.symbol(name)
            ksyms.is_percpu(name)
        except KeyError:
            pass
        ksyms.all(name)
        _ = name in ksyms
    for address in (0, 0x1010, TEXT_ADDR + 0x10, TEXT_ADDR + 0x45, 1 << 64, -5):
        ksyms.lookup(address)
        ksyms.relocated(0x1000).lookup(address)
    len(ksyms)
    list(itertools.islice(ksyms.items(), 50))


@FUZZ
@given(payload=mutations(SEED_PAYLOAD))
def test_fuzz_packed_reader(payload: bytes) -> None:
    with contextlib.suppress(KernelArtifactError):
        _exercise(KernelSymbols(payload, "fuzz"))


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_elfs(data: st.DataObject) -> None:
    elf = data.draw(mutations(data.draw(st.sampled_from(SEED_ELFS))))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), elf)
        try:
            ksyms = KernelSymbols.from_vmlinux(path)
        except KernelArtifactError as e:
            assert str(path) in str(e)
            return
        _exercise(ksyms)


def test_fuzz_seeds_are_valid() -> None:
    _exercise(KernelSymbols(SEED_PAYLOAD, "seed"))
    with tempfile.TemporaryDirectory() as tmp:
        for elf in SEED_ELFS:
            assert len(KernelSymbols.from_vmlinux(write(Path(tmp), elf))) == 10

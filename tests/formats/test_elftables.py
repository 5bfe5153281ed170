"""ELF header counts against the file: refused before a table is read, bounded when they fit.

Every reader of a vmlinux's tables (identity, symbols, BTF) goes through elftables.py. A count
the file cannot hold (e_shnum, e_phnum, or their extended forms in section 0) is refused from
the ELF header alone, with the field's spec name; one the file does hold costs a pass over the
table, a chunk at a time, not a Python object per header kept for the whole read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf.format import read_btf_bytes
from pytest_ktstr_vmlinux.formats.elfidentity import read_elf_identity
from pytest_ktstr_vmlinux.formats.elftables import ElfLayoutError, ElfTables
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from tests.helpers.fakes import banner_for, build_id_for, kernel_elf
from tests.helpers.fuzz import mutations
from tests.helpers.rss import MIB, run_measured

BUILD_ID = build_id_for("tables")
BANNER = banner_for("6.1.0-tables")
SEED = kernel_elf(BUILD_ID, BANNER)
# ELF64 header fields: (offset, struct format).
E_PHOFF, E_SHOFF = (0x20, "Q"), (0x28, "Q")
E_PHENTSIZE, E_PHNUM, E_SHENTSIZE, E_SHNUM, E_SHSTRNDX = (
    (0x36, "H"),
    (0x38, "H"),
    (0x3A, "H"),
    (0x3C, "H"),
    (0x3E, "H"),
)
# Section 0's fields that extended numbering uses: offsets in its header.
SH0_SIZE, SH0_LINK, SH0_INFO = (0x20, "Q"), (0x28, "I"), (0x2C, "I")
SHOFF = struct.unpack_from("<Q", SEED, E_SHOFF[0])[0]
SHNUM = struct.unpack_from("<H", SEED, E_SHNUM[0])[0]
Field = tuple[int, str]


def edited(elf: bytes, *edits: tuple[Field, int], zero: bool = False) -> bytes:
    """``elf`` with header fields set; ``zero``: the offsets are in section header 0."""
    out = bytearray(elf)
    for (offset, fmt), value in edits:
        struct.pack_into(f"<{fmt}", out, offset + (SHOFF if zero else 0), value)
    return bytes(out)


def with_sections(count: int, claimed: int | None = None) -> bytes:
    """SEED with SHT_NULL section headers appended up to ``count`` (extended numbering past
    0xff00, as the gABI says), claiming ``claimed`` (default: ``count``)."""
    elf = SEED + bytes(64 * (count - SHNUM))
    claimed = count if claimed is None else claimed
    if claimed < 0xFF00:
        return edited(elf, (E_SHNUM, claimed))
    return edited(edited(elf, (E_SHNUM, 0)), (SH0_SIZE, claimed), zero=True)


# The case: 5 million section headers claimed (extended numbering), 100,000 present.
# pyelftools read every one present before it failed, with "expected 4, found 0".
CASES: dict[str, tuple[bytes, str]] = {
    "5 million claimed, 100k present": (
        with_sections(100_000, claimed=5_000_000),
        r"5000000 section headers \(section 0's sh_size: e_shnum is 0\) of e_shentsize 64 bytes"
        r" at e_shoff 0x\w+ would end at byte 320000\d+, past the end of the file \(\d+ bytes\)",
    ),
    "e_shnum past the end": (
        edited(SEED, (E_SHNUM, 0xFEFF)),
        r"65279 section headers \(e_shnum\) of e_shentsize 64 bytes at e_shoff",
    ),
    "e_shoff past the end": (
        edited(SEED, (E_SHOFF, 1 << 63)),
        r"section header 0 at e_shoff 0x8000000000000000 would end at byte \d+, past the end",
    ),
    "e_shentsize 0": (edited(SEED, (E_SHENTSIZE, 0)), r"e_shentsize 0, not 64 .*Elf64_Shdr"),
    "e_shentsize 4096": (edited(SEED, (E_SHENTSIZE, 4096)), r"e_shentsize 4096, not 64"),
    "e_phnum past the end": (
        edited(SEED, (E_PHOFF, 64), (E_PHENTSIZE, 56), (E_PHNUM, 0xFFFE)),
        r"65534 program headers \(e_phnum\) of e_phentsize 56 bytes at e_phoff 0x40 would end",
    ),
    "e_phnum PN_XNUM, 5 million in sh_info": (
        edited(
            edited(SEED, (E_PHOFF, 64), (E_PHENTSIZE, 56), (E_PHNUM, 0xFFFF)),
            (SH0_INFO, 5_000_000),
            zero=True,
        ),
        r"5000000 program headers \(section 0's sh_info: e_phnum is PN_XNUM\)",
    ),
    "e_phentsize 1": (
        edited(SEED, (E_PHOFF, 64), (E_PHENTSIZE, 1), (E_PHNUM, 1)),
        r"e_phentsize 1, not 56 .*Elf64_Phdr",
    ),
    "e_shstrndx past e_shnum": (
        edited(SEED, (E_SHSTRNDX, 0xFEFF)),
        rf"section name table's index 65279 \(e_shstrndx\) is not a section: there are {SHNUM}",
    ),
    "e_shstrndx SHN_XINDEX, 4 million in sh_link": (
        edited(edited(SEED, (E_SHSTRNDX, 0xFFFF)), (SH0_LINK, 4_000_000), zero=True),
        r"index 4000000 \(section 0's sh_link: e_shstrndx is SHN_XINDEX\) is not a section",
    ),
    "cut in the ELF header": (SEED[:40], r"the ELF header needs 64 bytes, the file has 40"),
}


def _identity_of_file(path: Path) -> object:
    with path.open("rb") as f:
        return read_elf_identity(f, what=str(path))


READERS: dict[str, Callable[[Path], object]] = {
    "identity (file)": _identity_of_file,
    "identity (memory)": lambda p: read_elf_identity(p.read_bytes(), what=str(p)),
    "symbols": KernelSymbols.from_vmlinux,
    "btf": read_btf_bytes,
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_table_that_cannot_fit_is_refused_naming_the_field(
    tmp_path: Path, case: str, reader: str
) -> None:
    data, message = CASES[case]
    with pytest.raises(ElfLayoutError, match=message):
        ElfTables(data)
    path = tmp_path / "vmlinux"
    path.write_bytes(data)
    with pytest.raises(KernelArtifactError, match=message) as info:
        READERS[reader](path)
    assert str(info.value).startswith(f"{path}: ")


def test_the_seed_reads() -> None:
    """The cases above are refused for their one edit: the file they start from is fine."""
    identity = read_elf_identity(SEED, what="seed")
    assert (identity.build_id, identity.banner) == (BUILD_ID.hex(), BANNER)
    identity = read_elf_identity(with_sections(70_000), what="70,000 sections")
    assert (identity.build_id, identity.banner) == (BUILD_ID.hex(), BANNER)


def test_a_section_past_the_end_is_named() -> None:
    tables = ElfTables(SEED)
    rodata = next(s for s in tables.sections() if tables.is_named(s, b".rodata"))
    at = SHOFF + 64 * rodata.number + 0x18  # its sh_offset
    damaged = bytearray(SEED)
    struct.pack_into("<Q", damaged, at, 1 << 40)
    with pytest.raises(
        KernelArtifactError,
        match=r"section \d+ \('\.rodata'\): sh_offset 0x10000000000 \+ sh_size 0x\w+ runs past",
    ):
        read_elf_identity(bytes(damaged), what="vmlinux")


CHILD = """
import sys
from pytest_ktstr_vmlinux.formats.btf.format import read_btf_bytes
from pytest_ktstr_vmlinux.formats.elfidentity import read_elf_identity
from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols

path, reader = sys.argv[1], sys.argv[2]


def run():
    try:
        if reader == "identity":
            with open(path, "rb") as f:
                found = read_elf_identity(f, what=path)
            return {"build_id": found.build_id, "banner": found.banner}
        if reader == "symbols":
            return {"symbols": len(KernelSymbols.from_vmlinux(path))}
        return {"btf": len(read_btf_bytes(path))}
    except KernelArtifactError as e:
        return {"error": str(e)}


result, growth = measured(run)
report(growth=growth, **result)
"""
# 300,000 section headers (19 MB of them): pyelftools held one object per header for symbols
# (~120 MB) and walked them all with Python objects for identity and BTF.
MANY = 300_000
# One 256 KiB chunk of headers, the names of the first 0xff00 sections, the .rodata and notes
# read, and the allocator's rounding: a few MiB. A Python object per header would be ~100 MB.
SMALL = 8 * MIB


@pytest.fixture(scope="module")
def many_sections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("many") / "vmlinux"
    path.write_bytes(with_sections(MANY))
    return path


@pytest.mark.parametrize("reader", ["identity", "symbols", "btf"])
def test_many_headers_that_fit_cost_little_memory(many_sections: Path, reader: str) -> None:
    result = run_measured(CHILD, str(many_sections), reader, cwd=many_sections.parent)
    if reader == "identity":
        assert (result["build_id"], result["banner"]) == (BUILD_ID.hex(), BANNER)
    elif reader == "symbols":
        assert result == {"growth": result["growth"], "symbols": 0}
    else:
        assert "ELF without a .BTF section" in result["error"]
    assert result["growth"] <= SMALL, f"{result['growth'] / MIB:.1f} MiB"


def test_a_huge_count_is_refused_with_little_memory(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(CASES["5 million claimed, 100k present"][0])
    for reader in ("identity", "symbols", "btf"):
        result = run_measured(CHILD, str(path), reader, cwd=tmp_path)
        assert "5000000 section headers" in result["error"]
        assert result["growth"] <= SMALL, f"{reader}: {result['growth'] / MIB:.1f} MiB"


# --- fuzzing: the header fields, at their extremes -------------------------------------------

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_FIELDS: list[tuple[Field, bool]] = [
    (E_PHOFF, False),
    (E_SHOFF, False),
    (E_PHENTSIZE, False),
    (E_PHNUM, False),
    (E_SHENTSIZE, False),
    (E_SHNUM, False),
    (E_SHSTRNDX, False),
    (SH0_SIZE, True),
    (SH0_LINK, True),
    (SH0_INFO, True),
]


@st.composite
def header_edits(draw: st.DrawFn) -> bytes:
    """SEED with up to four counts, sizes and offsets of the ELF header or section 0 set to
    extremes, small values or the special ones (0, PN_XNUM/SHN_XINDEX, SHN_LORESERVE)."""
    elf = SEED
    for _ in range(draw(st.integers(1, 4))):
        (offset, fmt), zero = draw(st.sampled_from(_FIELDS))
        top = (1 << 8 * struct.calcsize(fmt)) - 1
        special = st.sampled_from([0, 1, 40, 56, 64, 0xFF00, 0xFFFF, top, top // 2 + 1])
        value = draw(special | st.integers(0, top) | st.integers(0, 2 * len(SEED)))
        elf = edited(elf, ((offset, fmt), value & top), zero=zero)
    return elf


def _check(data: bytes) -> None:
    """Accepted tables lie inside the data and read whole; refused ones say ElfLayoutError.
    The readers above raise nothing but KernelArtifactError naming the input."""
    try:
        tables = ElfTables(data)
    except ElfLayoutError:
        pass
    else:
        assert tables.shoff + tables.shnum * tables.shentsize <= len(data) or not tables.shnum
        assert tables.phoff + tables.phnum * tables.phentsize <= len(data) or not tables.phnum
        assert tables.shstrndx == 0 or tables.shstrndx < tables.shnum
        assert sum(1 for _ in tables.sections()) == tables.shnum
        assert sum(1 for _ in tables.segments()) == tables.phnum
    try:
        read_elf_identity(data, what="fuzzed")
    except KernelArtifactError as e:
        assert str(e).startswith("fuzzed: "), e


@FUZZ
@given(header_edits())
def test_fuzz_header_counts(data: bytes) -> None:
    _check(data)


@FUZZ
@given(mutations(SEED))
def test_fuzz_mutated_elf(data: bytes) -> None:
    _check(data)

"""The kernel's own GNU build-id in a flat Image, told from the notes of the ELF files inside it.

Synthetic payloads hold a kernel note and real embedded ELF files (vDSO-shaped: ELF64 and ELF32,
either byte order, each with its own .note.gnu.build-id), built here with struct. Debian's arm64
Image is checked against readelf: on its -dbg vmlinux for the kernel's id, and on each embedded
ELF cut out of the Image for the vDSOs' ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.image import identify_image
from pytest_ktstr_vmlinux.formats.notes import (
    MAX_ELF_MAGICS,
    MAX_NOTES,
    FlatBuildId,
    embedded_elf_spans,
    flat_build_id,
    scan_gnu_build_id,
)
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from tests.helpers.fuzz import mutations
from tests.helpers.kernels import DebianKernel

NT_GNU_BUILD_ID = 3
PT_LOAD, PT_NOTE = 1, 4
SHT_PROGBITS, SHT_STRTAB, SHT_NOTE = 1, 3, 7
ET_DYN = 3
EM_AARCH64, EM_ARM = 183, 40


def bid(text: str) -> bytes:
    return hashlib.sha1(text.encode()).digest()


def note(build_id: bytes, *, little: bool = True) -> bytes:
    """A GNU build-id note: n_namesz 4, n_descsz, n_type NT_GNU_BUILD_ID, "GNU\\0", the id."""
    order = "<" if little else ">"
    desc = build_id + bytes(-len(build_id) % 4)
    return struct.pack(f"{order}III", 4, len(build_id), NT_GNU_BUILD_ID) + b"GNU\x00" + desc


def vdso(build_id: bytes, *, elfclass: int = 64, little: bool = True) -> bytes:
    """A vDSO-shaped shared object: Ehdr, PT_LOAD and PT_NOTE program headers, then
    .note.gnu.build-id, .text and .shstrtab, and the section header table at the end."""
    order = "<" if little else ">"
    wide = elfclass == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if wide else (52, 32, 40)
    phoff, phnum = ehsize, 2
    body = bytearray()
    base = phoff + phnum * phentsize
    sections = [
        (".note.gnu.build-id", SHT_NOTE, note(build_id, little=little)),
        (".text", SHT_PROGBITS, b"\x1f\x20\x03\xd5" * 8),
    ]
    names = b"\x00" + b"".join(n.encode() + b"\x00" for n, _, _ in sections) + b".shstrtab\x00"
    sections.append((".shstrtab", SHT_STRTAB, names))
    placed = []
    name_at = 1
    for name, sh_type, data in sections:
        body += bytes(-(base + len(body)) % 8)
        placed.append((name_at, sh_type, base + len(body), data))
        name_at += len(name) + 1
        body += data
    body += bytes(-(base + len(body)) % 8)
    shoff = base + len(body)
    shnum, shstrndx = len(placed) + 1, len(placed)
    note_at, note_size = placed[0][2], len(placed[0][3])
    if wide:
        phdrs = struct.pack(f"{order}IIQQQQQQ", PT_LOAD, 5, 0, 0, 0, shoff, shoff, 0x1000)
        phdrs += struct.pack(
            f"{order}IIQQQQQQ", PT_NOTE, 4, note_at, note_at, note_at, note_size, note_size, 4
        )
        shdrs = bytes(shentsize) + b"".join(
            struct.pack(f"{order}IIQQQQIIQQ", n, t, 2, off, off, len(d), 0, 0, 4, 0)
            for n, t, off, d in placed
        )
        fields = (ET_DYN, EM_AARCH64, 1, 0, phoff, shoff, 0, ehsize, phentsize, phnum)
        ehdr_tail = struct.pack(f"{order}HHIQQQIHHH", *fields)
    else:
        phdrs = struct.pack(f"{order}8I", PT_LOAD, 0, 0, 0, shoff, shoff, 5, 0x1000)
        phdrs += struct.pack(
            f"{order}8I", PT_NOTE, note_at, note_at, note_at, note_size, note_size, 4, 4
        )
        shdrs = bytes(shentsize) + b"".join(
            struct.pack(f"{order}10I", n, t, 2, off, off, len(d), 0, 0, 4, 0)
            for n, t, off, d in placed
        )
        fields = (ET_DYN, EM_ARM, 1, 0, phoff, shoff, 0x05000000, ehsize, phentsize, phnum)
        ehdr_tail = struct.pack(f"{order}HHIIIIIHHH", *fields)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1 if little else 2, 1]) + bytes(9)
    ehdr = ident + ehdr_tail + struct.pack(f"{order}HHH", shentsize, shnum, shstrndx)
    assert len(ehdr) == ehsize
    return ehdr + phdrs + bytes(body) + shdrs


ARM64_HEADER = bytes(0x38) + b"ARM\x64" + bytes(4)
KERNEL_ID, VDSO_ID, VDSO32_ID = bid("kernel"), bid("vdso"), bid("vdso32")
BANNER = b"Linux version 6.1.0-flat (dev@host) (gcc 12.2.0) #1 SMP\n\x00"


def flat(*parts: bytes) -> bytes:
    """An arm64 Image: the header, then each part at the next 4 KiB boundary (the vDSOs are
    page-aligned in the kernel's data; the kernel's .notes is 4-byte aligned)."""
    out = bytearray(ARM64_HEADER)
    for part in parts:
        out += b"\xaa" * (-len(out) % 4096)
        out += part
    return bytes(out + b"\xaa" * 64)


ORDERS = {
    "kernel note first": lambda k, a, b: flat(k, a, b),
    "kernel note between": lambda k, a, b: flat(a, k, b),
    "kernel note last": lambda k, a, b: flat(a, b, k),
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("elfclasses", [(64, 32), (64, 64), (32, 32)])
@pytest.mark.parametrize("little", [True, False], ids=["LE", "BE"])
def test_kernel_note_is_found_wherever_it_is(
    order: str, elfclasses: tuple[int, int], little: bool
) -> None:
    first, second = (
        vdso(i, elfclass=c, little=little)
        for i, c in zip((VDSO_ID, VDSO32_ID), elfclasses, strict=True)
    )
    data = ORDERS[order](note(KERNEL_ID, little=little), first, second)
    found = flat_build_id(data)
    assert found == FlatBuildId(KERNEL_ID.hex(), found.notes, None)
    assert scan_gnu_build_id(data) == scan_gnu_build_id(memoryview(data)) == KERNEL_ID.hex()
    assert sorted(n.build_id for n in found.notes) == sorted(
        i.hex() for i in (KERNEL_ID, VDSO_ID, VDSO32_ID)
    )
    spans = embedded_elf_spans(data)
    for n in found.notes:
        if n.build_id == KERNEL_ID.hex():
            assert n.embedded_in is None
        else:
            assert n.embedded_in in {start for start, _ in spans}


def test_span_is_the_whole_embedded_file() -> None:
    elf = vdso(VDSO_ID)
    data = flat(elf, note(KERNEL_ID))
    assert embedded_elf_spans(data) == [(4096, 4096 + len(elf))]


def test_one_embedded_elf_and_the_kernel_note_right_after_it() -> None:
    """No padding: the kernel's note starts at the first byte past the ELF's span."""
    elf = vdso(VDSO_ID)
    data = ARM64_HEADER + elf + note(KERNEL_ID)
    assert len(ARM64_HEADER + elf) % 4 == 0
    assert scan_gnu_build_id(data) == KERNEL_ID.hex()


def test_identify_image_reads_the_kernel_note(tmp_path: Path) -> None:
    """Through the file API pairing uses: the payload of a flat arm64 Image."""
    path = tmp_path / "Image"
    path.write_bytes(flat(vdso(VDSO_ID), vdso(VDSO32_ID, elfclass=32), BANNER, note(KERNEL_ID)))
    info = identify_image(path)
    assert (info.format, info.arch, info.release) == ("arm64 Image", "arm64", "6.1.0-flat")
    assert (info.build_id, info.build_id_problem) == (KERNEL_ID.hex(), None)


def test_two_different_loose_notes_are_unknown() -> None:
    other = bid("other")
    found = flat_build_id(flat(vdso(VDSO_ID), note(KERNEL_ID), note(other)))
    assert found.build_id is None
    assert found.problem is not None
    assert "2 different GNU build-id notes lie in no embedded ELF" in found.problem
    assert KERNEL_ID.hex() in found.problem and other.hex() in found.problem
    assert VDSO_ID.hex() not in found.problem


def test_two_loose_notes_with_one_id_are_that_id() -> None:
    data = flat(note(KERNEL_ID), vdso(VDSO_ID), note(KERNEL_ID))
    assert scan_gnu_build_id(data) == KERNEL_ID.hex()


def test_only_embedded_notes_is_unknown_not_a_vdso_id(tmp_path: Path) -> None:
    """A kernel linked without --build-id: the vDSOs' ids must not stand in for it."""
    path = tmp_path / "Image"
    path.write_bytes(flat(vdso(VDSO_ID), vdso(VDSO32_ID, elfclass=32), BANNER))
    info = identify_image(path)
    assert info.build_id is None
    assert info.build_id_problem is not None
    assert info.build_id_problem.startswith("every GNU build-id note lies in an embedded ELF")
    assert f"{VDSO_ID.hex()} in the ELF at 0x1000" in info.build_id_problem


def test_no_note_at_all() -> None:
    assert flat_build_id(flat(BANNER)) == FlatBuildId(None, (), "no GNU build-id note")


@pytest.mark.parametrize("cut", [4, 16, 40, 63])
def test_truncated_elf_header_at_the_end_hides_nothing(cut: int) -> None:
    data = flat(vdso(VDSO_ID), note(KERNEL_ID), vdso(VDSO32_ID)[:cut])
    data = data[: data.rfind(b"\x7fELF") + cut]
    assert scan_gnu_build_id(data) == KERNEL_ID.hex()


@pytest.mark.parametrize(
    ("field", "fmt", "value"),
    [
        (0x28, "<Q", 1 << 20),  # e_shoff: the section header table past the buffer
        (0x20, "<Q", 1 << 20),  # e_phoff: the program header table past the buffer
        (0x34, "<H", 0x38),  # e_ehsize: not ELFCLASS64's 64
        (0x3A, "<H", 0x28),  # e_shentsize of ELFCLASS32
        (0x14, "<I", 2),  # e_version
        (0x10, "<H", 0x7777),  # e_type
    ],
    ids=["e_shoff", "e_phoff", "e_ehsize", "e_shentsize", "e_version", "e_type"],
)
def test_implausible_header_spans_nothing(field: int, fmt: str, value: int) -> None:
    """An ELF header that does not hold together (a table past the buffer, sizes of the other
    class, a wrong version or type) is no embedded file: its note counts as loose, and two loose
    notes that differ leave the answer unknown."""
    elf = bytearray(vdso(VDSO_ID))
    struct.pack_into(fmt, elf, field, value)
    data = flat(bytes(elf), note(KERNEL_ID))
    assert embedded_elf_spans(data) == []
    found = flat_build_id(data)
    assert found.build_id is None and found.problem is not None
    assert "2 different GNU build-id notes" in found.problem


def test_a_span_over_the_kernel_note_makes_it_unknown_never_a_vdso_id() -> None:
    """A header whose section table (moved, still inside the buffer) lies past the kernel's note
    covers that note: every note is then embedded, and the answer is None, not the vDSO's id."""
    elf = bytearray(vdso(VDSO_ID))
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    table = bytes(elf[shoff:])
    struct.pack_into("<Q", elf, 0x28, 2 * 4096)  # the third page after the ELF's own
    data = flat(bytes(elf), note(KERNEL_ID), table)
    assert embedded_elf_spans(data) == [(4096, 3 * 4096 + len(table))]
    found = flat_build_id(data)
    assert found.build_id is None and found.problem is not None
    assert found.problem.startswith("every GNU build-id note lies in an embedded ELF")


def test_section_data_past_the_buffer_is_not_an_elf() -> None:
    elf = bytearray(vdso(VDSO_ID))
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    struct.pack_into("<Q", elf, shoff + 2 * 64 + 0x20, 1 << 40)  # .text's sh_size
    data = flat(note(KERNEL_ID), bytes(elf))
    assert embedded_elf_spans(data) == []


def test_elf_magic_strings_hide_nothing() -> None:
    """The kernel's rodata holds "\\x7fELF" as a string (binfmt_elf, module loader): no header."""
    data = flat(b"\x7fELF\x02\x01\x01" + bytes(9), note(KERNEL_ID), b"\x7fELF")
    assert embedded_elf_spans(data) == []
    assert scan_gnu_build_id(data) == KERNEL_ID.hex()


def test_an_elf_at_offset_0_is_the_data_itself() -> None:
    assert embedded_elf_spans(vdso(VDSO_ID)) == []
    assert scan_gnu_build_id(vdso(VDSO_ID)) == VDSO_ID.hex()


@pytest.mark.parametrize(
    ("size", "found"), [(7, False), (8, True), (16, True), (64, True), (68, False)]
)
def test_note_descsz_bounds(size: int, found: bool) -> None:
    build_id = bytes(range(1, size + 1))
    assert scan_gnu_build_id(flat(note(build_id))) == (build_id.hex() if found else None)


def test_misaligned_note_is_ignored() -> None:
    assert scan_gnu_build_id(flat(b"\x00\x00" + note(KERNEL_ID))) is None


def test_too_many_notes_is_unknown() -> None:
    found = flat_build_id(flat(note(KERNEL_ID) * (MAX_NOTES + 1)))
    assert found.build_id is None
    assert found.problem == (
        f"more than {MAX_NOTES} GNU build-id notes in the payload; the kernel's GNU build-id is"
        " not determined"
    )


def test_too_many_elf_magics_is_unknown() -> None:
    found = flat_build_id(flat(b"\x7fELF" * (MAX_ELF_MAGICS + 1), note(KERNEL_ID)))
    assert found.build_id is None
    assert found.problem is not None and found.problem.startswith(f"more than {MAX_ELF_MAGICS}")


# --- fuzzing -------------------------------------------------------------------------------------

SEED = flat(vdso(VDSO_ID), note(KERNEL_ID), BANNER, vdso(VDSO32_ID, elfclass=32))
# A compact seed: the same pieces without page padding, so edits land in headers and notes.
DENSE = ARM64_HEADER + vdso(VDSO_ID) + note(KERNEL_ID) + vdso(VDSO32_ID, elfclass=32) + BANNER


def _consistent(found: FlatBuildId) -> None:
    assert (found.build_id is None) == (found.problem is not None)
    if found.build_id is not None:
        assert found.build_id in {n.build_id for n in found.notes if n.embedded_in is None}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([SEED, DENSE]).flatmap(lambda seed: mutations(seed)))
def test_fuzz_flat_build_id_never_raises(data: bytes) -> None:
    _consistent(flat_build_id(data))


@settings(max_examples=300, deadline=None)
@given(mutations(DENSE))
def test_fuzz_identify_image_only_kernel_artifact_errors(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "Image"
    path.write_bytes(data)
    try:
        info = identify_image(path)
    except KernelArtifactError as e:
        assert str(path) in str(e)
    else:
        if info.format == "arm64 Image":
            assert (info.build_id is None) == (info.build_id_problem is not None)


def test_fuzz_seeds_identify() -> None:
    for seed in (SEED, DENSE):
        found = flat_build_id(seed)
        assert (found.build_id, len(found.notes)) == (KERNEL_ID.hex(), 3)


# --- Debian's arm64 Image ------------------------------------------------------------------------


def _readelf_build_id(path: Path) -> str:
    out = subprocess.run(
        ["readelf", "-n", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return out.split("Build ID: ", 1)[1].split()[0]


@pytest.mark.real_kernel
def test_debian_arm64_build_id_is_the_dbg_vmlinux_one(debian_arm64: DebianKernel) -> None:
    """What `info` reports (resolve_kernel, as the CLI calls it) is readelf's id of the -dbg
    vmlinux, and it pairs by build-id."""
    expected = debian_arm64.build_id
    kernel = resolve_kernel(str(debian_arm64.image), sysroot=debian_arm64.sysroot)
    assert kernel.image_info is not None
    assert (kernel.image_info.build_id, kernel.image_info.build_id_problem) == (expected, None)
    assert kernel.build_id == expected
    assert (kernel.vmlinux, kernel.paired) == (debian_arm64.vmlinux, "build-id")


@pytest.mark.real_kernel
def test_debian_arm64_other_notes_are_the_vdsos(debian_arm64: DebianKernel, tmp_path: Path) -> None:
    """Each embedded ELF cut out of the Image at its span is a file readelf reads, with the
    build-id of the note found inside it: the spans are whole files, not guesses."""
    data = debian_arm64.image.read_bytes()
    found = flat_build_id(data)
    spans = dict(embedded_elf_spans(data))
    inside = [n for n in found.notes if n.embedded_in is not None]
    assert len(inside) >= 2 and len(found.notes) == len(inside) + 1
    for n in inside:
        assert n.embedded_in is not None
        cut = tmp_path / f"elf-{n.embedded_in:x}"
        cut.write_bytes(data[n.embedded_in : spans[n.embedded_in]])
        assert _readelf_build_id(cut) == n.build_id != debian_arm64.build_id


@pytest.mark.real_kernel
def test_debian_arm64_cli_pairs_by_build_id(debian_arm64: DebianKernel) -> None:
    """`locate R --kernel-sysroot` and `info --json`, run as a user runs them."""
    release, root = debian_arm64.release, str(debian_arm64.sysroot)
    argv = [sys.executable, "-m", "pytest_ktstr_vmlinux"]
    env = dict(os.environ)  # the test's own KTSTR_CACHE_DIR: no store from an earlier version
    locate = subprocess.run(
        [*argv, "locate", release, "--kernel-sysroot", root],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert locate.returncode == 0, locate.stderr
    lines = locate.stdout.splitlines()
    chosen = [line for line in lines if line.lstrip().startswith("chosen")]
    assert len(chosen) == 1 and f"usr/lib/debug/boot/vmlinux-{release} " in chosen[0]
    assert "  paired   build-id" in lines
    assert "mismatch" not in locate.stdout
    info = subprocess.run(
        [*argv, "info", str(debian_arm64.image), "--kernel-sysroot", root, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    assert (report["build_id"], report["paired"]) == (debian_arm64.build_id, "build-id")
    assert report["vmlinux"] == str(debian_arm64.vmlinux)

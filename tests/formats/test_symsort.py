"""The C sorts of _symsort against the Python fallback in symsort.py and a plain sorted() oracle:
the same bytes on generated tables and real kernels, the same errors on damaged ones."""

from __future__ import annotations

import os
import random
import struct
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats import symsort
from pytest_ktstr_vmlinux.formats.symbols import KIND, VERSION, KernelSymbols
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.kernels import DebianKernel
from tests.helpers.symtab import SAMPLE, SYMTAB, build_elf, narrow, section_header_at, write

# .ci/run installs build-essential: there the extension must have been built, not skipped.
IN_CI = os.environ.get("CI") == "true"
needs_native = pytest.mark.skipif(
    not symsort.NATIVE, reason="pytest_ktstr_vmlinux.formats._symsort is not built (no C compiler?)"
)
MANY = settings(max_examples=400, deadline=None)

# Kernel-like pieces: long shared prefixes (several 8-byte steps deep), bytes >= 0x80.
PIECES = (b"__kstrtab_", b"__ksymtab_", b"trace_event_raw_", b"a", b"ab", b"_", b"\x80", b"\xff")
WORDS = (0, 1, 0xFF, 1 << 32, 1 << 63, (1 << 64) - 1, 0xFFFFFFFF81000000, 0xFFFFFFFF81000008)

Table: TypeAlias = "tuple[bytes, array[int], bytes]"  # array is generic at runtime from 3.12


def test_built_in_ci() -> None:
    """Without this, a CI machine that silently failed to compile would test only the fallback
    and time the slow path."""
    if not IN_CI:
        pytest.skip("CI=true is not set")
    assert symsort.NATIVE, "setup.py did not build pytest_ktstr_vmlinux.formats._symsort"


@st.composite
def names(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.sampled_from(PIECES), max_size=6))
    tail = draw(st.binary(max_size=3)).replace(b"\0", b"\1")
    return b"".join(parts) + tail


@st.composite
def tables(draw: st.DrawFn, max_entries: int = 120) -> Table:
    """A NUL-terminated string table and entries naming a string's start, its tail (as ld's
    suffix merging does), or a NUL (an empty name); a name shared by several entries."""
    strtab, starts = bytearray(b"\0"), [0]
    for name in draw(st.lists(names(), max_size=40)):
        starts.append(len(strtab))
        strtab += name + b"\0"
    anywhere = st.integers(0, len(strtab) - 1)
    offsets = draw(st.lists(st.sampled_from(starts) | anywhere, max_size=max_entries))
    flags = st.sampled_from((0, 1, 1, 2, 0xFF))  # any non-zero byte keeps
    keep = bytes(draw(st.lists(flags, min_size=len(offsets), max_size=len(offsets))))
    return bytes(strtab), array("I", offsets), keep


def oracle_by_name(strtab: bytes, st_name: array[int], keep: bytes) -> bytes:
    kept = [i for i in range(len(st_name)) if keep[i]]
    key = {i: strtab[st_name[i] : strtab.index(b"\0", st_name[i])] for i in kept}
    return array("I", sorted(kept, key=key.__getitem__)).tobytes()


def outcome(sort: Callable[..., array[int]], *args: object) -> bytes | str:
    """The sorted indexes, or the ValueError's text."""
    try:
        return sort(*args).tobytes()
    except ValueError as e:
        return f"ValueError: {e}"


@needs_native
@MANY
@given(table=tables())
def test_by_name_agrees(table: Table) -> None:
    strtab, st_name, keep = table
    expected = oracle_by_name(strtab, st_name, keep)
    assert symsort.python_by_name(strtab, st_name, keep).tobytes() == expected
    assert symsort.by_name(strtab, st_name, keep).tobytes() == expected


@needs_native
@MANY
@given(table=tables(), data=st.data())
def test_by_name_names_past_the_table(table: Table, data: st.DataObject) -> None:
    strtab, st_name, keep = table
    if not st_name:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(st_name) - 1))
        st_name[at] = data.draw(st.sampled_from((len(strtab), 1 << 31, (1 << 32) - 1)))
    python = outcome(symsort.python_by_name, strtab, st_name, keep)
    assert outcome(symsort.by_name, strtab, st_name, keep) == python
    kept_past = [i for i in range(len(st_name)) if keep[i] and st_name[i] >= len(strtab)]
    if kept_past:
        i = kept_past[0]
        assert python == f"ValueError: {symsort.outside(i, st_name[i], len(strtab))}"


@needs_native
@MANY
@given(table=tables())
def test_by_name_unterminated_table(table: Table) -> None:
    strtab, st_name, keep = table
    cut = strtab[:-1] + b"x"
    python = outcome(symsort.python_by_name, cut, st_name, keep)
    assert outcome(symsort.by_name, cut, st_name, keep) == python
    if any(keep):
        assert python == "ValueError: the string table does not end with NUL"


@needs_native
def test_by_name_large_tables() -> None:
    """Thousands of names: the radix passes, not only the insertion sort of a few."""
    rng = random.Random(5)
    pieces = [*PIECES, b"x" * 30, b"trace_event_raw_event_"]
    for _ in range(5):
        words = [b"".join(rng.choices(pieces, k=rng.randrange(1, 6))) for _ in range(3000)]
        strtab = b"\0" + b"\0".join(words) + b"\0"
        starts = [0, *(i + 1 for i, byte in enumerate(strtab[:-1]) if byte == 0)]
        st_name = array("I", rng.choices(starts, k=6000))
        keep = bytes(rng.choices((0, 1, 1, 1), k=6000))
        expected = oracle_by_name(strtab, st_name, keep)
        assert symsort.by_name(strtab, st_name, keep).tobytes() == expected
        assert symsort.python_by_name(strtab, st_name, keep).tobytes() == expected


@needs_native
@MANY
@given(data=st.data())
def test_by_addr_agrees(data: st.DataObject) -> None:
    value = st.sampled_from(WORDS) | st.integers(0, (1 << 64) - 1)
    st_value = array("Q", data.draw(st.lists(value, max_size=300)))
    flags = st.lists(st.sampled_from((0, 1, 7)), min_size=len(st_value), max_size=len(st_value))
    sized = bytes(data.draw(flags))
    kept = [i for i in range(len(st_value)) if sized[i]]
    expected = array("I", sorted(kept, key=st_value.__getitem__)).tobytes()
    assert symsort.python_by_addr(st_value, sized).tobytes() == expected
    assert symsort.by_addr(st_value, sized).tobytes() == expected


@needs_native
def test_native_checks_its_arguments() -> None:
    from pytest_ktstr_vmlinux.formats import _symsort

    strtab, st_name, keep = b"\0a\0b\0", array("I", [3, 1]), b"\1\1"
    assert array("I", _symsort.by_name(strtab, st_name, keep)).tolist() == [1, 0]
    # Any contiguous buffer of the right item type will do.
    same = _symsort.by_name(bytearray(strtab), memoryview(st_name.tobytes()).cast("I"), b"\1\2")
    assert array("I", same).tolist() == [1, 0]
    assert _symsort.by_name(b"", array("I"), b"") == b""
    assert _symsort.by_name(b"", array("I", [7]), b"\0") == b""  # nothing kept, nothing read
    wide = "L" if array("L").itemsize == 8 else "Q"  # either spelling of a native u64
    assert array("I", _symsort.by_addr(array(wide, [2, 1, 2]), b"\1\1\1")).tolist() == [1, 0, 2]
    with pytest.raises(TypeError, match="st_name"):
        _symsort.by_name(strtab, array("H", [3, 1]), keep)  # 2-byte items
    with pytest.raises(TypeError, match="st_name"):
        _symsort.by_name(strtab, array("i", [3, 1]), keep)  # signed
    with pytest.raises(TypeError, match="st_value"):
        _symsort.by_addr(array("d", [1.0]), b"\1")
    with pytest.raises(TypeError, match="keep"):
        _symsort.by_name(strtab, st_name, array("H", [1, 1]))
    with pytest.raises(ValueError, match="keep has 3 entries"):
        _symsort.by_name(strtab, st_name, b"\1\1\1")
    with pytest.raises(ValueError, match="sized has 1 entries"):
        _symsort.by_addr(array("Q", [1, 2]), b"\1")
    with pytest.raises(TypeError, match="takes 3"):
        _symsort.by_name(strtab, st_name)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _symsort.by_addr("not a buffer", b"")  # type: ignore[arg-type]
    with pytest.raises(BufferError):
        _symsort.by_addr(memoryview(array("Q", [1, 2, 3, 4]))[::2], b"\1\1")  # strided


# --- whole artifacts: the C and the Python sorts pack the same bytes ----------------------------


def packed(path: Path, monkeypatch: pytest.MonkeyPatch, native: bool) -> bytes:
    monkeypatch.setattr(symsort, "NATIVE", native)
    store = MemoryStore()
    KernelSymbols.from_vmlinux(path, store)
    return store.get_or_build(path, KIND, VERSION, _never).read_bytes()


def _never(path: Path, out: object) -> None:
    raise AssertionError("built twice")


@needs_native
@pytest.mark.parametrize(("elfclass", "little"), [(64, True), (64, False), (32, True), (32, False)])
def test_same_artifact_for_synthetic_elfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, elfclass: int, little: bool
) -> None:
    symbols = SAMPLE if elfclass == 64 else narrow(SAMPLE)
    path = write(tmp_path, build_elf(symbols, elfclass=elfclass, little=little))
    assert packed(path, monkeypatch, True) == packed(path, monkeypatch, False)


@pytest.mark.parametrize("native", [pytest.param(True, marks=needs_native), False])
def test_name_past_the_table_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    elf = bytearray(build_elf(SAMPLE))
    at, o, _ = section_header_at(bytes(elf), SYMTAB)
    table = struct.unpack_from(f"{o}Q", elf, at + 0x18)[0]
    struct.pack_into(f"{o}I", elf, table + 4 * 24, 0xFFFFFF)  # the first real symbol's st_name
    path = write(tmp_path, bytes(elf))
    monkeypatch.setattr(symsort, "NATIVE", native)
    with pytest.raises(
        KernelArtifactError, match=r"st_name 16777215\) lies outside its string table"
    ):
        KernelSymbols.from_vmlinux(path)


@needs_native
@pytest.mark.real_kernel
def test_same_artifact_for_tinyconfig(
    tinyconfig_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tinyconfig_tree / "vmlinux"
    assert packed(path, monkeypatch, True) == packed(path, monkeypatch, False)


@needs_native
@pytest.mark.real_kernel
def test_same_artifact_for_debian(
    debian_kernel: DebianKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = debian_kernel.vmlinux
    assert packed(path, monkeypatch, True) == packed(path, monkeypatch, False)

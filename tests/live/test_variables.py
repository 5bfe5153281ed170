"""Where a variable's type comes from (BTF VAR, the DWARF table, the well-known few), what a
named type must satisfy, and what the error for a variable without a type says; over a real ELF
compiled here, its BTF made by pahole -J (as a kernel build makes it: no VARs for globals)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.dwarf.globaltypes import GlobalTypes
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.live.errors import LiveKernelError
from pytest_ktstr_vmlinux.live.variables import TableSource, VariableTypes

SOURCE = r"""
struct sched { int a; long b; };
typedef unsigned long long u64;
struct sched *root;
u64 jiffies_64 = 5;
unsigned int nr_cpu_ids = 2;
const char banner[] = "Linux version test";
extern const char later[];
const char later[] = "eleven byte";
static int dup = 1;
int *use(void) { return &dup; }
int main(void) { return 0; }
"""
OTHER = "static long dup = 2; long *other(void) { return &dup; }\n"


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("gcc", "pahole", "objcopy"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    folder = tmp_path_factory.mktemp("vars")
    (folder / "main.c").write_text(SOURCE)
    (folder / "other.c").write_text(OTHER)
    out = folder / "vmlinux"
    subprocess.run(
        ["gcc", "-g", "-O0", "-o", str(out), str(folder / "main.c"), str(folder / "other.c")],
        check=True,
    )
    subprocess.run(["pahole", "-J", str(out)], check=True, capture_output=True)
    return out


def _types(elf: Path, table: TableSource | str = "load") -> tuple[VariableTypes, list[int]]:
    calls: list[int] = []

    def load() -> GlobalTypes:
        calls.append(1)
        return GlobalTypes.from_vmlinux(elf)

    source = load if isinstance(table, str) else table
    types = VariableTypes(BTF.from_path(elf), KernelSymbols.from_vmlinux(elf), source)
    return types, calls


def test_globals_are_typed_by_dwarf_loaded_on_first_need(elf: Path) -> None:
    types, calls = _types(elf)
    assert types.btf.datasecs() == {}  # as kernels' BTF: no VAR for a global
    assert calls == []
    assert types.btf.type_name(types.of("root")) == "struct sched *"
    assert types.btf.type_name(types.of("jiffies_64")) == "u64"
    assert types.btf.sizeof(types.of("banner")) == 19
    assert calls == [1]  # once, for every variable after it


def test_an_array_declared_without_length_takes_the_symbols(elf: Path) -> None:
    types, _ = _types(elf)
    # DWARF may describe "later" by its extern declaration (char[]): the symbol's 12 bytes
    # give the length either way.
    assert types.btf.type_name(types.of("later")) == "const char[12]"


def test_a_named_type_must_be_as_large_as_the_variable(elf: Path) -> None:
    types, _ = _types(elf)
    size = types.symbols.symbol("root").size
    assert size == 8
    with pytest.raises(
        LiveKernelError,
        match=r"'root' is 8 bytes \(its st_size\) but 'struct sched' is 16 bytes: its type is"
        r" 'struct sched \*'",
    ):
        types.named("root", "struct sched", size)
    tid = types.named("root", "struct sched *", size)
    assert types.btf.type_name(tid) == "struct sched *"
    assert types.btf.sizeof(types.named("banner", "char[19]", 19)) == 19
    with pytest.raises(LiveKernelError, match="not a C type expression"):
        types.named("root", "struct sched **[", size)
    with pytest.raises(LiveKernelError, match="no type 'struct schedx'; did you mean"):
        types.named("root", "struct schedx *", size)


def test_without_dwarf_the_well_known_types_serve(elf: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    subprocess.run(["objcopy", "--strip-debug", "--keep-section=.BTF", str(elf), str(stripped)])
    types = VariableTypes(
        BTF.from_path(elf),
        KernelSymbols.from_vmlinux(elf),
        lambda: GlobalTypes.from_vmlinux(stripped),
    )
    assert types.btf.type_name(types.of("nr_cpu_ids")) == "unsigned int"  # WELL_KNOWN
    assert types.table is None and ".debug_info is missing" in (types.why_not or "")
    with pytest.raises(LiveKernelError) as e:
        types.of("root")
    message = str(e.value)
    assert "its BTF has VARs for per-CPU variables only (0;" in message
    assert f"no DWARF globals table: {stripped}: .debug_info is missing" in message
    assert "the symbol exists (8 bytes)" in message
    assert "Name its type: object('root', 'struct ...')" in message


def test_the_missing_variable_error_says_what_the_kernel_has(elf: Path) -> None:
    types, _ = _types(elf)
    with pytest.raises(LiveKernelError) as e:
        types.of("roots")
    message = str(e.value)
    assert "its BTF has VARs for per-CPU variables only" in message
    assert "its DWARF describes no variable 'roots'" in message
    assert "no symbol 'roots'" in message and "did you mean" in message and "root" in message
    assert "pahole before 1.26" not in message
    none_given, _ = _types(elf, None)
    with pytest.raises(LiveKernelError, match="no DWARF globals table: none was given"):
        none_given.of("root")


def test_a_table_that_fails_is_tried_once(elf: Path) -> None:
    calls: list[int] = []

    def fail() -> GlobalTypes:
        calls.append(1)
        raise KernelArtifactError("no table today")

    types = VariableTypes(BTF.from_path(elf), KernelSymbols.from_vmlinux(elf), fail)
    for _ in range(3):
        with pytest.raises(LiveKernelError, match="no DWARF globals table: no table today"):
            types.of("root")
    assert calls == [1]


def test_statics_of_one_name_are_picked_by_file(elf: Path) -> None:
    types, _ = _types(elf)
    addresses = [s.value for s in types.symbols.all("dup")]
    index, tid = types.static("dup", "other.c")
    assert types.btf.type_name(tid) == "long int"
    index2, tid2 = types.static("dup", "main.c")
    assert types.btf.type_name(tid2) == "int"
    assert {addresses[index], addresses[index2]} == set(addresses)
    with pytest.raises(
        LiveKernelError,
        match=r"no variables called 'dup' are defined in a file"
        r" 'third\.c'; their files: .*main\.c",
    ):
        types.static("dup", "third.c")
    said = types.ambiguous("dup", "'dup' is ambiguous")
    assert "2 variables are called 'dup'" in said and "filename=" in said

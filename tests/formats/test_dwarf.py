"""The DWARF globals table of real ELFs compiled here (gcc and clang, DWARF 4 and 5), checked
against gdb's reading of the same files; built once through the store; damaged DWARF fuzzed.

The programs hold the shapes kernel variables have: struct pointers, typedefs, arrays of
arrays, function pointers, const strings, statics of one name in two files, an anonymous
struct, a declaration without a definition.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf.typeexpr import parse
from pytest_ktstr_vmlinux.formats.dwarf.dies import Strings
from pytest_ktstr_vmlinux.formats.dwarf.globaltypes import (
    KIND,
    VERSION,
    GlobalTypeError,
    GlobalTypes,
    build_from_vmlinux,
)
from pytest_ktstr_vmlinux.formats.dwarf.sections import DebugSections
from pytest_ktstr_vmlinux.formats.dwarf.variables import Walk
from pytest_ktstr_vmlinux.formats.elftables import ElfTables
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.fuzz import mutations
from tests.helpers.globaltypes import globals_elsewhere

FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MAIN = r"""
struct sched { int a; long b; };
typedef unsigned long long u64;
typedef struct { int counter; } atomic_t;
enum state { OFF, ON };
union word { int i; float f; };

struct sched *root;
u64 jiffies_64 = 5;
static atomic_t state_var;
const char banner[] = "Linux version test";
static const char *const names[3] = { "a", "b", "c" };
int (*handler)(struct sched *, int);
void (*hooks[4])(void);
int (*vhandler)(int, ...);
unsigned long grid[2][3];
volatile int flag;
static struct { int x; } anonymous;
union word word;
enum state state = ON;
struct sched *const roots[2];
int (*row)[4];
_Bool ready = 1;
unsigned short port;
signed char delta;
extern int declared_only;
static int dup = 1;
struct sched sched;

int *use_dup(void) { static int local_static; (void)local_static; return &dup; }
void *keep(int i) {
    void *all[] = { &state_var, (void *)names, &anonymous, &declared_only };
    return all[i];
}
int main(void) { return 0; }
int declared_only;
"""
OTHER = r"""
static long dup = 2;
long *other_dup(void) { return &dup; }
"""
# What each variable's type is, as C writes it (and gdb, parsed, agrees).
EXPECTED = {
    "root": "struct sched *",
    "jiffies_64": "u64",
    "state_var": "atomic_t",
    "banner": "const char[19]",
    "names": "const char *const[3]",
    "handler": "int (*)(struct sched *, int)",
    "hooks": "void (*[4])(void)",
    "vhandler": "int (*)(int, ...)",
    "grid": "long unsigned int[2][3]",
    "flag": "volatile int",
    "word": "union word",
    "state": "enum state",
    "roots": "struct sched *const[2]",
    "row": "int (*)[4]",
    "ready": "_Bool",
    "port": "short unsigned int",
    "delta": "signed char",
    "declared_only": "int",
    "sched": "struct sched",
}
COMPILERS = [("gcc", "-gdwarf-5"), ("gcc", "-gdwarf-4"), ("clang-19", "-gdwarf-5")]
COMPILERS += [("clang-19", "-gdwarf-4")]


@dataclass(frozen=True)
class Program:
    path: Path
    compiler: str
    flag: str


def _compile(directory: Path, compiler: str, flag: str) -> Path:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    (directory / "main.c").write_text(MAIN)
    (directory / "other.c").write_text(OTHER)
    out = directory / f"prog-{compiler}{flag}"
    subprocess.run(
        [compiler, flag, "-O0", "-o", str(out), str(directory / "main.c"),
         str(directory / "other.c")],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module", params=COMPILERS, ids=lambda c: f"{c[0]}{c[1]}")
def program(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Program:
    compiler, flag = request.param
    path = _compile(tmp_path_factory.mktemp("dwarf"), compiler, flag)
    return Program(path, compiler, flag)


def test_types_are_cs(program: Program) -> None:
    table = GlobalTypes.from_vmlinux(program.path)
    symbols = KernelSymbols.from_vmlinux(program.path)
    for name, expected in EXPECTED.items():
        assert table.type_of(name, symbols[name]) == expected, name
        assert table.type_of(name) == expected, name
    assert "local_static" not in table  # function scope: its symbol is its own (local_static.0)
    assert table.units_skipped == 0 and table.units_read >= 2


def test_gdb_agrees(program: Program) -> None:
    """gdb, an oracle we did not write, reads each variable's type the same."""
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed")
    table = GlobalTypes.from_vmlinux(program.path)
    names = sorted(EXPECTED)
    commands = [arg for name in names for arg in ("-ex", f"whatis {name}")]
    out = subprocess.run(
        ["gdb", "-nx", "-batch", *commands, str(program.path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    said = [line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("type")]
    assert len(said) == len(names), out
    for name, gdb in zip(names, said, strict=True):
        assert parse(table.type_of(name)) == parse(gdb), (name, gdb)


def test_statics_of_one_name_are_kept_and_told_apart(program: Program) -> None:
    table = GlobalTypes.from_vmlinux(program.path)
    found = table.variables("dup")
    assert sorted((v.type, Path(v.unit).name, v.external) for v in found) == [
        ("int", "main.c", False),
        ("long int", "other.c", False),
    ]
    with pytest.raises(GlobalTypeError, match=r"2 variables are called 'dup'.*main\.c.*other\.c"):
        table.type_of("dup")
    for symbol in KernelSymbols.from_vmlinux(program.path).all("dup"):
        expected = next(v.type for v in found if v.address == symbol.value)
        assert table.type_of("dup", symbol.value) == expected
    with pytest.raises(GlobalTypeError, match="the symbol is at 0x1: not the same variable"):
        table.type_of("dup", 1)


def test_what_has_no_type_says_why(program: Program) -> None:
    table = GlobalTypes.from_vmlinux(program.path)
    with pytest.raises(GlobalTypeError, match=r"'anonymous' .*an anonymous struct"):
        table.type_of("anonymous")
    with pytest.raises(GlobalTypeError, match=r"no variable 'jiffies' .*did you mean 'jiffies_64'"):
        table.type_of("jiffies")
    assert "jiffies" not in table and "root" in table


def test_built_once_and_read_warm_by_a_fresh_process(program: Program, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    first = GlobalTypes.from_vmlinux(program.path, store)
    GlobalTypes.from_vmlinux(program.path, store)
    assert (store.stats.built, store.stats.reused) == (1, 1)
    elsewhere = globals_elsewhere(tmp_path / "store", program.path, "root")
    assert elsewhere == [0, 1, len(first), first.type_of("root")]


def test_no_dwarf_is_said_and_not_stored(program: Program, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    subprocess.run(["objcopy", "--strip-debug", str(program.path), str(stripped)], check=True)
    store = ArtifactStore(tmp_path / "store")
    for _ in range(2):
        with pytest.raises(KernelArtifactError, match=r"stripped: \.debug_info is missing.*-dbg"):
            GlobalTypes.from_vmlinux(stripped, store)
    assert (store.stats.built, store.stats.reused) == (0, 0)
    obj = tmp_path / "main.o"
    subprocess.run(
        ["gcc", "-g", "-c", "-o", str(obj), "-x", "c", "-"], input=MAIN.encode(), check=True
    )
    with pytest.raises(KernelArtifactError, match=r"main\.o: a relocatable object"):
        GlobalTypes.from_vmlinux(obj)


def test_compressed_debug_sections(program: Program, tmp_path: Path) -> None:
    for kind in ("zlib", "zstd"):
        packed = tmp_path / f"packed-{kind}"
        done = subprocess.run(
            ["objcopy", f"--compress-debug-sections={kind}", str(program.path), str(packed)],
            capture_output=True,
        )
        if done.returncode:  # binutils built without zstd
            continue
        table = GlobalTypes.from_vmlinux(packed)
        assert table.type_of("root") == "struct sched *"
        assert table.type_of("grid") == "long unsigned int[2][3]"


def test_lto_refers_to_a_later_unit(tmp_path: Path) -> None:
    """With LTO, gcc gives a variable's definition in one unit and points (DW_FORM_ref_addr,
    DW_AT_abstract_origin) at its declaration in a later one, where its name and type are."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    (tmp_path / "main.c").write_text(MAIN)
    (tmp_path / "other.c").write_text(OTHER)
    out = tmp_path / "lto"
    subprocess.run(
        ["gcc", "-flto", "-g", "-O2", "-o", str(out), str(tmp_path / "main.c"),
         str(tmp_path / "other.c")],
        check=True, capture_output=True,
    )  # fmt: skip
    dump = subprocess.run(
        ["readelf", "--debug-dump=info", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "DW_AT_abstract_origin" in dump
    table = GlobalTypes.from_vmlinux(out)
    assert table.type_of("flag") == "volatile int"  # the one LTO keeps: it is volatile
    assert table.units_skipped == 0


# --- damaged DWARF: a clear error naming the input, never a traceback --------------------------


def _sections(path: Path) -> dict[str, bytes]:
    with open(path, "rb") as f:
        elf = ElfTables(f)
        return {elf.name(s): bytes(elf.section_data(s)) for s in elf.sections()}


SEEDS: dict[str, dict[str, bytes]] = {}


def _seed(compiler: str, flag: str) -> dict[str, bytes]:
    key = compiler + flag
    if key not in SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            SEEDS[key] = _sections(_compile(Path(tmp), compiler, flag))
    return SEEDS[key]


def _walk(parts: dict[str, bytes]) -> list[str]:
    strings = Strings(
        parts.get(".debug_str", b""),
        parts.get(".debug_line_str", b""),
        parts.get(".debug_str_offsets", b""),
        parts.get(".debug_addr", b""),
    )
    debug = DebugSections.in_memory(
        parts[".debug_info"], parts.get(".debug_abbrev", b""), strings, what="fuzz"
    )
    walk = Walk(debug)
    return [f"{v.name} {v.type or v.problem}" for v in walk.variables()]


@pytest.mark.parametrize(("compiler", "flag"), COMPILERS)
def test_fuzz_seeds_read_whole(compiler: str, flag: str) -> None:
    found = _walk(_seed(compiler, flag))
    assert "root struct sched *" in found


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_sections(data: st.DataObject) -> None:
    compiler, flag = data.draw(st.sampled_from(COMPILERS))
    if shutil.which(compiler) is None:
        return
    parts = dict(_seed(compiler, flag))
    for name in data.draw(
        st.lists(st.sampled_from([".debug_info", ".debug_abbrev", ".debug_str",
                                  ".debug_str_offsets", ".debug_addr"]), min_size=1, max_size=2)
    ):  # fmt: skip
        if name in parts:
            parts[name] = data.draw(mutations(parts[name]))
    with contextlib.suppress(KernelArtifactError):
        _walk(parts)  # a damaged unit is skipped with why; only a broken framing raises


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_files(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    compiler, flag = data.draw(st.sampled_from(COMPILERS[:1]))
    seed = tmp_path_factory.getbasetemp() / f"seed-{compiler}{flag}"
    if not seed.exists():
        seed.mkdir()
        _compile(seed, compiler, flag)
    elf = (seed / f"prog-{compiler}{flag}").read_bytes()
    path = tmp_path_factory.mktemp("fuzz") / "vmlinux"
    path.write_bytes(data.draw(mutations(elf)))
    store = MemoryStore()
    try:
        table = GlobalTypes.from_vmlinux(path, store)
    except KernelArtifactError as e:
        assert str(path) in str(e)
        return
    for name in ("root", "dup", "nothing"):
        with contextlib.suppress(GlobalTypeError):
            table.type_of(name)


_PAYLOAD: list[bytes] = []


def _table_payload() -> bytes:
    """The table of the gcc DWARF 5 program, as the store would hold it."""
    if not _PAYLOAD:
        with tempfile.TemporaryDirectory() as tmp:
            out = io.BytesIO()
            build_from_vmlinux(_compile(Path(tmp), "gcc", "-gdwarf-5"), out)
            _PAYLOAD.append(out.getvalue())
    return _PAYLOAD[0]


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_tables(data: st.DataObject) -> None:
    if shutil.which("gcc") is None:
        return
    payload = data.draw(mutations(_table_payload()))
    try:
        table = GlobalTypes(payload, "fuzz")
    except KernelArtifactError as e:
        assert "fuzz: the globals table is damaged" in str(e)
        return
    for name in ("root", "dup", "zzz", ""):
        with contextlib.suppress(GlobalTypeError, KernelArtifactError):
            table.variables(name)
            table.type_of(name)


def test_the_kind_names_the_byte_order() -> None:
    assert KIND.endswith(sys.byteorder) and VERSION >= 1

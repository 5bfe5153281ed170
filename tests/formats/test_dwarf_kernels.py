"""The DWARF globals table of Debian's real debug vmlinuxes (12's 6.1, DWARF 5 from gcc 12;
sid's 7.2, DWARF 5 from gcc 16 and DWARF 4 from rustc): types checked against gdb's ``whatis``
for a sample of every shape, every address against .symtab, BTF resolving what the table says,
and the table built once through the store and read warm by another process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.btf.typeexpr import parse
from pytest_ktstr_vmlinux.formats.dwarf.globaltypes import GlobalTypeError, GlobalTypes
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.globaltypes import globals_elsewhere
from tests.helpers.kernels import DebianKernel

pytestmark = pytest.mark.real_kernel

# Every shape a global has: a struct, a typedef, base types, a const string, arrays of one and
# two dimensions, of pointers and of typedefs, a function pointer, a pointer chain; static ones.
SAMPLE = [
    "jiffies_64",  # u64
    "init_task",  # struct task_struct
    "nr_cpu_ids",  # unsigned int
    "__per_cpu_offset",  # long unsigned int[8192]
    "linux_banner",  # const char[N]
    "system_state",  # enum system_states
    "pm_power_off",  # void (*)(void)
    "sched_prio_to_weight",  # const int[40]
    "cpu_bit_bitmap",  # const long unsigned int[65][128]
    "saved_command_line",  # char *
    "sched_domains_numa_masks",  # static struct cpumask ***
    "sched_feat_names",  # static const char *const[N]
    "kmalloc_caches",  # struct kmem_cache *[N][14]
    "node_states",  # nodemask_t[6]
    "__supported_pte_mask",  # pteval_t
]
SCHED_EXT = {
    "scx_root": "struct scx_sched *",
    "scx_enable_state_var": "atomic_t",  # static
    "scx_watchdog_interval": "long unsigned int",  # static
}


@pytest.fixture(scope="module", params=["debian_kernel", "sid_kernel"])
def kernel(request: pytest.FixtureRequest) -> DebianKernel:
    found: DebianKernel = request.getfixturevalue(request.param)
    return found


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    return ArtifactStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def table(kernel: DebianKernel, store: ArtifactStore) -> GlobalTypes:
    return GlobalTypes.from_vmlinux(kernel.vmlinux, store)


def _names(kernel: DebianKernel) -> list[str]:
    return SAMPLE + (list(SCHED_EXT) if "sid" in str(kernel.sysroot) else [])


def test_every_unit_is_read_and_its_version_known(kernel: DebianKernel, table: GlobalTypes) -> None:
    """Every unit read; DWARF 5, as readelf says of the first one (sid's also has three units
    of Rust code, which rustc 1.97 writes in DWARF 4)."""
    with subprocess.Popen(
        ["readelf", "--debug-dump=info", str(kernel.vmlinux)], stdout=subprocess.PIPE, text=True
    ) as readelf:
        assert readelf.stdout is not None
        head = [readelf.stdout.readline() for _ in range(12)]
        readelf.kill()
    assert any(line.split() == ["Version:", "5"] for line in head), head
    rust = "sid" in str(kernel.sysroot)
    assert table.dwarf_versions == ((4, 5) if rust else (5,))
    assert table.units_read > 2000 and table.units_skipped == 0
    assert ("DWARF 4/5" if rust else "DWARF 5") in repr(table)


def test_gdb_agrees_on_a_sample(kernel: DebianKernel, table: GlobalTypes) -> None:
    if shutil.which("gdb") is None:
        pytest.fail("gdb is the oracle here: apt-get install gdb")
    names = _names(kernel)
    commands = [arg for name in names for arg in ("-ex", f"whatis {name}")]
    out = subprocess.run(
        ["gdb", "-nx", "-batch", *commands, str(kernel.vmlinux)],
        capture_output=True, text=True, check=True, timeout=1800,
    ).stdout  # fmt: skip
    said = [line.split("=", 1)[1].strip() for line in out.splitlines() if line.startswith("type")]
    assert len(said) == len(names), out
    symbols = KernelSymbols.from_vmlinux(kernel.vmlinux)
    for name, gdb in zip(names, said, strict=True):
        ours = table.type_of(name, symbols.get(name))
        assert parse(ours) == parse(gdb), (name, ours, gdb)
    for name, expected in SCHED_EXT.items():
        if name in names:
            assert table.type_of(name) == expected


def test_every_address_is_its_symbols(kernel: DebianKernel, table: GlobalTypes) -> None:
    symbols = KernelSymbols.from_vmlinux(kernel.vmlinux)
    checked = 0
    for name in {name for name, _ in symbols.items()}:
        found = table.variables(name)
        if found:
            addresses = {s.value for s in symbols.all(name)}
            assert {v.address for v in found} <= addresses, name
            checked += len(found)
    assert checked > 20000


def test_btf_resolves_what_the_table_says(kernel: DebianKernel, table: GlobalTypes) -> None:
    btf = BTF.from_path(kernel.vmlinux)
    symbols = KernelSymbols.from_vmlinux(kernel.vmlinux)
    for name in _names(kernel):
        spelled = table.type_of(name, symbols.get(name))
        size = btf.sizeof(spelled)
        if not spelled.endswith("[]"):
            assert size == symbols.symbol(name).size, (name, spelled)
    assert btf.type_name(btf.type(table.type_of("pm_power_off")).id) == "void (*)(void)"


def test_statics_of_one_name_are_all_kept(table: GlobalTypes) -> None:
    found = table.variables("_acpi_module_name")
    assert len(found) > 50 and len({v.unit for v in found}) == len(found)
    assert not any(v.external for v in found)
    with pytest.raises(GlobalTypeError, match=r"variables are called '_acpi_module_name'"):
        table.type_of("_acpi_module_name")
    first = found[0]
    assert table.type_of("_acpi_module_name", first.address) == first.type


def test_built_once_then_read_warm_elsewhere(kernel: DebianKernel, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    cold = GlobalTypes.from_vmlinux(kernel.vmlinux, store)
    assert (store.stats.built, store.stats.reused) == (1, 0)
    elsewhere = globals_elsewhere(tmp_path / "store", kernel.vmlinux, "init_task")
    assert elsewhere == [0, 1, len(cold), "struct task_struct"]

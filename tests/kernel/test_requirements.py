"""Requirements of a ``ktstr`` marker: what parse accepts and refuses (with the message a user
reads at collection), how each kind is judged against one kernel, and check() never guessing:
an artifact that cannot be loaded or read makes a requirement unchecked, never unmet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.btf.queries import BTF
from pytest_ktstr_vmlinux.formats.kconfig import KernelConfig, Value, parse_config
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.kernel.requirements import (
    ARGUMENTS,
    BTFRequirement,
    ConfigRequirement,
    Requirements,
    Verdict,
    check,
)
from pytest_ktstr_vmlinux.kernel.versions import KernelVersion
from tests.helpers.btf import STRUCT, TYPEDEF, VAR, Builder


def parse(**kwargs: object) -> Requirements:
    return Requirements.parse((), kwargs)


def refused(*args: object, **kwargs: object) -> str:
    with pytest.raises(ValueError, match=r"^ktstr ") as raised:
        Requirements.parse(args, kwargs)
    return str(raised.value)


# --- parse: accepted ----------------------------------------------------------------------------


def test_no_arguments_is_no_requirement() -> None:
    req = parse()
    assert req == Requirements()
    assert (req.min_version, req.max_version, req.config, req.symbols, req.btf, req.arch) == (
        None,
        None,
        (),
        (),
        (),
        (),
    )


def test_versions_parse() -> None:
    req = parse(min_version="6.6", max_version="6.13-rc2")
    assert req.min_version == KernelVersion(6, 6, 0)
    assert req.max_version == KernelVersion(6, 13, 0, final=False, rc=2)
    assert req.text == {"min_version": "6.6", "max_version": "6.13-rc2"}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("SCHED_CLASS_EXT", ConfigRequirement("CONFIG_SCHED_CLASS_EXT")),
        ("CONFIG_SCHED_CLASS_EXT", ConfigRequirement("CONFIG_SCHED_CLASS_EXT")),
        ("HZ=1000", ConfigRequirement("CONFIG_HZ", value="1000")),
        ("CONFIG_HZ=1000", ConfigRequirement("CONFIG_HZ", value="1000")),
        ("!PREEMPT_RT", ConfigRequirement("CONFIG_PREEMPT_RT", off=True)),
        ("!CONFIG_PREEMPT_RT", ConfigRequirement("CONFIG_PREEMPT_RT", off=True)),
        (
            'CMDLINE="console=ttyS0 quiet"',
            ConfigRequirement("CONFIG_CMDLINE", value='"console=ttyS0 quiet"'),
        ),
        ("  SMP  ", ConfigRequirement("CONFIG_SMP")),
    ],
)
def test_config_items(item: str, expected: ConfigRequirement) -> None:
    assert parse(config=[item]).config == (expected,)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("struct scx_rq", BTFRequirement("struct scx_rq")),
        ("struct rq.scx", BTFRequirement("struct rq", "scx")),
        ("struct rq.scx.local_dsq", BTFRequirement("struct rq", "scx.local_dsq")),
        ("struct rq.cpu_load[2]", BTFRequirement("struct rq", "cpu_load[2]")),
        ("union bpf_attr", BTFRequirement("union bpf_attr")),
        ("enum scx_ops_flags", BTFRequirement("enum scx_ops_flags")),
        ("typedef u64", BTFRequirement("typedef u64")),
        ("task_struct", BTFRequirement("task_struct")),
        ("task_struct.pid", BTFRequirement("task_struct", "pid")),
    ],
)
def test_btf_items(item: str, expected: BTFRequirement) -> None:
    assert parse(btf=[item]).btf == (expected,)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("x86_64", ("x86_64",)),
        ("amd64", ("x86_64",)),
        ("x86-64", ("x86_64",)),
        ("aarch64", ("arm64",)),
        ("i686", ("i386",)),
        ("x86", ("x86",)),
        (["arm64", "riscv64"], ("arm64", "riscv64")),
        (("amd64", "aarch64"), ("x86_64", "arm64")),
    ],
)
def test_arch_names_and_aliases(arch: object, expected: tuple[str, ...]) -> None:
    assert parse(arch=arch).arch == expected


def test_items_as_tuple_set_or_frozenset() -> None:
    assert parse(config=("SMP", "HZ=250")).config == parse(config=["SMP", "HZ=250"]).config
    # A set has no order of its own: sorted, so ids and messages do not vary between runs.
    assert parse(symbols={"b", "a", "c"}).symbols == ("a", "b", "c")
    assert parse(symbols=frozenset({"y", "x"})).symbols == ("x", "y")


def test_none_means_not_given() -> None:
    req = parse(min_version=None, max_version=None, config=None, symbols=None, btf=None, arch=None)
    assert req == Requirements()


def test_max_version_series_allows_a_patch_minimum() -> None:
    # max_version="6.5" is the whole 6.5 series, so min_version="6.5.3" leaves 6.5.3..6.5.x.
    req = parse(min_version="6.5.3", max_version="6.5")
    assert req.min_version == KernelVersion(6, 5, 3)
    assert req.max_version == KernelVersion(6, 5, 0)
    assert parse(min_version="6.6", max_version="6.6").min_version == KernelVersion(6, 6, 0)


# --- parse: refused, with the message ---------------------------------------------------------


def test_positional_arguments_are_refused() -> None:
    assert refused("SCHED_CLASS_EXT") == (
        "ktstr takes keyword arguments only (min_version, max_version, config, symbols, btf,"
        " arch), got positional 'SCHED_CLASS_EXT'"
    )
    assert refused("6.6", ["SMP"]).endswith("got positional '6.6', ['SMP']")


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("configs", "; did you mean config=?"),
        ("min_versoin", "; did you mean min_version=?"),
        ("btfs", "; did you mean btf=?"),
        ("kernel", ""),
    ],
)
def test_unknown_arguments_are_refused_with_a_hint(name: str, hint: str) -> None:
    assert refused(**{name: ["x"]}) == (
        f"ktstr got an unknown argument {name}=; it takes min_version, max_version, config,"
        f" symbols, btf, arch{hint}"
    )


def test_every_documented_argument_is_known() -> None:
    assert ARGUMENTS == ("min_version", "max_version", "config", "symbols", "btf", "arch")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_version": 6.1}, "ktstr min_version=6.1 must be a string like '6.12' (6.1 != 6.10)"),
        ({"max_version": 6}, "ktstr max_version=6 must be a string like '6.12' (6.1 != 6.10)"),
        (
            {"min_version": "v6.6"},
            "ktstr min_version: 'v6.6' is not a kernel version like 6.12, 6.12.3 or 6.13-rc1",
        ),
        (
            {"max_version": "6.1.0-56-cloud-amd64"},
            "ktstr max_version: '6.1.0-56-cloud-amd64' is not a kernel version like 6.12, 6.12.3"
            " or 6.13-rc1",
        ),
        (
            {"min_version": "6.6", "max_version": "6.1"},
            "ktstr min_version 6.6 is above max_version 6.1: nothing runs",
        ),
        (
            {"min_version": "6.5.4", "max_version": "6.5.3"},
            "ktstr min_version 6.5.4 is above max_version 6.5.3: nothing runs",
        ),
        (
            {"min_version": "6.6", "max_version": "6.6-rc7"},
            "ktstr min_version 6.6 is above max_version 6.6-rc7: nothing runs",
        ),
    ],
)
def test_bad_versions(kwargs: dict[str, object], message: str) -> None:
    assert refused(**kwargs) == message


@pytest.mark.parametrize("name", ["config", "symbols", "btf"])
def test_a_bare_string_is_not_a_list(name: str) -> None:
    # config="SMP" would otherwise be the requirements S, M and P.
    assert refused(**{name: "SMP"}) == (
        f"ktstr {name}='SMP' must be a list of strings: {name}=['SMP']"
    )
    assert refused(**{name: b"SMP"}) == (
        f"ktstr {name}=b'SMP' must be a list of strings: {name}=[b'SMP']"
    )


@pytest.mark.parametrize("name", ["config", "symbols", "btf"])
def test_items_must_be_non_empty_strings(name: str) -> None:
    assert refused(**{name: 5}) == f"ktstr {name}=5 must be a list of strings"
    assert refused(**{name: {"a": 1}}) == f"ktstr {name}={{'a': 1}} must be a list of strings"
    assert refused(**{name: [""]}) == f"ktstr {name}: '' is not a non-empty string"
    assert refused(**{name: ["  "]}) == f"ktstr {name}: '  ' is not a non-empty string"
    assert refused(**{name: ["ok", 1]}) == f"ktstr {name}: 1 is not a non-empty string"
    assert refused(**{name: ["ok", None]}) == f"ktstr {name}: None is not a non-empty string"


def test_a_set_mixing_types_is_a_value_error() -> None:
    # Sorting {"SMP", 1} raises TypeError; the user must get the ValueError naming the item.
    assert refused(config={"SMP", 1}) == "ktstr config: 1 is not a non-empty string"


@pytest.mark.parametrize("item", ["!HZ=1000", "HZ=", "HZ= 1000", "NO SPACES", "-X", "A.B", "!"])
def test_bad_config_items(item: str) -> None:
    assert refused(config=["SMP", item]) == (
        f"ktstr config: {item!r} is not NAME (enabled), NAME=value (exact) or !NAME (off)"
    )


@pytest.mark.parametrize("item", ["runqueues __per_cpu_offset", "a\tb"])
def test_bad_symbols(item: str) -> None:
    assert refused(symbols=[item]) == f"ktstr symbols: {item!r} is not a symbol name"


@pytest.mark.parametrize(
    "item", ["struct 1rq", "struct rq-x", "class rq", "struct", "struct rq scx", "*rq"]
)
def test_bad_btf_items(item: str) -> None:
    if item == "struct":  # a bare name that happens to be a kind word is still a name
        assert parse(btf=[item]).btf == (BTFRequirement("struct"),)
        return
    assert refused(btf=[item]) == (
        f"ktstr btf: {item!r} is not a type ('struct scx_rq') or a member ('struct rq.scx')"
    )


@pytest.mark.parametrize("member", ["a..b", "scx.", ".scx", "scx]", "cpu_load[x]", "[0].x"])
def test_bad_btf_member_paths_are_refused_at_parse(member: str) -> None:
    # Not found malformed at setup, where BTF.member() would raise a bare ValueError.
    assert refused(btf=[f"struct rq.{member}"]) == (
        f"ktstr btf: 'struct rq.{member}': member path {member!r} is not names, dots and [index]"
        " ('struct rq.scx.local_dsq', 'struct rq.cpu_load[0]')"
    )


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("sparc", "ktstr arch: 'sparc' is not one of "),
        (["x86_64", "mips"], "ktstr arch: 'mips' is not one of "),
        ([None], "ktstr arch: None is not one of "),
        ([], "ktstr arch=[] must be an arch name or a list of them"),
        (5, "ktstr arch=5 must be an arch name or a list of them"),
        ({"x86_64"}, "ktstr arch={'x86_64'} must be an arch name or a list of them"),
    ],
)
def test_bad_arch(arch: object, message: str) -> None:
    text = refused(arch=arch)
    assert text.startswith(message)
    if "is not one of" in message:
        assert text.endswith(
            "arm, arm64, i386, loongarch, loongarch64, ppc64, riscv, riscv32, riscv64, s390x,"
            " x86, x86_64"
        )


# --- ConfigRequirement.unmet ------------------------------------------------------------------

CONFIG = parse_config(
    "\n".join(
        [
            "CONFIG_SMP=y",
            "CONFIG_EXT4_FS=m",
            "CONFIG_HZ=250",
            "CONFIG_PHYSICAL_START=0x1000000",
            'CONFIG_CMDLINE="console=ttyS0 quiet"',
            'CONFIG_LOCALVERSION=""',
            "# CONFIG_PREEMPT_RT is not set",
            "# CONFIG_SCHED_CLASS_EXT is not set",
            "CONFIG_OLD_STYLE=n",
        ]
    ),
    "test.config",
)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("SMP", None),
        ("EXT4_FS", None),  # a module is enabled
        ("HZ", None),  # any value is enabled
        ("CMDLINE", None),
        ("SCHED_CLASS_EXT", "lacks CONFIG_SCHED_CLASS_EXT"),  # is not set
        ("BPF_SYSCALL", "lacks CONFIG_BPF_SYSCALL"),  # absent
        ("OLD_STYLE", "lacks CONFIG_OLD_STYLE"),  # =n
        ("HZ=250", None),
        ("HZ=0xfa", None),  # ints compare as numbers
        ("HZ=1000", "has CONFIG_HZ=250, needs CONFIG_HZ=1000"),
        ("HZ=fast", "has CONFIG_HZ=250, needs CONFIG_HZ=fast"),
        ("PHYSICAL_START=0x1000000", None),
        ("PHYSICAL_START=16777216", None),
        ("SMP=y", None),
        ("EXT4_FS=y", "has CONFIG_EXT4_FS=m, needs CONFIG_EXT4_FS=y"),
        ("EXT4_FS=m", None),
        ('CMDLINE="console=ttyS0 quiet"', None),
        ("CMDLINE=console=ttyS0 quiet", None),
        ("CMDLINE=quiet", "has CONFIG_CMDLINE=console=ttyS0 quiet, needs CONFIG_CMDLINE=quiet"),
        ("SCHED_CLASS_EXT=y", "lacks CONFIG_SCHED_CLASS_EXT (needs CONFIG_SCHED_CLASS_EXT=y)"),
        ("NR_CPUS=64", "lacks CONFIG_NR_CPUS (needs CONFIG_NR_CPUS=64)"),
        ("!PREEMPT_RT", None),  # is not set
        ("!PREEMPT_RT_FULL", None),  # absent
        ("!OLD_STYLE", None),  # =n
        ("!SMP", "has CONFIG_SMP=y, needs it off"),
        ("!EXT4_FS", "has CONFIG_EXT4_FS=m, needs it off"),
        ("!HZ", "has CONFIG_HZ=250, needs it off"),
    ],
)
def test_config_requirement(item: str, reason: str | None) -> None:
    (req,) = parse(config=[item]).config
    assert req.unmet(CONFIG) == reason


# --- BTFRequirement.unmet, on real (hand-built) BTF -------------------------------------------


def scheduler_btf() -> BTF:
    """struct rq { unsigned int nr_running; struct scx_rq scx; int cpu_load[3]; }, the
    sched_ext types inside it, a typedef, and kstat, both a struct and a variable."""
    b = Builder()
    uint, int_ = b.int_("unsigned int", 4), b.int_("int", 4, signed=True)
    dsq = b.struct("scx_dispatch_q", 4, [("nr", uint, 0)])
    scx_rq = b.struct("scx_rq", 8, [("local_dsq", dsq, 0), ("flags", uint, 32)])
    b.struct(
        "rq", 28, [("nr_running", uint, 0), ("scx", scx_rq, 32), ("cpu_load", b.array(int_, 3), 96)]
    )
    b.add(TYPEDEF, "u32", st=uint)
    kstat = b.struct("kstat", 4, [("irqs_sum", uint, 0)])
    b.add(VAR, "kstat", st=kstat, extra=b.u32(1))
    return BTF.from_bytes(b.blob(), what="scheduler.btf")


BTF_SAMPLE = scheduler_btf()


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("struct rq", None),
        ("struct scx_rq", None),
        ("struct rq.nr_running", None),
        ("struct rq.scx", None),
        ("struct rq.scx.local_dsq.nr", None),
        ("struct rq.cpu_load[2]", None),
        ("typedef u32", None),
        ("rq", None),  # a bare name only one kind has
        ("rq.scx", None),
        ("struct sched_ext_ops", "lacks BTF type struct sched_ext_ops"),
        ("union rq", "lacks BTF type union rq"),  # the kind is part of the name
        ("struct rq.clock", "lacks BTF member struct rq.clock"),
        ("struct rq.scx.nr_running", "lacks BTF member struct rq.scx.nr_running"),
        ("struct rq.cpu_load[3]", "lacks BTF member struct rq.cpu_load[3]"),  # out of range
        ("struct rq.nr_running.x", "lacks BTF member struct rq.nr_running.x"),  # not a struct
        ("ktstr_missing", "lacks BTF type ktstr_missing"),
    ],
)
def test_btf_requirement(item: str, reason: str | None) -> None:
    (req,) = parse(btf=[item]).btf
    assert req.unmet(BTF_SAMPLE) == reason


def test_a_bare_name_several_kinds_share_is_present() -> None:
    # Real kernels have ~200 such names (kstat, gdt_page: struct and variable). BTF.type()
    # refuses the bare name as ambiguous; the kernel still has it.
    with pytest.raises(KeyError, match="names several kinds"):
        BTF_SAMPLE.type("kstat")
    (bare,) = parse(btf=["kstat"]).btf
    (member,) = parse(btf=["kstat.irqs_sum"]).btf
    (missing,) = parse(btf=["kstat.nope"]).btf
    assert bare.unmet(BTF_SAMPLE) is None
    assert member.unmet(BTF_SAMPLE) is None
    assert missing.unmet(BTF_SAMPLE) == "lacks BTF member kstat.nope"


# --- check(): a kernel seen through KernelFacts ------------------------------------------------

KALLSYMS = """\
ffffffff81000000 T _stext
ffffffff81001000 T schedule
ffffffff82000000 D jiffies_64
ffffffff82001000 D __per_cpu_offset
0000000000034000 A runqueues
ffffffffc0000000 t ext4_mod_func\t[ext4]
"""


@pytest.fixture(scope="module")
def ksyms(tmp_path_factory: pytest.TempPathFactory) -> KernelSymbols:
    path = tmp_path_factory.mktemp("kallsyms") / "kallsyms"
    path.write_text(KALLSYMS)
    return KernelSymbols.from_kallsyms(path)


@dataclass
class Facts:
    """A KernelFacts: each loader returns its artifact or raises the error it was given, and
    records that it was called."""

    release: str | None = "6.12.3-200.fc41.x86_64"
    arch: str | None = "x86_64"
    config_value: KernelConfig | KernelArtifactError = field(default_factory=lambda: CONFIG)
    symbols_value: KernelSymbols | KernelArtifactError = field(
        default_factory=lambda: KernelArtifactError("no symbols given")
    )
    btf_value: BTF | KernelArtifactError = BTF_SAMPLE
    loads: list[str] = field(default_factory=list)

    def config(self) -> KernelConfig:
        self.loads.append("config")
        if isinstance(self.config_value, KernelArtifactError):
            raise self.config_value
        return self.config_value

    def symbols(self) -> KernelSymbols:
        self.loads.append("symbols")
        if isinstance(self.symbols_value, KernelArtifactError):
            raise self.symbols_value
        return self.symbols_value

    def btf(self) -> BTF:
        self.loads.append("btf")
        if isinstance(self.btf_value, KernelArtifactError):
            raise self.btf_value
        return self.btf_value


def verdict_of(facts: Facts, *markers: Mapping[str, object]) -> Verdict:
    return check([Requirements.parse((), m) for m in markers], facts)


def test_everything_met(ksyms: KernelSymbols) -> None:
    facts = Facts(symbols_value=ksyms)
    verdict = verdict_of(
        facts,
        {
            "min_version": "6.12",
            "max_version": "6.12",
            "config": ["SMP", "HZ=250", "!PREEMPT_RT"],
            "symbols": ["runqueues", "schedule", "__per_cpu_offset"],
            "btf": ["struct rq.scx", "struct scx_rq"],
            "arch": ["arm64", "amd64"],
        },
    )
    assert verdict == Verdict()
    assert verdict.ok
    assert sorted(facts.loads) == ["btf", "config", "symbols"]


@pytest.mark.parametrize(
    ("marker", "loads"),
    [
        ({}, []),
        ({"min_version": "6.1", "max_version": "7.0", "arch": "x86_64"}, []),
        ({"config": ["SMP"]}, ["config"]),
        ({"symbols": ["schedule"]}, ["symbols"]),
        ({"btf": ["struct rq"]}, ["btf"]),
        ({"config": ["SMP"], "btf": ["struct rq"]}, ["config", "btf"]),
    ],
)
def test_artifacts_are_loaded_only_when_asked_about(
    marker: dict[str, object], loads: list[str], ksyms: KernelSymbols
) -> None:
    # A kernel without symbols must not be refused a config-only test: nothing is loaded
    # that no requirement asks about.
    facts = Facts(symbols_value=ksyms)
    assert verdict_of(facts, marker).ok
    assert facts.loads == loads


def test_every_unmet_kind_is_said_in_order(ksyms: KernelSymbols) -> None:
    facts = Facts(release="6.1.0-56-cloud-amd64", arch="arm64", symbols_value=ksyms)
    verdict = verdict_of(
        facts,
        {
            "min_version": "6.6",
            "config": ["SCHED_CLASS_EXT", "HZ=1000", "!SMP"],
            "symbols": ["scx_ops_enable", "schedule"],
            "btf": ["struct sched_ext_ops", "struct rq.clock", "struct rq.scx"],
            "arch": ["x86_64", "riscv64"],
        },
    )
    assert verdict.unchecked == []
    assert verdict.unmet == [
        "is arm64, needs arch x86_64 or riscv64",
        "is 6.1.0, needs >= 6.6",
        "lacks CONFIG_SCHED_CLASS_EXT",
        "has CONFIG_HZ=250, needs CONFIG_HZ=1000",
        "has CONFIG_SMP=y, needs it off",
        "lacks symbol scx_ops_enable",
        "lacks BTF type struct sched_ext_ops",
        "lacks BTF member struct rq.clock",
    ]
    assert not verdict.ok
    assert verdict.reason("deb (6.1.0-56-cloud-amd64)") == (
        "kernel deb (6.1.0-56-cloud-amd64) is arm64, needs arch x86_64 or riscv64; is 6.1.0,"
        " needs >= 6.6; lacks CONFIG_SCHED_CLASS_EXT; has CONFIG_HZ=250, needs CONFIG_HZ=1000;"
        " has CONFIG_SMP=y, needs it off; lacks symbol scx_ops_enable; lacks BTF type struct"
        " sched_ext_ops; lacks BTF member struct rq.clock"
    )


def test_every_marker_must_hold() -> None:
    facts = Facts(release="6.6.30")
    verdict = verdict_of(facts, {"config": ["SMP"]}, {"max_version": "6.1"}, {"btf": ["struct rq"]})
    assert verdict.unmet == ["is 6.6.30, needs <= 6.1"]
    assert verdict_of(Facts(release="6.1.5"), {"config": ["SMP"]}, {"max_version": "6.1"}).ok


def test_a_loader_error_is_unchecked_never_unmet() -> None:
    no_config = KernelArtifactError("no kernel config for 'linux': no .config in a build tree")
    no_btf = KernelArtifactError("no BTF for kernel 'linux' (vmlinux: ELF without a .BTF section)")
    facts = Facts(config_value=no_config, btf_value=no_btf)
    verdict = verdict_of(
        facts,
        {
            "config": ["SMP", "!PREEMPT_RT", "HZ=1000"],
            "symbols": ["runqueues"],
            "btf": ["struct rq.scx"],
            "min_version": "6.12",
        },
    )
    assert verdict.unmet == []
    assert verdict.unchecked == [
        "config=['SMP', '!PREEMPT_RT', 'HZ=1000']: no kernel config for 'linux': no .config in a"
        " build tree",
        "symbols=['runqueues']: no symbols given",
        "btf=['struct rq.scx']: no BTF for kernel 'linux' (vmlinux: ELF without a .BTF section)",
    ]
    assert not verdict.ok
    assert verdict.reason("linux") == "cannot check on kernel linux: " + "; ".join(
        verdict.unchecked
    )


def test_a_multi_line_loader_error_gives_a_one_line_reason() -> None:
    # A missing vmlinux's message carries the whole probe report; a skip reason is one line.
    report = (
        "no vmlinux for kernel 'linux' (from option)\n"
        "vmlinux probe for image=linux/arch/x86/boot/bzImage: not found\n"
        "  refused  linux/vmlinux [build tree]: missing"
    )
    verdict = verdict_of(Facts(symbols_value=KernelArtifactError(report)), {"symbols": ["a"]})
    assert verdict.unchecked == ["symbols=['a']: no vmlinux for kernel 'linux' (from option)"]
    assert "\n" not in verdict.reason("linux")


def test_unmet_and_unchecked_together(ksyms: KernelSymbols) -> None:
    facts = Facts(symbols_value=ksyms, btf_value=KernelArtifactError("no BTF"))
    verdict = verdict_of(facts, {"config": ["SCHED_CLASS_EXT"], "btf": ["struct scx_rq"]})
    assert verdict.reason("k") == (
        "kernel k lacks CONFIG_SCHED_CLASS_EXT; cannot check on kernel k: btf=['struct scx_rq']:"
        " no BTF"
    )


def damaged_btf() -> BTF:
    """struct s whose member name points past the string section: read, and refused, only
    when a member is looked up."""
    b = Builder()
    int_ = b.int_("int", 4)
    b.types += b.u32(b.name("s"), STRUCT << 24 | 1, 4) + b.u32(7777, int_, 0)
    b.count += 1
    return BTF.from_bytes(b.blob(), what="damaged.btf")


def test_damaged_btf_is_unchecked_not_missing() -> None:
    facts = Facts(btf_value=damaged_btf())
    verdict = verdict_of(facts, {"btf": ["struct s", "struct s.a", "struct s.b", "struct t"]})
    # struct s is there; its members cannot be read: unknown, not lacking. struct t is absent.
    assert verdict.unmet == ["lacks BTF type struct t"]
    assert len(verdict.unchecked) == 1
    assert verdict.unchecked[0].startswith("btf=['struct s.a', 'struct s.b']: damaged.btf: ")
    assert "string offset 7777" in verdict.unchecked[0]


def test_symbols_from_kallsyms(ksyms: KernelSymbols) -> None:
    facts = Facts(symbols_value=ksyms)
    verdict = verdict_of(facts, {"symbols": ["runqueues", "jiffies_64", "missing_sym"]})
    assert verdict.unmet == ["lacks symbol missing_sym"]
    # Module symbols are not the kernel's.
    assert verdict_of(facts, {"symbols": ["ext4_mod_func"]}).unmet == ["lacks symbol ext4_mod_func"]


def test_kallsyms_listing_functions_only_cannot_say_data_is_missing(tmp_path: Path) -> None:
    # Without CONFIG_KALLSYMS_ALL, kallsyms has no data symbols (no jiffies_64): runqueues
    # missing from it says nothing about the kernel.
    path = tmp_path / "kallsyms"
    path.write_text("ffffffff81000000 T _stext\nffffffff81001000 T schedule\n")
    facts = Facts(symbols_value=KernelSymbols.from_kallsyms(path))
    verdict = verdict_of(facts, {"symbols": ["schedule", "runqueues"]})
    assert verdict.unmet == []
    assert len(verdict.unchecked) == 1
    assert verdict.unchecked[0].startswith(f"symbols=['runqueues']: not in {path}")


# --- check(): arch and versions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel_arch", "wanted", "unmet"),
    [
        ("x86_64", "x86_64", None),
        ("x86_64", "amd64", None),
        ("x86_64", "x86", None),  # the family
        ("x86", "x86_64", None),  # a build tree's arch/x86: width unknown
        ("arm64", ["x86_64", "aarch64"], None),
        ("i386", "x86_64", "is i386, needs arch x86_64"),
        ("arm", "arm64", "is arm, needs arch arm64"),
        ("x86_64", ["arm64", "riscv64"], "is x86_64, needs arch arm64 or riscv64"),
    ],
)
def test_arch(kernel_arch: str, wanted: object, unmet: str | None) -> None:
    verdict = verdict_of(Facts(arch=kernel_arch), {"arch": wanted})
    assert verdict.unmet == ([unmet] if unmet else [])
    assert verdict.unchecked == []


def test_unknown_arch_is_unchecked() -> None:
    verdict = verdict_of(Facts(arch=None), {"arch": ["x86_64", "arm64"]})
    assert verdict.unmet == []
    assert verdict.unchecked == ["arch=x86_64 or arm64: the kernel's arch is unknown"]


@pytest.mark.parametrize("release", [None, "", "running", "linux-next"])
def test_a_release_without_a_version_is_unchecked(release: str | None) -> None:
    verdict = verdict_of(Facts(release=release), {"min_version": "6.1"})
    assert verdict.unmet == []
    assert verdict.unchecked == [f"a version requirement: release {release!r} has none"]
    assert verdict_of(Facts(release=release), {"config": ["SMP"]}).ok  # not asked: not needed


@pytest.mark.parametrize(
    ("release", "marker", "unmet"),
    [
        ("6.1.0-56-cloud-amd64", {"min_version": "6.1"}, None),
        ("6.1.0-56-cloud-amd64", {"min_version": "6.1.1"}, "is 6.1.0, needs >= 6.1.1"),
        ("6.6.0-rc7", {"min_version": "6.6"}, "is 6.6.0-rc7, needs >= 6.6"),
        ("6.6.0-rc7+", {"min_version": "6.6-rc7"}, None),
        ("6.5.13-arch1", {"max_version": "6.5"}, None),  # the whole 6.5 series
        ("6.5.0-rc2", {"max_version": "6.5"}, None),
        ("6.6.0-rc1", {"max_version": "6.5"}, "is 6.6.0-rc1, needs <= 6.5"),
        ("6.5.13", {"max_version": "6.5.12"}, "is 6.5.13, needs <= 6.5.12"),  # exact
        ("6.5.12-dirty", {"max_version": "6.5.12"}, None),
        ("6.13.0-rc3", {"max_version": "6.13-rc2"}, "is 6.13.0-rc3, needs <= 6.13-rc2"),
        ("6.13-rc2-dirty", {"max_version": "6.13-rc2"}, None),
        ("6.13.0", {"max_version": "6.13-rc2"}, "is 6.13.0, needs <= 6.13-rc2"),
        ("6.12.3", {"min_version": "6.12", "max_version": "6.12"}, None),
        ("6.11.9", {"min_version": "6.12", "max_version": "6.13"}, "is 6.11.9, needs >= 6.12"),
        ("6.14.0", {"min_version": "6.12", "max_version": "6.13"}, "is 6.14.0, needs <= 6.13"),
    ],
)
def test_versions(release: str, marker: dict[str, object], unmet: str | None) -> None:
    verdict = verdict_of(Facts(release=release), marker)
    assert verdict.unmet == ([unmet] if unmet else [])
    assert verdict.unchecked == []


VERSION = st.tuples(
    st.integers(0, 30), st.integers(0, 30), st.integers(0, 300), st.none() | st.integers(1, 9)
)


def spell(version: tuple[int, int, int, int | None], *, patch: bool = True) -> str:
    major, minor, micro, rc = version
    text = f"{major}.{minor}" + (f".{micro}" if patch else "")
    return text + (f"-rc{rc}" if rc is not None else "")


def key(version: tuple[int, int, int, int | None], *, patch: bool = True) -> tuple[int, ...]:
    """Where a version sorts: a release candidate before its release."""
    major, minor, micro, rc = version
    return (major, minor, micro if patch else 0, 0 if rc is not None else 1, rc or 0)


@given(VERSION, VERSION, st.sampled_from(["", "-56-cloud-amd64", "+", "-arch1-1"]))
def test_min_version_property(
    kernel: tuple[int, int, int, int | None], minimum: tuple[int, int, int, int | None], tail: str
) -> None:
    verdict = verdict_of(Facts(release=spell(kernel) + tail), {"min_version": spell(minimum)})
    assert verdict.ok == (key(kernel) >= key(minimum))


@given(VERSION, VERSION, st.booleans())
def test_max_version_property(
    kernel: tuple[int, int, int, int | None],
    maximum: tuple[int, int, int, int | None],
    series: bool,
) -> None:
    limit = (maximum[0], maximum[1], 0, None) if series else maximum
    text = spell(limit, patch=not series)
    verdict = verdict_of(Facts(release=spell(kernel) + "-generic"), {"max_version": text})
    if series:  # "6.5" is every 6.5.x and its release candidates
        assert verdict.ok == (kernel[:2] <= limit[:2])
    else:
        assert verdict.ok == (key(kernel) <= key(limit))


def test_verdict_basics() -> None:
    assert Verdict().ok and Verdict().reason("k") == ""
    assert not Verdict(unmet=["lacks CONFIG_X"]).ok
    assert not Verdict(unchecked=["symbols=['x']: no vmlinux"]).ok
    assert Verdict(unmet=["lacks CONFIG_X"]).reason("k") == "kernel k lacks CONFIG_X"


def test_requirements_compare_by_meaning_not_spelling() -> None:
    assert parse(config=["SMP"]) == parse(config=["CONFIG_SMP"])
    assert parse(min_version="6.12") == parse(min_version="6.12.0")
    assert parse(arch="amd64") == parse(arch="x86_64")


VALUE: st.SearchStrategy[Value] = st.one_of(
    st.none(), st.sampled_from(["y", "m", "n"]), st.integers(-5, 5000), st.text(max_size=5)
)


@given(VALUE)
def test_off_is_the_negation_of_enabled(value: Value) -> None:
    config = KernelConfig({"CONFIG_X": value}, "prop")
    (enabled,) = parse(config=["X"]).config
    (off,) = parse(config=["!X"]).config
    assert (enabled.unmet(config) is None) != (off.unmet(config) is None)
    assert (enabled.unmet(config) is None) == (value not in (None, "n"))


def test_struct_layout_is_what_the_sample_says() -> None:
    # The hand-built BTF above is what the BTF tests must agree with (guards the fixture).
    assert BTF_SAMPLE.offsetof("struct rq", "scx.local_dsq.nr") == 4
    assert BTF_SAMPLE.offsetof("struct rq", "cpu_load[2]") == 12 + 2 * 4

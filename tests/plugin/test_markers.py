"""The ``ktstr`` marker and ``ktstr_test`` as users run them: each requirement kind met and unmet
on real kernels (Debian's 6.1 cloud kernel, a tinyconfig tree, the running kernel's BTF and
config), the exact skip reasons, ``--kernel-strict``, bad marker arguments, and where a marker
may sit (stacked with parametrize, on a class, on a module, on a test with no kernel fixture)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.fakes import make_build_tree
from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import collected_ids, junit, kernel_summary, run, skip_lines, tree_release

RUNNING_BTF = Path("/sys/kernel/btf/vmlinux")
PROC_CONFIG = Path("/proc/config.gz")

# --- every requirement kind, met and unmet, on the Debian kernel and the tinyconfig tree --------

# name, marker arguments, then what the Debian 6.1 kernel and the tinyconfig 6.1 tree lack
# (None: met). tinyconfig has no SMP and no modules; neither has sched_ext (6.12) or EEVDF (6.6).
CASES: list[tuple[str, str, str | None, str | None]] = [
    ("config_enabled", 'config=["BPF_SYSCALL", "DEBUG_INFO_BTF"]', None, None),
    ("config_smp", 'config=["SMP"]', None, "lacks CONFIG_SMP"),
    (
        "config_absent",
        'config=["SCHED_CLASS_EXT"]',
        "lacks CONFIG_SCHED_CLASS_EXT",
        "lacks CONFIG_SCHED_CLASS_EXT",
    ),
    ("config_exact", 'config=["HZ=250"]', None, None),
    (
        "config_exact_other",
        'config=["HZ=1000"]',
        "has CONFIG_HZ=250, needs CONFIG_HZ=1000",
        "has CONFIG_HZ=250, needs CONFIG_HZ=1000",
    ),
    (
        "config_module",
        'config=["EXT4_FS=m"]',
        "has CONFIG_EXT4_FS=y, needs CONFIG_EXT4_FS=m",
        "lacks CONFIG_EXT4_FS (needs CONFIG_EXT4_FS=m)",
    ),
    ("config_off", 'config=["!PREEMPT_RT"]', None, None),
    ("config_off_unmet", 'config=["!SMP"]', "has CONFIG_SMP=y, needs it off", None),
    ("symbols_met", 'symbols=["runqueues", "schedule"]', None, None),
    ("symbols_smp", 'symbols=["__per_cpu_offset"]', None, "lacks symbol __per_cpu_offset"),
    (
        "symbols_unmet",
        'symbols=["scx_bpf_dispatch"]',
        "lacks symbol scx_bpf_dispatch",
        "lacks symbol scx_bpf_dispatch",
    ),
    ("btf_type", 'btf=["struct rq", "struct sched_entity"]', None, None),
    ("btf_member", 'btf=["struct rq.nr_running", "struct sched_entity.vruntime"]', None, None),
    (
        "btf_type_unmet",
        'btf=["struct scx_rq"]',
        "lacks BTF type struct scx_rq",
        "lacks BTF type struct scx_rq",
    ),
    (
        "btf_member_unmet",
        'btf=["struct sched_entity.vlag"]',
        "lacks BTF member struct sched_entity.vlag",
        "lacks BTF member struct sched_entity.vlag",
    ),
    ("arch_met", 'arch="x86_64"', None, None),
    ("arch_alias", 'arch=["aarch64", "amd64"]', None, None),
    ("arch_unmet", 'arch="aarch64"', "is x86_64, needs arch arm64", "is x86_64, needs arch arm64"),
    ("min_met", 'min_version="6.1"', None, None),
    ("min_unmet", 'min_version="6.6"', "is 6.1.0, needs >= 6.6", "is 6.1.192, needs >= 6.6"),
    ("max_series", 'max_version="6.1"', None, None),
    ("max_patch", 'max_version="6.1.100"', None, "is 6.1.192, needs <= 6.1.100"),
    ("max_unmet", 'max_version="5.15"', "is 6.1.0, needs <= 5.15", "is 6.1.192, needs <= 5.15"),
]


def literal(text: str) -> str:
    """An fnmatch pattern for ``text`` ('[' opens a character class); '*' still matches any."""
    return text.replace("[", "[[]")


def line_of(path: Path, text: str) -> int:
    """The 1-based number of the line of ``path`` that holds ``text``."""
    (number,) = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


@dataclass(frozen=True)
class Module:
    source: str
    lines: dict[str, int]  # test name -> the line pytest reports a skip at (its decorator)


def requirement_module(cases: list[tuple[str, str, str | None, str | None]]) -> Module:
    out, lines = ["import pytest", "from pytest_ktstr_vmlinux import ktstr_test", ""], {}
    for name, args, *_ in cases:
        out += ["", f"@ktstr_test({args})"]
        lines[name] = len(out)
        out += [f"def test_{name}():", "    pass", ""]
    return Module("\n".join(out), lines)


REQUIREMENTS = requirement_module(CASES)


@dataclass(frozen=True)
class Real:
    """A real kernel as the command line names it, and what its cases expect."""

    args: tuple[str, ...]
    release: str
    lacks: dict[str, str | None]


@pytest.fixture(params=["debian", "tinyconfig"])
def real(request: pytest.FixtureRequest) -> Real:
    if request.param == "debian":
        deb: DebianKernel = request.getfixturevalue("debian_kernel")
        # --kernel-sysroot=DIR with '=': as a separate argument pytest would take the path for
        # a test path when it picks the rootdir.
        args = (f"--kernel-sysroot={deb.sysroot}", f"--kernel={deb.release}")
        return Real(args, deb.release, {name: d for name, _, d, _ in CASES})
    tree: Path = request.getfixturevalue("tinyconfig_tree")
    return Real((f"--kernel={tree}",), tree_release(tree), {name: t for name, _, _, t in CASES})


@pytest.mark.real_kernel
def test_every_requirement_kind_met_and_unmet(pytester: pytest.Pytester, real: Real) -> None:
    pytester.makepyfile(test_req=REQUIREMENTS.source)
    result = run(pytester, "-rs", *real.args)
    unmet = {name: why for name, why in real.lacks.items() if why is not None}
    result.assert_outcomes(passed=len(CASES) - len(unmet), skipped=len(unmet))
    # One kernel: test ids are the plain names, and the reason names the kernel by its release.
    report = junit(pytester)
    assert report.outcomes() == {
        f"test_req.py::test_{name}": "skipped" if why else "passed"
        for name, why in real.lacks.items()
    }
    for name, why in unmet.items():
        assert report.cases[f"test_req.py::test_{name}"].message == (
            f"ktstr: kernel {real.release} {why}"
        )
    assert sorted(skip_lines(result)) == sorted(
        f"SKIPPED [1] test_req.py:{REQUIREMENTS.lines[name]}: ktstr: kernel {real.release} {why}"
        for name, why in unmet.items()
    )
    assert kernel_summary(result)[0] == (
        f"ktstr: kernel {real.release}: {len(CASES) - len(unmet)} passed, 0 failed,"
        f" {len(unmet)} skipped"
    )


@pytest.mark.real_kernel
def test_kernel_strict_fails_what_would_skip(pytester: pytest.Pytester, real: Real) -> None:
    pytester.makepyfile(test_req=REQUIREMENTS.source)
    result = run(pytester, "-rs", "--kernel-strict", *real.args)
    unmet = {name: why for name, why in real.lacks.items() if why is not None}
    # The check runs at setup: a requirement that does not hold is an error there.
    result.assert_outcomes(passed=len(CASES) - len(unmet), errors=len(unmet))
    assert skip_lines(result) == []
    report = junit(pytester)
    for name, why in real.lacks.items():
        assert report.cases[f"test_req.py::test_{name}"].outcome == ("error" if why else "passed")
    for why in unmet.values():
        result.stdout.fnmatch_lines(
            [literal(f"ktstr: kernel {real.release} {why} (--kernel-strict)")]
        )
    errors = f"{len(unmet)} error{'s' if len(unmet) > 1 else ''}"
    assert kernel_summary(result) == [
        f"ktstr: kernel {real.release}: {len(CASES) - len(unmet)} passed, 0 failed, 0 skipped,"
        f" {errors}"
    ]


@pytest.mark.real_kernel
def test_a_labelled_kernel_is_named_with_its_release(
    pytester: pytest.Pytester, debian_kernel: DebianKernel
) -> None:
    module = requirement_module(CASES[:3])
    pytester.makepyfile(test_req=module.source)
    release = debian_kernel.release
    result = run(
        pytester, "-rs", f"--kernel-sysroot={debian_kernel.sysroot}", f"--kernel=deb={release}"
    )
    result.assert_outcomes(passed=2, skipped=1)
    reason = f"ktstr: kernel deb ({debian_kernel.release}) lacks CONFIG_SCHED_CLASS_EXT"
    assert skip_lines(result) == [
        f"SKIPPED [1] test_req.py:{module.lines['config_absent']}: {reason}"
    ]
    head = f"ktstr: kernel deb ({debian_kernel.release}): 2 passed, 0 failed, 1 skipped"
    # pytest lists the skip under -rs: the per-kernel summary does not say it again.
    assert kernel_summary(result) == [head]
    assert sum(reason in line for line in result.outlines) == 1
    quiet = run(pytester, f"--kernel-sysroot={debian_kernel.sysroot}", f"--kernel=deb={release}")
    assert skip_lines(quiet) == []
    assert kernel_summary(quiet) == [head, f"  1 skipped: {reason}"]


UNCHECKABLE = """
from pytest_ktstr_vmlinux import ktstr_test

@ktstr_test(config=["SMP"])
def test_config():
    pass

@ktstr_test(symbols=["runqueues"])
def test_symbols():
    pass

@ktstr_test(btf=["struct rq.nr_running"])
def test_btf():
    pass

@ktstr_test(btf=["struct scx_rq"], min_version="6.1")
def test_btf_unmet():
    pass

@ktstr_test(config=["SCHED_CLASS_EXT"], btf=["struct scx_rq"])
def test_both():
    pass
"""


# What a named kernel's "cannot check" failure adds to its reason: why, and what to do.
NAMED_HELP = (
    "The kernel was named (from option), so a requirement that cannot be checked fails rather"
    " than skips: make what it reads available (the kernel's debug vmlinux: its debug package,"
    " the build tree's vmlinux or --vmlinux; its config; its BTF), or drop the requirement"
)


@pytest.mark.real_kernel
@pytest.mark.parametrize("strict", [False, True])
def test_what_cannot_be_checked_is_never_called_missing(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, strict: bool
) -> None:
    # The Debian image, away from its config-R, seen through an empty sysroot: no config file
    # and no debug vmlinux to read the config or symbols from, but the image's own ELF has .BTF.
    release = debian_kernel.release
    image = pytester.mkdir("kernels") / f"vmlinuz-{release}"
    try:
        os.link(debian_kernel.image, image)
    except OSError:  # another filesystem
        shutil.copyfile(debian_kernel.image, image)
    empty = pytester.mkdir("empty-root")
    pytester.makepyfile(test_req=UNCHECKABLE)
    strictness = ["--kernel-strict"] if strict else []
    result = run(pytester, "-rs", f"--kernel-sysroot={empty}", f"--kernel={image}", *strictness)
    probed = (
        f"{image.parent}/config-{release}, {empty}/boot/config-{release},"
        f" {empty}/lib/modules/{release}/config, {empty}/usr/lib/modules/{release}/config"
    )
    no_config = (
        f"config=['SMP']: no kernel config for '{image}': none of {probed} exists;"
        " no IKCONFIG in the image or vmlinux"
    )
    expected = {
        "test_config": f"ktstr: cannot check on kernel {release}: {no_config}",
        "test_symbols": f"ktstr: cannot check on kernel {release}: symbols=['runqueues']: no"
        f" vmlinux for kernel '{image}' (from option)",
        "test_btf": None,
        "test_btf_unmet": f"ktstr: kernel {release} lacks BTF type struct scx_rq",
        "test_both": f"ktstr: kernel {release} lacks BTF type struct scx_rq; cannot check on"
        f" kernel {release}: {no_config.replace('SMP', 'SCHED_CLASS_EXT')}",
    }
    report = junit(pytester)
    for name, reason in expected.items():
        case = report.cases[f"test_req.py::{name}"]
        if reason is None:
            assert case.outcome == "passed"
        elif "lacks" not in reason:
            # Only what cannot be checked, on a kernel the user named: an error, never a skip.
            assert case.outcome == "error"
            result.stdout.fnmatch_lines([literal(f"*{reason}. {NAMED_HELP}")])
        elif strict:
            assert case.outcome == "error"
            result.stdout.fnmatch_lines([literal(f"{reason} (--kernel-strict)")])
        else:
            # What the kernel plainly lacks decides: the test could not run there anyway.
            assert (case.outcome, case.message) == ("skipped", reason)
    # Each reason is one line: the missing vmlinux's probe report (in the header) is not in it.
    assert len(skip_lines(result)) == (0 if strict else 2)
    assert not any(line.startswith("  refused ") for line in result.outlines[-12:])
    if strict:
        result.assert_outcomes(passed=1, errors=4)
    else:
        result.assert_outcomes(passed=1, skipped=2, errors=2)


SYMBOL_TESTS = """
from pytest_ktstr_vmlinux import ktstr_test

@ktstr_test(symbols=["runqueues"])
def test_runqueues(kernel_symbols):
    assert kernel_symbols["runqueues"]

@ktstr_test(symbols=["schedule", "jiffies"])
def test_two(kernel_symbols):
    pass

@ktstr_test(symbols=["init_task"], min_version="6.1")
def test_versioned(kernel_symbols):
    pass
"""


@pytest.mark.parametrize("source", ["option", "env", "ini"])
def test_a_named_kernel_that_cannot_be_checked_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # An image without its vmlinux: its symbols cannot be read, so no symbols= requirement can
    # be checked. The user named it: every one of these tests errors, saying why and what to do.
    make_build_tree(pytester.path / "linux", "6.1.0-fake", vmlinux=False)
    image = "linux/arch/x86/boot/bzImage"
    args: list[str] = []
    if source == "option":
        args.append(f"--kernel={image}")
    elif source == "env":
        monkeypatch.setenv("KTSTR_KERNEL", str(pytester.path / image))
    else:
        pytester.makeini(f"[pytest]\nktstr_kernel = {image}\n")
    pytester.makepyfile(test_req=SYMBOL_TESTS)
    result = run(pytester, "-rs", *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=3)
    spec = image if source != "env" else str(pytester.path / image)
    no_vmlinux = f"no vmlinux for kernel '{spec}' (from {source})"
    help_text = NAMED_HELP.replace("(from option)", f"(from {source})")
    reasons = {
        "test_runqueues": f"symbols=['runqueues']: {no_vmlinux}",
        "test_two": f"symbols=['schedule', 'jiffies']: {no_vmlinux}",
        "test_versioned": f"symbols=['init_task']: {no_vmlinux}",
    }
    report = junit(pytester)
    for name, why in reasons.items():
        case = report.cases[f"test_req.py::{name}"]
        assert case.outcome == "error", (name, case)
        assert case.message.startswith('failed on setup with "Failed: ktstr: cannot check')
        assert f"ktstr: cannot check on kernel 6.1.0-fake: {why}. {help_text}" in result.outlines
    assert skip_lines(result) == []


def test_the_default_kernel_that_cannot_be_checked_skips(pytester: pytest.Pytester) -> None:
    # Nobody named a kernel: the running one, seen through an empty sysroot, has no vmlinux to
    # read symbols from. As the fixtures do for it, the tests skip and say why.
    empty = pytester.mkdir("empty")
    pytester.makepyfile(test_req=SYMBOL_TESTS)
    result = run(pytester, "-rs", f"--kernel-sysroot={empty}")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=3)
    name = _running_name()
    for case in junit(pytester).cases.values():
        assert case.outcome == "skipped"
        assert case.message.startswith(f"ktstr: cannot check on kernel {name}: symbols=[")
        assert "no vmlinux for kernel 'running' (from default)" in case.message
        assert "named" not in case.message
    strict = run(pytester, "-rs", f"--kernel-sysroot={empty}", "--kernel-strict")
    strict.assert_outcomes(errors=3)


# --- the running kernel: its BTF and its config ------------------------------------------------


def _running_name() -> str:
    """How reasons name the running kernel: its release, made safe for a test id."""
    release = os.uname().release
    label = re.sub(r"[^A-Za-z0-9._+-]+", "_", release).strip("_")
    return label if label == release else f"{label} ({release})"


def test_running_kernel_btf(pytester: pytest.Pytester) -> None:
    if not RUNNING_BTF.is_file():
        pytest.skip(f"{RUNNING_BTF} is missing: the running kernel has no CONFIG_DEBUG_INFO_BTF")
    path = pytester.makepyfile(
        test_btf="""
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test(btf=["struct task_struct", "struct task_struct.pid", "struct list_head.next"])
        def test_met(kernel_btf):
            assert kernel_btf.offsetof("struct list_head", "next") == 0

        @ktstr_test(btf=["struct ktstr_no_such_type"])
        def test_type_unmet():
            pass

        @ktstr_test(btf=["struct task_struct.ktstr_no_such_member"])
        def test_member_unmet():
            pass
        """
    )
    # The default kernel is the running one; its BTF is /sys/kernel/btf/vmlinux, no vmlinux needed.
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    name = _running_name()
    assert sorted(skip_lines(result)) == sorted(
        [
            f"SKIPPED [1] test_btf.py:{line_of(path, 'ktstr_no_such_type')}: ktstr: kernel {name}"
            " lacks BTF type struct ktstr_no_such_type",
            f"SKIPPED [1] test_btf.py:{line_of(path, 'ktstr_no_such_member')}: ktstr: kernel"
            f" {name} lacks BTF member struct task_struct.ktstr_no_such_member",
        ]
    )


def test_running_kernel_config_from_proc_config_gz(pytester: pytest.Pytester) -> None:
    release = os.uname().release
    if not PROC_CONFIG.is_file():
        pytest.skip(f"{PROC_CONFIG} is missing: the running kernel has no CONFIG_IKCONFIG_PROC")
    for host_config in (
        f"/boot/config-{release}",
        f"/lib/modules/{release}/config",
        f"/usr/lib/modules/{release}/config",
    ):
        if Path(host_config).exists():
            pytest.skip(f"{host_config} exists: the config would come from there")
    # The oracle: the file as gzip and a regex read it, not the plugin's parser.
    text = gzip.decompress(PROC_CONFIG.read_bytes()).decode()
    hz = re.search(r"^CONFIG_HZ=(\d+)$", text, re.MULTILINE)
    off = re.search(r"^# CONFIG_(\w+) is not set$", text, re.MULTILINE)
    assert hz is not None and off is not None, "a kernel config sets HZ and leaves options off"
    path = pytester.makepyfile(
        test_cfg=f"""
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test(config=["HZ={hz[1]}", "!{off[1]}"])
        def test_met(kernel_config):
            assert kernel_config.source == "/proc/config.gz"

        @ktstr_test(config=["HZ={int(hz[1]) + 1}"])
        def test_hz_unmet():
            pass

        @ktstr_test(config=["{off[1]}"])
        def test_off_unmet():
            pass
        """
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    name = _running_name()
    hz_line, off_line = line_of(path, f"HZ={int(hz[1]) + 1}"), line_of(path, f'["{off[1]}"]')
    assert sorted(skip_lines(result)) == sorted(
        [
            f"SKIPPED [1] test_cfg.py:{off_line}: ktstr: kernel {name} lacks CONFIG_{off[1]}",
            f"SKIPPED [1] test_cfg.py:{hz_line}: ktstr: kernel {name} has CONFIG_HZ={hz[1]},"
            f" needs CONFIG_HZ={int(hz[1]) + 1}",
        ]
    )


FIXTURE_TESTS = """
def test_path(vmlinux_path):
    pass

def test_config(kernel_config):
    pass

def test_plain(kernel):
    pass
"""


def test_kernel_strict_fails_default_kernel_fixture_skips(pytester: pytest.Pytester) -> None:
    # The running kernel seen through an empty sysroot has no vmlinux and no config: skipped by
    # default (nobody asked for that kernel), failed with --kernel-strict.
    empty = pytester.mkdir("empty")
    pytester.makepyfile(test_fix=FIXTURE_TESTS)
    result = run(pytester, "-rs", f"--kernel-sysroot={empty}")
    result.assert_outcomes(passed=1, skipped=2)
    strict = run(pytester, "-rs", f"--kernel-sysroot={empty}", "--kernel-strict")
    strict.assert_outcomes(passed=1, errors=2)
    strict.stdout.fnmatch_lines(
        [
            "*ktstr: no vmlinux for the running kernel *; install its debug package or pass"
            " --kernel (--kernel-strict)"
        ]
    )
    assert skip_lines(strict) == []


# --- bad marker arguments: a collection error naming the test -----------------------------------

BAD_MARKERS = [
    (
        "@pytest.mark.ktstr('SCHED_CLASS_EXT')",
        "ktstr takes keyword arguments only (min_version, max_version, config, symbols, btf,"
        " arch), got positional 'SCHED_CLASS_EXT'",
    ),
    (
        "@pytest.mark.ktstr(configs=['SMP'])",
        "ktstr got an unknown argument configs=; it takes min_version, max_version, config,"
        " symbols, btf, arch; did you mean config=?",
    ),
    (
        "@pytest.mark.ktstr(config='SCHED_CLASS_EXT')",
        "ktstr config='SCHED_CLASS_EXT' must be a list of strings: config=['SCHED_CLASS_EXT']",
    ),
    (
        "@pytest.mark.ktstr(min_version='6.x')",
        "ktstr min_version: '6.x' is not a kernel version like 6.12, 6.12.3 or 6.13-rc1",
    ),
    (
        "@pytest.mark.ktstr(min_version=6.1)",
        "ktstr min_version=6.1 must be a string like '6.12' (6.1 != 6.10)",
    ),
    ("@pytest.mark.ktstr(arch='sparc64')", "ktstr arch: 'sparc64' is not one of *"),
    (
        "@pytest.mark.ktstr(min_version='6.6', max_version='6.1')",
        "ktstr min_version 6.6 is above max_version 6.1: nothing runs",
    ),
    (
        "@ktstr_test(conifg=['SMP'])",
        "ktstr got an unknown argument conifg=; it takes min_version, max_version, config,"
        " symbols, btf, arch; did you mean config=?",
    ),
    (
        "@ktstr_test(btf=['struct rq..scx'])",
        "ktstr btf: 'struct rq..scx': member path '.scx' is not names, dots and [index]*",
    ),
]


@pytest.fixture
def fake_kernel(pytester: pytest.Pytester) -> str:
    make_build_tree(pytester.path / "linux", release="6.1.0-fake")
    return "--kernel=linux"


@pytest.mark.parametrize(("decorator", "message"), BAD_MARKERS)
def test_bad_marker_arguments_are_a_collection_error(
    pytester: pytest.Pytester, fake_kernel: str, decorator: str, message: str
) -> None:
    pytester.makepyfile(
        test_bad=f"""
        import pytest
        from pytest_ktstr_vmlinux import ktstr_test

        def test_before():
            pass

        {decorator}
        def test_marked():
            pass
        """
    )
    result = run(pytester, fake_kernel)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR collecting test_bad.py*", literal(f"test_bad.py::test_marked: {message}")]
    )


def test_bad_marker_report_has_no_chained_exception(
    pytester: pytest.Pytester, fake_kernel: str
) -> None:
    pytester.makepyfile(
        test_bad="import pytest\n\n@pytest.mark.ktstr('SMP')\ndef test_marked():\n    pass\n"
    )
    result = run(pytester, fake_kernel)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "During handling of the above exception" not in result.stdout.str()


@pytest.mark.parametrize(
    ("where", "nodeid"),
    [
        ("module", "test_bad.py::test_a"),
        ("class", "test_bad.py::TestMarked::test_m"),
    ],
)
def test_bad_class_or_module_marker_names_the_test(
    pytester: pytest.Pytester, fake_kernel: str, where: str, nodeid: str
) -> None:
    mark = "pytest.mark.ktstr(symbols='runqueues')"
    head = f"pytestmark = {mark}\n" if where == "module" else ""
    deco = f"@{mark}\n" if where == "class" else ""
    pytester.makepyfile(
        test_bad=f"import pytest\n{head}\ndef test_a():\n    pass\n\n"
        f"{deco}class TestMarked:\n    def test_m(self):\n        pass\n"
    )
    result = run(pytester, fake_kernel)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            literal(
                f"{nodeid}: ktstr symbols='runqueues' must be a list of strings:"
                " symbols=['runqueues']"
            )
        ]
    )


def test_ktstr_test_with_a_positional_argument_fails_at_import(
    pytester: pytest.Pytester, fake_kernel: str
) -> None:
    pytester.makepyfile(
        test_bad="from pytest_ktstr_vmlinux import ktstr_test\n\n"
        "@ktstr_test('SMP')\ndef test_marked():\n    pass\n"
    )
    result = run(pytester, fake_kernel)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*TypeError: ktstr_test takes keyword arguments only, like the marker; got 'SMP'"]
    )


# --- where a marker may sit -------------------------------------------------------------------


@pytest.fixture
def two_fake_kernels(pytester: pytest.Pytester) -> tuple[str, str]:
    """Two fake build trees, 6.1 (label old) and 6.6 (label new): versions decide."""
    make_build_tree(pytester.path / "linux-6.1", release="6.1.0-fake")
    make_build_tree(pytester.path / "linux-6.6", release="6.6.0-fake")
    return "--kernel=old=linux-6.1", "--kernel=new=linux-6.6"


def test_strict_markers_knows_ktstr(pytester: pytest.Pytester, fake_kernel: str) -> None:
    pytester.makepyfile(
        test_ok="""
        import pytest
        from pytest_ktstr_vmlinux import ktstr_test

        @pytest.mark.ktstr(min_version="6.1")
        def test_marker():
            pass

        @ktstr_test(max_version="6.1")
        def test_decorator():
            pass
        """
    )
    result = run(
        pytester, "--strict-markers", "-W", "error::pytest.PytestUnknownMarkWarning", fake_kernel
    )
    result.assert_outcomes(passed=2)
    markers = run(pytester, "--markers")
    markers.stdout.fnmatch_lines(
        [
            "@pytest.mark.ktstr(min_version=None, max_version=None, config=(), symbols=(), btf=(),"
            " arch=None): run only on kernels that meet these requirements; *"
        ]
    )


def test_stacked_with_parametrize(
    pytester: pytest.Pytester, two_fake_kernels: tuple[str, str]
) -> None:
    pytester.makepyfile(
        test_stack="""
        import pytest
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test(min_version="6.6")
        @pytest.mark.parametrize("n", [1, 2])
        def test_above(n, kernel):
            assert kernel.release == "6.6.0-fake"

        @pytest.mark.parametrize("n", [1, 2])
        @ktstr_test(max_version="6.1")
        def test_below(n):
            pass
        """
    )
    result = run(pytester, *two_fake_kernels)
    result.assert_outcomes(passed=4, skipped=4)
    assert junit(pytester).outcomes() == {
        "test_stack.py::test_above[old-1]": "skipped",
        "test_stack.py::test_above[old-2]": "skipped",
        "test_stack.py::test_above[new-1]": "passed",
        "test_stack.py::test_above[new-2]": "passed",
        "test_stack.py::test_below[old-1]": "passed",
        "test_stack.py::test_below[old-2]": "passed",
        "test_stack.py::test_below[new-1]": "skipped",
        "test_stack.py::test_below[new-2]": "skipped",
    }
    assert kernel_summary(result) == [
        "ktstr: kernel old (6.1.0-fake): 2 passed, 0 failed, 2 skipped",
        "  2 skipped: ktstr: kernel old (6.1.0-fake) is 6.1.0, needs >= 6.6",
        "ktstr: kernel new (6.6.0-fake): 2 passed, 0 failed, 2 skipped",
        "  2 skipped: ktstr: kernel new (6.6.0-fake) is 6.6.0, needs <= 6.1",
    ]


def test_module_and_class_markers(
    pytester: pytest.Pytester, two_fake_kernels: tuple[str, str]
) -> None:
    pytester.makepyfile(
        test_module="""
        import pytest

        pytestmark = pytest.mark.ktstr(min_version="6.6")

        def test_no_fixture():
            pass

        def test_with_kernel(kernel):
            assert kernel.label == "new"
        """,
        test_class="""
        import pytest

        @pytest.mark.ktstr(max_version="6.1")
        class TestOld:
            def test_method(self):
                pass

        class TestUnmarked:
            def test_method(self):
                pass

        def test_function():
            pass
        """,
    )
    result = run(pytester, *two_fake_kernels)
    assert junit(pytester).outcomes() == {
        "test_module.py::test_no_fixture[old]": "skipped",
        "test_module.py::test_no_fixture[new]": "passed",
        "test_module.py::test_with_kernel[old]": "skipped",
        "test_module.py::test_with_kernel[new]": "passed",
        "test_class.py::TestOld::test_method[old]": "passed",
        "test_class.py::TestOld::test_method[new]": "skipped",
        # Unmarked tests that use no kernel run once, with their ids unchanged.
        "test_class.py::TestUnmarked::test_method": "passed",
        "test_class.py::test_function": "passed",
    }
    result.assert_outcomes(passed=5, skipped=3)


def test_marked_test_without_kernel_fixture_runs_per_kernel(
    pytester: pytest.Pytester, two_fake_kernels: tuple[str, str]
) -> None:
    pytester.makepyfile(
        test_bare="""
        import pytest
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test
        def test_bare_decorator():
            pass

        @ktstr_test()
        def test_empty_call():
            pass

        @pytest.mark.ktstr
        def test_bare_marker():
            pass

        def test_unmarked():
            pass
        """
    )
    result = run(pytester, "--collect-only", "-q", *two_fake_kernels)
    assert sorted(collected_ids(result)) == sorted(
        [
            *(
                f"test_bare.py::{t}[{k}]"
                for t in ("test_bare_decorator", "test_empty_call", "test_bare_marker")
                for k in ("old", "new")
            ),
            "test_bare.py::test_unmarked",
        ]
    )
    run(pytester, *two_fake_kernels).assert_outcomes(passed=7)


def test_with_one_kernel_ids_are_unchanged_and_requirements_checked(
    pytester: pytest.Pytester, fake_kernel: str
) -> None:
    pytester.makepyfile(
        test_one="""
        from pytest_ktstr_vmlinux import ktstr_test

        @ktstr_test(min_version="6.6")
        def test_new():
            pass

        @ktstr_test(max_version="6.1")
        def test_old(kernel):
            assert kernel.release == "6.1.0-fake"
        """
    )
    result = run(pytester, "-rs", fake_kernel)
    assert junit(pytester).outcomes() == {
        "test_one.py::test_new": "skipped",
        "test_one.py::test_old": "passed",
    }
    line = line_of(pytester.path / "test_one.py", 'min_version="6.6"')
    assert skip_lines(result) == [
        f"SKIPPED [1] test_one.py:{line}: ktstr: kernel 6.1.0-fake is 6.1.0, needs >= 6.6"
    ]


def test_a_class_marker_does_not_leak_to_other_subclasses(
    pytester: pytest.Pytester, two_fake_kernels: tuple[str, str]
) -> None:
    pytester.makepyfile(
        checks_shared="class Checks:\n    def test_x(self):\n        pass\n",
        test_a="import pytest\nfrom checks_shared import Checks\n\n"
        "@pytest.mark.ktstr(min_version='6.6')\nclass TestOnNew(Checks):\n    pass\n",
        test_b="from checks_shared import Checks\n\nclass TestAlways(Checks):\n    pass\n",
    )
    result = run(pytester, "--collect-only", "-q", *two_fake_kernels)
    # test_b's class is unmarked and uses no kernel: it must run once, as it does alone.
    assert "test_b.py::TestAlways::test_x" in collected_ids(result)

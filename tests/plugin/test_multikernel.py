"""Several kernels in one run: how they are named and labelled, which tests run once per kernel,
the report header, the per-kernel summary, JUnit properties, xdist, and session fixtures built
once per kernel. Fake build trees for the structure; the Debian kernel and the tinyconfig tree
for a real run over two kernels."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.fakes import build_id_for, make_build_tree, write_vmlinux
from tests.helpers.kernels import DebianKernel
from tests.helpers.runs import collected_ids, junit, kernel_summary, run, tree_release

TESTS = """
import pytest

def test_kernel(kernel):
    pass

def test_vmlinux(vmlinux_path, kernel):
    assert vmlinux_path == kernel.vmlinux

@pytest.mark.ktstr(min_version="6.6")
def test_new_only():
    pass

def test_plain():
    pass
"""


@pytest.fixture
def trees(pytester: pytest.Pytester) -> dict[str, Path]:
    """Two fake kernel build trees, 6.1 and 6.6, each with its paired vmlinux."""
    return {
        "6.1.0-a": make_build_tree(pytester.path / "linux-a", release="6.1.0-a"),
        "6.6.0-b": make_build_tree(pytester.path / "linux-b", release="6.6.0-b"),
    }


def ids(test: str, labels: list[str]) -> list[str]:
    return [f"{test}[{label}]" for label in labels]


def expected_ids(labels: list[str]) -> list[str]:
    """What ``--collect-only -q`` lists for TESTS: grouped by kernel (a session-scoped
    parameter), the test with no kernel last, once."""
    per_kernel = ["test_kernel", "test_vmlinux", "test_new_only"]
    return [f"test_m.py::{t}[{label}]" for label in labels for t in per_kernel] + [
        "test_m.py::test_plain"
    ]


# --- ids and labels -----------------------------------------------------------------------------


def test_two_kernels_parametrize_kernel_tests_by_release(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS)
    result = run(pytester, "--collect-only", "-q", "--kernel=linux-a", "--kernel=linux-b")
    assert collected_ids(result) == expected_ids(["6.1.0-a", "6.6.0-b"])


def test_one_kernel_leaves_ids_alone(pytester: pytest.Pytester, trees: dict[str, Path]) -> None:
    pytester.makepyfile(test_m=TESTS)
    result = run(pytester, "--collect-only", "-q", "--kernel=linux-a")
    assert collected_ids(result) == [
        "test_m.py::test_kernel",
        "test_m.py::test_vmlinux",
        "test_m.py::test_new_only",
        "test_m.py::test_plain",
    ]


def test_labels_given_on_the_command_line(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS)
    result = run(pytester, "-v", "--kernel=old=linux-a", "--kernel=new=linux-b")
    result.assert_outcomes(passed=6, skipped=1)
    assert junit(pytester).outcomes() == {
        "test_m.py::test_kernel[old]": "passed",
        "test_m.py::test_vmlinux[old]": "passed",
        "test_m.py::test_new_only[old]": "skipped",
        "test_m.py::test_kernel[new]": "passed",
        "test_m.py::test_vmlinux[new]": "passed",
        "test_m.py::test_new_only[new]": "passed",
        "test_m.py::test_plain": "passed",
    }
    # The label names the kernel; the release follows when it says something else.
    assert kernel_summary(result) == [
        "ktstr: kernel old (6.1.0-a): 2 passed, 0 failed, 1 skipped",
        "  1 skipped: ktstr: kernel old (6.1.0-a) is 6.1.0, needs >= 6.6",
        "ktstr: kernel new (6.6.0-b): 3 passed, 0 failed, 0 skipped",
    ]


def test_unknown_release_is_labelled_by_its_file_name(pytester: pytest.Pytester) -> None:
    # A vmlinux without a banner has no release: the file name, made safe for an id, labels it.
    write_vmlinux(pytester.path / "odd dir" / "my kernel#1.elf", b"no banner")
    make_build_tree(pytester.path / "linux-a", release="6.1.0-a")
    pytester.makepyfile(test_m="def test_k(kernel):\n    print('LABEL', kernel.label)\n")
    args = ("--kernel=odd dir/my kernel#1.elf", "--kernel=linux-a")
    result = run(pytester, "--collect-only", "-q", *args)
    assert collected_ids(result) == [
        "test_m.py::test_k[my_kernel_1.elf]",
        "test_m.py::test_k[6.1.0-a]",
    ]
    result = run(pytester, "-s", *args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*LABEL my_kernel_1.elf*", "*LABEL 6.1.0-a*"])
    # Without a release, the reason names the kernel by its label alone.
    assert kernel_summary(result) == [
        "ktstr: kernel my_kernel_1.elf: 1 passed, 0 failed, 0 skipped",
        "ktstr: kernel 6.1.0-a: 1 passed, 0 failed, 0 skipped",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--kernel=linux-a", "--kernel=linux-c"],
            "ERROR: ktstr: kernels 'linux-a' and 'linux-c' are both labelled '6.1.0-a'; give each"
            " its own label: --kernel a=linux-a --kernel b=linux-c",
        ),
        (
            ["--kernel=x=linux-a", "--kernel=x=linux-b"],
            "ERROR: ktstr: kernels 'linux-a' and 'linux-b' are both labelled 'x'; give each its"
            " own label: --kernel a=linux-a --kernel b=linux-b",
        ),
        (
            # The default label of one is the explicit label of the other.
            ["--kernel=linux-a", "--kernel=6.1.0-a=linux-b"],
            "ERROR: ktstr: kernels 'linux-a' and 'linux-b' are both labelled '6.1.0-a'; give each"
            " its own label: --kernel a=linux-a --kernel b=linux-b",
        ),
        (
            ["--kernel=a b=linux-a"],
            "ERROR: ktstr: kernel 'a b=linux-a' (from --kernel): label 'a b' may hold only"
            " letters, digits and ._+- (a path containing '=' is written with a '/': ./a=b)",
        ),
        (["--kernel=x="], "ERROR: ktstr: kernel 'x=' (from --kernel): no kernel after x="),
        (
            ["--kernel=linux-a", "--kernel=linux-b", "--vmlinux=linux-a/vmlinux"],
            "ERROR: ktstr: --vmlinux linux-a/vmlinux names one kernel's vmlinux, but 2 kernels are"
            " given; pass their images or build trees and let each find its own",
        ),
    ],
)
def test_usage_errors(
    pytester: pytest.Pytester, trees: dict[str, Path], args: list[str], message: str
) -> None:
    make_build_tree(pytester.path / "linux-c", release="6.1.0-a")
    pytester.makepyfile(test_m=TESTS)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.lines


def test_kernel_list_from_the_environment(
    pytester: pytest.Pytester, trees: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_m=TESTS)
    monkeypatch.setenv("KTSTR_KERNEL_LIST", " a=linux-a ; b=linux-b ;")
    monkeypatch.setenv("KTSTR_KERNEL", "linux-a")  # the list wins over the single kernel
    result = run(pytester, "--collect-only", "-q")
    assert collected_ids(result) == expected_ids(["a", "b"])
    result = run(pytester)
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "ktstr: kernel=linux-a (from env) * release=6.1.0-a * label=a",
            "ktstr: kernel=linux-b (from env) * release=6.6.0-b * label=b",
        ]
    )
    # --kernel wins over the list.
    result = run(pytester, "--collect-only", "-q", "--kernel=linux-b")
    assert collected_ids(result) == [
        "test_m.py::test_kernel",
        "test_m.py::test_vmlinux",
        "test_m.py::test_new_only",
        "test_m.py::test_plain",
    ]
    result = run(pytester, "--kernel=linux-b")
    result.assert_outcomes(passed=4)
    header = [line for line in result.outlines if line.startswith("ktstr: kernel=")]
    assert len(header) == 1
    assert header[0].startswith("ktstr: kernel=linux-b (from option) ")
    assert header[0].endswith(" paired=build-id")  # one kernel: no label


def test_kernel_list_with_a_bad_label_names_the_variable(
    pytester: pytest.Pytester, trees: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_m=TESTS)
    monkeypatch.setenv("KTSTR_KERNEL_LIST", "a=linux-a;b!=linux-b")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ktstr: kernel 'b!=linux-b' (from $KTSTR_KERNEL_LIST): label 'b!' may hold*"]
    )


@pytest.mark.parametrize("separator", [";", "\n    "])
def test_kernel_list_in_the_ini_file(
    pytester: pytest.Pytester,
    trees: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    separator: str,
) -> None:
    pytester.makeini(f"[pytest]\nktstr_kernel =\n    a=linux-a{separator}b=linux-b\n")
    pytester.makepyfile(test_m=TESTS)
    # Run from a subdirectory: the ini's paths are relative to the ini, not to the cwd.
    monkeypatch.chdir(pytester.mkdir("sub"))
    result = run(pytester, "--collect-only", "-q", "../test_m.py")
    assert collected_ids(result) == expected_ids(["a", "b"])
    result = run(pytester, "../test_m.py")
    result.assert_outcomes(passed=6, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"ktstr: kernel=linux-a (from ini) image={pytester.path}/linux-a/* label=a",
            f"ktstr: kernel=linux-b (from ini) image={pytester.path}/linux-b/* label=b",
        ]
    )


# --- the header, the summary and JUnit -------------------------------------------------------


def test_header_has_a_line_per_kernel_with_its_label(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS)
    result = run(pytester, "--kernel=old=linux-a", "--kernel=linux-b")
    a, b = trees["6.1.0-a"], trees["6.6.0-b"]
    header = [line for line in result.outlines if line.startswith("ktstr: kernel=")]
    assert header == [
        f"ktstr: kernel=linux-a (from option) image={a}/arch/x86/boot/bzImage"
        f" vmlinux={a}/vmlinux release=6.1.0-a build_id={build_id_for('6.1.0-a').hex()}"
        " paired=build-id label=old",
        f"ktstr: kernel=linux-b (from option) image={b}/arch/x86/boot/bzImage"
        f" vmlinux={b}/vmlinux release=6.6.0-b build_id={build_id_for('6.6.0-b').hex()}"
        " paired=build-id label=6.6.0-b",
    ]


def test_summary_counts_failures_and_reasons_per_kernel(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(
        test_m="""
        import pytest

        def test_fails_on_old(kernel):
            assert kernel.release != "6.1.0-a"

        def test_skips_in_body(kernel):
            pytest.skip("not today")

        @pytest.mark.xfail(reason="known", strict=False)
        def test_xfail(kernel):
            assert False

        @pytest.mark.xfail(reason="only old is broken", strict=False)
        def test_xpass_on_new(kernel):
            assert kernel.release == "6.6.0-b"

        def test_error_in_teardown(kernel, request):
            def boom():
                raise RuntimeError("teardown")
            if kernel.release == "6.6.0-b":
                request.addfinalizer(boom)
        """
    )
    result = run(pytester, "--kernel=linux-a", "--kernel=linux-b")
    assert kernel_summary(result) == [
        # An expected failure is neither a skip nor a pass, and its traceback is no reason.
        "ktstr: kernel 6.1.0-a: 1 passed, 1 failed, 1 skipped, 2 xfailed",
        "  1 skipped: not today",
        # pytest says "1 error" of a teardown that failed, and so does the summary.
        "ktstr: kernel 6.6.0-b: 1 passed, 0 failed, 1 skipped, 1 xfailed, 1 xpassed, 1 error",
        "  1 skipped: not today",
    ]


def test_junit_properties_per_case_and_suite(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS)
    run(pytester, "--kernel=old=linux-a", "--kernel=linux-b").assert_outcomes(passed=6, skipped=1)
    report = junit(pytester)
    kernels = {
        "old": ("6.1.0-a", build_id_for("6.1.0-a").hex()),
        "6.6.0-b": ("6.6.0-b", build_id_for("6.6.0-b").hex()),
    }
    for nodeid, case in report.cases.items():
        if nodeid == "test_m.py::test_plain":
            assert case.properties == {}  # uses no kernel
            continue
        label = nodeid.rsplit("[", 1)[1].rstrip("]")
        release, build_id = kernels[label]
        assert case.properties == {
            "ktstr_kernel": label,
            "ktstr_release": release,
            "ktstr_build_id": build_id,
        }
    a, b = trees["6.1.0-a"], trees["6.6.0-b"]
    assert report.kernels() == [
        {
            "label": "old",
            "spec": "linux-a",
            "release": "6.1.0-a",
            "build_id": build_id_for("6.1.0-a").hex(),
            "image": f"{a}/arch/x86/boot/bzImage",
            "vmlinux": f"{a}/vmlinux",
        },
        {
            "label": "6.6.0-b",
            "spec": "linux-b",
            "release": "6.6.0-b",
            "build_id": build_id_for("6.6.0-b").hex(),
            "image": f"{b}/arch/x86/boot/bzImage",
            "vmlinux": f"{b}/vmlinux",
        },
    ]


def test_junit_with_one_kernel_has_the_same_properties(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS)
    run(pytester, "--kernel=linux-b").assert_outcomes(passed=4)
    report = junit(pytester)
    assert report.cases["test_m.py::test_kernel"].properties == {
        "ktstr_kernel": "6.6.0-b",
        "ktstr_release": "6.6.0-b",
        "ktstr_build_id": build_id_for("6.6.0-b").hex(),
    }
    assert [k["label"] for k in report.kernels()] == ["6.6.0-b"]


# --- what runs once, and what once per kernel -----------------------------------------------------

SESSION_CONFTEST = """
import os
import pytest

@pytest.fixture(scope="session")
def built(kernel):
    # One line per build: which kernel, in which process.
    with open(os.environ["BUILT_LOG"], "a") as log:
        log.write(f"{kernel.label} {os.getpid()}\\n")
    return kernel.label

@pytest.fixture
def per_test(built):
    return built
"""

SESSION_TESTS = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_direct(built, n):
    pass

@pytest.mark.parametrize("n", range(4))
def test_through_a_function_fixture(per_test, n):
    pass

def test_no_kernel():
    pass
"""


def _builds(log: Path) -> Counter[tuple[str, str]]:
    """(label, pid) -> how many times the session fixture was built for them."""
    pairs = (line.split() for line in log.read_text().splitlines())
    return Counter((label, pid) for label, pid in pairs)


@pytest.mark.parametrize("workers", [None, "2"])
def test_session_fixtures_are_built_once_per_kernel_per_process(
    pytester: pytest.Pytester,
    trees: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    workers: str | None,
) -> None:
    log = pytester.path / "built.log"
    monkeypatch.setenv("BUILT_LOG", str(log))
    pytester.makeconftest(SESSION_CONFTEST)
    pytester.makepyfile(test_s=SESSION_TESTS, test_t=SESSION_TESTS)
    xdist = ["-n", workers] if workers else []
    result = run(pytester, "--kernel=a=linux-a", "--kernel=b=linux-b", *xdist)
    # A fixture that depends on `kernel` makes its tests run once per kernel, too.
    result.assert_outcomes(passed=2 * (2 * 8 + 1))
    builds = _builds(log)
    assert set(builds.values()) == {1}, builds
    assert {label for label, _ in builds} == {"a", "b"}
    if workers is None:
        assert len(builds) == 2
    else:
        assert len({pid for _, pid in builds}) <= 2
        assert str(os.getpid()) not in {pid for _, pid in builds}
    report = junit(pytester)
    assert report.duplicates == []
    assert len(report.cases) == 2 * (2 * 8 + 1)


def test_getfixturevalue_of_kernel_with_several_kernels_fails_clearly(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(
        test_m="def test_dynamic(request):\n    request.getfixturevalue('kernel')\n"
    )
    result = run(pytester, "--kernel=linux-a", "--kernel=linux-b")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "ktstr: this run has 2 kernels (6.1.0-a, 6.6.0-b); request `kernel` as a test or"
            " fixture argument (not request.getfixturevalue) so the test runs once per kernel"
        ]
    )
    # With one kernel there is nothing to choose.
    run(pytester, "--kernel=linux-a").assert_outcomes(passed=1)


def test_xdist_runs_every_id_once_and_sums_per_kernel(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(test_m=TESTS, test_n=TESTS)
    result = run(pytester, "-n", "2", "--kernel=linux-a", "--kernel=linux-b")
    result.assert_outcomes(passed=12, skipped=2)
    report = junit(pytester)
    assert report.duplicates == []
    expected = expected_ids(["6.1.0-a", "6.6.0-b"])
    assert sorted(report.cases) == sorted(
        expected + [nodeid.replace("test_m.py", "test_n.py") for nodeid in expected]
    )
    for nodeid, case in report.cases.items():
        if "[" in nodeid:
            assert case.properties["ktstr_kernel"] == nodeid.rsplit("[", 1)[1].rstrip("]")
    # Worker reports are tallied once, on the controller.
    assert kernel_summary(result) == [
        "ktstr: kernel 6.1.0-a: 4 passed, 0 failed, 2 skipped",
        "  2 skipped: ktstr: kernel 6.1.0-a is 6.1.0, needs >= 6.6",
        "ktstr: kernel 6.6.0-b: 6 passed, 0 failed, 0 skipped",
    ]
    assert [k["label"] for k in report.kernels()] == ["6.1.0-a", "6.6.0-b"]


# --- two real kernels -------------------------------------------------------------------------


def _readelf_build_id(vmlinux: Path) -> str:
    """The GNU build-id as binutils reads it: an oracle the project did not write."""
    out = subprocess.run(
        ["readelf", "-n", str(vmlinux)], capture_output=True, text=True, check=True
    ).stdout
    return out.split("Build ID: ", 1)[1].split()[0]


REAL_TESTS = """
def test_kernel(kernel):
    assert kernel.arch == "x86_64"

def test_symbols(kernel_symbols, kernel):
    assert kernel_symbols["schedule"] != 0

def test_plain():
    pass
"""


@pytest.mark.real_kernel
@pytest.mark.parametrize("workers", [None, "2"])
def test_debian_and_tinyconfig_in_one_run(
    pytester: pytest.Pytester,
    debian_kernel: DebianKernel,
    tinyconfig_tree: Path,
    workers: str | None,
) -> None:
    deb, tiny = debian_kernel.release, tree_release(tinyconfig_tree)
    pytester.makepyfile(test_m=REAL_TESTS)
    args = [
        f"--kernel-sysroot={debian_kernel.sysroot}",
        f"--kernel={deb}",
        f"--kernel={tinyconfig_tree}",
        *(["-n", workers] if workers else []),
    ]
    if workers is None:
        collected = run(pytester, "--collect-only", "-q", *args)
        assert collected_ids(collected) == [
            f"test_m.py::test_kernel[{deb}]",
            f"test_m.py::test_symbols[{deb}]",
            f"test_m.py::test_kernel[{tiny}]",
            f"test_m.py::test_symbols[{tiny}]",
            "test_m.py::test_plain",
        ]
    result = run(pytester, *args)
    result.assert_outcomes(passed=5)
    tiny_vmlinux = tinyconfig_tree / "vmlinux"
    deb_id, tiny_id = debian_kernel.build_id, _readelf_build_id(tiny_vmlinux)
    header = [line for line in result.outlines if line.startswith("ktstr: kernel=")]
    assert header == [
        f"ktstr: kernel={deb} (from option) image={debian_kernel.image}"
        f" vmlinux={debian_kernel.vmlinux} release={deb} build_id={deb_id} paired=build-id"
        f" label={deb}",
        f"ktstr: kernel={tinyconfig_tree} (from option)"
        f" image={tinyconfig_tree}/arch/x86/boot/bzImage vmlinux={tiny_vmlinux} release={tiny}"
        f" build_id={tiny_id} paired=build-id label={tiny}",
    ]
    assert kernel_summary(result) == [
        f"ktstr: kernel {deb}: 2 passed, 0 failed, 0 skipped",
        f"ktstr: kernel {tiny}: 2 passed, 0 failed, 0 skipped",
    ]
    report = junit(pytester)
    assert report.duplicates == []
    by_label = {deb: (deb, deb_id), tiny: (tiny, tiny_id)}
    for label, (release, build_id) in by_label.items():
        for test in ("test_kernel", "test_symbols"):
            case = report.cases[f"test_m.py::{test}[{label}]"]
            assert case.outcome == "passed"
            assert case.properties == {
                "ktstr_kernel": label,
                "ktstr_release": release,
                "ktstr_build_id": build_id,
            }
    assert report.cases["test_m.py::test_plain"].properties == {}
    assert json.loads(report.properties["ktstr_kernels"]) == [
        {
            "label": deb,
            "spec": deb,
            "release": deb,
            "build_id": deb_id,
            "image": str(debian_kernel.image),
            "vmlinux": str(debian_kernel.vmlinux),
        },
        {
            "label": tiny,
            "spec": str(tinyconfig_tree),
            "release": tiny,
            "build_id": tiny_id,
            "image": f"{tinyconfig_tree}/arch/x86/boot/bzImage",
            "vmlinux": str(tiny_vmlinux),
        },
    ]


def test_a_test_that_parametrizes_kernel_itself_is_left_alone(
    pytester: pytest.Pytester, trees: dict[str, Path]
) -> None:
    pytester.makepyfile(
        test_m="""
import pytest

@pytest.mark.parametrize("kernel", ["mine"])
def test_own(kernel):
    assert kernel == "mine"

def test_other(kernel):
    pass
"""
    )
    result = run(pytester, "-q", "--kernel=linux-a", "--kernel=linux-b")
    result.assert_outcomes(passed=3)
    assert collected_ids(
        run(pytester, "--collect-only", "-q", "--kernel=linux-a", "--kernel=linux-b")
    ) == ["test_m.py::test_own[mine]", *ids("test_m.py::test_other", ["6.1.0-a", "6.6.0-b"])]

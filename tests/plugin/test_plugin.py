"""The plugin as users run it: pytest in a subprocess, options, env, ini, header, fixtures."""

from __future__ import annotations

import pytest

from tests.helpers.fakes import (
    EM_AARCH64,
    build_id_for,
    make_build_tree,
    make_sysroot,
    write_vmlinux,
)

R = "6.1.0-99-cloud-amd64"

FIXTURE_TESTS = """
from pathlib import Path

def test_path(vmlinux_path, kernel):
    assert isinstance(vmlinux_path, Path)
    Path("seen_path").write_text(str(vmlinux_path))
    assert kernel.vmlinux == vmlinux_path

def test_bytes(vmlinux_bytes, vmlinux_path):
    assert bytes(vmlinux_bytes) == vmlinux_path.read_bytes()
    Path("seen_bytes_id").write_text(str(id(vmlinux_bytes)))

def test_bytes_again(vmlinux_bytes):
    assert Path("seen_bytes_id").read_text() == str(id(vmlinux_bytes))

def test_no_kernel_fixture():
    pass
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def test_build_tree_image_gives_tree_vmlinux(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "linux")
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "--kernel=linux/arch/x86/boot/bzImage")
    result.assert_outcomes(passed=4)
    assert (pytester.path / "seen_path").read_text() == str(tree / "vmlinux")
    result.stdout.fnmatch_lines(
        [
            f"ktstr: kernel=linux/arch/x86/boot/bzImage (from option)"
            f" image={tree}/arch/x86/boot/bzImage vmlinux={tree}/vmlinux release=6.1.0-test"
            f" build_id={build_id_for('6.1.0-test').hex()} paired=build-id"
        ]
    )


def test_run_inside_the_tree_with_relative_image(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path)
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "--kernel=arch/x86/boot/bzImage")
    result.assert_outcomes(passed=4)
    assert (pytester.path / "seen_path").read_text() == str(tree / "vmlinux")


@pytest.mark.parametrize("form", ["tree", "vmlinux"])
def test_tree_and_vmlinux_specs(pytester: pytest.Pytester, form: str) -> None:
    tree = make_build_tree(pytester.path / "linux")
    pytester.makepyfile(FIXTURE_TESTS)
    spec = "linux" if form == "tree" else "linux/vmlinux"
    result = _run(pytester, f"--kernel={spec}")
    result.assert_outcomes(passed=4)
    image = f"{tree}/arch/x86/boot/bzImage" if form == "tree" else "none"
    result.stdout.fnmatch_lines([f"ktstr: kernel={spec} (from option) image={image} *"])


def test_release_with_sysroot(pytester: pytest.Pytester) -> None:
    root = make_sysroot(pytester.path / "guest", R)
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, f"--kernel={R}", "--kernel-sysroot=guest")
    result.assert_outcomes(passed=4)
    vmlinux = root / f"usr/lib/debug/boot/vmlinux-{R}"
    assert (pytester.path / "seen_path").read_text() == str(vmlinux)
    result.stdout.fnmatch_lines(
        [f"*image={root}/boot/vmlinuz-{R} vmlinux={vmlinux} release={R} build_id=* paired=build-id"]
    )


def test_image_path_inside_sysroot(pytester: pytest.Pytester) -> None:
    root = make_sysroot(pytester.path / "guest", R)
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, f"--kernel=guest/boot/vmlinuz-{R}", "--kernel-sysroot", "guest")
    result.assert_outcomes(passed=4)
    assert (pytester.path / "seen_path").read_text() == str(
        root / f"usr/lib/debug/boot/vmlinux-{R}"
    )


def test_explicit_vmlinux_skips_the_search(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux")
    other = pytester.path / "elsewhere" / "vmlinux.debug"
    write_vmlinux(other, b"explicit")
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "--kernel=linux", f"--vmlinux={other}")
    result.assert_outcomes(passed=4)
    assert (pytester.path / "seen_path").read_text() == str(other)


# --- precedence ----------------------------------------------------------------------------------


def _three_trees(pytester: pytest.Pytester) -> None:
    for name in ("opt", "env", "ini"):
        make_build_tree(pytester.path / name, release=f"6.1.0-{name}")
    pytester.makeini("[pytest]\nktstr_kernel = ini\n")
    pytester.makepyfile("def test_k(kernel):\n    print('RELEASE', kernel.release)\n")


def test_option_beats_env_beats_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_trees(pytester)
    monkeypatch.setenv("KTSTR_KERNEL", "env")
    _run(pytester, "--kernel=opt", "-s").stdout.fnmatch_lines(
        ["ktstr: kernel=opt (from option) *release=6.1.0-opt *", "*RELEASE 6.1.0-opt"]
    )
    _run(pytester, "-s").stdout.fnmatch_lines(
        ["ktstr: kernel=env (from env) *release=6.1.0-env *", "*RELEASE 6.1.0-env"]
    )
    monkeypatch.delenv("KTSTR_KERNEL")
    _run(pytester, "-s").stdout.fnmatch_lines(
        ["ktstr: kernel=ini (from ini) *release=6.1.0-ini *", "*RELEASE 6.1.0-ini"]
    )


def test_ini_paths_are_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "kernels" / "linux")
    root = make_sysroot(pytester.path / "guest", R)
    pytester.makeini(f"[pytest]\nktstr_kernel = {R}\nktstr_kernel_sysroot = guest\n")
    sub = pytester.mkdir("sub")
    sub.joinpath("test_x.py").write_text("def test_p(vmlinux_path):\n    print(vmlinux_path)\n")
    result = pytester.runpytest_subprocess(str(sub), "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*.py {root}/usr/lib/debug/boot/vmlinux-{R}*"])
    assert tree.exists()


def test_sysroot_from_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_sysroot(pytester.path / "guest", R)
    monkeypatch.setenv("KTSTR_KERNEL", R)
    monkeypatch.setenv("KTSTR_KERNEL_SYSROOT", str(pytester.path / "guest"))
    pytester.makepyfile(FIXTURE_TESTS)
    _run(pytester).assert_outcomes(passed=4)


def test_default_is_running(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "def test_k(kernel):\n    import os\n    assert kernel.release == os.uname().release\n"
    )
    result = _run(pytester, "--kernel-sysroot", str(pytester.mkdir("empty")))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["ktstr: kernel=running (from default) image=none vmlinux=not found*"]
    )


def test_help_strings_state_the_precedence(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTSTR_KERNEL", "/does/not/exist")  # --help must still work
    result = _run(pytester, "--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())
    assert "--kernel > $KTSTR_KERNEL_LIST > $KTSTR_KERNEL > ini ktstr_kernel > running" in text
    assert "--kernel-sysroot > $KTSTR_KERNEL_SYSROOT > ini ktstr_kernel_sysroot" in text
    assert "ktstr_kernel (string):" in text


# --- missing things: usage error, error, skip -----------------------------------------------------


@pytest.mark.parametrize("source", ["option", "env", "ini"])
def test_named_path_missing_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    args: list[str] = []
    if source == "option":
        args.append("--kernel=nope/bzImage")
    elif source == "env":
        monkeypatch.setenv("KTSTR_KERNEL", "nope/bzImage")
    else:
        pytester.makeini("[pytest]\nktstr_kernel = nope/bzImage\n")
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: ktstr: kernel 'nope/bzImage' (from {source}): *nope/bzImage does not exist"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kernel=garbage-name"], "*is not an existing path, a release like*"),
        (["--kernel=linux", "--vmlinux=missing.elf"], "*--vmlinux 'missing.elf'*does not exist"),
        (["--kernel=linux", "--vmlinux=linux/include/config/kernel.release"], "*is not an ELF*"),
        (["--kernel=linux", "--kernel-sysroot=nowhere"], "*sysroot 'nowhere' (from option)*"),
    ],
)
def test_other_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    make_build_tree(pytester.path / "linux")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ktstr: {message}"])


def test_explicit_vmlinux_for_another_machine_is_refused(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux")
    write_vmlinux(pytester.path / "arm.elf", e_machine=EM_AARCH64)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = _run(pytester, "--kernel=linux", "--vmlinux=arm.elf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is an ELF for EM_AARCH64, but the kernel image is x86_64*"])


def test_named_kernel_without_vmlinux_errors_with_the_report(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", vmlinux=False)
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "--kernel=linux/arch/x86/boot/bzImage")
    result.assert_outcomes(errors=3, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*ktstr: no vmlinux for kernel 'linux/arch/x86/boot/bzImage' (from option)",
            "*vmlinux probe for image=*bzImage release=6.1.0-test arch=x86_64: not found*",
            "*refused*linux/vmlinux ?build tree root?: missing",
            "*hint: install the kernel's debug package*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_default_kernel_without_vmlinux_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "-rs", "--kernel-sysroot", str(pytester.mkdir("empty")))
    result.assert_outcomes(skipped=3, passed=1)
    result.stdout.fnmatch_lines(["SKIPPED*ktstr: no vmlinux for the running kernel *not found (*"])


def test_tests_without_kernel_fixtures_are_unaffected(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", vmlinux=False)
    pytester.makepyfile("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    _run(pytester, "--kernel=linux").assert_outcomes(passed=2)


def test_wrong_machine_tree_vmlinux_is_refused(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "linux", vmlinux=False)
    write_vmlinux(tree / "vmlinux", e_machine=EM_AARCH64)
    pytester.makepyfile(FIXTURE_TESTS)
    result = _run(pytester, "--kernel=linux")
    result.assert_outcomes(errors=3, passed=1)
    result.stdout.fnmatch_lines(["*wrong machine: ELF for EM_AARCH64, the image is x86_64"])


# --- other plugins -------------------------------------------------------------------------------


PLUGIN_FIXTURES = (
    "kernel",
    "vmlinux_path",
    "vmlinux_bytes",
    "kernel_config",
    "kernel_symbols",
    "kernel_btf",
    "kernel_store",
    "kernel_vm",
    "kernel_vm_factory",
)


def _documented_fixtures(output: str) -> dict[str, str]:
    """Fixture name -> the first line of its docstring, from ``pytest --fixtures``."""
    lines = output.splitlines()
    found = {}
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        name = line.split(" ", 1)[0]
        if name in PLUGIN_FIXTURES and " -- " in line:
            found[name] = following.strip()
    return found


def test_the_entry_point_serves_every_fixture_and_no_ktstr_vmlinux_disables_them(
    pytester: pytest.Pytester,
) -> None:
    """The entry point names the hooks module; the fixtures live in modules it registers, so
    they come and go with the plugin name."""
    documented = _documented_fixtures(_run(pytester, "--fixtures").stdout.str())
    assert sorted(documented) == sorted(PLUGIN_FIXTURES)
    assert all(documented.values()), documented  # each with its docstring
    disabled = _run(pytester, "-p", "no:ktstr_vmlinux", "--fixtures")
    assert _documented_fixtures(disabled.stdout.str()) == {}
    pytester.makepyfile("def test_kernel(kernel):\n    pass\n")
    result = _run(pytester, "-p", "no:ktstr_vmlinux")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'kernel' not found*"])
    refused = _run(pytester, "-p", "no:ktstr_vmlinux", "--kernel=running")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*unrecognized arguments: --kernel=running*"])


@pytest.mark.parametrize("plugin", ["no:xdist", "no:cacheprovider"])
def test_works_without_other_plugins(pytester: pytest.Pytester, plugin: str) -> None:
    make_build_tree(pytester.path / "linux")
    pytester.makepyfile(FIXTURE_TESTS)
    _run(pytester, "-p", plugin, "--kernel=linux").assert_outcomes(passed=4)


def test_under_xdist(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "linux")
    pytester.makepyfile(
        "import os\n"
        "def test_a(vmlinux_bytes, vmlinux_path):\n"
        "    assert bytes(vmlinux_bytes) == vmlinux_path.read_bytes()\n"
        "    assert os.environ['PYTEST_XDIST_WORKER']\n"
        "def test_b(vmlinux_path):\n"
        f"    assert str(vmlinux_path) == {str(tree / 'vmlinux')!r}\n"
    )
    result = _run(pytester, "-n", "2", "--kernel=linux")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("ktstr: kernel=linux (from option)") == 1

"""FIFOs and symlink loops where kernel files belong (issue 11, items 8 and 9).

A FIFO blocks whoever opens it for reading until a writer comes, which is never: before the fix,
one at a tree's ``include/config/kernel.release`` or a sysroot's ``sys/kernel/notes`` hung
``info``, ``locate`` and pytest until killed. A symlink loop in a sysroot ended the search with
an ``OSError: [Errno 40]`` traceback. Every run here has a timeout: none may hang, each must say
what is wrong (an error naming the file, or the candidate refused in the probe report while the
search goes on), and none may end in a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.fakes import make_build_tree, make_sysroot
from tests.helpers.runs import junit

R = "6.1.0-99-cloud-amd64"
TIMEOUT = 120
DBGSYM = f"usr/lib/debug/boot/vmlinux-{R}"
FEDORA = f"usr/lib/debug/lib/modules/{R}/vmlinux"
IMAGE = f"boot/vmlinuz-{R}"
USR_IMAGE = f"usr/lib/modules/{R}/vmlinuz"
RUNNING_BTF = Path("/sys/kernel/btf/vmlinux")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it; a hang fails the test (TimeoutExpired) instead."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_ktstr_vmlinux", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


def _loop(path: Path, target: str | None = None) -> Path:
    """``ln -s <name> <path>``: a link to itself, as in the issue (or to ``target``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    path.symlink_to(target or path.name)
    return path


def _tree(tmp: Path) -> Path:
    return make_build_tree(tmp / "linux", R)


def _guest(tmp: Path) -> Path:
    return make_sysroot(tmp / "guest", R)


def _move(root: Path, src: str, dest: str) -> None:
    (root / dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / src, root / dest)


# Each case plants something and says what `info` and `locate` must do with it: the exit status,
# and a fragment of a line of stdout (status 0, or a refusal in the probe report) or of the one
# line on stderr (an error); "" for any.
Expect = tuple[int, str]
Case = Callable[[Path], tuple[list[str], dict[str, Expect]]]


def tree_release(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_tree(tmp) / "include/config/kernel.release")
    error = (1, f"{fifo}: is a FIFO, not a regular file")
    return ["linux"], {"info": error, "locate": error}


def tree_config(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_tree(tmp) / ".config")
    return ["linux"], {"info": (1, f"{fifo}: is a FIFO, not a regular file"), "locate": (0, "")}


def tree_image(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_tree(tmp) / "arch/x86/boot/bzImage")
    error = (1, f"{fifo}: is a FIFO, not a regular file")
    return ["linux"], {"info": error, "locate": error}


def tree_vmlinux(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_tree(tmp) / "vmlinux")
    refused = f"refused  {fifo} [build tree]: not a regular file: a FIFO"
    return ["linux"], {"info": (1, "no vmlinux for kernel 'linux'"), "locate": (1, refused)}


def tree_vmlinux_loop(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    loop = _loop(_tree(tmp) / "vmlinux")
    return ["linux"], {
        "info": (1, "no vmlinux for kernel 'linux'"),
        "locate": (1, f"refused  {loop} [build tree]: symlink loop"),
    }


def image_given(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(tmp / "bzImage")
    error = (1, f"{fifo} is not a regular file (a FIFO)")
    return [str(fifo)], {"info": error, "locate": error}


def vmlinux_given(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    _tree(tmp)
    fifo = _fifo(tmp / "vmlinux.elf")
    error = (1, f"{fifo} is not a regular file (a FIFO)")
    return ["linux", "--vmlinux", str(fifo)], {"info": error, "locate": error}


def sysroot_notes(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_guest(tmp) / "sys/kernel/notes")
    error = (1, f"{fifo}: is a FIFO, not a regular file")
    return ["running", "--kernel-sysroot", "guest"], {"info": error, "locate": error}


def sysroot_notes_loop(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    loop = _loop(_guest(tmp) / "sys/kernel/notes", "/sys/kernel/notes")
    error = (1, f"{loop}: symlink loop")
    return ["running", "--kernel-sysroot", "guest"], {"info": error, "locate": error}


def sysroot_config(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_guest(tmp) / f"boot/config-{R}")
    info = (1, f"{fifo}: is a FIFO, not a regular file")
    return [R, "--kernel-sysroot", "guest"], {"info": info, "locate": (0, "")}


def sysroot_system_map(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    _fifo(_guest(tmp) / f"boot/System.map-{R}")  # read by nothing: it must stay that way
    found = (0, f"usr/lib/debug/boot/vmlinux-{R}")
    return [R, "--kernel-sysroot", "guest"], {"info": found, "locate": found}


def sysroot_image(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    guest = _guest(tmp)
    _move(guest, IMAGE, USR_IMAGE)  # where the search goes on to
    fifo = _fifo(guest / IMAGE)
    refused = f"refused  {fifo} [distro image]: not a regular file: a FIFO"
    return [R, "--kernel-sysroot", "guest"], {
        "info": (0, "(paired: build-id)"),
        "locate": (0, refused),
    }


def sysroot_image_loop(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    guest = _guest(tmp)
    _move(guest, IMAGE, USR_IMAGE)
    loop = _loop(guest / IMAGE, f"/{IMAGE}")  # absolute: resolved inside the sysroot
    refused = f"refused  {loop} [distro image]: symlink loop"
    return [R, "--kernel-sysroot", "guest"], {
        "info": (0, "(paired: build-id)"),
        "locate": (0, refused),
    }


def sysroot_vmlinux(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    fifo = _fifo(_guest(tmp) / DBGSYM)
    refused = f"refused  {fifo} [Debian/Ubuntu dbgsym]: not a regular file: a FIFO"
    return [R, "--kernel-sysroot", "guest"], {
        "info": (1, f"no vmlinux for kernel '{R}'"),
        "locate": (1, refused),
    }


def sysroot_vmlinux_loop(tmp: Path) -> tuple[list[str], dict[str, Expect]]:
    guest = _guest(tmp)
    _move(guest, DBGSYM, FEDORA)  # where the search goes on to
    loop = _loop(guest / DBGSYM)  # the issue's `ln -s vmlinux-R .../vmlinux-R`
    chosen = f"vmlinux      {guest / FEDORA} (paired: build-id)"
    refused = f"refused  {loop} [Debian/Ubuntu dbgsym]: symlink loop"
    return [R, "--kernel-sysroot", "guest"], {"info": (0, chosen), "locate": (0, refused)}


CASES: list[Case] = [
    tree_release, tree_config, tree_image, tree_vmlinux, tree_vmlinux_loop, image_given,
    vmlinux_given, sysroot_notes, sysroot_notes_loop, sysroot_config, sysroot_system_map,
    sysroot_image, sysroot_image_loop, sysroot_vmlinux, sysroot_vmlinux_loop,
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("verb", ["info", "locate"])
def test_cli_never_hangs_and_says_what_is_wrong(tmp_path: Path, case: Case, verb: str) -> None:
    args, expect = case(tmp_path)
    status, line = expect[verb]
    result = _cli(verb, *args, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.stdout, result.stderr)
    # Refusals are in the probe report (stdout); an error is one line on stderr.
    if status == 0 or line.startswith("refused"):
        assert line in result.stdout, result.stdout
    else:
        assert result.stderr.startswith("python -m pytest_ktstr_vmlinux: "), result.stderr
        assert line in result.stderr, result.stderr


@pytest.mark.parametrize("plant", [_fifo, _loop], ids=["fifo", "loop"])
def test_running_btf_in_a_sysroot_that_is_no_file(
    tmp_path: Path, plant: Callable[[Path], Path]
) -> None:
    # The sysroot's copy is passed over (and said, if nothing else has BTF); the host's
    # /sys/kernel/btf/vmlinux, where the running kernel has one, is next.
    planted = plant(_guest(tmp_path) / "sys/kernel/btf/vmlinux")
    args = ("offsetof", "running", "struct list_head", "next", "--kernel-sysroot", "guest")
    result = _cli(*args, cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    if RUNNING_BTF.is_file():
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["0"]
    else:
        why = "is a FIFO, not a regular file" if plant is _fifo else "symlink loop"
        assert result.returncode == 1
        assert f"{planted}: {why}" in result.stderr


# --- the same through pytest ----------------------------------------------------------------------


def _pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "--junitxml=junit.xml", *args,
        timeout=TIMEOUT,
    )  # fmt: skip


def test_pytest_a_fifo_for_the_release_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    fifo = _fifo(_tree(pytester.path) / "include/config/kernel.release")
    pytester.makepyfile("def test_x(kernel):\n    pass\n")
    result = _pytest(pytester, "--kernel=linux")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: ktstr: kernel 'linux' (from option): {fifo}: is a FIFO, not a regular file*"]
    )


def test_pytest_a_fifo_for_the_running_notes_names_it(pytester: pytest.Pytester) -> None:
    fifo = _fifo(_guest(pytester.path) / "sys/kernel/notes")
    pytester.makepyfile("def test_x(kernel):\n    pass\n")
    result = _pytest(pytester, "--kernel-sysroot=guest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ktstr: kernel 'running' *{fifo}: is a FIFO*"])


def test_pytest_loops_and_fifos_in_a_sysroot(pytester: pytest.Pytester) -> None:
    guest = _guest(pytester.path)
    _move(guest, DBGSYM, FEDORA)
    loop = _loop(guest / DBGSYM)
    _move(guest, IMAGE, USR_IMAGE)
    image_loop = _loop(guest / IMAGE)
    config = _fifo(guest / f"boot/config-{R}")
    _fifo(guest / f"boot/System.map-{R}")
    pytester.makepyfile(
        f"""
        def test_vmlinux(kernel, vmlinux_path):
            report = str(kernel.report)
            assert str(vmlinux_path) == {str(guest / FEDORA)!r}
            assert kernel.paired == "build-id"
            assert {f"refused  {loop} [Debian/Ubuntu dbgsym]: symlink loop"!r} in report
            assert {f"refused  {image_loop} [distro image]: symlink loop"!r} in report

        def test_config(kernel_config):
            pass
        """
    )
    result = _pytest(pytester, "-n", "2", f"--kernel={R}", "--kernel-sysroot=guest")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    cases = junit(pytester).cases
    assert cases["test_pytest_loops_and_fifos_in_a_sysroot.py::test_vmlinux"].outcome == "passed"
    failed = cases["test_pytest_loops_and_fifos_in_a_sysroot.py::test_config"]
    assert failed.outcome == "error"  # in the fixture
    assert f"{config}: is a FIFO, not a regular file" in failed.message

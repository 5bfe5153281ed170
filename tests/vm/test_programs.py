"""programs= on the host side: the closure vm/loader.py finds is the one glibc's loader finds
(``ldd``, which asks the loader itself, is the oracle), what pack_programs puts in the
initramfs, and every refusal naming the file and what is missing. No guest is booted here
(test_programs_guest.py runs the packed programs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.formats.ldcache import parse_cache
from pytest_ktstr_vmlinux.vm.errors import GuestProgramError
from pytest_ktstr_vmlinux.vm.initramfs import busybox_applets, content_kind, find_busybox
from pytest_ktstr_vmlinux.vm.loader import LoaderSearch, read_object
from pytest_ktstr_vmlinux.vm.programs import GUEST_LD_CACHE, pack_programs
from tests.helpers.kernels import DebianKernel
from tests.helpers.programs import build_greeter


def _ldd(program: Path | str) -> dict[str, str]:
    """name -> path for every library, as the host's loader resolves them (ldd runs it with
    LD_TRACE_LOADED_OBJECTS: the loader's own answer)."""
    if shutil.which("ldd") is None:
        pytest.skip("needs ldd (libc-bin)")
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=True)
    return dict(re.findall(r"^\s+(\S+) => (\S+) \(0x", out.stdout, re.MULTILINE))


def _closure(program: str) -> dict[str, str]:
    data, mode, info = read_object(program, "program")
    objects = LoaderSearch().closure(program, data, mode, info)
    return {o.needed_as: o.path for o in objects if o.needed_as is not None}


def _applets() -> frozenset[str]:
    return busybox_applets(find_busybox("x86_64"))


@pytest.mark.parametrize("program", ["/usr/bin/stress-ng", "/usr/sbin/bpftool", "/usr/bin/python3"])
def test_the_closure_is_the_loaders(program: str) -> None:
    if not Path(program).exists():
        pytest.skip(f"needs {program} on the host (.ci/run installs it)")
    assert _closure(program) == _ldd(program)


@pytest.mark.real_kernel
def test_the_closure_of_a_scheduler_is_the_loaders(scx_schedulers: Path) -> None:
    program = str(scx_schedulers / "scx_simple")
    found = _closure(program)
    assert found == _ldd(program)
    assert {"libelf.so.1", "libz.so.1", "libc.so.6"} <= set(found)


@pytest.mark.parametrize("dtags", ["--disable-new-dtags", "--enable-new-dtags"])
def test_origin_in_rpath_and_runpath_is_the_programs_folder(tmp_path: Path, dtags: str) -> None:
    hello = build_greeter(tmp_path, dtags=dtags)
    found = _closure(str(hello))
    assert found["libgreet.so.1"] == str(tmp_path / "bin/../lib/libgreet.so.1").replace(
        "/bin/..", ""
    )
    assert found == {k: os.path.normpath(v) for k, v in _ldd(hello).items()}


def test_a_program_named_by_a_link_has_origin_where_it_really_is(tmp_path: Path) -> None:
    hello = build_greeter(tmp_path / "real")
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere/hello"
    link.symlink_to(hello)
    packed = pack_programs([str(link)], arch="x86_64", applets=_applets())
    files = {f.path: f for f in packed.files}
    assert files[str(link)].target == str(hello)  # the name stays, as a link to the file
    assert files[str(hello)].data == hello.read_bytes()
    assert str(tmp_path / "real/lib/libgreet.so.1") in files  # $ORIGIN of the real path
    assert files["/usr/local/bin/hello"].target == str(hello)  # runs by name in the guest
    assert packed.paths == {str(link): str(link)}


def test_pack_puts_the_interpreter_libraries_and_a_cache_for_the_guest() -> None:
    stress = shutil.which("stress-ng")
    if stress is None:
        pytest.skip("needs stress-ng (apt-get install stress-ng)")
    packed = pack_programs(["stress-ng"], arch="x86_64", applets=_applets())
    files = {f.path: f for f in packed.files}
    libraries = _ldd(stress)
    assert set(libraries.values()) <= set(files)
    interpreter = read_object(stress, "program")[2].interpreter
    assert interpreter in files and files[interpreter].target is None
    assert files[stress].data == Path(stress).read_bytes() and files[stress].mode & 0o111
    cache = parse_cache(files[GUEST_LD_CACHE].data)
    for name, path in libraries.items():
        assert [e.path for e in cache.lookup(name)] == [path]
    assert "/usr/local/bin/stress-ng" not in files  # /usr/bin is on the guest's PATH


def test_a_changed_program_makes_a_new_initramfs(tmp_path: Path) -> None:
    hello = build_greeter(tmp_path)
    before = content_kind(pack_programs([str(hello)], arch="x86_64", applets=_applets()).files)
    same = content_kind(pack_programs([str(hello)], arch="x86_64", applets=_applets()).files)
    library = tmp_path / "lib/libgreet.so.1"
    library.write_bytes(library.read_bytes() + b"\0")
    after = content_kind(pack_programs([str(hello)], arch="x86_64", applets=_applets()).files)
    assert before == same != after


def test_a_missing_library_names_it_the_chain_and_where_it_looked(tmp_path: Path) -> None:
    hello = build_greeter(tmp_path)
    (tmp_path / "lib/libgreet.so.1").unlink()
    with pytest.raises(GuestProgramError) as e:
        pack_programs([str(hello)], arch="x86_64", applets=_applets())
    message = str(e.value)
    assert message.startswith(f"{hello}: library libgreet.so.1 (DT_NEEDED of {hello}) is not")
    assert f"looked in {tmp_path / 'lib'}, " in message and "/usr/lib" in message
    assert "Install the package that has it" in message


@pytest.mark.real_kernel
def test_a_program_for_another_machine_is_refused_unread(debian_arm64: DebianKernel) -> None:
    with pytest.raises(GuestProgramError) as e:
        pack_programs([str(debian_arm64.vmlinux)], arch="x86_64", applets=_applets())
    assert str(e.value) == (
        f"programs=[{str(debian_arm64.vmlinux)!r}]: {debian_arm64.vmlinux} is an ELF for arm64"
        " (EM_AARCH64), the guest is x86_64: pack a build for x86_64"
    )


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("#!/no/such/interpreter\n", "interpreter /no/such/interpreter cannot be packed: it is"
         " not on this host, and busybox in the guest does not provide it"),
        ("#!/usr/bin/env no-such-tool-anywhere\n", "`env no-such-tool-anywhere`: no"
         " no-such-tool-anywhere on PATH"),
        ("echo no shebang\n", "is neither an ELF executable nor a script (#!)"),
    ],
)  # fmt: skip
def test_scripts_whose_interpreter_cannot_be_packed(
    tmp_path: Path, script: str, message: str
) -> None:
    path = tmp_path / "tool"
    path.write_text(script)
    path.chmod(0o755)
    with pytest.raises(GuestProgramError, match=re.escape(message)):
        pack_programs([str(path)], arch="x86_64", applets=_applets())


def test_a_script_brings_its_interpreter_unless_busybox_is_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # Debian's python3, not a version manager's
    shell = tmp_path / "shell-script"
    shell.write_text("#!/bin/sh\necho hi\n")
    shell.chmod(0o755)
    python = tmp_path / "python-script"
    python.write_text("#!/usr/bin/env python3\nprint('hi')\n")
    python.chmod(0o755)
    packed = pack_programs([str(shell), str(python)], arch="x86_64", applets=_applets())
    paths = {f.path for f in packed.files}
    python3 = os.path.realpath("/usr/bin/python3")
    assert python3 in paths  # env's program, with its libraries
    assert "/bin/sh" not in paths and "/usr/bin/env" not in paths  # busybox has them


def test_names_not_on_path_and_files_that_are_not_programs(tmp_path: Path) -> None:
    with pytest.raises(GuestProgramError, match=r"programs=\['no-such-program'\]: no no-such-prog"):
        pack_programs(["no-such-program"], arch="x86_64")
    data = tmp_path / "data"
    data.write_text("#!/bin/sh\n")
    with pytest.raises(GuestProgramError, match=r"is not executable \(mode 644\)"):
        pack_programs([str(data)], arch="x86_64")
    with pytest.raises(GuestProgramError, match="does not exist"):
        pack_programs([str(tmp_path / "nothing")], arch="x86_64")

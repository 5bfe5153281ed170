"""The loader's view of an ELF (formats/elfdynamic.py) against readelf's, on the host's own
programs and libraries and on programs built here with DT_RPATH, DT_RUNPATH and DF_1_NODEFLIB;
damaged files are ElfDynamicError or NotElfError, never another exception."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from pytest_ktstr_vmlinux.formats.elf import NotElfError
from pytest_ktstr_vmlinux.formats.elfdynamic import (
    ET_DYN,
    ET_EXEC,
    ElfDynamicError,
    parse_dynamic,
)
from tests.helpers.fuzz import mutations
from tests.helpers.programs import build_greeter

HOST_FILES = ["/usr/sbin/bpftool", "/bin/busybox", "/lib64/ld-linux-x86-64.so.2"]
HOST_FILES += ["/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libelf.so.1"]


def _readelf(path: Path | str) -> dict[str, object]:
    """What readelf (binutils: an oracle we did not write) says the loader reads."""
    if shutil.which("readelf") is None:
        pytest.skip("needs readelf (binutils)")
    dynamic = subprocess.run(
        ["readelf", "-dW", str(path)], capture_output=True, text=True, check=True
    ).stdout
    segments = subprocess.run(
        ["readelf", "-lW", str(path)], capture_output=True, text=True, check=True
    ).stdout
    header = subprocess.run(
        ["readelf", "-hW", str(path)], capture_output=True, text=True, check=True
    ).stdout

    def one(tag: str) -> str | None:
        match = re.search(rf"\({tag}\)\s+.*?\[(.*)\]", dynamic)
        return match[1] if match else None

    interp = re.search(r"\[Requesting program interpreter: (.*)\]", segments)
    flags = re.search(r"\(FLAGS_1\)\s+Flags: (.*)", dynamic)
    return {
        "needed": re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dynamic),
        "soname": one("SONAME"),
        "rpath": one("RPATH"),
        "runpath": one("RUNPATH"),
        "interpreter": interp[1] if interp else None,
        "nodeflib": bool(flags and "NODEFLIB" in flags[1].split()),
        "type": re.search(r"Type:\s+(\w+)", header)[1],  # type: ignore[index]
    }


def _ours(path: Path | str) -> dict[str, object]:
    info = parse_dynamic(Path(path).read_bytes())
    return {
        "needed": list(info.needed),
        "soname": info.soname,
        "rpath": ":".join(info.rpath) if info.rpath is not None else None,
        "runpath": ":".join(info.runpath) if info.runpath is not None else None,
        "interpreter": info.interpreter,
        "nodeflib": info.nodeflib,
        "type": {ET_EXEC: "EXEC", ET_DYN: "DYN"}[info.e_type],
    }


@pytest.mark.parametrize("path", [p for p in HOST_FILES if Path(p).exists()])
def test_host_programs_and_libraries_read_as_readelf_reads_them(path: str) -> None:
    assert _ours(path) == _readelf(path)


@pytest.mark.parametrize("dtags", ["--disable-new-dtags", "--enable-new-dtags"])
def test_built_programs_read_as_readelf_reads_them(tmp_path: Path, dtags: str) -> None:
    hello = build_greeter(tmp_path, dtags=dtags)
    ours, theirs = _ours(hello), _readelf(hello)
    assert ours == theirs
    assert ours["needed"] == ["libgreet.so.1", "libc.so.6"]
    assert (ours["rpath"] or ours["runpath"]) == "$ORIGIN/../lib"
    library = tmp_path / "lib/libgreet.so.1"
    assert _ours(library) == _readelf(library)
    assert _ours(library)["soname"] == "libgreet.so.1"


def test_a_static_program_has_no_interpreter() -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("needs busybox-static")
    info = parse_dynamic(Path(busybox).read_bytes())
    assert (info.interpreter, info.needed, info.dynamic) == (None, (), False)


def test_not_elf_and_truncated() -> None:
    with pytest.raises(NotElfError):
        parse_dynamic(b"#!/bin/sh\necho hi\n")
    data = Path(
        "/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else "/bin/ls"
    ).read_bytes()
    with pytest.raises(ElfDynamicError, match="past the end of the file"):
        parse_dynamic(data[:200])


_SEED = Path("/bin/true").read_bytes() if Path("/bin/true").exists() else b""


@pytest.mark.skipif(not _SEED, reason="needs /bin/true as a seed")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(_SEED[:4096] + b"\0" * 64))
def test_damaged_elf_files_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(ElfDynamicError, NotElfError):
        parse_dynamic(data)


@pytest.mark.skipif(not _SEED, reason="needs /bin/true as a seed")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(_SEED))
def test_damaged_whole_programs_raise_only_our_errors(data: bytes) -> None:
    with contextlib.suppress(ElfDynamicError, NotElfError):
        parse_dynamic(data)

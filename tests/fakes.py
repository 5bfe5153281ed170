"""Small real files shaped like kernel artifacts: ELF headers and x86 boot headers."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

EM_X86_64 = 62
EM_AARCH64 = 183


def elf_header(e_machine: int = EM_X86_64, *, elfclass: int = 2, little: bool = True) -> bytes:
    """A 64-byte ELF header (e_ident, e_type=ET_EXEC, e_machine, e_version) and zero padding."""
    order = "<" if little else ">"
    ident = b"\x7fELF" + bytes([elfclass, 1 if little else 2, 1]) + bytes(9)
    return ident + struct.pack(f"{order}HHI", 2, e_machine, 1) + bytes(40)


def write_vmlinux(path: Path, payload: bytes = b"", e_machine: int = EM_X86_64) -> bytes:
    """Write an ELF-headed file standing in for a vmlinux; returns its content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = elf_header(e_machine) + payload
    path.write_bytes(content)
    return content


def bzimage(version: str | None = "6.1.0-test (dev@host) #1 SMP", protocol: int = 0x020F) -> bytes:
    """An x86 boot sector + setup header carrying ``version`` as kernel_version points to it."""
    data = bytearray(0x1000)
    data[0x1F1] = 4  # setup_sects
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, protocol)
    if version is not None:
        pointer = 0x600
        struct.pack_into("<H", data, 0x20E, pointer)
        raw = version.encode() + b"\x00"
        data[pointer + 0x200 : pointer + 0x200 + len(raw)] = raw
    return bytes(data)


def write_image(path: Path, version: str | None = "6.1.0-test (dev@host) #1 SMP") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bzimage(version))
    return path


def make_build_tree(root: Path, release: str = "6.1.0-test", *, vmlinux: bool = True) -> Path:
    """A kernel build tree: arch/x86/boot/bzImage, vmlinux, include/config/kernel.release."""
    write_image(root / "arch/x86/boot/bzImage", f"{release} (dev@host) #1 SMP")
    release_file = root / "include/config/kernel.release"
    release_file.parent.mkdir(parents=True, exist_ok=True)
    release_file.write_text(release + "\n")
    if vmlinux:
        write_vmlinux(root / "vmlinux", b"tree vmlinux " + release.encode())
    return root


def make_sysroot(root: Path, release: str = "6.1.0-99-cloud-amd64") -> Path:
    """A distro-shaped root: boot/vmlinuz-R and the Debian dbgsym vmlinux."""
    write_image(root / f"boot/vmlinuz-{release}", f"{release} (debian@host) #1 SMP")
    write_vmlinux(root / f"usr/lib/debug/boot/vmlinux-{release}", b"dbg " + release.encode())
    return root


def run_without_dac_override(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` so that file modes bind: root keeps its uid but loses CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH (util-linux setpriv), an ordinary user runs it as is."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv (util-linux): cannot make EACCES happen")
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, check=False, capture_output=True, text=True)

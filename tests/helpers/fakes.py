"""Small real files shaped like kernel artifacts: kernel ELFs, bzImages with real payloads."""

from __future__ import annotations

import gzip
import hashlib
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


SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE = 1, 2, 3, 7
LZ4_MAGIC = b"\x02\x21\x4c\x18"
LZ4_BLOCK = 8 << 20


def lz4_legacy(data: bytes) -> bytes:
    """What `lz4 -l -9` (the kernel's cmd_lz4) writes: magic, {u32 LE size, HC block} per 8 MiB."""
    import lz4.block  # type: ignore[import-untyped]

    out = bytearray(LZ4_MAGIC)
    for i in range(0, len(data), LZ4_BLOCK):
        block = lz4.block.compress(
            data[i : i + LZ4_BLOCK], mode="high_compression", compression=9, store_size=False
        )
        out += struct.pack("<I", len(block)) + block
    return bytes(out)


def build_id_for(text: str) -> bytes:
    return hashlib.sha1(text.encode()).digest()


def banner_for(release: str) -> str:
    return f"Linux version {release} (dev@host) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC"


def kernel_elf(
    build_id: bytes | None,
    banner: str | None,
    *,
    e_machine: int = EM_X86_64,
    extra: bytes = b"",
    symtab: bool = True,
) -> bytes:
    """A small but well-formed ELF64 kernel: .notes (GNU build-id), .rodata (linux_banner),
    .data (``extra``), optionally an empty .symtab (what a debug vmlinux has), .shstrtab."""
    sections: list[tuple[str, int, bytes, int]] = []  # name, type, data, entsize
    if build_id is not None:
        note = struct.pack("<III", 4, len(build_id), 3) + b"GNU\x00" + build_id
        sections.append((".notes", SHT_NOTE, note, 0))
    rodata = b"some constants\x00" + (banner.encode() + b"\n\x00" if banner else b"")
    sections.append((".rodata", SHT_PROGBITS, rodata, 0))
    sections.append((".data", SHT_PROGBITS, extra, 0))
    if symtab:
        sections.append((".symtab", SHT_SYMTAB, bytes(24), 24))
    names = b"\x00" + b"".join(name.encode() + b"\x00" for name, *_ in sections) + b".shstrtab\x00"
    sections.append((".shstrtab", SHT_STRTAB, names, 0))
    body = bytearray()
    headers = [bytes(64)]  # SHN_UNDEF
    name_offset = 1
    shstrndx = len(sections)
    for name, sh_type, data, entsize in sections:
        offset = 64 + len(body)
        sh_link = shstrndx if sh_type == SHT_SYMTAB else 0
        headers.append(
            struct.pack(
                "<IIQQQQIIQQ", name_offset, sh_type, 0, 0, offset, len(data), sh_link, 0, 1, entsize
            )
        )
        name_offset += len(name) + 1
        body += data
        body += bytes(-len(body) % 8)
    shoff = 64 + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, e_machine, 1, 0, 0, shoff, 0, 64, 56, 0, 64, len(headers), shstrndx
    )
    return ehdr + bytes(body) + b"".join(headers)


def write_vmlinux(
    path: Path,
    payload: bytes = b"",
    e_machine: int = EM_X86_64,
    *,
    build_id: bytes | None = None,
    banner: str | None = None,
) -> bytes:
    """Write a vmlinux-shaped ELF (``payload`` in .data); returns its content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = kernel_elf(build_id, banner, e_machine=e_machine, extra=payload)
    path.write_bytes(content)
    return content


def bzimage(
    version: str | None = "6.1.0-test (dev@host) #1 SMP",
    protocol: int = 0x020F,
    payload: bytes | None = None,
) -> bytes:
    """An x86 boot sector + setup header carrying ``version`` (kernel_version points to it) and,
    when given, ``payload`` (an ELF) gzip-compressed as the protected-mode payload."""
    setup_sects = 4
    data = bytearray((setup_sects + 1) * 512)
    data[0x1F1] = setup_sects
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, protocol)
    struct.pack_into("<H", data, 0x236, 0x1)  # XLF_KERNEL_64
    if version is not None:
        pointer = 0x600
        struct.pack_into("<H", data, 0x20E, pointer)
        raw = version.encode() + b"\x00"
        data[pointer + 0x200 : pointer + 0x200 + len(raw)] = raw
    if payload is not None:
        compressed = gzip.compress(payload, mtime=0)
        struct.pack_into("<II", data, 0x248, 0, len(compressed))
        data += compressed
    return bytes(data)


def write_image(
    path: Path,
    version: str | None = "6.1.0-test (dev@host) #1 SMP",
    payload: bytes | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bzimage(version, payload=payload))
    return path


def make_build_tree(root: Path, release: str = "6.1.0-test", *, vmlinux: bool = True) -> Path:
    """A kernel build tree whose bzImage and vmlinux are one build (equal build-ids and banners):
    arch/x86/boot/bzImage, vmlinux, include/config/kernel.release."""
    build_id, banner = build_id_for(release), banner_for(release)
    payload = kernel_elf(build_id, banner, symtab=False)
    write_image(root / "arch/x86/boot/bzImage", f"{release} (dev@host) #1 SMP", payload)
    release_file = root / "include/config/kernel.release"
    release_file.parent.mkdir(parents=True, exist_ok=True)
    release_file.write_text(release + "\n")
    if vmlinux:
        extra = b"tree vmlinux " + release.encode()
        write_vmlinux(root / "vmlinux", extra, build_id=build_id, banner=banner)
    return root


def make_sysroot(root: Path, release: str = "6.1.0-99-cloud-amd64") -> Path:
    """A distro-shaped root: boot/vmlinuz-R and the Debian dbgsym vmlinux of the same build."""
    build_id, banner = build_id_for(release), banner_for(release)
    payload = kernel_elf(build_id, banner, symtab=False)
    write_image(root / f"boot/vmlinuz-{release}", f"{release} (debian@host) #1 SMP", payload)
    write_vmlinux(
        root / f"usr/lib/debug/boot/vmlinux-{release}",
        b"dbg " + release.encode(),
        build_id=build_id,
        banner=banner,
    )
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


def write_stalling_image(path: Path) -> Path:
    """A bzImage QEMU boots whose real-mode entry (offset 0x200) jumps to itself forever: the
    kernel proper never starts, as under a stalling KVM."""
    data = bytearray(bzimage())
    data[0x200:0x202] = b"\xeb\xfe"  # jmp $
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def ikconfig_blob(text: str, before: bytes = b"\x7fELF junk", after: bytes = b"more junk") -> bytes:
    """Bytes carrying ``text`` as CONFIG_IKCONFIG embeds it: gzipped between the markers."""
    return before + b"IKCFG_ST" + gzip.compress(text.encode()) + b"IKCFG_ED" + after

"""Just enough of a kernel image's header to name its architecture and release.

The locator needs the release to find distro vmlinux files and the arch to refuse an ELF built for
another machine. Payload decompression and build-ids belong to the full image parser.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# x86 boot protocol (Documentation/arch/x86/boot.rst).
BOOT_FLAG_OFFSET = 0x1FE
BOOT_FLAG = b"\x55\xaa"
HDRS_OFFSET = 0x202
HDRS_MAGIC = b"HdrS"
VERSION_OFFSET = 0x206
KERNEL_VERSION_OFFSET = 0x20E
KERNEL_VERSION_BASE = 0x200
# kernel_version is a u16 pointer relative to 0x200; the string is short.
X86_HEADER_WINDOW = KERNEL_VERSION_BASE + 0xFFFF + 256

# arm64: Documentation/arch/arm64/booting.rst; riscv: Documentation/arch/riscv/boot-image-header.rst
ARM64_MAGIC_OFFSET = 0x38
ARM64_MAGIC = b"ARM\x64"
RISCV_MAGIC_OFFSET = 0x30
RISCV_MAGIC = b"RISCV\x00\x00\x00"
RISCV_MAGIC2_OFFSET = 0x38
RISCV_MAGIC2 = b"RSC\x05"
# arm zImage (arch/arm/boot/compressed/head.S): magic word at 0x24.
ZIMAGE_MAGIC_OFFSET = 0x24
ZIMAGE_MAGIC = 0x016F2818

_RELEASE_RE = re.compile(r"\d+\.\d+[\w.+~-]*", re.ASCII)


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says about itself; fields are None where it says nothing."""

    format: str
    arch: str | None = None
    release: str | None = None
    version: str | None = None


def is_release(text: str) -> bool:
    """True for strings shaped like a kernel release (``6.1.0-56-cloud-amd64``, ``6.12.0-rc1+``)."""
    return _RELEASE_RE.fullmatch(text) is not None


def parse_image_header(data: bytes) -> ImageHeader:
    """Identify an image from its first bytes (at least X86_HEADER_WINDOW for a full x86 answer)."""
    if _at(data, BOOT_FLAG_OFFSET, BOOT_FLAG) and _at(data, HDRS_OFFSET, HDRS_MAGIC):
        return _parse_bzimage(data)
    if _at(data, ARM64_MAGIC_OFFSET, ARM64_MAGIC):
        return ImageHeader(format="arm64 Image", arch="arm64")
    if _at(data, RISCV_MAGIC2_OFFSET, RISCV_MAGIC2) or _at(data, RISCV_MAGIC_OFFSET, RISCV_MAGIC):
        return ImageHeader(format="riscv Image", arch="riscv")
    magic = data[ZIMAGE_MAGIC_OFFSET : ZIMAGE_MAGIC_OFFSET + 4]
    if len(magic) == 4 and int.from_bytes(magic, "little") == ZIMAGE_MAGIC:
        return ImageHeader(format="zImage", arch="arm")
    return ImageHeader(format="unknown")


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read and identify the header of the image at ``path``; OSError propagates."""
    with open(path, "rb") as f:
        return parse_image_header(f.read(X86_HEADER_WINDOW))


def _at(data: bytes, offset: int, magic: bytes) -> bool:
    return data[offset : offset + len(magic)] == magic


def _parse_bzimage(data: bytes) -> ImageHeader:
    protocol = int.from_bytes(data[VERSION_OFFSET : VERSION_OFFSET + 2], "little")
    pointer = int.from_bytes(data[KERNEL_VERSION_OFFSET : KERNEL_VERSION_OFFSET + 2], "little")
    # kernel_version exists from protocol 2.00; 0 means the image carries no version string.
    if protocol < 0x200 or pointer == 0:
        return ImageHeader(format="bzImage", arch="x86")
    start = pointer + KERNEL_VERSION_BASE
    end = data.find(b"\x00", start, start + 256)
    if start >= len(data) or end < 0:
        return ImageHeader(format="bzImage", arch="x86")
    version = data[start:end].decode("ascii", errors="replace")
    token = version.split(" ", 1)[0]
    release = token if is_release(token) else None
    return ImageHeader(format="bzImage", arch="x86", release=release, version=version)

"""Kernel images taken apart: headers (cheap, for the locator) and payloads (for identity).

The header alone names the arch and release, which is all the locator needs to search. Pairing
needs the payload: decompressed, it is the ELF (or flat Image) whose build-id and banner say
exactly which build the image is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import KernelArtifactError
from ..regularfile import NotRegularFile, open_regular, stable_read
from .decompress import DEFAULT_MAX_OUTPUT, decompress, detect_compression
from .elfidentity import find_banner, read_elf_identity, release_from_banner
from .notes import flat_build_id

# x86 boot protocol (Documentation/arch/x86/boot.rst).
BOOT_FLAG_OFFSET = 0x1FE
BOOT_FLAG = b"\x55\xaa"
HDRS_OFFSET = 0x202
HDRS_MAGIC = b"HdrS"
VERSION_OFFSET = 0x206
KERNEL_VERSION_OFFSET = 0x20E
KERNEL_VERSION_BASE = 0x200
XLOADFLAGS_OFFSET = 0x236
XLF_KERNEL_64 = 0x1
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


def parse_image_header(data: bytes | bytearray) -> ImageHeader:
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
    """Read and identify the header of the image at ``path``; OSError propagates, and
    NotRegularFile for anything but a regular file."""
    with open_regular(path) as f:
        return parse_image_header(f.read(X86_HEADER_WINDOW))


def _at(data: bytes | bytearray, offset: int, magic: bytes) -> bool:
    return data[offset : offset + len(magic)] == magic


def _parse_bzimage(data: bytes | bytearray) -> ImageHeader:
    protocol = _u16(data, VERSION_OFFSET)
    # xloadflags (protocol 2.12+) says whether the kernel is 64-bit; older ones leave it open.
    arch = "x86"
    if protocol >= 0x20C and len(data) >= XLOADFLAGS_OFFSET + 2:
        arch = "x86_64" if _u16(data, XLOADFLAGS_OFFSET) & XLF_KERNEL_64 else "i386"
    pointer = _u16(data, KERNEL_VERSION_OFFSET)
    # kernel_version exists from protocol 2.00; 0 means the image carries no version string.
    if protocol < 0x200 or pointer == 0:
        return ImageHeader(format="bzImage", arch=arch)
    start = pointer + KERNEL_VERSION_BASE
    end = data.find(b"\x00", start, start + 256)
    if start >= len(data) or end < 0:
        return ImageHeader(format="bzImage", arch=arch)
    version = data[start:end].decode("ascii", errors="replace")
    token = version.split(" ", 1)[0]
    release = token if is_release(token) else None
    return ImageHeader(format="bzImage", arch=arch, release=release, version=version)


def _u16(data: bytes | bytearray, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


# --- the payload: where the kernel proper is, and what it says about itself -----------------------

SETUP_SECTS_OFFSET = 0x1F1
PAYLOAD_OFFSET_OFFSET = 0x248
PAYLOAD_LENGTH_OFFSET = 0x24C
SECTOR = 512
# EFI zboot (drivers/firmware/efi/libstub/zboot-header.S): "MZ", "zimg", payload offset and size,
# and the compression's name at 0x18.
ZBOOT_MAGIC = b"zimg"
ZBOOT_NAME_OFFSET = 0x18
_ZBOOT_NAMES = {"gzip": "gzip", "lz4": "lz4", "lzma": "lzma", "lzo": "lzo", "xzkern": "xz"}
_ZBOOT_NAMES |= {"xz": "xz", "zstd22": "zstd", "zstd": "zstd", "bzip2": "bzip2"}
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class ImageInfo:
    """An image's identity: what it is, for which machine, which kernel, which build."""

    #: What the file is: ``"bzImage"``, ``"EFI zboot"``, ``"arm64 Image"``, ``"riscv Image"``,
    #: ``"vmlinux"``, ``"compressed vmlinux"``.
    format: str
    #: How its payload is compressed (``"gzip"``, ``"zstd"``, ...), ``"none"`` when it is not.
    compression: str
    #: The architecture the payload was built for, when it says.
    arch: str | None
    #: The release, from the banner.
    release: str | None
    #: The ``Linux version ...`` banner in the payload.
    banner: str | None
    #: The payload's GNU build-id (hex), which a paired vmlinux shares.
    build_id: str | None
    #: Why ``build_id`` is None: no note at all, or (in a flat Image) only the notes of the ELF
    #: files embedded in the kernel (vDSOs), or several loose notes that disagree. None when it is
    #: known.
    build_id_problem: str | None = None


def read_payload(
    path: str | os.PathLike[str], *, max_output: int = DEFAULT_MAX_OUTPUT
) -> tuple[str, str, bytes | bytearray]:
    """(format, compression, decompressed payload) of a kernel image or (compressed) vmlinux.

    The payload is an ELF for bzImage, EFI zboot of an ELF and compressed vmlinux files, and the
    flat kernel for arm64/riscv Images. Raises KernelArtifactError naming the file and the fault.
    """
    what = str(path)
    try:
        with stable_read(path) as f:
            if f.size == 0:
                raise KernelArtifactError(f"{what}: empty file; not a kernel image")
            if f.size > max_output:
                raise KernelArtifactError(
                    f"{what}: {f.size} bytes, more than the {max_output}-byte cap; not a"
                    " kernel image"
                )
            # Read, not mapped: a mapping of an image that an install truncates meanwhile
            # would SIGBUS the reader. An image is megabytes, and bounded by the cap.
            raw = f.pread(0, f.size)
    except OSError as e:
        raise KernelArtifactError(f"{what}: cannot read: {e.strerror}") from None
    except NotRegularFile as e:
        raise KernelArtifactError(
            f"{what}: is {e.kind}, not a regular file; not a kernel image"
        ) from None
    return _payload(raw, what, max_output)


def _payload(raw: bytes, what: str, max_output: int) -> tuple[str, str, bytes | bytearray]:
    data = memoryview(raw)
    head = raw[:X86_HEADER_WINDOW]
    if head[:4] == ELF_MAGIC:
        return "vmlinux", "none", raw
    header = parse_image_header(head)
    if header.format == "bzImage":
        return _bzimage_payload(head, data, what, max_output)
    if head[:2] == b"MZ" and head[4:8] == ZBOOT_MAGIC:
        return _zboot_payload(head, data, what, max_output)
    if header.format in ("arm64 Image", "riscv Image"):
        return header.format, "none", raw
    compression = detect_compression(head)
    if compression is not None:
        inner = decompress(data, compression, max_output=max_output, what=f"{what} ({compression})")
        if inner[:4] == ELF_MAGIC:
            return "compressed vmlinux", compression, inner
        flat = parse_image_header(inner[:X86_HEADER_WINDOW]).format
        if flat in ("arm64 Image", "riscv Image"):
            return flat, compression, inner
        raise KernelArtifactError(f"{what}: {compression} data that is neither an ELF nor an Image")
    if header.format == "zImage":
        raise KernelArtifactError(f"{what}: arm zImage payloads are not supported; use the vmlinux")
    raise KernelArtifactError(
        f"{what}: not a kernel image: no bzImage header, arm64/riscv Image magic, EFI zboot,"
        " ELF or compression magic"
    )


def identify_image(
    path: str | os.PathLike[str], *, max_output: int = DEFAULT_MAX_OUTPUT
) -> ImageInfo:
    """Decompress ``path``'s payload and read its identity (the store caches the answer)."""
    fmt, compression, payload = read_payload(path, max_output=max_output)
    return identify_payload(str(path), fmt, compression, payload)


def identify_payload(
    what: str, fmt: str, compression: str, payload: bytes | bytearray
) -> ImageInfo:
    header = parse_image_header(payload[:X86_HEADER_WINDOW]) if fmt != "bzImage" else None
    if payload[:4] == ELF_MAGIC:
        elf = read_elf_identity(payload, what=f"{what} payload")  # read in place
        arch, build_id, banner = elf.arch, elf.build_id, elf.banner
        problem = None if build_id else "the payload ELF has no GNU build-id note"
    else:
        # A flat Image: the kernel's note is the one outside the ELF files embedded in it.
        arch = header.arch if header else None
        found, banner = flat_build_id(payload), find_banner(payload)
        build_id, problem = found.build_id, found.problem
    return ImageInfo(
        format=fmt,
        compression=compression,
        arch=arch,
        release=release_from_banner(banner),
        banner=banner,
        build_id=build_id,
        build_id_problem=problem,
    )


def _bzimage_payload(
    head: bytes, data: memoryview, what: str, max_output: int
) -> tuple[str, str, bytes | bytearray]:
    if len(head) < PAYLOAD_LENGTH_OFFSET + 4:
        raise KernelArtifactError(f"{what}: bzImage header truncated at {len(head)} bytes")
    protocol = _u16(head, VERSION_OFFSET)
    if protocol < 0x208:
        raise KernelArtifactError(
            f"{what}: boot protocol {protocol >> 8}.{protocol & 0xFF:02d} has no payload fields"
            " (needs 2.08+); use the vmlinux"
        )
    setup_sects = head[SETUP_SECTS_OFFSET] or 4
    offset = int.from_bytes(head[PAYLOAD_OFFSET_OFFSET : PAYLOAD_OFFSET_OFFSET + 4], "little")
    length = int.from_bytes(head[PAYLOAD_LENGTH_OFFSET : PAYLOAD_LENGTH_OFFSET + 4], "little")
    start = (setup_sects + 1) * SECTOR + offset
    if length == 0:
        raise KernelArtifactError(f"{what}: bzImage payload_length is 0; the image is damaged")
    if start + length > len(data):
        raise KernelArtifactError(
            f"{what}: bzImage payload [{start}, {start + length}) runs past the end of the file"
            f" ({len(data)} bytes); the image is truncated or damaged"
        )
    blob = data[start : start + length]
    compression = detect_compression(blob)
    if compression is None:
        raise KernelArtifactError(f"{what}: bzImage payload has no known compression magic")
    payload = decompress(blob, compression, max_output=max_output, what=f"{what} payload")
    if payload[:4] != ELF_MAGIC:
        raise KernelArtifactError(f"{what}: bzImage payload decompressed to something not ELF")
    return "bzImage", compression, payload


def _zboot_payload(
    head: bytes, data: memoryview, what: str, max_output: int
) -> tuple[str, str, bytes | bytearray]:
    if len(head) < ZBOOT_NAME_OFFSET + 32:
        raise KernelArtifactError(f"{what}: EFI zboot header truncated")
    offset = int.from_bytes(head[8:12], "little")
    size = int.from_bytes(head[12:16], "little")
    name = (
        head[ZBOOT_NAME_OFFSET : ZBOOT_NAME_OFFSET + 32]
        .split(b"\x00", 1)[0]
        .decode("ascii", "replace")
    )
    compression = _ZBOOT_NAMES.get(name)
    if compression is None:
        raise KernelArtifactError(f"{what}: EFI zboot with unknown compression {name!r}")
    if size == 0 or offset + size > len(data):
        raise KernelArtifactError(f"{what}: EFI zboot payload runs past the end of the file")
    inner = decompress(
        data[offset : offset + size], compression, max_output=max_output, what=f"{what} payload"
    )
    flat = parse_image_header(inner[:X86_HEADER_WINDOW]).format
    return ("EFI zboot" if flat == "unknown" else f"EFI zboot {flat}"), compression, inner

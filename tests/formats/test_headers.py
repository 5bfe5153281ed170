"""ELF identification, kernel image headers and chroot-like sysroot resolution.

Everything here works on real bytes and real files: headers are packed with ``struct``, sysroots
are real directory trees with real symlinks under a temporary directory.
"""

from __future__ import annotations

import errno
import os
import platform
import struct
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.formats.elf import (
    EHDR_IDENT_AND_MACHINE,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ELFMAG,
    EM_AARCH64,
    EM_ARM,
    EM_RISCV,
    EM_X86_64,
    ElfIdent,
    NotElfError,
    is_elf,
    parse_elf_ident,
    read_elf_ident,
)
from pytest_ktstr_vmlinux.formats.image import (
    X86_HEADER_WINDOW,
    ImageHeader,
    is_release,
    parse_image_header,
    read_image_header,
)
from pytest_ktstr_vmlinux.kernel.sysroot import MAX_SYMLINK_HOPS, Sysroot
from pytest_ktstr_vmlinux.regularfile import NotRegularFile

# --------------------------------------------------------------------------------------------
# ELF identification
# --------------------------------------------------------------------------------------------

ET_EXEC = 2
EV_CURRENT = 1


def elf_header(ei_class: int, ei_data: int, e_machine: int, *, e_type: int = ET_EXEC) -> bytes:
    """A complete Elf32_Ehdr / Elf64_Ehdr with the given identification and machine."""
    ident = ELFMAG + bytes([ei_class, ei_data, EV_CURRENT, 0]) + bytes(8)
    assert len(ident) == 16
    order = "<" if ei_data == ELFDATA2LSB else ">"
    if ei_class == ELFCLASS64:
        # e_type e_machine e_version e_entry e_phoff e_shoff e_flags e_ehsize e_phentsize
        # e_phnum e_shentsize e_shnum e_shstrndx
        rest = struct.pack(
            order + "HHIQQQIHHHHHH", e_type, e_machine, EV_CURRENT, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0
        )
        header = ident + rest
        assert len(header) == 64
    else:
        rest = struct.pack(
            order + "HHIIIIIHHHHHH", e_type, e_machine, EV_CURRENT, 0, 52, 0, 0, 52, 32, 0, 40, 0, 0
        )
        header = ident + rest
        assert len(header) == 52
    return header


MACHINES = [
    (EM_X86_64, "EM_X86_64", "x86_64"),
    (EM_AARCH64, "EM_AARCH64", "arm64"),
    (EM_RISCV, "EM_RISCV", "riscv64"),
    (EM_ARM, "EM_ARM", "arm"),
]


@pytest.mark.parametrize("ei_class", [ELFCLASS32, ELFCLASS64])
@pytest.mark.parametrize("ei_data", [ELFDATA2LSB, ELFDATA2MSB])
@pytest.mark.parametrize(("e_machine", "name", "arch"), MACHINES)
def test_parse_elf_ident_known_machines(
    ei_class: int, ei_data: int, e_machine: int, name: str, arch: str
) -> None:
    ident = parse_elf_ident(elf_header(ei_class, ei_data, e_machine))
    assert ident == ElfIdent(ei_class=ei_class, ei_data=ei_data, e_machine=e_machine)
    assert ident.machine_name == name
    # RISC-V's width comes from EI_CLASS.
    assert ident.arch == (arch if e_machine != EM_RISCV else f"riscv{32 * ei_class}")


@pytest.mark.parametrize("ei_data", [ELFDATA2LSB, ELFDATA2MSB])
def test_parse_elf_ident_unknown_machine(ei_data: int) -> None:
    ident = parse_elf_ident(elf_header(ELFCLASS64, ei_data, 0x1234))
    assert ident.e_machine == 0x1234
    assert ident.machine_name == "EM_4660"
    assert ident.arch is None


def test_e_machine_byte_order_follows_ei_data() -> None:
    # The same two bytes (3e 00) are EM_X86_64 little-endian but 0x3e00 big-endian.
    little = elf_header(ELFCLASS64, ELFDATA2LSB, EM_X86_64)
    as_big = little[:5] + bytes([ELFDATA2MSB]) + little[6:]
    assert parse_elf_ident(little).e_machine == EM_X86_64
    assert parse_elf_ident(as_big).e_machine == 0x3E00
    assert parse_elf_ident(as_big).arch is None


def test_parse_elf_ident_needs_only_twenty_bytes() -> None:
    header = elf_header(ELFCLASS64, ELFDATA2LSB, EM_AARCH64)
    assert parse_elf_ident(header[:EHDR_IDENT_AND_MACHINE]).arch == "arm64"
    with pytest.raises(NotElfError, match=r"truncated at 19 bytes"):
        parse_elf_ident(header[: EHDR_IDENT_AND_MACHINE - 1])


@pytest.mark.parametrize("length", [4, 5, 6, 16, 18, 19])
def test_truncated_elf_header(length: int) -> None:
    header = elf_header(ELFCLASS64, ELFDATA2LSB, EM_X86_64)[:length]
    with pytest.raises(NotElfError, match=rf"truncated at {length} bytes"):
        parse_elf_ident(header)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x7f",
        b"\x7fEL",
        b"\x7fELG" + bytes(60),
        b"MZ\x90\x00" + bytes(60),
        b"\x7felf" + bytes(60),
        b"#!/bin/sh\n" + bytes(60),
    ],
)
def test_bad_elf_magic(data: bytes) -> None:
    with pytest.raises(NotElfError, match=r"no ELF magic"):
        parse_elf_ident(data)


@pytest.mark.parametrize("ei_class", [0, 3, 0xFF])
def test_bad_ei_class(ei_class: int) -> None:
    header = bytearray(elf_header(ELFCLASS64, ELFDATA2LSB, EM_X86_64))
    header[4] = ei_class
    with pytest.raises(NotElfError, match=rf"bad EI_CLASS {ei_class}\b"):
        parse_elf_ident(bytes(header))


@pytest.mark.parametrize("ei_data", [0, 3, 0xFF])
def test_bad_ei_data(ei_data: int) -> None:
    header = bytearray(elf_header(ELFCLASS32, ELFDATA2LSB, EM_ARM))
    header[5] = ei_data
    with pytest.raises(NotElfError, match=rf"bad EI_DATA {ei_data}\b"):
        parse_elf_ident(bytes(header))


def test_not_elf_error_is_a_value_error() -> None:
    assert issubclass(NotElfError, ValueError)


def test_read_elf_ident_and_is_elf_on_files(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(elf_header(ELFCLASS64, ELFDATA2MSB, EM_RISCV) + os.urandom(4096))
    ident = read_elf_ident(vmlinux)
    assert (ident.ei_class, ident.ei_data, ident.arch) == (ELFCLASS64, ELFDATA2MSB, "riscv64")
    assert read_elf_ident(str(vmlinux)) == ident
    assert is_elf(vmlinux)
    assert is_elf(str(vmlinux))

    link = tmp_path / "link"
    link.symlink_to(vmlinux)
    assert is_elf(link)
    assert read_elf_ident(link) == ident

    exact = tmp_path / "exact"
    exact.write_bytes(elf_header(ELFCLASS32, ELFDATA2LSB, EM_ARM)[:EHDR_IDENT_AND_MACHINE])
    assert read_elf_ident(exact).arch == "arm"


def test_is_elf_false_for_non_elf(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    short = tmp_path / "short"
    short.write_bytes(ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB]))
    bad_class = tmp_path / "bad-class"
    bad_class.write_bytes(ELFMAG + bytes([9, ELFDATA2LSB]) + bytes(60))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")

    assert not is_elf(tmp_path)
    assert not is_elf(tmp_path / "missing")
    assert not is_elf(garbage)
    assert not is_elf(empty)
    assert not is_elf(short)
    assert not is_elf(bad_class)
    assert not is_elf(dangling)


def test_read_elf_ident_propagates_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_elf_ident(tmp_path / "missing")
    with pytest.raises(NotRegularFile, match="is a directory, not a regular file"):
        read_elf_ident(tmp_path)
    text = tmp_path / "text"
    text.write_text("not an elf at all\n")
    with pytest.raises(NotElfError):
        read_elf_ident(text)


_HOST_MACHINES = {
    "x86_64": EM_X86_64,
    "amd64": EM_X86_64,
    "aarch64": EM_AARCH64,
    "arm64": EM_AARCH64,
}


def test_real_python_executable_matches_platform() -> None:
    executable = os.path.realpath(sys.executable)
    expected = _HOST_MACHINES.get(platform.machine().lower())
    if expected is None:
        pytest.skip(f"no expectation for platform.machine() == {platform.machine()!r}")
    assert is_elf(executable)
    ident = read_elf_ident(executable)
    assert ident.e_machine == expected
    assert ident.arch == ("x86_64" if expected == EM_X86_64 else "arm64")
    assert ident.ei_class == (ELFCLASS64 if sys.maxsize > 2**32 else ELFCLASS32)
    assert ident.ei_data == (ELFDATA2LSB if sys.byteorder == "little" else ELFDATA2MSB)


# --------------------------------------------------------------------------------------------
# Kernel image headers
# --------------------------------------------------------------------------------------------

DEBIAN_VERSION = (
    b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) "
    b"#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2025-11-09)"
)


def bzimage(
    version: bytes | None = DEBIAN_VERSION,
    *,
    protocol: int = 0x020F,
    pointer: int = 0x3A00,
    size: int | None = None,
    terminate: bool = True,
) -> bytes:
    """A synthetic x86 bzImage: boot flag, HdrS, protocol and a kernel_version string."""
    start = pointer + 0x200
    needed = start + (len(version) + 1 if version is not None else 0)
    data = bytearray(size if size is not None else max(needed + 64, 0x400))
    # The string first: a pointer small enough to overlap the header fields loses to them.
    if version is not None and start < len(data):
        payload = version + (b"\x00" if terminate else b"")
        data[start : start + len(payload)] = payload[: len(data) - start]
    struct.pack_into("<H", data, 0x1FE, 0xAA55)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, 0x206, protocol)
    struct.pack_into("<H", data, 0x20E, pointer)
    if len(data) >= 0x238 and not (version is not None and start < 0x238 <= start + len(version)):
        struct.pack_into("<H", data, 0x236, 0x1)  # xloadflags: XLF_KERNEL_64, as amd64 kernels
    return bytes(data)


def x86_arch(data: bytes) -> str:
    """What the header says: x86_64/i386 from xloadflags (protocol 2.12+), else just x86."""
    protocol = int.from_bytes(data[0x206:0x208], "little")
    if protocol < 0x20C or len(data) < 0x238:
        return "x86"
    return "x86_64" if data[0x236] & 1 else "i386"


def test_bzimage_release_and_version() -> None:
    header = parse_image_header(bzimage())
    assert header == ImageHeader(
        format="bzImage",
        arch="x86_64",
        release="6.1.0-56-cloud-amd64",
        version=DEBIAN_VERSION.decode(),
    )


def test_bzimage_boot_flag_is_little_endian_0xaa55() -> None:
    data = bytearray(bzimage())
    assert data[0x1FE:0x200] == b"\x55\xaa"
    data[0x1FE:0x200] = b"\xaa\x55"
    assert parse_image_header(bytes(data)).format == "unknown"


def test_bzimage_needs_hdrs() -> None:
    data = bytearray(bzimage())
    data[0x202:0x206] = b"Hdrs"
    assert parse_image_header(bytes(data)) == ImageHeader(format="unknown")


@pytest.mark.parametrize("pointer", [0x0010, 0x100, 0x3A00, 0xFE00])
def test_bzimage_pointer_is_relative_to_0x200(pointer: int) -> None:
    data = bzimage(b"6.12.0-rc1+ (builder@host) #3", pointer=pointer)
    header = parse_image_header(data)
    assert header.release == "6.12.0-rc1+"
    assert header.version == "6.12.0-rc1+ (builder@host) #3"


@pytest.mark.parametrize("protocol", [0x0000, 0x0100, 0x01FF])
def test_bzimage_old_protocol_has_no_version(protocol: int) -> None:
    header = parse_image_header(bzimage(protocol=protocol))
    assert header == ImageHeader(format="bzImage", arch="x86")


def test_bzimage_protocol_0x200_reads_version() -> None:
    assert parse_image_header(bzimage(protocol=0x0200)).release == "6.1.0-56-cloud-amd64"


def test_bzimage_null_pointer_has_no_version() -> None:
    data = bytearray(bzimage())
    struct.pack_into("<H", data, 0x20E, 0)
    assert parse_image_header(bytes(data)) == ImageHeader(format="bzImage", arch="x86_64")


@pytest.mark.parametrize("size", [0x210, 0x400, 0x3C00])
def test_bzimage_pointer_past_end(size: int) -> None:
    # The pointer says 0x3A00 + 0x200 = 0x3C00, at or past the end of what was read.
    data = bzimage(size=size)
    assert parse_image_header(data) == ImageHeader(format="bzImage", arch=x86_arch(data))


def test_bzimage_header_truncated_inside_fields() -> None:
    # Boot flag and HdrS present, protocol/pointer fields cut off: no exception, no version.
    for cut in range(0x206, 0x211):
        header = parse_image_header(bzimage()[:cut])
        assert header.format == "bzImage"
        assert header.release is None


def test_bzimage_unterminated_version() -> None:
    # The string runs into the end of the data with no NUL.
    data = bzimage(DEBIAN_VERSION, size=0x3C00 + 20, terminate=False)
    assert parse_image_header(data) == ImageHeader(format="bzImage", arch="x86_64")


def test_bzimage_version_longer_than_window() -> None:
    data = bzimage(b"6.1.0" + b"x" * 400)
    assert parse_image_header(data) == ImageHeader(format="bzImage", arch="x86_64")


@pytest.mark.parametrize(
    "version",
    [
        b"Linux version 6.1.0 (x@y) #1",
        b"../../etc/passwd #1",
        b"6.1/../../x #1",
        b"(none)",
        b"",
        b"\xff\xfe6.1.0 #1",
    ],
)
def test_bzimage_garbage_first_token(version: bytes) -> None:
    header = parse_image_header(bzimage(version))
    assert header.format == "bzImage"
    assert header.arch == "x86_64"
    assert header.release is None
    assert header.version == version.decode("ascii", errors="replace")


def test_bzimage_non_ascii_after_release() -> None:
    header = parse_image_header(bzimage(b"6.1.0-1 (b\xe9b\xe9@host) #1"))
    assert header.release == "6.1.0-1"
    assert header.version is not None
    assert "\ufffd" in header.version


def test_bzimage_wins_over_other_magics() -> None:
    data = bytearray(bzimage())
    data[0x38:0x3C] = b"ARM\x64"
    struct.pack_into("<I", data, 0x24, 0x016F2818)
    assert parse_image_header(bytes(data)).format == "bzImage"


def _with_magic(offset: int, magic: bytes, size: int = 0x40) -> bytes:
    data = bytearray(max(size, offset + len(magic)))
    data[offset : offset + len(magic)] = magic
    return bytes(data)


def test_arm64_image() -> None:
    header = parse_image_header(_with_magic(0x38, b"ARM\x64", 0x1000))
    assert header == ImageHeader(format="arm64 Image", arch="arm64")


@pytest.mark.parametrize(
    "data",
    [
        _with_magic(0x38, b"RSC\x05", 0x1000),
        _with_magic(0x30, b"RISCV\x00\x00\x00", 0x1000),
        _with_magic(0x38, b"RSC\x05", 0x3C),
        _with_magic(0x30, b"RISCV\x00\x00\x00", 0x38),
    ],
)
def test_riscv_image(data: bytes) -> None:
    assert parse_image_header(data) == ImageHeader(format="riscv Image", arch="riscv")


def test_arm_zimage() -> None:
    data = bytearray(0x200)
    struct.pack_into("<I", data, 0x24, 0x016F2818)
    assert parse_image_header(bytes(data)) == ImageHeader(format="zImage", arch="arm")
    assert parse_image_header(bytes(data[:0x28])).arch == "arm"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(0x20000),
        bytes(range(256)) * 64,
        b"\x7fELF" + bytes(0x400),
        # Magics cut short or at the wrong place/byte order.
        _with_magic(0x38, b"ARM\x64")[:0x3B],
        _with_magic(0x39, b"ARM\x64"),
        _with_magic(0x30, b"RISCV\x00\x00\x01"),
        _with_magic(0x38, b"RSC\x05")[:0x3B],
        _with_magic(0x24, struct.pack(">I", 0x016F2818)),
        _with_magic(0x24, struct.pack("<I", 0x016F2818))[:0x27],
    ],
)
def test_unknown_images(data: bytes) -> None:
    assert parse_image_header(data) == ImageHeader(format="unknown")


def test_random_bytes_are_unknown() -> None:
    # Deterministic pseudo-random bytes that happen to carry none of the magics.
    data = bytes((i * 197 + 89) % 251 for i in range(0x2000))
    assert parse_image_header(data) == ImageHeader(format="unknown")


def test_read_image_header_from_file(tmp_path: Path) -> None:
    image = tmp_path / "vmlinuz-6.1.0-56-cloud-amd64"
    image.write_bytes(bzimage() + os.urandom(0x20000))
    assert read_image_header(image).release == "6.1.0-56-cloud-amd64"
    assert read_image_header(str(image)).version == DEBIAN_VERSION.decode()


def test_read_image_header_reads_far_enough_for_max_pointer(tmp_path: Path) -> None:
    # The largest pointer (0xffff) puts the string at 0x101ff; the window must cover it.
    version = b"6.1.192 (a@b) #1"
    data = bzimage(version, pointer=0xFFFF)
    assert len(data) > X86_HEADER_WINDOW - 256
    image = tmp_path / "bzImage"
    image.write_bytes(data + bytes(0x10000))
    header = read_image_header(image)
    assert header.release == "6.1.192"
    assert header.version == version.decode()


def test_read_image_header_other_formats(tmp_path: Path) -> None:
    image = tmp_path / "Image"
    image.write_bytes(_with_magic(0x38, b"ARM\x64", 0x10000))
    assert read_image_header(image).arch == "arm64"
    with pytest.raises(FileNotFoundError):
        read_image_header(tmp_path / "missing")
    with pytest.raises(NotRegularFile, match="is a directory, not a regular file"):
        read_image_header(tmp_path)


@pytest.mark.parametrize(
    "text",
    ["6.1.0-56-cloud-amd64", "6.12.0-rc1+", "6.1.192", "5.15.0-1053-azure", "4.19.0~rc3", "6.1"],
)
def test_is_release_accepts(text: str) -> None:
    assert is_release(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "../6.1",
        "6.1/x",
        "6",
        "6.",
        ".6.1",
        "v6.1",
        " 6.1",
        "6.1 ",
        "6.1\n",
        "6.1.0 #1",
        "6.1\x00",
        "6.1/../../etc",
        "-6.1",
    ],
)
def test_is_release_rejects(text: str) -> None:
    assert not is_release(text)


# --------------------------------------------------------------------------------------------
# Fuzzing the parsers
# --------------------------------------------------------------------------------------------

_FORMATS = {"bzImage", "arm64 Image", "riscv Image", "zImage", "unknown"}
_CLASSES = (ELFCLASS32, ELFCLASS64)
_DATAS = (ELFDATA2LSB, ELFDATA2MSB)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.binary(max_size=32).map(lambda b: ELFMAG + b)))
def test_fuzz_parse_elf_ident(data: bytes) -> None:
    error: NotElfError | None = None
    try:
        ident = parse_elf_ident(data)
    except NotElfError as exc:
        error = exc
    if error is not None:
        assert str(error)
        well_formed = (
            data[:4] == ELFMAG
            and len(data) >= EHDR_IDENT_AND_MACHINE
            and data[4] in _CLASSES
            and data[5] in _DATAS
        )
        assert not well_formed, f"{error} for a well-formed header {data!r}"
        return
    assert isinstance(ident, ElfIdent)
    assert data[:4] == ELFMAG
    assert len(data) >= EHDR_IDENT_AND_MACHINE
    assert ident.ei_class in (ELFCLASS32, ELFCLASS64)
    assert ident.ei_data in (ELFDATA2LSB, ELFDATA2MSB)
    assert 0 <= ident.e_machine <= 0xFFFF
    assert ident.machine_name.startswith("EM_")


def _check_image_header(header: ImageHeader) -> None:
    assert isinstance(header, ImageHeader)
    assert header.format in _FORMATS
    if header.format == "bzImage":
        assert header.arch in ("x86", "x86_64", "i386")
    if header.release is not None:
        assert is_release(header.release)
        assert header.version is not None
        assert header.version.split(" ", 1)[0] == header.release
    if header.version is not None:
        assert "\x00" not in header.version
        assert len(header.version) < 256


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=0x800))
def test_fuzz_parse_image_header_arbitrary(data: bytes) -> None:
    _check_image_header(parse_image_header(data))


_TEMPLATE = bzimage(DEBIAN_VERSION, pointer=0x80, size=0x400)


@settings(max_examples=2000, deadline=None)
@given(
    splices=st.lists(
        st.tuples(
            st.one_of(
                st.integers(0x1F8, 0x212),  # boot flag, HdrS, protocol, kernel_version
                st.integers(0x280, 0x2A0),  # the version string
                st.integers(0, len(_TEMPLATE)),
            ),
            st.binary(min_size=1, max_size=24),
        ),
        max_size=4,
    ),
    cut=st.one_of(st.none(), st.integers(0, len(_TEMPLATE))),
)
def test_fuzz_parse_image_header_spliced_bzimage(
    splices: list[tuple[int, bytes]], cut: int | None
) -> None:
    data = bytearray(_TEMPLATE)
    for offset, chunk in splices:
        data[offset : offset + len(chunk)] = chunk
    if cut is not None:
        del data[cut:]
    _check_image_header(parse_image_header(bytes(data)))


@settings(max_examples=2000, deadline=None)
@given(
    version=st.binary(max_size=300),
    protocol=st.integers(0, 0xFFFF),
    pointer=st.integers(0, 0xFFFF),
    slack=st.integers(0, 0x200),
)
def test_fuzz_bzimage_version_strings(
    version: bytes, protocol: int, pointer: int, slack: int
) -> None:
    size = max(0x210, min(pointer + 0x200 + len(version) + slack, 0x200 + 0xFFFF + 300))
    header = parse_image_header(bzimage(version, protocol=protocol, pointer=pointer, size=size))
    _check_image_header(header)
    assert header.format == "bzImage"


# --------------------------------------------------------------------------------------------
# Sysroot
# --------------------------------------------------------------------------------------------

R = "6.1.0-56-cloud-amd64"


def _touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _link(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def _under(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def test_no_sysroot_is_identity(tmp_path: Path) -> None:
    none = Sysroot(None)
    assert none.root is None
    assert none.prefix("/boot/x") == Path("/boot/x")
    assert none.prefix(f"/usr/lib/debug/boot/vmlinux-{R}") == Path(
        f"/usr/lib/debug/boot/vmlinux-{R}"
    )
    link = _link(tmp_path / "link", "/etc")
    assert none.resolve(link) == link
    assert none.resolve(Path("/boot/x")) == Path("/boot/x")
    assert not none.contains(tmp_path)
    assert repr(none) == "Sysroot(None)"


def test_prefix_joins_under_root(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    assert root.root == tmp_path
    assert root.prefix(f"/usr/lib/debug/boot/vmlinux-{R}") == (
        tmp_path / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{R}"
    )
    assert root.prefix("/") == tmp_path
    assert root.prefix("//boot/x") == tmp_path / "boot" / "x"
    assert repr(root) == f"Sysroot({str(tmp_path)!r})"
    assert Sysroot(str(tmp_path)).root == tmp_path


def test_relative_root_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    root = Sysroot("guest")
    assert root.root == tmp_path / "guest"
    assert root.prefix("/boot/x") == tmp_path / "guest" / "boot" / "x"


def test_contains(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sysroot = Sysroot(root)
    assert sysroot.contains(root)
    assert sysroot.contains(root / "a" / "b")
    assert not sysroot.contains(tmp_path)
    assert not sysroot.contains(tmp_path / "rootx" / "a")
    assert not sysroot.contains(Path("/etc/passwd"))
    assert not sysroot.contains(Path("root/a"))


def test_absolute_symlink_stays_in_sysroot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    vmlinux = _touch(root / "usr" / "src" / f"linux-headers-{R}" / "vmlinux", "guest")
    _link(root / "lib" / "modules" / R / "build", f"/usr/src/linux-headers-{R}")
    sysroot = Sysroot(root)
    resolved = sysroot.resolve(sysroot.prefix(f"/lib/modules/{R}/build/vmlinux"))
    assert resolved == vmlinux
    assert resolved != Path(f"/usr/src/linux-headers-{R}/vmlinux")
    assert resolved.read_text() == "guest"
    # The link itself resolves to the directory.
    assert sysroot.resolve(root / "lib" / "modules" / R / "build") == vmlinux.parent


def test_relative_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    target = _touch(root / "usr" / "lib" / "debug" / "boot" / f"vmlinux-{R}")
    _link(root / "boot" / f"vmlinux-{R}", f"../usr/lib/debug/boot/vmlinux-{R}")
    assert Sysroot(root).resolve(root / "boot" / f"vmlinux-{R}") == target


def test_chained_symlinks_and_directory_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    target = _touch(root / "opt" / "kernels" / R / "vmlinux")
    _link(root / "usr" / "src" / "current", "/opt/kernels")
    _link(root / "lib" / "modules" / R / "build", f"../../../usr/src/current/./{R}")
    _link(root / "vmlinux", f"lib/modules/{R}/build/vmlinux")
    sysroot = Sysroot(root)
    assert sysroot.resolve(root / "vmlinux") == target
    # '..' after a symlink applies to the link's target, as the kernel does it.
    assert (
        sysroot.resolve(root / "lib" / "modules" / R / "build" / "..") == root / "opt" / "kernels"
    )


@pytest.mark.parametrize(
    "target",
    [
        "../../../../../etc/passwd",
        "../../../../../../../../../../../../etc/passwd",
        "/../../../etc/passwd",
        "/etc/../../../etc/passwd",
        "../" * 50 + "etc/./passwd",
    ],
)
def test_dotdot_is_clamped_at_root(tmp_path: Path, target: str) -> None:
    root = tmp_path / "root"
    guest = _touch(root / "etc" / "passwd", "guest passwd")
    link = _link(root / "a" / "b" / "link", target)
    resolved = Sysroot(root).resolve(link)
    assert resolved == guest
    assert resolved.read_text() == "guest passwd"


def test_dotdot_in_the_queried_path_is_clamped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    guest = _touch(root / "etc" / "passwd")
    _touch(tmp_path / "etc" / "passwd")  # what a lexical climb would reach
    sysroot = Sysroot(root)
    assert sysroot.resolve(root / ".." / ".." / "etc" / "passwd") == guest
    assert sysroot.resolve(root / "etc" / ".." / ".." / ".." / "etc" / "passwd") == guest


def test_symlink_to_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _link(root / "slash", "/")
    _link(root / "up", "..")
    sysroot = Sysroot(root)
    assert sysroot.resolve(root / "slash") == root
    assert sysroot.resolve(root / "up") == root
    assert sysroot.resolve(root) == root
    assert sysroot.resolve(root / "slash" / "up" / "slash") == root


@pytest.mark.parametrize("links", [("a",), ("a", "b"), ("a", "b", "c")])
def test_symlink_loop_raises_eloop(tmp_path: Path, links: tuple[str, ...]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for name, nxt in zip(links, links[1:] + links[:1], strict=True):
        _link(root / name, f"/{nxt}")
    with pytest.raises(OSError, match="symbolic links") as info:
        Sysroot(root).resolve(root / links[0] / "vmlinux")
    assert info.value.errno == errno.ELOOP


@pytest.mark.parametrize("chain", [1, MAX_SYMLINK_HOPS - 1, MAX_SYMLINK_HOPS, MAX_SYMLINK_HOPS + 1])
def test_symlink_hop_limit_matches_the_kernel(tmp_path: Path, chain: int) -> None:
    root = tmp_path / "root"
    target = _touch(root / "target", "end")
    for i in range(chain):
        _link(root / f"l{i}", f"l{i + 1}" if i + 1 < chain else "target")
    start = root / "l0"
    # Relative links inside the root resolve the same way for the host kernel.
    try:
        with open(start) as f:
            host: str | int = f.read()
    except OSError as exc:
        host = exc.errno if exc.errno is not None else -1
    try:
        ours: Path | int = Sysroot(root).resolve(start)
    except OSError as exc:
        ours = exc.errno if exc.errno is not None else -1
    if chain <= MAX_SYMLINK_HOPS:
        assert host == "end"
        assert ours == target
    else:
        assert host == errno.ELOOP
        assert ours == errno.ELOOP


def test_missing_component_returns_joined_remainder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "lib" / "modules").mkdir(parents=True)
    sysroot = Sysroot(root)
    query = root / "lib" / "modules" / R / "build" / "vmlinux"
    assert sysroot.resolve(query) == query
    assert sysroot.resolve(root / "nothing") == root / "nothing"


def test_missing_target_after_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _link(root / "lib" / "modules" / R / "build", f"/usr/src/linux-headers-{R}")
    resolved = Sysroot(root).resolve(root / "lib" / "modules" / R / "build" / "vmlinux")
    assert resolved == root / "usr" / "src" / f"linux-headers-{R}" / "vmlinux"
    assert not resolved.exists()


def test_component_below_a_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root / "file")
    resolved = Sysroot(root).resolve(root / "file" / "x")
    assert resolved == root / "file" / "x"
    assert not os.path.lexists(resolved)


def test_paths_outside_sysroot_are_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = _link(tmp_path / "rootx" / "link", "/etc")
    sysroot = Sysroot(root)
    assert sysroot.resolve(outside) == outside
    assert sysroot.resolve(Path("/etc/passwd")) == Path("/etc/passwd")
    assert sysroot.resolve(tmp_path) == tmp_path


def test_double_slash_symlink_stays_in_sysroot(tmp_path: Path) -> None:
    # POSIX keeps exactly two leading slashes as a distinct root ('//'); PurePosixPath does too,
    # so '//etc/passwd'.parts == ('//', 'etc', 'passwd') and '//' is joined as an absolute part.
    root = tmp_path / "root"
    guest = _touch(root / "etc" / "passwd", "guest")
    link = _link(root / "lib" / "modules" / R / "build", "//etc/passwd")
    resolved = Sysroot(root).resolve(link)
    assert _under(root, resolved), f"escaped the sysroot: {resolved}"
    assert resolved == guest


# Names and symlink targets for random sysroot trees.
_NAMES = ["a", "b", "c", "etc"]
_TARGET_PARTS = [*_NAMES, "..", ".", "passwd"]


@st.composite
def _symlink_targets(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(_TARGET_PARTS), max_size=6))
    seps = draw(
        st.lists(st.sampled_from(["/", "//", "/./"]), min_size=len(parts), max_size=len(parts))
    )
    body = "".join(part + sep for part, sep in zip(parts, seps, strict=True))
    if not draw(st.booleans()):
        body = body.rstrip("/") or "."
    # Leading '/', '//' (POSIX's distinct root) or '///' (absolute), or nothing (relative).
    lead = draw(st.sampled_from(["", "/", "//", "///"]))
    return lead + body or "."


_entries = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3),
        st.one_of(
            st.just("dir"),
            st.just("file"),
            _symlink_targets(),
        ),
    ),
    max_size=10,
)
_queries = st.lists(st.sampled_from([*_NAMES, "..", ".", "passwd"]), max_size=6)


def _build_tree(root: Path, entries: list[tuple[list[str], str]]) -> None:
    for parts, kind in entries:
        path = root.joinpath(*parts)
        try:
            # Never follow a symlink while building: create parents one component at a time.
            parent = root
            for part in parts[:-1]:
                parent = parent / part
                if not os.path.lexists(parent):
                    parent.mkdir()
                elif not parent.is_dir() or parent.is_symlink():
                    raise NotADirectoryError(str(parent))
            if os.path.lexists(path):
                continue
            if kind == "dir":
                path.mkdir()
            elif kind == "file":
                path.write_text("x")
            else:
                path.symlink_to(kind)
        except OSError:
            continue


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(entries=_entries, queries=st.lists(_queries, min_size=1, max_size=5))
def test_fuzz_resolve_never_escapes(
    entries: list[tuple[list[str], str]], queries: list[list[str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(os.path.realpath(tmp))
        root = base / "root"
        root.mkdir()
        # Decoys a lexical or host-side escape would land on.
        _touch(base / "etc" / "passwd", "host")
        _touch(base / "a", "host")
        _build_tree(root, entries)
        sysroot = Sysroot(root)
        for query in queries:
            path = root.joinpath(*query)
            try:
                resolved = sysroot.resolve(path)
            except OSError as exc:
                loop: OSError | None = exc
            else:
                loop = None
            if loop is not None:
                assert loop.errno == errno.ELOOP, loop
                continue
            assert _under(root, resolved), f"{path} -> {resolved}"
            if os.path.lexists(resolved):
                # Resolution is complete: nothing left for the host to follow, and what it
                # names is inside the sysroot.
                real = os.path.realpath(resolved)
                assert real == str(resolved), f"{path} -> {resolved} -> {real}"
                assert _under(root, Path(real))
                if resolved.is_file():
                    assert resolved.read_text() == "x"

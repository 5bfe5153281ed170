"""Kernel images identified end to end: real Debian and tinyconfig images, every payload
compression the kernel can build, damaged files, and fuzzing.

Oracles the project did not write: readelf -n for build-ids, the -dbg vmlinux for banners, and
the kernel's own compressors (gzip/bzip2/lzma/xz/`lz4 -l`/zstd from the standard library and the
bundled packages, lzo from the lzop tool) for the payloads spliced into a real bzImage.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.decompress import DecompressError, OutputTooLarge
from pytest_ktstr_vmlinux.formats.elfidentity import read_elf_identity
from pytest_ktstr_vmlinux.formats.image import ImageInfo, identify_image, read_payload
from pytest_ktstr_vmlinux.kernel.identity import (
    PAIRED_BUILD_ID,
    Expectation,
    image_identity,
    pair,
    vmlinux_identity,
)
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.fakes import (
    LZ4_MAGIC,
    banner_for,
    build_id_for,
    bzimage,
    kernel_elf,
    lz4_legacy,
)
from tests.helpers.kernels import REQUIRE_REAL_KERNELS, DebianKernel

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

SETUP_SECTS = 0x1F1
PAYLOAD_OFFSET = 0x248
PAYLOAD_LENGTH = 0x24C
MIB = 1 << 20


# --- oracles and builders ------------------------------------------------------------------------


def readelf_build_id(path: Path) -> str:
    """The GNU build-id as binutils' readelf reports it."""
    out = subprocess.run(
        ["readelf", "-n", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return out.split("Build ID: ", 1)[1].split()[0]


def elf_banner(path: Path) -> str | None:
    with open(path, "rb") as f:
        return read_elf_identity(f, what=str(path)).banner


def payload_span(image: bytes) -> tuple[int, int]:
    """(start, length) of a bzImage's compressed payload, read by hand from the setup header."""
    setup_sects = image[SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", image, PAYLOAD_OFFSET)
    return (setup_sects + 1) * 512 + offset, length


def splice(image: bytes, blob: bytes) -> bytes:
    """``image`` with its compressed payload replaced by ``blob`` and payload_length rewritten."""
    start, length = payload_span(image)
    out = bytearray(image[:start] + blob + image[start + length :])
    struct.pack_into("<I", out, PAYLOAD_LENGTH, len(blob))
    return bytes(out)


def size_append(data: bytes, packed: bytes) -> bytes:
    """The kernel's $(size_append): the uncompressed size as a trailing u32 LE."""
    return packed + struct.pack("<I", len(data) & 0xFFFFFFFF)


def tool(argv: list[str], package: str) -> Callable[[bytes], bytes]:
    """The kernel's own compressor command line, as a function (skips, or fails under
    KTSTR_REQUIRE_REAL_KERNELS=1, when the tool is not installed)."""

    def run(data: bytes) -> bytes:
        if shutil.which(argv[0]) is None:
            message = f"{argv[0]} is not installed (Debian: apt-get install {package})"
            if REQUIRE_REAL_KERNELS:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        return subprocess.run(argv, input=data, capture_output=True, check=True).stdout

    return run


def lzop_cli(data: bytes) -> bytes:
    pytest.importorskip("lzo", reason="python-lzo (extra [lzo]) is not installed")
    return tool(["lzop", "-9", "-c"], "lzop")(data)


# As scripts/Makefile.lib builds a bzImage payload (faster levels where the level does not change
# the format): cmd_gzip has no size_append, all the others do. "-tool" variants run the command
# lines of scripts/Makefile.lib and scripts/xz_wrap.sh themselves.
KERNEL_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda d: gzip.compress(d, compresslevel=9, mtime=0),
    "bzip2": lambda d: size_append(d, bz2.compress(d, 9)),
    "lzma": lambda d: size_append(d, lzma.compress(d, format=lzma.FORMAT_ALONE, preset=6)),
    "xz": lambda d: size_append(
        d,
        lzma.compress(
            d,
            format=lzma.FORMAT_XZ,
            check=lzma.CHECK_CRC32,
            filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}],
        ),
    ),
    "lz4": lambda d: size_append(d, lz4_legacy(d)),
    "zstd": lambda d: size_append(d, zstd.compress(d, 3)),
    "lzo": lambda d: size_append(d, lzop_cli(d)),
    "lz4-tool": lambda d: size_append(d, tool(["lz4", "-l", "-9", "-c"], "lz4")(d)),
    "xz-tool": lambda d: size_append(
        d, tool(["xz", "--check=crc32", "--x86", "--lzma2=,dict=32MiB", "-c"], "xz-utils")(d)
    ),
}


def zeros_bomb(compression: str, size: int) -> bytes:
    """``size`` zero bytes compressed, built a MiB at a time (the input is never held whole)."""
    chunk = bytes(MIB)
    if compression == "gzip":
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join(z.compress(chunk) for _ in range(size // MIB)) + z.flush()
    if compression == "xz":
        x = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0)
        return b"".join(x.compress(chunk) for _ in range(size // MIB)) + x.flush()
    assert compression == "zstd"
    c = zstd.ZstdCompressor(3)
    return b"".join(bytes(c.compress(chunk)) for _ in range(size // MIB)) + bytes(c.flush())


# --- real kernels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tiny:
    """The tinyconfig tree's bzImage, its decompressed payload (an ELF) and its identity."""

    tree: Path
    image: Path
    image_bytes: bytes
    payload: bytes
    build_id: str
    banner: str


@pytest.fixture(scope="session")
def tiny(tinyconfig_tree: Path) -> Tiny:
    image = tinyconfig_tree / "arch/x86/boot/bzImage"
    _, _, payload = read_payload(image)
    banner = elf_banner(tinyconfig_tree / "vmlinux")
    assert banner is not None
    return Tiny(
        tinyconfig_tree,
        image,
        image.read_bytes(),
        bytes(payload),
        readelf_build_id(tinyconfig_tree / "vmlinux"),
        banner,
    )


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.mark.real_kernel
def test_debian_amd64_bzimage(debian_kernel: DebianKernel) -> None:
    info = identify_image(debian_kernel.image)
    assert (info.format, info.compression, info.arch) == ("bzImage", "lz4", "x86_64")
    assert info.release == debian_kernel.release
    assert info.build_id == debian_kernel.build_id
    assert info.banner is not None
    assert info.banner.startswith(f"Linux version {debian_kernel.release} ")
    assert info.banner == elf_banner(debian_kernel.vmlinux)


@pytest.mark.real_kernel
def test_debian_amd64_pairs_with_its_dbg_vmlinux(debian_kernel: DebianKernel) -> None:
    store = MemoryStore()
    image = image_identity(debian_kernel.image, store)
    vmlinux = vmlinux_identity(debian_kernel.vmlinux, store)
    assert vmlinux.has_symtab
    assert pair(Expectation(image.build_id, image.banner, "image"), vmlinux) == (
        PAIRED_BUILD_ID,
        None,
    )


@pytest.mark.real_kernel
def test_debian_amd64_payload_is_the_stripped_elf(debian_kernel: DebianKernel, work: Path) -> None:
    """readelf reads the extracted payload and finds the same build-id: an ELF, not a guess."""
    fmt, compression, payload = read_payload(debian_kernel.image)
    assert (fmt, compression, payload[:4]) == ("bzImage", "lz4", b"\x7fELF")
    out = work / "debian-payload.elf"
    out.write_bytes(payload)
    assert readelf_build_id(out) == debian_kernel.build_id


@pytest.mark.real_kernel
def test_tinyconfig_bzimage(tiny: Tiny, work: Path) -> None:
    info = identify_image(tiny.image)
    assert (info.format, info.compression, info.arch) == ("bzImage", "xz", "x86_64")
    assert info.build_id == tiny.build_id
    assert info.banner == tiny.banner
    release = (tiny.tree / "include/config/kernel.release").read_text().strip()
    assert info.release == release
    out = work / "tiny-payload.elf"
    out.write_bytes(tiny.payload)
    assert readelf_build_id(out) == tiny.build_id


@pytest.mark.real_kernel
def test_tinyconfig_raw_vmlinux(tiny: Tiny) -> None:
    info = identify_image(tiny.tree / "vmlinux")
    assert (info.format, info.compression, info.arch) == ("vmlinux", "none", "x86_64")
    assert (info.build_id, info.banner) == (tiny.build_id, tiny.banner)


@pytest.mark.real_kernel
def test_debian_arm64_image(debian_arm64: DebianKernel) -> None:
    """Debian 12's arm64 vmlinuz is a flat arm64 Image (a signed EFI PE: "MZ", no "zimg")."""
    data = debian_arm64.image.read_bytes()
    assert data[:2] == b"MZ" and data[4:8] != b"zimg" and data[0x38:0x3C] == b"ARM\x64"
    info = identify_image(debian_arm64.image)
    assert (info.format, info.compression, info.arch) == ("arm64 Image", "none", "arm64")
    assert info.release == debian_arm64.release
    # The kernel's own note, as readelf reads it from the -dbg vmlinux; not a vDSO's.
    assert info.build_id == debian_arm64.build_id and info.build_id_problem is None
    assert info.banner is not None
    assert info.banner.startswith(f"Linux version {debian_arm64.release} ")
    # The real banner (with the build number), not init/version.o's "# SMP" placeholder.
    assert re.search(r"\) #\d+ ", info.banner)


@pytest.fixture(scope="session")
def arm64_identity(debian_arm64: DebianKernel) -> ImageInfo:
    return identify_image(debian_arm64.image)


@pytest.mark.real_kernel
@pytest.mark.parametrize("wrapper", ["Image.gz", "EFI zboot"])
def test_debian_arm64_wrapped(
    debian_arm64: DebianKernel, arm64_identity: ImageInfo, work: Path, wrapper: str
) -> None:
    """The same Image gzip'd (arch/arm64/boot/Image.gz) or in an EFI zboot wrapper."""
    flat = debian_arm64.image.read_bytes()
    packed = gzip.compress(flat, compresslevel=1, mtime=0)
    if wrapper == "Image.gz":
        path, fmt = work / "Image.gz", "arm64 Image"
        path.write_bytes(packed)
    else:
        # drivers/firmware/efi/libstub/zboot-header.S: MZ, "zimg", payload offset and size,
        # zeros, the compression's name at 0x18; the payload follows the PE header.
        header = bytearray(512)
        header[0:2] = b"MZ"
        header[4:8] = b"zimg"
        struct.pack_into("<II", header, 8, len(header), len(packed))
        header[0x18:0x1C] = b"gzip"
        path, fmt = work / "vmlinuz.efi", "EFI zboot arm64 Image"
        path.write_bytes(bytes(header) + packed + bytes(100))
    info = identify_image(path)
    assert (info.format, info.compression, info.arch) == (fmt, "gzip", "arm64")
    assert (info.release, info.build_id, info.banner) == (
        arm64_identity.release,
        arm64_identity.build_id,
        arm64_identity.banner,
    )


# --- every compression the kernel can build ------------------------------------------------------


@pytest.mark.real_kernel
def test_splice_is_faithful(tiny: Tiny) -> None:
    """The splicer, given the image's own payload back, rebuilds the image byte for byte."""
    start, length = payload_span(tiny.image_bytes)
    assert splice(tiny.image_bytes, tiny.image_bytes[start : start + length]) == tiny.image_bytes


@pytest.mark.real_kernel
@pytest.mark.parametrize("variant", list(KERNEL_COMPRESSORS))
def test_bzimage_with_every_compression(tiny: Tiny, work: Path, variant: str) -> None:
    blob = KERNEL_COMPRESSORS[variant](tiny.payload)
    compression = variant.removesuffix("-tool")
    path = work / f"bzImage.{variant}"
    path.write_bytes(splice(tiny.image_bytes, blob))
    fmt, found, payload = read_payload(path)
    assert (fmt, found) == ("bzImage", compression)
    assert payload == tiny.payload
    info = identify_image(path)
    assert (info.format, info.compression, info.arch) == ("bzImage", compression, "x86_64")
    assert (info.build_id, info.banner) == (tiny.build_id, tiny.banner)


VMLINUX_COMPRESSORS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("vmlinux.gz", lambda d: gzip.compress(d, compresslevel=1, mtime=0)),
    "xz": ("vmlinux.xz", lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, preset=0)),
    "zstd": ("vmlinux.zst", lambda d: zstd.compress(d, 1)),
}


@pytest.mark.real_kernel
@pytest.mark.parametrize("compression", list(VMLINUX_COMPRESSORS))
def test_compressed_vmlinux(tiny: Tiny, work: Path, compression: str) -> None:
    name, compress = VMLINUX_COMPRESSORS[compression]
    path = work / name
    path.write_bytes(compress((tiny.tree / "vmlinux").read_bytes()))
    info = identify_image(path)
    assert (info.format, info.compression, info.arch) == (
        "compressed vmlinux",
        compression,
        "x86_64",
    )
    assert (info.build_id, info.banner) == (tiny.build_id, tiny.banner)


# --- damaged and wrong inputs: one exception family, naming the file -----------------------------

GOOD_ELF = kernel_elf(build_id_for("fuzz"), banner_for("6.1.0-fuzz"), symtab=False)
GOOD_BZIMAGE = bzimage("6.1.0-fuzz (dev@host) #1 SMP", payload=GOOD_ELF)


def _field(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, offset, value)
    return bytes(out)


def _corrupt_stream(data: bytes) -> bytes:
    start, length = payload_span(data)
    out = bytearray(data)
    for i in range(start + length // 3, start + length // 3 + 16):
        out[i] ^= 0xFF
    return bytes(out)


BAD_FILES: dict[str, Callable[[], bytes]] = {
    "truncated in the boot sector": lambda: GOOD_BZIMAGE[:0x204],
    "truncated before payload_length": lambda: GOOD_BZIMAGE[:0x24E],
    "truncated in the payload": lambda: GOOD_BZIMAGE[: len(GOOD_BZIMAGE) - 40],
    "payload_offset past EOF": lambda: _field(GOOD_BZIMAGE, PAYLOAD_OFFSET, 1 << 30),
    "payload_offset u32 max": lambda: _field(GOOD_BZIMAGE, PAYLOAD_OFFSET, 0xFFFFFFFF),
    "payload_length 0": lambda: _field(GOOD_BZIMAGE, PAYLOAD_LENGTH, 0),
    "payload_length past EOF": lambda: _field(GOOD_BZIMAGE, PAYLOAD_LENGTH, len(GOOD_BZIMAGE)),
    "payload without compression magic": lambda: _field(
        GOOD_BZIMAGE, PAYLOAD_OFFSET, payload_span(GOOD_BZIMAGE)[1] // 2
    ),
    "old boot protocol": lambda: bzimage(protocol=0x0206, payload=GOOD_ELF),
    "wrong magic": lambda: b"this is not a kernel\n" * 100,
    "corrupted gzip stream": lambda: _corrupt_stream(GOOD_BZIMAGE),
    "payload not an ELF": lambda: bzimage(payload=b"\x00" * 4096),
    "gzip of text": lambda: gzip.compress(b"hello\n" * 1000),
    "zboot truncated": lambda: b"MZ\x00\x00zimg" + bytes(20),
    "zboot unknown compression": lambda: b"MZ\x00\x00zimg" + bytes(16) + b"lzham" + bytes(100),
    "zboot payload past EOF": lambda: (
        b"MZ\x00\x00zimg" + struct.pack("<II", 64, 1 << 20) + bytes(8) + b"gzip" + bytes(100)
    ),
    "empty file": lambda: b"",
}


# A file with ELF magic is a vmlinux to read_payload, which hands it over as it is; identifying it
# reads the ELF.
BAD_ELFS: dict[str, bytes] = {
    "ELF magic only": b"\x7fELF",
    "ELF header only": GOOD_ELF[:64],
    "ELF cut in its sections": GOOD_ELF[: len(GOOD_ELF) // 2],
    "ELF section table past EOF": GOOD_ELF[:-20],
}


def _assert_refused(
    path: Path,
    *,
    calls: tuple[Callable[..., object], ...] = (read_payload, identify_image),
    **kwargs: int,
) -> KernelArtifactError:
    for call in calls:
        with pytest.raises(KernelArtifactError) as info:
            call(path, **kwargs)
        assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_a_kernel_artifact_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(BAD_FILES[case]())
    _assert_refused(path)


@pytest.mark.real_kernel
@pytest.mark.parametrize("case", list(BAD_ELFS))
def test_bad_elf_is_a_kernel_artifact_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(BAD_ELFS[case])
    _assert_refused(path, calls=(identify_image,))


@pytest.mark.real_kernel
def test_corrupted_real_xz_stream(tiny: Tiny, tmp_path: Path) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(_corrupt_stream(tiny.image_bytes))
    assert isinstance(_assert_refused(path), DecompressError)


def test_directory_is_refused(tmp_path: Path) -> None:
    _assert_refused(tmp_path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "no-such-vmlinuz")


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd"])
@pytest.mark.parametrize("shape", ["bzImage", "compressed vmlinux"])
def test_decompression_bomb_stops_at_the_cap(tmp_path: Path, compression: str, shape: str) -> None:
    """256 MiB of zeros in a few hundred KiB: refused at a 16 MiB cap, not decoded whole."""
    bomb = zeros_bomb(compression, 256 * MIB)
    assert len(bomb) < MIB
    data = splice(GOOD_BZIMAGE, bomb) if shape == "bzImage" else bomb
    path = tmp_path / "vmlinuz"
    path.write_bytes(data)
    error = _assert_refused(path, max_output=16 * MIB)
    assert isinstance(error, OutputTooLarge)
    assert error.produced <= 16 * MIB


# --- damaged section headers (once library bugs, now regressions) -------------------------------

_NOTES_SECTION = 1  # kernel_elf's first section after SHN_UNDEF: .notes


def _with_section_field(elf: bytes, index: int, field: int, value: int) -> bytes:
    """``elf`` (ELF64 LE) with the u64 at ``field`` of section header ``index`` set to ``value``
    (0x18 sh_offset, 0x20 sh_size)."""
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    out = bytearray(elf)
    struct.pack_into("<Q", out, shoff + index * 64 + field, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("section", "field"),
    [(_NOTES_SECTION, 0x18), (_NOTES_SECTION, 0x20), ("shstrtab", 0x18)],
    ids=["notes-sh_offset", "notes-sh_size", "shstrtab-sh_offset"],
)
def test_elf_offsets_past_2_63_are_refused(tmp_path: Path, section: int | str, field: int) -> None:
    index = struct.unpack_from("<H", GOOD_ELF, 0x3E)[0] if section == "shstrtab" else section
    assert isinstance(index, int)
    data = _with_section_field(GOOD_ELF, index, field, 1 << 63)
    for name, file_data in (("vmlinux", data), ("bzImage", bzimage(payload=data))):
        path = tmp_path / name
        path.write_bytes(file_data)
        _assert_refused(path, calls=(identify_image,))


def test_vmlinux_identity_refuses_a_section_bigger_than_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_with_section_field(GOOD_ELF, _NOTES_SECTION, 0x20, 1 << 62))
    with pytest.raises(KernelArtifactError, match=re.escape(str(path))):
        vmlinux_identity(path)


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ = settings(max_examples=2000, deadline=None)


def _only_kernel_artifact_errors(data: bytes) -> None:
    """read_payload and identify_image on ``data``: an answer, or KernelArtifactError naming it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed"
        path.write_bytes(data)
        for call in (read_payload, identify_image):
            try:
                call(path, max_output=64 * MIB)
            except KernelArtifactError as e:
                assert str(path) in str(e)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        out[at % len(out)] = value
    return bytes(out if cut is None else out[:cut])


_edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8)
_header_edits = st.lists(st.tuples(st.integers(0x1F0, 0x260), st.integers(0, 255)), max_size=6)
_fields = st.lists(
    st.tuples(st.sampled_from([PAYLOAD_OFFSET, PAYLOAD_LENGTH]), st.integers(0, 0xFFFFFFFF)),
    max_size=2,
)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_kernel_artifact_errors(data)


@FUZZ
@given(
    prefix=st.sampled_from([b"", b"\x1f\x8b", b"\xfd7zXZ\x00", LZ4_MAGIC, b"MZ\x00\x00zimg"]),
    data=st.binary(max_size=2048),
)
def test_fuzz_magic_then_garbage(prefix: bytes, data: bytes) -> None:
    _only_kernel_artifact_errors(prefix + data)


@FUZZ
@given(
    edits=_edits,
    header=_header_edits,
    fields=_fields,
    cut=st.none() | st.integers(0, len(GOOD_BZIMAGE)),
)
def test_fuzz_mutated_bzimage(
    edits: list[tuple[int, int]],
    header: list[tuple[int, int]],
    fields: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data = _mutate(GOOD_BZIMAGE, edits + header, None)
    for offset, value in fields:
        data = _field(data, offset, value)
    _only_kernel_artifact_errors(data if cut is None else data[:cut])


@FUZZ
@given(edits=_edits, cut=st.none() | st.integers(0, len(GOOD_ELF)), wrap=st.booleans())
def test_fuzz_mutated_payload_elf(
    edits: list[tuple[int, int]], cut: int | None, wrap: bool
) -> None:
    """Damage inside the ELF (headers, notes, section table) reaches pyelftools: as a raw vmlinux
    or as a well-compressed bzImage payload."""
    elf = _mutate(GOOD_ELF, edits, cut)
    _only_kernel_artifact_errors(bzimage(payload=elf) if wrap else elf)


def test_fuzz_seeds_are_valid() -> None:
    """The fuzzers start from files that identify, so mutations explore near valid inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("bzImage", GOOD_BZIMAGE), ("vmlinux", GOOD_ELF)):
            path = Path(tmp) / name
            path.write_bytes(data)
            info = identify_image(path)
            assert info.format == name
            assert info.build_id == build_id_for("fuzz").hex()
            assert info.banner == banner_for("6.1.0-fuzz")

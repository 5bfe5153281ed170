"""Which build a file is, and whether a vmlinux and an image are the same build.

Identities are derived artifacts: computed once per file version through the store, so a warm
identification is a stat and an index read, in every worker and every run.

Pairing rule: equal GNU build-ids pair. Where either side has no build-id, equal full
``linux_banner`` strings pair. Anything else is refused, and the refusal names both sides.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from ..errors import KernelArtifactError
from ..formats.elfidentity import ElfIdentity, gnu_build_id, read_elf_identity
from ..formats.image import ImageInfo, identify_image, read_payload
from ..regularfile import is_symlink_loop, read_regular, stable_read
from ..store.api import Store, StoredArtifact
from ..store.memory import MemoryStore
from ..store.signature import read_error
from .sysroot import Sysroot

T = TypeVar("T")

IMAGE_IDENTITY_KIND = "image-identity"
# 2: a flat image's build-id is the note outside its embedded ELF files (vDSOs), not the first.
IMAGE_IDENTITY_VERSION = 2
IMAGE_PAYLOAD_KIND = "image-payload"
IMAGE_PAYLOAD_VERSION = 1
VMLINUX_IDENTITY_KIND = "vmlinux-identity"
VMLINUX_IDENTITY_VERSION = 1
RUNNING_NOTES = "/sys/kernel/notes"
# The kernel's notes are a few hundred bytes; more is not a notes file.
MAX_NOTES_BYTES = 1 << 20

PAIRED_BUILD_ID = "build-id"
PAIRED_BANNER = "banner"
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Expectation:
    """What the vmlinux must match: the image's (or the running kernel's) build-id and banner."""

    build_id: str | None
    banner: str | None
    source: str


def image_identity(image: str | os.PathLike[str], store: Store | None = None) -> ImageInfo:
    """The image's identity, decompressing its payload only when the store has no answer yet."""
    data = (store or MemoryStore()).get_or_build_json(
        image,
        IMAGE_IDENTITY_KIND,
        IMAGE_IDENTITY_VERSION,
        lambda path: asdict(identify_image(path)),
    )
    return _from_json(ImageInfo, data, image)


def vmlinux_identity(vmlinux: str | os.PathLike[str], store: Store | None = None) -> ElfIdentity:
    """The vmlinux's build-id, banner, arch and whether it has ``.symtab``."""

    def compute(path: Path) -> dict[str, Any]:
        try:
            # The store re-stats the source after the build: no check at the end here.
            with stable_read(path, check_at_end=False) as f:
                return asdict(read_elf_identity(f.file, what=str(path)))
        except OSError as e:
            raise read_error(path, e) from None

    data = (store or MemoryStore()).get_or_build_json(
        vmlinux, VMLINUX_IDENTITY_KIND, VMLINUX_IDENTITY_VERSION, compute
    )
    return _from_json(ElfIdentity, data, vmlinux)


def image_payload(image: str | os.PathLike[str], store: Store) -> StoredArtifact:
    """The image's decompressed payload (an ELF, or a flat arm64/riscv Image), built once."""

    def build(path: Path, out: BinaryIO) -> None:
        out.write(read_payload(path)[2])

    return store.get_or_build(image, IMAGE_PAYLOAD_KIND, IMAGE_PAYLOAD_VERSION, build)


def extracted_vmlinux(image: str | os.PathLike[str], store: Store) -> Path:
    """A path to the ELF inside ``image``: it has .BTF and .notes but no .symtab."""
    payload = image_payload(image, store)
    if bytes(payload.map()[:4]) != b"\x7fELF":
        raise KernelArtifactError(
            f"{image}: its payload is a flat Image, not an ELF; no vmlinux can be extracted"
        )
    return store.export(payload, ".vmlinux")


def running_expectation(sysroot: Sysroot) -> Expectation | None:
    """The running kernel's build-id from /sys/kernel/notes: the sysroot's copy when it has one,
    else the host's. None when neither can be read; NotRegularFile (or a KernelArtifactError for
    a symlink loop) when one is there but is no file to read: a FIFO must not hang the run."""
    candidates = [Path(RUNNING_NOTES)]
    if sysroot.root:
        shown = sysroot.prefix(RUNNING_NOTES)
        try:
            candidates.insert(0, sysroot.resolve(shown))
        except OSError as e:
            raise read_error(shown, e) from None
    for notes in candidates:
        try:
            blob = read_regular(notes, MAX_NOTES_BYTES)
        except OSError as e:
            if is_symlink_loop(e):
                raise read_error(notes, e) from None
            continue
        build_id = gnu_build_id(blob)
        if build_id:
            return Expectation(build_id, None, str(notes))
    return None


def pair(expected: Expectation | None, vmlinux: ElfIdentity) -> tuple[str | None, str | None]:
    """(how they pair, why they do not): ("build-id", None), (None, "build-id mismatch: ...")."""
    if expected is None:
        return UNVERIFIED, None
    if expected.build_id and vmlinux.build_id:
        if expected.build_id == vmlinux.build_id:
            return PAIRED_BUILD_ID, None
        return None, (
            f"build-id mismatch: {expected.source} {expected.build_id} vmlinux {vmlinux.build_id}"
        )
    if expected.banner and vmlinux.banner:
        if expected.banner == vmlinux.banner:
            return PAIRED_BANNER, None
        return None, (
            f"banner mismatch: {expected.source} {expected.banner!r} vmlinux {vmlinux.banner!r}"
        )
    return UNVERIFIED, None


def _from_json(cls: type[T], data: Any, source: str | os.PathLike[str]) -> T:
    try:
        return cls(**data)
    except TypeError:
        raise KernelArtifactError(
            f"{source}: stored identity has an unexpected shape; run with --kernel-cache-clear"
        ) from None

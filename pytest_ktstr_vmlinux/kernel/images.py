"""Find a kernel's image and what it says about itself: its release, its arch, its build tree.

A kernel is named by a build tree (``arch/<arch>/boot/<image>`` inside it), an image path, or a
release whose image a distro installed (``DISTRO_IMAGE_LAYOUTS``, under the sysroot). The image's
header, the tree's ``include/config/kernel.release``, the image's name and directory each may tell
the release; ``locate.py`` then probes for the vmlinux belonging to it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..formats.image import is_release, read_image_header
from ..regularfile import NotRegularFile, file_type, is_symlink_loop, read_regular
from ..store.signature import read_error
from .spec import KernelSpec, SpecKind
from .sysroot import Sysroot

DISTRO_IMAGE_LAYOUTS: tuple[str, ...] = (
    "/boot/vmlinuz-{R}",
    "/lib/modules/{R}/vmlinuz",
    "/usr/lib/modules/{R}/vmlinuz",
)

# (arch, image path under <tree>/arch/<arch>/boot), in the order a tree directory is searched.
BUILD_TREE_IMAGES: tuple[tuple[str, str], ...] = (
    ("x86", "bzImage"),
    ("arm64", "Image"),
    ("arm64", "Image.gz"),
    ("riscv", "Image"),
    ("riscv", "Image.gz"),
    ("arm", "zImage"),
)

KERNEL_RELEASE_FILE = "include/config/kernel.release"
# A release is one short line; a longer file is not one.
MAX_RELEASE_FILE_BYTES = 4096
_IMAGE_NAME_PREFIXES = ("vmlinuz-", "vmlinux-", "Image-", "bzImage-")

# `uname -m` values mapped to the arch names formats/elf.py uses.
_ARCH_BY_UNAME: dict[str, str] = {
    "x86_64": "x86_64",
    "i386": "i386",
    "i686": "i386",
    "aarch64": "arm64",
    "arm64": "arm64",
    "riscv64": "riscv64",
    "riscv32": "riscv32",
    "armv7l": "arm",
    "armv6l": "arm",
    "loongarch64": "loongarch64",
    "ppc64le": "ppc64",
    "ppc64": "ppc64",
    "s390x": "s390x",
}


@dataclass(frozen=True)
class Candidate:
    """One probed path: where it came from, and why it was refused (None when chosen)."""

    #: The path probed.
    path: Path
    #: Where the path comes from (``"Debian/Ubuntu dbgsym"``, ``"build tree"``, ...).
    layout: str
    #: Why it was refused, None when it was chosen.
    refused: str | None
    #: The file the chosen path resolved to (through symlinks, under the sysroot).
    resolved: Path | None = None

    def describe(self) -> str:
        """The candidate's line in a probe report: ``chosen`` or ``refused``, the path, its
        layout and the reason."""
        where = f"{self.path} [{self.layout}]"
        if self.refused is not None:
            return f"  refused  {where}: {self.refused}"
        via = f" -> {self.resolved}" if self.resolved and self.resolved != self.path else ""
        return f"  chosen   {where}{via}"


@dataclass(frozen=True)
class FoundImage:
    """What the spec alone tells of a kernel, before any vmlinux is probed.

    ``named_tree`` is the build tree the spec named, the first place its vmlinux is looked
    for; ``tree`` is the tree the kernel was built in, named or not (``<root>`` of an image at
    ``<root>/arch/<arch>/boot/``, the directory of a vmlinux beside a Makefile and .config):
    where its ``.config`` is. ``refused`` holds the distro images passed over on the way (a
    symlink loop, a FIFO), for the probe report.
    """

    image: Path | None
    named_tree: Path | None
    tree: Path | None
    release: str | None
    arch: str | None
    refused: tuple[Candidate, ...] = ()


def find_image(spec: KernelSpec, sysroot: Sysroot) -> FoundImage:
    """The image, trees, release and arch ``spec`` names, as far as it alone tells: the image's
    header, its build tree and its name say the release and arch; the running kernel's arch
    falls back to ``uname -m``. A file there that is no file to read (a FIFO in the tree) is a
    KernelArtifactError naming it."""
    path = spec.path
    if spec.kind is SpecKind.TREE:
        assert path is not None
        in_tree = find_tree_image(path)
        image = in_tree[0] if in_tree else None
        arch = image_arch(image) if image else None
        return FoundImage(image, path, path, read_tree_release(path), arch)
    if spec.kind is SpecKind.IMAGE:
        assert path is not None
        release, arch = image_release(path), image_arch(path)
        return FoundImage(path, None, build_tree_root(path), release, arch)
    if spec.kind is SpecKind.VMLINUX:
        assert path is not None
        parent = path.parent
        release = read_tree_release(parent)
        # isfile, not Path.is_file: a directory that cannot be searched is no build tree,
        # and the vmlinux in it gets its own clear error when it is read.
        built = os.path.isfile(parent / "Makefile") and os.path.isfile(parent / ".config")
        return FoundImage(None, None, parent if built else None, release, None)
    refused: list[Candidate] = []
    if spec.kind is SpecKind.RUNNING:
        uname = os.uname()
        release = uname.release
        image = find_distro_image(release, sysroot, refused)
        arch = (image_arch(image) if image else None) or arch_from_uname(uname.machine)
    else:  # a release, or a fetch spec once fetched
        assert spec.release is not None
        release = spec.release
        image = find_distro_image(release, sysroot, refused)
        arch = image_arch(image) if image else None
    tree = build_tree_root(image) if image is not None else None
    return FoundImage(image, None, tree, release, arch, tuple(refused))


def arch_from_uname(machine: str) -> str | None:
    """The arch name ``formats/elf.py`` uses for a ``uname -m`` value; None for one it does not
    know."""
    return _ARCH_BY_UNAME.get(machine)


def release_from_image_path(image: Path) -> str | None:
    """The release encoded in an image's name (``vmlinuz-R``) or directory (``/lib/modules/R/``)."""
    for prefix in _IMAGE_NAME_PREFIXES:
        if image.name.startswith(prefix) and safe_release(image.name[len(prefix) :]):
            return image.name[len(prefix) :]
    parent = image.parent
    if parent.parent.name == "modules" and safe_release(parent.name):
        return parent.name
    return None


def build_tree_root(image: Path) -> Path | None:
    """``<root>`` when ``image`` sits at ``<root>/arch/<arch>/boot/<image>``, else None."""
    boot = image.parent
    if boot.name == "boot" and boot.parent.parent.name == "arch":
        return boot.parent.parent.parent
    return None


def build_tree_arch(image: Path) -> str | None:
    """The ``<arch>`` of ``<root>/arch/<arch>/boot/<image>``, else None."""
    return image.parent.parent.name if build_tree_root(image) is not None else None


def read_tree_release(tree: Path) -> str | None:
    """The release a build tree recorded in ``include/config/kernel.release``, if sane;
    NotRegularFile when something else (a FIFO) is there."""
    try:
        raw = read_regular(tree / KERNEL_RELEASE_FILE, MAX_RELEASE_FILE_BYTES)
    except OSError:
        return None
    text = raw.decode("ascii", errors="replace").strip()
    return text if is_release(text) else None


def image_release(image: Path) -> str | None:
    """The image's release: its header, then its build tree, its name, its directory."""
    try:
        from_header = read_image_header(image).release
    except OSError:
        from_header = None
    if from_header:
        return from_header
    root = build_tree_root(image)
    from_tree = read_tree_release(root) if root is not None else None
    return from_tree or release_from_image_path(image)


def image_arch(image: Path) -> str | None:
    """The image's architecture: its header's magic, else its build-tree directory."""
    try:
        from_header = read_image_header(image).arch
    except OSError:
        from_header = None
    return from_header or build_tree_arch(image)


def find_tree_image(tree: Path) -> tuple[Path, str] | None:
    """The first ``arch/<arch>/boot/<image>`` a build tree has, with its arch. Something there
    that is no file to read (a FIFO, a symlink loop) is a KernelArtifactError naming it."""
    for arch, name in BUILD_TREE_IMAGES:
        candidate = tree / "arch" / arch / "boot" / name
        try:
            mode = os.stat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise read_error(candidate, e) from None
        if not stat.S_ISREG(mode):
            raise NotRegularFile(candidate, mode)
        return candidate, arch
    return None


def config_beside_image(image: Path, release: str | None) -> list[Path]:
    """Files next to ``image`` (and next to its target, when it is a symlink) that may hold its
    kernel config, in order: ``config-X`` beside ``vmlinuz-X`` (also ``vmlinux-X``, ``Image-X``,
    ``bzImage-X``), ``config-R`` for the kernel's release R, and ``config`` beside
    ``.../modules/R/vmlinuz`` (the layout of Fedora and of Debian's packages from 2026 on)."""
    found: list[Path] = []
    for img in image_and_target(image):
        for prefix in _IMAGE_NAME_PREFIXES:
            suffix = img.name[len(prefix) :]
            if img.name.startswith(prefix) and safe_release(suffix):
                found.append(img.parent / f"config-{suffix}")
        if release is not None and safe_release(release):
            found.append(img.parent / f"config-{release}")
        if img.name == "vmlinuz" and img.parent.parent.name == "modules":
            found.append(img.parent / "config")
    return list(dict.fromkeys(found))


def find_distro_image(
    release: str, sysroot: Sysroot, refused: list[Candidate] | None = None
) -> Path | None:
    """The first distro image for ``release`` (``/boot/vmlinuz-R``, ...) under the sysroot.

    One that is there but cannot be an image (a symlink loop, a FIFO, a directory) is passed
    over, and added to ``refused`` for the probe report; a missing one is the usual case and is
    not.
    """
    for template in DISTRO_IMAGE_LAYOUTS:
        shown = sysroot.prefix(template.format(R=release))
        why = None
        try:
            candidate = sysroot.resolve(shown)
            mode = os.stat(candidate).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            why = unusable(e)
        else:
            if stat.S_ISREG(mode):
                return candidate
            why = f"not a regular file: {file_type(mode)}"
        if refused is not None:
            refused.append(Candidate(shown, "distro image", why))
    return None


def unusable(error: OSError) -> str:
    """Why a candidate that could not be opened or resolved is refused."""
    return "symlink loop" if is_symlink_loop(error) else f"unreadable: {error.strerror or error}"


def image_and_target(image: Path) -> Iterator[Path]:
    # A symlinked image (/vmlinuz -> boot/vmlinuz-R) is searched beside its target too.
    yield image
    if not image.is_symlink():
        return
    try:
        real = Path(os.path.realpath(image))
    except OSError:
        return
    if real != image:
        yield real


def safe_release(text: str) -> bool:
    # A release becomes a path component: it must not climb out of or reach into directories.
    return bool(text) and "/" not in text and text not in (".", "..") and "\x00" not in text

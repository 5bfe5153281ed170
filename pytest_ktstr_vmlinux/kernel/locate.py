"""Find the vmlinux ELF for a kernel image, probing every known layout and saying why each failed.

Probe order (first acceptable candidate wins):

1. ``<image dir>/vmlinux`` (or ``<tree>/vmlinux`` for a build-tree directory);
2. the build-tree root: ``<root>/arch/<arch>/boot/<image>`` -> ``<root>/vmlinux``;
3. the distro layouts for the release R, in ``DISTRO_VMLINUX_LAYOUTS`` order, under the sysroot,
   then ``/usr/lib/debug/.build-id/xx/rest.debug`` when the image's build-id is known;
4. ``/lib/modules/R/vmlinuz`` -> ``/lib/modules/R/build/vmlinux`` next to the image.

Candidates come from the path the user gave and, when it is a symlink, from its target too.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import KernelArtifactError
from ..formats.elf import NotElfError, arch_matches, read_elf_ident
from ..regularfile import NotRegularFile
from ..store.api import Store, StoreLockTimeout
from .identity import UNVERIFIED, Expectation, image_identity, pair, vmlinux_identity
from .images import (
    Candidate,
    build_tree_root,
    image_and_target,
    image_arch,
    image_release,
    read_tree_release,
    safe_release,
    unusable,
)
from .sysroot import Sysroot

# (path template, layout name). R is the kernel release.
DISTRO_VMLINUX_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("/usr/lib/debug/boot/vmlinux-{R}", "Debian/Ubuntu dbgsym"),
    ("/usr/lib/debug/lib/modules/{R}/vmlinux", "Fedora debuginfo"),
    # Debian's packages from 2026 on make it a link to the one above; elsewhere it may be a file.
    ("/usr/lib/debug/vmlinux-{R}", "debug dir, versioned"),
    ("/lib/modules/{R}/vmlinux", "SUSE"),
    ("/lib/modules/{R}/vmlinux.debug", "SUSE debug"),
    ("/boot/vmlinux-{R}", "/boot vmlinux"),
    ("/lib/modules/{R}/build/vmlinux", "modules build dir"),
    ("/lib/modules/{R}/vmlinux-{R}", "modules dir, versioned"),
    ("/usr/lib/modules/{R}/kernel/vmlinux", "usr modules dir"),
    ("/usr/lib/debug/boot/vmlinux-{R}.debug", "debug .debug"),
)

# debuginfod-style debug file named by the GNU build-id (any distro; found once the build-id is).
BUILD_ID_LAYOUT = "/usr/lib/debug/.build-id/{xx}/{rest}.debug"
_BUILD_ID = re.compile(r"[0-9a-f]{4,128}", re.ASCII)


@dataclass(frozen=True)
class ProbeReport:
    """Every candidate, in probe order, and what was searched for."""

    #: Every path probed, in order, each chosen or refused with its reason.
    candidates: tuple[Candidate, ...]
    #: The vmlinux chosen, None when every candidate was refused.
    chosen: Path | None
    #: The release searched for (the distro layouts are named by it).
    release: str | None = None
    #: The architecture a candidate had to be built for; None accepts any.
    arch: str | None = None
    #: The image whose vmlinux was searched for.
    image: Path | None = None
    #: How the chosen vmlinux was matched to the kernel: ``"build-id"``, ``"banner"`` or
    #: ``"unverified"``.
    paired: str = "unverified"
    #: Why pairing could not be checked (an image whose payload cannot be read), if it could not.
    unverifiable: str | None = None
    #: Distro images passed over before the image was found (a symlink loop, a FIFO).
    images: tuple[Candidate, ...] = ()

    def summary(self) -> str:
        """One line: the chosen path, or how many candidates were refused and for what."""
        if self.chosen is not None:
            return str(self.chosen)
        if not self.candidates:
            return "no candidates (release unknown and no image or tree to search beside)"
        reasons = Counter(c.refused.split(":", 1)[0] for c in self.candidates if c.refused)
        counts = ", ".join(f"{n} {why}" for why, n in reasons.most_common())
        return f"not found ({len(self.candidates)} candidates refused: {counts})"

    def format(self) -> str:
        """The full report, one candidate a line, for error messages and the CLI."""
        head = (
            f"vmlinux probe for image={self.image or 'none'} release={self.release or 'unknown'}"
            f" arch={self.arch or 'any'}: {self.summary()}"
        )
        lines = [head, *(c.describe() for c in (*self.images, *self.candidates))]
        if self.chosen is not None:
            lines.append(f"  paired   {self.paired}")
        if self.unverifiable:
            lines.append(f"  pairing unverifiable: {self.unverifiable}")
        if self.chosen is None:
            lines.append(
                "  hint: install the kernel's debug package (Debian/Ubuntu: linux-image-R-dbg"
                " or -dbgsym; Fedora: kernel-debuginfo), build vmlinux, or pass --vmlinux"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class Probe(NamedTuple):
    """The chosen vmlinux (None when every candidate was refused) and the report of the search."""

    #: The vmlinux chosen, or None.
    path: Path | None
    #: Every candidate and why it was chosen or refused.
    report: ProbeReport


def vmlinux_candidates(
    image: Path | None,
    *,
    release: str | None,
    tree: Path | None = None,
    sysroot: Sysroot | None = None,
    build_id: str | None = None,
) -> list[tuple[Path, str]]:
    """Every path worth probing, in order, without duplicates, each with its layout name."""
    sysroot = sysroot or Sysroot(None)
    images = list(image_and_target(image)) if image is not None else []
    found: list[tuple[Path, str]] = []
    if tree is not None:
        found.append((tree / "vmlinux", "build tree"))
    found += [(img.parent / "vmlinux", "next to the image") for img in images]
    for img in images:
        root = build_tree_root(img)
        if root is not None:
            found.append((root / "vmlinux", "build tree root"))
    if release is not None and safe_release(release):
        found += [(sysroot.prefix(t.format(R=release)), name) for t, name in DISTRO_VMLINUX_LAYOUTS]
    if build_id is not None and _BUILD_ID.fullmatch(build_id):
        by_id = BUILD_ID_LAYOUT.format(xx=build_id[:2], rest=build_id[2:])
        found.append((sysroot.prefix(by_id), "debug by build-id"))
    found += [
        (img.parent / "build" / "vmlinux", "modules dir build/")
        for img in images
        if img.name == "vmlinuz" and img.parent.parent.name == "modules"
    ]
    seen: set[Path] = set()
    unique = []
    for path, layout in found:
        if path not in seen:
            seen.add(path)
            unique.append((path, layout))
    return unique


def probe_vmlinux(
    image: str | os.PathLike[str] | None = None,
    *,
    release: str | None = None,
    arch: str | None = None,
    tree: str | os.PathLike[str] | None = None,
    sysroot: str | os.PathLike[str] | Sysroot | None = None,
    expect: Expectation | None = None,
    store: Store | None = None,
    verify: bool = True,
) -> Probe:
    """Probe every candidate for the vmlinux of ``image`` (or ``tree``, or ``release``)::

        probe = probe_vmlinux("/boot/vmlinuz-6.1.0-56-cloud-amd64")
        print(probe.path or probe.report.format())  # the vmlinux, or why each candidate failed

    ``release`` and ``arch`` default to what the image says about itself; an ELF built for
    another machine is refused. With ``verify``, a candidate must also pair with ``expect``
    (default: the image's own build-id and banner, through ``store``; ``resolve_kernel`` passes
    its own): a stale vmlinux from an older build is refused, not served. ``sysroot`` is a
    directory standing in for ``/`` under every distro path. Never raises for a missing or odd
    file.
    """
    root = sysroot if isinstance(sysroot, Sysroot) else Sysroot(sysroot)
    image_path = Path(os.path.abspath(image)) if image is not None else None
    tree_path = Path(os.path.abspath(tree)) if tree is not None else None
    if release is None and image_path is not None:
        release = image_release(image_path)
    if arch is None and image_path is not None:
        arch = image_arch(image_path)
    if release is None and tree_path is not None:
        release = read_tree_release(tree_path)
    unverifiable = None
    if verify and expect is None and image_path is not None:
        try:
            info = image_identity(image_path, store)
            expect = Expectation(info.build_id, info.banner, "image")
        except StoreLockTimeout:
            raise  # the store was busy: nothing is known about the image
        except KernelArtifactError as e:
            unverifiable = str(e)
    probed: list[Candidate] = []
    chosen: Path | None = None
    paired = UNVERIFIED
    build_id = expect.build_id if expect else None
    for path, layout in vmlinux_candidates(
        image_path, release=release, tree=tree_path, sysroot=root, build_id=build_id
    ):
        try:
            resolved = root.resolve(path)
        except OSError as e:
            probed.append(Candidate(path, layout, unusable(e)))
            continue
        refused = check_vmlinux_candidate(resolved, arch)
        if refused is None and verify:
            how, refused = _pairing(resolved, expect, store)
        probed.append(Candidate(path, layout, refused, None if refused else resolved))
        if refused is None:
            chosen = resolved
            paired = how if verify else UNVERIFIED
            break
    report = ProbeReport(
        tuple(probed),
        chosen,
        release=release,
        arch=arch,
        image=image_path,
        paired=paired,
        unverifiable=unverifiable,
    )
    return Probe(chosen, report)


def _pairing(
    vmlinux: Path, expect: Expectation | None, store: Store | None
) -> tuple[str, str | None]:
    if expect is None:
        return UNVERIFIED, None
    try:
        identity = vmlinux_identity(vmlinux, store)
    except StoreLockTimeout:
        raise  # the store was busy: nothing is known about the candidate
    except KernelArtifactError as e:
        return UNVERIFIED, f"unreadable ELF: {e}"
    how, refused = pair(expect, identity)
    return how or UNVERIFIED, refused


def find_vmlinux(image: str | os.PathLike[str]) -> Path | None:
    """The vmlinux paired with ``image``, or None; never raises for odd or missing paths::

        vmlinux = find_vmlinux("/boot/vmlinuz-6.1.0-56-cloud-amd64")

    ``probe_vmlinux`` says why when there is none."""
    if not str(image):
        return None
    return probe_vmlinux(image).path


def check_vmlinux_candidate(path: Path, arch: str | None) -> str | None:
    """Why ``path`` cannot be the vmlinux (missing, not regular, unreadable, not ELF, wrong
    machine), or None when it can."""
    try:
        ident = read_elf_ident(path)
    except FileNotFoundError:
        return "dangling symlink" if os.path.islink(path) else "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as e:
        return unusable(e)
    except NotRegularFile as e:
        return f"not a regular file: {e.kind}"
    except NotElfError as e:
        return f"not ELF: {e}"
    if arch is not None and (ident.arch is None or not arch_matches(ident.arch, arch)):
        return f"wrong machine: ELF for {ident.machine_name}, the image is {arch}"
    return None

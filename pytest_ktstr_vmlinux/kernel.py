"""Turn a kernel spec into a Kernel: its image, its vmlinux, release, arch and the probe report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KernelArtifactError, KernelSpecError
from .locate import (
    Candidate,
    Probe,
    ProbeReport,
    find_distro_image,
    find_tree_image,
    image_arch,
    image_release,
    probe_vmlinux,
    read_tree_release,
)
from .spec import (
    KernelSpec,
    SpecKind,
    SpecSource,
    check_vmlinux_path,
    parse_kernel_spec,
)
from .sysroot import Sysroot

# `uname -m` values mapped to the kernel's ARCH= names.
_ARCH_BY_UNAME: dict[str, str] = {
    "x86_64": "x86",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "riscv64": "riscv",
    "riscv32": "riscv",
    "armv7l": "arm",
    "armv6l": "arm",
    "loongarch64": "loongarch",
    "ppc64le": "powerpc",
    "ppc64": "powerpc",
    "s390x": "s390",
}


@dataclass(frozen=True)
class Kernel:
    """A resolved kernel. ``vmlinux`` is None when no candidate passed; ``report`` says why."""

    spec: KernelSpec
    image: Path | None
    vmlinux: Path | None
    release: str | None
    arch: str | None
    report: ProbeReport
    sysroot: Path | None = None

    @property
    def source(self) -> SpecSource:
        return self.spec.source

    def require_vmlinux(self) -> Path:
        """The vmlinux path, or KernelArtifactError carrying the whole probe report."""
        if self.vmlinux is None:
            raise KernelArtifactError(self.missing_vmlinux_message())
        return self.vmlinux

    def missing_vmlinux_message(self) -> str:
        return (
            f"no vmlinux for kernel {self.spec.raw!r} (from {self.source.value})\n"
            f"{self.report.format()}"
        )


def arch_from_uname(machine: str) -> str | None:
    return _ARCH_BY_UNAME.get(machine)


def resolve_kernel(
    spec: str | KernelSpec,
    *,
    vmlinux: str | os.PathLike[str] | None = None,
    sysroot: str | os.PathLike[str] | None = None,
    source: SpecSource = SpecSource.OPTION,
    base: str | os.PathLike[str] | None = None,
) -> Kernel:
    """Resolve ``spec`` (see spec.py for its forms) to a Kernel.

    ``vmlinux`` skips the search; ``sysroot`` prefixes every absolute distro path probed.
    Raises KernelSpecError when the spec or ``vmlinux`` names something that cannot be used;
    a vmlinux that is merely not found is reported in ``Kernel.report``, not raised.
    """
    if isinstance(spec, str):
        spec = parse_kernel_spec(spec, source=source, base=base)
    root = Sysroot(sysroot)
    image, tree, release, arch = _identify(spec, root)
    if vmlinux is not None:
        probe = _explicit_vmlinux(vmlinux, arch=arch, base=base)
    elif spec.kind is SpecKind.VMLINUX:
        assert spec.path is not None
        origin = f"kernel {spec.raw!r} (from {spec.source.value})"
        _, ident = check_vmlinux_path(str(spec.path), origin=origin, base=None)
        arch = ident.arch
        given = Candidate(spec.path, "given as the kernel", None, spec.path)
        probe = Probe(spec.path, ProbeReport((given,), spec.path, release, arch, None))
    else:
        probe = probe_vmlinux(image, release=release, arch=arch, tree=tree, sysroot=root)
    return Kernel(
        spec=spec,
        image=image,
        vmlinux=probe.path,
        release=release or probe.report.release,
        arch=arch or probe.report.arch,
        report=probe.report,
        sysroot=root.root,
    )


def _identify(
    spec: KernelSpec, root: Sysroot
) -> tuple[Path | None, Path | None, str | None, str | None]:
    """(image, build tree, release, arch) as far as the spec alone tells."""
    if spec.kind is SpecKind.TREE:
        assert spec.path is not None
        found = find_tree_image(spec.path)
        image, arch = found if found else (None, None)
        return image, spec.path, read_tree_release(spec.path), arch
    if spec.kind is SpecKind.IMAGE:
        assert spec.path is not None
        return spec.path, None, image_release(spec.path), image_arch(spec.path)
    if spec.kind is SpecKind.VMLINUX:
        assert spec.path is not None
        return None, None, read_tree_release(spec.path.parent), None
    if spec.kind is SpecKind.RUNNING:
        uname = os.uname()
        distro_image = find_distro_image(uname.release, root)
        arch = image_arch(distro_image) if distro_image else None
        return distro_image, None, uname.release, arch or arch_from_uname(uname.machine)
    assert spec.release is not None
    distro_image = find_distro_image(spec.release, root)
    return distro_image, None, spec.release, image_arch(distro_image) if distro_image else None


def _explicit_vmlinux(
    raw: str | os.PathLike[str], *, arch: str | None, base: str | os.PathLike[str] | None
) -> Probe:
    origin = f"--vmlinux {os.fspath(raw)!r}"
    path, ident = check_vmlinux_path(os.fspath(raw), origin=origin, base=base)
    if arch is not None and ident.arch != arch:
        raise KernelSpecError(
            f"--vmlinux {path} is an ELF for {ident.machine_name}, but the kernel image is {arch};"
            " pass the vmlinux built with this image"
        )
    given = Candidate(path, "given by --vmlinux", None, path)
    return Probe(path, ProbeReport((given,), path, None, arch or ident.arch, None))

"""Turn a kernel spec into a Kernel: its image, its vmlinux, release, arch and the probe report."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelArtifactError, KernelSpecError, VmlinuxNotFoundError
from ..formats.elf import NotElfError, arch_matches, read_elf_ident
from ..formats.image import ImageInfo
from ..formats.kconfig import KernelConfig, config_from_ikconfig, config_from_ikconfig_file
from ..regularfile import FileChanged
from ..store.api import Store, StoreLockTimeout
from ..store.memory import MemoryStore
from .config import PROC_CONFIG, config_file_candidates, find_config, read_proc_config
from .fetch.fetch import FetchedKernel, FetchOptions, fetch_kernel
from .identity import (
    PAIRED_BUILD_ID,
    UNVERIFIED,
    Expectation,
    extracted_vmlinux,
    image_identity,
    image_payload,
    pair,
    running_expectation,
    vmlinux_identity,
)
from .images import (
    BUILD_TREE_IMAGES,
    DISTRO_IMAGE_LAYOUTS,
    Candidate,
    FoundImage,
    config_beside_image,
    find_image,
)
from .locate import Probe, ProbeReport, probe_vmlinux
from .spec import (
    KernelSpec,
    SpecKind,
    SpecSource,
    check_vmlinux_path,
    parse_kernel_spec,
)
from .sysroot import Sysroot


@dataclass(frozen=True)
class Kernel:
    """A resolved kernel. ``vmlinux`` is None when no candidate passed; ``report`` says why."""

    #: What the user named.
    spec: KernelSpec
    #: The bootable image (``bzImage``, ``vmlinuz-R``); None when there is none (a vmlinux spec).
    image: Path | None
    #: The vmlinux paired with the image; None when no candidate passed (see ``report``).
    vmlinux: Path | None
    #: The kernel release (``6.1.0-56-cloud-amd64``), when anything says it.
    release: str | None
    #: The architecture, as the kernel names it (``x86_64``, ``arm64``), when known.
    arch: str | None
    #: Every vmlinux candidate probed and why each was chosen or refused.
    report: ProbeReport
    #: The directory standing in for ``/`` when distro paths were probed (a fetched kernel's root).
    sysroot: Path | None = None
    #: The GNU build-id of the image (or of the running kernel, or of the vmlinux when that is
    #: all there is).
    build_id: str | None = None
    #: How the vmlinux was matched to the image: ``"build-id"``, ``"banner"`` or
    #: ``"unverified"``.
    paired: str = UNVERIFIED
    #: ``"debug"`` (a vmlinux with its symbols) or ``"extracted"`` (the ELF extracted from the
    #: image, no ``.symtab``); None without a vmlinux.
    vmlinux_kind: str | None = None
    #: What the image's header says about it.
    image_info: ImageInfo | None = None
    #: The build tree the kernel was built in, where its ``.config`` is.
    tree: Path | None = None
    #: What the run calls this kernel in test ids and reports; ``""`` until labelled.
    label: str = ""
    #: For a fetch spec: where the kernel came from and what this run did to get it.
    fetched: FetchedKernel | None = None
    #: Where what was read from the kernel's files is kept.
    store: Store = dataclasses.field(default_factory=MemoryStore, repr=False, compare=False)

    @property
    def source(self) -> SpecSource:
        """Where the spec was given (the spec's ``source``)."""
        return self.spec.source

    @functools.cached_property
    def config(self) -> KernelConfig | None:
        """The kernel's configuration, from the first of ``config_files`` that exists, else
        IKCONFIG embedded in the image's payload or in the vmlinux. None if none of them has
        it."""
        found = find_config(
            tree=self.tree,
            beside=self._config_beside_image(),
            release=self.release,
            sysroot=Sysroot(self.sysroot),
        )
        if found is None and self._reads_proc_config():
            found = read_proc_config()
        if found is None and self.image is not None:
            try:
                payload = image_payload(self.image, self.store).map()
            except StoreLockTimeout:
                raise  # not knowing is not having none
            except KernelArtifactError:
                payload = None
            if payload is not None:
                found = config_from_ikconfig(payload, what=f"{self.image} payload")
        if found is None and self.vmlinux is not None:
            # Read, not mapped: a rebuild truncating the vmlinux would SIGBUS a mapping.
            found = config_from_ikconfig_file(self.vmlinux)
        return found

    @property
    def config_files(self) -> list[str]:
        """Where ``config`` looks for a config file, in order: ``<tree>/.config``; beside the
        image, ``config-X`` for ``vmlinuz-X``, ``config-R`` and, for ``.../modules/R/vmlinuz``,
        ``config``; ``/boot/config-R``, ``/lib/modules/R/config``, ``/usr/lib/modules/R/config``
        (under the sysroot); ``/proc/config.gz`` for the running kernel without a sysroot."""
        files = config_file_candidates(
            tree=self.tree,
            beside=self._config_beside_image(),
            release=self.release,
            sysroot=Sysroot(self.sysroot),
        )
        proc = [str(PROC_CONFIG)] if self._reads_proc_config() else []
        return [str(path) for path in files] + proc

    def _config_beside_image(self) -> list[Path]:
        return config_beside_image(self.image, self.release) if self.image is not None else []

    def _reads_proc_config(self) -> bool:
        return self.spec.kind is SpecKind.RUNNING and self.sysroot is None

    def require_vmlinux(self) -> Path:
        """The vmlinux path, or VmlinuxNotFoundError carrying the whole probe report."""
        if self.vmlinux is None:
            raise VmlinuxNotFoundError(self.missing_vmlinux_message())
        return self.vmlinux

    def missing_vmlinux_message(self) -> str:
        """Why there is no vmlinux: the kernel, where it was named, and the probe report."""
        return (
            f"no vmlinux for kernel {self.spec.raw!r} (from {self.source.value})\n"
            f"{self.report.format()}"
        )

    def missing_image_message(self) -> str:
        """Why the kernel has no bootable image (``image`` is None), where it was looked for,
        and what to name instead: one line, for a guest that cannot boot it."""
        named = f"kernel {self.spec.raw!r} (from {self.source.value})"
        if self.spec.kind is SpecKind.VMLINUX:
            return (
                f"{named} was named by its vmlinux, which is no bootable image: name the image"
                " (bzImage, vmlinuz-R), its build tree or its release instead"
            )
        if self.spec.kind is SpecKind.TREE:
            images = ", ".join(f"arch/{arch}/boot/{name}" for arch, name in BUILD_TREE_IMAGES)
            return (
                f"{named}: the build tree {self.spec.path} has no image ({images}): build one"
                " (make bzImage), or name another kernel"
            )
        root = Sysroot(self.sysroot)
        looked = [str(root.prefix(t.format(R=self.release))) for t in DISTRO_IMAGE_LAYOUTS]
        refused = "".join(f"; {c.path}: {c.refused}" for c in self.report.images if c.refused)
        whose = "the running kernel" if self.spec.kind is SpecKind.RUNNING else named
        return (
            f"no bootable image for {whose} {self.release or ''}".rstrip()
            + f" (looked for {', '.join(looked)}{refused}): name an image, a build tree, a"
            " release whose image is installed, or a kernel to fetch (debian:sid) instead"
        )


def resolve_kernel(
    spec: str | KernelSpec,
    *,
    vmlinux: str | os.PathLike[str] | None = None,
    sysroot: str | os.PathLike[str] | None = None,
    source: SpecSource = SpecSource.OPTION,
    base: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    verify: bool = True,
    allow_extracted: bool = False,
    fetch: FetchOptions | None = None,
) -> Kernel:
    """Resolve ``spec`` (a spec as ``parse_kernel_spec`` reads it) to a Kernel::

        kernel = resolve_kernel("/boot/vmlinuz-6.1.0-56-cloud-amd64")
        print(kernel.vmlinux, kernel.paired)  # None when no vmlinux pairs: see kernel.report

    ``vmlinux`` skips the search; ``sysroot`` prefixes every absolute distro path probed;
    ``store`` caches identities; ``verify`` (default) requires the vmlinux to pair with the image
    (build-id, else banner). A fetch spec (``debian:sid``) is fetched into ``store`` (which must
    be on disk) as ``fetch`` says, and resolved in its own root there: ``sysroot`` is not used.
    Raises KernelSpecError when the spec or ``vmlinux`` names something that cannot be used (a
    file of it that is a FIFO, or changed while it was read, included), or an explicit
    ``vmlinux`` does not pair; a vmlinux that is merely not found, or a candidate that is a
    symlink loop, is reported in ``Kernel.report``, not raised.
    """
    if isinstance(spec, str):
        spec = parse_kernel_spec(spec, source=source, base=base)
    fetched = None
    if spec.kind is SpecKind.FETCH:
        assert spec.fetch is not None
        store = store or MemoryStore()
        fetched = fetch_kernel(spec.fetch, spec.raw, store, fetch)
        sysroot = fetched.sysroot
    try:
        kernel = _resolve(spec, vmlinux, sysroot, base, store, verify, allow_extracted, fetched)
        return dataclasses.replace(kernel, fetched=fetched) if fetched else kernel
    except KernelSpecError:
        raise
    except KernelArtifactError as e:
        # A file of the kernel that is no file to read (a FIFO, a symlink loop) or that changed
        # while it was read: the kernel named cannot be used as it stands.
        raise KernelSpecError(f"kernel {spec.raw!r} (from {spec.source.value}): {e}") from None


def _resolve(
    spec: KernelSpec,
    vmlinux: str | os.PathLike[str] | None,
    sysroot: str | os.PathLike[str] | None,
    base: str | os.PathLike[str] | None,
    store: Store | None,
    verify: bool,
    allow_extracted: bool,
    fetched: FetchedKernel | None = None,
) -> Kernel:
    """spec -> what it names (FoundImage) -> what the vmlinux must match -> the vmlinux paired
    with it (probed, given, or extracted from the image) -> Kernel."""
    store = store or MemoryStore()
    root = Sysroot(sysroot)
    # A fetched kernel is found by its release in its own root, as an installed one would be.
    found = find_image(
        dataclasses.replace(spec, release=fetched.release) if fetched else spec, root
    )
    info, expect, unverifiable = (
        _expectation(spec, found.image, root, store) if verify else (None, None, None)
    )
    probe = _pair(spec, found, vmlinux, base, root, expect, store, verify)
    report = dataclasses.replace(probe.report, images=found.refused)
    if unverifiable and not report.unverifiable and report.paired == UNVERIFIED:
        report = dataclasses.replace(report, unverifiable=unverifiable)
    build_id = expect.build_id if expect else None
    kind = "debug" if probe.path else None
    if probe.path is None and allow_extracted and found.image is not None:
        extracted = extracted_vmlinux(found.image, store)
        candidate = Candidate(extracted, "extracted from the image", None, extracted)
        paired = PAIRED_BUILD_ID if build_id else UNVERIFIED
        report = dataclasses.replace(
            report, candidates=(*report.candidates, candidate), chosen=extracted, paired=paired
        )
        probe, kind = Probe(extracted, report), "extracted"
    arch = found.arch
    if probe.path is not None:
        arch = _chosen_arch(probe.path) or arch
        if build_id is None:
            build_id = _vmlinux_build_id(probe.path, store)
    return Kernel(
        spec=spec,
        image=found.image,
        vmlinux=probe.path,
        release=found.release or report.release or (info.release if info else None),
        arch=arch or report.arch,
        report=report,
        sysroot=root.root,
        build_id=build_id,
        paired=report.paired if probe.path else UNVERIFIED,
        vmlinux_kind=kind,
        image_info=info,
        tree=found.tree,
        store=store,
    )


def _pair(
    spec: KernelSpec,
    found: FoundImage,
    vmlinux: str | os.PathLike[str] | None,
    base: str | os.PathLike[str] | None,
    root: Sysroot,
    expect: Expectation | None,
    store: Store,
    verify: bool,
) -> Probe:
    """The vmlinux for the kernel: the one given by ``vmlinux``, the one the spec named, or the
    first probed candidate that pairs with ``expect``."""
    if vmlinux is not None:
        return _explicit_vmlinux(vmlinux, arch=found.arch, base=base, expect=expect, store=store)
    if spec.kind is SpecKind.VMLINUX:
        assert spec.path is not None
        origin = f"kernel {spec.raw!r} (from {spec.source.value})"
        _, ident = check_vmlinux_path(str(spec.path), origin=origin, base=None)
        given = Candidate(spec.path, "given as the kernel", None, spec.path)
        report = ProbeReport((given,), spec.path, found.release, ident.arch, None)
        return Probe(spec.path, report)
    return probe_vmlinux(
        found.image,
        release=found.release,
        arch=found.arch,
        tree=found.named_tree,
        sysroot=root,
        expect=expect,
        store=store,
        verify=verify,
    )


def _expectation(
    spec: KernelSpec, image: Path | None, root: Sysroot, store: Store
) -> tuple[ImageInfo | None, Expectation | None, str | None]:
    """(image identity, what the vmlinux must match, why the match may be by banner alone).

    KernelSpecError when the kernel's image exists but cannot be read: without its identity any
    vmlinux would pass, another build's among them. The running kernel is matched against
    /sys/kernel/notes, and needs its image only without them."""
    running = running_expectation(root) if spec.kind is SpecKind.RUNNING else None
    if image is None:
        return None, running, None
    try:
        info = image_identity(image, store)
    except StoreLockTimeout:
        raise  # the store was busy: nothing is known about the image
    except KernelArtifactError as e:
        if running is not None:
            return None, running, None
        raise KernelSpecError(
            f"kernel {spec.raw!r} (from {spec.source.value}): {e}. No vmlinux can be verified"
            " against an image that cannot be read: fix or reinstall the image, or pass"
            " --no-kernel-verify to use the vmlinux found for it unverified"
        ) from None
    if running is not None:
        return info, running, None
    # A flat image whose build-id cannot be told apart says why; the banner may still pair.
    why = f"image build-id unknown: {info.build_id_problem}" if info.build_id_problem else None
    return info, Expectation(info.build_id, info.banner, "image"), why


def _chosen_arch(vmlinux: Path) -> str | None:
    """The arch of the vmlinux the probe chose; it was an ELF a moment ago, so anything else
    now is a rewrite under way (a build), not a bad file."""
    try:
        return read_elf_ident(vmlinux).arch
    except NotElfError as e:
        raise FileChanged(vmlinux, f"no longer an ELF: {e}") from None
    except OSError as e:
        raise FileChanged(vmlinux, e.strerror or str(e)) from None


def _vmlinux_build_id(vmlinux: Path, store: Store) -> str | None:
    try:
        return vmlinux_identity(vmlinux, store).build_id
    except StoreLockTimeout:
        raise
    except KernelArtifactError:
        return None


def _explicit_vmlinux(
    raw: str | os.PathLike[str],
    *,
    arch: str | None,
    base: str | os.PathLike[str] | None,
    expect: Expectation | None,
    store: Store,
) -> Probe:
    origin = f"--vmlinux {os.fspath(raw)!r}"
    path, ident = check_vmlinux_path(os.fspath(raw), origin=origin, base=base)
    if arch is not None and (ident.arch is None or not arch_matches(ident.arch, arch)):
        raise KernelSpecError(
            f"--vmlinux {path} is an ELF for {ident.machine_name}, but the kernel image is {arch};"
            " pass the vmlinux built with this image"
        )
    paired = UNVERIFIED
    if expect is not None:
        try:
            identity = vmlinux_identity(path, store)
        except KernelArtifactError as e:
            raise KernelSpecError(f"{origin}: {e}") from None
        how, refused = pair(expect, identity)
        if refused is not None:
            raise KernelSpecError(
                f"--vmlinux {path} does not belong to this kernel: {refused}. Pass the vmlinux"
                " of this build, or --no-kernel-verify to use it anyway"
            )
        paired = how or UNVERIFIED
    given = Candidate(path, "given by --vmlinux", None, path)
    report = ProbeReport((given,), path, None, arch or ident.arch, None, paired=paired)
    return Probe(path, report)

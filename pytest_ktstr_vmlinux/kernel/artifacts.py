"""Symbols and BTF for a resolved Kernel, each from the best source it has.

Symbols: the debug vmlinux's ``.symtab``; for the running kernel without one, /proc/kallsyms
(runtime addresses, readable with non-zero values only as root or with kptr_restrict off). An
ELF extracted from an image has no ``.symtab``: that is said, with the packages that have one.

BTF: for the running kernel, /sys/kernel/btf/vmlinux (the sysroot's when it has one); else the
vmlinux's ``.BTF``; else the ``.BTF`` of the ELF inside the image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from ..errors import KernelArtifactError, VmlinuxNotFoundError
from ..formats.btf.queries import BTF
from ..formats.kconfig import KernelConfig
from ..formats.symbols import KernelSymbols
from ..regularfile import file_type
from ..store.api import StoreLockTimeout
from ..store.signature import read_error
from .identity import extracted_vmlinux
from .resolve import Kernel
from .spec import SpecKind
from .sysroot import Sysroot

T = TypeVar("T")

RUNNING_BTF = "/sys/kernel/btf/vmlinux"
KALLSYMS = "/proc/kallsyms"
DEBUG_PACKAGES = (
    "install the kernel's debug vmlinux (Debian/Ubuntu: linux-image-R-dbg or -dbgsym; Fedora:"
    " kernel-debuginfo) or build with CONFIG_DEBUG_INFO"
)


def load_symbols(kernel: Kernel) -> KernelSymbols:
    """The kernel's symbol table; KernelArtifactError saying why there is none."""
    if kernel.vmlinux is not None and kernel.vmlinux_kind == "debug":
        return KernelSymbols.from_vmlinux(kernel.vmlinux, kernel.store)
    if kernel.spec.kind is SpecKind.RUNNING and kernel.sysroot is None:
        try:
            return KernelSymbols.from_kallsyms(KALLSYMS)
        except KernelArtifactError as e:
            raise KernelArtifactError(
                f"no symbols for the running kernel {kernel.release}: no debug vmlinux, and {e};"
                f" {DEBUG_PACKAGES}"
            ) from None
    if kernel.vmlinux is not None:
        raise KernelArtifactError(
            f"{kernel.vmlinux} is the ELF extracted from {kernel.image}: it has .BTF and .notes"
            f" but no .symtab; {DEBUG_PACKAGES}"
        )
    raise VmlinuxNotFoundError(kernel.missing_vmlinux_message())


def load_btf(kernel: Kernel) -> BTF:
    """The kernel's BTF; KernelArtifactError saying where it looked."""
    looked: list[str] = []
    if kernel.spec.kind is SpecKind.RUNNING:
        root = Sysroot(kernel.sysroot)
        for shown in dict.fromkeys((root.prefix(RUNNING_BTF), Path(RUNNING_BTF))):
            # One that is there but no file (a FIFO, a symlink loop) is passed over, and said.
            try:
                path = root.resolve(shown)
                mode = os.stat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                looked.append(f"{shown}: missing")
                continue
            except OSError as e:
                looked.append(str(read_error(shown, e)))
                continue
            if not stat.S_ISREG(mode):
                looked.append(f"{shown}: is {file_type(mode)}, not a regular file")
                continue
            return BTF.from_path(path, kernel.store)
    if kernel.vmlinux is not None:
        try:
            return BTF.from_path(kernel.vmlinux, kernel.store)
        except StoreLockTimeout:
            raise  # the store was busy: the next place would wait for it too
        except KernelArtifactError as e:
            looked.append(str(e))
    if kernel.image is not None:
        try:
            return BTF.from_path(extracted_vmlinux(kernel.image, kernel.store), kernel.store)
        except StoreLockTimeout:
            raise
        except KernelArtifactError as e:
            looked.append(str(e))
    where = "; ".join(looked) or "no vmlinux, image or /sys/kernel/btf/vmlinux"
    raise KernelArtifactError(
        f"no BTF for kernel {kernel.spec.raw!r} ({where}); build with CONFIG_DEBUG_INFO_BTF"
    )


class KernelArtifacts:
    """A Kernel's config, symbols and BTF, each loaded at most once: what the fixtures and the
    ``ktstr`` requirements of every test share. A failure is kept too, as pytest keeps a session
    fixture's error: the next test gets the same message without a second attempt."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._loaded: dict[str, object] = {}
        self._failed: dict[str, KernelArtifactError] = {}

    @property
    def release(self) -> str | None:
        return self.kernel.release

    @property
    def arch(self) -> str | None:
        return self.kernel.arch

    def config(self) -> KernelConfig:
        return self._once("config", _load_config)

    def symbols(self) -> KernelSymbols:
        return self._once("symbols", load_symbols)

    def btf(self) -> BTF:
        return self._once("btf", load_btf)

    def _once(self, what: str, load: Callable[[Kernel], T]) -> T:
        if what in self._failed:
            # Of the same type: a store lock held too long must stay one (never a skip).
            raise self._failed[what].with_traceback(None)
        if what not in self._loaded:
            try:
                self._loaded[what] = load(self.kernel)
            except KernelArtifactError as e:
                self._failed[what] = e
                raise
        return cast(T, self._loaded[what])


def _load_config(kernel: Kernel) -> KernelConfig:
    config = kernel.config
    if config is None:
        files = kernel.config_files
        looked = (
            f"none of {', '.join(files)} exists"
            if files
            else "no build tree, image or release to look for a config file by"
        )
        raise KernelArtifactError(
            f"no kernel config for {kernel.spec.raw!r}: {looked}; no IKCONFIG in the image or"
            " vmlinux"
        )
    return config

"""The plugin's command-line options and ini keys, each help string written once and shared by
the option and the ini key that set the same thing (``settings.py`` reads them, in precedence)."""

from __future__ import annotations

import pytest

from .settings import (
    INI_CACHE_DIR,
    INI_CACHE_MAX_SIZE,
    INI_KERNEL,
    INI_LOCK_TIMEOUT,
    INI_OFFLINE,
    INI_SYSROOT,
)

HELP_KERNEL = (
    "kernel to test: an image (bzImage, Image, vmlinuz-R), a vmlinux ELF, a build-tree directory,"
    " a release (6.1.0-56-cloud-amd64), a Debian kernel to fetch (debian:sid,"
    " debian:bookworm/rt-amd64, debian:6.1.0-57-cloud-amd64) or 'running', optionally labelled"
    " (deb=SPEC) and with its own sysroot (SPEC@/path/to/root). Repeat it to run every kernel"
    " test once per kernel. Precedence: --kernel > $KTSTR_KERNEL_LIST > $KTSTR_KERNEL > ini"
    " ktstr_kernel > running; the list and the ini separate kernels by ';'."
)
HELP_OFFLINE = (
    "use fetched kernels (debian:...) from the kernel cache without asking the archive whether"
    " their suite moved; a kernel the cache lacks is then an error. Precedence:"
    " --kernel-offline > $KTSTR_KERNEL_OFFLINE (1/0) > ini ktstr_kernel_offline > online."
)
HELP_SYSROOT = (
    "directory standing in for / when probing distro paths (/boot, /usr/lib/debug, /lib/modules):"
    " a guest root filesystem, for every kernel that names none of its own (SPEC@DIR). Paths you"
    " give are not rewritten. Precedence: --kernel-sysroot > $KTSTR_KERNEL_SYSROOT > ini"
    " ktstr_kernel_sysroot > none."
)
HELP_VMLINUX = "the vmlinux ELF to use for the kernel; skips the search (still verified)."
HELP_NO_VERIFY = (
    "do not require the vmlinux to pair with the image (equal GNU build-ids, else equal"
    " linux_banner); use a stale or foreign vmlinux knowingly."
)
HELP_ALLOW_EXTRACTED = (
    "when no debug vmlinux pairs with the image, serve the ELF extracted from the image: it has"
    " .BTF and .notes but no .symtab (kernel.vmlinux_kind == 'extracted')."
)
HELP_CACHE_DIR = (
    "directory of the on-disk artifact store that xdist workers and later runs share."
    " Precedence: --kernel-cache-dir > $KTSTR_CACHE_DIR > ini ktstr_cache_dir >"
    " $XDG_CACHE_HOME/pytest-ktstr-vmlinux."
)
HELP_CACHE_MAX_SIZE = (
    "size cap of the on-disk store; least recently used artifacts are evicted past it (8GiB,"
    " 512M, bytes). Precedence: $KTSTR_CACHE_MAX_SIZE > ini ktstr_cache_max_size > 8GiB."
)
HELP_LOCK_TIMEOUT = (
    "seconds to wait for the kernel artifact store's lock, held by another process building an"
    " artifact, before failing (a wait past a few seconds says which pid holds it)."
    " Precedence: --kernel-lock-timeout > $KTSTR_LOCK_TIMEOUT > ini ktstr_lock_timeout > 1800."
)
HELP_NO_CACHE = "no on-disk store: build every kernel artifact in this process, keep it in memory."
HELP_CACHE_CLEAR = "empty the on-disk kernel artifact store before the run."

HELP_STRICT = (
    "fail, instead of skipping, tests whose kernel lacks what their ktstr marker requires or"
    " whose kernel artifacts are missing: for CI that must prove coverage."
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux", "kernel vmlinux fixtures (pytest-ktstr-vmlinux)")
    group.addoption(
        "--kernel", dest="ktstr_kernel", action="append", metavar="[LABEL=]SPEC", help=HELP_KERNEL
    )
    group.addoption("--vmlinux", dest="ktstr_vmlinux", metavar="PATH", help=HELP_VMLINUX)
    group.addoption(
        "--kernel-sysroot", dest="ktstr_kernel_sysroot", metavar="DIR", help=HELP_SYSROOT
    )
    group.addoption(
        "--kernel-offline", dest="ktstr_kernel_offline", action="store_true", help=HELP_OFFLINE
    )
    group.addoption(
        "--no-kernel-verify", dest="ktstr_no_verify", action="store_true", help=HELP_NO_VERIFY
    )
    group.addoption(
        "--kernel-allow-extracted",
        dest="ktstr_allow_extracted",
        action="store_true",
        help=HELP_ALLOW_EXTRACTED,
    )
    group.addoption("--kernel-strict", dest="ktstr_strict", action="store_true", help=HELP_STRICT)
    group.addoption(
        "--kernel-cache-dir", dest="ktstr_cache_dir", metavar="DIR", help=HELP_CACHE_DIR
    )
    group.addoption(
        "--kernel-lock-timeout",
        dest="ktstr_lock_timeout",
        metavar="SECONDS",
        help=HELP_LOCK_TIMEOUT,
    )
    group.addoption(
        "--no-kernel-cache", dest="ktstr_no_cache", action="store_true", help=HELP_NO_CACHE
    )
    group.addoption(
        "--kernel-cache-clear", dest="ktstr_cache_clear", action="store_true", help=HELP_CACHE_CLEAR
    )
    parser.addini(INI_KERNEL, help=HELP_KERNEL, default="")
    parser.addini(INI_SYSROOT, help=HELP_SYSROOT, default="")
    parser.addini(INI_OFFLINE, help=HELP_OFFLINE, default="")
    parser.addini(INI_CACHE_DIR, help=HELP_CACHE_DIR, default="")
    parser.addini(INI_CACHE_MAX_SIZE, help=HELP_CACHE_MAX_SIZE, default="")
    parser.addini(INI_LOCK_TIMEOUT, help=HELP_LOCK_TIMEOUT, default="")

"""Where a kernel keeps its configuration, and reading it from the first place that has it.

Tests ask "was this kernel built with BTF?" of whatever they were given: a build tree has its
``.config``, a distro install has ``/boot/config-R`` or, on Fedora and Debian's packages from
2026 on (nothing in /boot), ``/usr/lib/modules/R/config``, the running kernel may offer
``/proc/config.gz``, and a kernel built with ``CONFIG_IKCONFIG`` carries a copy inside itself
(``formats/kconfig.py`` reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import KernelArtifactError
from ..formats.kconfig import (
    MAX_CONFIG_BYTES,
    KernelConfig,
    config_from_gzip,
    config_from_ikconfig,
    parse_config,
)
from ..regularfile import NotRegularFile, read_regular
from .sysroot import Sysroot

PROC_CONFIG = Path("/proc/config.gz")
# Where distros install the config of release R, probed in this order (under the sysroot when one
# is given). On a merged-/usr root /lib is a link to usr/lib and the last two are one file.
DISTRO_CONFIG_LAYOUTS: tuple[str, ...] = (
    "/boot/config-{R}",
    "/lib/modules/{R}/config",
    "/usr/lib/modules/{R}/config",
)


def config_file_candidates(
    *,
    tree: Path | None = None,
    beside: Sequence[Path] = (),
    release: str | None = None,
    sysroot: Sysroot | None = None,
) -> list[Path]:
    """The config files ``find_config`` tries, in its order, as they are named in messages.

    ``<tree>/.config``; then ``beside``, the files next to the image that may hold its config
    (see ``images.config_beside_image``); then ``DISTRO_CONFIG_LAYOUTS`` for ``release``, each
    under ``sysroot`` when one is given. A release that is not a single path component names
    no file. Duplicates are dropped.
    """
    found: list[Path] = []
    if tree is not None:
        found.append(tree / ".config")
    found += beside
    if release and "/" not in release and "\x00" not in release and release not in (".", ".."):
        root = sysroot or Sysroot(None)
        found += [root.prefix(template.format(R=release)) for template in DISTRO_CONFIG_LAYOUTS]
    return list(dict.fromkeys(found))


def find_config(
    *,
    tree: Path | None = None,
    beside: Sequence[Path] = (),
    release: str | None = None,
    sysroot: Sysroot | None = None,
    blobs: Sequence[tuple[str, bytes | memoryview]] = (),
) -> KernelConfig | None:
    """The kernel's config from the first place that has one, or None when none does.

    Order: the files of ``config_file_candidates`` (``<tree>/.config``, ``beside``,
    ``/boot/config-R``, ``/lib/modules/R/config``, ``/usr/lib/modules/R/config``); then the
    IKCONFIG copy in each ``(what, data)`` of ``blobs``. Symlinks of a file under ``sysroot``
    are resolved inside it, as in a chroot: a guest's absolute link never reaches the host's
    files. A source that exists but is unreadable or malformed raises KernelArtifactError rather
    than quietly yielding to the next one.
    """
    root = sysroot or Sysroot(None)
    for shown in config_file_candidates(tree=tree, beside=beside, release=release, sysroot=root):
        try:
            path = root.resolve(shown)
        except OSError as error:
            raise KernelArtifactError(
                f"{shown}: cannot resolve: {error.strerror or error}"
            ) from None
        found = _read_config_file(path)
        if found is not None:
            return found
    for what, data in blobs:
        found = config_from_ikconfig(data, what=what)
        if found is not None:
            return found
    return None


def read_proc_config(path: Path = PROC_CONFIG) -> KernelConfig | None:
    """The running kernel's config from /proc/config.gz (CONFIG_IKCONFIG_PROC); None without."""
    data = _read_bounded(path)  # gzip never grows text: the text's bound holds for its input
    if data is None:
        return None
    return config_from_gzip(data, str(path))


def _read_config_file(path: Path) -> KernelConfig | None:
    data = _read_bounded(path)
    return None if data is None else parse_config(data.decode("utf-8", errors="replace"), str(path))


def _read_bounded(path: Path) -> bytes | None:
    """A config file's bytes; None when it does not exist, KernelArtifactError when it cannot
    be read, is not a regular file (a FIFO there must not hang the session) or is past
    MAX_CONFIG_BYTES."""
    try:
        data = read_regular(path, MAX_CONFIG_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise KernelArtifactError(f"{path}: cannot read: {error.strerror or error}") from None
    except NotRegularFile as error:
        raise KernelArtifactError(
            f"{path}: is {error.kind}, not a regular file; a kernel config must be one"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise KernelArtifactError(
            f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not a kernel config"
        )
    return data

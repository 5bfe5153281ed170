"""What the user named as a kernel, classified before anything is searched for.

A spec is, in this order of recognition:

- ``running``: the host's kernel;
- an existing path: a directory is a build tree, an ELF file is a vmlinux, any other file an image;
- a fetch spec, ``DISTRO:WHAT`` (``debian:sid``, ``debian:6.1.0-57-cloud-amd64``): a distro
  kernel the store fetches (fetch/);
- a release string such as ``6.1.0-56-cloud-amd64``, found through the distro layouts.

A spec that looks like a path (it has a ``/``, or starts with ``.`` or ``~``) but does not exist
is an error, never a release: a typo in ``--kernel`` must stop the run, not test another kernel.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import KernelSpecError
from ..formats.elf import ElfIdent, NotElfError, read_elf_ident
from ..formats.image import is_release
from ..regularfile import NotRegularFile, file_type, is_symlink_loop
from .fetch.specs import FetchSpec, looks_like_fetch_spec, parse_fetch_spec

RUNNING = "running"


class SpecKind(str, enum.Enum):
    """What a kernel spec names, as ``parse_kernel_spec`` recognizes it."""

    #: A kernel image file (``bzImage``, ``vmlinuz-R``).
    IMAGE = "image"
    #: A vmlinux ELF file: readable, but no image to boot.
    VMLINUX = "vmlinux"
    #: A build tree (a directory), its image and vmlinux inside.
    TREE = "tree"
    #: A release string (``6.1.0-56-cloud-amd64``), found through the distro layouts.
    RELEASE = "release"
    #: ``running``: the host's own kernel.
    RUNNING = "running"
    #: A kernel to fetch (``debian:sid``).
    FETCH = "fetch"


class SpecSource(str, enum.Enum):
    """Where a setting came from, highest precedence first."""

    #: A positional argument of the command line tool (``ktstr-vmlinux info SPEC``), which takes
    #: no kernel option: "(from option)" would send the reader looking for one.
    ARGUMENT = "argument"
    #: A command line option (``--kernel``).
    OPTION = "option"
    #: An environment variable (``KTSTR_KERNEL``).
    ENV = "env"
    #: The ini file (``ktstr_kernel`` in pytest.ini, pyproject.toml, ...).
    INI = "ini"
    #: Nobody named it: the default (``running``).
    DEFAULT = "default"


@dataclass(frozen=True)
class KernelSpec:
    """A classified kernel spec: ``path`` for path kinds, ``release`` for the release kind,
    ``fetch`` for the fetch kind (and, once fetched, ``release`` too)."""

    #: The spec as the user wrote it.
    raw: str
    #: What it names.
    kind: SpecKind
    #: Where it was given.
    source: SpecSource = SpecSource.OPTION
    #: The absolute path of an image, vmlinux or tree.
    path: Path | None = None
    #: The release, of a release spec (or a fetched kernel).
    release: str | None = None
    #: The parsed ``DISTRO:WHAT`` of a fetch spec.
    fetch: FetchSpec | None = None

    @property
    def named_by_user(self) -> bool:
        """True unless the spec is the ``running`` default nobody asked for."""
        return self.source is not SpecSource.DEFAULT


def select_setting(
    candidates: Sequence[tuple[SpecSource, str | None]],
) -> tuple[str, SpecSource] | None:
    """The first non-empty value of ``candidates`` (given in precedence order) and its source."""
    for source, value in candidates:
        if value is not None and value.strip():
            return value.strip(), source
    return None


def parse_kernel_spec(
    raw: str,
    *,
    source: SpecSource = SpecSource.OPTION,
    base: str | os.PathLike[str] | None = None,
) -> KernelSpec:
    """Classify ``raw``; relative paths are taken from ``base`` (default: the current directory).

    Raises KernelSpecError naming the spec and its source when it cannot be a kernel.
    """
    text = raw.strip()
    origin = f"kernel {raw!r} (from {source.value})"
    if not text:
        raise KernelSpecError(f"{origin}: empty; name an image, a vmlinux, a tree, a release")
    if text == RUNNING:
        return KernelSpec(raw, SpecKind.RUNNING, source)
    path = Path(base or os.getcwd(), os.path.expanduser(text))
    if not os.path.lexists(path) and looks_like_fetch_spec(text):
        return KernelSpec(raw, SpecKind.FETCH, source, fetch=parse_fetch_spec(text, origin))
    if os.path.lexists(path) or _looks_like_path(text):
        return _classify_path(raw, path, source, origin)
    if is_release(text):
        return KernelSpec(raw, SpecKind.RELEASE, source, release=text)
    raise KernelSpecError(
        f"{origin} is not an existing path, a release like 6.1.0-56-cloud-amd64, a distro kernel"
        " like debian:sid, or 'running'"
        f" (looked for {path})"
    )


def check_vmlinux_path(
    raw: str, *, origin: str, base: str | os.PathLike[str] | None
) -> tuple[Path, ElfIdent]:
    """The absolute path and ELF identification of an explicitly given vmlinux."""
    if not raw.strip():
        # Joined to ``base``, an empty name would be the directory itself: say what is wrong.
        raise KernelSpecError(f"{origin}: empty; name a vmlinux ELF file")
    path = Path(base or os.getcwd(), os.path.expanduser(raw.strip()))
    _require_regular_file(path, origin)
    try:
        ident = read_elf_ident(path)
    except NotElfError as e:
        raise KernelSpecError(f"{origin}: {path} is not an ELF file ({e})") from None
    except OSError as e:
        raise KernelSpecError(f"{origin}: cannot read {path}: {e.strerror}") from None
    except NotRegularFile as e:  # replaced since it was checked
        raise KernelSpecError(f"{origin}: {e}") from None
    return Path(os.path.abspath(path)), ident


def check_sysroot(raw: str, source: SpecSource, base: str | os.PathLike[str]) -> Path:
    """The directory ``raw`` (relative to ``base``) names as a sysroot; KernelSpecError if none."""
    origin = f"kernel sysroot {raw!r} (from {source.value})"
    if not raw.strip():
        raise KernelSpecError(f"{origin}: empty; name the directory standing in for /")
    path = Path(base, os.path.expanduser(raw))
    if not path.is_dir():
        why = "does not exist" if not path.exists() else "is not a directory"
        raise KernelSpecError(f"{origin}: {path} {why}")
    return path


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.startswith((".", "~"))


def _classify_path(raw: str, path: Path, source: SpecSource, origin: str) -> KernelSpec:
    absolute = Path(os.path.abspath(path))
    if os.path.isdir(path):
        return KernelSpec(raw, SpecKind.TREE, source, path=absolute)
    _require_regular_file(path, origin)
    try:
        read_elf_ident(path)
    except NotElfError:
        return KernelSpec(raw, SpecKind.IMAGE, source, path=absolute)
    except OSError as e:
        raise KernelSpecError(f"{origin}: cannot read {path}: {e.strerror}") from None
    except NotRegularFile as e:  # replaced since it was checked
        raise KernelSpecError(f"{origin}: {e}") from None
    return KernelSpec(raw, SpecKind.VMLINUX, source, path=absolute)


def _require_regular_file(path: Path, origin: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        why = "is a dangling symlink" if os.path.islink(path) else "does not exist"
        raise KernelSpecError(f"{origin}: {path} {why}") from None
    except OSError as e:
        if is_symlink_loop(e):
            raise KernelSpecError(
                f"{origin}: {path} is a symlink loop; fix or remove the link"
            ) from None
        raise KernelSpecError(f"{origin}: cannot stat {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KernelSpecError(f"{origin}: {path} is not a regular file ({file_type(st.st_mode)})")

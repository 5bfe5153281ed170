"""``programs=``: host executables packed into the guest's initramfs with everything they need to
run there, at the paths they have on the host.

A program is named by path or by name on the host's ``PATH``. An ELF program brings its
interpreter and the libraries the loader would load (``loader.py``); a script brings its
interpreter (recursively, as the kernel allows four levels), unless busybox in the guest is that
interpreter (``/bin/sh``, ``/usr/bin/env``: then ``env``'s program is packed). A program goes to
its real path, with a link at the path it was named by; one outside the guest's ``PATH`` gets a
link in ``/usr/local/bin``, so it runs by name. The libraries found through the ld.so.cache or
the default directories are written into the guest's own ``/etc/ld.so.cache``, so the guest's
loader finds each one where the host's loader found it, whatever directories it defaults to.

Not packed: what a program opens on its own (``dlopen``, an interpreter's standard library,
data files): ``files=`` adds those.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..formats.elf import (
    EHDR_IDENT_AND_MACHINE,
    ELFMAG,
    NotElfError,
    arch_matches,
    parse_elf_ident,
)
from ..formats.elfdynamic import ET_DYN, ET_EXEC, ElfDynamicError, parse_dynamic
from ..formats.ldcache import CacheEntry, LdCacheError, build_cache, parse_cache
from ..regularfile import NotRegularFile, open_regular, read_regular
from .agent import INLINE_MAX
from .errors import GuestProgramError, GuestResult
from .initramfs import GuestFile, busybox_applets, find_busybox
from .loader import CACHE_FLAGS, LoadedObject, LoaderSearch

if TYPE_CHECKING:
    from .protocol import Guest

GUEST_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
LINK_DIR = "/usr/local/bin"
GUEST_LD_CACHE = "/etc/ld.so.cache"
SCRIPT = "/run/ktstr-programs/script"
SHEBANG_MAX = 256  # the kernel reads this much of a script's first line (BINPRM_BUF_SIZE)
SCRIPT_DEPTH = 4  # interpreters of interpreters the kernel follows (BINPRM_MAX_RECURSION)
_OWN = ("/init", "/bin/busybox")


@dataclass(frozen=True)
class PackedPrograms:
    """The guest files of some programs, and the guest path each named program runs by."""

    files: tuple[GuestFile, ...]
    paths: dict[str, str]  # what the caller named -> the guest path
    objects: tuple[LoadedObject, ...]  # every ELF file packed, with how it was found


def pack_programs(
    programs: Iterable[str | os.PathLike[str]],
    *,
    arch: str,
    applets: Iterable[str] = (),
    search: LoaderSearch | None = None,
) -> PackedPrograms:
    """The files that run ``programs`` in an ``arch`` guest whose busybox provides ``applets``
    (guest paths: ``/bin/sh``, ...); GuestProgramError naming the program and what is wrong."""
    programs = list(programs)
    if not programs:
        return PackedPrograms((), {}, ())
    packer = _Packer(arch, frozenset(applets), search or LoaderSearch())
    paths = {}
    for program in programs:
        named = os.fspath(program)
        paths[named] = packer.program(named, f"programs=[{named!r}]", 0)
    return PackedPrograms(packer.finish(), paths, tuple(packer.objects.values()))


def find_program(named: str, what: str) -> str:
    """The host path of a program named by path or by name on ``PATH`` (absolute, not
    resolved: a link keeps its name)."""
    if "/" in named:
        path = os.path.abspath(named)
        if not os.path.lexists(path):
            raise GuestProgramError(f"{what}: {path} does not exist")
        return path
    found = shutil.which(named)
    if found is None:
        raise GuestProgramError(
            f"{what}: no {named} on PATH ({os.environ.get('PATH', '')}): install it, or name it"
            " by its path"
        )
    return os.path.abspath(found)


class _Packer:
    def __init__(self, arch: str, applets: frozenset[str], search: LoaderSearch) -> None:
        self.arch, self.applets, self.search = arch, applets, search
        self.files: dict[str, GuestFile] = {}
        self.objects: dict[str, LoadedObject] = {}

    def program(self, named: str, what: str, depth: int) -> str:
        path = find_program(named, what)
        real = os.path.realpath(path)
        try:
            self._check_machine(real, path, what)  # before reading it all: a vmlinux is huge
            data = read_regular(real)
            mode = os.stat(real).st_mode & 0o7777
        except (OSError, NotRegularFile) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise GuestProgramError(f"{what}: {path} cannot be read: {reason}") from None
        if not mode & 0o111:
            raise GuestProgramError(f"{what}: {path} is not executable (mode {mode:o})")
        if real in _OWN or path in _OWN:
            raise GuestProgramError(f"{what}: {path} would replace the initramfs's own {real}")
        self._add(GuestFile(real, data, mode))
        if path != real:
            self._add(GuestFile(path, b"", 0o777, target=real))
        if data.startswith(b"#!"):
            self._script(path, data, what, depth)
        else:
            self._elf(real, data, mode, what)
        if posixpath.dirname(path) not in GUEST_PATH:
            link = f"{LINK_DIR}/{posixpath.basename(path)}"
            if link not in self.files:
                self._add(GuestFile(link, b"", 0o777, target=real))
        return path

    def _elf(self, path: str, data: bytes, mode: int, what: str) -> None:
        try:
            info = parse_dynamic(data)
        except NotElfError:
            raise GuestProgramError(
                f"{what}: {path} is neither an ELF executable nor a script (#!)"
            ) from None
        except ElfDynamicError as e:
            raise GuestProgramError(f"{what}: {path} is a damaged ELF file: {e}") from None
        if info.e_type not in (ET_EXEC, ET_DYN):
            raise GuestProgramError(f"{what}: {path} is an ELF file but not an executable")
        if info.interpreter is None:
            self.objects.setdefault(path, LoadedObject(path, "program", None, data, mode, info))
            return  # statically linked
        for obj in self.search.closure(path, data, mode, info):
            self.objects.setdefault(obj.path, obj)
            if obj.how != "program":
                self._add(GuestFile(obj.path, obj.data, obj.mode))

    def _check_machine(self, real: str, path: str, what: str) -> None:
        with open_regular(real) as f:
            head = f.read(EHDR_IDENT_AND_MACHINE)
        if not head.startswith(ELFMAG):
            return
        try:
            ident = parse_elf_ident(head)
        except NotElfError as e:
            raise GuestProgramError(f"{what}: {path} is a damaged ELF file: {e}") from None
        if ident.arch is None or not arch_matches(ident.arch, self.arch):
            raise GuestProgramError(
                f"{what}: {path} is an ELF for {ident.arch or ident.machine_name}"
                f" ({ident.machine_name}), the guest is {self.arch}: pack a build for {self.arch}"
            )

    def _script(self, path: str, data: bytes, what: str, depth: int) -> None:
        line = data[2:SHEBANG_MAX].split(b"\n", 1)[0].strip()
        interpreter, _, argument = line.partition(b" ")
        name = interpreter.decode("utf-8", "surrogateescape")
        arg = argument.strip().decode("utf-8", "surrogateescape")
        if not name.startswith("/"):
            raise GuestProgramError(f"{what}: {path} is a script without an interpreter path")
        script = f"{what}: the script {path}'s interpreter"
        if depth >= SCRIPT_DEPTH:
            raise GuestProgramError(f"{script} {name}: more than {SCRIPT_DEPTH} levels of #!")
        if name in self.applets:
            if posixpath.basename(name) == "env" and arg and not arg.startswith("-"):
                self.program(arg, f"{script} `env {arg}`", depth + 1)
            return  # busybox in the guest runs it
        if not os.path.exists(name):
            raise GuestProgramError(
                f"{script} {name} cannot be packed: it is not on this host, and busybox in the"
                " guest does not provide it"
            )
        self.program(name, script, depth + 1)

    def _add(self, file: GuestFile) -> None:
        self.files.setdefault(file.path, file)

    def finish(self) -> tuple[GuestFile, ...]:
        entries = []
        for obj in self.objects.values():
            flags = CACHE_FLAGS.get((obj.info.ident.e_machine, obj.info.ident.ei_class))
            if obj.how in ("ld.so.cache", "default") and flags is not None and obj.needed_as:
                names = {obj.needed_as, obj.info.soname or obj.needed_as}
                entries += [CacheEntry(name, obj.path, flags) for name in sorted(names)]
        if entries:
            self._add(GuestFile(GUEST_LD_CACHE, build_cache(entries), 0o644))
        return tuple(sorted(self.files.values(), key=lambda f: f.path))


def needed_in_guest(
    data: bytes, path: str, *, search: LoaderSearch | None = None
) -> list[LoadedObject]:
    """What the ELF program ``data`` (at ``path``, for ``$ORIGIN``) needs besides itself: its
    interpreter and libraries, found on this host; [] for a static program or anything that is
    not ELF. GuestProgramError when the host lacks one of them."""
    try:
        info = parse_dynamic(data)
    except (NotElfError, ElfDynamicError):
        return []
    if info.interpreter is None:
        return []
    return (search or LoaderSearch()).closure(path, data, 0o755, info)[1:]


def install_program(vm: Guest, named: str) -> str:
    """The guest path of the program ``named``: the guest's own (a guest path, or a name on
    the guest's PATH), else the host's, copied in with its loader and libraries (those the guest
    has already, at the same paths, are left as they are: a running program may map them)."""
    where = (
        f"command -v {shlex.quote(named)}"
        if "/" not in named
        else f"[ -x {shlex.quote(named)} ] && echo {shlex.quote(named)}"
    )
    found = _run(vm, where).stdout.decode(errors="replace").strip()
    if found.startswith("/"):
        return found
    packed = pack_programs(
        [named], arch=vm.line.arch, applets=busybox_applets(find_busybox(vm.line.arch))
    )
    # What it needs first, the program last: each put of a program checks its libraries.
    program = packed.paths[named]
    files = sorted(
        (f for f in packed.files if f.path != GUEST_LD_CACHE),
        key=lambda f: (f.target is not None, f.path == os.path.realpath(program)),
    )
    present = set(_present(vm, [f.path for f in files]))
    for f in files:
        if f.path in present:
            continue
        if f.target is not None:
            link, target = shlex.quote(f.path), shlex.quote(f.target)
            _run(vm, f"mkdir -p $(dirname {link}) && ln -sfn {target} {link}", check=True)
        else:
            vm.put(f.path, f.data, mode=f.mode)
    cache = next((f for f in packed.files if f.path == GUEST_LD_CACHE), None)
    if cache is not None:
        vm.put(GUEST_LD_CACHE, _merged_cache(vm, cache.data), mode=0o644)
    return program


def check_runnable(vm: Guest, guest_path: str, data: memoryview, source: object) -> None:
    """After a ``put`` of an ELF program: GuestProgramError saying what the guest lacks to run
    it (its loader, libraries) and pointing to ``programs=``; nothing for anything else."""
    if bytes(data[:4]) != ELFMAG:
        return
    host = os.path.abspath(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
    named = host or "/path/of/it/on/the/host"
    how = (
        f"boot the guest with programs=[{named!r}] (ktstr_vm(programs=...), kernel_vm_factory("
        "programs=...), boot_guest(programs=...)), which packs a program with everything it"
        " needs"
    )
    try:
        if parse_dynamic(data).soname is not None:
            return  # a library (libc.so.6 has an interpreter too): put to be loaded, not run
        needed = needed_in_guest(bytes(data), host or guest_path)
    except (NotElfError, ElfDynamicError):
        return
    except GuestProgramError as e:
        raise GuestProgramError(
            f"put {guest_path}: written, but it is a dynamically linked program and this host"
            f" cannot say what it needs: {e}"
        ) from None
    missing = _missing(vm, [o.path for o in needed])
    if not missing:
        return
    what = {o.path: (o.needed_as or "its interpreter (PT_INTERP)") for o in needed}
    listed = ", ".join(f"{p} ({what[p]})" for p in missing)
    raise GuestProgramError(
        f"put {guest_path}: written, but it cannot run: it is a dynamically linked program and"
        f" the guest lacks {listed}. To run it, {how}"
    )


def _present(vm: Guest, paths: list[str]) -> list[str]:
    if not paths:
        return []
    quoted = " ".join(shlex.quote(p) for p in paths)
    listing = _run(vm, f'for f in {quoted}; do [ -e "$f" ] && echo "$f"; done; true')
    return listing.stdout.decode(errors="surrogateescape").splitlines()


def _run(vm: Guest, command: str, *, check: bool = False) -> GuestResult:
    """``command`` in the guest; a long one as a script file first, so the request line stays
    short (a long command goes through the transfer window, where the agent of protocol 1
    loses every 64th: it clears its command files before running the one it just wrote)."""
    if len(command) <= INLINE_MAX:
        return vm.run(command, check=check)
    vm.put(SCRIPT, command.encode())
    return vm.run(f". {SCRIPT}", check=check)


def _missing(vm: Guest, paths: list[str]) -> list[str]:
    present = set(_present(vm, paths))
    return [p for p in paths if p not in present]


def _merged_cache(vm: Guest, ours: bytes) -> bytes:
    """The guest's ld.so.cache with the entries of ``ours`` added."""
    entries = list(parse_cache(ours).entries)
    if _present(vm, [GUEST_LD_CACHE]):
        with contextlib.suppress(LdCacheError):  # not one we can read: ours replaces it
            entries += parse_cache(vm.get(GUEST_LD_CACHE)).entries
    return build_cache(list(dict.fromkeys(e for e in entries if e.hwcap == 0)))

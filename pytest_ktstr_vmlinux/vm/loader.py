"""Which files a dynamically linked program loads, found the way glibc's loader finds them on
this host, without running the program (or the loader).

For each ``DT_NEEDED`` name, breadth first from the program as the loader walks them: a name with
a ``/`` is a path; a name an object already loaded answers to (its ``DT_NEEDED`` name, its
``DT_SONAME``) is that object; otherwise the directories of the ``DT_RPATH`` of the object that
needs it and of each object that loaded that one, up to the program (unless the needing object
has a ``DT_RUNPATH``), then that object's ``DT_RUNPATH``, then ``/etc/ld.so.cache``, then the
default directories (the last two unless the object says ``DF_1_NODEFLIB``). ``$ORIGIN`` is the
directory of the object (of a program, its real path, as the loader reads ``/proc/self/exe``).

A candidate of another class or machine is passed over, as the loader does. Two departures, both
for a guest that is not this host: ``LD_LIBRARY_PATH`` is not read (the guest's environment does
not have it), and glibc-hwcaps and legacy hwcap subdirectories (``x86-64-v3/``, ``haswell/``)
and the cache's hwcap entries are not used: they are builds for this host's CPU, and the guest's
CPU is QEMU's. RPATH entries with ``$LIB`` or ``$PLATFORM`` are skipped for the same reason.
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections import deque
from dataclasses import dataclass, field

from ..formats.elf import (
    ELFCLASS32,
    ELFCLASS64,
    EM_386,
    EM_AARCH64,
    EM_X86_64,
    ElfIdent,
    NotElfError,
)
from ..formats.elfdynamic import DynamicInfo, ElfDynamicError, parse_dynamic
from ..formats.ldcache import (
    FLAG_AARCH64_LIB64,
    FLAG_ELF_LIBC6,
    FLAG_X8664_LIB64,
    LdCache,
    LdCacheError,
    parse_cache,
)
from ..regularfile import NotRegularFile, read_regular
from .errors import GuestProgramError

LD_SO_CACHE = "/etc/ld.so.cache"
# glibc's system directories: Debian's multiarch ones, then the lib64 and lib ones others use.
_TRIPLET = {
    (EM_X86_64, ELFCLASS64): ("x86_64-linux-gnu", "lib64"),
    (EM_AARCH64, ELFCLASS64): ("aarch64-linux-gnu", "lib64"),
    (EM_386, ELFCLASS32): ("i386-linux-gnu", "lib32"),
}
# The cache flags of a library the loader of that machine and class accepts.
CACHE_FLAGS = {
    (EM_X86_64, ELFCLASS64): FLAG_ELF_LIBC6 | FLAG_X8664_LIB64,
    (EM_AARCH64, ELFCLASS64): FLAG_ELF_LIBC6 | FLAG_AARCH64_LIB64,
    (EM_386, ELFCLASS32): FLAG_ELF_LIBC6,
}
_MAX_OBJECTS = 4096  # a closure larger than this is a loop of names, not a program


@dataclass(frozen=True)
class LoadedObject:
    """One file the loader maps: where it names it (the path the guest gets), how it was found,
    and its bytes (read from the host, symlinks followed)."""

    path: str
    how: str  # "program", "interpreter", "DT_RPATH", "DT_RUNPATH", "ld.so.cache", "default"
    needed_as: str | None  # the DT_NEEDED name, None for the program and its interpreter
    data: bytes
    mode: int
    info: DynamicInfo
    loader: LoadedObject | None = field(default=None, repr=False)  # the object that needed it


def default_dirs(ident: ElfIdent) -> tuple[str, ...]:
    triplet, wide = _TRIPLET.get((ident.e_machine, ident.ei_class), (None, "lib64"))
    dirs = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
    return (*dirs, f"/{wide}", f"/usr/{wide}", "/lib", "/usr/lib")


@functools.lru_cache(maxsize=4)
def _cache_at(path: str, signature: tuple[int, int, int, int]) -> LdCache | None:
    try:
        return parse_cache(read_regular(path, limit=64 << 20))
    except (OSError, NotRegularFile):
        return None
    except LdCacheError as e:
        raise GuestProgramError(f"{path}: not an ld.so.cache this parser can read: {e}") from None


def read_ld_cache(path: str = LD_SO_CACHE) -> LdCache | None:
    """The host's ld.so.cache, parsed once per version of the file; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _cache_at(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def read_object(path: str, what: str) -> tuple[bytes, int, DynamicInfo]:
    """A host ELF file's bytes, permission bits and loader view; GuestProgramError naming
    ``what`` it is when it cannot be one."""
    try:
        data = read_regular(path)
        mode = os.stat(path).st_mode & 0o7777
    except (OSError, NotRegularFile) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise GuestProgramError(f"{what} {path}: cannot be read: {reason}") from None
    try:
        return data, mode, parse_dynamic(data)
    except NotElfError:
        raise GuestProgramError(f"{what} {path}: not an ELF file") from None
    except ElfDynamicError as e:
        raise GuestProgramError(f"{what} {path}: a damaged ELF file: {e}") from None


class LoaderSearch:
    """The closure of one program: ``closure(path, data, info)`` lists the program, its
    interpreter and every library it loads, in the loader's order."""

    def __init__(self, ld_cache: str = LD_SO_CACHE) -> None:
        self.ld_cache_path = ld_cache
        self.ld_cache = read_ld_cache(ld_cache)

    def closure(
        self, program: str, data: bytes, mode: int, info: DynamicInfo
    ) -> list[LoadedObject]:
        top = LoadedObject(program, "program", None, data, mode, info)
        objects = [top]
        by_name: dict[str, LoadedObject] = {}
        if info.interpreter is not None:
            interp = self._interpreter(top)
            objects.append(interp)
            self._answers(by_name, interp, info.interpreter)
        queue = deque([top])
        while queue:
            obj = queue.popleft()
            for name in obj.info.needed:
                if name in by_name:
                    continue
                found = self._find(name, obj, top)
                objects.append(found)
                if len(objects) > _MAX_OBJECTS:
                    raise GuestProgramError(f"{program}: more than {_MAX_OBJECTS} libraries")
                self._answers(by_name, found, name)
                queue.append(found)
        return objects

    def _interpreter(self, top: LoadedObject) -> LoadedObject:
        path = top.info.interpreter
        assert path is not None
        if not os.path.exists(path):
            raise GuestProgramError(
                f"{top.path}: its interpreter (PT_INTERP) {path} is not on this host: it was"
                " built for another system; pack a program this host can run"
            )
        data, mode, info = read_object(path, f"{top.path}: its interpreter")
        _same_machine(top, info, path, "its interpreter")
        return LoadedObject(path, "interpreter", None, data, mode, info, top)

    @staticmethod
    def _answers(by_name: dict[str, LoadedObject], obj: LoadedObject, name: str) -> None:
        by_name.setdefault(name, obj)
        by_name.setdefault(posixpath.basename(name), obj)
        if obj.info.soname:
            by_name.setdefault(obj.info.soname, obj)

    def _find(self, name: str, needer: LoadedObject, top: LoadedObject) -> LoadedObject:
        looked: list[str] = []
        for how, path in self._candidates(name, needer, top):
            looked.append(path)
            found = self._try(path, name, how, needer, top)
            if found is not None:
                return found
        chain = _chain(needer)
        where = ", ".join(dict.fromkeys(posixpath.dirname(p) for p in looked)) or "nowhere"
        raise GuestProgramError(
            f"{top.path}: library {name} (DT_NEEDED of {chain}) is not on this host: looked in"
            f" {where}. Install the package that has it (or add its directory to the ld.so.cache"
            " with ldconfig, or to the program's RUNPATH), then boot again"
        )

    def _candidates(
        self, name: str, needer: LoadedObject, top: LoadedObject
    ) -> list[tuple[str, str]]:
        if "/" in name:
            return [("path", name)]
        out: list[tuple[str, str]] = []
        info = needer.info
        if info.runpath is None:
            obj: LoadedObject | None = needer
            while obj is not None:
                out += [("DT_RPATH", f"{d}/{name}") for d in _dirs(obj.info.rpath, obj, top)]
                obj = obj.loader
        out += [("DT_RUNPATH", f"{d}/{name}") for d in _dirs(info.runpath, needer, top)]
        if info.nodeflib:
            return out
        if self.ld_cache is not None:
            flags = CACHE_FLAGS.get((top.info.ident.e_machine, top.info.ident.ei_class))
            out += [("ld.so.cache", e.path) for e in self.ld_cache.lookup(name, flags)]
        out += [("default", f"{d}/{name}") for d in default_dirs(top.info.ident)]
        return out

    @staticmethod
    def _try(
        path: str, name: str, how: str, needer: LoadedObject, top: LoadedObject
    ) -> LoadedObject | None:
        path = posixpath.normpath(path)
        if not path.startswith("/") or not os.path.isfile(path):
            return None
        data, mode, info = read_object(path, f"{top.path}: library {name}")
        if (info.ident.ei_class, info.ident.ei_data, info.ident.e_machine) != (
            top.info.ident.ei_class,
            top.info.ident.ei_data,
            top.info.ident.e_machine,
        ):
            return None  # another machine's build: the loader passes it over too
        return LoadedObject(path, how, name, data, mode, info, needer)


def _dirs(entries: tuple[str, ...] | None, obj: LoadedObject, top: LoadedObject) -> list[str]:
    """An object's RPATH or RUNPATH directories with $ORIGIN expanded; entries that name the
    host's CPU ($LIB, $PLATFORM) or the current directory (empty) are skipped."""
    origin = posixpath.dirname(os.path.realpath(obj.path) if obj is top else obj.path)
    out = []
    for entry in entries or ():
        expanded = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
        if not expanded or "$" in expanded:
            continue
        out.append(posixpath.normpath(expanded))
    return out


def _chain(obj: LoadedObject) -> str:
    names = []
    at: LoadedObject | None = obj
    while at is not None:
        names.append(at.path)
        at = at.loader
    return " <- ".join(names)


def _same_machine(top: LoadedObject, info: DynamicInfo, path: str, what: str) -> None:
    a, b = top.info.ident, info.ident
    if (a.ei_class, a.ei_data, a.e_machine) != (b.ei_class, b.ei_data, b.e_machine):
        raise GuestProgramError(
            f"{top.path}: {what} {path} is an ELF for {b.arch or b.machine_name}, the program"
            f" for {a.arch or a.machine_name}"
        )

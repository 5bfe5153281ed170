"""Kernel configuration (``.config``) parsed into a mapping, from its text or from the copy a kernel
carries inside itself.

A kernel built with ``CONFIG_IKCONFIG`` carries a gzipped copy of its config (between the
``IKCFG_ST`` and ``IKCFG_ED`` markers of kernel/configs.c), readable from a vmlinux or a
decompressed image payload. Where a kernel keeps its config file is ``kernel/config.py``'s concern.
"""

from __future__ import annotations

import mmap
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ..errors import KernelArtifactError
from ..regularfile import stable_read
from ..store.signature import read_error

CONFIG_PREFIX = "CONFIG_"
IKCONFIG_START = b"IKCFG_ST"
IKCONFIG_END = b"IKCFG_ED"
# gzip magic and the deflate method byte, as scripts/extract-ikconfig looks for them.
GZIP_MAGIC = b"\x1f\x8b\x08"
# A distro .config is ~300 KiB; anything this large is not a config, and an unbounded gunzip of
# hostile bytes could exhaust memory.
MAX_CONFIG_BYTES = 16 << 20
# IKCFG_ST markers tried before giving up: bounds the work junk full of markers can cause.
MAX_IKCONFIG_CANDIDATES = 16
# Bytes fed to the decompressor (and copied by a chunked search) at a time.
_CHUNK = 1 << 20

Value = str | int | None

_NAME = r"CONFIG_[A-Za-z0-9_]+"
_ASSIGNMENT_RE = re.compile(rf"({_NAME})=(.*)", re.ASCII | re.DOTALL)
# Kconfig reads "# CONFIG_X is not set" and ignores whatever follows; so do we.
_NOT_SET_RE = re.compile(rf"# ({_NAME}) is not set(?:\s.*)?", re.ASCII | re.DOTALL)
_DECIMAL_RE = re.compile(r"-?[0-9]+", re.ASCII)
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+", re.ASCII)
# Longer decimals exceed Python's int-from-str limit; no Kconfig int (64-bit) comes close.
_MAX_DECIMAL_DIGITS = 4000


class KernelConfig(Mapping[str, Value]):
    """A parsed ``.config``: full ``CONFIG_*`` names -> ``"y"``, ``"m"``, str, int or None.

    None means ``# CONFIG_X is not set``: the symbol was visible and off, which differs from a
    symbol absent from the mapping (not offered by this kernel's Kconfig at all). Lookups
    (``cfg[name]``, ``cfg.get(name)``, ``name in cfg``, ``enabled``) accept the name with or
    without the ``CONFIG_`` prefix; iteration yields the full names::

        config = kernel.config  # a Kernel's, None when it has none
        if config is not None and config.enabled("SCHED_CLASS_EXT"):
            print(config["CONFIG_NR_CPUS"], config.source)
    """

    def __init__(self, values: Mapping[str, Value], source: str) -> None:
        self._values: dict[str, Value] = dict(values)
        #: Where the config was read from (a file, or the IKCONFIG of an image or vmlinux).
        self.source = source

    def __getitem__(self, name: str) -> Value:
        if not isinstance(name, str):
            raise KeyError(name)
        try:
            return self._values[name]
        except KeyError:
            pass
        try:
            return self._values[CONFIG_PREFIX + name]
        except KeyError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"KernelConfig(source={self.source!r}, {len(self)} symbols)"

    def enabled(self, name: str) -> bool:
        """True when the symbol is built in (``y``) or a module (``m``)."""
        return self.get(name) in ("y", "m")


def parse_config(text: str, source: str) -> KernelConfig:
    """Parse ``.config`` text as Kconfig writes it; ``source`` names it in errors and the result.

    A line Kconfig would not have written raises KernelArtifactError naming source and line:
    silently dropping it could turn an enabled option into a missing one.
    """
    values: dict[str, Value] = {}
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            not_set = _NOT_SET_RE.fullmatch(line)
            if not_set:
                values[not_set.group(1)] = None
            continue
        assignment = _ASSIGNMENT_RE.fullmatch(line)
        if assignment is None:
            raise _malformed(
                source,
                lineno,
                raw,
                "expected CONFIG_NAME=value, '# CONFIG_NAME is not set', a comment or a blank line",
            )
        name, value = assignment.groups()
        try:
            # A later assignment overrides an earlier one, as when Kconfig reads the file.
            values[name] = _parse_value(value)
        except ValueError as error:
            raise _malformed(source, lineno, raw, str(error)) from None
    return KernelConfig(values, source)


def _parse_value(value: str) -> Value:
    if value.startswith('"'):
        return _unquote(value)
    if _HEX_RE.fullmatch(value):
        return int(value, 16)
    if _DECIMAL_RE.fullmatch(value):
        if len(value) > _MAX_DECIMAL_DIGITS:
            raise ValueError(f"number of {len(value)} digits")
        return int(value)
    return value


def _unquote(value: str) -> str:
    # Kconfig escapes '"' and '\' with a backslash inside the quotes (sym_escape_string_value)
    # and reads any backslash as "take the next character literally" (conf_set_sym_val).
    out: list[str] = []
    i = 1
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value):
                break
            out.append(value[i + 1])
            i += 2
        elif ch == '"':
            if value[i + 1 :].strip():
                raise ValueError("text after the closing quote")
            return "".join(out)
        else:
            out.append(ch)
            i += 1
    raise ValueError("string without a closing quote")


def _malformed(source: str, lineno: int, raw: str, why: str) -> KernelArtifactError:
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    return KernelArtifactError(
        f"{source}:{lineno}: malformed kernel config line {shown!r}: {why};"
        " regenerate it with `make olddefconfig` or fix the line"
    )


def extract_ikconfig(data: bytes | memoryview, *, what: str) -> str | None:
    """The ``.config`` text embedded by ``CONFIG_IKCONFIG``, or None when there is no marker.

    ``data`` is a vmlinux (debug or stripped) or a decompressed image payload; ``what`` names it
    in errors. A marker whose gzip stream is corrupt, truncated or implausibly large raises
    KernelArtifactError. Later markers are tried when an earlier one fails, so a stray
    ``IKCFG_ST`` elsewhere in the binary cannot hide the real copy.
    """
    view = _byte_view(data)
    return _extract(_finder(view), lambda start: _view_chunks(view, start), what)


def ikconfig_in_file(path: Path) -> str | None:
    """extract_ikconfig of the file at ``path``, read a chunk at a time: never mapped, as a
    rebuild may truncate it meanwhile, and never whole (a vmlinux is 600 MB). FileChanged when
    the file changed while it was read; other errors name the file, as extract_ikconfig does."""
    try:
        with stable_read(path) as f:

            def chunks(start: int) -> Iterator[bytes]:
                for pos in range(start, f.size, _CHUNK):
                    chunk = f.pread(pos, _CHUNK)
                    if not chunk:
                        return
                    yield chunk

            def find(needle: bytes, start: int) -> int:
                overlap = len(needle) - 1
                for pos in range(start, f.size, _CHUNK):
                    hit = f.pread(pos, _CHUNK + overlap).find(needle)
                    if hit >= 0:
                        return pos + hit
                return -1

            return _extract(find, chunks, str(path))
    except OSError as e:
        raise read_error(path, e) from None


def config_from_ikconfig_file(path: Path) -> KernelConfig | None:
    """The parsed ``CONFIG_IKCONFIG`` copy in the file at ``path`` (see ikconfig_in_file)."""
    text = ikconfig_in_file(path)
    return None if text is None else parse_config(text, f"IKCONFIG in {path}")


def _extract(
    find: Callable[[bytes, int], int],
    chunks: Callable[[int], Iterator[bytes | memoryview]],
    what: str,
) -> str | None:
    pos = find(IKCONFIG_START, 0)
    if pos < 0:
        return None
    first_error: KernelArtifactError | None = None
    for _ in range(MAX_IKCONFIG_CANDIDATES):
        if pos < 0:
            break
        start = pos + len(IKCONFIG_START)
        if bytes(next(chunks(start), b"")[: len(GZIP_MAGIC)]) == GZIP_MAGIC:
            try:
                return _gunzip(chunks(start), start, what).decode("utf-8", errors="replace")
            except KernelArtifactError as error:
                first_error = first_error or error
        elif first_error is None:
            first_error = KernelArtifactError(
                f"{what}: IKCONFIG marker at offset {pos:#x} is not followed by a gzip stream;"
                " the file is damaged or not a kernel"
            )
        pos = find(IKCONFIG_START, start)
    assert first_error is not None  # every candidate tried either returned or set it
    raise first_error


def config_from_ikconfig(data: bytes | memoryview, *, what: str) -> KernelConfig | None:
    """The parsed ``CONFIG_IKCONFIG`` copy in ``data``, or None when the kernel has none."""
    text = extract_ikconfig(data, what=what)
    return None if text is None else parse_config(text, f"IKCONFIG in {what}")


def config_from_gzip(data: bytes, source: str) -> KernelConfig:
    """Parse a gzipped ``.config`` (``/proc/config.gz``), inflated within MAX_CONFIG_BYTES."""
    text = _gunzip(_view_chunks(memoryview(data), 0), 0, source)
    return parse_config(text.decode("utf-8", errors="replace"), source)


def _byte_view(data: bytes | memoryview) -> memoryview:
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:
        return view
    # Slicing and comparing must count bytes, whatever shape the caller's view has.
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


def _view_chunks(view: memoryview, start: int) -> Iterator[memoryview]:
    return (view[pos : pos + _CHUNK] for pos in range(start, len(view), _CHUNK))


def _finder(view: memoryview) -> Callable[[bytes, int], int]:
    obj = view.obj
    # The whole of a bytes/mmap object (a store artifact's mapping: never a user's file, which
    # a rebuild may truncate under it) searches in place, with no copy of a 600 MB payload.
    # A view of part of it would give offsets into the wrong range, so it takes the slow path.
    if isinstance(obj, (bytes, bytearray, mmap.mmap)) and view.nbytes == len(obj):
        return obj.find

    def chunked(needle: bytes, start: int) -> int:
        overlap = len(needle) - 1
        for pos in range(start, len(view), _CHUNK):
            hit = bytes(view[pos : pos + _CHUNK + overlap]).find(needle)
            if hit >= 0:
                return pos + hit
        return -1

    return chunked


def _gunzip(stream: Iterator[bytes | memoryview], offset: int, what: str) -> bytes:
    """Inflate the gzip member at the start of ``stream`` (its chunks), stopping at its end,
    bounded."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    for chunk in stream:
        try:
            # max_length caps the output of hostile input; at least 1, as 0 means unlimited.
            out += inflater.decompress(chunk, MAX_CONFIG_BYTES + 1 - len(out))
        except zlib.error as error:
            raise KernelArtifactError(
                f"{what}: IKCONFIG gzip stream at offset {offset:#x} is corrupt ({error});"
                " the file is damaged: rebuild or re-extract it"
            ) from None
        if len(out) > MAX_CONFIG_BYTES:
            raise KernelArtifactError(
                f"{what}: IKCONFIG gzip stream at offset {offset:#x} inflates past"
                f" {MAX_CONFIG_BYTES >> 20} MiB; not a kernel config"
            )
        if inflater.eof:
            return bytes(out)
    raise KernelArtifactError(
        f"{what}: IKCONFIG gzip stream at offset {offset:#x} is truncated;"
        " the file is damaged or cut short: rebuild or re-extract it"
    )

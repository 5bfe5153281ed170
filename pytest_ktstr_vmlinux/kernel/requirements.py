"""What a ktstr-style test declares it needs from a kernel, checked against one kernel.

``Requirements.parse`` validates the arguments of ``@pytest.mark.ktstr(...)`` (ValueError naming
the argument); ``check`` evaluates them through a ``KernelFacts``, loading the config, symbols
or BTF only when a requirement asks about them. Its verdict separates what a kernel lacks from
what could not be checked (no vmlinux to read symbols from): a skip must never guess.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ..errors import KernelArtifactError
from ..formats.btf.queries import BTF
from ..formats.elf import ARCH_FAMILY, arch_matches
from ..formats.kconfig import CONFIG_PREFIX, KernelConfig
from ..formats.symbols import FUNCTIONS_ONLY_HELP, KernelSymbols
from ..store.api import StoreLockTimeout
from .versions import KernelVersion, parse_version, release_version

R = TypeVar("R")
A = TypeVar("A")

ARGUMENTS = ("min_version", "max_version", "config", "symbols", "btf", "arch")
ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64", "i686": "i386"}
_CONFIG_RE = re.compile(r"(!)?(?:CONFIG_)?([A-Za-z0-9_]+)(?:=(\S.*))?", re.ASCII)
_BTF_RE = re.compile(
    r"(?:(struct|union|enum|typedef)\s+)?([A-Za-z_][A-Za-z0-9_]*)(?:\.(\S+))?", re.ASCII
)
_SYMBOL_RE = re.compile(r"\S+")
# A member path as BTF.member() takes it: names (each with optional [index]) joined by dots.
_MEMBER_RE = re.compile(
    r"[A-Za-z_$][\w$]*(?:\[\d+\])*(?:\.[A-Za-z_$][\w$]*(?:\[\d+\])*)*", re.ASCII
)
_BTF_KINDS = ("struct", "union", "enum", "typedef", "func", "var")


@dataclass(frozen=True)
class ConfigRequirement:
    """``NAME`` must be enabled (y, m, or any value), ``NAME=value`` set to exactly that value,
    ``!NAME`` off (``is not set``, ``n`` or absent)."""

    name: str  # with the CONFIG_ prefix
    off: bool = False
    value: str | None = None

    def unmet(self, config: KernelConfig) -> str | None:
        """Why ``config`` does not satisfy this, or None."""
        actual = config.get(self.name)
        shown = f"{self.name}={actual}"
        if self.off:
            return None if actual in (None, "n") else f"has {shown}, needs it off"
        if actual in (None, "n"):
            needs = f" (needs {self.name}={self.value})" if self.value is not None else ""
            return f"lacks {self.name}{needs}"
        if self.value is None or _same_value(actual, self.value):
            return None
        return f"has {shown}, needs {self.name}={self.value}"


@dataclass(frozen=True)
class BTFRequirement:
    """A type (``struct scx_rq``) or one of its members (``struct rq.scx``) in the kernel's BTF."""

    type: str
    member: str | None = None

    def unmet(self, btf: BTF) -> str | None:
        # `in`, not type(): a miss must not pay for the close-match search of a KeyError.
        if self.type not in btf:
            return f"lacks BTF type {self.type}"
        if self.member is None:
            return None
        # member() refuses a bare name several kinds share (kstat): ask each kind that has it.
        spellings = [self.type] if " " in self.type else [f"{w} {self.type}" for w in _BTF_KINDS]
        for spelling in spellings:
            if spelling not in btf:
                continue
            try:
                btf.member(spelling, self.member)
            except KeyError:
                continue
            return None
        return f"lacks BTF member {self.type}.{self.member}"


@dataclass(frozen=True)
class Requirements:
    """The arguments of one ``ktstr`` marker, validated."""

    min_version: KernelVersion | None = None
    max_version: KernelVersion | None = None
    config: tuple[ConfigRequirement, ...] = ()
    symbols: tuple[str, ...] = ()
    btf: tuple[BTFRequirement, ...] = ()
    arch: tuple[str, ...] = ()
    text: Mapping[str, object] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, args: tuple[object, ...], kwargs: Mapping[str, object]) -> Requirements:
        """Validate marker arguments; ValueError says which argument is wrong and how."""
        if args:
            raise ValueError(
                f"ktstr takes keyword arguments only ({', '.join(ARGUMENTS)}), got positional"
                f" {', '.join(map(repr, args))}"
            )
        for name in kwargs:
            if name not in ARGUMENTS:
                close = difflib.get_close_matches(name, ARGUMENTS, n=1)
                hint = f"; did you mean {close[0]}=?" if close else ""
                raise ValueError(
                    f"ktstr got an unknown argument {name}=; it takes {', '.join(ARGUMENTS)}{hint}"
                )
        low = _validate_version(kwargs.get("min_version"), "min_version")
        high = _validate_version(kwargs.get("max_version"), "max_version")
        if low is not None and high is not None and _above(low, high, kwargs["max_version"]):
            raise ValueError(
                f"ktstr min_version {kwargs['min_version']} is above max_version"
                f" {kwargs['max_version']}: nothing runs"
            )
        return cls(
            min_version=low,
            max_version=high,
            config=tuple(map(_parse_config, _validate_items(kwargs.get("config"), "config"))),
            symbols=tuple(map(_parse_symbol, _validate_items(kwargs.get("symbols"), "symbols"))),
            btf=tuple(map(_parse_btf, _validate_items(kwargs.get("btf"), "btf"))),
            arch=_validate_arch(kwargs.get("arch")),
            text=dict(kwargs),
        )


class KernelFacts(Protocol):
    """One kernel as requirements see it; the loaders raise KernelArtifactError when the
    kernel has no such artifact, and are called only when a requirement needs them."""

    @property
    def release(self) -> str | None: ...

    @property
    def arch(self) -> str | None: ...

    def config(self) -> KernelConfig: ...

    def symbols(self) -> KernelSymbols: ...

    def btf(self) -> BTF: ...


@dataclass
class Verdict:
    """``unmet``: what the kernel lacks; ``unchecked``: requirements that could not be
    evaluated, each with the reason."""

    unmet: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unmet and not self.unchecked

    def reason(self, kernel: str) -> str:
        """One line for a skip or failure: ``kernel 6.1.0-56-cloud-amd64 lacks CONFIG_X``."""
        parts = []
        if self.unmet:
            parts.append(f"kernel {kernel} " + "; ".join(self.unmet))
        if self.unchecked:
            parts.append(f"cannot check on kernel {kernel}: " + "; ".join(self.unchecked))
        return "; ".join(parts)


def check(requirements: Iterable[Requirements], facts: KernelFacts) -> Verdict:
    """Evaluate every marker's requirements (all must hold) against one kernel."""
    verdict = Verdict()
    for req in requirements:
        _check_arch(req, facts, verdict)
        _check_versions(req, facts, verdict)
        _check_items(req.config, facts.config, ConfigRequirement.unmet, "config", verdict)
        _check_items(req.symbols, facts.symbols, _symbol_unmet, "symbols", verdict)
        _check_items(req.btf, facts.btf, BTFRequirement.unmet, "btf", verdict)
    return verdict


def _check_items(
    items: Sequence[R],
    load: Callable[[], A],
    unmet: Callable[[R, A], str | None],
    what: str,
    verdict: Verdict,
) -> None:
    """Load the artifact only when some item asks about it; a load or read error is a
    requirement that could not be checked, never one that is unmet."""
    if not items:
        return
    try:
        artifact = load()
    except StoreLockTimeout:
        raise  # the store was busy: that says nothing about the kernel, checked or not
    except KernelArtifactError as e:
        # A reason is one line: a missing vmlinux's probe report is in the header already.
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        verdict.unchecked.append(f"{what}={[_spell(i) for i in items]}: {why}")
        return
    failed: dict[str, list[str]] = {}  # one line for every item that failed the same way
    for item in items:
        try:
            reason = unmet(item, artifact)
        except KernelArtifactError as e:  # damaged BTF, say: not a missing type
            failed.setdefault(str(e), []).append(_spell(item))
            continue
        if reason is not None:
            verdict.unmet.append(reason)
    verdict.unchecked += (f"{what}={spelled}: {why}" for why, spelled in failed.items())


def _symbol_unmet(name: str, ksyms: KernelSymbols) -> str | None:
    if name in ksyms:
        return None
    if ksyms.functions_only:  # it may be data kallsyms does not list: unknown, not missing
        raise KernelArtifactError(f"not in {ksyms.source}, which {FUNCTIONS_ONLY_HELP}")
    return f"lacks symbol {name}"


def _check_arch(req: Requirements, facts: KernelFacts, verdict: Verdict) -> None:
    if not req.arch:
        return
    wanted = " or ".join(req.arch)
    if facts.arch is None:
        verdict.unchecked.append(f"arch={wanted}: the kernel's arch is unknown")
    elif not any(arch_matches(facts.arch, a) for a in req.arch):
        verdict.unmet.append(f"is {facts.arch}, needs arch {wanted}")


def _check_versions(req: Requirements, facts: KernelFacts, verdict: Verdict) -> None:
    if req.min_version is None and req.max_version is None:
        return
    version = release_version(facts.release) if facts.release else None
    if version is None:
        verdict.unchecked.append(f"a version requirement: release {facts.release!r} has none")
    elif req.min_version is not None and version < req.min_version:
        verdict.unmet.append(f"is {version}, needs >= {req.text['min_version']}")
    elif req.max_version is not None and _above(version, req.max_version, req.text["max_version"]):
        verdict.unmet.append(f"is {version}, needs <= {req.text['max_version']}")


def _spell(item: object) -> str:
    """A requirement as the marker wrote it."""
    if isinstance(item, ConfigRequirement):
        name = item.name.removeprefix(CONFIG_PREFIX)
        return f"!{name}" if item.off else f"{name}={item.value}" if item.value else name
    if isinstance(item, BTFRequirement):
        return f"{item.type}.{item.member}" if item.member else item.type
    return str(item)


def _above(version: KernelVersion, limit: KernelVersion, text: object) -> bool:
    """``max_version="6.5"`` names the 6.5 series: 6.5.13 is not above it (``versions.py``)."""
    if isinstance(text, str) and text.count(".") == 1 and "-rc" not in text:
        return (version.major, version.minor) > (limit.major, limit.minor)
    return version > limit


def _same_value(actual: object, wanted: str) -> bool:
    if isinstance(actual, int):
        try:
            return actual == int(wanted, 0)
        except ValueError:
            return False
    return str(actual) == wanted.strip('"')


def _validate_version(value: object, name: str) -> KernelVersion | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"ktstr {name}={value!r} must be a string like '6.12' (6.1 != 6.10)")
    try:
        return parse_version(value)
    except ValueError as e:
        raise ValueError(f"ktstr {name}: {e}") from None


def _validate_items(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str | bytes):
        raise ValueError(f"ktstr {name}={value!r} must be a list of strings: {name}=[{value!r}]")
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"ktstr {name}={value!r} must be a list of strings")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"ktstr {name}: {item!r} is not a non-empty string")
    items = sorted(value) if isinstance(value, set | frozenset) else value
    return tuple(item.strip() for item in items)


def _parse_config(item: str) -> ConfigRequirement:
    found = _CONFIG_RE.fullmatch(item)
    if found is None or (found[1] and found[3] is not None):
        raise ValueError(
            f"ktstr config: {item!r} is not NAME (enabled), NAME=value (exact) or !NAME (off)"
        )
    off, name, value = found.groups()
    return ConfigRequirement(CONFIG_PREFIX + name, off=bool(off), value=value)


def _parse_symbol(item: str) -> str:
    if not _SYMBOL_RE.fullmatch(item):
        raise ValueError(f"ktstr symbols: {item!r} is not a symbol name")
    return item


def _parse_btf(item: str) -> BTFRequirement:
    found = _BTF_RE.fullmatch(item)
    if found is None:
        raise ValueError(
            f"ktstr btf: {item!r} is not a type ('struct scx_rq') or a member ('struct rq.scx')"
        )
    kind, name, member = found.groups()
    if member is not None and not _MEMBER_RE.fullmatch(member):
        raise ValueError(
            f"ktstr btf: {item!r}: member path {member!r} is not names, dots and [index]"
            " ('struct rq.scx.local_dsq', 'struct rq.cpu_load[0]')"
        )
    return BTFRequirement(f"{kind} {name}" if kind else name, member)


def _validate_arch(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"ktstr arch={value!r} must be an arch name or a list of them")
    arches = []
    for name in names:
        arch = ARCH_ALIASES.get(name, name) if isinstance(name, str) else name
        if arch not in ARCH_FAMILY:
            known = ", ".join(sorted(ARCH_FAMILY))
            raise ValueError(f"ktstr arch: {name!r} is not one of {known}")
        arches.append(str(arch))
    return tuple(arches)

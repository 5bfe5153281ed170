"""The guest settings (``--kernel-vm-*``, ``KTSTR_VM_*``, ``ktstr_vm_*``) and the ``ktstr_vm``
marker's arguments, validated: a bad setting is a usage error at startup, a bad marker argument a
collection error naming the test."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from ..errors import KernelSpecError
from .settings import chosen_setting, ini_value

if TYPE_CHECKING:
    from ..kernel.spec import SpecSource

VM_MARKER = "ktstr_vm"
VM_FIXTURE = "kernel_vm"
FACTORY_FIXTURE = "kernel_vm_factory"
HELP_VM_MARKER = (
    "ktstr_vm(cpus=None, memory=None, cmdline='', files=None, timeout=None, programs=None,"
    " scheduler=None, scheduler_args=None, sockets=None, cores=None, threads=None,"
    " numa_nodes=None): give the test a kernel_vm guest of its own, booted with these settings"
    " (cmdline is appended)."
)
MARKER_ARGS = (
    "cpus",
    "memory",
    "cmdline",
    "files",
    "timeout",
    "programs",
    "scheduler",
    "scheduler_args",
    "sockets",
    "cores",
    "threads",
    "numa_nodes",
)
_COUNTS = ("cpus", "sockets", "cores", "threads", "numa_nodes")


# NamedTuples and plain classes, not dataclasses: this module is imported by every pytest run
# that has the plugin, and a dataclass costs a millisecond to define.
class _Setting(NamedTuple):
    name: str  # the setting's part of every spelling: "cpus"
    metavar: str
    default: str
    what: str

    @property
    def option(self) -> str:
        return f"--kernel-vm-{self.name}"

    @property
    def env(self) -> str:
        return f"KTSTR_VM_{self.name.upper()}"

    @property
    def ini(self) -> str:
        return f"ktstr_vm_{self.name}"

    @property
    def help(self) -> str:
        return (
            f"{self.what}. Precedence: {self.option} > ${self.env} > ini {self.ini} >"
            f" {self.default}."
        )


CPUS = _Setting("cpus", "N", "2", "virtual CPUs of a kernel_vm guest")
MEMORY = _Setting(
    "memory", "SIZE", "512M", "RAM of a kernel_vm guest (512M, 1G, bytes; a whole number of MiB)"
)
ACCEL = _Setting(
    "accel",
    "auto|kvm|tcg",
    "auto",
    "how QEMU runs guests: auto uses KVM where a short probe boot shows it works (the verdict is"
    " kept per host), else TCG",
)
TIMEOUT = _Setting(
    "timeout", "SECONDS", "300", "how long a kernel_vm guest may take to boot to its agent"
)
CMDLINE = _Setting(
    "cmdline", "ARGS", "none", "appended to the kernel command line of every kernel_vm guest"
)
SETTINGS = (CPUS, MEMORY, ACCEL, TIMEOUT, CMDLINE)


class VmSettings(NamedTuple):
    cpus: int = 2
    memory: int = 512 << 20  # bytes
    accel: str = "auto"
    timeout: float = 300.0
    cmdline: str = ""


def vm_settings(config: pytest.Config) -> VmSettings:
    """The guest settings, each option > environment > ini > default; KernelSpecError when one
    is not a valid value."""

    def chosen(setting: _Setting) -> tuple[str, SpecSource] | None:
        return chosen_setting(config, setting.ini, setting.env, setting.ini)

    defaults = VmSettings()
    cmdline = chosen(CMDLINE)
    return VmSettings(
        cpus=_validate_cpus(chosen(CPUS), defaults.cpus),
        memory=_validatememory_size(chosen(MEMORY), defaults.memory),
        accel=_validate_accel(chosen(ACCEL), defaults.accel),
        timeout=_validate_timeout(chosen(TIMEOUT), defaults.timeout),
        cmdline=cmdline[0] if cmdline else defaults.cmdline,
    )


def vm_settings_given(config: pytest.Config) -> bool:
    return any(
        config.getoption(s.ini) or os.environ.get(s.env, "").strip() or ini_value(config, s.ini)
        for s in SETTINGS
    )


def _origin(setting: _Setting, source: SpecSource) -> str:
    spelled = {"option": setting.option, "env": f"${setting.env}"}.get(source.value, setting.ini)
    return f"kernel_vm {setting.name} (from {spelled})"


def _validate_cpus(chosen: tuple[str, SpecSource] | None, default: int) -> int:
    if chosen is None:
        return default
    raw, source = chosen
    if not raw.isdigit() or int(raw) < 1:
        raise KernelSpecError(
            f"{_origin(CPUS, source)}: {raw!r} is not a number of CPUs (1, 2, ...)"
        )
    return int(raw)


def _validatememory_size(chosen: tuple[str, SpecSource] | None, default: int) -> int:
    if chosen is None:
        return default
    raw, source = chosen
    try:
        return memory_size(raw, "")
    except ValueError as e:
        raise KernelSpecError(f"{_origin(MEMORY, source)}: {e}") from None


def _validate_accel(chosen: tuple[str, SpecSource] | None, default: str) -> str:
    if chosen is None:
        return default
    raw, source = chosen
    if raw not in ("auto", "kvm", "tcg"):
        raise KernelSpecError(f"{_origin(ACCEL, source)}: {raw!r} is not one of auto, kvm, tcg")
    return raw


def _validate_timeout(chosen: tuple[str, SpecSource] | None, default: float) -> float:
    if chosen is None:
        return default
    raw, source = chosen
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise KernelSpecError(f"{_origin(TIMEOUT, source)}: {raw!r} is not a number of seconds")
    return value


def memory_size(value: int | str, what: str) -> int:
    """Bytes from ``512M``, ``1G`` or a number of bytes; a whole number of MiB."""
    from ..store.directory import parse_size

    size = value if isinstance(value, int) else parse_size(value)
    if size <= 0 or size % (1 << 20):
        raise ValueError(f"{what}{value!r}: guest memory is a positive whole number of MiB")
    return size


def marker_arguments(mark: pytest.Mark, nodeid: str) -> dict[str, Any]:
    """The marker's keyword arguments, checked at collection like the ``ktstr`` marker's."""
    if mark.args:
        problem: str | None = "takes keyword arguments only"
    elif unknown := sorted(set(mark.kwargs) - set(MARKER_ARGS)):
        problem = f"unknown argument {unknown[0]!r} (it takes {', '.join(MARKER_ARGS)})"
    else:
        problem = guest_arguments_problem(mark.kwargs)
    if problem is not None:
        pytest.fail(f"{nodeid}: {VM_MARKER} marker: {problem}", pytrace=False)
    return dict(mark.kwargs)


def guest_arguments_problem(kw: Mapping[str, Any]) -> str | None:
    """What is wrong with a guest's arguments (the marker's, the factory's), or None."""
    for name in _COUNTS:
        value = kw.get(name)
        if value is not None and (type(value) is not int or value < 1):
            what = "a number of CPUs" if name == "cpus" else "a whole number"
            return f"{name}={value!r}: {what} (1, 2, ...)"
    memory = kw.get("memory")
    if memory is not None:
        try:
            memory_size(memory, "memory=")
        except (ValueError, TypeError) as e:
            return str(e)
    if not isinstance(kw.get("cmdline", ""), str):
        return f"cmdline={kw['cmdline']!r}: a string"
    if not isinstance(kw.get("files") or {}, Mapping):
        return f"files={kw['files']!r}: a mapping of guest path to bytes or host path"
    programs = kw.get("programs") or ()
    if not isinstance(programs, (list, tuple)) or not all(
        isinstance(p, (str, os.PathLike)) for p in programs
    ):
        return f"programs={programs!r}: a list of programs (paths, or names on PATH)"
    scheduler, args = kw.get("scheduler"), kw.get("scheduler_args")
    if scheduler is not None and not isinstance(scheduler, (str, os.PathLike)):
        return f"scheduler={scheduler!r}: a program (a path, or a name on PATH)"
    if args is not None and (
        not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args)
    ):
        return f"scheduler_args={args!r}: a list of strings"
    if args and scheduler is None:
        return "scheduler_args= without scheduler="
    if any(kw.get(n) is not None for n in _COUNTS[1:]):
        from ..vm.topology import Topology

        try:
            Topology.choose(
                kw.get("cpus"),
                sockets=kw.get("sockets"),
                cores=kw.get("cores"),
                threads=kw.get("threads"),
                numa_nodes=kw.get("numa_nodes"),
            )
        except ValueError as e:
            return str(e)
    return None


def scheduler_of(item: pytest.Item) -> str | None:
    """The scheduler a test's ``ktstr_vm`` marker names: the test needs a sched_ext kernel."""
    mark = item.get_closest_marker(VM_MARKER)
    scheduler = mark.kwargs.get("scheduler") if mark is not None else None
    return os.fspath(scheduler) if isinstance(scheduler, (str, os.PathLike)) else None

"""pytest adapter for guests: the ``kernel_vm`` fixtures, their options and the ``ktstr_vm`` marker.

``kernel_vm`` boots the kernel under test once per kernel per worker and shares the guest; a test
marked ``ktstr_vm(...)`` gets its own, booted for it and shut down after it (the marker turns
``kernel_vm`` into a function-scoped fixture for that test, through parametrize's scope);
``kernel_vm_factory`` boots guests on demand. The guest library (pytest_ktstr_vmlinux.vm, QEMU,
asyncio) is imported when a guest is first needed: a suite without guests pays for the options
and nothing else.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol

import pytest

from ..errors import KernelSpecError
from .settings import chosen_setting, ini_value
from .strict import skip_or_fail

if TYPE_CHECKING:
    from ..kernel.resolve import Kernel
    from ..kernel.spec import SpecSource
    from ..store.memory import Store
    from ..vm import GuestVM

VM_FIXTURE = "kernel_vm"
VM_MARKER = "ktstr_vm"
HELP_VM_MARKER = (
    "ktstr_vm(cpus=None, memory=None, cmdline='', files=None, timeout=None): give the test a"
    " kernel_vm guest of its own, booted with these settings (cmdline is appended)."
)
_MARKER_ARGS = ("cpus", "memory", "cmdline", "files", "timeout")
_SETTINGS_KEY = pytest.StashKey["VmSettings"]()


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


class GuestFactory(Protocol):
    """``kernel_vm_factory``: boots the test's kernel; unset arguments come from the options."""

    def __call__(
        self,
        *,
        cpus: int | None = None,
        memory: int | str | None = None,
        cmdline: str = "",
        files: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        timeout: float | None = None,
    ) -> GuestVM: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux")
    for setting in SETTINGS:
        group.addoption(
            setting.option, dest=setting.ini, metavar=setting.metavar, help=setting.help
        )
        parser.addini(setting.ini, help=setting.help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{VM_MARKER}{HELP_VM_MARKER[len(VM_MARKER) :]}")
    if config.option.help or config.option.version or not _vm_settings_given(config):
        return
    try:
        config.stash[_SETTINGS_KEY] = vm_settings(config)
    except KernelSpecError as e:
        raise pytest.UsageError(f"ktstr: {e}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marks = list(metafunc.definition.iter_markers(VM_MARKER))
    if not marks:
        return
    if VM_FIXTURE not in metafunc.fixturenames:
        if any(m.name == VM_MARKER for m in metafunc.definition.own_markers):
            pytest.fail(
                f"{metafunc.definition.nodeid}: the {VM_MARKER} marker gives {VM_FIXTURE} a guest"
                f" of its own, but the test does not request {VM_FIXTURE}",
                pytrace=False,
            )
        return
    own = _marker_arguments(marks[0], metafunc.definition.nodeid)
    metafunc.parametrize(VM_FIXTURE, [own], indirect=True, scope="function", ids=[VM_MARKER])


@pytest.fixture(scope="session")
def kernel_vm(
    request: pytest.FixtureRequest, kernel: Kernel, _ktstr_vm_guests: _Guests
) -> Iterator[GuestVM]:
    """The kernel under test booted in QEMU (``pytest_ktstr_vmlinux.vm.GuestVM``): ``run``,
    ``put``, ``get``, ``console``, ``memory``, ``qmp``. One guest per kernel per worker, shared
    by every test; a test marked ``ktstr_vm(...)`` gets one of its own."""
    own = getattr(request, "param", None)
    if own is None:
        yield _ktstr_vm_guests.shared(kernel)
        return
    vm = _ktstr_vm_guests.boot_or_fail(kernel, request.node.name, own)
    yield vm
    vm.shutdown()


@pytest.fixture
def kernel_vm_factory(
    request: pytest.FixtureRequest, kernel: Kernel, _ktstr_vm_guests: _Guests
) -> Iterator[GuestFactory]:
    """``boot(cpus=, memory=, cmdline=, files=, timeout=)``: a guest of the kernel under test
    for this test alone; every guest it made is shut down when the test ends. A guest that
    fails to boot raises ``GuestBootError`` (``GuestError``) in the test."""
    made: list[GuestVM] = []

    def boot(**settings: Any) -> GuestVM:
        vm = _ktstr_vm_guests.boot(kernel, request.node.name, **settings)
        made.append(vm)
        return vm

    yield boot
    for vm in made:
        vm.shutdown()


@pytest.fixture(scope="session")
def _ktstr_vm_guests(
    pytestconfig: pytest.Config, kernel_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Guests]:
    guests = _Guests(pytestconfig, kernel_store, tmp_path_factory)
    yield guests
    guests.close()


class _Guests:
    """This worker's guests: the shared one of each kernel, and those booted for one test."""

    def __init__(self, config: pytest.Config, store: Store, tmp: pytest.TempPathFactory) -> None:
        self.config = config
        self.store = store
        self.tmp = tmp
        self._shared: dict[str, GuestVM] = {}
        self._refused: dict[str, tuple[str, bool]] = {}

    def shared(self, kernel: Kernel) -> GuestVM:
        refused = self._refused.get(kernel.label)
        if refused is not None:
            _refuse(self.config, *refused)
        vm = self._shared.get(kernel.label)
        if vm is None:
            vm = self._shared[kernel.label] = self.boot_or_fail(kernel, "shared", {})
        return vm

    def boot_or_fail(self, kernel: Kernel, name: str, settings: dict[str, Any]) -> GuestVM:
        """``boot``, for a fixture: a guest that does not boot fails the test (a shared one,
        every test that uses it) with the error's message."""
        from ..vm import GuestError

        try:
            return self.boot(kernel, name, **settings)
        except (GuestError, ValueError) as e:
            refused = (f"ktstr: {e}", False)
        if name == "shared":
            self._refused[kernel.label] = refused
        _refuse(self.config, *refused)

    def boot(
        self,
        kernel: Kernel,
        name: str,
        *,
        cpus: int | None = None,
        memory: int | str | None = None,
        cmdline: str = "",
        files: Mapping[str, bytes | str | os.PathLike[str]] | None = None,
        timeout: float | None = None,
    ) -> GuestVM:
        """A guest of ``kernel``; without QEMU or busybox, a skip (a failure under
        --kernel-strict) naming the packages to install."""
        from ..vm import GuestUnavailableError, boot_guest

        settings = self.settings()
        try:
            return boot_guest(
                kernel,
                store=self.store,
                cpus=settings.cpus if cpus is None else cpus,
                memory=settings.memory if memory is None else _memory(memory, "memory="),
                cmdline=f"{settings.cmdline} {cmdline}".strip(),
                files=files,
                timeout=settings.timeout if timeout is None else timeout,
                accel=settings.accel,
                log_dir=self.tmp.mktemp(re.sub(r"[^\w.+-]", "_", f"vm-{kernel.label}-{name}")[:60]),
            )
        except GuestUnavailableError as e:
            message = f"ktstr: {e}"
        if name == "shared":
            self._refused[kernel.label] = (message, True)
        _refuse(self.config, message, True)

    def settings(self) -> VmSettings:
        found = self.config.stash.get(_SETTINGS_KEY, None)
        if found is None:
            found = self.config.stash[_SETTINGS_KEY] = vm_settings(self.config)
        return found

    def close(self) -> None:
        for vm in self._shared.values():
            vm.shutdown()
        self._shared.clear()


def _refuse(config: pytest.Config, message: str, unavailable: bool) -> NoReturn:
    """Skip (fail under --kernel-strict) on a host without QEMU or busybox; fail otherwise."""
    if unavailable:
        skip_or_fail(config, message)
    pytest.fail(message, pytrace=False)


def vm_settings(config: pytest.Config) -> VmSettings:
    """The guest settings, each option > environment > ini > default; KernelSpecError when one
    is not a valid value."""

    def chosen(setting: _Setting) -> tuple[str, SpecSource] | None:
        return chosen_setting(config, setting.ini, setting.env, setting.ini)

    defaults = VmSettings()
    cmdline = chosen(CMDLINE)
    return VmSettings(
        cpus=_validate_cpus(chosen(CPUS), defaults.cpus),
        memory=_validate_memory(chosen(MEMORY), defaults.memory),
        accel=_validate_accel(chosen(ACCEL), defaults.accel),
        timeout=_validate_timeout(chosen(TIMEOUT), defaults.timeout),
        cmdline=cmdline[0] if cmdline else defaults.cmdline,
    )


def _vm_settings_given(config: pytest.Config) -> bool:
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


def _validate_memory(chosen: tuple[str, SpecSource] | None, default: int) -> int:
    if chosen is None:
        return default
    raw, source = chosen
    try:
        return _memory(raw, "")
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


def _memory(value: int | str, what: str) -> int:
    """Bytes from ``512M``, ``1G`` or a number of bytes; a whole number of MiB."""
    from ..store.directory import parse_size

    size = value if isinstance(value, int) else parse_size(value)
    if size <= 0 or size % (1 << 20):
        raise ValueError(f"{what}{value!r}: guest memory is a positive whole number of MiB")
    return size


def _marker_arguments(mark: pytest.Mark, nodeid: str) -> dict[str, Any]:
    """The marker's keyword arguments, checked at collection like the ``ktstr`` marker's."""
    problem = None
    if mark.args:
        problem = "takes keyword arguments only"
    elif unknown := sorted(set(mark.kwargs) - set(_MARKER_ARGS)):
        problem = f"unknown argument {unknown[0]!r} (it takes {', '.join(_MARKER_ARGS)})"
    else:
        kw = mark.kwargs
        cpus, memory = kw.get("cpus"), kw.get("memory")
        if cpus is not None and (type(cpus) is not int or cpus < 1):
            problem = f"cpus={cpus!r}: a number of CPUs (1, 2, ...)"
        elif memory is not None:
            try:
                _memory(memory, "memory=")
            except (ValueError, TypeError) as e:
                problem = str(e)
        if not isinstance(kw.get("cmdline", ""), str):
            problem = f"cmdline={kw['cmdline']!r}: a string"
        if not isinstance(kw.get("files") or {}, Mapping):
            problem = f"files={kw['files']!r}: a mapping of guest path to bytes or host path"
    if problem is not None:
        pytest.fail(f"{nodeid}: {VM_MARKER} marker: {problem}", pytrace=False)
    return dict(mark.kwargs)

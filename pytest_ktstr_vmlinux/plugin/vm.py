"""pytest adapter for guests: the ``kernel_vm`` fixtures and the ``ktstr_vm`` marker.

``kernel_vm`` boots the kernel under test once per kernel per worker and shares the guest; a test
marked ``ktstr_vm(...)`` gets its own, booted for it and shut down after it (the marker turns
``kernel_vm`` into a function-scoped fixture for that test, through parametrize's scope);
``kernel_vm_factory`` boots guests on demand. The guest library (pytest_ktstr_vmlinux.vm, QEMU,
asyncio) is imported when a guest is first needed: a suite without guests pays for the options
and nothing else. Settings and marker arguments are validated in ``vmsettings.py``; a guest with a
sched_ext scheduler is watched after each test by ``scheduler.py``, registered with the first guest.

A kernel without a bootable image (the running kernel in a container, with nothing in /boot)
skips the tests that boot it when nobody named it, and fails them when someone did, as the kernel
fixtures do for a missing vmlinux. KVM found unusable is said once, in the terminal summary (the
workers' too, under xdist), rather than as a warning pointing into this module.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from ..errors import KernelSpecError
from .strict import skip_or_fail
from .vmsettings import (
    FACTORY_FIXTURE,
    HELP_VM_MARKER,
    MARKER_ARGS,
    SETTINGS,
    VM_FIXTURE,
    VM_MARKER,
    VmSettings,
    guest_arguments_problem,
    marker_arguments,
    memory_size,
    vm_settings,
    vm_settings_given,
)

if TYPE_CHECKING:
    from ..kernel.resolve import Kernel
    from ..store.api import Store
    from ..vm import GuestVM

__all__ = ["VmSettings", "vm_settings"]

WATCH_PLUGIN = "ktstr-vmlinux-scheduler-watch"
TCG_FALLBACKS = "ktstr_tcg_fallbacks"  # a worker's, in its workeroutput
_SETTINGS_KEY = pytest.StashKey["VmSettings"]()
_WORKERS_TCG_KEY = pytest.StashKey[dict[str, None]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ktstr-vmlinux")
    for setting in SETTINGS:
        group.addoption(
            setting.option, dest=setting.ini, metavar=setting.metavar, help=setting.help
        )
        parser.addini(setting.ini, help=setting.help, default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{VM_MARKER}{HELP_VM_MARKER[len(VM_MARKER) :]}")
    if config.option.help or config.option.version or not vm_settings_given(config):
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
    own = marker_arguments(marks[0], metafunc.definition.nodeid)
    metafunc.parametrize(VM_FIXTURE, [own], indirect=True, scope="function", ids=[VM_MARKER])


class GuestFactory:
    """What the ``kernel_vm_factory`` fixture gives: ``boot(...)`` (or calling it) boots the
    test's kernel; unset arguments come from the options. Every guest it made is shut down
    when the test ends::

        def test_two_sizes(kernel_vm_factory):
            small = kernel_vm_factory(cpus=1, memory="512M")
            big = kernel_vm_factory.boot(cpus=4, numa_nodes=2)
            assert big.run("nproc").stdout.strip() == b"4"
    """

    def __init__(self, guests: _Guests, kernel: Kernel, name: str) -> None:
        self._guests, self._kernel, self._name = guests, kernel, name
        #: The guests it made, in order.
        self.guests: list[GuestVM] = []

    def boot(self, **arguments: Any) -> GuestVM:
        """A new guest: cpus=, memory=, cmdline=, files=, timeout=, programs=, scheduler=,
        scheduler_args=, sockets=, cores=, threads=, numa_nodes= (as ``boot_guest`` takes
        them). A guest that fails to boot raises GuestBootError."""
        unknown = sorted(set(arguments) - set(MARKER_ARGS))
        if unknown:
            raise TypeError(f"boot() got an unexpected argument {unknown[0]!r}")
        problem = guest_arguments_problem(arguments)
        if problem is not None:
            raise ValueError(f"{FACTORY_FIXTURE}.boot: {problem}")
        vm = self._guests.boot(self._kernel, self._name, **arguments)
        self.guests.append(vm)
        return vm

    __call__ = boot


@pytest.fixture(scope="session")
def kernel_vm(
    request: pytest.FixtureRequest, kernel: Kernel, _ktstr_vm_guests: _Guests
) -> Iterator[GuestVM]:
    """The kernel under test booted in QEMU (``pytest_ktstr_vmlinux.GuestVM``): ``run``,
    ``put``, ``get``, ``console``, ``memory``, ``qmp``. One guest per kernel per worker, shared
    by every test; a test marked ``ktstr_vm(...)`` gets one of its own."""
    own = getattr(request, "param", None)
    if own is None:
        yield _ktstr_vm_guests.shared(kernel)
        return
    if own.get("scheduler") is not None:
        _ktstr_vm_guests.require_sched_ext(kernel, f"scheduler={own['scheduler']!r}")
    vm = _ktstr_vm_guests.boot_or_fail(kernel, request.node.name, own)
    yield vm
    vm.shutdown()


@pytest.fixture
def kernel_vm_factory(
    request: pytest.FixtureRequest, kernel: Kernel, _ktstr_vm_guests: _Guests
) -> Iterator[GuestFactory]:
    """``boot(cpus=, memory=, cmdline=, files=, timeout=, programs=, scheduler=, ...)``, or
    ``kernel_vm_factory(...)``: a guest of the kernel under test for this test alone; every
    guest it made is shut down when the test ends. A guest that fails to boot raises
    ``GuestBootError`` (``GuestError``) in the test."""
    factory = GuestFactory(_ktstr_vm_guests, kernel, request.node.name)
    yield factory
    for vm in factory.guests:
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
        if not config.pluginmanager.has_plugin(WATCH_PLUGIN):
            from .scheduler import SchedulerWatch

            config.pluginmanager.register(SchedulerWatch(), WATCH_PLUGIN)
        from .scheduler import SHARED_GUESTS

        self._shared_guests = SHARED_GUESTS

    def shared(self, kernel: Kernel) -> GuestVM:
        refused = self._refused.get(kernel.label)
        if refused is not None:
            _refuse(self.config, *refused)
        vm = self._shared.get(kernel.label)
        if vm is None:
            vm = self._shared[kernel.label] = self.boot_or_fail(kernel, "shared", {})
            self._shared_guests.add(vm)
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
        programs: Sequence[str | os.PathLike[str]] | None = None,
        scheduler: str | os.PathLike[str] | None = None,
        scheduler_args: Sequence[str] | None = None,
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        numa_nodes: int | None = None,
    ) -> GuestVM:
        """A guest of ``kernel``; without QEMU or busybox, a skip (a failure under
        --kernel-strict) naming the packages to install; with a scheduler on a kernel without
        sched_ext, a skip naming CONFIG_SCHED_CLASS_EXT, before booting."""
        from ..vm import GuestUnavailableError, GuestWarning, boot_guest

        if kernel.image is None:
            self._no_image(kernel, name)
        if scheduler is not None:
            self.require_sched_ext(kernel, f"scheduler={os.fspath(scheduler)!r}")
        settings = self.settings()
        topology = (sockets, cores, threads, numa_nodes)
        if cpus is None and all(n is None for n in topology):
            cpus = settings.cpus  # the option's count, unless the topology says how many
        log_dir = self.tmp.mktemp(re.sub(r"[^\w.+-]", "_", f"vm-{kernel.label}-{name}")[:60])
        try:
            with warnings.catch_warnings():
                # Said once in the terminal summary instead (pytest_terminal_summary).
                warnings.simplefilter("ignore", GuestWarning)
                return boot_guest(
                    kernel,
                    store=self.store,
                    cpus=cpus,
                    memory=settings.memory if memory is None else memory_size(memory, "memory="),
                    cmdline=f"{settings.cmdline} {cmdline}".strip(),
                    files=files,
                    timeout=settings.timeout if timeout is None else timeout,
                    accel=settings.accel,
                    log_dir=log_dir,
                    programs=programs or (),
                    scheduler=scheduler,
                    scheduler_args=scheduler_args or (),
                    sockets=sockets,
                    cores=cores,
                    threads=threads,
                    numa_nodes=numa_nodes,
                )
        except GuestUnavailableError as e:
            message = f"ktstr: {e}"
        if name == "shared":
            self._refused[kernel.label] = (message, True)
        _refuse(self.config, message, True)

    def _no_image(self, kernel: Kernel, name: str) -> NoReturn:
        """No guest of a kernel without an image: a skip for the kernel nobody named (the
        running one), a failure for one the user named."""
        refused = (f"ktstr: {kernel.missing_image_message()}", not kernel.spec.named_by_user)
        if name == "shared":
            self._refused[kernel.label] = refused
        _refuse(self.config, *refused)

    def require_sched_ext(self, kernel: Kernel, why: str) -> None:
        """Skip (fail under --kernel-strict) on a kernel without CONFIG_SCHED_CLASS_EXT, as a
        ``ktstr(config=["SCHED_CLASS_EXT"])`` requirement does, naming ``why`` it is needed."""
        from ..kernel.kernelset import kernel_name
        from ..kernel.requirements import check
        from .checks import sched_ext_requirement
        from .run import RUN_KEY

        run = self.config.stash[RUN_KEY]
        verdict = check([sched_ext_requirement()], run.artifacts(kernel))
        if not verdict.ok:
            skip_or_fail(self.config, f"ktstr: {verdict.reason(kernel_name(kernel))} ({why})")

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
        # At the test's own line, not this module's, even from a kernel_vm_factory call.
        skip_or_fail(config, message, at_test=True)
    pytest.fail(message, pytrace=False)


def _tcg_fallbacks() -> list[str]:
    """Why this process's guests run under TCG; nothing to say (and nothing imported) in a run
    that booted no guest."""
    accel = sys.modules.get("pytest_ktstr_vmlinux.vm.accel")
    return accel.tcg_fallbacks() if accel is not None else []


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[TCG_FALLBACKS] = _tcg_fallbacks()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller: what each worker found about KVM."""
    found = getattr(node, "workeroutput", {}).get(TCG_FALLBACKS)
    if isinstance(found, list):
        seen = node.config.stash.setdefault(_WORKERS_TCG_KEY, {})
        seen.update(dict.fromkeys(str(line) for line in found))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """KVM unusable, so guests ran under TCG: one line per reason, from here and every worker."""
    lines = dict.fromkeys(_tcg_fallbacks())
    workers = config.stash.get(_WORKERS_TCG_KEY, None)
    if workers:
        lines.update(workers)
    for line in lines:
        terminalreporter.write_line(line)

"""The plugin's settings read from a pytest config: kernels, sysroot and store.

Every setting follows one precedence rule: command-line option > environment > ini > default.
Relative paths from the command line or the environment are taken from the invocation
directory; relative paths from an ini file are taken from that file's directory.

Importing this module costs next to nothing: a run that uses no kernel must not pay for the
library. The modules that resolve kernels and open stores are imported by the functions that
need them (``resolve_kernels``, ``open_config_store``), when the plugin first needs a kernel.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..errors import KernelSpecError

if TYPE_CHECKING:
    from ..kernel.fetch.progress import Progress
    from ..kernel.kernelset import KernelItem
    from ..kernel.resolve import Kernel
    from ..kernel.spec import SpecSource
    from ..store.api import Store

ENV_KERNEL = "KTSTR_KERNEL"
ENV_KERNEL_LIST = "KTSTR_KERNEL_LIST"
ENV_SYSROOT = "KTSTR_KERNEL_SYSROOT"
INI_KERNEL = "ktstr_kernel"
INI_SYSROOT = "ktstr_kernel_sysroot"
INI_CACHE_DIR = "ktstr_cache_dir"
INI_CACHE_MAX_SIZE = "ktstr_cache_max_size"
INI_LOCK_TIMEOUT = "ktstr_lock_timeout"
INI_OFFLINE = "ktstr_kernel_offline"
# The xdist controller hands its workers the trees of the kernels it fetched (spec -> tree).
WORKER_FETCHED = "ktstr_fetched"


def kernels_named(config: pytest.Config) -> bool:
    """Whether the run names its kernel (a kernel, a vmlinux or a sysroot, from the command
    line, the environment or the ini file) or asks for the store to be cleared. Such a run is
    resolved when it is configured, so a mistake is a usage error whatever the tests; a run that
    names nothing tests the running kernel, resolved only when a test needs it."""
    if config.getoption("ktstr_kernel_sysroot") or config.getoption("ktstr_vmlinux"):
        return True
    if config.getoption("ktstr_cache_clear"):
        return True
    if any(v.strip() for v in config.getoption("ktstr_kernel") or ()):
        return True
    if any(os.environ.get(name, "").strip() for name in (ENV_KERNEL_LIST, ENV_KERNEL, ENV_SYSROOT)):
        return True
    return any((ini_value(config, name) or "").strip() for name in (INI_KERNEL, INI_SYSROOT))


def resolve_kernels(
    config: pytest.Config, store: Store, progress: Progress | None = None
) -> list[Kernel]:
    """Every kernel of the run, labelled, in the order given; KernelSpecError for bad input.
    ``progress`` hears what fetching a distro kernel does."""
    from ..kernel.fetch.fetch import FetchOptions
    from ..kernel.kernelset import assign_labels
    from ..kernel.resolve import resolve_kernel
    from ..kernel.spec import SpecKind, SpecSource, check_sysroot, parse_kernel_spec

    items, source = _kernel_items(config)
    invocation = config.invocation_params.dir
    base = _ini_base(config) if source is SpecSource.INI else invocation
    vmlinux = config.getoption("ktstr_vmlinux")
    if vmlinux and len(items) > 1:
        raise KernelSpecError(
            f"--vmlinux {vmlinux} names one kernel's vmlinux, but {len(items)} kernels are"
            " given; pass their images or build trees and let each find its own"
        )
    sysroot = _sysroot(config, invocation)
    fetch = FetchOptions(offline=kernel_offline(config), pinned=_pinned(config))
    if progress is not None:
        fetch = dataclasses.replace(fetch, progress=progress)
    kernels = []
    for item in items:
        spec = parse_kernel_spec(item.spec, source=source, base=base)
        own = check_sysroot(item.sysroot, source, base) if item.sysroot is not None else None
        if own is not None and spec.kind is SpecKind.FETCH:
            raise KernelSpecError(
                f"kernel {item.spec}@{item.sysroot} (from {source.value}): a fetched kernel has"
                f" its own root in the kernel cache; drop @{item.sysroot}"
            )
        kernel = resolve_kernel(
            spec,
            vmlinux=vmlinux,
            sysroot=own or sysroot,
            base=invocation,
            store=store,
            verify=not config.getoption("ktstr_no_verify"),
            allow_extracted=config.getoption("ktstr_allow_extracted"),
            fetch=fetch,
        )
        kernels.append(kernel)
    labels = assign_labels(items, kernels)
    return [dataclasses.replace(k, label=label) for k, label in zip(kernels, labels, strict=True)]


def kernel_offline(config: pytest.Config) -> bool:
    """--kernel-offline > $KTSTR_KERNEL_OFFLINE > ini ktstr_kernel_offline > online."""
    from ..kernel.fetch.fetch import ENV_OFFLINE, parse_offline
    from ..kernel.spec import SpecSource

    if config.getoption("ktstr_kernel_offline"):
        return True
    setting = chosen_setting(config, None, ENV_OFFLINE, INI_OFFLINE)
    if setting is None:
        return False
    raw, source = setting
    origin = f"${ENV_OFFLINE}" if source is SpecSource.ENV else f"ini {INI_OFFLINE}"
    return parse_offline(raw, origin)


def _pinned(config: pytest.Config) -> dict[str, str]:
    """On an xdist worker, the controller's fetched kernels: spec -> tree."""
    workerinput = getattr(config, "workerinput", None)
    given = workerinput.get(WORKER_FETCHED) if isinstance(workerinput, dict) else None
    if not isinstance(given, dict):
        return {}
    return {str(k): str(v) for k, v in given.items()}


def _kernel_items(config: pytest.Config) -> tuple[list[KernelItem], SpecSource]:
    """--kernel (repeatable) > $KTSTR_KERNEL_LIST > $KTSTR_KERNEL > ini ktstr_kernel > running."""
    from ..kernel.kernelset import KernelItem, parse_kernel_item, split_kernel_list
    from ..kernel.spec import RUNNING, SpecSource

    invocation = config.invocation_params.dir
    options = [v for v in config.getoption("ktstr_kernel") or () if v.strip()]
    if options:
        items = [parse_kernel_item(v, "--kernel", invocation) for v in options]
        return items, SpecSource.OPTION
    listed = split_kernel_list(os.environ.get(ENV_KERNEL_LIST, ""))
    if listed:
        items = [parse_kernel_item(v, f"${ENV_KERNEL_LIST}", invocation) for v in listed]
        return items, SpecSource.ENV
    single = os.environ.get(ENV_KERNEL, "").strip()
    if single:
        return [parse_kernel_item(single, f"${ENV_KERNEL}", invocation)], SpecSource.ENV
    ini = split_kernel_list(ini_value(config, INI_KERNEL) or "")
    if ini:
        origin = f"ini {INI_KERNEL}"
        return [parse_kernel_item(v, origin, _ini_base(config)) for v in ini], SpecSource.INI
    return [KernelItem(None, RUNNING)], SpecSource.DEFAULT


def _sysroot(config: pytest.Config, invocation: Path) -> Path | None:
    from ..kernel.spec import SpecSource, check_sysroot

    setting = chosen_setting(config, "ktstr_kernel_sysroot", ENV_SYSROOT, INI_SYSROOT)
    if setting is None:
        return None
    raw, source = setting
    base = _ini_base(config) if source is SpecSource.INI else invocation
    return check_sysroot(raw, source, base)


def open_config_store(
    config: pytest.Config, on_lock_wait: Callable[[str], None] | None = None
) -> Store:
    """The run's artifact store; cleared first with --kernel-cache-clear (by the controller).
    ``on_lock_wait`` is told, once, of a wait for the store's lock that lasts."""
    from ..kernel.spec import SpecSource
    from ..store.api import InsecureStoreError, StoreWarning
    from ..store.choose import ENV_CACHE_DIR, open_store
    from ..store.disk import ArtifactStore
    from ..store.memory import MemoryStore

    if config.getoption("ktstr_no_cache"):
        return MemoryStore()
    invocation = config.invocation_params.dir
    setting = chosen_setting(config, "ktstr_cache_dir", ENV_CACHE_DIR, INI_CACHE_DIR)
    directory = None
    if setting is not None:
        raw, source = setting
        base = _ini_base(config) if source is SpecSource.INI else invocation
        directory = base / os.path.expanduser(raw)
    try:
        store, problem = open_store(
            directory,
            max_size=_validate_max_size(config),
            lock_timeout=_validate_lock_timeout(config),
            on_lock_wait=on_lock_wait,
        )
    except InsecureStoreError as e:
        raise KernelSpecError(str(e)) from None
    worker = is_xdist_worker(config)
    if problem is not None and not worker:
        # Workers fall back the same way; the controller says so once for the run.
        config.issue_config_time_warning(StoreWarning(f"ktstr: {problem}"), stacklevel=2)
    if config.getoption("ktstr_cache_clear") and not worker and isinstance(store, ArtifactStore):
        store.clear()
    return store


def _validate_max_size(config: pytest.Config) -> int:
    from ..store.choose import ENV_CACHE_MAX_SIZE
    from ..store.directory import DEFAULT_MAX_SIZE, parse_size

    setting = chosen_setting(config, None, ENV_CACHE_MAX_SIZE, INI_CACHE_MAX_SIZE)
    if setting is None:
        return DEFAULT_MAX_SIZE
    raw, source = setting
    try:
        return parse_size(raw)
    except ValueError as e:
        raise KernelSpecError(f"kernel cache max size (from {source.value}): {e}") from None


def _validate_lock_timeout(config: pytest.Config) -> float:
    from ..store.choose import ENV_LOCK_TIMEOUT
    from ..store.disk import DEFAULT_LOCK_TIMEOUT
    from ..store.lock import parse_lock_timeout

    setting = chosen_setting(config, "ktstr_lock_timeout", ENV_LOCK_TIMEOUT, INI_LOCK_TIMEOUT)
    if setting is None:
        return DEFAULT_LOCK_TIMEOUT
    raw, source = setting
    try:
        return parse_lock_timeout(raw)
    except ValueError as e:
        raise KernelSpecError(f"kernel cache lock timeout (from {source.value}): {e}") from None


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _ini_base(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath else config.rootpath


def chosen_setting(
    config: pytest.Config, option: str | None, env: str, ini: str
) -> tuple[str, SpecSource] | None:
    """One setting's raw value and where it came from: option (its dest; None for a setting with
    no option) > environment > ini; None when none is given. Shared with ``vm.py``."""
    from ..kernel.spec import SpecSource, select_setting

    return select_setting(
        [
            (SpecSource.OPTION, config.getoption(option) if option is not None else None),
            (SpecSource.ENV, os.environ.get(env)),
            (SpecSource.INI, ini_value(config, ini)),
        ]
    )


def ini_value(config: pytest.Config, name: str) -> str | None:
    """An ini key's value, None for a key registered as other than a string (shared with
    ``vm.py``)."""
    value = config.getini(name)
    return value if isinstance(value, str) else None

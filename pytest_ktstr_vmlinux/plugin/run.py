"""The run's lazy state: store, kernels and per-kernel artifacts, each built on first use, so a
suite whose tests use no kernel imports none of the library (only pytest and the standard library
at module level here)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from ..errors import KernelArtifactError
from .results import add_suite_property
from .settings import is_xdist_worker, kernels_named

if TYPE_CHECKING:
    from ..kernel.artifacts import KernelArtifacts
    from ..kernel.fetch.progress import Progress
    from ..kernel.resolve import Kernel
    from ..store.api import Store
    from ..store.bytescache import VmlinuxBytesCache

RUN_KEY = pytest.StashKey["KernelRun"]()


class KernelRun:
    """The run's store, kernels and per-kernel artifacts, each built on first use.

    A run that names its kernel (``settings.kernels_named``), and the xdist controller, resolve
    it when pytest is configured, so a bad spec is a usage error whatever the tests and before any
    worker starts. A run that names nothing tests the running kernel, resolved only once
    something needs it: a kernel test collected, a kernel fixture, the report header. Until then
    none of the library is imported, and a suite without kernel tests never imports it.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.named = kernels_named(config)
        self.worker = is_xdist_worker(config)
        # What xdist workers' stores did, added up on the controller.
        self.workers_built = 0
        self.workers_reused = 0
        self.workers_reported = False
        self._store: Store | None = None
        self._kernels: dict[str, Kernel] | None = None
        self._artifacts: dict[str, KernelArtifacts] = {}
        self._bytes: VmlinuxBytesCache | None = None
        self._session_started = False

    @property
    def store_opened(self) -> bool:
        return self._store is not None

    def store(self) -> Store:
        if self._store is None:
            from .settings import open_config_store

            try:
                self._store = open_config_store(self.config, live_notice(self.config))
            except KernelArtifactError as e:  # a bad setting, an unusable store, a held lock
                raise pytest.UsageError(f"ktstr: {e}") from None
        return self._store

    def kernels(self) -> dict[str, Kernel]:
        """Label -> kernel, in the order given; pytest.UsageError for bad settings."""
        if self._kernels is None:
            from .settings import resolve_kernels

            store = self.store()
            try:
                kernels = resolve_kernels(self.config, store, live_progress(self.config))
            except KernelArtifactError as e:  # a bad spec, or the store's lock held too long
                raise pytest.UsageError(f"ktstr: {e}") from None
            self._kernels = {k.label: k for k in kernels}
            if self._session_started:
                self._add_suite_property()
        return self._kernels

    def kernel_list(self) -> list[Kernel]:
        return list(self.kernels().values())

    def several(self) -> list[str] | None:
        """The labels when the run has more than one kernel, else None. A run that names no
        kernel has one, the running kernel: that needs no resolving."""
        if not self.named and self._kernels is None:
            return None
        labels = list(self.kernels())
        return labels if len(labels) > 1 else None

    def artifacts(self, kernel: Kernel) -> KernelArtifacts:
        found = self._artifacts.get(kernel.label)
        if found is None:
            from ..kernel.artifacts import KernelArtifacts

            found = self._artifacts[kernel.label] = KernelArtifacts(kernel)
        return found

    def bytes_cache(self) -> VmlinuxBytesCache:
        if self._bytes is None:
            from ..store.bytescache import VmlinuxBytesCache
            from ..store.disk import ArtifactStore
            from ..store.snapshot import SnapshotLoader

            store = self.store()
            loader = SnapshotLoader(store) if isinstance(store, ArtifactStore) else None
            self._bytes = VmlinuxBytesCache(loader=loader)
        return self._bytes

    def session_started(self) -> None:
        self._session_started = True
        if self._kernels is not None:
            self._add_suite_property()

    def _add_suite_property(self) -> None:
        if not self.worker and self._kernels is not None:
            add_suite_property(self.config, list(self._kernels.values()))


def kernel_run(config: pytest.Config) -> KernelRun:
    """The run's state, made by pytest_configure."""
    return config.stash[RUN_KEY]


def live_notice(config: pytest.Config) -> Callable[[str], None]:
    """Print to the terminal now, past pytest's capture: a wait is news while it lasts."""

    def notice(message: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            print(f"ktstr: {message}", file=sys.stderr, flush=True)

    return notice


def live_progress(config: pytest.Config) -> Progress | None:
    """What fetching a kernel says, on the terminal past pytest's capture while it happens; an
    xdist worker says nothing (its controller fetched, and it is handed the result)."""
    if is_xdist_worker(config):
        return None
    from ..kernel.fetch.progress import TerminalProgress

    def write(text: str) -> None:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            sys.stderr.write(text)
            sys.stderr.flush()

    return TerminalProgress(write, tty=sys.stderr.isatty())

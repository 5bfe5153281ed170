"""The ``ktstr`` marker and ``ktstr_test`` that spells it (``kernel/requirements.py`` checks it).

Importable without pytest being imported: the library side of the package stays pytest-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast, overload

F = TypeVar("F", bound=Callable[..., object])

MARKER = "ktstr"
HELP_MARKER = (
    "ktstr(min_version=None, max_version=None, config=(), symbols=(), btf=(), arch=None): run"
    " only on kernels that meet these requirements; on others skip (fail with --kernel-strict)."
    " One that cannot be checked on a kernel you named fails."
)


@overload
def ktstr_test(func: F, /) -> F: ...


@overload
def ktstr_test(**requirements: object) -> Callable[[F], F]: ...


def ktstr_test(func: F | None = None, /, **requirements: object) -> F | Callable[[F], F]:
    """``@ktstr_test(config=["SCHED_CLASS_EXT"])``: the ``ktstr`` marker as a decorator; it stacks
    with other markers, and a bare ``@ktstr_test`` marks a test with no requirements. Arguments
    are checked at collection, where a mistake is reported against the test::

        @ktstr_test(min_version="6.12", config=["SCHED_CLASS_EXT"], btf=["struct rq.scx"])
        def test_scx(kernel_vm): ...

    The requirements: ``min_version`` and ``max_version`` (a release; ``max_version="6.5"``
    takes in all of 6.5.y), ``config`` (``NAME``, ``NAME=value`` or ``!NAME``, with or without
    ``CONFIG_``), ``symbols`` (names in the kernel's symbols), ``btf`` (a type, or
    ``TYPE.member``) and ``arch`` (one or several). On a kernel that does not meet them the
    test skips (fails with ``--kernel-strict``)."""
    import pytest

    mark = pytest.mark.ktstr(**requirements)
    if func is None:
        return cast("Callable[[F], F]", mark)
    if not callable(func) or requirements:
        raise TypeError(f"ktstr_test takes keyword arguments only, like the marker; got {func!r}")
    return cast(F, mark(func))

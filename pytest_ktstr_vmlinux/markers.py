"""The ``ktstr`` marker and ``ktstr_test``, its decorator spelling (requirements.py checks it).

Importable without pytest being imported: the library side of the package stays pytest-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MARKER = "ktstr"
HELP_MARKER = (
    "ktstr(min_version=None, max_version=None, config=(), symbols=(), btf=(), arch=None): run"
    " only on kernels that meet these requirements; on others skip (fail with --kernel-strict)."
)


def ktstr_test(*func: Callable[..., object], **requirements: object) -> Any:
    """``@ktstr_test(config=["SCHED_CLASS_EXT"])``: the ``ktstr`` marker as a decorator; it stacks
    with other markers, and a bare ``@ktstr_test`` marks a test with no requirements. Arguments
    are checked at collection, where a mistake is reported against the test."""
    import pytest

    mark = pytest.mark.ktstr(**requirements)
    if len(func) == 1 and callable(func[0]) and not requirements:
        return mark(func[0])
    if func:
        raise TypeError("ktstr_test takes keyword arguments only, like the ktstr marker")
    return mark

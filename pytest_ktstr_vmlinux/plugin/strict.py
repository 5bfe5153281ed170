"""Skip, or fail under --kernel-strict: the one policy for a kernel, artifact or guest that a
test needs and the host lacks."""

from __future__ import annotations

from typing import NoReturn

import pytest


def skip_or_fail(config: pytest.Config, message: str, *, at_test: bool = False) -> NoReturn:
    """Skip, or fail under --kernel-strict. ``at_test``: report the skip at the test rather
    than here, as pytest's own skip markers do, through pytest's private keyword; a pytest
    without it reports the skip here instead."""
    if config.getoption("ktstr_strict"):
        pytest.fail(f"{message} (--kernel-strict)", pytrace=False)
    if at_test:
        try:
            skipped = pytest.skip.Exception(message, _use_item_location=True)
        except TypeError:
            pass
        else:
            raise skipped
    pytest.skip(message)

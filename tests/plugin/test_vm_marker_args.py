"""The ktstr_vm marker's arguments for programs, schedulers and topology are checked at
collection, like the rest of its arguments: a bad one is a collection error naming the test."""

from __future__ import annotations

import pytest

from tests.helpers.runs import run


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("ktstr_vm(programs='stress-ng')", "programs='stress-ng': a list of programs"),
        ("ktstr_vm(programs=[1])", "programs=[1]: a list of programs"),
        ("ktstr_vm(scheduler=3)", "scheduler=3: a program (a path, or a name on PATH)"),
        ("ktstr_vm(scheduler='scx_simple', scheduler_args='-f')", "scheduler_args='-f': a list"),
        ("ktstr_vm(scheduler_args=['-f'])", "scheduler_args= without scheduler="),
        ("ktstr_vm(sockets=0)", "sockets=0: a whole number (1, 2, ...)"),
        ("ktstr_vm(threads=1.5)", "threads=1.5: a whole number (1, 2, ...)"),
        ("ktstr_vm(sockets=3, numa_nodes=2)", "numa_nodes=2 does not divide sockets=3"),
        ("ktstr_vm(cpus=6, sockets=2, cores=2)", "cpus=6 but sockets=2 x cores=2 x threads=1"),
        ("ktstr_vm(numa=2)", "unknown argument 'numa' (it takes cpus, memory, cmdline, files,"),
    ],
)
def test_bad_marker_arguments_are_collection_errors(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        test_vm=f"import pytest\n\n@pytest.mark.{marker}\ndef test_x(kernel_vm):\n    pass\n"
    )
    result = run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # errors during collection
    assert f"test_vm.py::test_x: ktstr_vm marker: {message}" in result.stdout.str()


def test_good_ones_collect(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_vm="import pytest\n\n"
        "@pytest.mark.ktstr_vm(programs=['stress-ng'], scheduler='scx_simple',"
        " scheduler_args=['-f'], sockets=2, cores=2, threads=2, numa_nodes=2)\n"
        "def test_x(kernel_vm):\n    pass\n"
    )
    result = run(pytester, "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()

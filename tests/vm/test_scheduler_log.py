"""Reading sched_ext's exit out of the kernel log (vm/scheduler.py), on lines in the formats
kernel/sched/ext/ext.c prints (scx_log_sched_disable(): pr_err for an error exit, then the
message; pr_info for an orderly one), as dmesg and the console show them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.vm.scheduler import Exit, exit_of, sched_ext_lines

LOG = """\
[    3.435932] sched_ext: BPF scheduler "simple" enabled
[    6.979118] sched_ext: BPF scheduler "simple" disabled (unregistered from user space)
[    8.100000] some other line
[    9.000001] sched_ext: BPF scheduler "qmap" enabled
[   20.123456] sched_ext: BPF scheduler "qmap" disabled (scx_bpf_error)
[   20.123470] sched_ext: qmap: test triggering error
[   20.123480]   scx_bpf_error_bstr+0x7d/0xa0
[   31.000000] sched_ext: BPF scheduler "qmap" enabled
[   40.500000] sched_ext: BPF scheduler "qmap" disabled (runnable task stall)
[   40.500010] sched_ext: qmap: kworker/1:2[45] failed to run for 6.020s
"""


def test_the_kernels_lines_without_timestamps() -> None:
    lines = sched_ext_lines(LOG)
    assert lines[0] == 'sched_ext: BPF scheduler "simple" enabled'
    assert all(line.startswith("sched_ext: ") for line in lines)
    assert len(lines) == 8


def test_the_last_exit_of_a_scheduler_is_its_kind_and_message() -> None:
    lines = sched_ext_lines(LOG)
    assert exit_of(lines, "qmap") == Exit(
        "runnable task stall", "kworker/1:2[45] failed to run for 6.020s"
    )
    assert exit_of(lines[:5], "qmap") == Exit("scx_bpf_error", "test triggering error")
    # an orderly exit has no message line: the reason is the kind
    assert exit_of(lines, "simple") == Exit(
        "unregistered from user space", "unregistered from user space"
    )
    assert exit_of(lines, "central") is None
    assert exit_of(lines, None) == exit_of(lines, "qmap")  # any scheduler: the last exit


def test_an_earlier_run_of_the_same_scheduler_is_not_this_ones_exit() -> None:
    """enable_seq 3 is the third enable: qmap's second run, whose exit is the stall; had that
    run not exited yet, its exit is None, not the first run's scx_bpf_error."""
    lines = sched_ext_lines(LOG)
    assert exit_of(lines, "qmap", enable_seq=3).kind == "runnable task stall"  # type: ignore[union-attr]
    assert exit_of(lines[:-2], "qmap", enable_seq=3) is None
    assert exit_of(lines[:-2], "qmap", enable_seq=2) == Exit(
        "scx_bpf_error", "test triggering error"
    )
    assert exit_of(lines, "qmap", enable_seq=9) == exit_of(lines, "qmap")  # the log lost some


def test_a_sub_scheduler_and_a_console_with_carriage_returns() -> None:
    console = (
        '[ 1.0] sched_ext: BPF sub-scheduler "child" disabled (runtime error)\r\n'
        "[ 1.0] sched_ext: child: RCU CPU stall detected!\r\n"
    ).replace("\r\n", "\n")
    assert exit_of(sched_ext_lines(console), "child") == Exit(
        "runtime error", "RCU CPU stall detected!"
    )


@given(st.text())
def test_any_text_reads_without_error(text: str) -> None:
    lines = sched_ext_lines(text)
    found = exit_of(lines, None)
    assert found is None or isinstance(found.kind, str)

"""Samples as a table, CSV and PNG, without a guest: the values are whatever the rows say."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.live import LiveKernelError, Samples

ROWS = [(0.0, 0, 1, 10), (0.0, 1, 0, 20), (0.01, 0, 2, 11), (0.01, 1, 0, 20)]


def test_columns_and_csv() -> None:
    samples = Samples(("nr_running", "clock"), list(ROWS))
    assert samples.column("clock", 1) == [20, 20]
    assert samples.column("cpu") == [0, 1, 0, 1]
    assert list(csv.reader(io.StringIO(samples.to_csv()))) == [
        ["time", "cpu", "nr_running", "clock"],
        *[[str(v) for v in row] for row in ROWS],
    ]
    with pytest.raises(LiveKernelError, match=r"no column 'clk'.*time, cpu, nr_running, clock"):
        samples.column("clk")


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    out = tmp_path / "rq.png"
    Samples(("nr_running", "clock"), list(ROWS)).plot(out, title="two fields")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = tmp_path / "one.png"
    Samples(("nr_running",), [r[:3] for r in ROWS]).plot(one)
    assert imread(out).shape[0] > imread(one).shape[0]  # a panel per field, stacked


def test_plot_without_matplotlib_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as on a host without it
        "from pytest_ktstr_vmlinux.live import Samples\n"
        f"Samples(('x',), [(0.0, 0, 1)]).plot({str(tmp_path / 'x.png')!r})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "needs matplotlib: pip install 'pytest-ktstr-vmlinux[plot]'" in out.stderr
    assert not (tmp_path / "x.png").exists()

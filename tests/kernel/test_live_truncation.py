"""Reading a kernel file while another process truncates and rewrites it (issue 11, item 7).

A mapping of a file that shrinks under it kills the reader with SIGBUS. Each test runs a reader
process that loops over one read (the config search, ``info``, the symbol build, the image
identity) while a writer process truncates the file and writes it back, again and again. Before
the fix every one of them died of a bus error within a few cycles. The reader must live: each
read gives the right answer for some whole version of the file, or a clean KernelArtifactError.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.fakes import banner_for, build_id_for, bzimage, kernel_elf
from tests.helpers.symtab import Sym, build_elf

TIMEOUT = 300
# Rewrites of the file while the reader reads: far more than the bug needed to show.
CYCLES = 150
# Reads done at least, even if the writer is quicker.
MIN_READS = 20
CONFIG = "CONFIG_IKCONFIG=y\nCONFIG_HZ=250\n# CONFIG_SWAP is not set\n"
SYMBOLS = 100_000

WRITER = r"""
import sys
path, cycles, done = sys.argv[1], int(sys.argv[2]), sys.argv[3]
content = open(path, "rb").read()
step = 1 << 20
with open(path, "r+b", buffering=0) as f:
    for _ in range(cycles):
        f.truncate(0)
        # Written back twice: growing from nothing, then over itself at full size, so that
        # readers find it whole about half the time, and cut short the other half.
        for _ in range(2):
            f.seek(0)
            for at in range(0, len(content), step):
                f.write(content[at : at + step])
open(done, "w").close()
"""

READER = r"""
import collections, contextlib, io, json, os, sys
from pathlib import Path
from pytest_ktstr_vmlinux.cli import main as cli
from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.formats.image import identify_image
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols

what, path, done, least = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])


def once():
    if what == "config":
        config = resolve_kernel(path).config
        return None if config is None else sorted(config.items())
    if what == "info":
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(["info", path, "--json"])
        if status != 0:
            line = err.getvalue()
            assert line.startswith("ktstr-vmlinux: ") and line.count("\n") == 1, line
            raise KernelArtifactError(line)
        return json.loads(out.getvalue())["config"]
    if what == "symbols":
        ksyms = KernelSymbols.from_vmlinux(path)
        return [len(ksyms), ksyms["sym_99999"]]
    if what == "image":
        return identify_image(path).build_id
    raise AssertionError(what)


print("ready", flush=True)
results, errors, reads = collections.Counter(), 0, 0
while not done.exists() or reads < least:
    reads += 1
    try:
        results[json.dumps(once())] += 1
    except KernelArtifactError:
        errors += 1
print(json.dumps({"results": results, "errors": errors}))
"""


def _vmlinux_with_ikconfig(path: Path) -> None:
    # The config sits behind 16 MiB of data, so a reader is still searching when the cut comes.
    blob = b"IKCFG_ST" + gzip.compress(CONFIG.encode(), mtime=0) + b"IKCFG_ED"
    extra = os.urandom(16 << 20) + blob
    path.write_bytes(kernel_elf(build_id_for("live"), banner_for("6.1.0-live"), extra=extra))


def _vmlinux_with_symbols(path: Path) -> None:
    path.write_bytes(build_elf([Sym(f"sym_{i}", 0xFFFFFFFF81000000 + i) for i in range(SYMBOLS)]))


def _image(path: Path) -> None:
    payload = kernel_elf(build_id_for("live"), banner_for("6.1.0-live"), extra=os.urandom(8 << 20))
    path.write_bytes(bzimage("6.1.0-live (dev@host) #1 SMP", payload=payload))


WHOLE_CONFIG = [["CONFIG_HZ", 250], ["CONFIG_IKCONFIG", "y"], ["CONFIG_SWAP", None]]
# What each read may give: the answer for the whole file, or for a prefix of it that is whole
# for as long as it is read (None: no IKCONFIG in it yet). A file found empty when ``info``
# classified it is taken for an image, whose payload (the ELF) then holds the same IKCONFIG.
CASES: dict[str, tuple[Callable[[Path], None], list[object]]] = {
    "config": (_vmlinux_with_ikconfig, [WHOLE_CONFIG, None]),
    "info": (_vmlinux_with_ikconfig, ["IKCONFIG in {path}", "IKCONFIG in {path} payload", None]),
    "symbols": (_vmlinux_with_symbols, [[SYMBOLS, 0xFFFFFFFF81000000 + 99_999]]),
    "image": (_image, [build_id_for("live").hex()]),
}


@pytest.mark.parametrize("what", CASES)
def test_reading_while_another_process_truncates(tmp_path: Path, what: str) -> None:
    make, whole = CASES[what]
    path, done = tmp_path / "kernel-file", tmp_path / "done"
    make(path)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, what, str(path), str(done), str(MIN_READS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    # The writer starts once the reader has imported everything: the two overlap for certain.
    assert reader.stdout.readline() == "ready\n"
    writer = subprocess.run(
        [sys.executable, "-c", WRITER, str(path), str(CYCLES), str(done)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert writer.returncode == 0, writer.stderr
    out, err = reader.communicate(timeout=TIMEOUT)
    # A negative status is a signal: -7 is the SIGBUS this is about.
    assert reader.returncode == 0, f"reader ended with {reader.returncode}:\n{err}"
    assert "Traceback" not in err and "Fatal Python error" not in err, err
    report = json.loads(out)
    allowed = {json.dumps(v.format(path=path) if isinstance(v, str) else v) for v in whole}
    assert set(report["results"]) <= allowed, report
    assert sum(report["results"].values()) + report["errors"] >= MIN_READS

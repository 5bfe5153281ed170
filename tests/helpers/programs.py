"""Real programs built with the host's gcc for the tests of programs=: a library with a soname,
and programs that find it through DT_RPATH or DT_RUNPATH ($ORIGIN), or do not find it at all."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LIBRARY = 'const char *greet(void) { return "hello from libgreet"; }\n'
PROGRAM = (
    "#include <stdio.h>\nconst char *greet(void);\nint main(void) { puts(greet()); return 0; }\n"
)
GREETING = b"hello from libgreet\n"


def gcc() -> str:
    found = shutil.which("gcc")
    if found is None:
        pytest.skip("needs gcc (apt-get install gcc)")
    return found


def build_greeter(
    root: Path,
    *,
    dtags: str = "--disable-new-dtags",
    flags: tuple[str, ...] = (),
    lib_flags: tuple[str, ...] = (),
) -> Path:
    """``root/bin/hello`` needing ``libgreet.so.1`` from ``root/lib`` through $ORIGIN/../lib:
    DT_RPATH (``--disable-new-dtags``) or DT_RUNPATH (``--enable-new-dtags``)."""
    (root / "lib").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    (root / "greet.c").write_text(LIBRARY)
    (root / "hello.c").write_text(PROGRAM)
    cc = gcc()
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wl,-soname,libgreet.so.1", *lib_flags,
         "-o", str(root / "lib/libgreet.so.1"), str(root / "greet.c")],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [cc, "-o", str(root / "bin/hello"), str(root / "hello.c"), f"-L{root / 'lib'}",
         "-l:libgreet.so.1", f"-Wl,{dtags}", "-Wl,-rpath,$ORIGIN/../lib", *flags],
        check=True,
    )  # fmt: skip
    return root / "bin/hello"

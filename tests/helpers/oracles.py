"""Answers from tools the project did not write, to check ours against."""

from __future__ import annotations

import subprocess
from pathlib import Path


def bpftool_member_bits(path: Path, struct: str, member: str) -> int:
    """The bit offset of ``struct.member`` in the BTF of ``path``, as bpftool dumps it."""
    out = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(path)], capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if f"STRUCT '{struct}' size=" in line)
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        if line.strip().startswith(f"'{member}' "):
            return int(line.split("bits_offset=")[1].split()[0])
    raise AssertionError(f"{struct}.{member} not in bpftool's dump")

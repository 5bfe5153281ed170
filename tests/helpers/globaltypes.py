"""The DWARF globals table as another process (another run, another xdist worker) reads it from
a store: what that process's store built and reused, and what the table says there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import json, sys
from pytest_ktstr_vmlinux.formats.dwarf.globaltypes import GlobalTypes
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
store = ArtifactStore(sys.argv[1])
table = GlobalTypes.from_vmlinux(sys.argv[2], store)
print(json.dumps([store.stats.built, store.stats.reused, len(table), table.type_of(sys.argv[3])]))
"""


def globals_elsewhere(store: Path, vmlinux: Path, name: str) -> list[object]:
    """[built, reused, number of variables, the type of ``name``] in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(store), str(vmlinux), name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out)
    assert isinstance(found, list)
    return found

"""``ktstr-vmlinux kernels``: the fetched kernels of the store, and ``kernels remove SPEC``."""

from __future__ import annotations

import json
import time

from ..kernel.fetch.listing import FetchedEntry, fetched_kernels, remove_fetched
from ..store.disk import ArtifactStore

MiB = 1 << 20


def list_kernels(store: ArtifactStore, *, as_json: bool) -> None:
    """Print every fetched kernel: spec, release, suite, package version, size, last use."""
    entries = fetched_kernels(store)
    if as_json:
        listing = {"store": str(store.directory), "kernels": [e.to_json() for e in entries]}
        print(json.dumps(listing, indent=2))
        return
    print(f"fetched kernels in {store.directory / 'trees'}")
    if not entries:
        print("  none (name one as --kernel debian:SUITE to fetch it)")
        return
    rows = [("spec", "release", "suite", "version", "size", "last use")]
    rows += [_row(e) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(("  " + "  ".join(cells)).rstrip())


def remove_kernel(store: ArtifactStore, spec: str) -> None:
    """Remove what ``spec`` names (KernelSpecError when nothing, or something in use)."""
    for entry in remove_fetched(store, spec):
        shown = ", ".join(entry.specs) or entry.release
        print(f"removed {shown}: {entry.release} {entry.version} ({entry.size / MiB:.1f} MiB)")


def _row(entry: FetchedEntry) -> tuple[str, str, str, str, str, str]:
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.used_ns / 1e9))
    return (
        ", ".join(entry.specs) or "-",
        entry.release,
        entry.suite or "-",
        entry.version,
        f"{entry.size / MiB:.1f} MiB",
        used + (" (in use)" if entry.in_use else ""),
    )

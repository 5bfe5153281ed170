"""``python -m pytest_ktstr_vmlinux`` (also ``ktstr-vmlinux``): diagnostics without pytest.

    locate [SPEC] [--vmlinux PATH] [--sysroot DIR] [--json]   what would be chosen, and why
    cache path | list [--json] | clear  [--cache-dir DIR]      the on-disk artifact store

``locate`` exits 0 when a vmlinux was found, 1 when none was, 2 when the spec is unusable.
The store directory follows the plugin's rule: --cache-dir > $KTSTR_CACHE_DIR > default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import KernelArtifactError, KernelSpecError
from .kernel import Kernel, resolve_kernel
from .spec import RUNNING, SpecSource, select_setting
from .store import ArtifactStore
from .storeconfig import ENV_CACHE_DIR
from .storedir import default_store_dir

EXIT_FOUND = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_ktstr_vmlinux")
    verbs = parser.add_subparsers(dest="verb", required=True)
    locate = verbs.add_parser("locate", help="resolve a kernel spec and show every probed path")
    locate.add_argument(
        "spec",
        nargs="?",
        help="image, vmlinux, build tree, release or 'running'"
        " (default: $KTSTR_KERNEL, else running)",
    )
    locate.add_argument("--vmlinux", help="explicit vmlinux; skips the search")
    locate.add_argument("--sysroot", help="directory standing in for / for distro paths")
    locate.add_argument("--json", action="store_true", help="machine-readable output")
    cache = verbs.add_parser("cache", help="the on-disk kernel artifact store")
    cache.add_argument("action", choices=["path", "list", "clear"])
    cache.add_argument("--cache-dir", help="store directory (default: $KTSTR_CACHE_DIR, else XDG)")
    cache.add_argument("--json", action="store_true", help="machine-readable list")
    args = parser.parse_args(argv)
    if args.verb == "cache":
        return _cache(args.action, args.cache_dir, as_json=args.json)

    raw, source = select_setting(
        [(SpecSource.OPTION, args.spec), (SpecSource.ENV, os.environ.get("KTSTR_KERNEL"))]
    ) or (RUNNING, SpecSource.DEFAULT)
    try:
        kernel = resolve_kernel(raw, vmlinux=args.vmlinux, sysroot=args.sysroot, source=source)
    except KernelSpecError as e:
        print(f"ktstr-vmlinux: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(kernel_to_json(kernel), indent=2))
    else:
        print(f"kernel   {kernel.spec.raw} ({kernel.spec.kind.value}, from {source.value})")
        print(f"image    {kernel.image or 'none'}")
        print(f"release  {kernel.release or 'unknown'}")
        print(f"arch     {kernel.arch or 'unknown'}")
        print(f"vmlinux  {kernel.vmlinux or 'none'}")
        print(kernel.report.format())
    return EXIT_FOUND if kernel.vmlinux else EXIT_NOT_FOUND


def kernel_to_json(kernel: Kernel) -> dict[str, Any]:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    return {
        "spec": kernel.spec.raw,
        "kind": kernel.spec.kind.value,
        "source": kernel.source.value,
        "image": text(kernel.image),
        "vmlinux": text(kernel.vmlinux),
        "release": kernel.release,
        "arch": kernel.arch,
        "sysroot": text(kernel.sysroot),
        "candidates": [
            {"path": str(c.path), "layout": c.layout, "refused": c.refused}
            for c in kernel.report.candidates
        ],
    }


def _cache(action: str, cache_dir: str | None, *, as_json: bool) -> int:
    directory = Path(cache_dir or os.environ.get(ENV_CACHE_DIR) or default_store_dir())
    if action == "path":
        print(directory)
        return 0
    try:
        store = ArtifactStore(directory)
    except KernelArtifactError as e:
        print(f"ktstr-vmlinux: {e}", file=sys.stderr)
        return EXIT_USAGE
    if action == "clear":
        print(f"removed {store.clear()} artifacts from {store.directory}")
        return 0
    entries = store.entries()
    if as_json:
        listing = {"store": str(store.directory), "size": store.total_size(), "sources": entries}
        print(json.dumps(listing, indent=2))
        return 0
    print(f"store {store.directory} ({store.total_size() / 2**20:.1f} MiB)")
    for entry in entries:
        print(entry["source"])
        for item in entry["artifacts"]:
            print(
                f"  {item['kind']} v{item['version']}: {item['size'] / 2**20:.1f} MiB,"
                f" built {item['builds']}x, {item['file']}"
            )
    return 0

"""Building a kernel's tree from its packages: each one unpacked while it downloads, only the
files a kernel needs, each package into a part of its own, the parts merged into one root.

What was unpacked from bytes that turned out not to be the signed package (``follow.py``) is
unpacked again from the file apt verified; the tree is published (by the caller) only when every
package was unpacked from its signed bytes. Any apt and dpkg distro builds its trees this way;
only which packages and which suites are its own (``debian.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import DISTRO_CONFIG_LAYOUTS
from ..images import DISTRO_IMAGE_LAYOUTS
from ..locate import DISTRO_VMLINUX_LAYOUTS
from .apt import AptRoot, PackageRecord, deb_path
from .distro import Plan, total_size
from .follow import Follower
from .process import ToolError
from .progress import MB, Progress
from .unpack import Unpacked, UnsafePackage, unpack


def wanted_paths(release: str) -> frozenset[str]:
    """The files of a kernel ``release`` the resolver looks for, as package paths: its image,
    config and debug vmlinux layouts, and System.map."""
    templates = [
        *DISTRO_IMAGE_LAYOUTS,
        *DISTRO_CONFIG_LAYOUTS,
        *(template for template, _ in DISTRO_VMLINUX_LAYOUTS),
        "/boot/System.map-{R}",
        "/lib/modules/{R}/System.map",
        "/usr/lib/modules/{R}/System.map",
    ]
    return frozenset(t.format(R=release).lstrip("/") for t in templates)


def build_tree(
    root: AptRoot,
    dpkg_deb: str,
    plan: Plan,
    staging: Path,
    progress: Progress,
    locked: Callable[[], contextlib.AbstractContextManager[None]],
    spec: str,
) -> dict[str, Any]:
    """Download the plan's packages (under ``locked``: the apt root's turn) into ``staging``,
    unpack them into ``staging / "root"``; what to record of it."""
    debs, parts = staging / "debs", staging / "parts"
    debs.mkdir(mode=0o700)
    parts.mkdir(mode=0o700)
    records = [PackageRecord(p.name, p.version, p.size, p.sha256, ()) for p in plan.packages]
    progress.step(
        f"{spec}: downloading {', '.join(p.name for p in plan.packages)} {plan.version}"
        f" from {plan.suite} ({total_size(plan.packages) / MB:.1f} MB), unpacking as it comes"
    )
    wanted = wanted_paths(plan.release).__contains__
    done, abort = threading.Event(), threading.Event()
    followers = {
        r.name: Follower(functools.partial(deb_path, debs, r), r.size, r.sha256, done, abort)
        for r in records
    }

    def part(name: str, deb: Path | str, follower: Follower | None = None) -> list[Unpacked]:
        (parts / name).mkdir(mode=0o700, exist_ok=True)
        feed = follower.pump if follower is not None else None
        return unpack(dpkg_deb, deb, parts / name, wanted, feed)

    started = time.monotonic()
    with ThreadPoolExecutor(len(records), thread_name_prefix="ktstr-unpack") as pool:
        futures = {
            r.name: pool.submit(part, r.name, f"{r.name}.deb", followers[r.name]) for r in records
        }
        try:
            with locked():
                files = root.download(records, debs, progress.transfer)
        except BaseException:
            abort.set()
            raise
        finally:
            done.set()
        downloaded = time.monotonic() - started
        found: dict[str, list[Unpacked]] = {}
        for name, future in futures.items():
            try:
                found[name] = future.result()
            except (ToolError, UnsafePackage):
                if followers[name].matched:
                    raise  # the signed package itself cannot be unpacked
    for record in records:
        if record.name not in found or not followers[record.name].matched:
            progress.step(f"{spec}: unpacking {record.name} again, from the whole file")
            shutil.rmtree(parts / record.name, ignore_errors=True)
            found[record.name] = part(record.name, files[record.name])
    _merge(parts, staging / "root")
    shutil.rmtree(debs)
    seconds = time.monotonic() - started
    progress.step(
        f"{spec}: {plan.release} {plan.version}: {total_size(plan.packages) / MB:.1f} MB"
        f" downloaded in {downloaded:.1f} s, unpacked by {seconds:.1f} s"
    )
    return {
        "release": plan.release,
        "version": plan.version,
        "arch": plan.arch,
        "packages": [vars(p) for p in plan.packages],
        "files": [
            {"path": u.path, "size": u.size, "sha256": u.sha256, "target": u.target, "package": n}
            for n, unpacked in found.items()
            for u in unpacked
        ],
        "downloaded": total_size(plan.packages),
        "download_seconds": round(downloaded, 3),
        "seconds": round(seconds, 3),
    }


def _merge(parts: Path, root: Path) -> None:
    """Move every package's unpacked files into one root (packages never share a file)."""
    for part in sorted(parts.iterdir()):
        for directory, dirnames, filenames in os.walk(part):
            relative = Path(directory).relative_to(part)
            (root / relative).mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in filenames + [d for d in dirnames if os.path.islink(Path(directory, d))]:
                os.rename(Path(directory, name), root / relative / name)
    shutil.rmtree(parts)

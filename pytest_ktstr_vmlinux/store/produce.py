"""Writing one artifact into the on-disk store: built in tmp/, checked against its source, and
published under its hashed name by one rename.

The name is a hash of the source's canonical path, its signature, the kind and the version:
never a user's path. The source is checked again after the build: a source that moved while its
artifact was built gives nothing (the caller builds again), so an artifact never stands for a
version of its source it was not built from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

from . import artifact, stamps
from .artifact import Artifact
from .directory import full_error
from .evict import remove_path
from .index import fsync_dir, signature_fields
from .publish import OutOfSpace
from .served import Build
from .signature import StatSignature, sha256_file, stat_signature


def write_artifact(
    directory: Path,
    tmp_dir: Path,
    artifacts: Path,
    key: str,
    signature: StatSignature,
    kind: str,
    version: int,
    build: Build,
    digest_before: str | None,
) -> tuple[Artifact, stamps.Stamp] | None:
    """Build in ``tmp_dir`` and publish in ``artifacts`` under the artifact's hashed name: the
    artifact, mapped, and its stamp (checked in full: its digest was just computed from what was
    written). None when the source moved meanwhile (re-hashed when ``digest_before`` is given).
    Nothing stays in ``tmp_dir``; a full disk is a StoreFullError naming the space needed."""
    try:
        made = artifact.build_file(tmp_dir, kind, version, lambda out: build(Path(key), out))
    except OutOfSpace as e:
        what = f"writing the {kind} artifact of {key}"
        raise full_error(directory, e, what, e.needed, exact=e.exact) from None
    tmp = made.path
    try:
        moved = stat_signature(key, key) != signature
        if not moved and digest_before is not None:
            moved = sha256_file(key) != digest_before
        if moved:
            tmp.unlink()
            return None
        name = hashlib.sha256(
            json.dumps([key, signature_fields(signature), kind, version]).encode()
        ).hexdigest()
        final = artifacts / f"{name}.art"
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(final).st_mode):
                remove_path(final)  # os.replace cannot put a file over a directory
        os.replace(tmp, final)
        fsync_dir(artifacts)
        checked = stamps.touch(final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    built = dataclasses.replace(made, path=final, signature=StatSignature(*checked[1:]))
    return built, checked

"""The on-disk artifact store: build once, invalidation, racy entries, corruption, eviction,
security.

Everything here runs against real files and directories: real chmod/chown, real symlinks, real
torn and garbage files. A corrupt index or artifact must cost one StoreWarning and a rebuild,
never wrong bytes and never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.store import artifact
from pytest_ktstr_vmlinux.store import index as storeindex
from pytest_ktstr_vmlinux.store.api import (
    InsecureStoreError,
    StoredArtifact,
    StoreUnavailableError,
    StoreWarning,
)
from pytest_ktstr_vmlinux.store.artifact import ArtifactCorrupt
from pytest_ktstr_vmlinux.store.directory import check_store_dir, parse_size, prepare_store_dir
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.store.signature import (
    RACY_WINDOW_NS,
    StatSignature,
    is_racy,
    stat_signature,
)
from tests.helpers.fakes import run_without_dac_override

KIND = "echo"
ARTIFACT_NAME = re.compile(r"[0-9a-f]{64}\.art")
HEADER = struct.Struct("<8sHHIQ32s64s")  # artifact.py's header layout, spelled out independently
BIG_PAYLOAD = 80 << 20  # > artifact.FULL_DIGEST_LIMIT: sampled digest


class CountingBuild:
    """A build function: payload = b"built:" + the source's bytes; remembers every call."""

    def __init__(self, prefix: bytes = b"built:") -> None:
        self.prefix = prefix
        self.calls: list[Path] = []

    def __call__(self, path: Path, out: BinaryIO) -> None:
        self.calls.append(path)
        out.write(self.prefix + path.read_bytes())


# --- helpers ------------------------------------------------------------------------------------


def _store(tmp_path: Path, **kwargs: Any) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", **kwargs)


def _source(tmp_path: Path, name: str = "vmlinux", content: bytes = b"source-one") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _index_path(store: ArtifactStore) -> Path:
    return store.directory / "index.json"


def _read_index(store: ArtifactStore) -> dict[str, Any]:
    return storeindex.parse_index(_index_path(store).read_bytes())


def _write_index(store: ArtifactStore, index: dict[str, Any]) -> None:
    storeindex.write_index(_index_path(store), index, tmp_dir=store.directory / "tmp")


def _checksummed(body: bytes, version: str = "1") -> bytes:
    return (
        f"pytest-ktstr-vmlinux-index {version} {hashlib.sha256(body).hexdigest()}\n".encode() + body
    )


def _artifact_names(store: ArtifactStore) -> list[str]:
    return sorted(p.name for p in (store.directory / "artifacts").iterdir())


def _artifact_file(store: ArtifactStore, source: Path, kind: str = KIND, version: int = 1) -> Path:
    for entry in store.entries():
        if entry["source"] == os.path.realpath(source):
            for record in entry["artifacts"]:
                if record["kind"] == kind and record["version"] == version:
                    return Path(record["file"])
    raise AssertionError(f"no {kind} v{version} artifact of {source} in {store.entries()}")


def _builds(store: ArtifactStore, source: Path, kind: str = KIND, version: int = 1) -> int:
    for entry in store.entries():
        if entry["source"] == os.path.realpath(source):
            for record in entry["artifacts"]:
                if record["kind"] == kind and record["version"] == version:
                    return int(record["builds"])
    return 0


def _store_warnings(record: pytest.WarningsRecorder) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, StoreWarning)]


@pytest.fixture
def no_store_warnings() -> Iterator[None]:
    """Fail the test if anything in it emits a StoreWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert [str(w.message) for w in caught if issubclass(w.category, StoreWarning)] == []


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """Same inode, same size, same mtime: only ctime (and the content) can tell."""
    before = os.stat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def _advance_file_clock(scratch: Path, past_ns: int) -> None:
    """Touch a scratch file until the filesystem's clock has moved past ``past_ns``, so the
    next change to any file gets a later ctime. Bounded; no sleeping."""
    scratch.touch()
    for _ in range(1_000_000):
        os.utime(scratch)
        if os.stat(scratch).st_ctime_ns > past_ns:
            return
    raise AssertionError("the filesystem clock did not advance")


def _sealed_artifact(path: Path, payload: bytes, kind: str = KIND, version: int = 1) -> None:
    """A valid artifact file written by artifact.py's own begin/finish."""
    with open(path, "w+b") as f:
        artifact.begin(f)
        f.write(payload)
        artifact.finish(f, kind, version)


# --- 1. build once ------------------------------------------------------------------------------


def test_builds_once_and_reuses_across_store_objects(
    tmp_path: Path, no_store_warnings: None
) -> None:
    src = _source(tmp_path)
    build = CountingBuild()
    store = _store(tmp_path)
    first = store.get_or_build(src, KIND, 1, build)
    second = store.get_or_build(src, KIND, 1, build)
    assert first.read_bytes() == second.read_bytes() == b"built:source-one"
    assert (store.stats.built, store.stats.reused) == (1, 1)

    other = ArtifactStore(store.directory)  # a new process, same directory
    third = other.get_or_build(src, KIND, 1, build)
    assert third.read_bytes() == b"built:source-one"
    assert (other.stats.built, other.stats.reused) == (0, 1)
    assert len(build.calls) == 1
    assert build.calls[0] == Path(os.path.realpath(src))
    assert _builds(other, src) == 1
    [entry] = other.entries()
    assert entry["source"] == os.path.realpath(src)
    st = os.stat(src)
    assert entry["signature"] == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    [record] = entry["artifacts"]
    assert (record["kind"], record["version"], record["builds"]) == (KIND, 1, 1)
    assert record["size"] == artifact.HEADER_SIZE + len(b"built:source-one")
    assert ARTIFACT_NAME.fullmatch(Path(record["file"]).name)


def test_kind_and_version_are_separate_artifacts(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    echo, other = CountingBuild(), CountingBuild(b"other:")
    assert store.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:source-one"
    assert store.get_or_build(src, KIND, 2, echo).read_bytes() == b"built:source-one"
    assert store.get_or_build(src, "other", 1, other).read_bytes() == b"other:source-one"
    assert store.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:source-one"
    assert store.get_or_build(src, "other", 1, other).read_bytes() == b"other:source-one"
    assert (store.stats.built, store.stats.reused) == (3, 2)
    assert (len(echo.calls), len(other.calls)) == (2, 1)
    assert len(_artifact_names(store)) == 3
    kinds = sorted((a["kind"], a["version"]) for a in store.entries()[0]["artifacts"])
    assert kinds == [(KIND, 1), (KIND, 2), ("other", 1)]


def test_get_or_build_json_round_trips(tmp_path: Path) -> None:
    src = _source(tmp_path, content=b"abc")
    store = _store(tmp_path)
    calls: list[Path] = []
    value = {"name": "vmlinux", "sizes": [1, 2, 3], "nested": {"ok": True, "none": None}}

    def compute(path: Path) -> Any:
        calls.append(path)
        return {**value, "content": path.read_text()}

    expected = {**value, "content": "abc"}
    assert store.get_or_build_json(src, "meta", 1, compute) == expected
    assert store.get_or_build_json(src, "meta", 1, compute) == expected
    assert ArtifactStore(store.directory).get_or_build_json(src, "meta", 1, compute) == expected
    assert len(calls) == 1


def test_stored_artifact_map_is_a_read_only_view_of_the_payload(tmp_path: Path) -> None:
    src = _source(tmp_path, content=bytes(range(256)) * 40)
    found = _store(tmp_path).get_or_build(src, KIND, 1, CountingBuild())
    view = found.map()
    assert isinstance(view, memoryview)
    assert view.readonly
    assert bytes(view) == b"built:" + bytes(range(256)) * 40
    assert found.read_bytes() == bytes(view)
    assert found.size == len(view)
    with pytest.raises(TypeError):
        view[0] = 0
    assert isinstance(found, StoredArtifact)
    assert (found.kind, found.version, found.source) == (KIND, 1, os.path.realpath(src))


def test_artifact_and_index_files_are_private(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    store.get_or_build(src, KIND, 1, CountingBuild())
    assert stat.S_IMODE(os.stat(_artifact_file(store, src)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(_index_path(store)).st_mode) == 0o600


def test_symlinks_to_one_source_share_one_entry(tmp_path: Path) -> None:
    src = _source(tmp_path)
    link = tmp_path / "link-to-vmlinux"
    link.symlink_to(src)
    store = _store(tmp_path)
    build = CountingBuild()
    assert store.get_or_build(link, KIND, 1, build).read_bytes() == b"built:source-one"
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:source-one"
    assert len(build.calls) == 1
    assert [e["source"] for e in store.entries()] == [os.path.realpath(src)]


def test_a_failing_build_is_not_recorded(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)

    def broken(path: Path, out: BinaryIO) -> None:
        out.write(b"partial")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        store.get_or_build(src, KIND, 1, broken)
    assert _artifact_names(store) == []
    assert list((store.directory / "tmp").iterdir()) == []
    assert store.get_or_build(src, KIND, 1, CountingBuild()).read_bytes() == b"built:source-one"
    assert store.stats.built == 1


class RewritingBuild(CountingBuild):
    """A build during which someone rewrites the source (the first ``times`` calls)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    def __call__(self, path: Path, out: BinaryIO) -> None:
        super().__call__(path, out)
        if len(self.calls) <= self.times:
            path.write_bytes(f"rewritten during build {len(self.calls)}".encode())


@pytest.mark.parametrize("make_store", ["disk", "memory"])
def test_source_rewritten_during_build_is_built_again(tmp_path: Path, make_store: str) -> None:
    src = _source(tmp_path, content=b"before")
    store = _store(tmp_path) if make_store == "disk" else MemoryStore()
    build = RewritingBuild(times=1)
    found = store.get_or_build(src, KIND, 1, build)
    assert found.read_bytes() == b"built:rewritten during build 1"
    assert len(build.calls) == 2
    assert store.stats.built == 1
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == found.read_bytes()
    assert len(build.calls) == 2


@pytest.mark.parametrize("make_store", ["disk", "memory"])
def test_source_that_never_holds_still_is_an_error(tmp_path: Path, make_store: str) -> None:
    src = _source(tmp_path, content=b"before")
    store = _store(tmp_path) if make_store == "disk" else MemoryStore()
    build = RewritingBuild(times=1000)
    with pytest.raises(KernelArtifactError, match="changed 5 times"):
        store.get_or_build(src, KIND, 1, build)
    assert len(build.calls) == 5
    assert store.stats.built == 0
    if isinstance(store, ArtifactStore):
        assert _artifact_names(store) == []
        assert list((store.directory / "tmp").iterdir()) == []


# --- 2. source changes --------------------------------------------------------------------------


def test_rewritten_source_is_rebuilt_and_old_artifact_removed(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    old_file = _artifact_file(store, src)
    src.write_bytes(b"source-two, longer")
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:source-two, longer"
    assert len(build.calls) == 2
    assert not old_file.exists()
    assert _artifact_names(store) == [_artifact_file(store, src).name]
    assert _artifact_file(store, src) != old_file


def test_in_place_same_size_rewrite_is_detected(tmp_path: Path) -> None:
    """Default racy window: either ctime or the racy content check catches it."""
    src = _source(tmp_path, content=b"AAAAAAAA")
    store = _store(tmp_path)
    build = CountingBuild()
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:AAAAAAAA"
    _rewrite_in_place(src, b"BBBBBBBB")
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:BBBBBBBB"
    assert ArtifactStore(store.directory).get_or_build(src, KIND, 1, build).read_bytes() == (
        b"built:BBBBBBBB"
    )
    assert len(build.calls) == 2


def test_in_place_rewrite_is_detected_by_ctime_alone(tmp_path: Path) -> None:
    """No racy window: the restored mtime does not hide the change, because ctime moved."""
    src = _source(tmp_path, content=b"AAAAAAAA")
    store = _store(tmp_path, racy_window_ns=0)
    build = CountingBuild()
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:AAAAAAAA"
    before = os.stat(src)
    _advance_file_clock(tmp_path / "clock", before.st_ctime_ns)
    _rewrite_in_place(src, b"BBBBBBBB")
    assert os.stat(src).st_ctime_ns != before.st_ctime_ns
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:BBBBBBBB"
    assert len(build.calls) == 2


def test_deleted_source_is_dropped_at_next_write_and_raises(tmp_path: Path) -> None:
    gone = _source(tmp_path, "gone", b"doomed")
    kept = _source(tmp_path, "kept", b"kept")
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(gone, KIND, 1, build)
    store.get_or_build(kept, KIND, 1, build)
    gone_file = _artifact_file(store, gone)
    gone_key = os.path.realpath(gone)
    gone.unlink()
    assert gone_key in _read_index(store)["sources"]  # nothing writes yet

    third = _source(tmp_path, "third", b"third")
    store.get_or_build(third, KIND, 1, build)
    assert gone_key not in _read_index(store)["sources"]
    assert not gone_file.exists()
    assert sorted(e["source"] for e in store.entries()) == sorted(
        os.path.realpath(p) for p in (kept, third)
    )
    with pytest.raises(KernelArtifactError, match=re.escape(str(gone))):
        store.get_or_build(gone, KIND, 1, build)
    assert len(_artifact_names(store)) == 2


def test_source_that_is_a_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(KernelArtifactError, match="directory"):
        _store(tmp_path).get_or_build(tmp_path, KIND, 1, CountingBuild())


# --- 3. racy entries ----------------------------------------------------------------------------


def test_just_written_source_is_racy_and_its_hash_recorded(tmp_path: Path) -> None:
    src = _source(tmp_path, content=b"fresh")
    store = _store(tmp_path)
    store.get_or_build(src, KIND, 1, CountingBuild())
    entry = _read_index(store)["sources"][os.path.realpath(src)]
    assert is_racy(StatSignature(*entry["signature"]), entry["recorded_ns"], RACY_WINDOW_NS)
    assert entry["sha256"] == hashlib.sha256(b"fresh").hexdigest()


def test_same_signature_other_content_is_rebuilt(tmp_path: Path) -> None:
    """The case stat cannot see: a same-size rewrite whose signature matches the recorded one
    (as within one coarse timestamp tick). The racy content hash must catch it, and every kind
    built from the old content is stale, not just the one asked for first."""
    src = _source(tmp_path, content=b"old-content")
    key = os.path.realpath(src)
    store = _store(tmp_path)
    echo, other = CountingBuild(), CountingBuild(b"other:")
    assert store.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:old-content"
    assert store.get_or_build(src, "other", 1, other).read_bytes() == b"other:old-content"
    _rewrite_in_place(src, b"new-content")
    index = _read_index(store)
    new = stat_signature(key, src)
    index["sources"][key]["signature"] = [
        new.st_dev,
        new.st_ino,
        new.st_size,
        new.st_mtime_ns,
        new.st_ctime_ns,
    ]
    _write_index(store, index)

    fresh = ArtifactStore(store.directory)
    assert fresh.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:new-content"
    assert fresh.stats.built == 1
    assert len(echo.calls) == 2
    assert (
        _read_index(fresh)["sources"][key]["sha256"] == hashlib.sha256(b"new-content").hexdigest()
    )
    assert len(_artifact_names(fresh)) == 1  # the "other" artifact of the old content is gone
    assert fresh.get_or_build(src, "other", 1, other).read_bytes() == b"other:new-content"
    assert fresh.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:new-content"
    assert (len(echo.calls), len(other.calls)) == (2, 2)


def test_racy_entry_with_unchanged_content_is_reverified_and_reused(
    tmp_path: Path, no_store_warnings: None
) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    recorded = _read_index(store)["sources"][os.path.realpath(src)]["recorded_ns"]
    for _ in range(3):
        assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:source-one"
    assert ArtifactStore(store.directory).get_or_build(src, KIND, 1, build).read_bytes() == (
        b"built:source-one"
    )
    assert len(build.calls) == 1
    assert (store.stats.built, store.stats.reused) == (1, 3)
    assert _builds(store, src) == 1
    # The successful re-verification was recorded, so the window eventually closes.
    assert _read_index(store)["sources"][os.path.realpath(src)]["recorded_ns"] > recorded


def test_settled_entry_is_reused_without_hashing(tmp_path: Path) -> None:
    """Once recorded_ns is past the window, the signature alone decides: a wrong sha256 in the
    index is never consulted."""
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    index = _read_index(store)
    entry = index["sources"][os.path.realpath(src)]
    entry["recorded_ns"] = StatSignature(*entry["signature"]).changed_ns + 2 * RACY_WINDOW_NS
    entry["sha256"] = "0" * 64
    _write_index(store, index)
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:source-one"
    assert len(build.calls) == 1


def test_zero_racy_window_never_hashes_and_stays_correct(tmp_path: Path) -> None:
    src = _source(tmp_path, content=b"one")
    store = _store(tmp_path, racy_window_ns=0)
    build = CountingBuild()
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:one"
    assert _read_index(store)["sources"][os.path.realpath(src)]["sha256"] is None
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:one"
    assert (store.stats.built, store.stats.reused) == (1, 1)
    src.write_bytes(b"two, longer")
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:two, longer"
    assert _read_index(store)["sources"][os.path.realpath(src)]["sha256"] is None
    assert len(build.calls) == 2


# --- 4. corruption recovery: the index ----------------------------------------------------------


def _foreign_version(raw: bytes) -> bytes:
    header, _, body = raw.partition(b"\n")
    magic, _, digest = header.split(b" ")
    return b" ".join([magic, b"99", digest]) + b"\n" + body


def _checksum_mismatch(raw: bytes) -> bytes:
    header, _, body = raw.partition(b"\n")
    tampered = body.replace(b'"builds":1', b'"builds":7', 1)
    assert tampered != body
    return header + b"\n" + tampered


INDEX_CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda raw: b"\x00\xff\x13garbage\nnot an index at all\x00" * 7,
    "garbage-no-newline": lambda raw: bytes(range(256)).replace(b"\n", b""),
    "truncated-half": lambda raw: raw[: len(raw) // 2],
    "header-only": lambda raw: raw.partition(b"\n")[0],
    "zero-length": lambda raw: b"",
    "foreign-version": _foreign_version,
    "checksum-mismatch": _checksum_mismatch,
    "not-json": lambda raw: _checksummed(b"{not json"),
    "invalid-utf8": lambda raw: _checksummed(b'{"sources": "\xff\xfe"}'),
    "json-list": lambda raw: _checksummed(b"[]"),
    "sources-not-dict": lambda raw: _checksummed(b'{"sources": [], "builds": 0}'),
}


@pytest.mark.parametrize("corrupt", sorted(INDEX_CORRUPTIONS))
def test_corrupt_index_warns_once_and_rebuilds(tmp_path: Path, corrupt: str) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    index_path = _index_path(store)
    index_path.write_bytes(INDEX_CORRUPTIONS[corrupt](index_path.read_bytes()))

    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning) as record:
        found = fresh.get_or_build(src, KIND, 1, build)
    [message] = _store_warnings(record)
    assert str(index_path) in message and "rebuilding" in message
    assert found.read_bytes() == b"built:source-one"
    assert fresh.stats.built == 1
    assert len(build.calls) == 2
    assert _read_index(fresh)["sources"][os.path.realpath(src)]["artifacts"]  # valid again
    assert _artifact_names(fresh) == [_artifact_file(fresh, src).name]

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert ArtifactStore(store.directory).get_or_build(src, KIND, 1, build).read_bytes() == (
            b"built:source-one"
        )
    assert [w for w in again if issubclass(w.category, StoreWarning)] == []
    assert len(build.calls) == 2


@pytest.mark.parametrize(
    "bad_file",
    ["../evil.art", "../../etc/passwd", "/etc/passwd", "..", "", f"{'a' * 64}.art/../x"],
)
def test_index_naming_a_path_is_refused_never_opened(tmp_path: Path, bad_file: str) -> None:
    """A checksum-valid index whose artifact "file" is a path: the whole index is refused, so a
    valid artifact holding attacker bytes just outside artifacts/ is never served."""
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    evil = store.directory / "evil.art"
    _sealed_artifact(evil, b"EVIL PAYLOAD")
    evil_bytes = evil.read_bytes()
    index = _read_index(store)
    for record in index["sources"][os.path.realpath(src)]["artifacts"].values():
        record["file"] = bad_file
    _write_index(store, index)
    with pytest.raises(ValueError, match="malformed"):
        storeindex.parse_index(_index_path(store).read_bytes())

    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning) as record:
        found = fresh.get_or_build(src, KIND, 1, build)
    [message] = _store_warnings(record)
    assert "malformed" in message
    assert found.read_bytes() == b"built:source-one"
    assert found.file is not None and found.file.path.parent == store.directory / "artifacts"
    assert evil.read_bytes() == evil_bytes


# --- 4. corruption recovery: artifact files -----------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"\xde\xad\xbe\xef" * 2048)


def _truncated_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _truncated_payload(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-1])


def _zero_length(path: Path) -> None:
    path.write_bytes(b"")


def _foreign_container(path: Path) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 8, 2)
    path.write_bytes(bytes(data))


def _flipped_payload(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[artifact.HEADER_SIZE + 3] ^= 0xFF
    path.write_bytes(bytes(data))


def _flipped_digest(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[24] ^= 0x01
    path.write_bytes(bytes(data))


def _padded_payload(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"extra")


def _other_kind(path: Path) -> None:
    _sealed_artifact(path, b"built:source-one", kind="other")


def _other_version(path: Path) -> None:
    _sealed_artifact(path, b"built:source-one", version=2)


def _symlink_to_valid_evil(path: Path) -> None:
    outside = path.parent.parent.parent / "outside.art"
    _sealed_artifact(outside, b"built:EVIL-ONE")
    path.unlink()
    path.symlink_to(outside)


ARTIFACT_CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "garbage": _garbage,
    "truncated-header": _truncated_header,
    "truncated-payload": _truncated_payload,
    "zero-length": _zero_length,
    "foreign-container-version": _foreign_container,
    "flipped-payload-byte": _flipped_payload,
    "flipped-digest-byte": _flipped_digest,
    "appended-bytes": _padded_payload,
    "other-kind": _other_kind,
    "other-version": _other_version,
    "symlink-to-valid-artifact": _symlink_to_valid_evil,
    "missing": lambda path: path.unlink(),
}


@pytest.mark.parametrize("corrupt", sorted(ARTIFACT_CORRUPTIONS))
def test_corrupt_artifact_warns_once_and_rebuilds(tmp_path: Path, corrupt: str) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    target = _artifact_file(store, src)
    with open(target, "rb") as f:
        header = HEADER.unpack(f.read(HEADER.size))
    assert header[3] == artifact.DIGEST_FULL  # small payload: every byte is digested
    ARTIFACT_CORRUPTIONS[corrupt](target)

    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning) as record:
        found = fresh.get_or_build(src, KIND, 1, build)
    [message] = _store_warnings(record)
    assert str(target) in message and "unusable" in message
    assert found.read_bytes() == b"built:source-one"
    assert bytes(found.map()) == b"built:source-one"
    assert fresh.stats.built == 1
    assert _builds(fresh, src) == 2
    assert not target.is_symlink()
    artifact.open_artifact(target, KIND, 1)  # the replacement verifies
    assert len(build.calls) == 2


def test_other_kinds_of_one_source_survive_a_corrupt_sibling(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    echo, other = CountingBuild(), CountingBuild(b"other:")
    store.get_or_build(src, KIND, 1, echo)
    store.get_or_build(src, "other", 1, other)
    _garbage(_artifact_file(store, src))
    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning):
        assert fresh.get_or_build(src, KIND, 1, echo).read_bytes() == b"built:source-one"
    assert fresh.get_or_build(src, "other", 1, other).read_bytes() == b"other:source-one"
    assert (len(echo.calls), len(other.calls)) == (2, 1)


def _build_big(path: Path, out: BinaryIO) -> None:
    """An 80 MiB mostly-sparse payload: "HEAD", zeros, a marker in the last page, "TAIL"."""
    out.write(b"HEAD")
    out.flush()
    end = artifact.HEADER_SIZE + BIG_PAYLOAD
    os.ftruncate(out.fileno(), end)
    out.seek(end - 1000)
    out.write(b"MARK" + path.read_bytes())
    out.seek(end - 4)
    out.write(b"TAIL")


@pytest.mark.parametrize("damage", ["cut-tail", "zeroed-tail"])
def test_large_sampled_artifact_with_damaged_tail_is_detected(tmp_path: Path, damage: str) -> None:
    src = _source(tmp_path, content=b"big")
    store = _store(tmp_path)
    calls: list[Path] = []

    def build(path: Path, out: BinaryIO) -> None:
        calls.append(path)
        _build_big(path, out)

    found = store.get_or_build(src, "big", 1, build)
    assert found.size == BIG_PAYLOAD
    view = found.map()
    assert (bytes(view[:4]), bytes(view[-4:]), bytes(view[-1000:-993])) == (
        b"HEAD",
        b"TAIL",
        b"MARKbig",
    )
    path = _artifact_file(store, src, "big")
    with open(path, "rb") as f:
        assert HEADER.unpack(f.read(HEADER.size))[3] == artifact.DIGEST_SAMPLED
    full = os.stat(path).st_size
    os.truncate(path, full - 3000)
    if damage == "zeroed-tail":
        os.truncate(path, full)  # same size again, the tail now zeros
    with pytest.raises(ArtifactCorrupt):
        artifact.open_artifact(path, "big", 1)

    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning) as record:
        again = fresh.get_or_build(src, "big", 1, build)
    assert len(_store_warnings(record)) == 1
    assert bytes(again.map()[-4:]) == b"TAIL"
    assert len(calls) == 2


# --- 5. orphans and debris ----------------------------------------------------------------------


def test_orphans_and_tmp_debris_are_removed_at_next_build(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    kept = _artifact_file(store, src)
    artifacts, tmp = store.directory / "artifacts", store.directory / "tmp"
    orphan = artifacts / f"{'f' * 64}.art"
    _sealed_artifact(orphan, b"nobody's")
    stray = artifacts / "stray.txt"
    stray.write_text("stray")
    debris = [tmp / "build-dead.tmp", tmp / "index-dead.tmp"]
    for path in debris:
        path.write_bytes(b"half-written")

    store.get_or_build(_source(tmp_path, "second", b"second"), KIND, 1, build)
    assert not orphan.exists() and not stray.exists()
    assert [p for p in debris if p.exists()] == []
    assert list(tmp.iterdir()) == []
    assert kept.exists()
    assert len(_artifact_names(store)) == 2
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:source-one"
    assert len(build.calls) == 2


# --- 6. eviction --------------------------------------------------------------------------------


def _set_last_use(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


def test_lru_eviction_keeps_the_store_under_its_cap(tmp_path: Path) -> None:
    payload = b"x" * 994  # b"built:" + 994 = 1000-byte payload
    file_size = artifact.HEADER_SIZE + 1000
    cap = 3 * file_size
    sources = {name: _source(tmp_path, name, payload) for name in "abcd"}
    store = _store(tmp_path, max_size=cap)
    build = CountingBuild()
    for name in "abc":
        store.get_or_build(sources[name], KIND, 1, build)
    assert store.total_size() == cap
    files = {name: _artifact_file(store, sources[name]) for name in "abc"}
    now = time.time_ns()
    _set_last_use(files["b"], now - 3000 * 10**9)
    _set_last_use(files["a"], now - 2000 * 10**9)
    _set_last_use(files["c"], now - 1000 * 10**9)

    store.get_or_build(sources["d"], KIND, 1, build)  # over the cap: b is least recently used
    assert not files["b"].exists()
    assert files["a"].exists() and files["c"].exists()
    assert store.total_size() <= cap
    assert _builds(store, sources["b"]) == 0

    store.get_or_build(sources["a"], KIND, 1, build)  # a use refreshes a
    assert store.stats.reused == 1
    store.get_or_build(sources["b"], KIND, 1, build)  # rebuilt; c is now the oldest
    assert not files["c"].exists()
    assert files["a"].exists() and _artifact_file(store, sources["d"]).exists()
    assert store.total_size() <= cap
    assert len(build.calls) == 5
    assert len(_artifact_names(store)) == 3
    for name in "abd":
        found = store.get_or_build(sources[name], KIND, 1, build)
        assert found.read_bytes() == b"built:" + payload
    assert len(build.calls) == 5


def test_newest_artifact_is_kept_even_alone_over_the_cap(tmp_path: Path) -> None:
    first = _source(tmp_path, "first", b"1" * 5000)
    second = _source(tmp_path, "second", b"2" * 5000)
    store = _store(tmp_path, max_size=100)
    build = CountingBuild()
    assert store.get_or_build(first, KIND, 1, build).read_bytes() == b"built:" + b"1" * 5000
    assert store.total_size() > 100
    assert store.get_or_build(first, KIND, 1, build).read_bytes() == b"built:" + b"1" * 5000
    assert len(build.calls) == 1
    first_file = _artifact_file(store, first)
    _set_last_use(first_file, time.time_ns() + 10**12)  # even "used in the future", it goes
    assert store.get_or_build(second, KIND, 1, build).read_bytes() == b"built:" + b"2" * 5000
    assert not first_file.exists()
    assert _artifact_names(store) == [_artifact_file(store, second).name]
    assert store.total_size() == artifact.HEADER_SIZE + len(b"built:") + 5000


def test_mapped_artifact_stays_valid_after_eviction(tmp_path: Path) -> None:
    first = _source(tmp_path, "first", b"first-payload")
    store = _store(tmp_path, max_size=1)
    found = store.get_or_build(first, KIND, 1, CountingBuild())
    assert found.file is not None
    view = found.map()
    store.get_or_build(_source(tmp_path, "second", b"second"), KIND, 1, CountingBuild())
    assert not found.file.path.exists()  # evicted: the newest alone is over the cap
    assert bytes(view) == b"built:first-payload"


# --- 7. security --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702])
def test_group_or_other_writable_store_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "store"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(InsecureStoreError) as excinfo:
        ArtifactStore(directory)
    assert f"chmod 700 {directory}" in str(excinfo.value)
    assert f"{mode:04o}" in str(excinfo.value)
    assert list(directory.iterdir()) == []  # refused before creating anything


def test_store_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, -1)
    with pytest.raises(InsecureStoreError) as excinfo:
        ArtifactStore(directory)
    message = str(excinfo.value)
    assert "12345" in message
    assert f"chown {os.geteuid()} {directory}" in message
    assert "--kernel-cache-dir" in message
    with pytest.raises(InsecureStoreError):
        check_store_dir(directory)


def test_store_that_is_a_symlink_to_our_own_directory_is_accepted(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    store = ArtifactStore(link)
    store.get_or_build(_source(tmp_path), KIND, 1, CountingBuild())
    assert len(list((real / "artifacts").iterdir())) == 1


def test_lock_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.get_or_build(_source(tmp_path), KIND, 1, CountingBuild())
    target = tmp_path / "precious.txt"
    target.write_text("precious data")
    before = os.stat(target)
    lock = store.directory / "lock"
    lock.unlink()
    lock.symlink_to(target)
    with pytest.raises(InsecureStoreError, match="symlink"):
        ArtifactStore(store.directory)
    assert target.read_text() == "precious data"
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


@pytest.mark.parametrize("subdir", ["artifacts", "tmp"])
def test_subdirectory_symlink_is_refused(tmp_path: Path, subdir: str) -> None:
    store = _store(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    path = store.directory / subdir
    path.rmdir()
    path.symlink_to(elsewhere)
    with pytest.raises(InsecureStoreError, match="symlink"):
        ArtifactStore(store.directory)
    assert list(elsewhere.iterdir()) == []


def test_index_symlink_is_never_followed_and_gets_replaced(tmp_path: Path) -> None:
    """The outside file is a perfectly valid index that would serve planted bytes if followed."""
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)
    planted = store.directory / "artifacts" / f"{'e' * 64}.art"
    _sealed_artifact(planted, b"built:EVIL")
    index = _read_index(store)
    for record in index["sources"][os.path.realpath(src)]["artifacts"].values():
        record["file"] = planted.name
    outside = tmp_path / "outside-index.json"
    storeindex.write_index(outside, index, tmp_dir=tmp_path)
    outside_bytes = outside.read_bytes()
    _index_path(store).unlink()
    _index_path(store).symlink_to(outside)

    fresh = ArtifactStore(store.directory)
    with pytest.warns(StoreWarning) as record:
        found = fresh.get_or_build(src, KIND, 1, build)
    [message] = _store_warnings(record)
    assert "cannot be opened" in message
    assert found.read_bytes() == b"built:source-one"
    assert outside.read_bytes() == outside_bytes
    assert not _index_path(store).is_symlink() and _index_path(store).is_file()
    assert _read_index(fresh)["sources"][os.path.realpath(src)]["artifacts"]
    assert not planted.exists()  # an orphan of the index that was never trusted


def test_artifact_names_are_hashes_whatever_the_source_path(tmp_path: Path) -> None:
    odd_dir = tmp_path / "we ird;$(rm -rf x)'\"" / "sub"
    odd_dir.mkdir(parents=True)
    odd = odd_dir / "..vm\nlinux *?[].art"
    odd.write_bytes(b"odd")
    winding = f"{odd_dir}/../sub/./../../{odd_dir.parent.name}/sub/{odd.name}"
    store = _store(tmp_path)
    build = CountingBuild()
    assert store.get_or_build(winding, KIND, 1, build).read_bytes() == b"built:odd"
    assert store.get_or_build(odd, KIND, 1, build).read_bytes() == b"built:odd"
    assert len(build.calls) == 1
    names = _artifact_names(store)
    assert len(names) == 1
    assert all(ARTIFACT_NAME.fullmatch(name) for name in names)
    assert sorted(p.name for p in store.directory.iterdir()) == [
        ".ktstr-store",
        "artifacts",
        "exports",
        "index.json",
        "lock",
        "tmp",
    ]
    assert [e["source"] for e in store.entries()] == [str(odd)]


def test_new_store_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "er" / "store"
    store = ArtifactStore(directory)
    assert store.directory == directory
    for path in (directory, directory / "artifacts", directory / "tmp"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert os.stat(path).st_uid == os.geteuid()
    assert prepare_store_dir(directory) == directory


def test_relative_store_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ArtifactStore("relative-store")
    assert store.directory == tmp_path / "relative-store"
    assert store.directory.is_absolute()


_READ_ONLY_PROBE = """
import json, sys
from pathlib import Path
from pytest_ktstr_vmlinux.store.directory import StoreUnavailableError, prepare_store_dir
from pytest_ktstr_vmlinux.store.choose import open_store
results = {}
for name in sys.argv[1:]:
    try:
        prepare_store_dir(Path(name))
        outcome = "ok"
    except StoreUnavailableError as e:
        outcome = "unavailable: " + str(e)
    store, message = open_store(name)
    results[name] = {"prepare": outcome, "store": type(store).__name__, "message": message}
print(json.dumps(results))
"""


def test_read_only_location_is_unavailable_and_falls_back_to_memory(tmp_path: Path) -> None:
    read_only_parent = tmp_path / "ro-parent"
    read_only_parent.mkdir(mode=0o700)
    cannot_create = read_only_parent / "store"
    existing = tmp_path / "ro-store"
    existing.mkdir(mode=0o700)
    read_only_parent.chmod(0o500)
    existing.chmod(0o500)
    try:
        result = run_without_dac_override(
            [sys.executable, "-c", _READ_ONLY_PROBE, str(cannot_create), str(existing)]
        )
    finally:
        read_only_parent.chmod(0o700)
        existing.chmod(0o700)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    for path, reason in ((cannot_create, "cannot create"), (existing, "not writable")):
        found = outcome[str(path)]
        assert found["prepare"].startswith("unavailable: "), found
        assert reason in found["prepare"] and str(path) in found["prepare"]
        assert found["store"] == "MemoryStore"
        assert str(path) in found["message"] and "in-process" in found["message"]
    assert not cannot_create.exists()
    assert list(existing.iterdir()) == []


def test_store_under_a_regular_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="cannot create"):
        ArtifactStore(blocker / "store")
    assert blocker.read_text() == "not a directory"


def test_open_store_returns_the_disk_store_where_it_can(tmp_path: Path) -> None:
    from pytest_ktstr_vmlinux.store.choose import open_store, store_location

    store, message = open_store(tmp_path / "fine", max_size=12345)
    assert message is None
    assert isinstance(store, ArtifactStore)
    assert store.max_size == 12345
    assert store_location(store) == str(tmp_path / "fine")
    insecure = tmp_path / "insecure"
    insecure.mkdir()
    insecure.chmod(0o777)
    with pytest.raises(InsecureStoreError):
        open_store(insecure)


# --- 8. clear -----------------------------------------------------------------------------------


def test_clear_removes_artifacts_and_index(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.clear() == 0
    one, two = _source(tmp_path, "one", b"1"), _source(tmp_path, "two", b"2")
    build = CountingBuild()
    for src in (one, two):
        store.get_or_build(src, KIND, 1, build)
    store.get_or_build(one, KIND, 2, build)
    (store.directory / "tmp" / "build-dead.tmp").write_bytes(b"debris")
    assert len(store.entries()) == 2
    assert store.clear() == 3
    assert store.entries() == []
    assert _artifact_names(store) == []
    assert list((store.directory / "tmp").iterdir()) == []
    assert not _index_path(store).exists()
    assert store.total_size() == 0
    assert store.get_or_build(one, KIND, 1, build).read_bytes() == b"built:1"
    assert len(build.calls) == 4


# --- 9. MemoryStore -----------------------------------------------------------------------------


def test_memory_store_builds_once_and_rebuilds_after_change(tmp_path: Path) -> None:
    src = _source(tmp_path, content=b"mem-one")
    store = MemoryStore()
    build = CountingBuild()
    first = store.get_or_build(src, KIND, 1, build)
    second = store.get_or_build(src, KIND, 1, build)
    assert first is second
    assert (store.stats.built, store.stats.reused) == (1, 1)
    view = first.map()
    assert view.readonly and bytes(view) == b"built:mem-one" == first.read_bytes()
    assert first.size == len(b"built:mem-one")
    assert (first.kind, first.version, first.source) == (KIND, 1, os.path.realpath(src))
    assert store.get_or_build(src, KIND, 2, build).read_bytes() == b"built:mem-one"
    assert store.stats.built == 2

    src.write_bytes(b"mem-two, longer")
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:mem-two, longer"
    before = os.stat(src)
    _advance_file_clock(tmp_path / "clock", before.st_ctime_ns)
    _rewrite_in_place(src, b"mem-3, longer!!")
    assert store.get_or_build(src, KIND, 1, build).read_bytes() == b"built:mem-3, longer!!"
    assert len(build.calls) == 4
    assert len(store._held) == 2  # one per (kind, version): stale versions dropped


def test_memory_store_json_and_missing_source(tmp_path: Path) -> None:
    src = _source(tmp_path, content=b"j")
    store = MemoryStore()
    calls: list[Path] = []

    def compute(path: Path) -> Any:
        calls.append(path)
        return {"a": [1, None, "x"], "content": path.read_text()}

    assert store.get_or_build_json(src, "meta", 1, compute) == {"a": [1, None, "x"], "content": "j"}
    assert store.get_or_build_json(src, "meta", 1, compute) == {"a": [1, None, "x"], "content": "j"}
    assert len(calls) == 1
    with pytest.raises(KernelArtifactError, match=re.escape(str(tmp_path / "nope"))):
        store.get_or_build(tmp_path / "nope", KIND, 1, CountingBuild())


# --- 10. parse_size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GiB", 8 << 30),
        ("512M", 512 << 20),
        ("1.5G", 3 << 29),
        ("1000", 1000),
        ("2K", 2048),
        ("2k", 2048),
        (" 3 MiB ", 3 << 20),
        ("1T", 1 << 40),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["abc", "-1", "", "   ", "1.5.5G", "8X", "G", "1e9", "8 GiBs"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


# --- 11. fuzzing --------------------------------------------------------------------------------


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=5) | st.dictionaries(
        st.text(max_size=8), children, max_size=5
    )


JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    _json_containers,
    max_leaves=25,
)
_HEX_NAMES = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda stem: stem + ".art"
)
_FILE_NAMES = (
    _HEX_NAMES
    | st.text(max_size=80)
    | st.sampled_from(
        [
            "../../etc/passwd",
            "/etc/passwd",
            f"../{'a' * 64}.art",
            f"{'a' * 64}.art/../../x",
            f"{'A' * 64}.art",
            f"{'a' * 64}.ART",
            f"{'a' * 63}.art",
            f"{'a' * 64}.art.art",
            f"{'a' * 64}.art\x00",
        ]
    )
)
_RECORDS = (
    st.fixed_dictionaries({"file": _FILE_NAMES, "builds": st.integers() | JSON_VALUES})
    | JSON_VALUES
)
_ENTRIES = (
    st.fixed_dictionaries(
        {
            "signature": st.lists(st.integers(), min_size=4, max_size=6) | JSON_VALUES,
            "recorded_ns": st.integers() | JSON_VALUES,
            "sha256": st.none() | st.text(max_size=64) | JSON_VALUES,
            "artifacts": st.dictionaries(st.text(max_size=12), _RECORDS, max_size=3) | JSON_VALUES,
        }
    )
    | JSON_VALUES
)
NEAR_INDEXES: st.SearchStrategy[Any] = (
    st.fixed_dictionaries(
        {
            "sources": st.dictionaries(st.text(max_size=20), _ENTRIES, max_size=3) | JSON_VALUES,
            "builds": st.integers(min_value=0),
        }
    )
    | JSON_VALUES
)


def _check_accepted(index: dict[str, Any]) -> None:
    """What parse_index promises about anything it returns."""
    storeindex.validate_index(index)
    for entry in index["sources"].values():
        for record in entry["artifacts"].values():
            assert ARTIFACT_NAME.fullmatch(record["file"]), record["file"]


@settings(max_examples=1500, deadline=None)
@given(
    raw=st.binary(max_size=400)
    | st.builds(lambda tail: b"pytest-ktstr-vmlinux-index " + tail, st.binary(max_size=200))
)
def test_fuzz_parse_index_arbitrary_bytes(raw: bytes) -> None:
    try:
        index = storeindex.parse_index(raw)
    except ValueError:
        return
    _check_accepted(index)


@settings(max_examples=1500, deadline=None)
@given(value=NEAR_INDEXES | JSON_VALUES)
def test_fuzz_parse_index_checksummed_json(value: Any) -> None:
    body = json.dumps(value).encode()
    try:
        index = storeindex.parse_index(_checksummed(body))
    except ValueError:
        return
    _check_accepted(index)
    assert index == json.loads(body)


def _headered(
    magic: bytes,
    container: int,
    version: int,
    scope: int,
    size: int | None,
    digest: bytes | None,
    kind: bytes,
    payload: bytes,
) -> bytes:
    real_size = len(payload) if size is None else size
    if digest is None:
        digest = hashlib.sha256(len(payload).to_bytes(8, "little") + payload).digest()
    header = HEADER.pack(magic, container, version, scope, real_size, digest, kind)
    return header.ljust(artifact.HEADER_SIZE, b"\x00") + payload


ARTIFACT_BYTES = st.binary(max_size=5000) | st.builds(
    _headered,
    magic=st.sampled_from([artifact.MAGIC, b"KTSTRARX", b"\x00" * 8]),
    container=st.sampled_from([artifact.CONTAINER_VERSION, 0, 2]) | st.integers(0, 0xFFFF),
    version=st.sampled_from([1, 2]) | st.integers(0, 0xFFFF),
    scope=st.sampled_from([artifact.DIGEST_FULL, artifact.DIGEST_SAMPLED])
    | st.integers(0, 0xFFFFFFFF),
    size=st.none() | st.integers(0, 2**64 - 1) | st.integers(0, 600),
    digest=st.none() | st.binary(min_size=32, max_size=32),
    kind=st.sampled_from([b"fuzz", b"other", b"fuzz\x00x", b""]).map(
        lambda k: k.ljust(64, b"\x00")
    ),
    payload=st.binary(max_size=600),
)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=ARTIFACT_BYTES)
def test_fuzz_open_artifact_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.art"
    path.write_bytes(data)
    try:
        found = artifact.open_artifact(path, "fuzz", 1)
    except ArtifactCorrupt:
        return
    # Accepted: then it really is a whole fuzz v1 artifact, and the payload is what follows.
    assert data[:8] == artifact.MAGIC
    assert found.size == len(data) - artifact.HEADER_SIZE
    assert found.read_bytes() == data[artifact.HEADER_SIZE :]
    assert bytes(found.map()) == data[artifact.HEADER_SIZE :]


# --- library bugs: checksum-valid indexes whose shape validate_index lets through ---------------


def _index_with(store: ArtifactStore, mutate: Callable[[dict[str, Any]], None]) -> None:
    index = _read_index(store)
    mutate(index)
    _write_index(store, index)


def test_index_with_non_integer_build_counter_is_survived(tmp_path: Path) -> None:
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(_source(tmp_path), KIND, 1, build)
    _index_with(store, lambda index: index.__setitem__("builds", "many"))
    other = _source(tmp_path, "other", b"other")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert ArtifactStore(store.directory).get_or_build(other, KIND, 1, build).read_bytes() == (
            b"built:other"
        )


def test_index_with_nul_in_a_source_key_is_survived(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    build = CountingBuild()
    store.get_or_build(src, KIND, 1, build)

    def add_nul_source(index: dict[str, Any]) -> None:
        entry = index["sources"][os.path.realpath(src)]
        index["sources"]["/nul\x00source"] = {**entry, "artifacts": {}}

    _index_with(store, add_nul_source)
    other = _source(tmp_path, "other", b"other")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert ArtifactStore(store.directory).get_or_build(other, KIND, 1, build).read_bytes() == (
            b"built:other"
        )


def test_entries_survives_an_odd_artifact_key(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    store.get_or_build(src, KIND, 1, CountingBuild())

    def rename_key(index: dict[str, Any]) -> None:
        entry = index["sources"][os.path.realpath(src)]
        entry["artifacts"] = {"no-version": next(iter(entry["artifacts"].values()))}

    _index_with(store, rename_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        listing = ArtifactStore(store.directory).entries()
    assert all(isinstance(a["version"], int) for e in listing for a in e["artifacts"])


DEEP_BODY = b"[" * 100_000 + b"]" * 100_000


def test_parse_index_deeply_nested_body_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"\w"):
        storeindex.parse_index(_checksummed(DEEP_BODY))


def test_deeply_nested_index_is_survived(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    _index_path(store).write_bytes(_checksummed(DEEP_BODY))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = store.get_or_build(src, KIND, 1, CountingBuild())
    assert found.read_bytes() == b"built:source-one"
    assert len([w for w in caught if issubclass(w.category, StoreWarning)]) == 1


def test_directory_at_index_path_is_a_clear_error_or_survived(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = _store(tmp_path)
    _index_path(store).mkdir()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            found = store.get_or_build(src, KIND, 1, CountingBuild())
    except KernelArtifactError as e:
        assert str(_index_path(store)) in str(e)
    else:
        assert found.read_bytes() == b"built:source-one"


def test_directory_debris_in_artifacts_does_not_break_builds(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (store.directory / "artifacts" / "somedir").mkdir()
    found = store.get_or_build(_source(tmp_path), KIND, 1, CountingBuild())
    assert found.read_bytes() == b"built:source-one"


def test_builds_leave_nothing_in_tmp(tmp_path: Path) -> None:
    """Temp files are renamed into place or removed; tmp/ is empty between builds."""
    store = _store(tmp_path)
    build = CountingBuild()
    for i in range(5):
        store.get_or_build(_source(tmp_path, f"s{i}", bytes([65 + i]) * (i + 1)), KIND, 1, build)
        assert list((store.directory / "tmp").iterdir()) == []
    assert len(_artifact_names(store)) == 5
    assert store.total_size() == sum(artifact.HEADER_SIZE + 6 + i + 1 for i in range(5))

"""The store on a filesystem that runs out of room: a real, small tmpfs (mounted here as root and
unmounted when the test ends), filled by real writes.

What a full disk must cost: one clear StoreFullError naming the store and the space needed, no
partial file left behind, a store that is still valid for the next run; and, through
``choose.open_store`` (what the plugin and the CLI use), one warning and in-process artifacts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.store import artifact
from pytest_ktstr_vmlinux.store import index as storeindex
from pytest_ktstr_vmlinux.store.api import StoreFullError, StoreUnavailableError, StoreWarning
from pytest_ktstr_vmlinux.store.choose import open_store
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.store.signature import stat_signature
from pytest_ktstr_vmlinux.store.snapshot import snapshot
from tests.helpers.fakes import make_build_tree

FS_SIZE = 2 << 20
PAGE = 4096
BIG = 4 << 20  # twice the filesystem
CHUNK = 64 << 10


def _mount_tmpfs(where: Path, size: int) -> None:
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a small tmpfs")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs. Unmounted lazily: artifacts this test mapped may still hold it."""
    where = tmp_path / "small"
    _mount_tmpfs(where, FS_SIZE)
    yield where
    subprocess.run(["umount", "--lazy", str(where)], check=True)


def _fill(fs: Path) -> Path:
    """Fill ``fs`` to the last block with one file; returns it."""
    filler = fs / "filler"
    with open(filler, "wb") as f:
        chunk = bytes(64 << 10)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
        # The buffer's tail may still be unwritten: write byte by byte until nothing fits.
        for size in (PAGE, 512, 1):
            with_room = True
            while with_room:
                try:
                    os.write(f.fileno(), bytes(size))
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    with_room = False
        f.truncate(f.tell())
    assert os.statvfs(fs).f_bavail == 0
    return filler


def _free_pages(filler: Path, pages: int) -> None:
    size = filler.stat().st_size
    os.truncate(filler, size - size % PAGE - pages * PAGE)


def _source(tmp_path: Path, name: str = "vmlinux", size: int = 16) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _build(path: Path, out: BinaryIO) -> None:
    out.write(b"built:" + path.read_bytes())


def _chunked_build(path: Path, out: BinaryIO) -> None:
    """A build that does not know its size up front: writes its payload in pieces."""
    data = path.read_bytes()
    for i in range(0, len(data), CHUNK):
        out.write(data[i : i + CHUNK])


def _assert_nothing_partial(store_dir: Path) -> None:
    assert list((store_dir / "tmp").iterdir()) == []
    index = store_dir / "index.json"
    named = set()
    if index.exists():
        parsed = storeindex.parse_index(index.read_bytes())  # a whole, valid index
        for entry in parsed["sources"].values():
            named |= {record["file"] for record in entry["artifacts"].values()}
    for path in (store_dir / "artifacts").iterdir():
        assert path.name in named, f"{path.name}: not in the index"
        artifact.open_artifact(path, *_kind_of(parsed, path.name))


def _kind_of(index: dict[str, object], name: str) -> tuple[str, int]:
    for entry in index["sources"].values():  # type: ignore[attr-defined]
        for key, record in entry["artifacts"].items():
            if record["file"] == name:
                kind, _, version = key.rpartition(":")
                return kind, int(version)
    raise AssertionError(name)


def _store_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


# --- library: one typed error, nothing partial, a valid store -------------------------------------

BUILDS: dict[str, tuple[Callable[[ArtifactStore, Path], object], int | None]] = {
    # what to build, and the exact payload size the message must name (None: "more than").
    "snapshot": (lambda store, src: snapshot(store, src), BIG),
    "json": (
        lambda store, src: store.get_or_build_json(src, "big-json", 1, lambda p: ["x" * BIG]),
        len(json.dumps(["x" * BIG])),
    ),
    "chunked": (lambda store, src: store.get_or_build(src, "chunked", 1, _chunked_build), None),
}


@pytest.mark.parametrize("what", sorted(BUILDS))
def test_an_artifact_that_does_not_fit_is_one_clear_error(
    tmp_path: Path, small_fs: Path, what: str
) -> None:
    src = _source(tmp_path, size=BIG)
    small = _source(tmp_path, "small", 16)
    store_dir = small_fs / "store"
    store = ArtifactStore(store_dir)
    store.get_or_build(small, "echo", 1, _build)
    make, payload = BUILDS[what]
    with pytest.raises(StoreFullError) as excinfo:
        make(store, src)
    error = excinfo.value
    assert isinstance(error, StoreUnavailableError) and isinstance(error, KernelArtifactError)
    message = str(error)
    assert str(store_dir) in message and "no space left" in message
    if payload is None:
        assert "needs more than" in message
        assert error.needed is not None and error.needed > FS_SIZE // 2
    else:
        assert error.needed == artifact.HEADER_SIZE + payload
        assert f"needs {artifact.HEADER_SIZE + payload:,} bytes" in message
    assert error.directory == store_dir
    assert error.__cause__ is None and error.__suppress_context__
    _assert_nothing_partial(store_dir)
    # The store is valid: what it held is reused, and what fits is built.
    again = ArtifactStore(store_dir)
    assert again.get_or_build(small, "echo", 1, _build).read_bytes() == b"built:" + (
        small.read_bytes()
    )
    assert again.stats.reused == 1
    assert again.get_or_build(small, "echo", 2, _build)
    _assert_nothing_partial(store_dir)


def test_a_full_filesystem_cannot_take_a_new_store(tmp_path: Path, small_fs: Path) -> None:
    filler = _fill(small_fs)
    store_dir = small_fs / "store"
    with pytest.raises(StoreFullError) as excinfo:
        ArtifactStore(store_dir)
    assert str(store_dir) in str(excinfo.value)
    filler.unlink()
    store = ArtifactStore(store_dir)  # valid once there is room
    src = _source(tmp_path)
    assert store.get_or_build(src, "echo", 1, _build).read_bytes() == b"built:" + src.read_bytes()


def test_a_full_filesystem_still_serves_what_the_store_holds(
    tmp_path: Path, small_fs: Path
) -> None:
    src, other = _source(tmp_path), _source(tmp_path, "other")
    store_dir = small_fs / "store"
    ArtifactStore(store_dir).get_or_build(src, "echo", 1, _build)
    _fill(small_fs)
    store = ArtifactStore(store_dir)
    assert store.get_or_build(src, "echo", 1, _build).read_bytes() == b"built:" + src.read_bytes()
    with pytest.raises(StoreFullError, match="echo artifact of"):
        store.get_or_build(other, "echo", 1, _build)
    _assert_nothing_partial(store_dir)


def test_an_index_that_does_not_fit_leaves_the_old_index_and_no_orphan(
    tmp_path: Path, small_fs: Path
) -> None:
    src, other = _source(tmp_path), _source(tmp_path, "other")
    store_dir = small_fs / "store"
    ArtifactStore(store_dir).get_or_build(src, "echo", 1, _build)
    before = (store_dir / "index.json").read_bytes()
    # Room for the artifact (a header page and a payload page), none for the new index.
    _free_pages(_fill(small_fs), 2)
    store = ArtifactStore(store_dir)
    with pytest.raises(StoreFullError, match="index"):
        store.get_or_build(other, "echo", 1, _build)
    assert (store_dir / "index.json").read_bytes() == before
    _assert_nothing_partial(store_dir)


def test_an_export_that_does_not_fit(tmp_path: Path, small_fs: Path) -> None:
    src = _source(tmp_path, size=600 << 10)
    store_dir = small_fs / "store"
    store = ArtifactStore(store_dir)
    stored = store.get_or_build(src, "echo", 1, _build)
    _fill(small_fs)
    with pytest.raises(StoreFullError, match="export") as excinfo:
        store.export(stored, ".vmlinux")
    assert excinfo.value.needed == stored.size
    assert list((store_dir / "exports").iterdir()) == []
    _assert_nothing_partial(store_dir)


# --- open_store: one warning, then in-process artifacts -----------------------------------------


def test_open_store_falls_back_to_memory_for_what_does_not_fit(
    tmp_path: Path, small_fs: Path
) -> None:
    src, big, bigger = (
        _source(tmp_path),
        _source(tmp_path, "big", BIG),
        _source(tmp_path, "b2", BIG),
    )
    store_dir = small_fs / "store"
    store, problem = open_store(store_dir)
    assert problem is None and isinstance(store, ArtifactStore)
    store.get_or_build(src, "echo", 1, _build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in (big, bigger, big):
            assert bytes(snapshot(store, path)) == path.read_bytes()
    [message] = _store_warnings(caught)
    assert str(store_dir) in message and f"{artifact.HEADER_SIZE + BIG:,} bytes" in message
    assert "in-process" in message
    assert store.stats.built == 1 + 2 and store.stats.reused == 1
    # What is on disk is still served from there.
    found = store.get_or_build(src, "echo", 1, _build)
    assert found.file is not None
    _assert_nothing_partial(store_dir)


def test_open_store_on_a_full_filesystem_is_the_memory_store(
    tmp_path: Path, small_fs: Path
) -> None:
    _fill(small_fs)
    store, problem = open_store(small_fs / "store")
    assert isinstance(store, MemoryStore)
    assert problem is not None and str(small_fs / "store") in problem
    assert "no space left" in problem and "in-process" in problem


# --- pytest runs -------------------------------------------------------------------------------

SNAPSHOT_TEST = """
def test_bytes(vmlinux_bytes, vmlinux_path, kernel_symbols):
    assert bytes(vmlinux_bytes) == vmlinux_path.read_bytes()
"""


@pytest.fixture
def big_kernel(pytester: pytest.Pytester) -> Path:
    tree = make_build_tree(pytester.path / "linux")
    vmlinux = tree / "vmlinux"
    vmlinux.write_bytes(vmlinux.read_bytes() + os.urandom(BIG))
    pytester.makepyfile(test_bytes=SNAPSHOT_TEST)
    return tree


def _assert_one_warning(result: pytest.RunResult, *words: str) -> None:
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out and "Errno 28" not in out, out
    result.assert_outcomes(passed=1, warnings=1)
    for word in words:
        assert word in out, out


def test_plugin_run_on_a_store_without_room_for_the_snapshot(
    pytester: pytest.Pytester, small_fs: Path, big_kernel: Path
) -> None:
    store_dir = small_fs / "store"
    result = pytester.runpytest_subprocess(
        f"--kernel={big_kernel}", f"--kernel-cache-dir={store_dir}"
    )
    _assert_one_warning(result, str(store_dir), "in-process", "bytes")
    result.stdout.fnmatch_lines(
        [f"ktstr: artifacts built 4, reused 0 (store: {store_dir}, full: *)"]
    )
    _assert_nothing_partial(store_dir)


def test_plugin_run_under_xdist_on_a_store_without_room(
    pytester: pytest.Pytester, small_fs: Path, big_kernel: Path
) -> None:
    store_dir = small_fs / "store"
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist=each", f"--kernel={big_kernel}", f"--kernel-cache-dir={store_dir}"
    )
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    result.assert_outcomes(passed=2)
    # Each worker finds the disk full and says so once; the summary shows the one message.
    assert out.count("is full (no space left on device) writing the vmlinux-snapshot") == 1, out
    _assert_nothing_partial(store_dir)


def test_plugin_run_on_a_full_filesystem(
    pytester: pytest.Pytester, small_fs: Path, big_kernel: Path
) -> None:
    _fill(small_fs)
    store_dir = small_fs / "store"
    result = pytester.runpytest_subprocess(
        f"--kernel={big_kernel}", f"--kernel-cache-dir={store_dir}"
    )
    _assert_one_warning(result, str(store_dir), "no space left", "in-process")
    result.stdout.fnmatch_lines(["ktstr: artifacts built *, reused 0 (store: in-process)"])


# --- files are unlinked only after the index that drops them is written ---------------------------


def test_a_racy_rebuild_under_the_same_name_keeps_its_new_file(tmp_path: Path) -> None:
    """Same key, same signature, other content (what stat cannot see): the rebuilt artifact
    has the name of the stale one, which is dropped after the index is written. The new file
    must survive that."""
    src = tmp_path / "src" / "vmlinux"
    src.parent.mkdir()
    src.write_bytes(b"old-content")
    key = os.path.realpath(src)
    store_dir = tmp_path / "store"
    ArtifactStore(store_dir).get_or_build(src, "echo", 1, _build)
    with open(src, "r+b") as f:
        f.write(b"new-content")
    new = stat_signature(key, src)
    fields = [new.st_dev, new.st_ino, new.st_size, new.st_mtime_ns, new.st_ctime_ns]
    name = hashlib.sha256(json.dumps([key, fields, "echo", 1]).encode()).hexdigest() + ".art"
    index_path = store_dir / "index.json"
    index = storeindex.parse_index(index_path.read_bytes())
    entry = index["sources"][key]
    entry["signature"] = fields  # as if the rewrite had kept the signature
    record = entry["artifacts"]["echo:1"]
    (store_dir / "artifacts" / record["file"]).rename(store_dir / "artifacts" / name)
    record["file"] = name
    storeindex.write_index(index_path, index, tmp_dir=store_dir / "tmp")

    fresh = ArtifactStore(store_dir)
    found = fresh.get_or_build(src, "echo", 1, _build)
    assert found.read_bytes() == b"built:new-content" and fresh.stats.built == 1
    assert found.file is not None and found.file.path.name == name and found.file.path.exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ArtifactStore(store_dir)
        assert again.get_or_build(src, "echo", 1, _build).read_bytes() == b"built:new-content"
    assert _store_warnings(caught) == [] and again.stats.reused == 1

"""Published trees (a fetched kernel's root): whole or absent, checked at every open, kept while
a process uses them, evicted under the size cap like artifacts, and debris of killed builds
removed by the next build. Pins are held by real processes."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_ktstr_vmlinux.store.api import StoreWarning
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.trees import Tree, TreeDamaged, key_of

A = hashlib.sha256(b"a").hexdigest()
B = hashlib.sha256(b"b").hexdigest()

HOLDER = """
import sys
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
tree = ArtifactStore(sys.argv[1]).trees.open(sys.argv[2])
print("pinned" if tree is not None else "missing", flush=True)
sys.stdin.read()
"""


def _publish(store: ArtifactStore, name: str, files: dict[str, bytes], **record: object) -> Path:
    """Publish through a store object of its own, as another run would: the pin that publishing
    takes goes with that object (a process keeps what it published while its store lives)."""
    publisher = ArtifactStore(store.directory, max_size=store.max_size)
    trees = publisher.trees
    with trees.locked(name), trees.staging(name) as staging:
        for path, data in files.items():
            (staging / "root" / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / "root" / path).write_bytes(data)
        (staging / "root" / "link").symlink_to(next(iter(files)))
        tree = trees.publish(name, staging, dict(record))
    del publisher, trees
    gc.collect()
    return tree.root


def _look(store: ArtifactStore, name: str) -> Tree | None:
    """Open a tree as a passing process would: its pin is let go at once."""
    tree = ArtifactStore(store.directory).trees.open(name)
    gc.collect()
    return tree


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_a_published_tree_opens_with_its_files_and_record(store: ArtifactStore) -> None:
    root = _publish(store, A, {"boot/vmlinuz": b"x" * 100, "usr/vmlinux": b"y" * 50}, n=1)
    assert root == store.trees.directory / A / "root"
    tree = _look(store, A)
    assert tree is not None
    assert tree.record == {"n": 1}
    assert tree.size == 150
    assert (tree.root / "link").resolve() == tree.root / "boot/vmlinuz"
    assert (tree.root / "boot/vmlinuz").stat().st_mode & 0o777 == 0o444
    assert list((store.trees.directory / "staging").iterdir()) == []
    assert _look(store, B) is None


@pytest.mark.parametrize("damage", ["append", "chmod", "replace", "remove", "relink"])
def test_a_tree_changed_after_publication_is_damaged(store: ArtifactStore, damage: str) -> None:
    root = _publish(store, A, {"boot/vmlinuz": b"x" * 100})
    image = root / "boot/vmlinuz"
    if damage == "append":
        image.chmod(0o644)
        with open(image, "ab") as f:
            f.write(b"!")
    elif damage == "chmod":
        image.chmod(0o644)
    elif damage == "replace":
        image.unlink()
        image.write_bytes(b"x" * 100)
    elif damage == "remove":
        image.unlink()
    else:
        (root / "link").unlink()
        (root / "link").symlink_to("/etc/passwd")
    with pytest.raises(TreeDamaged, match=r"kernel cache tree .*(changed|link|No such)"):
        store.trees.open(A)


def test_a_tree_found_damaged_is_not_kept_pinned(store: ArtifactStore) -> None:
    """The opener's own pin must not block the removal that follows (a fetch does both)."""
    root = _publish(store, A, {"boot/vmlinuz": b"x" * 100})
    (root / "boot/vmlinuz").chmod(0o644)
    with pytest.raises(TreeDamaged):
        store.trees.open(A)
    assert not store.trees.in_use(A)
    assert store.trees.remove(A)


def _restore(store: ArtifactStore, tmp_path: Path) -> ArtifactStore:
    """The store as a CI cache restores it: through tar, every file a new inode and ctime."""
    archive = tmp_path / "store.tar"
    subprocess.run(["tar", "-C", str(store.directory), "-cf", str(archive), "."], check=True)
    restored = tmp_path / "restored"
    restored.mkdir(mode=0o700)
    subprocess.run(["tar", "-C", str(restored), "-xf", str(archive)], check=True)
    return ArtifactStore(restored)


FILES = {"boot/vmlinuz": b"x" * 100, "usr/lib/debug/vmlinux": b"y" * 300}


def test_a_restored_tree_with_its_bytes_is_resealed(store: ArtifactStore, tmp_path: Path) -> None:
    _publish(store, A, FILES, n=1)
    restored = _restore(store, tmp_path)
    with pytest.raises(TreeDamaged, match="changed since it was published"):
        restored.trees.open(A)
    with restored.trees.locked(A):
        tree = restored.trees.reseal(A)
    assert tree is not None
    assert (tree.record, tree.size) == ({"n": 1}, 400)
    assert {p: (tree.root / p).read_bytes() for p in FILES} == FILES
    assert (tree.root / "link").resolve() == tree.root / "boot/vmlinuz"
    assert (tree.root / "usr/lib/debug/vmlinux").stat().st_mode & 0o777 == 0o444
    again = _look(restored, A)  # checked by signature again, as any tree
    assert again is not None and again.record == {"n": 1}
    assert list((restored.trees.directory / "staging").iterdir()) == []


RESEALER = """
import json, sys
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.trees import TreeDamaged
trees = ArtifactStore(sys.argv[1]).trees
sys.stdin.read()  # all start together
try:
    tree = trees.open(sys.argv[2])
except TreeDamaged:
    tree = trees.reseal(sys.argv[2])
print(json.dumps(tree.record if tree is not None else None))
print((tree.root / "usr/lib/debug/vmlinux").read_bytes().decode() if tree else "")
"""


def test_processes_that_find_a_restored_tree_at_once_all_get_it(
    store: ArtifactStore, tmp_path: Path
) -> None:
    _publish(store, A, FILES, n=1)
    restored = _restore(store, tmp_path)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", RESEALER, str(restored.directory), A],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.close()
    for worker in workers:
        assert worker.stdout is not None and worker.stderr is not None
        out, err = worker.stdout.read(), worker.stderr.read()
        assert worker.wait(60) == 0, err
        assert out.splitlines() == [json.dumps({"n": 1}), "y" * 300]
    assert _look(restored, A) is not None
    assert list((restored.trees.directory / "staging").iterdir()) == []


@pytest.mark.parametrize("change", ["bytes", "extra", "missing", "fifo", "relink", "no-hashes"])
def test_a_restored_tree_that_differs_is_not_resealed(
    store: ArtifactStore, tmp_path: Path, change: str
) -> None:
    _publish(store, A, FILES)
    restored = _restore(store, tmp_path)
    root = restored.trees.directory / A / "root"
    vmlinux = root / "usr/lib/debug/vmlinux"
    if change == "bytes":  # same size, same mtime: only the content tells
        st = vmlinux.stat()
        vmlinux.chmod(0o644)
        vmlinux.write_bytes(b"z" * 300)
        os.utime(vmlinux, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "extra":
        (root / "boot").chmod(0o755)
        (root / "boot/System.map").write_bytes(b"")
    elif change == "missing":
        vmlinux.unlink()
    elif change == "fifo":  # never opened for reading: no hang
        vmlinux.unlink()
        os.mkfifo(vmlinux)
    elif change == "relink":
        (root / "link").unlink()
        (root / "link").symlink_to("/etc/passwd")
    else:  # published before hashes were kept
        record = restored.trees.directory / A / "tree.json"
        body = json.loads(record.read_text())
        for entry in body["files"]:
            entry.pop("sha256", None)
        record.chmod(0o600)
        record.write_text(json.dumps(body))
    with restored.trees.locked(A):
        assert restored.trees.reseal(A) is None
    with pytest.raises(TreeDamaged):
        restored.trees.open(A)
    assert restored.trees.remove(A)


def test_a_malformed_record_is_damage(store: ArtifactStore) -> None:
    _publish(store, A, {"f": b"1"})
    record = store.trees.directory / A / "tree.json"
    record.chmod(0o600)
    body = json.loads(record.read_text())
    body["files"][0]["path"] = "../../outside"
    record.write_text(json.dumps(body))
    with pytest.raises(TreeDamaged, match="malformed"):
        store.trees.open(A)


def _hold(store: ArtifactStore, name: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(store.directory), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "pinned"
    return holder


def test_a_tree_in_use_by_another_process_is_not_removed(store: ArtifactStore) -> None:
    _publish(store, A, {"f": b"1"})
    holder = _hold(store, A)
    try:
        assert store.trees.in_use(A)
        assert not store.trees.remove(A)
        assert _look(store, A) is not None
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crash: the kernel drops its pins
        holder.wait()
    assert not store.trees.in_use(A)
    assert store.trees.remove(A)
    assert _look(store, A) is None
    assert not (store.trees.directory / A).exists()


def test_the_size_cap_evicts_the_least_recently_used_tree(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", max_size=1000)
    _publish(store, A, {"f": b"a" * 600})
    used = store.trees.directory / A / "used"
    os.utime(used, ns=(1, 1))  # long unused
    _publish(store, B, {"f": b"b" * 600})  # over the cap together: A goes
    assert _look(store, A) is None
    assert _look(store, B) is not None


def test_the_size_cap_never_evicts_a_tree_in_use(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", max_size=1000)
    _publish(store, A, {"f": b"a" * 600})
    holder = _hold(store, A)
    try:
        os.utime(store.trees.directory / A / "used", ns=(1, 1))
        _publish(store, B, {"f": b"b" * 600})
        assert _look(store, A) is not None  # over the cap, but in use
        assert _look(store, B) is not None  # just published: kept too
    finally:
        holder.stdin.close() if holder.stdin else None
        holder.wait()


def test_artifacts_and_trees_share_one_cap(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", max_size=20_000)
    _publish(store, A, {"f": b"a" * 16_000})
    os.utime(store.trees.directory / A / "used", ns=(1, 1))
    source = tmp_path / "source"
    source.write_bytes(os.urandom(6_000))
    store.get_or_build(source, "copy", 1, _copy)
    assert _look(store, A) is None  # the artifact built last pushed the old tree out
    assert 6_000 < store.total_size() < 20_000


def _copy(path: Path, out: BinaryIO) -> None:
    out.write(path.read_bytes())


def test_a_killed_build_leaves_debris_that_the_next_build_removes(store: ArtifactStore) -> None:
    staging = store.trees.directory / "staging"
    debris = staging / f"{key_of(A)[:32]}-999999-deadbeef"
    (debris / "root").mkdir(parents=True)
    (debris / "root" / "half.deb").write_bytes(b"x" * 10)
    other = staging / f"{key_of(B)[:32]}-999999-deadbeef"
    other.mkdir()
    assert _look(store, A) is None  # debris is no tree
    _publish(store, A, {"f": b"1"})
    assert not debris.exists()
    assert other.exists()  # another tree's build: not this lock's to judge


def test_a_tree_appears_whole(store: ArtifactStore) -> None:
    trees = store.trees
    with trees.locked(A), trees.staging(A) as staging:
        (staging / "root" / "f").write_bytes(b"1")
        assert trees.open(A) is None  # building: not there yet
        assert not (trees.directory / A).exists()
        trees.publish(A, staging, {})
        assert trees.open(A) is not None
    assert not staging.exists()


def test_refs_round_trip_and_bad_ones_are_ignored(store: ArtifactStore) -> None:
    trees = store.trees
    assert trees.read_ref("debian:sid/cloud-amd64") is None
    trees.write_ref("debian:sid/cloud-amd64", A, {"suite": "sid"})
    ref = trees.read_ref("debian:sid/cloud-amd64")
    assert ref is not None
    assert (ref["tree"], ref["data"]) == (A, {"suite": "sid"})
    path = trees.directory / "refs" / f"{key_of('debian:sid/cloud-amd64')}.json"
    path.chmod(0o666)
    with pytest.warns(StoreWarning, match="group or others can write it; ignoring it"):
        assert trees.read_ref("debian:sid/cloud-amd64") is None
    path.chmod(0o600)
    path.write_text("not json")
    with pytest.warns(StoreWarning, match="is not JSON"):
        assert trees.read_ref("debian:sid/cloud-amd64") is None


def test_clear_removes_trees_not_in_use(store: ArtifactStore) -> None:
    _publish(store, A, {"f": b"1"})
    _publish(store, B, {"f": b"2"})
    store.trees.write_ref("x", A, {})
    holder = _hold(store, B)
    try:
        assert store.clear() == 1
        assert _look(store, A) is None
        assert store.trees.read_ref("x") is None
        assert _look(store, B) is not None
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_tree_names_are_hashes(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex digits"):
        store.trees.open("../../etc")
    with pytest.raises(ValueError, match="letters, digits"):
        store.trees.state_dir("../x")


def test_a_use_is_recorded_for_eviction(store: ArtifactStore) -> None:
    _publish(store, A, {"f": b"1"})
    used = store.trees.directory / A / "used"
    os.utime(used, ns=(1, 1))
    _look(store, A)
    assert used.stat().st_mtime_ns > time.time_ns() - 60 * 10**9

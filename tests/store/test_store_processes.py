"""The on-disk store under real, concurrent processes: no mocks, no sleeps standing in for order.

Every child is ``sys.executable -c CODE`` talking JSON lines to the parent over its stdout and
reading commands from its stdin, so the parent decides exactly when each step happens: children
report "ready" after their imports and block until the parent writes "go" to all of them (a
barrier), a build blocks on a stdin line until the parent SIGKILLs it, a process holding a mapping
re-reads it only once the parent has changed the world under it. Waits are bounded.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pytest_ktstr_vmlinux.errors import KernelArtifactError
from pytest_ktstr_vmlinux.store import artifact
from pytest_ktstr_vmlinux.store import index as storeindex
from pytest_ktstr_vmlinux.store.bytescache import VmlinuxBytesCache
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.signature import RACY_WINDOW_NS
from pytest_ktstr_vmlinux.store.snapshot import SNAPSHOT_KIND, SnapshotLoader, snapshot
from tests.helpers.children import Spawn, start_together

ROOT = Path(__file__).resolve().parents[2]
LONG_AGO_NS = 86_400 * 1_000_000_000
PAYLOAD_KIND = "test-payload"


def expected_payload(source: bytes, kind: str = "") -> bytes:
    return kind.encode() + b"\n" + hashlib.sha256(source).hexdigest().encode() + b"\n" + source


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_file(path: Path, data: bytes) -> None:
    """Publish ``data`` at ``path`` as a new inode (write a sibling, then os.replace)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def artifacts_of(store_dir: Path, source: Path) -> dict[str, dict[str, Any]]:
    """kind -> listing entry of ``source``'s artifacts, as a fresh store reads the index."""
    found: dict[str, dict[str, Any]] = {}
    for entry in ArtifactStore(store_dir).entries():
        if entry["source"] == os.path.realpath(source):
            found = {a["kind"]: a for a in entry["artifacts"]}
    return found


def read_index(store_dir: Path) -> dict[str, Any]:
    """The index as on disk, through the strict parser (header, checksum, shape)."""
    return storeindex.parse_index((store_dir / "index.json").read_bytes())


def build_log_lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# --- 1. a cold store and a thundering herd ------------------------------------------------------

HERD_GET_OR_BUILD = """
ready()
store = ArtifactStore(P["store"])  # after the barrier: even creating the store races
stored = store.get_or_build(P["source"], P["kind"], 1, logging_build(P["log"], P["kind"]))
payload = stored.read_bytes()
emit(digest=sha(payload), mapped=sha(stored.map()), built=store.stats.built,
     reused=store.stats.reused)
"""


def test_sixteen_processes_on_a_cold_store_build_once(tmp_path: Path, spawn: Spawn) -> None:
    source = tmp_path / "vmlinux"
    content = os.urandom(256 << 10)
    source.write_bytes(content)
    store_dir, log = tmp_path / "store", tmp_path / "build.log"
    children = [
        spawn(
            f"herd-{i}",
            HERD_GET_OR_BUILD,
            store=str(store_dir),
            source=str(source),
            log=str(log),
            kind=PAYLOAD_KIND,
        )
        for i in range(16)
    ]
    assert not store_dir.exists()

    start_together(children)
    results = [child.receive() for child in children]
    for child in children:
        child.finish_cleanly()
        assert "Warning" not in child.stderr(), child.stderr()

    want = sha(expected_payload(content, PAYLOAD_KIND))
    assert {r["digest"] for r in results} == {want}
    assert {r["mapped"] for r in results} == {want}
    assert len(build_log_lines(log)) == 1
    assert sum(r["built"] for r in results) == 1
    assert sum(r["reused"] for r in results) == 15
    listing = artifacts_of(store_dir, source)
    assert listing[PAYLOAD_KIND]["builds"] == 1
    assert read_index(store_dir)["builds"] == 1
    assert list((store_dir / "tmp").iterdir()) == []


HERD_SNAPSHOT = """
ready()
store = ArtifactStore(P["store"])
view = snapshot(store, P["source"])
emit(digest=sha(view), size=len(view), built=store.stats.built)
"""


def test_sixteen_processes_snapshot_a_large_source_once(tmp_path: Path, spawn: Spawn) -> None:
    source = tmp_path / "vmlinux"
    content = os.urandom(32 << 20)
    source.write_bytes(content)
    store_dir = tmp_path / "store"
    children = [
        spawn(f"snap-{i}", HERD_SNAPSHOT, store=str(store_dir), source=str(source))
        for i in range(16)
    ]

    start_together(children)
    results = [child.receive() for child in children]
    for child in children:
        child.finish_cleanly()

    assert {r["digest"] for r in results} == {sha(content)}
    assert {r["size"] for r in results} == {len(content)}
    assert sum(r["built"] for r in results) == 1
    snap = artifacts_of(store_dir, source)[SNAPSHOT_KIND]
    assert snap["builds"] == 1
    assert snap["size"] == artifact.HEADER_SIZE + len(content)
    assert read_index(store_dir)["builds"] == 1


# --- 2. a build killed mid-write ----------------------------------------------------------------

HANGING_BUILD = """
store = ArtifactStore(P["store"])

def build(path, out):
    with open(P["log"], "a") as f:
        f.write(f"{os.getpid()} hanging\\n")
    out.write(b"partial payload " * 4096)
    out.flush()
    os.fsync(out.fileno())
    emit(building=True)
    command()  # the parent never answers: it SIGKILLs us here, lock held, payload half written
    raise SystemExit("not killed")

store.get_or_build(P["source"], P["kind"], 1, build)
"""


def test_sigkill_mid_build_leaves_no_stale_lock_and_no_torn_entry(
    tmp_path: Path, spawn: Spawn
) -> None:
    source = tmp_path / "vmlinux"
    content = os.urandom(64 << 10)
    source.write_bytes(content)
    store_dir, log = tmp_path / "store", tmp_path / "build.log"

    def build(path: Path, out: BinaryIO) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} recovery\n")
        data = path.read_bytes()
        out.write(PAYLOAD_KIND.encode() + b"\n" + sha(data).encode() + b"\n" + data)

    # Something already published, so "the index is unchanged" means something.
    ArtifactStore(store_dir).get_or_build_json(source, "other", 1, lambda p: p.stat().st_size)
    index_before = (store_dir / "index.json").read_bytes()

    child = spawn(
        "hanging-build",
        HANGING_BUILD,
        store=str(store_dir),
        source=str(source),
        kind=PAYLOAD_KIND,
        log=str(log),
    )
    assert child.receive() == {"building": True}
    debris = list((store_dir / "tmp").iterdir())
    assert len(debris) == 1 and debris[0].name.startswith("build-")
    assert b"partial payload" in debris[0].read_bytes()
    # The child really holds the lock: a short wait for it times out (the wording of that error
    # is test_lock_held_by_a_live_process_is_reported_as_held's business).
    started = time.monotonic()
    with pytest.raises(KernelArtifactError):
        ArtifactStore(store_dir, lock_timeout=0.5).get_or_build(source, PAYLOAD_KIND, 1, build)
    assert time.monotonic() - started >= 0.45

    os.kill(child.pid, signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL

    # Nothing of the half-built artifact was published.
    assert (store_dir / "index.json").read_bytes() == index_before
    assert PAYLOAD_KIND not in artifacts_of(store_dir, source)
    assert [p.name for p in (store_dir / "tmp").iterdir()] == [debris[0].name]

    # The lock died with its holder: a new store gets it at once and builds again.
    recovering = ArtifactStore(store_dir, lock_timeout=5.0)
    started = time.monotonic()
    stored = recovering.get_or_build(source, PAYLOAD_KIND, 1, build)
    assert time.monotonic() - started < 5.0
    assert recovering.stats.built == 1
    assert stored.read_bytes() == expected_payload(content, PAYLOAD_KIND)
    assert len(build_log_lines(log)) == 2  # the killed build and this one

    index = read_index(store_dir)
    assert index["builds"] == 2  # "other" and the recovery; the killed build never counted
    listing = artifacts_of(store_dir, source)
    assert {kind: a["builds"] for kind, a in listing.items()} == {"other": 1, PAYLOAD_KIND: 1}
    for kind, entry in listing.items():
        artifact.open_artifact(Path(entry["file"]), kind, 1)  # verifies header and checksum
    assert list((store_dir / "tmp").iterdir()) == []  # the debris went with the next build
    # And a third process sees the recovered artifact without building.
    again = ArtifactStore(store_dir, lock_timeout=5.0)
    assert again.get_or_build(source, PAYLOAD_KIND, 1, build).read_bytes() == stored.read_bytes()
    assert again.stats.built == 0
    assert len(build_log_lines(log)) == 2


# --- 3. a mapping held while the world changes under it -----------------------------------------

HOLDER = """
store = ArtifactStore(P["store"])
view = snapshot(store, P["source"])
emit(digest=sha(view), size=len(view))
while (line := command()) == "check":
    emit(digest=sha(view), size=len(view))  # reads every page of the mapping again
if line != "exit":
    raise SystemExit(f"unexpected command {line!r}")
"""


class Holder:
    """A child process holding a snapshot mapping of ``source``, re-reading it on demand."""

    def __init__(self, spawn: Spawn, store_dir: Path, source: Path) -> None:
        self.content = source.read_bytes()
        self.child = spawn("holder", HOLDER, store=str(store_dir), source=str(source))
        assert self.child.receive() == {"digest": sha(self.content), "size": len(self.content)}
        self.file = Path(artifacts_of(store_dir, source)[SNAPSHOT_KIND]["file"])
        assert self.file.exists()

    def assert_still_old(self) -> None:
        self.child.send("check")
        assert self.child.receive() == {"digest": sha(self.content), "size": len(self.content)}

    def exit(self) -> None:
        self.child.send("exit")
        self.child.finish_cleanly()  # exit 0: no SIGBUS


def fresh_lookup(store_dir: Path, source: Path, window: int = RACY_WINDOW_NS) -> bytes:
    """The source's bytes as a new bytes cache over the store's snapshots serves them."""
    store = ArtifactStore(store_dir, racy_window_ns=window)
    cache = VmlinuxBytesCache(racy_window_ns=window, loader=SnapshotLoader(store))
    return bytes(cache.get(source))


def test_mapping_survives_source_replaced_by_rename(tmp_path: Path, spawn: Spawn) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    source.write_bytes(os.urandom(4 << 20))
    holder = Holder(spawn, store_dir, source)

    new = os.urandom(1 << 20)  # shorter: a mapping of the source itself would fault past EOF
    replace_file(source, new)
    holder.assert_still_old()
    assert fresh_lookup(store_dir, source) == new
    assert not holder.file.exists()  # the rebuild unlinked the snapshot the holder maps
    holder.assert_still_old()
    holder.exit()


def test_mapping_survives_source_truncated_and_rewritten_in_place(
    tmp_path: Path, spawn: Spawn
) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    source.write_bytes(os.urandom(4 << 20))
    holder = Holder(spawn, store_dir, source)
    inode = source.stat().st_ino

    new = os.urandom(1 << 20)
    with open(source, "r+b") as f:  # what `cp new vmlinux` does: O_TRUNC, then write
        f.truncate(0)
        f.flush()
        holder.assert_still_old()  # the source is empty right now
        f.write(new)
    assert source.stat().st_ino == inode
    holder.assert_still_old()
    assert fresh_lookup(store_dir, source) == new
    assert not holder.file.exists()
    holder.assert_still_old()
    holder.exit()


def test_mapping_survives_store_clear(tmp_path: Path, spawn: Spawn) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    source.write_bytes(os.urandom(4 << 20))
    holder = Holder(spawn, store_dir, source)

    assert ArtifactStore(store_dir).clear() == 1
    assert list((store_dir / "artifacts").iterdir()) == []
    assert not (store_dir / "index.json").exists()
    holder.assert_still_old()
    assert fresh_lookup(store_dir, source) == holder.content  # rebuilt from the same source
    holder.assert_still_old()
    holder.exit()


def test_mapping_survives_eviction(tmp_path: Path, spawn: Spawn) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    source.write_bytes(os.urandom(4 << 20))
    holder = Holder(spawn, store_dir, source)

    other = tmp_path / "vmlinux-other"
    other.write_bytes(os.urandom(2 << 20))
    tiny = ArtifactStore(store_dir, max_size=1)  # anything but the newest artifact must go
    assert bytes(snapshot(tiny, other)) == other.read_bytes()
    assert not holder.file.exists()
    assert SNAPSHOT_KIND not in artifacts_of(store_dir, source)
    holder.assert_still_old()
    holder.exit()


# --- 4. same size, same mtime, other bytes ------------------------------------------------------

ONE_SNAPSHOT = """
store = ArtifactStore(P["store"], racy_window_ns=P["window"])
view = snapshot(store, P["source"])
emit(digest=sha(view), built=store.stats.built)
"""


@pytest.mark.parametrize("window", [RACY_WINDOW_NS, 0], ids=["racy-window", "no-racy-window"])
def test_in_place_rewrite_keeping_mtime_is_seen_by_the_next_process(
    tmp_path: Path, spawn: Spawn, window: int
) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    old, new = os.urandom(1 << 20), os.urandom(1 << 20)
    source.write_bytes(old)
    os.utime(source, ns=(LONG_AGO_NS, LONG_AGO_NS))  # as if built long ago
    before = source.stat()
    params = {"store": str(store_dir), "source": str(source), "window": window}

    first = spawn("first", ONE_SNAPSHOT, **params)
    assert first.receive() == {"digest": sha(old), "built": 1}
    first.finish_cleanly()

    with open(source, "r+b") as f:  # same inode, same size, other bytes
        f.write(new)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = source.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )

    second = spawn("second", ONE_SNAPSHOT, **params)
    assert second.receive() == {"digest": sha(new), "built": 1}
    second.finish_cleanly()

    third = spawn("third", ONE_SNAPSHOT, **params)  # and it is now what the store holds
    assert third.receive() == {"digest": sha(new), "built": 0}
    third.finish_cleanly()


# --- 5. different sources, concurrently ---------------------------------------------------------

OWN_SOURCE = """
ready()
store = ArtifactStore(P["store"])
digests = {}
for kind in ("kind-a", "kind-b"):
    stored = store.get_or_build(P["source"], kind, 1, logging_build(P["log"], kind))
    digests[kind] = sha(stored.read_bytes())
emit(digests=digests, built=store.stats.built)
"""


@pytest.mark.parametrize("processes", [2, 8])
def test_concurrent_builds_of_different_sources_lose_no_index_update(
    tmp_path: Path, spawn: Spawn, processes: int
) -> None:
    store_dir, log = tmp_path / "store", tmp_path / "build.log"
    sources: list[tuple[Path, bytes]] = []
    for i in range(processes):
        path = tmp_path / f"vmlinux-{i}"
        content = os.urandom(64 << 10)
        path.write_bytes(content)
        sources.append((path, content))
    children = [
        spawn(f"own-{i}", OWN_SOURCE, store=str(store_dir), source=str(path), log=str(log))
        for i, (path, _) in enumerate(sources)
    ]

    start_together(children)
    results = [child.receive() for child in children]
    for child in children:
        child.finish_cleanly()

    kinds = ("kind-a", "kind-b")
    for (_, content), result in zip(sources, results, strict=True):
        assert result["built"] == 2
        assert result["digests"] == {k: sha(expected_payload(content, k)) for k in kinds}
    assert len(build_log_lines(log)) == 2 * processes
    index = read_index(store_dir)
    assert index["builds"] == 2 * processes
    assert set(index["sources"]) == {os.path.realpath(path) for path, _ in sources}
    for path, content in sources:
        listing = artifacts_of(store_dir, path)
        assert {kind: a["builds"] for kind, a in listing.items()} == {k: 1 for k in kinds}
        for kind, entry in listing.items():
            found = artifact.open_artifact(Path(entry["file"]), kind, 1)
            assert found.read_bytes() == expected_payload(content, kind)


# --- 6. readers while a writer keeps rebuilding -------------------------------------------------

VERSIONS = 16
VERSION_SIZE = 256 << 10
READERS = 4


def fill(version: int) -> int:
    return 0x40 + version  # never 0: a zero-filled (sparse, torn) payload cannot pass for one


WRITER = """
store = ArtifactStore(P["store"], racy_window_ns=P["window"])
ready()
source = Path(P["source"])
for version in range(1, P["versions"] + 1):
    fill = 0x40 + version
    tmp = source.with_name(source.name + ".new")
    tmp.write_bytes(bytes([fill]) * P["size"])
    os.replace(tmp, source)
    if bytes(snapshot(store, source)) != bytes([fill]) * P["size"]:
        raise SystemExit(f"writer: version {version} did not read back")
    # Go on once some reader has seen this version (bounded; the readers never stop reading).
    deadline = time.monotonic() + 30
    while str(fill) not in Path(P["acks"]).read_text().split():
        if time.monotonic() > deadline:
            raise SystemExit(f"writer: no reader saw version {version}")
        time.sleep(0.002)
Path(P["done"]).touch()
emit(versions=P["versions"], built=store.stats.built)
"""

READER = """
store = ArtifactStore(P["store"], racy_window_ns=P["window"])
cache = VmlinuxBytesCache(racy_window_ns=P["window"], loader=SnapshotLoader(store))
ready()
size, allowed = P["size"], set(P["fills"])
sequence, bad, held = [], [], {}

def look(view):
    data = bytes(view)
    first = data[0] if data else None
    if len(data) != size or first not in allowed or data.count(bytes([first])) != size:
        bad.append([len(data), first, sorted(set(data))[:8]])
        return
    if not sequence or sequence[-1] != first:
        sequence.append(first)
    if first not in held:
        held[first] = view
        with open(P["acks"], "a") as f:
            f.write(f"{first}\\n")

done, reads = Path(P["done"]), 0
while not done.exists():
    look(snapshot(store, P["source"]) if reads % 2 == 0 else cache.get(P["source"]))
    reads += 1
final = bytes(snapshot(store, P["source"]))
stale = [fill for fill, view in held.items() if bytes(view) != bytes([fill]) * size]
emit(reads=reads, sequence=sequence, bad=bad, final=[final[0], final.count(final[:1])],
     stale_held=stale, built=store.stats.built)
"""


@pytest.mark.parametrize("window", [RACY_WINDOW_NS, 0], ids=["racy-window", "no-racy-window"])
def test_readers_during_rebuilds_see_only_whole_versions(
    tmp_path: Path, spawn: Spawn, window: int
) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    acks, done = tmp_path / "acks", tmp_path / "done"
    acks.write_text("")
    source.write_bytes(bytes([fill(0)]) * VERSION_SIZE)
    params = {
        "store": str(store_dir),
        "source": str(source),
        "window": window,
        "size": VERSION_SIZE,
        "acks": str(acks),
        "done": str(done),
    }
    readers = [
        spawn(
            f"reader-{i}",
            READER,
            fills=[fill(v) for v in range(VERSIONS + 1)],
            **params,
        )
        for i in range(READERS)
    ]
    writer = spawn("writer", WRITER, versions=VERSIONS, **params)

    start_together([writer, *readers])
    message = writer.receive()
    assert message["versions"] == VERSIONS
    writer_built = message["built"]
    writer.finish_cleanly()
    results = [reader.receive() for reader in readers]
    for reader in readers:
        reader.finish_cleanly()
        # A warning would mean a reader met a torn or corrupt artifact, or mistook a race for one.
        assert "StoreWarning" not in reader.stderr()

    last = fill(VERSIONS)
    seen: set[int] = set()
    for result in results:
        assert result["bad"] == []
        assert result["stale_held"] == []
        assert result["reads"] > 0
        sequence = result["sequence"]
        assert sequence == sorted(sequence), "a reader went back to an older version"
        assert result["final"] == [last, VERSION_SIZE]
        seen.update(sequence)
    assert seen >= {fill(v) for v in range(1, VERSIONS + 1)}  # the writer waited for each
    assert fresh_lookup(store_dir, source, window) == bytes([last]) * VERSION_SIZE
    # Each version was built once, by whoever got the lock first (version 0 only if a reader
    # looked before the writer's first replace); the index counted every one of those builds.
    built = writer_built + sum(result["built"] for result in results)
    assert VERSIONS <= built <= VERSIONS + 1
    assert read_index(store_dir)["builds"] == built


# --- once library bugs, now regressions ----------------------------------------------------------

STORED_THEN_MAPPED = """
from pytest_ktstr_vmlinux.store.snapshot import SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot
store = ArtifactStore(P["store"])
# Exactly what snapshot() does, split at the point where another process can run in between.
stored = store.get_or_build(P["source"], SNAPSHOT_KIND, SNAPSHOT_VERSION, build_snapshot)
emit(found=str(stored.file.path))
wait_for("map")
try:
    emit(digest=sha(stored.map()))
except OSError as e:
    emit(error=repr(e))
"""


def test_mapping_an_artifact_a_rebuild_just_unlinked(tmp_path: Path, spawn: Spawn) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    old = os.urandom(1 << 20)
    source.write_bytes(old)
    child = spawn("mapper", STORED_THEN_MAPPED, store=str(store_dir), source=str(source))
    found = Path(child.receive()["found"])

    replace_file(source, os.urandom(1 << 20))
    snapshot(ArtifactStore(store_dir), source)  # another process's rebuild: unlinks `found`
    assert not found.exists()

    child.send("map")
    result = child.receive()
    child.finish_cleanly()
    assert result == {"digest": sha(old)}


def test_lock_held_by_a_live_process_is_reported_as_held(tmp_path: Path, spawn: Spawn) -> None:
    source, store_dir = tmp_path / "vmlinux", tmp_path / "store"
    source.write_bytes(b"vmlinux")
    child = spawn(
        "holder-of-the-lock",
        HANGING_BUILD,
        store=str(store_dir),
        source=str(source),
        kind=PAYLOAD_KIND,
        log=str(tmp_path / "build.log"),
    )
    assert child.receive() == {"building": True}
    with pytest.raises(KernelArtifactError) as caught:
        ArtifactStore(store_dir, lock_timeout=0.2).get_or_build_json(source, "other", 1, str)
    os.kill(child.pid, signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    message = str(caught.value)
    assert "still held" in message, message
    assert "remove it" not in message, message  # the holder is alive: removing it is wrong

"""The in-process bytes cache: hits, invalidation, racy entries, errors, threads, torn reads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux import KernelArtifactError, cached_vmlinux_bytes, load_vmlinux_bytes
from pytest_ktstr_vmlinux.store.bytescache import (
    MAX_READ_ATTEMPTS,
    VmlinuxBytesCache,
    default_cache,
)
from pytest_ktstr_vmlinux.store.signature import StatSignature
from tests.helpers.fakes import run_without_dac_override

LONG_AGO_NS = 86_400 * 1_000_000_000


def _age(path: Path, mtime_ns: int = LONG_AGO_NS) -> None:
    """Put mtime far in the past so the entry is not racy (as a file built minutes ago)."""
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _settle(cache: VmlinuxBytesCache, path: Path) -> None:
    """Mark the entry as verified long after its file changed, as time passing would."""
    entry = cache._entries[os.path.realpath(path)]
    entry.verified_ns = entry.signature.changed_ns + 2 * cache.racy_window_ns


# --- the seed's tests, ported -------------------------------------------------------------------


def test_hit_returns_the_same_object(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux-test-cache"
    vmlinux.write_bytes(b"FAKE_VMLINUX_BYTES")
    cache = VmlinuxBytesCache()
    first = cache.get(vmlinux)
    _settle(cache, vmlinux)
    second = cache.get(vmlinux)
    assert bytes(first) == b"FAKE_VMLINUX_BYTES"
    assert first is second
    assert cache.stats.reads == 1 and cache.stats.hits == 1


def test_missing_returns_none_and_caches_nothing(tmp_path: Path) -> None:
    assert cached_vmlinux_bytes(tmp_path / "missing-xyzzy") is None
    assert len(default_cache()) == 0


def test_symlinks_to_one_file_share_one_entry(tmp_path: Path) -> None:
    real = tmp_path / "vmlinux-real"
    real.write_bytes(b"SYMLINK_DEDUP_BYTES")
    _age(real)
    (tmp_path / "a").symlink_to(real)
    (tmp_path / "b").symlink_to(real)
    via_a = cached_vmlinux_bytes(tmp_path / "a")
    via_b = cached_vmlinux_bytes(tmp_path / "b")
    assert via_a is not None and via_a is via_b
    assert len(default_cache()) == 1


def test_dangling_symlink_returns_none_and_caches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "vmlinux-gone"
    target.write_bytes(b"ELF")
    link = tmp_path / "vmlinux-dangling"
    link.symlink_to(target)
    target.unlink()
    assert cached_vmlinux_bytes(link) is None
    assert len(default_cache()) == 0
    with pytest.raises(KernelArtifactError, match="dangling symlink"):
        load_vmlinux_bytes(link)


def test_mtime_change_invalidates(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux-mtime-test"
    vmlinux.write_bytes(b"FIRST_BYTES")
    _age(vmlinux, LONG_AGO_NS * 2)
    first = load_vmlinux_bytes(vmlinux)
    vmlinux.write_bytes(b"SECOND_BYTES_DIFFERENT")
    _age(vmlinux)
    second = load_vmlinux_bytes(vmlinux)
    assert bytes(second) == b"SECOND_BYTES_DIFFERENT"
    assert first is not second
    assert bytes(first) == b"FIRST_BYTES"  # what a caller already holds never changes under it


# --- beyond the seed -----------------------------------------------------------------------------


def test_same_mtime_rewrite_with_new_size_is_detected(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * 100)
    _age(vmlinux)
    cache = VmlinuxBytesCache()
    assert cache.get(vmlinux) == b"A" * 100
    vmlinux.write_bytes(b"B" * 101)
    _age(vmlinux)  # utime back: mtime equal, as on a 1-second filesystem
    assert cache.get(vmlinux) == b"B" * 101


def test_same_size_same_mtime_rewrite_is_detected_by_ctime(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * 100)
    _age(vmlinux)
    cache = VmlinuxBytesCache()
    before = os.stat(vmlinux)
    assert cache.get(vmlinux) == b"A" * 100
    _settle(cache, vmlinux)
    with open(vmlinux, "r+b") as f:
        f.write(b"B" * 100)
    _age(vmlinux)
    after = os.stat(vmlinux)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert cache.get(vmlinux) == b"B" * 100


def test_replaced_file_is_detected_by_inode(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"old build")
    _age(vmlinux)
    cache = VmlinuxBytesCache()
    assert bytes(cache.get(vmlinux)) == b"old build"
    new = tmp_path / "vmlinux.tmp"
    new.write_bytes(b"new build")
    _age(new)
    os.replace(new, vmlinux)
    assert bytes(cache.get(vmlinux)) == b"new build"


def test_racy_entry_is_reverified_by_content(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * 64)  # just written: its entry is racy
    cache = VmlinuxBytesCache()
    first = cache.get(vmlinux)
    second = cache.get(vmlinux)
    assert cache.stats.racy_checks == 1
    assert second is first  # same content: the object callers hold is kept


def test_racy_rewrite_invisible_to_stat_is_caught(tmp_path: Path) -> None:
    # A same-size rewrite within one timestamp tick leaves the whole signature unchanged; the
    # filesystem here has finer timestamps, so the entry is told the new signature is its own.
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * 64)
    cache = VmlinuxBytesCache()
    assert cache.get(vmlinux) == b"A" * 64
    with open(vmlinux, "r+b") as f:
        f.write(b"B" * 64)
    key = os.path.realpath(vmlinux)
    cache._entries[key].signature = StatSignature.from_stat(os.stat(vmlinux))
    assert cache.get(vmlinux) == b"B" * 64
    assert cache.stats.racy_checks == 1


def test_entry_older_than_the_window_is_not_reverified(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"settled")
    _age(vmlinux)
    cache = VmlinuxBytesCache()
    first = cache.get(vmlinux)
    # ctime is "now", so settle the entry as a later lookup after the window would.
    _settle(cache, vmlinux)
    assert cache.get(vmlinux) is first
    assert (cache.stats.reads, cache.stats.racy_checks) == (1, 0)


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_errors_are_not_cached_and_do_not_poison(tmp_path: Path, make: str) -> None:
    vmlinux = tmp_path / "vmlinux"
    if make == "directory":
        vmlinux.mkdir()
    with pytest.raises(KernelArtifactError, match=str(vmlinux)):
        load_vmlinux_bytes(vmlinux)
    assert len(default_cache()) == 0
    if make == "directory":
        vmlinux.rmdir()
    vmlinux.write_bytes(b"now it exists")
    assert bytes(load_vmlinux_bytes(vmlinux)) == b"now it exists"


def test_eacces_is_not_cached(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"secret")
    vmlinux.chmod(0o000)
    code = (
        "import sys, os\n"
        "from pytest_ktstr_vmlinux import cached_vmlinux_bytes, KernelArtifactError\n"
        "from pytest_ktstr_vmlinux.store.bytescache import default_cache, load_vmlinux_bytes\n"
        "p = sys.argv[1]\n"
        "assert cached_vmlinux_bytes(p) is None and len(default_cache()) == 0\n"
        "try:\n"
        "    load_vmlinux_bytes(p)\n"
        "except KernelArtifactError as e:\n"
        "    print(e)\n"
        "os.chmod(p, 0o444)  # the owner may chmod: the transient EACCES goes away\n"
        "print(bytes(load_vmlinux_bytes(p)).decode())\n"
    )
    result = run_without_dac_override([sys.executable, "-c", code, str(vmlinux)])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"{vmlinux}: permission denied; make it readable (chmod a+r) or run as a user who can"
    )
    assert lines[1] == "secret"


def test_eight_threads_one_read_one_object(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(os.urandom(4 << 20))
    # No racy window: the file is not being written, so every lookup but one must be a hit.
    cache = VmlinuxBytesCache(racy_window_ns=0)
    barrier = threading.Barrier(8)
    results: list[memoryview] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            view = cache.get(vmlinux)
            with lock:
                results.append(view)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 400
    assert len({id(v) for v in results}) == 1
    assert cache.stats.reads == 1
    assert results[0] == vmlinux.read_bytes()


def test_returned_bytes_are_read_only_and_copyable(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF rest")
    data = load_vmlinux_bytes(vmlinux)
    assert data.readonly and len(data) == 9 and bytes(data[:4]) == b"\x7fELF"
    copy = bytes(data)
    assert copy == b"\x7fELF rest" and isinstance(copy, bytes)
    with pytest.raises(TypeError):
        data[0] = 0


def test_file_that_never_holds_still_gives_a_clear_error() -> None:
    # procfs files report st_size 0 yet yield data: every read looks torn.
    with pytest.raises(KernelArtifactError, match=f"changed {MAX_READ_ATTEMPTS} times"):
        VmlinuxBytesCache().get("/proc/self/status")


REPLACER = """
import os, sys
path, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    tmp = f"{path}.{i}.tmp"
    with open(tmp, "wb") as f:
        f.write(b"AB"[i % 2 : i % 2 + 1] * (1 << 20))
    os.replace(tmp, path)  # how an atomic publisher (and the store) replaces a file
"""

REWRITER = """
import os, sys
path, rounds = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
for i in range(rounds):
    os.pwrite(fd, b"AB"[i % 2 : i % 2 + 1] * (1 << 20), 0)  # in place, as `cp` over it does
os.pwrite(fd, b"Z" * (1 << 20), 0)
os.close(fd)
"""


def _hammer(cache: VmlinuxBytesCache, path: Path, writer: subprocess.Popen[bytes]) -> list[bytes]:
    """Look the file up until the writer exits; the distinct first bytes seen."""
    seen: list[bytes] = []
    try:
        while writer.poll() is None:
            try:
                data = cache.get(path)
            except KernelArtifactError as e:
                assert "changed" in str(e)  # a clear error is allowed; wrong bytes are not
                continue
            seen.append(data.tobytes())
    finally:
        writer.wait()
    assert writer.returncode == 0
    return seen


def test_reads_during_rename_over_replacements_are_never_torn(tmp_path: Path) -> None:
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * (1 << 20))
    writer = subprocess.Popen([sys.executable, "-c", REPLACER, str(vmlinux), "300"])
    seen = _hammer(VmlinuxBytesCache(), vmlinux, writer)
    for data in seen:
        assert data == data[:1] * len(data), "a torn read was handed out"
    assert bytes(VmlinuxBytesCache().get(vmlinux)) == b"B" * (1 << 20)


def test_in_place_rewrites_are_never_served_stale_after_the_writer_stops(tmp_path: Path) -> None:
    # While an in-place writer runs, its intermediate states are real file contents; once it
    # stops, the next lookup must return exactly what is on disk, whatever the loop cached.
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"A" * (1 << 20))
    cache = VmlinuxBytesCache()
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(vmlinux), "300"])
    _hammer(cache, vmlinux, writer)
    assert bytes(cache.get(vmlinux)) == b"Z" * (1 << 20)

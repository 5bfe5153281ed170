"""The store as users meet it: real xdist workers sharing one build, summary, options, fallbacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.fakes import banner_for, build_id_for, make_build_tree, write_vmlinux

ALL_ONCE = {"vmlinux-snapshot": 1, "test-digest": 1, "image-identity": 1, "vmlinux-identity": 1}

CONFTEST = """
import hashlib, json, os
from pathlib import Path
import pytest

def _size_and_digest(path):
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

@pytest.fixture(scope="session")
def vmlinux_digest(kernel_store, vmlinux_path):
    # A derived artifact, built through the store like the plugin's own.
    return kernel_store.get_or_build_json(vmlinux_path, "test-digest", 1, _size_and_digest)
"""

WORKER_TEST = """
import hashlib, json, os
from pathlib import Path

def test_worker(vmlinux_bytes, vmlinux_digest, vmlinux_path):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    seen = {
        "worker": worker,
        "bytes": hashlib.sha256(vmlinux_bytes).hexdigest(),
        "derived": vmlinux_digest,
        "readonly": vmlinux_bytes.readonly,
    }
    Path(os.environ["RESULTS"], worker).write_text(json.dumps(seen))
    assert bytes(vmlinux_bytes) == vmlinux_path.read_bytes()
"""


@pytest.fixture
def kernel_tree(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    tree = make_build_tree(pytester.path / "linux")
    (tree / "vmlinux").write_bytes((tree / "vmlinux").read_bytes() + os.urandom(1 << 20))
    results = pytester.mkdir("results")
    monkeypatch.setenv("RESULTS", str(results))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_worker=WORKER_TEST)
    return tree


def _store_dir() -> Path:
    return Path(os.environ["KTSTR_CACHE_DIR"])


def _builds(store_dir: Path) -> dict[str, int]:
    return {
        item["kind"]: item["builds"]
        for entry in ArtifactStore(store_dir).entries()
        for item in entry["artifacts"]
    }


def _results(pytester: pytest.Pytester) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((pytester.path / "results").iterdir())]


@pytest.mark.parametrize("workers", [4, 8])
def test_every_worker_shares_one_build(
    pytester: pytest.Pytester, kernel_tree: Path, workers: int
) -> None:
    result = pytester.runpytest_subprocess(
        "-n", str(workers), "--dist=each", f"--kernel={kernel_tree}"
    )
    result.assert_outcomes(passed=workers)
    seen = _results(pytester)
    assert sorted(str(s["worker"]) for s in seen) == [f"gw{i}" for i in range(workers)]
    assert len({json.dumps(s, sort_keys=True).replace(str(s["worker"]), "") for s in seen}) == 1
    assert all(s["readonly"] for s in seen)
    # The record the store keeps: each artifact was built once for all workers.
    assert _builds(_store_dir()) == ALL_ONCE
    # The controller identifies image and vmlinux (2 builds); every worker looks up both
    # identities, the snapshot and the derived digest (4 lookups), all but 2 of them reused.
    summary = f"ktstr: artifacts built 4, reused {4 * workers - 2} (store: {_store_dir()})"
    assert result.stdout.lines.count(summary) == 1, result.stdout.str()

    again = pytester.runpytest_subprocess("-n", "2", "--dist=each", f"--kernel={kernel_tree}")
    again.assert_outcomes(passed=2)
    again.stdout.fnmatch_lines(["ktstr: artifacts built 0, reused 10 (store: *)"])
    assert _builds(_store_dir()) == ALL_ONCE


def test_rebuilt_vmlinux_is_rebuilt_once(pytester: pytest.Pytester, kernel_tree: Path) -> None:
    pytester.runpytest_subprocess("-n", "2", "--dist=each", f"--kernel={kernel_tree}")
    vmlinux = kernel_tree / "vmlinux"
    new = vmlinux.with_name("vmlinux.new")
    # The same build (build-id, banner) relinked with other contents.
    banner = banner_for("6.1.0-test")
    write_vmlinux(new, os.urandom(8192), build_id=build_id_for("6.1.0-test"), banner=banner)
    os.replace(new, vmlinux)
    result = pytester.runpytest_subprocess("-n", "2", "--dist=each", f"--kernel={kernel_tree}")
    result.assert_outcomes(passed=2)
    # Rebuilt once each: the vmlinux's identity, snapshot and digest; the image's is reused.
    result.stdout.fnmatch_lines(["ktstr: artifacts built 3, reused 7 (store: *)"])
    entries = {e["source"]: e for e in ArtifactStore(_store_dir()).entries()}
    assert len(entries) == 2  # the image's, and the new vmlinux's; the old one's files are gone
    assert entries[str(vmlinux)]["signature"][2] == vmlinux.stat().st_size


def test_no_kernel_cache_keeps_everything_in_process(
    pytester: pytest.Pytester, kernel_tree: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist=each", f"--kernel={kernel_tree}", "--no-kernel-cache"
    )
    result.assert_outcomes(passed=2)
    # Every process identified the kernel itself and each worker built the derived artifact;
    # vmlinux_bytes was a private read.
    result.stdout.fnmatch_lines(["ktstr: artifacts built 8, reused 0 (store: in-process)"])
    assert not any(_store_dir().iterdir())


def test_kernel_cache_clear(pytester: pytest.Pytester, kernel_tree: Path) -> None:
    pytester.runpytest_subprocess("-n", "2", "--dist=each", f"--kernel={kernel_tree}")
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist=each", f"--kernel={kernel_tree}", "--kernel-cache-clear"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["ktstr: artifacts built 4, reused 6 (store: *)"])


@pytest.mark.parametrize("plugin", ["no:xdist", "no:cacheprovider"])
def test_store_without_other_plugins(
    pytester: pytest.Pytester, kernel_tree: Path, plugin: str
) -> None:
    result = pytester.runpytest_subprocess("-p", plugin, f"--kernel={kernel_tree}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"ktstr: artifacts built 4, reused 0 (store: {_store_dir()})"])


def test_store_dir_precedence(
    pytester: pytest.Pytester, kernel_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nktstr_cache_dir = from-ini\n")
    monkeypatch.delenv("KTSTR_CACHE_DIR")
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    result.stdout.fnmatch_lines([f"*(store: {pytester.path / 'from-ini'})"])
    monkeypatch.setenv("KTSTR_CACHE_DIR", str(pytester.path / "from-env"))
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    result.stdout.fnmatch_lines([f"*(store: {pytester.path / 'from-env'})"])
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}", "--kernel-cache-dir=opt")
    result.stdout.fnmatch_lines([f"*(store: {pytester.path / 'opt'})"])
    assert (pytester.path / "from-ini").stat().st_mode & 0o777 == 0o700


def test_insecure_store_dir_is_a_usage_error(pytester: pytest.Pytester, kernel_tree: Path) -> None:
    _store_dir().chmod(0o777)
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: ktstr: kernel cache {_store_dir()} has mode 0777*"])
    assert "chmod 700" in result.stderr.str()


def test_unwritable_store_falls_back_with_one_warning(
    pytester: pytest.Pytester, kernel_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = pytester.path / "not-a-dir"
    blocker.write_text("a file where the cache's parent should be")
    monkeypatch.setenv("KTSTR_CACHE_DIR", str(blocker / "store"))
    result = pytester.runpytest_subprocess("-n", "2", "--dist=each", f"--kernel={kernel_tree}")
    result.assert_outcomes(passed=2, warnings=1)
    assert result.stdout.str().count("keeping kernel artifacts in-process") == 1
    result.stdout.fnmatch_lines(["ktstr: artifacts built 8, reused 0 (store: in-process)"])


def test_bad_max_size_is_a_usage_error(
    pytester: pytest.Pytester, kernel_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTSTR_CACHE_MAX_SIZE", "lots")
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ktstr: kernel cache max size (from env): not a size*"])


def test_max_size_evicts(
    pytester: pytest.Pytester, kernel_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cap below the snapshot's size: the snapshot (mapped by the test, which still passes)
    # is evicted when the derived artifact is built after it.
    monkeypatch.setenv("KTSTR_CACHE_MAX_SIZE", "64K")
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    result.assert_outcomes(passed=1)
    store = ArtifactStore(_store_dir())
    assert _builds(_store_dir()) == {"test-digest": 1}
    assert 0 < store.total_size() <= 64 << 10

"""A path the store hands out stays valid while it is in use: eviction under a small cap, in
this process, another process or another run, never removes an export that a process serves.

Real processes talk to the test over pipes (tests/helpers/children.py), so the
order of serve, evict and check is the test's, not the scheduler's; a pytest run reproduces the
reported case (``KTSTR_CACHE_MAX_SIZE`` with ``--kernel-allow-extracted``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.children import Spawn
from tests.helpers.fakes import make_build_tree
from tests.helpers.kernels import DebianKernel, debian_image_alone

FILLER_TEST = """
import hashlib, json, os
from pathlib import Path

def test_extracted_then_more_artifacts(vmlinux_path, kernel_store, tmp_path):
    before = hashlib.sha256(vmlinux_path.read_bytes()).hexdigest()
    # Each filler (128 KiB of JSON) alone is over the cap.
    # Artifacts built after it push the store over its cap: eviction runs at each build.
    for n in range(3):
        source = tmp_path / f"filler-{n}"
        source.write_bytes(os.urandom(64 << 10))
        kernel_store.get_or_build_json(source, "filler", 1, lambda p: p.read_bytes().hex())
    assert vmlinux_path.exists(), vmlinux_path
    assert hashlib.sha256(vmlinux_path.read_bytes()).hexdigest() == before
    Path(os.environ["REPORT"]).write_text(json.dumps({"path": str(vmlinux_path)}))
"""


def test_eviction_keeps_the_extracted_vmlinux_a_run_uses(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_build_tree(pytester.path / "linux", vmlinux=False)
    report = pytester.path / "report.json"
    monkeypatch.setenv("REPORT", str(report))
    monkeypatch.setenv("KTSTR_CACHE_MAX_SIZE", "100K")  # below the fillers' total
    pytester.makepyfile(FILLER_TEST)
    result = pytester.runpytest_subprocess("--kernel=linux", "--kernel-allow-extracted")
    result.assert_outcomes(passed=1)
    store_dir = Path(os.environ["KTSTR_CACHE_DIR"])
    assert _kinds(store_dir) == {"filler", "image-payload"}  # the newest, and the pinned one
    export = Path(json.loads(report.read_text())["path"])
    assert export.parent == store_dir / "exports"

    # The run is over: its pin went with it, and the next eviction may remove the export.
    source = pytester.path / "filler"
    source.write_bytes(os.urandom(64 << 10))
    ArtifactStore(store_dir, max_size=100 << 10).get_or_build_json(source, "filler", 1, _filler)
    assert not export.exists()
    assert _kinds(store_dir) == {"filler"}


def _kinds(store_dir: Path) -> set[str]:
    return {a["kind"] for entry in ArtifactStore(store_dir).entries() for a in entry["artifacts"]}


def _filler(path: Path) -> str:
    """64 KiB of JSON: with a 100 KiB cap, each filler built evicts every older artifact."""
    return hashlib.sha256(path.read_bytes()).hexdigest() * 1000


@pytest.mark.real_kernel
def test_eviction_keeps_the_debian_extracted_vmlinux(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As reported: a cap below the image's payload (53 MB) plus its BTF index.
    image = debian_image_alone(pytester, debian_kernel)
    monkeypatch.setenv("KTSTR_CACHE_MAX_SIZE", "55M")
    pytester.makepyfile(REAL_TEST)
    result = pytester.runpytest_subprocess(f"--kernel={image}", "--kernel-allow-extracted")
    result.assert_outcomes(passed=1)


REAL_TEST = """
import hashlib
from pathlib import Path

def test_btf_then_another_artifact(vmlinux_path, kernel_btf, kernel_store, tmp_path):
    before = hashlib.sha256(vmlinux_path.read_bytes()).hexdigest()
    assert kernel_btf.offsetof("struct task_struct", "pid") > 0  # its BTF index: over the cap
    source = tmp_path / "filler"
    source.write_bytes(b"x")
    kernel_store.get_or_build_json(source, "filler", 1, lambda p: "y")
    assert hashlib.sha256(vmlinux_path.read_bytes()).hexdigest() == before
"""


# --- two processes --------------------------------------------------------------------------------

HOLDER = """
from pytest_ktstr_vmlinux.kernel.resolve import resolve_kernel
from pytest_ktstr_vmlinux.store.choose import open_store

store, _ = open_store(P["store"], max_size=P["max_size"])
kernel = resolve_kernel(P["tree"], store=store, allow_extracted=True)
emit(path=str(kernel.vmlinux), kind=kernel.vmlinux_kind,
     digest=sha(kernel.vmlinux.read_bytes()))
wait_for("check")
path = kernel.vmlinux
emit(exists=path.exists(), digest=sha(path.read_bytes()) if path.exists() else None)
wait_for("exit")
"""


def _fill(store_dir: Path, directory: Path, cap: int, names: str) -> None:
    """Builds in this process under the cap: each one runs an eviction."""
    store = ArtifactStore(store_dir, max_size=cap)
    for name in names:
        source = directory / f"filler-{name}"
        source.write_bytes(os.urandom(64))
        store.get_or_build_json(source, "filler", 1, _filler)


@pytest.mark.parametrize("evictor", ["this-test", "another-child"])
def test_an_export_served_to_one_process_survives_evictions_in_another(
    tmp_path: Path,
    spawn: Spawn,
    evictor: str,
) -> None:
    tree = make_build_tree(tmp_path / "linux", vmlinux=False)
    store_dir, cap = tmp_path / "store", 100 << 10
    holder = spawn("holder", HOLDER, store=str(store_dir), tree=str(tree), max_size=cap)
    served = holder.receive()
    assert served["kind"] == "extracted"
    export = Path(served["path"])
    assert export.parent == store_dir / "exports"

    if evictor == "this-test":
        _fill(store_dir, tmp_path, cap, "abcd")
    else:
        other = spawn("evictor", EVICTOR, store=str(store_dir), dir=str(tmp_path), max_size=cap)
        assert other.receive() == {"filled": 4}
        other.finish_cleanly()
    holder.send("check")
    assert holder.receive() == {"exists": True, "digest": served["digest"]}
    assert _kinds(store_dir) == {"filler", "image-payload"}  # the newest, and the pinned one
    holder.send("exit")
    holder.finish_cleanly()


EVICTOR = """
from pytest_ktstr_vmlinux.store.disk import ArtifactStore

store = ArtifactStore(P["store"], max_size=P["max_size"])
for i in range(4):
    source = Path(P["dir"]) / f"filler-{i}"
    source.write_bytes(os.urandom(64))
    store.get_or_build_json(source, "filler", 1, lambda p: sha(p.read_bytes()) * 1000)
emit(filled=4)
"""


def test_a_crashed_process_pins_nothing(
    tmp_path: Path,
    spawn: Spawn,
) -> None:
    tree = make_build_tree(tmp_path / "linux", vmlinux=False)
    store_dir, cap = tmp_path / "store", 100 << 10
    holder = spawn("holder", HOLDER, store=str(store_dir), tree=str(tree), max_size=cap)
    export = Path(holder.receive()["path"])
    _fill(store_dir, tmp_path, cap, "abc")
    assert export.exists()
    holder.kill()  # SIGKILL: no cleanup ran, and the kernel dropped its flock
    _fill(store_dir, tmp_path, cap, "d")
    assert not export.exists()
    assert _kinds(store_dir) == {"filler"}

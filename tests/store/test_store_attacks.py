"""The store against a hostile or careless filesystem: wrong file types where the store expects
its own files and directories, artifacts forged by another user, and directories that are not a
store at all. Real files, real chown/chmod, real pytest runs (pytester); no mocks.

Every case ends the same way: one clear message (a StoreWarning and a rebuild for damage the
store can repair, a refusal with a fix-it message for what it must not touch), never a traceback,
never bytes the store did not build, never a user's file deleted.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import BinaryIO

import pytest

from pytest_ktstr_vmlinux.formats.symbols import KernelSymbols
from pytest_ktstr_vmlinux.store import artifact
from pytest_ktstr_vmlinux.store.api import InsecureStoreError, NotAStoreError, StoreWarning
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.fakes import make_build_tree

KIND = "echo"
SYMBOLS_KIND = "symbols"


def _build(path: Path, out: BinaryIO) -> None:
    out.write(b"built:" + path.read_bytes())


def _source(tmp_path: Path, content: bytes = b"source-one") -> Path:
    path = tmp_path / "src" / "vmlinux"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _store_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


def _artifact_path(store_dir: Path, kind: str) -> Path:
    for entry in ArtifactStore(store_dir).entries():
        for item in entry["artifacts"]:
            if item["kind"] == kind:
                return Path(item["file"])
    raise AssertionError(f"no {kind} artifact in {store_dir}")


# --- pytest runs ----------------------------------------------------------------------------------

SYMBOLS_TEST = """
def test_symbols(kernel_symbols):
    assert "runqueues" not in kernel_symbols
"""


@pytest.fixture
def kernel_tree(pytester: pytest.Pytester) -> Path:
    tree = make_build_tree(pytester.path / "linux")
    pytester.makepyfile(test_symbols=SYMBOLS_TEST)
    return tree


def _store_dir() -> Path:
    return Path(os.environ["KTSTR_CACHE_DIR"])


def _assert_clean_run(result: pytest.RunResult, warning: str) -> None:
    """Passed, with ``warning`` said exactly once, and no internal error or traceback."""
    out = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    result.assert_outcomes(passed=1, warnings=1)
    assert out.count(warning) == 1, out


# --- 2. wrong file types --------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", ["tmp", "artifacts", "exports"])
def test_store_subdirectory_replaced_by_a_file_is_rebuilt(tmp_path: Path, subdir: str) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    path = directory / subdir
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
    path.write_text("not a directory")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        found = store.get_or_build(src, KIND, 1, _build)
    [message] = _store_warnings(caught)
    assert str(path) in message and "not a directory" in message
    assert found.read_bytes() == b"built:source-one"
    assert path.is_dir() and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize("subdir", ["tmp", "artifacts", "exports"])
def test_plugin_run_with_a_file_for_a_store_subdirectory(
    pytester: pytest.Pytester, kernel_tree: Path, subdir: str
) -> None:
    pytester.runpytest_subprocess(f"--kernel={kernel_tree}").assert_outcomes(passed=1)
    path = _store_dir() / subdir
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
    path.write_text("not a directory")
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    _assert_clean_run(result, f"{path} is not a directory")
    assert path.is_dir()


def test_artifact_replaced_by_a_directory_is_rebuilt(tmp_path: Path) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    target = _artifact_path(directory, KIND)
    target.unlink()
    target.mkdir()
    (target / "inside").write_text("x")

    for _ in range(2):  # once with the warning and a rebuild, then quietly reused
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = ArtifactStore(directory)
            found = store.get_or_build(src, KIND, 1, _build)
        assert found.read_bytes() == b"built:source-one"
        assert target.is_file()
        artifact.open_artifact(target, KIND, 1)
        if _ == 0:
            [message] = _store_warnings(caught)
            assert str(target) in message and "not a regular file" in message
            assert store.stats.built == 1
        else:
            assert _store_warnings(caught) == []
            assert store.stats.reused == 1


def test_plugin_run_with_a_directory_for_the_symbols_artifact(
    pytester: pytest.Pytester, kernel_tree: Path
) -> None:
    pytester.runpytest_subprocess(f"--kernel={kernel_tree}").assert_outcomes(passed=1)
    target = _artifact_path(_store_dir(), SYMBOLS_KIND)
    target.unlink()
    target.mkdir()
    result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    _assert_clean_run(result, f"{target}")
    assert target.is_file()
    again = pytester.runpytest_subprocess(f"--kernel={kernel_tree}")
    again.assert_outcomes(passed=1)
    assert "StoreWarning" not in again.stdout.str()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_lock_of_the_wrong_type_is_replaced(tmp_path: Path, kind: str) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    lock = directory / "lock"
    lock.unlink()
    if kind == "fifo":
        os.mkfifo(lock, 0o600)
    else:
        lock.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        found = store.get_or_build(_source(tmp_path, b"other"), KIND, 1, _build)
    [message] = _store_warnings(caught)
    assert str(lock) in message
    assert found.read_bytes() == b"built:other"
    assert stat.S_ISREG(os.lstat(lock).st_mode)


def test_export_replaced_by_a_directory_is_rebuilt(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = ArtifactStore(tmp_path / "store")
    stored = store.get_or_build(src, KIND, 1, _build)
    path = store.export(stored, ".bin")
    path.unlink()
    path.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ArtifactStore(store.directory).export(stored, ".bin")
    assert again == path
    assert path.read_bytes() == b"built:source-one"
    assert len(_store_warnings(caught)) == 1


def test_subdirectory_symlink_is_still_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    ArtifactStore(directory)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (directory / "exports").rmdir()
    (directory / "exports").symlink_to(elsewhere)
    with pytest.raises(InsecureStoreError, match="symlink"):
        ArtifactStore(directory)


# --- 3. forged artifacts --------------------------------------------------------------------------

OTHER_UID = 65534  # nobody


def _symbols_elf(runqueues: int) -> bytes:
    from tests.helpers.symtab import PERCPU, STT_OBJECT, Sym, build_elf

    return build_elf([Sym("runqueues", runqueues, 0x40, STT_OBJECT, shndx=PERCPU)])


def _forge_symbols(tmp_path: Path, target: Path) -> None:
    """What the attacker did: a whole, checksum-valid symbols artifact saying runqueues is at
    0xdeadbeef, written under the name the store uses for the real vmlinux, and owned by him."""
    forged_elf = tmp_path / "forged" / "vmlinux"
    forged_elf.parent.mkdir()
    forged_elf.write_bytes(_symbols_elf(0xDEADBEEF))
    scratch = ArtifactStore(tmp_path / "attacker-store")
    assert KernelSymbols.from_vmlinux(forged_elf, scratch)["runqueues"] == 0xDEADBEEF
    forged = _artifact_path(scratch.directory, SYMBOLS_KIND)
    target.unlink()
    forged.rename(target)
    os.chown(target, OTHER_UID, OTHER_UID)


@pytest.mark.parametrize("subdir", ["artifacts", "tmp", "exports"])
@pytest.mark.parametrize("how", ["mode-0777", "mode-0770", "mode-0702", "owner"])
def test_every_store_directory_is_checked(tmp_path: Path, subdir: str, how: str) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    path = directory / subdir
    inside = path / f"{'a' * 64}.art"
    inside.write_bytes(b"whatever is in there")
    if how == "owner":
        os.chown(path, OTHER_UID, OTHER_UID)
    else:
        path.chmod(int(how.removeprefix("mode-"), 8))
    with pytest.raises(InsecureStoreError) as excinfo:
        ArtifactStore(directory)
    message = str(excinfo.value)
    assert str(path) in message
    if how == "owner":
        assert f"uid {OTHER_UID}" in message
    else:
        assert how.removeprefix("mode-") in message and "group or others can write" in message
    assert f"`rm -rf {path}`" in message
    assert inside.read_bytes() == b"whatever is in there"  # refused: nothing touched


def test_forged_artifact_in_a_world_writable_store_is_never_served(tmp_path: Path) -> None:
    vmlinux = tmp_path / "linux" / "vmlinux"
    vmlinux.parent.mkdir()
    vmlinux.write_bytes(_symbols_elf(0x1000))
    directory = tmp_path / "store"
    assert KernelSymbols.from_vmlinux(vmlinux, ArtifactStore(directory))["runqueues"] == 0x1000
    artifacts = directory / "artifacts"
    target = _artifact_path(directory, SYMBOLS_KIND)
    artifacts.chmod(0o777)
    _forge_symbols(tmp_path, target)

    with pytest.raises(InsecureStoreError, match=r"artifacts has mode 0777"):
        ArtifactStore(directory)
    # The owner fixes the mode as told, not knowing what was planted: the file is still refused.
    artifacts.chmod(0o700)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        ksyms = KernelSymbols.from_vmlinux(vmlinux, store)
    assert ksyms["runqueues"] == 0x1000
    [message] = _store_warnings(caught)
    assert str(target) in message and f"uid {OTHER_UID}" in message
    assert os.stat(target).st_uid == os.geteuid()
    assert store.stats.built == 1


@pytest.mark.parametrize("how", ["owner", "mode"])
def test_artifact_not_ours_alone_is_rebuilt(tmp_path: Path, how: str) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    target = _artifact_path(directory, KIND)
    if how == "owner":
        os.chown(target, OTHER_UID, OTHER_UID)
    else:
        target.chmod(0o666)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        found = store.get_or_build(src, KIND, 1, _build)
    assert found.read_bytes() == b"built:source-one"
    [message] = _store_warnings(caught)
    assert str(target) in message
    assert store.stats.built == 1
    st = os.stat(target)
    assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o600


def test_index_owned_by_another_user_is_not_trusted(tmp_path: Path) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "store"
    ArtifactStore(directory).get_or_build(src, KIND, 1, _build)
    index = directory / "index.json"
    os.chown(index, OTHER_UID, OTHER_UID)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        found = store.get_or_build(src, KIND, 1, _build)
    assert found.read_bytes() == b"built:source-one"
    [message] = _store_warnings(caught)
    assert str(index) in message and f"uid {OTHER_UID}" in message
    assert store.stats.built == 1
    assert os.stat(index).st_uid == os.geteuid()


def test_export_owned_by_another_user_is_replaced(tmp_path: Path) -> None:
    src = _source(tmp_path)
    store = ArtifactStore(tmp_path / "store")
    stored = store.get_or_build(src, KIND, 1, _build)
    path = store.export(stored, ".bin")
    path.write_bytes(b"FORGE:source-one")  # same size as the payload
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.warns(StoreWarning, match=r"owned by uid \d+, not by the store's owner") as caught:
        assert ArtifactStore(store.directory).export(stored, ".bin") == path
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert path.read_bytes() == b"built:source-one"
    assert os.stat(path).st_uid == os.geteuid()


FORGED_TEST = """
def test_runqueues(kernel_symbols):
    assert kernel_symbols["runqueues"] == 0x1000
"""


def test_plugin_never_serves_a_forged_symbols_artifact(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    vmlinux = pytester.path / "vmlinux"
    vmlinux.write_bytes(_symbols_elf(0x1000))
    pytester.makepyfile(test_runqueues=FORGED_TEST)
    pytester.runpytest_subprocess(f"--kernel={vmlinux}").assert_outcomes(passed=1)
    artifacts = _store_dir() / "artifacts"
    target = _artifact_path(_store_dir(), SYMBOLS_KIND)
    artifacts.chmod(0o777)
    _forge_symbols(tmp_path, target)

    refused = pytester.runpytest_subprocess(f"--kernel={vmlinux}")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines([f"ERROR: ktstr: kernel cache {artifacts} has mode 0777*"])
    artifacts.chmod(0o700)
    result = pytester.runpytest_subprocess(f"--kernel={vmlinux}")
    _assert_clean_run(result, f"{target}")
    assert "0xdeadbeef" not in result.stdout.str().lower()


# --- 4. directories that are not a store ----------------------------------------------------------

MARKER = ".ktstr-store"


def _user_project(root: Path) -> dict[Path, bytes]:
    """A project directory whose own tmp/, exports/ and artifacts/ hold the user's files."""
    files = {
        root / "pytest.ini": b"[pytest]\nktstr_cache_dir = .\n",
        root / "tmp" / "scratch.txt": b"my scratch notes",
        root / "exports" / "report.csv": b"a,b\n1,2\n",
        root / "artifacts" / "build.log": b"my build log",
        root / "artifacts" / f"{'c' * 64}.art": b"named like ours, but mine",
        root / "index.json": b"my own index",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def _assert_untouched(files: dict[Path, bytes]) -> None:
    assert {p: p.read_bytes() for p in files if p.exists()} == files
    assert not (next(iter(files)).parent / MARKER).exists()


def test_a_directory_the_store_did_not_create_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    files = _user_project(project)
    os.chmod(project, 0o700)
    with pytest.raises(NotAStoreError) as excinfo:
        ArtifactStore(project)
    message = str(excinfo.value)
    assert str(project) in message and MARKER in message
    assert "pytest.ini" in message  # what is in it that is not the store's
    assert "empty or new directory" in message and "ktstr_cache_dir" in message
    _assert_untouched(files)


def test_plugin_run_with_the_project_as_cache_dir_deletes_nothing(
    pytester: pytest.Pytester, kernel_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KTSTR_CACHE_DIR")
    files = _user_project(pytester.path)
    for path in files:
        if path.name != "pytest.ini":
            path.parent.chmod(0o700)
    pytester.path.chmod(0o700)
    for args in ([], ["--kernel-cache-clear"], ["-n", "2"]):
        result = pytester.runpytest_subprocess(f"--kernel={kernel_tree}", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
        result.stderr.fnmatch_lines([f"ERROR: ktstr: kernel cache {pytester.path} *"])
        assert "empty or new directory" in result.stderr.str()
        _assert_untouched(files)


def test_cache_clear_refuses_a_directory_the_store_did_not_create(tmp_path: Path) -> None:
    project = tmp_path / "project"
    files = _user_project(project)
    os.chmod(project, 0o700)
    for verb in ("clear", "list"):
        result = subprocess.run(
            [sys.executable, "-m", "pytest_ktstr_vmlinux", "cache", verb, "--cache-dir", project],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        assert str(project) in result.stderr and "empty or new directory" in result.stderr
        assert "Traceback" not in result.stderr
        _assert_untouched(files)


def test_a_new_store_is_marked_and_an_empty_directory_adopted(tmp_path: Path) -> None:
    new = tmp_path / "new"
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    for directory in (new, empty):
        ArtifactStore(directory).get_or_build(_source(tmp_path), KIND, 1, _build)
        marker = directory / MARKER
        assert stat.S_ISREG(os.lstat(marker).st_mode)
        assert "pytest-ktstr-vmlinux" in marker.read_text()
        assert ArtifactStore(directory).get_or_build(_source(tmp_path), KIND, 1, _build)


def _legacy_store(tmp_path: Path) -> tuple[Path, Path]:
    """A store as the versions before the marker left it: index, lock, the three directories,
    debris in tmp/, an export; then the marker removed."""
    src = _source(tmp_path)
    directory = tmp_path / "legacy"
    store = ArtifactStore(directory)
    stored = store.get_or_build(src, KIND, 1, _build)
    store.export(stored, ".vmlinux")
    (directory / "tmp" / "build-abc123.tmp").write_bytes(b"debris of a crash")
    (directory / MARKER).unlink()
    return directory, src


def test_a_store_from_before_the_marker_is_adopted(tmp_path: Path) -> None:
    directory, src = _legacy_store(tmp_path)
    store = ArtifactStore(directory)
    assert store.get_or_build(src, KIND, 1, _build).read_bytes() == b"built:source-one"
    assert store.stats.reused == 1 and store.stats.built == 0
    assert (directory / MARKER).is_file()


@pytest.mark.parametrize(
    "extra",
    ["notes.txt", "artifacts/notes.txt", "tmp/notes.txt", "exports/sub/", "artifacts/x.art/"],
)
def test_a_store_like_directory_with_anything_else_is_refused(tmp_path: Path, extra: str) -> None:
    directory, _ = _legacy_store(tmp_path)
    path = directory / extra.rstrip("/")
    if extra.endswith("/"):
        path.mkdir()
    else:
        path.write_text("the user's")
    before = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    with pytest.raises(NotAStoreError, match="empty or new directory"):
        ArtifactStore(directory)
    assert sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) == before


def test_a_directory_without_the_store_index_is_refused(tmp_path: Path) -> None:
    directory, _ = _legacy_store(tmp_path)
    (directory / "index.json").write_bytes(b"not the store's index")
    with pytest.raises(NotAStoreError):
        ArtifactStore(directory)
    (directory / "index.json").unlink()
    with pytest.raises(NotAStoreError):
        ArtifactStore(directory)


CREATE_AND_BUILD = """
import sys
from pathlib import Path
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
sys.stdin.readline()  # the barrier: every process is imported and waiting
store = ArtifactStore(sys.argv[1])
found = store.get_or_build(sys.argv[2], "echo", 1, lambda p, out: out.write(p.read_bytes()))
print(found.read_bytes().decode())
"""


def test_processes_creating_one_store_at_once_all_accept_it(tmp_path: Path) -> None:
    src = _source(tmp_path)
    directory = tmp_path / "fresh"
    argv = [sys.executable, "-c", CREATE_AND_BUILD, str(directory), str(src)]
    children = [
        subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(8)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
        assert out.decode().strip() == "source-one"
    assert (directory / MARKER).is_file()

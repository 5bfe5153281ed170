"""Artifact kinds and versions as callers pass them, and an index with one bad entry among good
ones: a bad key is refused where it is passed in, and one bad entry never costs the rest.

Real stores on real files; the plugin runs through pytester.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pytest_ktstr_vmlinux.store import index as storeindex
from pytest_ktstr_vmlinux.store.api import Store, StoreWarning
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from tests.helpers.fakes import make_build_tree


def _build(path: Path, out: BinaryIO) -> None:
    out.write(b"built:" + path.read_bytes())


def _source(tmp_path: Path, name: str = "vmlinux", content: bytes = b"source-one") -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _store_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


def _stores(tmp_path: Path) -> list[Store]:
    return [ArtifactStore(tmp_path / "store"), MemoryStore()]


# --- kinds and versions are checked where they are passed in -------------------------------------

BAD_KINDS = ["my sections", "", "k" * 65, "a:b", "../up", "naïve", "tab\tkind", "slash/kind"]
GOOD_KINDS = ["my-sections", "k" * 64, "btf-index-little", "v1.2_x", "A"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_kind_is_a_clear_value_error(tmp_path: Path, kind: str) -> None:
    src = _source(tmp_path)
    for store in _stores(tmp_path):
        with pytest.raises(ValueError, match="artifact kind") as excinfo:
            store.get_or_build_json(src, kind, 1, lambda path: [1, 2])
        message = str(excinfo.value)
        assert repr(kind) in message
        assert "1-64" in message and "letters, digits" in message
    assert not (tmp_path / "store" / "index.json").exists()


@pytest.mark.parametrize("version", [70000, 65536, -1, True, 1.0, "1"])
def test_a_bad_version_is_a_clear_value_error(tmp_path: Path, version: Any) -> None:
    src = _source(tmp_path)
    for store in _stores(tmp_path):
        with pytest.raises(ValueError, match="artifact version") as excinfo:
            store.get_or_build(src, "my-sections", version, _build)
        message = str(excinfo.value)
        assert repr(version) in message and "0 to 65535" in message
    assert not (tmp_path / "store" / "index.json").exists()
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


@pytest.mark.parametrize("kind", GOOD_KINDS)
@pytest.mark.parametrize("version", [0, 1, 65535])
def test_every_good_kind_and_version_round_trips(tmp_path: Path, kind: str, version: int) -> None:
    src = _source(tmp_path)
    for store in _stores(tmp_path):
        assert store.get_or_build_json(src, kind, version, lambda path: ["ok"]) == ["ok"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ArtifactStore(tmp_path / "store")
        assert again.get_or_build_json(src, kind, version, lambda path: ["rebuilt"]) == ["ok"]
    assert _store_warnings(caught) == []
    assert again.stats.reused == 1


# --- one bad entry costs itself alone ------------------------------------------------------------


def _index_path(directory: Path) -> Path:
    return directory / "index.json"


def _damage_index(directory: Path, mutate: Any) -> None:
    path = _index_path(directory)
    index = storeindex.parse_index(path.read_bytes())
    mutate(index)
    storeindex.write_index(path, index, tmp_dir=directory / "tmp")


def _filled_store(tmp_path: Path) -> tuple[Path, list[Path]]:
    directory = tmp_path / "store"
    store = ArtifactStore(directory)
    sources = [_source(tmp_path, f"s{i}", f"content {i}".encode()) for i in range(3)]
    for src in sources:
        store.get_or_build(src, "echo", 1, _build)
        store.get_or_build(src, "echo", 2, _build)
    return directory, sources


def _a_bad_artifact_key(index: dict[str, Any], source: str) -> None:
    # What an earlier version wrote for get_or_build_json(path, "my sections", 1, f).
    entry = index["sources"][source]
    entry["artifacts"]["my sections:1"] = dict(entry["artifacts"]["echo:1"])


def _a_bad_version_key(index: dict[str, Any], source: str) -> None:
    entry = index["sources"][source]
    entry["artifacts"]["echo:70000"] = dict(entry["artifacts"]["echo:1"])


def _a_bad_record(index: dict[str, Any], source: str) -> None:
    index["sources"][source]["artifacts"]["echo:2"]["file"] = "../../etc/passwd"


def _a_bad_signature(index: dict[str, Any], source: str) -> None:
    index["sources"][source]["signature"] = "yesterday"


def _a_bad_source_path(index: dict[str, Any], source: str) -> None:
    index["sources"]["relative/path"] = index["sources"][source]


DAMAGE = {
    "artifact-key-with-a-space": (_a_bad_artifact_key, 2),
    "artifact-version-past-u16": (_a_bad_version_key, 2),
    "artifact-record-naming-a-path": (_a_bad_record, 1),
    "source-signature": (_a_bad_signature, 0),
    "source-path-not-absolute": (_a_bad_source_path, 2),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_bad_entry_is_dropped_alone_with_one_warning(tmp_path: Path, damage: str) -> None:
    directory, sources = _filled_store(tmp_path)
    damaged = os.path.realpath(sources[0])
    mutate, survivors = DAMAGE[damage]
    _damage_index(directory, lambda index: mutate(index, damaged))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ArtifactStore(directory)
        for src in sources:
            for version in (1, 2):
                assert store.get_or_build(src, "echo", version, _build).read_bytes() == (
                    b"built:" + src.read_bytes()
                )
    [message] = _store_warnings(caught)
    assert str(_index_path(directory)) in message and "malformed" in message
    # Only what the bad entry held was built again; every other artifact was reused.
    assert store.stats.built == 2 - survivors
    assert store.stats.reused == 6 - store.stats.built

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        later = ArtifactStore(directory)
        for src in sources:
            later.get_or_build(src, "echo", 1, _build)
    assert _store_warnings(again) == []
    assert later.stats.reused == 3
    storeindex.validate_index(storeindex.parse_index(_index_path(directory).read_bytes()))


def test_a_dropped_entry_is_written_back_without_any_build(tmp_path: Path) -> None:
    directory, sources = _filled_store(tmp_path)
    _damage_index(directory, lambda index: _a_bad_artifact_key(index, str(sources[0])))
    for expected in (1, 0):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = ArtifactStore(directory)
            store.get_or_build(sources[1], "echo", 1, _build)  # reused: nothing is built
        assert len(_store_warnings(caught)) == expected
        assert store.stats.reused == 1


CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def sections(kernel_store, vmlinux_path):
    return kernel_store.get_or_build_json(vmlinux_path, "my sections", 1, lambda p: ["x"])
"""

SECTIONS_TEST = """
def test_sections(sections):
    assert sections == ["x"]

def test_symbols(kernel_symbols):
    assert "runqueues" not in kernel_symbols
"""


def test_plugin_run_with_a_bad_kind_and_an_old_bad_key(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_build_tree(pytester.path / "linux")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sections=SECTIONS_TEST)
    first = pytester.runpytest_subprocess(f"--kernel={tree}")
    first.assert_outcomes(passed=1, errors=1)
    first.stdout.fnmatch_lines(["*ValueError: artifact kind 'my sections'*"])
    # An index an earlier version wrote for that key: the next run drops it alone.
    directory = Path(os.environ["KTSTR_CACHE_DIR"])
    vmlinux = str(tree / "vmlinux")
    _damage_index(
        directory,
        lambda index: index["sources"][vmlinux]["artifacts"].__setitem__(
            "my sections:1", dict(index["sources"][vmlinux]["artifacts"]["symbols:1"])
        ),
    )
    second = pytester.runpytest_subprocess(f"--kernel={tree}", "-k", "symbols")
    second.assert_outcomes(passed=1, deselected=1)
    second.stdout.fnmatch_lines(["ktstr: artifacts built 0, reused 3 (store: *)"])
    # Said once, while the kernel is resolved at configure time: pytest records no warnings
    # raised inside pytest_configure, so this one goes to stderr.
    output = second.stdout.str() + second.stderr.str()
    assert output.count("malformed entry (artifact key 'my sections:1'") == 1, output
    third = pytester.runpytest_subprocess(f"--kernel={tree}", "-k", "symbols")
    assert "malformed" not in third.stdout.str() + third.stderr.str()

"""What the store serves is what it published: a byte flipped in a large artifact between the
samples its cheap open reads, or in an export, is found, warned about once and rebuilt.

Real store files damaged in place, with and without their mtime put back; real pytest runs on
Debian's kernel for the snapshot behind ``vmlinux_bytes`` and the extracted ELF behind
``vmlinux_path``, whose BTF answer (``task_struct.pid``) the damage would otherwise change.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from elftools.elf.elffile import ELFFile

from pytest_ktstr_vmlinux.store import artifact
from pytest_ktstr_vmlinux.store import index as storeindex
from pytest_ktstr_vmlinux.store.api import StoreWarning
from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from tests.helpers.kernels import DebianKernel, debian_image_alone
from tests.helpers.oracles import bpftool_member_bits

KIND = "big"
BIG_PAYLOAD = 80 << 20  # over artifact.FULL_DIGEST_LIMIT: opens read samples only
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _build_big(path: Path, out: BinaryIO) -> None:
    """An 80 MiB payload, mostly sparse: the source's bytes at the start, in the middle and at
    the end, zeros between."""
    marker = path.read_bytes()
    out.write(marker)
    out.flush()
    end = artifact.HEADER_SIZE + BIG_PAYLOAD
    os.ftruncate(out.fileno(), end)
    out.seek(artifact.HEADER_SIZE + BIG_PAYLOAD // 2)
    out.write(marker)
    out.seek(end - len(marker))
    out.write(marker)


def _samples_match(path: Path) -> bool:
    """True when the header's digest still matches the payload's samples, as docs/store.md says
    an open of a large artifact checks them: the length and 64 evenly spaced 4 KiB samples
    (layout spelled out here, independently of artifact.py)."""
    with open(path, "rb") as f:
        header = f.read(artifact.HEADER_SIZE)
        size, digest = struct.unpack_from("<Q32s", header, 16)
        last = size - 4096
        h = hashlib.sha256(size.to_bytes(8, "little"))
        for offset in sorted({last * i // 63 for i in range(64)}):
            f.seek(artifact.HEADER_SIZE + offset)
            h.update(f.read(4096))
    return bool(h.digest() == digest)


def _flip(path: Path, offset: int, *, keep_mtime: bool) -> None:
    """Flip the byte at ``offset`` in place, as an editor or a stray write would; with
    ``keep_mtime``, put the atime and mtime back as `touch -r` would."""
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == before.st_mtime_ns


def _record(store_dir: Path, source: Path, kind: str) -> dict[str, Any]:
    index = storeindex.parse_index((store_dir / "index.json").read_bytes())
    entry = index["sources"][os.path.realpath(source)]
    record: dict[str, Any] = entry["artifacts"][f"{kind}:1"]
    return record


def _store_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


class Builds:
    def __init__(self) -> None:
        self.calls = 0

    def big(self, path: Path, out: BinaryIO) -> None:
        self.calls += 1
        _build_big(path, out)

    def echo(self, path: Path, out: BinaryIO) -> None:
        self.calls += 1
        out.write(b"built:" + path.read_bytes())


def _big(tmp_path: Path) -> tuple[Path, Path, Builds, Path]:
    """A large artifact built in a new store: (its source, the store, the builds, its file)."""
    source = tmp_path / "vmlinux"
    source.write_bytes(b"MARKER")
    store_dir, builds = tmp_path / "store", Builds()
    stored = ArtifactStore(store_dir).get_or_build(source, KIND, 1, builds.big)
    assert stored.file is not None
    return source, store_dir, builds, stored.file.path


def _edit_record(
    store_dir: Path, source: Path, key: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    """Change one artifact record of the index, keeping the index well-formed and checksummed."""
    index = storeindex.parse_index((store_dir / "index.json").read_bytes())
    edit(index["sources"][os.path.realpath(source)]["artifacts"][key])
    storeindex.write_index(store_dir / "index.json", index, tmp_dir=store_dir / "tmp")


# --- large artifacts: the byte between two samples -----------------------------------------------


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited-mtime-kept"])
def test_a_byte_flipped_between_samples_is_found_and_rebuilt(
    tmp_path: Path, keep_mtime: bool, caught: list[warnings.WarningMessage]
) -> None:
    source, store_dir, builds, path = _big(tmp_path)
    offset = BIG_PAYLOAD // 3 + 12345  # in a zero run, far from the markers
    _flip(path, artifact.HEADER_SIZE + offset, keep_mtime=keep_mtime)
    assert _samples_match(path)  # the damage is invisible to the samples an open reads

    again = ArtifactStore(store_dir).get_or_build(source, KIND, 1, builds.big)
    assert bytes(again.map()[offset : offset + 1]) == b"\x00"
    [message] = _store_warnings(caught)
    assert str(path) in message and "checksum mismatch" in message and "rebuilding" in message
    assert builds.calls == 2
    artifact.open_artifact(path, KIND, 1)  # the rebuilt file is whole


def test_this_boots_check_is_trusted_and_another_boots_is_not(
    tmp_path: Path, caught: list[warnings.WarningMessage]
) -> None:
    source, store_dir, builds, path = _big(tmp_path)
    stamp = _record(store_dir, source, KIND)["checked"]
    st = os.stat(path)
    boot = BOOT_ID.read_text().strip()
    assert stamp == [boot, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    warm = ArtifactStore(store_dir).get_or_build(source, KIND, 1, builds.big)
    assert warm.file is not None and not warm.file.checked  # samples only: checked this boot

    def from_an_earlier_boot(record: dict[str, Any]) -> None:
        record["checked"][0] = "a-boot-before-the-last-reboot"

    _edit_record(store_dir, source, f"{KIND}:1", from_an_earlier_boot)
    after_reboot = ArtifactStore(store_dir).get_or_build(source, KIND, 1, builds.big)
    assert after_reboot.file is not None and after_reboot.file.checked
    assert _record(store_dir, source, KIND)["checked"][0] == boot
    assert builds.calls == 1
    assert _store_warnings(caught) == []


def test_a_large_artifact_of_an_earlier_format_is_rebuilt_quietly(
    tmp_path: Path, caught: list[warnings.WarningMessage]
) -> None:
    # Earlier versions sealed large payloads with the sampled digest alone (scope 1): nothing a
    # full check could compare with, so such a file is rebuilt, as after a format change.
    source, store_dir, builds, path = _big(tmp_path)
    with open(path, "r+b") as f:
        f.seek(12)  # the header's digest scope (u32) after magic and two u16 versions
        f.write(struct.pack("<I", artifact.DIGEST_SAMPLES_ONLY))
    again = ArtifactStore(store_dir).get_or_build(source, KIND, 1, builds.big)
    assert builds.calls == 2
    assert bytes(again.map()[:6]) == b"MARKER"
    assert _store_warnings(caught) == []


def test_a_malformed_check_record_costs_its_artifact_alone(
    tmp_path: Path, caught: list[warnings.WarningMessage]
) -> None:
    source = tmp_path / "vmlinux"
    source.write_bytes(b"source")
    store_dir, builds = tmp_path / "store", Builds()
    store = ArtifactStore(store_dir)
    store.get_or_build(source, "echo", 1, builds.echo)
    store.get_or_build(source, "other", 1, builds.echo)

    def malformed(record: dict[str, Any]) -> None:
        record["checked"] = "yesterday"

    _edit_record(store_dir, source, "echo:1", malformed)
    fresh = ArtifactStore(store_dir)
    assert fresh.get_or_build(source, "other", 1, builds.echo).read_bytes() == b"built:source"
    assert fresh.get_or_build(source, "echo", 1, builds.echo).read_bytes() == b"built:source"
    [message] = _store_warnings(caught)
    assert "dropped 1 malformed entry" in message and "echo:1" in message
    assert builds.calls == 3  # the other artifact kept


# --- exports: the plain file behind vmlinux_path -------------------------------------------------


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["edited", "edited-mtime-kept"])
@pytest.mark.parametrize("serving", ["same-store", "next-run"])
def test_an_export_edited_in_place_is_replaced(
    tmp_path: Path, keep_mtime: bool, serving: str, caught: list[warnings.WarningMessage]
) -> None:
    source = tmp_path / "vmlinux"
    payload = os.urandom(1 << 20)
    source.write_bytes(payload)
    store_dir, builds = tmp_path / "store", Builds()
    store = ArtifactStore(store_dir)
    path = store.export(store.get_or_build(source, "echo", 1, builds.echo), ".vmlinux")
    assert path.read_bytes() == b"built:" + payload
    _flip(path, 1000, keep_mtime=keep_mtime)  # same size: a size check cannot see it

    server = store if serving == "same-store" else ArtifactStore(store_dir)
    again = server.export(server.get_or_build(source, "echo", 1, builds.echo), ".vmlinux")
    assert again == path
    assert path.read_bytes() == b"built:" + payload
    [message] = _store_warnings(caught)
    assert f"kernel cache export {path}" in message and "checksum mismatch" in message
    assert builds.calls == 1  # the artifact was sound: only its export is rewritten
    assert (
        ArtifactStore(store_dir).export(
            store.get_or_build(source, "echo", 1, builds.echo), ".vmlinux"
        )
        == path
    )
    assert len(_store_warnings(caught)) == 1


# --- real runs on Debian's kernel ----------------------------------------------------------------

SNAPSHOT_TEST = """
import os

def test_byte(vmlinux_bytes, vmlinux_path):
    offset = int(os.environ["OFFSET"])
    with open(vmlinux_path, "rb") as f:
        f.seek(offset)
        expected = f.read(16)
    assert bytes(vmlinux_bytes[offset : offset + 16]) == expected
"""


def _artifact_of_kind(store_dir: Path, kind: str) -> Path:
    for entry in ArtifactStore(store_dir).entries():
        for item in entry["artifacts"]:
            if item["kind"] == kind:
                return Path(item["file"])
    raise AssertionError(f"no {kind} artifact in {store_dir}")


@pytest.mark.real_kernel
def test_a_byte_flipped_in_the_snapshot_is_not_served(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = debian_kernel.vmlinux.stat().st_size
    offset = size // 2 + 4321  # between two of the samples an open reads
    monkeypatch.setenv("OFFSET", str(offset))
    pytester.makepyfile(SNAPSHOT_TEST)
    args = (f"--kernel={debian_kernel.release}", f"--kernel-sysroot={debian_kernel.sysroot}")
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    store_dir = Path(os.environ["KTSTR_CACHE_DIR"])
    snapshot = _artifact_of_kind(store_dir, "vmlinux-snapshot")
    _flip(snapshot, artifact.HEADER_SIZE + offset + 7, keep_mtime=True)
    assert _samples_match(snapshot)

    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            f"*kernel cache artifact {snapshot} (vmlinux-snapshot of *) is unusable: checksum"
            " mismatch; rebuilding*"
        ]
    )


EXPORT_TEST = """
import hashlib, json, os
from pathlib import Path

def test_pid(kernel, vmlinux_path, kernel_btf):
    assert kernel.vmlinux_kind == "extracted"
    Path(os.environ["REPORT"]).write_text(json.dumps({
        "path": str(vmlinux_path),
        "pid": kernel_btf.offsetof("struct task_struct", "pid"),
        "sha256": hashlib.sha256(vmlinux_path.read_bytes()).hexdigest(),
    }))
"""

# Bytes after a BTF type record, by kind (Documentation/bpf/btf.rst): fixed, then per vlen item.
_BTF_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_BTF_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


def _member_offset_position(elf: Path, struct_name: str, member: str) -> int:
    """The file offset of ``struct_name.member``'s offset field in the ELF's .BTF, by a walk of
    its own (the project's BTF reader is what the edit must fool)."""
    with open(elf, "rb") as f:
        section = ELFFile(f).get_section_by_name(".BTF")
        assert section is not None
        base = int(section["sh_offset"])
        data = section.data()
    _, _, _, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", data)
    strings = hdr_len + str_off

    def name(offset: int) -> bytes:
        start = strings + offset
        return data[start : data.index(b"\x00", start)]

    at, end = hdr_len + type_off, hdr_len + type_off + type_len
    while at < end:
        name_off, info, _ = struct.unpack_from("<III", data, at)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        items = at + 12 + _BTF_FIXED.get(kind, 0)
        if kind == 4 and name(name_off) == struct_name.encode():
            for i in range(vlen):
                member_name = struct.unpack_from("<I", data, items + 12 * i)[0]
                if name(member_name) == member.encode():
                    return int(base + items + 12 * i + 8)
        at = items + _BTF_ITEM.get(kind, 0) * vlen
    raise AssertionError(f"{struct_name}.{member} not in {elf}'s BTF")


@pytest.mark.real_kernel
def test_an_edited_extracted_vmlinux_is_not_served(
    pytester: pytest.Pytester, debian_kernel: DebianKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = debian_image_alone(pytester, debian_kernel)
    report = pytester.path / "report.json"
    monkeypatch.setenv("REPORT", str(report))
    pytester.makepyfile(EXPORT_TEST)
    args = (f"--kernel={image}", "--kernel-allow-extracted")
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
    first = json.loads(report.read_text())
    export = Path(first["path"])
    assert first["pid"] * 8 == bpftool_member_bits(export, "task_struct", "pid")

    # Move task_struct.pid by 4 bytes in the export's BTF, keeping its size and mtime.
    position = _member_offset_position(export, "task_struct", "pid")
    before = os.stat(export)
    with open(export, "r+b") as f:
        f.seek(position)
        (bits,) = struct.unpack("<I", f.read(4))
        f.seek(position)
        f.write(struct.pack("<I", bits + 32))
    os.utime(export, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert bpftool_member_bits(export, "task_struct", "pid") == first["pid"] * 8 + 32

    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    second = json.loads(report.read_text())
    assert second == first  # the same pid offset, from the same bytes
    assert hashlib.sha256(export.read_bytes()).hexdigest() == first["sha256"]
    # Warned as the kernel is resolved, before any test: on stderr, once.
    warned = f"kernel cache export {export} (image-payload of {image}) is unusable: checksum"
    assert result.stderr.str().count(warned) == 1, result.stderr.str()
    assert "replacing it" in result.stderr.str()

"""Pairing a vmlinux with its image (build-id, else banner), as the plugin and library see it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux import (
    Candidate,
    KernelArtifactError,
    KernelSpecError,
    ProbeReport,
    resolve_kernel,
)
from pytest_ktstr_vmlinux.formats.image import read_payload
from pytest_ktstr_vmlinux.kernel.spec import SpecSource
from tests.helpers.fakes import (
    banner_for,
    build_id_for,
    kernel_elf,
    make_build_tree,
    write_image,
    write_vmlinux,
)
from tests.helpers.kernels import DebianKernel

R = "6.1.0-test"
CHECK = """
import os

def test_k(kernel, vmlinux_path, vmlinux_bytes):
    print("PAIRED", kernel.paired, kernel.vmlinux_kind, kernel.build_id)
    assert bytes(vmlinux_bytes[:4]) == b"\\x7fELF"
"""


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_pairing_check=CHECK)
    return pytester.runpytest_subprocess("-s", "-rs", *args)


def test_equal_build_ids_pair(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", R)
    result = _run(pytester, "--kernel=linux")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"ktstr: * build_id={build_id_for(R).hex()} paired=build-id"])
    result.stdout.fnmatch_lines([f"*PAIRED build-id debug {build_id_for(R).hex()}"])


def test_stale_vmlinux_is_refused_and_the_search_goes_on(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "linux", R)
    # Yesterday's build left in the tree; today's image has another build-id.
    write_vmlinux(tree / "vmlinux", build_id=build_id_for("yesterday"), banner=banner_for(R))
    result = _run(pytester, "--kernel=linux")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"*refused  {tree}/vmlinux ?build tree?: build-id mismatch:"
            f" image {build_id_for(R).hex()} vmlinux {build_id_for('yesterday').hex()}",
            "*refused  /usr/lib/debug/boot/vmlinux-6.1.0-test *: missing",
        ]
    )


def test_banners_pair_where_build_ids_are_missing(pytester: pytest.Pytester) -> None:
    tree = pytester.path / "linux"
    payload = kernel_elf(None, banner_for(R), symtab=False)
    write_image(tree / "arch/x86/boot/bzImage", f"{R} (dev@host) #1", payload)
    write_vmlinux(tree / "vmlinux", build_id=None, banner=banner_for(R))
    _run(pytester, "--kernel=linux").stdout.fnmatch_lines(["*PAIRED banner debug None"])
    write_vmlinux(tree / "vmlinux", build_id=None, banner=banner_for("6.1.0-other"))
    result = _run(pytester, "--kernel=linux")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*banner mismatch: image '{banner_for(R)}' vmlinux *"])


def test_explicit_vmlinux_that_does_not_pair(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", R)
    other = pytester.path / "other.vmlinux"
    write_vmlinux(other, build_id=build_id_for("other"), banner=banner_for("6.9"))
    result = _run(pytester, "--kernel=linux", f"--vmlinux={other}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"*--vmlinux {other} does not belong to this kernel: build-id mismatch:"
            f" image {build_id_for(R).hex()} vmlinux {build_id_for('other').hex()}*"
            "--no-kernel-verify*"
        ]
    )
    forced = _run(pytester, "--kernel=linux", f"--vmlinux={other}", "--no-kernel-verify")
    forced.assert_outcomes(passed=1)
    forced.stdout.fnmatch_lines(["*paired=unverified", "*PAIRED unverified debug *"])


def test_extracted_fallback(pytester: pytest.Pytester) -> None:
    make_build_tree(pytester.path / "linux", R, vmlinux=False)
    _run(pytester, "--kernel=linux").assert_outcomes(errors=1)
    result = _run(pytester, "--kernel=linux", "--kernel-allow-extracted")
    result.assert_outcomes(passed=1)
    # Served from the store's export of the image's payload, paired by construction.
    result.stdout.fnmatch_lines(["ktstr: * vmlinux=*/exports/*.vmlinux *paired=build-id"])
    result.stdout.fnmatch_lines(["*PAIRED build-id extracted *"])


def _notes(build_id: bytes) -> bytes:
    return struct.pack("<III", 4, len(build_id), 3) + b"GNU\x00" + build_id


def test_running_kernel_pairs_with_sys_kernel_notes(pytester: pytest.Pytester) -> None:
    release = os.uname().release
    root = pytester.path / "guest"
    (root / "sys/kernel").mkdir(parents=True)
    (root / "sys/kernel/notes").write_bytes(_notes(build_id_for("running")))
    dbg = root / f"usr/lib/debug/boot/vmlinux-{release}"
    write_vmlinux(dbg, build_id=build_id_for("running"), banner=banner_for(release))
    result = _run(pytester, f"--kernel-sysroot={root}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PAIRED build-id debug *"])
    (root / "sys/kernel/notes").write_bytes(_notes(build_id_for("another boot")))
    result = _run(pytester, f"--kernel-sysroot={root}")
    result.assert_outcomes(skipped=1)  # the default kernel: a skip, saying why
    result.stdout.fnmatch_lines(
        ["SKIPPED*ktstr: no vmlinux for the running kernel*build-id mismatch*"]
    )


def test_kernel_config_fixture(pytester: pytest.Pytester) -> None:
    tree = make_build_tree(pytester.path / "linux", R)
    (tree / ".config").write_text(
        "CONFIG_HZ=1000\nCONFIG_SCHED_CLASS_EXT=y\n# CONFIG_X is not set\n"
    )
    pytester.makepyfile(
        "def test_c(kernel_config, kernel):\n"
        "    assert kernel_config['HZ'] == 1000 and kernel_config.enabled('SCHED_CLASS_EXT')\n"
        "    assert kernel_config['CONFIG_X'] is None and kernel.config is kernel_config\n"
        "    assert kernel_config.source.endswith('linux/.config')\n"
    )
    pytester.runpytest_subprocess("--kernel=linux").assert_outcomes(passed=1)
    (tree / ".config").unlink()
    result = pytester.runpytest_subprocess("--kernel=linux")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ktstr: no kernel config for 'linux'*"])


# --- real kernels ---------------------------------------------------------------------------------


@pytest.mark.real_kernel
def test_debian_image_and_dbg_vmlinux_pair(debian_kernel: DebianKernel) -> None:
    kernel = resolve_kernel(debian_kernel.release, sysroot=debian_kernel.sysroot)
    assert kernel.vmlinux == debian_kernel.vmlinux
    assert (kernel.paired, kernel.build_id) == ("build-id", debian_kernel.build_id)
    assert kernel.image_info is not None and kernel.image_info.compression == "lz4"
    assert kernel.config is not None and kernel.config.enabled("DEBUG_INFO_BTF")


@pytest.mark.real_kernel
def test_tinyconfig_vmlinux_beside_the_debian_image_is_refused(
    tmp_path: Path, debian_kernel: DebianKernel, tinyconfig_tree: Path
) -> None:
    shutil.copy(debian_kernel.image, tmp_path / "bzImage")
    (tmp_path / "vmlinux").symlink_to(tinyconfig_tree / "vmlinux")
    kernel = resolve_kernel(str(tmp_path / "bzImage"))
    assert kernel.vmlinux is None
    tiny_id = resolve_kernel(str(tinyconfig_tree)).build_id
    assert kernel.report.candidates[0].refused == (
        f"build-id mismatch: image {debian_kernel.build_id} vmlinux {tiny_id}"
    )
    with pytest.raises(
        KernelArtifactError, match=f"image {debian_kernel.build_id} vmlinux {tiny_id}"
    ):
        kernel.require_vmlinux()


@pytest.mark.real_kernel
def test_tinyconfig_tree_pairs_and_has_ikconfig(tinyconfig_tree: Path) -> None:
    kernel = resolve_kernel(str(tinyconfig_tree / "vmlinux"))
    assert kernel.config is not None  # the tree's .config (a vmlinux in its tree)
    kernel = resolve_kernel(str(tinyconfig_tree))
    assert kernel.paired == "build-id"
    assert kernel.image_info is not None and kernel.image_info.compression == "xz"
    moved = resolve_kernel(str(tinyconfig_tree / "arch/x86/boot/bzImage"))
    assert moved.vmlinux == tinyconfig_tree / "vmlinux"


def test_debug_file_named_by_build_id(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    release = "6.1.0-99-cloud-amd64"
    build_id = build_id_for(release)
    payload = kernel_elf(build_id, banner_for(release), symtab=False)
    write_image(root / f"boot/vmlinuz-{release}", f"{release} (d@h) #1", payload)
    by_id = root / "usr/lib/debug/.build-id" / build_id.hex()[:2] / f"{build_id.hex()[2:]}.debug"
    write_vmlinux(by_id, build_id=build_id, banner=banner_for(release))
    kernel = resolve_kernel(release, sysroot=root)
    assert kernel.vmlinux == by_id
    assert kernel.paired == "build-id"
    assert kernel.report.candidates[-1].layout == "debug by build-id"


# --- an image that exists but cannot be read: an error, never an unverified pairing ---------------


def _truncated(image: Path) -> bytes:
    data = image.read_bytes()
    return data[: len(data) // 2]


def _repacked_with_lzo(image: Path) -> bytes:
    """The Debian bzImage with its payload recompressed by lzop (CONFIG_KERNEL_LZO's layout): a
    real kernel that needs the [lzo] extra to be read."""
    from tests.helpers.lzop import lzop

    data = image.read_bytes()
    start = (data[0x1F1] + 1) * 512
    offset, length = struct.unpack_from("<II", data, 0x248)
    packed = lzop(bytes(read_payload(image)[2]))
    head = bytearray(data[: start + offset])
    struct.pack_into("<I", head, 0x24C, len(packed))
    return bytes(head) + packed + data[start + offset + length :]


@dataclass(frozen=True)
class ForeignRoot:
    """A sysroot whose boot/vmlinuz-R is Debian's image (damaged or repacked by the test) and
    whose Debian dbg vmlinux is the tinyconfig tree's: another build, with other addresses."""

    root: Path
    release: str
    image: Path
    dbg: Path
    debian_build_id: str
    foreign_build_id: str


@pytest.fixture
def foreign_root(tmp_path: Path, debian_kernel: DebianKernel, tinyconfig_tree: Path) -> ForeignRoot:
    release = debian_kernel.release
    root = tmp_path / "guest"
    image = root / "boot" / f"vmlinuz-{release}"
    dbg = root / "usr/lib/debug/boot" / f"vmlinux-{release}"
    image.parent.mkdir(parents=True)
    dbg.parent.mkdir(parents=True)
    shutil.copyfile(tinyconfig_tree / "vmlinux", dbg)
    foreign = resolve_kernel(str(tinyconfig_tree)).build_id
    assert foreign is not None and foreign != debian_kernel.build_id
    return ForeignRoot(root, release, image, dbg, debian_kernel.build_id, foreign)


@pytest.mark.real_kernel
def test_an_unreadable_image_found_by_release_is_an_error(
    foreign_root: ForeignRoot, debian_kernel: DebianKernel
) -> None:
    f = foreign_root
    f.image.write_bytes(_truncated(debian_kernel.image))
    with pytest.raises(KernelSpecError) as by_release:
        resolve_kernel(f.release, sysroot=f.root)
    message = str(by_release.value)
    assert message.startswith(f"kernel '{f.release}' (from option): {f.image}: bzImage payload")
    assert "the image is truncated or damaged" in message
    assert "--no-kernel-verify" in message
    # The same error as when the image is given directly.
    with pytest.raises(KernelSpecError) as given:
        resolve_kernel(str(f.image), sysroot=f.root)
    assert str(given.value) == message.replace(f"'{f.release}'", f"'{f.image}'")
    # Knowingly, with verification off, the vmlinux found is used.
    unverified = resolve_kernel(f.release, sysroot=f.root, verify=False)
    assert (unverified.vmlinux, unverified.paired) == (f.dbg, "unverified")


@pytest.mark.real_kernel
def test_an_lzo_image_pairs_with_the_extra(
    foreign_root: ForeignRoot, debian_kernel: DebianKernel
) -> None:
    # The control for the runs below without the extra: the repacked image is still Debian's
    # kernel, so its own build-id refuses the foreign vmlinux.
    f = foreign_root
    f.image.write_bytes(_repacked_with_lzo(debian_kernel.image))
    kernel = resolve_kernel(f.release, sysroot=f.root)
    assert kernel.image_info is not None
    assert (kernel.image_info.compression, kernel.build_id) == ("lzo", f.debian_build_id)
    assert kernel.vmlinux is None
    assert _dbg_candidate(kernel.report).refused == (
        f"build-id mismatch: image {f.debian_build_id} vmlinux {f.foreign_build_id}"
    )


def _dbg_candidate(report: ProbeReport) -> Candidate:
    (found,) = [c for c in report.candidates if c.layout == "Debian/Ubuntu dbgsym"]
    return found


@pytest.mark.real_kernel
@pytest.mark.parametrize("damage", ["truncated", "lzo without the extra"])
def test_an_unreadable_image_stops_the_run_and_the_cli(
    pytester: pytest.Pytester,
    foreign_root: ForeignRoot,
    debian_kernel: DebianKernel,
    damage: str,
) -> None:
    f = foreign_root
    if damage == "truncated":
        f.image.write_bytes(_truncated(debian_kernel.image))
        reason = "the image is truncated or damaged"
        block = ""
    else:
        f.image.write_bytes(_repacked_with_lzo(debian_kernel.image))
        reason = "pip install 'pytest-ktstr-vmlinux[lzo]'"
        # Python without python-lzo: an import of it fails, as where the extra is not installed.
        block = "import sys\nsys.modules['lzo'] = None\n"
    pytester.makeconftest(block)
    result = _run(pytester, f"--kernel-sysroot={f.root}", f"--kernel={f.release}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.errlines
    assert errors[0].startswith(f"ERROR: ktstr: kernel '{f.release}' (from option): {f.image}")
    assert reason in errors[0]
    assert "PAIRED" not in result.stdout.str() and "Traceback" not in result.stderr.str()

    script = block + "from pytest_ktstr_vmlinux.cli.main import main\nraise SystemExit(main())\n"
    for verb in ("locate", "info"):
        cli = subprocess.run(
            [sys.executable, "-c", script, verb, f.release, f"--kernel-sysroot={f.root}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert cli.returncode == 1, cli
        assert cli.stdout == ""
        (line,) = cli.stderr.splitlines()
        assert line.startswith(f"ktstr-vmlinux: kernel '{f.release}' (from argument): {f.image}")
        assert reason in line


@pytest.mark.real_kernel
def test_the_running_kernel_pairs_by_its_notes_when_its_image_cannot_be_read(
    tmp_path: Path, debian_kernel: DebianKernel, tinyconfig_tree: Path
) -> None:
    # /sys/kernel/notes vouches for the running kernel's vmlinux: its image is not needed.
    release = os.uname().release
    root = tmp_path / "guest"
    image = root / "boot" / f"vmlinuz-{release}"
    dbg = root / "usr/lib/debug/boot" / f"vmlinux-{release}"
    for path in (image, dbg, root / "sys/kernel/notes"):
        path.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(_truncated(debian_kernel.image))
    shutil.copyfile(tinyconfig_tree / "vmlinux", dbg)
    tiny = resolve_kernel(str(tinyconfig_tree)).build_id
    assert tiny is not None
    (root / "sys/kernel/notes").write_bytes(_notes(bytes.fromhex(tiny)))
    kernel = resolve_kernel("running", sysroot=root, source=SpecSource.DEFAULT)
    assert (kernel.vmlinux, kernel.paired, kernel.build_id) == (dbg, "build-id", tiny)
    (root / "sys/kernel/notes").write_bytes(_notes(build_id_for("another boot")))
    refused = resolve_kernel("running", sysroot=root, source=SpecSource.DEFAULT)
    assert refused.vmlinux is None
    assert _dbg_candidate(refused.report).refused == (
        f"build-id mismatch: {root}/sys/kernel/notes {build_id_for('another boot').hex()}"
        f" vmlinux {tiny}"
    )

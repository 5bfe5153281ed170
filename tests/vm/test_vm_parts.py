"""The guest library's parts, each against a real tool where there is one: the cpio writer against
busybox's cpio, the RAM layout against QEMU's own memory tree, the KVM probe and the process
rules against real QEMU processes. No kernel boots here (test_vm_guest.py boots one)."""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_ktstr_vmlinux.store.disk import ArtifactStore
from pytest_ktstr_vmlinux.store.memory import MemoryStore
from pytest_ktstr_vmlinux.vm import GuestError, GuestUnavailableError, GuestWarning, accel
from pytest_ktstr_vmlinux.vm.agent import AGENT, INIT, PROTOCOL, check_applets
from pytest_ktstr_vmlinux.vm.console import Console
from pytest_ktstr_vmlinux.vm.cpio import Entry, write_archive
from pytest_ktstr_vmlinux.vm.initramfs import (
    busybox_applets,
    content_kind,
    find_busybox,
    guest_files,
    initramfs_path,
    write_initramfs,
)
from pytest_ktstr_vmlinux.vm.layout import (
    FOUR_GIB,
    GiB,
    MiB,
    RamRegion,
    kernel_footprint,
    place_window,
    ram_regions,
)
from pytest_ktstr_vmlinux.vm.memory import GuestMemory
from pytest_ktstr_vmlinux.vm.qemu import find_qemu, kill, memory_args, spawn
from pytest_ktstr_vmlinux.vm.qmp import GuestQMP
from tests.helpers.fakes import bzimage, write_stalling_image
from tests.helpers.kernels import DebianKernel

QEMU = "qemu-system-x86_64"


def _busybox(*args: str, stdin: bytes) -> str:
    done = subprocess.run(["busybox", *args], input=stdin, capture_output=True, check=True)
    return done.stdout.decode()


def _listing(archive: bytes) -> dict[str, str]:
    """busybox cpio -tv: member name -> its mode string (drwxr-xr-x, crw-------, ...)."""
    lines = _busybox("cpio", "-tv", stdin=archive).splitlines()
    return {
        line.split()[-1] if "->" not in line else line.split()[-3]: line.split()[0]
        for line in lines
    }


# --- cpio and the initramfs ----------------------------------------------------------------


def test_cpio_archive_reads_back_with_busybox(guest_tools: None, tmp_path: Path) -> None:
    entries = [
        Entry.directory("bin"),
        Entry.file("bin/tool", b"\x7fELF\x00binary\x00", 0o755),
        Entry.file("odd", b"abc", 0o600),  # a size that needs padding
        Entry.symlink("bin/sh", "tool"),
        Entry.char_device("console", 5, 1),
    ]
    out = io.BytesIO()
    write_archive(out, entries)
    again = io.BytesIO()
    write_archive(again, entries)
    assert out.getvalue() == again.getvalue()  # the store caches by content: same input, same bytes
    assert _listing(out.getvalue()) == {
        "bin": "drwxr-xr-x",
        "bin/tool": "-rwxr-xr-x",
        "odd": "-rw-------",
        "bin/sh": "lrwxrwxrwx",
        "console": "crw-------",
    }
    target = tmp_path / "x"
    target.mkdir()
    subprocess.run(
        ["busybox", "cpio", "-id", "bin/tool", "odd"], input=out.getvalue(), cwd=target, check=True
    )
    assert (target / "bin/tool").read_bytes() == b"\x7fELF\x00binary\x00"
    assert (target / "odd").read_bytes() == b"abc"


def test_cpio_refuses_empty_and_nul_names() -> None:
    for name in ("", "/", "a\0b"):
        with pytest.raises(ValueError, match="empty or with a NUL"):
            write_archive(io.BytesIO(), [Entry.file(name, b"")])


def test_initramfs_holds_busybox_init_agent_and_the_added_files(
    guest_tools: None, tmp_path: Path
) -> None:
    host = tmp_path / "tool.sh"
    host.write_bytes(b"#!/bin/sh\necho hi\n")
    host.chmod(0o750)
    files = guest_files({"/usr/local/bin/tool": host, "/etc/motd": b"hello\n"})
    busybox = find_busybox("x86_64")
    out = io.BytesIO()
    write_initramfs(out, busybox, files)
    listing = _listing(out.getvalue())
    for name, mode in {
        "init": "-rwxr-xr-x",
        "bin/busybox": "-rwxr-xr-x",
        "ktstr/agent": "-rw-r--r--",
        "dev/console": "crw-------",
        "usr/local/bin/tool": "-rwxr-x---",  # the host file's permission bits
        "etc/motd": "-rw-r--r--",
        "usr/local/bin": "drwxr-xr-x",
        "usr": "drwxr-xr-x",
        "bin/sh": "lrwxrwxrwx",  # busybox's applets, linked where busybox --list-full says
        "usr/bin/awk": "lrwxrwxrwx",
        "ktstr/requests": "prw-------",
        "run/ktstr": "drwxr-xr-x",  # a tmpfs's mount point
    }.items():
        assert listing.get(name) == mode, (name, listing.get(name))
    extracted = tmp_path / "root"
    extracted.mkdir()
    wanted = ["init", "bin/busybox", "ktstr/agent", "usr/local/bin/tool"]
    subprocess.run(
        ["busybox", "cpio", "-id", *wanted], input=out.getvalue(), cwd=extracted, check=True
    )
    assert (extracted / "bin/busybox").read_bytes() == busybox.read_bytes()
    assert (extracted / "init").read_text() == INIT
    assert (extracted / "usr/local/bin/tool").read_bytes() == host.read_bytes()


def test_guest_scripts_parse_and_speak_the_protocol(guest_tools: None) -> None:
    for script in (INIT, AGENT):
        subprocess.run(["busybox", "sh", "-n"], input=script.encode(), check=True)
    assert f"say READY {PROTOCOL}\n" in AGENT and "@" not in AGENT.replace("@ktstr ", "")


def test_the_agents_applets_are_checked_before_a_boot(guest_tools: None) -> None:
    """Debian's busybox-static has every applet the agent runs; one without crc32 (older than
    1.32) is refused before a boot, naming it; one that cannot run here is not judged."""
    busybox = find_busybox("x86_64")
    applets = busybox_applets(busybox)
    check_applets(busybox, applets, "busybox-static")
    older = frozenset(a for a in applets if not a.endswith("/crc32"))
    with pytest.raises(GuestUnavailableError, match=f"^{busybox} has no crc32 applet") as e:
        check_applets(busybox, older, "busybox-static")
    assert e.value.packages == ("busybox-static",)
    check_applets(busybox, frozenset({"/bin/sh", "/bin/env"}), "busybox-static")


def test_initramfs_is_built_once_per_content(guest_tools: None, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    busybox = find_busybox("x86_64")
    one = guest_files({"/etc/motd": b"motd number one"})
    first = initramfs_path(store, busybox, one)
    assert initramfs_path(store, busybox, one) == first
    assert (store.stats.built, store.stats.reused) == (1, 1)
    other = initramfs_path(store, busybox, guest_files({"/etc/motd": b"motd number two"}))
    assert other != first and store.stats.built == 2
    assert b"motd number two" in other.read_bytes()
    assert b"motd number two" not in first.read_bytes()
    kinds = {
        content_kind(guest_files({"/etc/motd": b"one"})),
        content_kind(guest_files({"/etc/motd": b"two"})),
        content_kind(guest_files({"/etc/issue": b"one"})),
        content_kind(()),
    }
    assert len(kinds) == 4


@pytest.mark.parametrize(
    ("path", "source", "message"),
    [
        ("etc/motd", b"", "give an absolute guest path"),
        ("/init", b"", "initramfs's own /init"),
        ("/bin/busybox", b"", "own /bin/busybox"),
        ("/ktstr/agent", b"", "own /ktstr/agent"),
        ("/run/ktstr/x", b"", "own /run/ktstr/x"),
        ("/a/../init", b"", "'..' is not allowed"),
        ("/etc/", b"", "names a directory"),
        ("/etc/x", "/nonexistent/file", "cannot read /nonexistent/file"),
        ("/etc/x", "/", "is not a regular file"),
    ],
)
def test_guest_files_refuse_what_cannot_be_added(path: str, source: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        guest_files({path: source})  # type: ignore[dict-item]


def test_busybox_missing_or_dynamic_names_busybox_static(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GuestUnavailableError, match="install busybox-static") as missing:
        find_busybox("x86_64")
    assert missing.value.packages == ("busybox-static",)
    dynamic = tmp_path / "busybox"
    dynamic.symlink_to(sys.executable)  # the interpreter: a dynamically linked executable
    with pytest.raises(GuestUnavailableError, match=r"dynamically linked.*busybox-static"):
        find_busybox("x86_64")


# --- where RAM is --------------------------------------------------------------------------


def _mtree_ram(text: str) -> list[RamRegion]:
    """The pieces of our RAM backend ("ram") in the flat view of address space "memory"."""
    block = next(b for b in text.split("FlatView #") if ' AS "memory"' in b)
    pieces: list[RamRegion] = []
    line = re.compile(
        r"^\s+([0-9a-f]+)-([0-9a-f]+) \(prio \d+, (?:ram|rom)\): ram(?: @([0-9a-f]+))?$"
    )
    for match in filter(None, map(line.match, block.splitlines())):
        start, end = int(match[1], 16), int(match[2], 16) + 1
        offset = int(match[3] or "0", 16)
        last = pieces[-1] if pieces else None
        if last and last.end == start and last.offset + last.size == offset:
            pieces[-1] = RamRegion(last.start, last.size + end - start, last.offset)
        else:
            pieces.append(RamRegion(start, end - start, offset))
    return pieces


@pytest.mark.parametrize(
    ("machine", "memory", "expected"),
    [
        ("q35", 512 * MiB, [RamRegion(0, 512 * MiB, 0)]),
        ("q35", 3 * GiB, [RamRegion(0, 2 * GiB, 0), RamRegion(FOUR_GIB, GiB, 2 * GiB)]),
        ("pc", 3 * GiB, [RamRegion(0, 3 * GiB, 0)]),
        ("pc", 3840 * MiB, [RamRegion(0, 3 * GiB, 0), RamRegion(FOUR_GIB, 768 * MiB, 3 * GiB)]),
    ],
)
def test_ram_regions_are_where_qemu_maps_the_ram_file(
    guest_tools: None, machine: str, memory: int, expected: list[RamRegion]
) -> None:
    regions = ram_regions(machine, memory)
    assert list(regions) == expected
    ram = GuestMemory.create(regions)
    host, guest = socket.socketpair()
    argv = [
        shutil.which(QEMU) or QEMU,
        *("-S", "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none"),
        *memory_args(machine, memory, ram.fd),
        *("-chardev", f"socket,id=qmp,fd={guest.fileno()}", "-mon", "chardev=qmp,mode=control"),
    ]
    process = spawn(argv, pass_fds=(ram.fd, guest.fileno()), stderr=subprocess.PIPE)
    guest.close()
    try:
        qmp = GuestQMP(host)
        pieces = _mtree_ram(qmp.hmp("info mtree -f"))
        qmp.close()
    finally:
        kill(process)
        ram.close()
    # Firmware ROMs shadow bits of the first MiB; above it each region is one piece of the file.
    for piece in pieces:
        assert ram.offset(piece.start, piece.size) == piece.offset, piece
    assert [p for p in pieces if p.end > MiB][-len(regions) :][-1].end == regions[-1].end
    for region in regions:
        assert any(p.start <= max(region.start, MiB) and p.end == region.end for p in pieces), (
            region
        )


def test_the_window_sits_above_the_kernel_and_below_the_initrd() -> None:
    header = bytearray(bzimage())
    header[0x258:0x260] = (0x1000000).to_bytes(8, "little")
    header[0x260:0x264] = (0x3378000).to_bytes(4, "little")
    start, end = kernel_footprint(bytes(header), "vmlinuz")
    assert (start, end) == (0x1000000, 0x4378000)
    regions = ram_regions("q35", 512 * MiB)
    assert place_window(regions, end, 3 * MiB) == 0x4400000  # the next 2 MiB boundary
    with pytest.raises(GuestError, match=r"too small for this kernel.*at least 9[0-9] MiB"):
        place_window(ram_regions("q35", 80 * MiB), end, 3 * MiB)
    with pytest.raises(GuestError, match=re.escape("boot protocol 2.2 is older than 2.10")):
        kernel_footprint(bzimage(protocol=0x202), "old")


def test_guest_memory_is_unnamed_read_only_and_addressed_by_region() -> None:
    regions = (RamRegion(0, 4 * MiB, 0), RamRegion(FOUR_GIB, 2 * MiB, 4 * MiB))
    ram = GuestMemory.create(regions)
    try:
        assert os.readlink(f"/proc/self/fd/{ram.fd}").endswith("(deleted)")  # on no disk
        assert len(ram) == 6 * MiB and ram.buffer.readonly
        with pytest.raises(TypeError):
            ram.buffer[0] = 1
        ram.write(FOUR_GIB + 100, b"above 4G")
        assert bytes(ram.read(FOUR_GIB + 100, 8)) == b"above 4G"
        assert bytes(ram.buffer[4 * MiB + 100 : 4 * MiB + 108]) == b"above 4G"
        with pytest.raises(ValueError, match="not in guest RAM"):
            ram.read(4 * MiB - 4, 8)  # runs past the end of the region below 4 GiB
        kept = ram.read(100, 8)  # a view a reader holds keeps the mapping after close()
    finally:
        ram.close()
    with pytest.raises(ValueError, match="RAM is closed"):  # yet no read is served from it
        ram.read(100, 8)
    kept.release()


# --- the console ----------------------------------------------------------------------------


def test_console_says_panic_or_oops_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    console = Console(path)
    assert console.trouble() is None and console.text() == ""
    console.feed(b"booting\r\n[ 1.0] BUG: kernel NULL pointer dereference, address: 0\r\n")
    assert console.trouble() == ("oops", "[ 1.0] BUG: kernel NULL pointer dereference, address: 0")
    console.feed(b"[ 2.0] Kernel panic - not syncing: Fatal exception\n")
    assert console.trouble() == ("panic", "[ 2.0] Kernel panic - not syncing: Fatal exception")
    console.feed("".join(f"line {i}\n" for i in range(100)).encode())
    report = console.report()
    assert report.startswith(f"console {path}, last 30 lines:\n")
    assert (
        report.count("\n  | ") == 30 and report.endswith("| line 99") and "line 69\n" not in report
    )
    console.close()
    assert path.read_bytes().decode().replace("\r\n", "\n") == console.text()
    assert Console().report().startswith("console (kept in memory only: boot with log_dir=")


def test_console_keeps_its_start_and_end_and_says_what_it_dropped(tmp_path: Path) -> None:
    """The cap itself, with a small head and tail (test_vm_hostile.py floods a real guest)."""
    path = tmp_path / "console.log"
    console = Console(path, head=100, tail=50)
    console.feed(b"B" * 60)
    console.feed(b"b" * 60)  # 40 of them fill the head, 20 start the tail
    assert path.read_bytes() == b"B" * 60 + b"b" * 60  # the file follows at once
    for _ in range(100):
        console.feed(b"m" * 7)
    console.feed(b"the end\n")
    text = console.text()
    assert text.startswith("B" * 60 + "b" * 40 + "\n[ktstr-vmlinux: ")
    assert text.endswith("m" * 42 + "the end\n")
    assert console.dropped == 20 + 700 + 8 - 50
    assert f"{console.dropped} bytes of console output dropped here" in text
    console.close()
    assert path.read_text() == text  # the file, brought up to date when the guest stops


# --- QEMU, KVM ------------------------------------------------------------------------------


def test_qemu_missing_names_qemu_system_x86(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GuestUnavailableError, match="install qemu-system-x86") as e:
        find_qemu("x86_64")
    assert e.value.packages == ("qemu-system-x86",)


def test_qemu_dies_with_the_process_that_started_it(guest_tools: None) -> None:
    script = (
        "import signal, sys\n"
        "from pytest_ktstr_vmlinux.vm.qemu import spawn\n"
        f"p = spawn([{shutil.which(QEMU)!r}, '-S', '-accel', 'tcg', '-nodefaults',"
        " '-no-user-config', '-display', 'none', '-machine', 'q35'])\n"
        "print(p.pid, flush=True)\n"
        "signal.pause()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    pidfd = os.pidfd_open(pid)
    try:
        assert os.getpgid(pid) == pid  # a process group of its own
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs
        parent.wait()
        gone, _, _ = select.select([pidfd], [], [], 60)
        assert gone, f"QEMU {pid} outlived the process that started it"
    finally:
        os.close(pidfd)
        parent.stdout.close()


@pytest.fixture
def stalling_image(tmp_path: Path) -> Path:
    return write_stalling_image(tmp_path / "vmlinuz-stalls")


def test_probe_sees_a_kernel_that_never_starts(guest_tools: None, stalling_image: Path) -> None:
    verdict = accel.probe(find_qemu("x86_64"), stalling_image, accel="tcg", seconds=2)
    assert not verdict.works
    assert verdict.why == "a tcg guest did not start its kernel in 2 s"


def test_probe_says_what_qemu_said_when_it_exits(guest_tools: None, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a kernel")
    verdict = accel.probe(find_qemu("x86_64"), junk, accel="tcg", seconds=60)
    assert not verdict.works
    assert verdict.why == "QEMU with -accel tcg exited: qemu: invalid kernel header"


@pytest.mark.real_kernel
def test_probe_sees_the_debian_kernel_start(guest_tools: None, debian_kernel: DebianKernel) -> None:
    verdict = accel.probe(find_qemu("x86_64"), debian_kernel.image, accel="tcg", seconds=300)
    assert verdict.works, verdict.why
    assert re.fullmatch(r"the kernel started under tcg in \d+\.\d s", verdict.why)


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[warnings.WarningMessage]]:
    monkeypatch.setattr(accel, "_warned", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def test_auto_falls_back_to_tcg_in_one_line_and_probes_once_per_host(
    guest_tools: None, stalling_image: Path, fresh_warnings: list[warnings.WarningMessage]
) -> None:
    """Whatever this host's KVM can do, a kernel that never starts under it is TCG's."""
    store = MemoryStore()
    qemu = find_qemu("x86_64")
    for _ in range(2):
        chosen = accel.choose_accel(
            "auto", arch="x86_64", qemu=qemu, image=stalling_image, store=store, seconds=2
        )
        assert chosen == "tcg"
    (line,) = [str(w.message) for w in fresh_warnings if issubclass(w.category, GuestWarning)]
    assert re.fullmatch(
        r"ktstr: KVM unusable \((no /dev/kvm|cannot open /dev/kvm: .*|a kvm guest did not start"
        r" its kernel in 2 s|QEMU with -accel kvm exited: .+)\); guests run under TCG, much slower",
        line,
    ), line
    assert accel.tcg_fallbacks() == [line]  # what the plugin's terminal summary says
    if accel.kvm_device_problem() is None:
        assert (store.stats.built, store.stats.reused) == (1, 1)  # one probe, then its verdict


def test_explicit_accels_are_taken_as_given(stalling_image: Path) -> None:
    kw = {"arch": "x86_64", "qemu": Path(QEMU), "image": stalling_image, "store": MemoryStore()}
    assert accel.choose_accel("tcg", **kw) == "tcg"  # type: ignore[arg-type]
    assert accel.choose_accel("kvm", **kw) == "kvm"  # type: ignore[arg-type]
    assert accel.choose_accel("auto", **{**kw, "arch": "arm64"}) == "tcg"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one of auto, kvm, tcg"):
        accel.choose_accel("hvf", **kw)  # type: ignore[arg-type]


def test_stat_of_a_memory_file_is_regular(tmp_path: Path) -> None:
    ram = GuestMemory.create((RamRegion(0, MiB, 0),), directory=str(tmp_path))
    try:
        assert stat.S_ISREG(os.fstat(ram.fd).st_mode)
        assert list(tmp_path.iterdir()) == []  # neither the file nor its private directory stays
    finally:
        ram.close()

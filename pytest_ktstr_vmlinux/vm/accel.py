"""KVM or TCG: ``auto`` uses KVM only where a guest really runs under it.

A /dev/kvm that opens is not enough: in a nested VM it can create guests that stall in the
kernel's early boot (seen on these machines: past the real-mode setup, in the decompressor,
forever). So ``auto`` boots the kernel under test with KVM once, for a few seconds, and takes
KVM only when the kernel proper starts (``Linux version`` on the early console). The verdict is
kept in the store per host (its name, this boot of it, the QEMU binary), so the probe runs once
per host boot, not once per guest; falling back says why, in one line: a GuestWarning, once per
process, and ``tcg_fallbacks()`` for a caller that reports it its own way (the plugin, in its
terminal summary).
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GuestWarning
from .qemu import host_arch, kill, spawn, target

if TYPE_CHECKING:
    from ..store.api import Store

ACCELS = ("auto", "kvm", "tcg")
KVM_DEVICE = "/dev/kvm"
PROBE_SECONDS = 5.0
PROBE_KIND_PREFIX = "vm-kvm-probe-"
PROBE_VERSION = 1
_STARTED = b"Linux version "
_warned: dict[str, None] = {}  # the messages warned about, in order (a set that keeps it)


@dataclass(frozen=True)
class ProbeVerdict:
    works: bool
    why: str  # what the probe saw


def choose_accel(
    requested: str,
    *,
    arch: str,
    qemu: Path,
    image: Path,
    store: Store,
    seconds: float = PROBE_SECONDS,
) -> str:
    """``kvm`` or ``tcg`` for ``requested`` (``auto``, ``kvm`` or ``tcg``)."""
    if requested not in ACCELS:
        raise ValueError(f"accel {requested!r}: one of {', '.join(ACCELS)}")
    if requested != "auto":
        return requested
    if arch != host_arch():
        return "tcg"  # another architecture: KVM cannot run it, nothing to say
    problem = kvm_device_problem()
    if problem is None:
        verdict = cached_probe(store, qemu=qemu, image=image, seconds=seconds)
        if verdict.works:
            return "kvm"
        problem = verdict.why
    _warn_once(f"ktstr: KVM unusable ({problem}); guests run under TCG, much slower")
    return "tcg"


def kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot be used, or None when it opens read-write."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"no {KVM_DEVICE}"
    except OSError as e:
        return f"cannot open {KVM_DEVICE}: {e.strerror}"
    os.close(fd)
    return None


def cached_probe(store: Store, *, qemu: Path, image: Path, seconds: float) -> ProbeVerdict:
    """The probe's verdict for this host, run at most once per host boot and QEMU binary."""

    def compute(_: Path) -> dict[str, Any]:
        verdict = probe(qemu, image, accel="kvm", seconds=seconds)
        return {"works": verdict.works, "why": verdict.why}

    found = store.get_or_build_json(qemu, PROBE_KIND_PREFIX + _host_key(), PROBE_VERSION, compute)
    return ProbeVerdict(bool(found["works"]), str(found["why"]))


def probe(qemu: Path, image: Path, *, accel: str, seconds: float) -> ProbeVerdict:
    """Boot ``image`` under ``accel`` with an early console and no initrd; it works when the
    kernel proper starts within ``seconds``. QEMU is killed either way."""
    t = target(host_arch())
    argv = [
        str(qemu), "-accel", accel, *(["-cpu", "host"] if accel == "kvm" else []),
        "-machine", t.machine, "-m", "256M", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-kernel", str(image),
        "-append", f"earlyprintk=serial,{t.console},115200 console={t.console} panic=-1",
    ]  # fmt: skip
    started = time.monotonic()
    process = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    seen = b""
    try:
        while True:
            left = started + seconds - time.monotonic()
            if left <= 0:
                return ProbeVerdict(
                    False, f"a {accel} guest did not start its kernel in {seconds:g} s"
                )
            ready, _, _ = select.select([process.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                last = seen.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
                return ProbeVerdict(False, f"QEMU with -accel {accel} exited: {last[0]}")
            seen = (seen + chunk)[-4096:]
            if _STARTED in seen:
                took = time.monotonic() - started
                return ProbeVerdict(True, f"the kernel started under {accel} in {took:.1f} s")
    finally:
        kill(process)
        process.stdout.close()


def _host_key() -> str:
    """This host and this boot of it: a nested VM's KVM can change across reboots."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "unknown"
    uname = os.uname()
    text = f"{uname.nodename}\0{uname.release}\0{boot}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tcg_fallbacks() -> list[str]:
    """Why ``auto`` chose TCG in this process, once per reason, in the order it happened."""
    return list(_warned)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned[message] = None
        warnings.warn(GuestWarning(message), stacklevel=3)

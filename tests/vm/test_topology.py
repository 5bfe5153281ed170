"""Guest topology: sockets x cores x threads over NUMA nodes, as the guest's own sysfs
(/sys/devices/system/cpu/*/topology, /sys/devices/system/node, the cache hierarchy) reports it,
with its RAM still read from the host across nodes (QEMU's own memory tree for the layout, the
guest's per-CPU runqueues for the contents). Debian's 6.1 cloud kernel under TCG, one boot."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from pytest_ktstr_vmlinux.vm import GuestVM
from pytest_ktstr_vmlinux.vm.layout import MiB, ram_regions
from pytest_ktstr_vmlinux.vm.memory import GuestMemory
from pytest_ktstr_vmlinux.vm.qemu import kill, memory_args, spawn
from pytest_ktstr_vmlinux.vm.qmp import GuestQMP
from pytest_ktstr_vmlinux.vm.topology import Topology
from tests.helpers.guests import tcg_guest
from tests.helpers.kernels import DebianKernel

SOCKETS, CORES, THREADS, NODES = 2, 2, 2, 2
CPUS = SOCKETS * CORES * THREADS
MEMORY = 512 * MiB


@pytest.fixture(scope="module")
def guest(
    debian_kernel: DebianKernel, guest_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GuestVM]:
    vm = tcg_guest(
        debian_kernel,
        sockets=SOCKETS,
        cores=CORES,
        threads=THREADS,
        numa_nodes=NODES,
        memory=MEMORY,
        log_dir=tmp_path_factory.mktemp("topology"),
    )
    with vm:
        yield vm


def _read_all(vm: GuestVM, pattern: str) -> dict[str, str]:
    """Every file matching the guest glob ``pattern``, path -> first line, in one command."""
    out = vm.run(f'for f in {pattern}; do echo "$f=$(cat $f)"; done', check=True).stdout
    return dict(line.split("=", 1) for line in out.decode().splitlines())


@pytest.mark.real_kernel
def test_cpus_sockets_cores_and_threads_are_what_the_guest_sees(guest: GuestVM) -> None:
    assert guest.cpus == CPUS
    assert guest.run("nproc", check=True).stdout == f"{CPUS}\n".encode()
    topology = _read_all(
        guest,
        "/sys/devices/system/cpu/cpu*/topology/physical_package_id"
        " /sys/devices/system/cpu/cpu*/topology/core_id"
        " /sys/devices/system/cpu/cpu*/topology/thread_siblings_list",
    )
    cpus: dict[int, dict[str, str]] = {}
    for path, value in topology.items():
        match = re.fullmatch(r"/sys/devices/system/cpu/cpu(\d+)/topology/(\w+)", path)
        assert match is not None
        cpus.setdefault(int(match[1]), {})[match[2]] = value
    assert sorted(cpus) == list(range(CPUS))
    per_socket = CORES * THREADS
    for cpu, seen in cpus.items():
        assert int(seen["physical_package_id"]) == cpu // per_socket
        siblings = [int(s) for s in re.split(r"[,-]", seen["thread_siblings_list"])]
        assert len(siblings) == THREADS and cpu in siblings
    cores = {(c["physical_package_id"], c["core_id"]) for c in cpus.values()}
    assert len(cores) == SOCKETS * CORES


@pytest.mark.real_kernel
def test_numa_nodes_hold_whole_sockets_and_a_share_of_ram(guest: GuestVM) -> None:
    cpulists = _read_all(guest, "/sys/devices/system/node/node*/cpulist")
    per_node = CPUS // NODES
    assert cpulists == {
        f"/sys/devices/system/node/node{n}/cpulist": f"{n * per_node}-{(n + 1) * per_node - 1}"
        for n in range(NODES)
    }
    meminfo = guest.run("cat /sys/devices/system/node/node*/meminfo", check=True).stdout.decode()
    totals = [int(kb) << 10 for kb in re.findall(r"Node \d+ MemTotal:\s+(\d+) kB", meminfo)]
    assert len(totals) == NODES
    for total in totals:  # each node has its share, less what the kernel and window keep
        assert MEMORY // NODES // 2 < total <= MEMORY // NODES


@pytest.mark.real_kernel
def test_the_last_level_cache_is_per_socket(guest: GuestVM) -> None:
    """QEMU 7.2 (Debian 12) gives an x86 TCG guest an L3 shared by the CPUs of one socket."""
    shared = _read_all(guest, "/sys/devices/system/cpu/cpu*/cache/index3/shared_cpu_list")
    per_socket = CORES * THREADS
    for path, cpus in shared.items():
        cpu = int(re.search(r"cpu(\d+)/cache", path)[1])  # type: ignore[index]
        first = cpu // per_socket * per_socket
        assert cpus == f"{first}-{first + per_socket - 1}", (path, cpus)
    assert len(shared) == CPUS


@pytest.mark.real_kernel
def test_the_host_reads_ram_of_every_node(guest: GuestVM) -> None:
    """A CPU's runqueue is allocated on its own node: the host finds each where the guest
    says that node's memory is, and reads the right CPU number there."""
    assert guest.memory.regions == ram_regions("q35", MEMORY) and len(guest.memory) == MEMORY
    blocks = _read_all(guest, "/sys/devices/system/memory/block_size_bytes")
    size = int(next(iter(blocks.values())), 16)
    live = guest.kernel
    for node in range(NODES):
        listing = guest.run(f"ls /sys/devices/system/node/node{node}", check=True).stdout
        ranges = [
            (int(n) * size, (int(n) + 1) * size)
            for n in re.findall(r"^memory(\d+)$", listing.decode(), re.MULTILINE)
        ]
        cpu = node * (CPUS // NODES)
        rq = live.per_cpu("runqueues", cpu)
        assert rq.cpu.value_() == cpu
        phys = live.translate(rq.address_)
        assert any(start <= phys < end for start, end in ranges), (node, hex(phys), ranges)


def _mtree(text: str) -> list[tuple[int, int, str, int]]:
    """(start, end, backend, offset in it) of the RAM in QEMU's flat view of "memory"."""
    block = next(b for b in text.split("FlatView #") if ' AS "memory"' in b)
    line = re.compile(
        r"^\s+([0-9a-f]+)-([0-9a-f]+) \(prio \d+, (?:ram|rom)\): (ram\d)(?: @([0-9a-f]+))?$"
    )
    return [
        (int(m[1], 16), int(m[2], 16) + 1, m[3], int(m[4] or "0", 16))
        for m in filter(None, map(line.match, block.splitlines()))
    ]


@pytest.mark.parametrize("memory", [512 * MiB, 3 * 1024 * MiB])
def test_node_backends_lie_in_guest_memory_as_guest_memory_maps_them(
    guest_tools: None, memory: int
) -> None:
    """QEMU's own memory tree (no boot): each piece of node i's backend at guest physical P is
    at the offset of P in GuestMemory's buffer, node files side by side, across the PCI hole."""
    topology = Topology.choose(None, sockets=2, numa_nodes=2)
    regions = ram_regions("q35", memory)
    sizes = topology.node_sizes(memory)
    ram = GuestMemory.create(regions, node_sizes=sizes)
    host, guest = socket.socketpair()
    argv = [
        shutil.which("qemu-system-x86_64") or "qemu-system-x86_64",
        *("-S", "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none"),
        *memory_args("q35", memory, ram.fd, topology, tuple(zip(ram.fds, sizes, strict=True))),
        *("-chardev", f"socket,id=qmp,fd={guest.fileno()}", "-mon", "chardev=qmp,mode=control"),
    ]
    process = spawn(argv, pass_fds=(*ram.fds, guest.fileno()), stderr=subprocess.PIPE)
    guest.close()
    try:
        qmp = GuestQMP(host)
        pieces = _mtree(qmp.hmp("info mtree -f"))
        qmp.close()
        starts = {f"ram{i}": sum(sizes[:i]) for i in range(len(sizes))}
        above_rom = [p for p in pieces if p[0] >= MiB]
        assert {p[2] for p in above_rom} == set(starts)
        for start, end, backend, offset in above_rom:
            assert ram.offset(start, end - start) == starts[backend] + offset
    finally:
        kill(process)
        ram.close()

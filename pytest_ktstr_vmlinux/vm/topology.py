"""A guest's CPU topology and NUMA nodes, as QEMU's ``-smp`` and ``-numa`` express them.

``sockets`` x ``cores`` (per socket) x ``threads`` (per core) CPUs; ``numa_nodes`` nodes, each
holding whole sockets (node ``i`` the sockets ``i*k .. i*k+k-1``) and an equal share of the RAM
(the last node the rest, in whole MiB). Each node's RAM is its own memory backend, and QEMU lays
the nodes' RAM out one after the other in guest physical memory, node 0 first, before splitting
it around the PCI hole as for one backend: so the RAM regions of ``layout.py`` hold whatever the
number of nodes, and ``memory.py`` maps the backends side by side in that order.

A guest given only ``cpus`` gets QEMU's plain ``-smp N`` (QEMU 7.2's q35 makes that one socket
of N cores), as before topology was a setting.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Topology:
    sockets: int
    cores: int  # per socket
    threads: int  # per core
    numa_nodes: int
    explicit: bool = True  # False: QEMU chooses (-smp N)

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores * self.threads

    @classmethod
    def choose(
        cls,
        cpus: int | None = None,
        *,
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        numa_nodes: int | None = None,
        default_cpus: int = 2,
    ) -> Topology:
        """The topology for the arguments a caller gave; ValueError naming the one that does
        not fit (a count below 1, a product that is not ``cpus``, nodes that do not divide
        the sockets)."""
        for name, value in (
            ("cpus", cpus),
            ("sockets", sockets),
            ("cores", cores),
            ("threads", threads),
            ("numa_nodes", numa_nodes),
        ):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name}={value!r}: a whole number, 1 or more")
        if sockets is None and cores is None and threads is None and numa_nodes is None:
            n = default_cpus if cpus is None else cpus
            return cls(1, n, 1, 1, explicit=False)
        nodes = numa_nodes or 1
        sockets = sockets or nodes
        threads = threads or 1
        if cores is None:
            per_socket = (cpus or sockets * threads) // (sockets * threads)
            if cpus is not None and per_socket * sockets * threads != cpus:
                raise ValueError(
                    f"cpus={cpus} is not a whole number of cores across sockets={sockets} x"
                    f" threads={threads}: give cores= too"
                )
            cores = per_socket
        topology = cls(sockets, cores, threads, nodes)
        if cpus is not None and cpus != topology.cpus:
            raise ValueError(
                f"cpus={cpus} but sockets={sockets} x cores={cores} x threads={threads} is"
                f" {topology.cpus}: give one or make them agree"
            )
        if sockets % nodes:
            raise ValueError(
                f"numa_nodes={nodes} does not divide sockets={sockets}: each NUMA node holds"
                " whole sockets (the last-level cache QEMU gives x86 guests is per socket)"
            )
        return topology

    def smp(self) -> list[str]:
        if not self.explicit:
            return ["-smp", str(self.cpus)]
        return [
            "-smp",
            f"cpus={self.cpus},sockets={self.sockets},cores={self.cores},threads={self.threads}",
        ]

    def numa(self, backends: list[str]) -> list[str]:
        """``-numa`` options: node ``i`` with memory backend ``backends[i]`` and its sockets."""
        if self.numa_nodes == 1:
            return []
        per_node = self.sockets // self.numa_nodes
        args = []
        for node, backend in enumerate(backends):
            args += ["-numa", f"node,nodeid={node},memdev={backend}"]
        for socket in range(self.sockets):
            args += ["-numa", f"cpu,node-id={socket // per_node},socket-id={socket}"]
        return args

    def node_sizes(self, memory: int) -> list[int]:
        """Each node's RAM in bytes: equal whole MiB shares, the remainder on the last node."""
        share = memory // MiB // self.numa_nodes * MiB
        if share == 0:
            raise ValueError(
                f"memory={memory // MiB}M cannot be split over {self.numa_nodes} nodes"
            )
        return [share] * (self.numa_nodes - 1) + [memory - share * (self.numa_nodes - 1)]

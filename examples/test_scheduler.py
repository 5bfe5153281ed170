"""What a scheduler test harness reads from a kernel before it boots it, ktstr-style.

A harness that inspects a guest from the host needs addresses (``runqueues``, the per-CPU offset
table) and struct layouts (``struct rq``) of exactly the kernel it boots. Each case declares what
it needs; on a kernel without it the case skips and says what is missing (``--kernel-strict``
makes that a failure). By default this runs on the running kernel: symbols from /proc/kallsyms
(as root), BTF from /sys/kernel/btf/vmlinux, config from /proc/config.gz.
docs/getting-started.md shows it on a Debian kernel, a build tree, and both at once.
"""

from __future__ import annotations

from pytest_ktstr_vmlinux import BTF, Kernel, KernelConfig, KernelSymbols, ktstr_test


@ktstr_test(symbols=["runqueues"], btf=["struct rq.nr_running", "struct rq.clock"])
def test_rq_layout_for_reading_nr_running(kernel_symbols: KernelSymbols, kernel_btf: BTF) -> None:
    # What a harness adds to a CPU's rq address to read how many tasks it runs, and its clock.
    nr_running = kernel_btf.offsetof("struct rq", "nr_running")
    clock = kernel_btf.member("struct rq", "clock")
    assert 0 <= nr_running < kernel_btf.sizeof("struct rq")
    assert clock.offset % 8 == 0
    assert kernel_btf.sizeof(clock.type_id) == 8
    assert kernel_symbols["runqueues"] != 0


@ktstr_test(config=["SMP"], symbols=["runqueues", "__per_cpu_offset"], btf=["struct rq"])
def test_per_cpu_runqueues(
    kernel_config: KernelConfig, kernel_symbols: KernelSymbols, kernel_btf: BTF
) -> None:
    # CPU n's rq lives at __per_cpu_offset[n] + &runqueues: both must come from this kernel.
    runqueues = kernel_symbols.symbol("runqueues")
    offsets = kernel_symbols.symbol("__per_cpu_offset")
    assert kernel_symbols.lookup(offsets.value) == ("__per_cpu_offset", 0)
    if offsets.section is not None:  # an ELF symbol table: sections and exact sizes are known
        assert runqueues.percpu
        assert not offsets.percpu
        assert runqueues.size == kernel_btf.sizeof("struct rq")
        assert offsets.size == 8 * int(str(kernel_config["NR_CPUS"]))


@ktstr_test(config=["SCHED_CLASS_EXT"], btf=["struct scx_rq", "struct rq.scx"])
def test_sched_ext_local_dsq(kernel_btf: BTF) -> None:
    # sched_ext keeps a per-CPU dispatch queue in rq->scx; a harness counts its tasks.
    scx = kernel_btf.offsetof("struct rq", "scx")
    local_dsq = kernel_btf.offsetof("struct scx_rq", "local_dsq")
    assert kernel_btf.offsetof("struct rq", "scx.local_dsq") == scx + local_dsq
    assert kernel_btf.offsetof("struct scx_dispatch_q", "nr") < kernel_btf.sizeof(
        "struct scx_dispatch_q"
    )


@ktstr_test(min_version="6.6", btf=["struct sched_entity"])
def test_eevdf_fields(kernel_btf: BTF) -> None:
    # 6.6 replaced CFS's pick with EEVDF: a task's virtual deadline and lag are in its entity.
    for field in ("deadline", "vlag"):
        assert kernel_btf.offsetof("struct sched_entity", field) >= 0


@ktstr_test(max_version="6.5", btf=["struct sched_entity"])
def test_pre_eevdf_has_no_deadline(kernel_btf: BTF) -> None:
    fields = {m.name for m in kernel_btf.type("struct sched_entity").members}
    assert "deadline" not in fields
    assert "vruntime" in fields


@ktstr_test(config=["!PREEMPT_RT"], arch="x86_64")
def test_not_realtime_on_x86(kernel: Kernel) -> None:
    # The requirement is the check; the body records which kernel qualified.
    assert kernel.arch == "x86_64"

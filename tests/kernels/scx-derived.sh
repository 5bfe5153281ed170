# Sourced by build-scx.sh: test schedulers derived from the tree's own scx_simple, for the faults
# the tests need on demand. Needs the tree's tools/sched_ext unpacked; each function exits 1 saying
# what did not apply when the sources moved.
#
# - scx_erroring (ops name "erroring"): `-e N` calls scx_bpf_error() at the N-th enqueue, as
#   scx_qmap's -e does. scx_qmap itself has the option, but Linux 7.2's scx_qmap does not load
#   when built with Debian 12's clang-19 (the verifier refuses its arena code).
# - scx_stallcpu (ops name "stallcpu"): `-s CPU` never dispatches on CPU (nor queues a waking task
#   on its local DSQ), so the tasks that may run only there stay runnable and never run while the
#   CPU idles: a stall of one CPU, made by a scheduler, as a real bug would make it.

# add_sched_target DIR NAME: build NAME with the tree's C schedulers.
add_sched_target() {
    sed -i "s/^c-sched-targets = scx_simple /c-sched-targets = scx_simple $2 /" "$1/Makefile"
    grep -q "^c-sched-targets = scx_simple .*$2 " "$1/Makefile" ||
        { echo "build-scx.sh: tools/sched_ext/Makefile changed: cannot add $2" >&2; exit 1; }
}

# derive_c DIR NAME OPTION ASSIGNMENT: NAME's user-space part, scx_simple's with one option more.
derive_c() {
    local c
    c=$(sed -e "s/scx_simple/$2/g" -e "s/\"fvh\"/\"f$3:vh\"/" \
        -e "/^\t\tcase 'v':$/i \\\\t\tcase '$3':\\n\\t\\t\\t$4;\\n\\t\\t\\tbreak;" \
        "$1/scx_simple.c")
    printf '%s\n' "$c" >"$1/$2.c"
    grep -q "case '$3':" "$1/$2.c" || { echo "build-scx.sh: scx_simple.c changed: cannot derive $2" >&2; exit 1; }
}

derive_scx_erroring() {
    local dir="$1" bpf
    bpf=$(awk '
        { print }
        /^const volatile bool fifo_sched;$/ {
            print "const volatile u32 error_after;"; print "static u32 nr_enqueued;"; d = 1
        }
        /^void BPF_STRUCT_OPS\(simple_enqueue,/ { e = 1; next }
        e && /^\{$/ {
            print "\tif (error_after && __sync_fetch_and_add(&nr_enqueued, 1) + 1 == error_after)"
            print "\t\tscx_bpf_error(\"scx_erroring: enqueue %u, as -e asked\", error_after);"
            e = 0; done = 1
        }
        END { if (!d || !done) exit 1 }
    ' "$dir/scx_simple.bpf.c") || { echo "build-scx.sh: scx_simple.bpf.c changed: cannot derive scx_erroring" >&2; exit 1; }
    sed 's/\(\.name[[:space:]]*= \)"simple"/\1"erroring"/' <<<"$bpf" >"$dir/scx_erroring.bpf.c"
    grep -q '"erroring"' "$dir/scx_erroring.bpf.c" || { echo "build-scx.sh: scx_simple changed: cannot derive scx_erroring" >&2; exit 1; }
    derive_c "$dir" scx_erroring e 'skel->rodata->error_after = strtoul(optarg, NULL, 0)'
    add_sched_target "$dir" scx_erroring
}

derive_scx_stallcpu() {
    local dir="$1" bpf
    bpf=$(awk '
        /^\tif \(is_idle\) \{$/ && s { print "\tif (is_idle && cpu != stall_cpu) {"; s = 0; i = 1; next }
        { print }
        /^const volatile bool fifo_sched;$/ { print "const volatile s32 stall_cpu = -1;"; d = 1 }
        /^s32 BPF_STRUCT_OPS\(simple_select_cpu,/ { s = 1 }
        /^void BPF_STRUCT_OPS\(simple_dispatch,/ { p = 1; next }
        p && /^\{$/ { print "\tif (cpu == stall_cpu)"; print "\t\treturn;"; p = 0; done = 1 }
        END { if (!d || !i || !done) exit 1 }
    ' "$dir/scx_simple.bpf.c") || { echo "build-scx.sh: scx_simple.bpf.c changed: cannot derive scx_stallcpu" >&2; exit 1; }
    sed 's/\(\.name[[:space:]]*= \)"simple"/\1"stallcpu"/' <<<"$bpf" >"$dir/scx_stallcpu.bpf.c"
    grep -q '"stallcpu"' "$dir/scx_stallcpu.bpf.c" || { echo "build-scx.sh: scx_simple changed: cannot derive scx_stallcpu" >&2; exit 1; }
    derive_c "$dir" scx_stallcpu s 'skel->rodata->stall_cpu = strtol(optarg, NULL, 0)'
    add_sched_target "$dir" scx_stallcpu
}

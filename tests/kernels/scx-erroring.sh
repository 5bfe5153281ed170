# Sourced by build-scx.sh: derive scx_erroring, a test scheduler for scx_bpf_error(), from the
# tree's own scx_simple: the same scheduler (ops name "erroring") with `-e N`, which calls
# scx_bpf_error() at its N-th enqueue, as scx_qmap's -e does. scx_qmap itself has the option, but
# Linux 7.2's scx_qmap does not load when built with Debian 12's clang-19 (the verifier refuses its
# arena code), so the tests take this one. Needs $work/$src unpacked; exits 1 saying what did not
# apply when the sources moved.
derive_scx_erroring() {
    local dir="$1" bpf c
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
    c=$(sed -e 's/scx_simple/scx_erroring/g' -e 's/"fvh"/"fe:vh"/' \
        -e "/^\t\tcase 'v':$/i \\\\t\tcase 'e':\\n\\t\\t\\tskel->rodata->error_after = strtoul(optarg, NULL, 0);\\n\\t\\t\\tbreak;" \
        "$dir/scx_simple.c")
    printf '%s\n' "$c" >"$dir/scx_erroring.c"
    grep -q '"erroring"' "$dir/scx_erroring.bpf.c" && grep -q 'error_after = strtoul' "$dir/scx_erroring.c" ||
        { echo "build-scx.sh: scx_simple changed: cannot derive scx_erroring" >&2; exit 1; }
    sed -i 's/^c-sched-targets = scx_simple /c-sched-targets = scx_simple scx_erroring /' "$dir/Makefile"
    grep -q '^c-sched-targets = scx_simple scx_erroring ' "$dir/Makefile" ||
        { echo "build-scx.sh: tools/sched_ext/Makefile changed: cannot add scx_erroring" >&2; exit 1; }
}

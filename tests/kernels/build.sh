#!/usr/bin/env bash
# Build a real (tiny) kernel tree from Debian's linux-source-6.1: `make tinyconfig` plus 64BIT,
# DWARF5 debug info, BTF and IKCONFIG, then `make bzImage` (about two minutes on two cores).
#
#   <cache>/tinyconfig-<version>-<config hash>/   a kernel build tree (vmlinux, arch/x86/boot/bzImage,
#                                                 include/config/kernel.release, .config)
#   <cache>/tinyconfig-tree                      points at the newest complete tree (file `ready`)
#
# A tree already built for the same source version and config is reused.
# Needs: apt-get dpkg-deb make gcc flex bison bc pahole (dwarves) and libelf/libssl headers:
#   apt-get install build-essential flex bison bc libelf-dev libssl-dev dwarves xz-utils
#
# Environment: KTSTR_TEST_KERNELS (cache folder, default ~/.cache/pytest-ktstr-vmlinux-test-kernels).
set -euo pipefail

script=build.sh
# shellcheck source=tests/kernels/debian.sh
. "$(dirname "$0")/debian.sh"

for tool in make gcc flex bison bc pahole xz; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool not found; on Debian/Ubuntu: apt-get install build-essential flex bison bc libelf-dev libssl-dev dwarves xz-utils" >&2
        exit 2
    }
done

# Options on top of tinyconfig. DEBUG_INFO_BTF needs BPF_SYSCALL; debug info needs DEBUG_KERNEL.
options=(64BIT DEBUG_KERNEL DEBUG_INFO_DWARF5 BPF_SYSCALL DEBUG_INFO_BTF IKCONFIG)
version=$(candidate_version linux-source-6.1)
[ -n "$version" ] || { echo "build.sh: apt knows no linux-source-6.1; run 'apt-get update' on Debian 12" >&2; exit 2; }
key=$(printf '%s\n' "$version" "${options[@]}" | sha256sum | cut -c1-12)
tree="$cache/tinyconfig-$version-$key"

if [ ! -f "$tree/ready" ]; then
    work=$(mktemp -d "$cache/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "build.sh: downloading linux-source-6.1 $version (about 140 MB)" >&2
    (cd "$work" && apt-get download "linux-source-6.1=$version" >&2)
    echo "build.sh: unpacking the kernel source" >&2
    dpkg-deb --fsys-tarfile "$work"/linux-source-6.1_*.deb |
        tar -x -O ./usr/src/linux-source-6.1.tar.xz | tar -xJ -C "$work"
    src="$work/linux-source-6.1"
    (
        cd "$src"
        make -s tinyconfig
        for opt in "${options[@]}"; do ./scripts/config --enable "$opt"; done
        make -s olddefconfig
        for opt in "${options[@]}"; do
            grep -qx "CONFIG_$opt=y" .config || { echo "build.sh: CONFIG_$opt did not stick" >&2; exit 1; }
        done
        # A line per object is too much for a terminal: the output goes to build.log in the
        # tree, and a line every 15 s says how far the build got.
        echo "build.sh: make bzImage (about two minutes on two cores)" >&2
        start=$SECONDS
        make -j"$(nproc)" bzImage >build.log 2>&1 &
        make_pid=$!
        while kill -0 "$make_pid" 2>/dev/null; do
            sleep 1
            if (((SECONDS - start) % 15 == 0)); then
                echo "build.sh: ... $((SECONDS - start)) s, $(grep -c '^  CC ' build.log || true) files compiled" >&2
            fi
        done
        if ! wait "$make_pid"; then
            cp build.log "$cache/build-failed.log"
            tail -n 50 build.log >&2
            echo "build.sh: make bzImage failed; the whole log is $cache/build-failed.log" >&2
            exit 1
        fi
        echo "build.sh: built in $((SECONDS - start)) s" >&2
    ) >&2
    rm -f "$work"/*.deb
    cat "$src/include/config/kernel.release" >"$src/ready"
    rm -rf "$tree"
    mv "$src" "$tree"
fi

ln -sfn "$(basename "$tree")" "$cache/tinyconfig-tree.new"
mv -T "$cache/tinyconfig-tree.new" "$cache/tinyconfig-tree"
echo "$tree"

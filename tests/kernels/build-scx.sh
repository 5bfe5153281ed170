#!/usr/bin/env bash
# Build the kernel's own sched_ext schedulers (tools/sched_ext: scx_simple, scx_qmap, scx_central,
# scx_flatcg, scx_pair, scx_sdt, scx_userland, scx_cpu0, and scx_erroring and scx_stallcpu, test
# schedulers derived from scx_simple by scx-derived.sh) from the linux-source-X.Y package of Debian
# sid that matches the kernel fetch-sid.sh unpacked, against that kernel's BTF (VMLINUX_BTF= its
# -dbg vmlinux), with clang >= 16 (Debian 12's `clang` is 14: its clang-19 package is used).
#
#   <cache>/scx-<source version>-<key>/bin/scx_*   dynamically linked (libelf, libz, libc)
#   <cache>/scx-schedulers                        points at the newest complete build (file `ready`
#                                                  holds the source package and version)
#
# A build for the same source version, kernel and compiler is reused. About 165 MB to download and
# a minute to build on two cores. Run fetch-sid.sh first.
# Needs: apt-get install clang-19 llvm-19 libelf-dev zlib1g-dev make gcc
#
# Environment: KTSTR_TEST_KERNELS (cache folder, default ~/.cache/pytest-ktstr-vmlinux-test-kernels).
set -euo pipefail

script=build-scx.sh
# shellcheck source=tests/kernels/debian.sh
. "$(dirname "$0")/debian.sh"
# shellcheck source=tests/kernels/scx-derived.sh
. "$(dirname "$0")/scx-derived.sh"

install_hint="on Debian 12: apt-get install clang-19 llvm-19 libelf-dev zlib1g-dev make gcc"
for tool in make gcc clang-19 llvm-strip-19; do
    command -v "$tool" >/dev/null || { echo "build-scx.sh: $tool not found; $install_hint" >&2; exit 2; }
done
for header in libelf.h zlib.h; do
    [ -f "/usr/include/$header" ] || { echo "build-scx.sh: /usr/include/$header not found; $install_hint" >&2; exit 2; }
done

sysroot="$cache/debian-sid-sysroot"
[ -f "$sysroot/ready" ] && [ -f "$sysroot/source" ] || {
    echo "build-scx.sh: no sid kernel in $sysroot: run tests/kernels/fetch-sid.sh first" >&2
    exit 2
}
release=$(<"$sysroot/ready")
source_pkg=$(<"$sysroot/source")
src=${source_pkg%%=*}
src_version=${source_pkg#*=}
[ -n "$src_version" ] || { echo "build-scx.sh: Debian sid offered no $src when fetch-sid.sh ran" >&2; exit 2; }
btf=$(find "$sysroot/usr/lib/debug" -type f \( -name vmlinux -o -name "vmlinux-$release" \) -print -quit)
[ -n "$btf" ] || { echo "build-scx.sh: no -dbg vmlinux of $release in $sysroot" >&2; exit 2; }

clang_version=$(clang-19 --version)
recipe=$(sha256sum "$(dirname "$0")/scx-derived.sh")
key=$(printf '%s\n' "$src_version" "$release" "$clang_version" "$recipe" | sha256sum | cut -c1-12)
build="$cache/scx-$src_version-$key"

if [ ! -f "$build/ready" ]; then
    sid_apt_setup
    work=$(mktemp -d "$cache/.build-scx.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "build-scx.sh: downloading $src $src_version (about 165 MB)" >&2
    (cd "$work" && apt-get "${sid_apt[@]}" download "$src=$src_version" >&2)
    # tools/sched_ext builds libbpf and a bootstrap bpftool from the tree: tools/, the headers,
    # and kernel/bpf/disasm.h are all it reads of the source.
    echo "build-scx.sh: unpacking tools/, include/, kernel/ and arch/x86/ of the source" >&2
    dpkg-deb --fsys-tarfile "$work"/"$src"_*.deb |
        tar -x -O "./usr/src/$src.tar.xz" |
        tar -xJ -C "$work" --wildcards "$src/tools/*" "$src/include/*" "$src/kernel/*" \
            "$src/arch/x86/*" "$src/scripts/*" "$src/Makefile"
    rm -f "$work"/*.deb
    derive_scx_erroring "$work/$src/tools/sched_ext"
    derive_scx_stallcpu "$work/$src/tools/sched_ext"
    mkdir -p "$work/out"
    echo "build-scx.sh: make -C tools/sched_ext (about a minute on two cores)" >&2
    if ! make -C "$work/$src/tools/sched_ext" -j"$(nproc)" CLANG=clang-19 LLVM_STRIP=llvm-strip-19 \
        VMLINUX_BTF="$btf" O="$work/out" >"$work/build.log" 2>&1; then
        echo "build-scx.sh: the build failed; the end of its log:" >&2
        tail -n 40 "$work/build.log" >&2
        exit 1
    fi
    mkdir -p "$work/result/bin"
    for bin in "$work"/out/build/bin/scx_*; do
        install -m 0755 "$bin" "$work/result/bin/"
    done
    for wanted in scx_simple scx_qmap scx_central scx_flatcg scx_userland scx_erroring scx_stallcpu; do
        [ -x "$work/result/bin/$wanted" ] || { echo "build-scx.sh: the build made no $wanted" >&2; exit 1; }
    done
    cp "$work/build.log" "$work/result/build.log"
    printf '%s\n' "$source_pkg" >"$work/result/ready"
    rm -rf "$build"
    mv "$work/result" "$build"
fi

ln -sfn "$(basename "$build")" "$cache/scx-schedulers.new"
mv -T "$cache/scx-schedulers.new" "$cache/scx-schedulers"
echo "$build"

#!/usr/bin/env bash
# Fetch Debian's 6.1 cloud kernel image and its -dbg vmlinux with `apt-get download` and unpack
# them with `dpkg-deb` (nothing is installed) into a folder laid out as a sysroot:
#
#   <cache>/debian-<R>-<version>/boot/vmlinuz-R
#   <cache>/debian-<R>-<version>/boot/config-R
#   <cache>/debian-<R>-<version>/usr/lib/debug/boot/vmlinux-R
#
# <cache>/debian-sysroot points at the newest complete sysroot, whose `ready` file holds R.
# A sysroot that is already complete for the package version apt offers is reused.
#
# Environment: KTSTR_TEST_KERNELS (cache folder, default ~/.cache/pytest-ktstr-vmlinux-test-kernels),
# KTSTR_TEST_DEBIAN_PACKAGE (a linux-image-6.1.0-N-cloud-amd64 package name to pin).
set -euo pipefail

script=fetch.sh
# shellcheck source=tests/kernels/debian.sh
. "$(dirname "$0")/debian.sh"

pkg=$(cloud_amd64_package)
if [ -z "$pkg" ]; then
    echo "fetch.sh: apt knows no linux-image-6.1.0-*-cloud-amd64; run 'apt-get update' on a Debian 12 machine" >&2
    exit 2
fi
release=${pkg#linux-image-}
version=$(candidate_version "$pkg")
[ -n "$version" ] || { echo "fetch.sh: apt offers no version of $pkg; run 'apt-get update'" >&2; exit 2; }
sysroot="$cache/debian-$release-$version"

if [ ! -f "$sysroot/ready" ]; then
    work=$(mktemp -d "$cache/.fetch.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "fetch.sh: downloading $pkg and $pkg-dbg $version (about 310 MB)" >&2
    (cd "$work" && apt-get download "$pkg=$version" "$pkg-dbg=$version" >&2)
    mkdir -p "$work/root"
    dpkg-deb --fsys-tarfile "$work/${pkg}_"*.deb |
        tar -x -C "$work/root" "./boot/vmlinuz-$release" "./boot/config-$release" "./boot/System.map-$release"
    dpkg-deb --fsys-tarfile "$work/${pkg}-dbg_"*.deb |
        tar -x -C "$work/root" "./usr/lib/debug/boot/vmlinux-$release"
    rm -f "$work"/*.deb
    printf '%s\n' "$release" >"$work/root/ready"
    rm -rf "$sysroot"
    mv "$work/root" "$sysroot"
fi

ln -sfn "$(basename "$sysroot")" "$cache/debian-sysroot.new"
mv -T "$cache/debian-sysroot.new" "$cache/debian-sysroot"
echo "$sysroot"

#!/usr/bin/env bash
# Fetch Debian's 6.1 arm64 kernel image (the signed linux-image-6.1.0-N-arm64, whose ABI number N
# is the one of the amd64 cloud kernel fetch.sh takes) with `apt-get download` and unpack its
# image and config with `dpkg-deb` (nothing is installed) into a folder laid out as a sysroot:
#
#   <cache>/debian-arm64-<R>-<version>/boot/vmlinuz-R
#   <cache>/debian-arm64-<R>-<version>/boot/config-R
#   <cache>/debian-arm64-<R>-<version>/usr/lib/debug/boot/vmlinux-R   (from the -dbg package)
#
# <cache>/debian-arm64-sysroot points at the newest complete sysroot, whose `ready` file holds R.
# A sysroot that is already complete for the package version apt offers is reused. Debian 12's
# arm64 vmlinuz is a flat, uncompressed arm64 Image wrapped as a signed EFI PE (CONFIG_EFI_ZBOOT
# is off); the -dbg vmlinux is what it must pair with, by build-id.
#
# Package lists for arm64: an amd64 machine's apt knows no arm64 packages unless arm64 was added
# with `dpkg --add-architecture arm64` (then `apt-get download -oAPT::Architecture=arm64 ...`
# works directly, and this script uses the system's lists). Otherwise the script does not touch
# the machine's configuration: it keeps arm64-only lists of the machine's own sources
# (/etc/apt/sources.list*) in <cache>/.apt-arm64/ and runs `apt-get update` on them (about 9 MB,
# one second) when they do not know the package or offer another version than amd64's.
# Needs network access to the Debian mirror, apt-get, apt-cache and dpkg-deb; root is not needed.
#
# Environment: KTSTR_TEST_KERNELS (cache folder, default ~/.cache/pytest-ktstr-vmlinux-test-kernels),
# KTSTR_TEST_DEBIAN_ARM64_PACKAGE (a linux-image-6.1.0-N-arm64 package name to pin),
# KTSTR_TEST_DEBIAN_PACKAGE (the amd64 package whose N to follow, as in fetch.sh).
set -euo pipefail

script=fetch-arm64.sh
# shellcheck source=tests/kernels/debian.sh
. "$(dirname "$0")/debian.sh"

# The ABI number N of the amd64 cloud kernel fetch.sh takes (the same choice).
amd64=$(cloud_amd64_package)
pkg=${KTSTR_TEST_DEBIAN_ARM64_PACKAGE:-}
if [ -z "$pkg" ]; then
    if [ -z "$amd64" ]; then
        echo "fetch-arm64.sh: apt knows no linux-image-6.1.0-*-cloud-amd64; run 'apt-get update' on a Debian 12 machine" >&2
        exit 2
    fi
    abi=${amd64#linux-image-}
    pkg="linux-image-${abi%-cloud-amd64}-arm64"
fi
amd64_version=""
if [ -n "$amd64" ]; then
    amd64_version=$(candidate_version "$amd64")
fi

# apt options for arm64: the system's lists when they carry arm64, else private ones.
arm64_version() { candidate_version "$pkg" "${apt[@]}"; }
apt=(-oAPT::Architecture=arm64)
version=$(arm64_version)
if [ -z "$version" ]; then
    state="$cache/.apt-arm64"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    apt=(-oAPT::Architecture=arm64 -oAPT::Architectures=arm64
        "-oDir::State::Lists=$state/lists" "-oDir::Cache=$state/cache")
    version=$(arm64_version)
    if [ -z "$version" ] || { [ -n "$amd64_version" ] && [ "$version" != "$amd64_version" ]; }; then
        apt-get "${apt[@]}" update -q >&2
        version=$(arm64_version)
    fi
fi
if [ -z "$version" ]; then
    echo "fetch-arm64.sh: apt knows no $pkg for arm64 (after 'apt-get update' of arm64 lists in $cache/.apt-arm64)" >&2
    exit 2
fi
if [ -n "$amd64_version" ] && [ "$version" != "$amd64_version" ]; then
    echo "fetch-arm64.sh: note: $pkg is $version, $amd64 is $amd64_version" >&2
fi
release=${pkg#linux-image-}
sysroot="$cache/debian-arm64-$release-$version"

if [ ! -f "$sysroot/ready" ]; then
    work=$(mktemp -d "$cache/.fetch-arm64.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # The signed image and the unsigned -dbg come from two source packages; the -dbg's version
    # is whatever apt offers for it.
    dbg_version=$(candidate_version "$pkg-dbg" "${apt[@]}")
    [ -n "$dbg_version" ] || { echo "fetch-arm64.sh: apt knows no $pkg-dbg for arm64" >&2; exit 2; }
    echo "fetch-arm64.sh: downloading $pkg $version and $pkg-dbg $dbg_version (about 860 MB)" >&2
    (cd "$work" && apt-get "${apt[@]}" download "$pkg=$version" "$pkg-dbg=$dbg_version" >&2)
    mkdir -p "$work/root"
    dpkg-deb --fsys-tarfile "$work/${pkg}_"*.deb |
        tar -x -C "$work/root" "./boot/vmlinuz-$release" "./boot/config-$release"
    echo "fetch-arm64.sh: unpacking the -dbg vmlinux" >&2
    dpkg-deb --fsys-tarfile "$work/${pkg}-dbg_"*.deb |
        tar -x -C "$work/root" "./usr/lib/debug/boot/vmlinux-$release"
    rm -f "$work"/*.deb
    printf '%s\n' "$release" >"$work/root/ready"
    rm -rf "$sysroot"
    mv "$work/root" "$sysroot"
fi

ln -sfn "$(basename "$sysroot")" "$cache/debian-arm64-sysroot.new"
mv -T "$cache/debian-arm64-sysroot.new" "$cache/debian-arm64-sysroot"
echo "$sysroot"

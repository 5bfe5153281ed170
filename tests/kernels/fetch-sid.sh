#!/usr/bin/env bash
# Fetch Debian unstable's (sid's) current cloud kernel and its -dbg vmlinux with `apt-get download`
# from private apt lists (debian.sh: sid_apt_setup) and unpack them with `dpkg-deb` (nothing is
# installed). It is the suite's sched_ext kernel: CONFIG_SCHED_CLASS_EXT=y, BTF, and (6.15 and
# later) .data..percpu linked in place. The release is read from the metapackage
# linux-image-cloud-amd64, never typed, so the script follows sid's moves. Laid out as a sysroot:
#
#   <cache>/debian-sid-<R>-<version>/usr/lib/modules/R/{vmlinuz,config}      (2026 packaging)
#   <cache>/debian-sid-<R>-<version>/boot/{vmlinuz,config}-R                 (the older one)
#   <cache>/debian-sid-<R>-<version>/usr/lib/debug/lib/modules/R/vmlinux     (or /usr/lib/debug/boot/vmlinux-R)
#   <cache>/debian-sid-<R>-<version>/source                                  linux-source-X.Y=VERSION, for build-scx.sh
#
# <cache>/debian-sid-sysroot points at the newest complete sysroot, whose `ready` file holds R.
# A sysroot already complete for the version sid offers is reused. About 370 MB to download.
#
# Environment: KTSTR_TEST_KERNELS (cache folder, default ~/.cache/pytest-ktstr-vmlinux-test-kernels).
set -euo pipefail

script=fetch-sid.sh
# shellcheck source=tests/kernels/debian.sh
. "$(dirname "$0")/debian.sh"

sid_apt_setup
meta=linux-image-cloud-amd64
deps=$(apt-cache "${sid_apt[@]}" depends "$meta" 2>/dev/null || true)
image=$(awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ && p == "" { p = $2 } END { print p }' <<<"$deps")
if [ -z "$image" ]; then
    echo "fetch-sid.sh: Debian sid's $meta depends on no linux-image-R-cloud-amd64 (apt-cache depends says: ${deps:-nothing})" >&2
    exit 2
fi
release=${image#linux-image-}
version=$(candidate_version "$image" "${sid_apt[@]}")
[ -n "$version" ] || { echo "fetch-sid.sh: sid's lists offer no version of $image" >&2; exit 2; }
sysroot="$cache/debian-sid-$release-$version"

if [ ! -f "$sysroot/ready" ]; then
    # The 2026 packaging splits the image (linux-binary-R) and config (linux-base-R) from the
    # metapackage linux-image-R; before it, linux-image-R held them in /boot.
    packages=("$image-dbg")
    if [ -n "$(candidate_version "linux-binary-$release" "${sid_apt[@]}")" ]; then
        packages+=("linux-binary-$release" "linux-base-$release")
    else
        packages+=("$image")
    fi
    work=$(mktemp -d "$cache/.fetch-sid.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "fetch-sid.sh: downloading ${packages[*]} $version (about 370 MB)" >&2
    (cd "$work" && apt-get "${sid_apt[@]}" download "${packages[@]/%/=$version}" >&2)
    mkdir -p "$work/root"
    wanted=("./usr/lib/modules/$release/vmlinuz" "./usr/lib/modules/$release/config"
        "./boot/vmlinuz-$release" "./boot/config-$release"
        "./usr/lib/debug/lib/modules/$release/vmlinux" "./usr/lib/debug/boot/vmlinux-$release")
    for deb in "$work"/*.deb; do
        # Regular files only: the -dbg package's links to the vmlinux are not needed.
        files=$(deb_files "$deb")
        take=()
        for path in "${wanted[@]}"; do
            if grep -qxF "$path" <<<"$files"; then take+=("$path"); fi
        done
        [ "${#take[@]}" -gt 0 ] || continue
        case "$deb" in *-dbg_*) echo "fetch-sid.sh: unpacking the -dbg vmlinux (about 25 s)" >&2 ;; esac
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/root" "${take[@]}"
    done
    for kind in vmlinuz config vmlinux; do
        found=$(find "$work/root" -type f \( -name "$kind" -o -name "$kind-$release" \) -print -quit)
        [ -n "$found" ] || { echo "fetch-sid.sh: no $kind in ${packages[*]} $version" >&2; exit 1; }
    done
    src="linux-source-$(sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$release")"
    src_version=$(candidate_version "$src" "${sid_apt[@]}")
    printf '%s=%s\n' "$src" "$src_version" >"$work/root/source"
    rm -f "$work"/*.deb
    printf '%s\n' "$release" >"$work/root/ready"
    rm -rf "$sysroot"
    mv "$work/root" "$sysroot"
fi

ln -sfn "$(basename "$sysroot")" "$cache/debian-sid-sysroot.new"
mv -T "$cache/debian-sid-sysroot.new" "$cache/debian-sid-sysroot"
echo "$sysroot"

# Sourced by the scripts in tests/kernels/: what they need from apt, decided in one place.
# Needs $script (the caller's name, for messages); sets $cache (and creates it).
#
# Every pipe here lets its producer run to the end: under `set -o pipefail` a consumer that exits
# early (`awk '... exit'`, `head`) kills apt-cache with SIGPIPE, and the script dies with 141 and
# no message once apt lists several versions.

cache=${KTSTR_TEST_KERNELS:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-ktstr-vmlinux-test-kernels}
mkdir -p "$cache"

for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "$script: $tool not found: needs a Debian/Ubuntu machine" >&2; exit 2; }
done

# Say what failed: a step that fails under `set -e` names itself, its line and its status.
trap 'rc=$?; echo "$script: line $LINENO: \`$BASH_COMMAND\` failed (exit $rc)" >&2' ERR
set -o errtrace

# The version `apt-get download PACKAGE` would fetch (apt's candidate), or empty when apt knows
# none: candidate_version PACKAGE [APT OPTION ...] (-oAPT::Architecture=arm64 ...).
candidate_version() {
    { apt-cache "${@:2}" policy "$1" 2>/dev/null || true; } |
        awk '$1 == "Candidate:" && $2 != "(none)" { v = $2 } END { print v }'
}

# The newest 6.1 cloud image apt offers: $KTSTR_TEST_DEBIAN_PACKAGE when pinned, else the
# metapackage's dependency, else the highest name; empty when apt knows none.
cloud_amd64_package() {
    local pkg=${KTSTR_TEST_DEBIAN_PACKAGE:-}
    if [ -z "$pkg" ]; then
        pkg=$({ apt-cache depends linux-image-cloud-amd64 2>/dev/null || true; } |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-[0-9]+-cloud-amd64$/ && p == "" { p = $2 } END { print p }')
    fi
    if [ -z "$pkg" ]; then
        pkg=$({ apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' || true; } |
            awk '{ print $1 }' | sort -V | tail -n 1)
    fi
    echo "$pkg"
}

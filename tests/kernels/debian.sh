# Sourced by fetch.sh and fetch-arm64.sh: what both need from apt, decided in one place.
# Needs $script (the caller's name, for messages); sets $cache (and creates it).

cache=${KTSTR_TEST_KERNELS:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-ktstr-vmlinux-test-kernels}
mkdir -p "$cache"

for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "$script: $tool not found: needs a Debian/Ubuntu machine" >&2; exit 2; }
done

# The newest 6.1 cloud image apt offers: $KTSTR_TEST_DEBIAN_PACKAGE when pinned, else the
# metapackage's dependency, else the highest name; empty when apt knows none.
cloud_amd64_package() {
    local pkg=${KTSTR_TEST_DEBIAN_PACKAGE:-}
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.0-[0-9]+-cloud-amd64$/ { print $2; exit }')
    fi
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' |
            awk '{ print $1 }' | sort -V | tail -n 1)
    fi
    echo "$pkg"
}

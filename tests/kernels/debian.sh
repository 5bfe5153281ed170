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

# Private apt lists for Debian unstable (sid), kept in <cache>/.apt-sid: the machine's own sources
# and state are never touched. The sources file sits beside the lists folder, not in it (apt empties
# the lists folder of files it does not know). Sets the array $sid_apt (the options to pass to
# apt-get and apt-cache). `apt-get update` runs on every call (about 4 s), so the scripts follow sid's
# moves; without the network, lists fetched before are used, with a note.
sid_apt_setup() {
    local state="$cache/.apt-sid"
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    printf '%s\n' "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main" \
        >"$state/sources.list"
    sid_apt=("-oDir::Etc::SourceList=$state/sources.list" "-oDir::Etc::SourceParts=/dev/null"
        "-oDir::State::Lists=$state/lists" "-oDir::Cache=$state/cache" "-oDir::State::status=/dev/null"
        "-oAPT::Sandbox::User=$(id -un)")
    if ! apt-get "${sid_apt[@]}" update -qq >&2; then
        if [ -z "$(ls "$state/lists" 2>/dev/null | grep -v '^partial$' || true)" ]; then
            echo "$script: 'apt-get update' of Debian sid's lists failed and none were fetched before: needs network access to deb.debian.org" >&2
            exit 2
        fi
        echo "$script: note: 'apt-get update' of Debian sid's lists failed; using the lists fetched before" >&2
    fi
}

# The regular files of a .deb (dpkg-deb -c, read whole), one path per line: deb_files FILE.
deb_files() {
    local listing
    listing=$(dpkg-deb -c "$1")
    awk 'substr($1, 1, 1) == "-" { print $6 }' <<<"$listing"
}

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Builds (once) a Debian trixie chroot holding QEMU >= 10.2 from
# trixie-backports, which has the user-creatable `vhost-user-test-device-pci`
# that the host's QEMU lacks. Tests run it as `chroot .cache/qemu-root
# qemu-system-x86_64 ...`.
#
# Idempotent: when the tree exists, its stamp is present and its QEMU passes
# the checks below, nothing is rebuilt. A missing or broken tree is rebuilt
# from scratch. Needs root (mmdebstrap --mode=root, chroot).
#
# Usage: qemu-tests/setup/qemu.sh        (prints the QEMU version)
#        qemu-tests/setup/qemu.sh NAME PACKAGE...
#            the same recipe in .cache/NAME with PACKAGE... added, e.g.
#            libvirt.sh's libvirt-root; the package list is part of the
#            stamp, so a changed list rebuilds that tree.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$REPO_ROOT/.cache"
NAME="${1:-qemu-root}"
[ $# -gt 0 ] && shift
PACKAGES=(qemu-system-x86 "$@")
ROOT="$CACHE/$NAME"
STAMP="$ROOT/.vpasid-qemu-stamp"
MIN_MAJOR=10
MIN_MINOR=2

log() { echo "qemu.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, chroot)"

# Prints "MAJOR.MINOR.PATCH" of the chroot's QEMU, or fails.
qemu_version() {
    local out
    out="$(chroot "$ROOT" qemu-system-x86_64 --version 2>/dev/null | head -n1)" || return 1
    # "QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1~bpo13+1)"
    sed -n 's/^QEMU emulator version \([0-9][0-9]*\.[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\).*/\1/p' <<<"$out"
}

# Succeeds when the chroot holds a usable QEMU (version and device checks).
verify() {
    [ -x "$ROOT/usr/bin/qemu-system-x86_64" ] || return 1
    local ver major minor
    ver="$(qemu_version)" || return 1
    [ -n "$ver" ] || return 1
    major="${ver%%.*}"
    minor="${ver#*.}"
    minor="${minor%%.*}"
    if [ "$major" -lt "$MIN_MAJOR" ] ||
        { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
        log "chroot QEMU $ver is older than $MIN_MAJOR.$MIN_MINOR"
        return 1
    fi
    if ! chroot "$ROOT" qemu-system-x86_64 -machine none -device help 2>/dev/null |
        grep -q '"vhost-user-test-device-pci"'; then
        log "chroot QEMU $ver lacks vhost-user-test-device-pci"
        return 1
    fi
    echo "$ver"
}

# The main Debian mirror URI named by the machine's apt configuration: the
# first deb822 stanza (or one-line entry) whose suites are not "-security".
mirror_uri() {
    local f=/etc/apt/sources.list.d/debian.sources
    if [ -r "$f" ]; then
        awk '
            function flush() {
                if (uri != "" && suites != "" && suites !~ /-security/ && !found) {
                    print uri; found = 1
                }
                uri = ""; suites = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:"   { uri = $2 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            END { flush() }
        ' "$f"
        return
    fi
    # Fallback for one-line style configuration.
    grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list 2>/dev/null |
        grep -v -- '-security' | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/' |
        head -n1
}

mkdir -p "$CACHE"
exec 9>"$CACHE/$NAME.lock"
flock 9

# The stamp names the packages of a tree built with extra ones.
want_stamp=""
[ "$NAME" = qemu-root ] || want_stamp="packages: ${PACKAGES[*]}"
if [ -f "$STAMP" ] && { [ -z "$want_stamp" ] || grep -qxF "$want_stamp" "$STAMP"; } &&
    ver="$(verify)"; then
    echo "QEMU $ver (cached in $ROOT)"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

MIRROR="$(mirror_uri)"
[ -n "$MIRROR" ] || die "no Debian mirror URI found in /etc/apt/sources.list.d/debian.sources"
MIRROR="${MIRROR%/}"
log "building trixie chroot $NAME with ${PACKAGES[*]} from $MIRROR (about 30 s)"

TMP="$CACHE/$NAME.tmp"
rm -rf --one-file-system "$TMP"
mmdebstrap --variant=apt --mode=root --quiet \
    --aptopt='APT::Default-Release "trixie-backports"' \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    trixie "$TMP" \
    "deb $MIRROR trixie main" \
    "deb $MIRROR trixie-backports main" >&2 ||
    { rm -rf --one-file-system "$TMP"; die "mmdebstrap failed"; }

# Never delete through a bind mount into the host (e.g. a leaked test mount).
if awk -v r="$ROOT/" '{ if (index($5 "/", r) == 1) found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "$ROOT has mounts below it; unmount them first (see: grep $NAME /proc/self/mountinfo)"
fi
rm -rf --one-file-system "$ROOT"
mv "$TMP" "$ROOT"
ver="$(verify)" || die "QEMU in $ROOT does not pass the checks after a fresh build"
{ date -u +%FT%TZ; [ -z "$want_stamp" ] || echo "$want_stamp"; } >"$STAMP"
echo "QEMU $ver (built in $ROOT)"

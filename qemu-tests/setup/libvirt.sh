#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Builds (once) .cache/libvirt-root: qemu.sh's trixie chroot recipe with
# libvirt (12.9 from trixie-backports) added, for the libvirt tests
# (tests/libvirt.rs). .cache/qemu-root, which every other test uses, is
# not touched. Then starts a libvirtd once (setup/libvirt-ns.sh), which
# checks that it runs and answers, and fills the tree's QEMU capabilities
# cache (about 1 s) so that the tests' libvirtds, started in parallel, find
# it ready instead of each probing QEMU and writing it at once.
#
# Idempotent: a tree whose stamp names the same packages is kept; the
# second step takes under a second with a valid cache.
# Needs root.
#
# Usage: qemu-tests/setup/libvirt.sh     (prints the libvirt version)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT="$REPO_ROOT/.cache/libvirt-root"

log() { echo "libvirt.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# qemu-utils: qemu-img, for the disk image of the documented domain XML.
bash "$REPO_ROOT/qemu-tests/setup/qemu.sh" libvirt-root \
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-utils >&2

for bin in usr/sbin/libvirtd usr/sbin/virtlogd usr/bin/virsh usr/bin/qemu-img; do
    [ -x "$ROOT/$bin" ] || die "$ROOT lacks /$bin; remove the tree to rebuild it"
done

# One libvirtd at a time fills the cache.
exec 9>"$REPO_ROOT/.cache/libvirt-root.lock"
flock 9
STATE="$(mktemp -d /tmp/vpasid-libvirt-setup.XXXXXX)"
PID=
cleanup() {
    [ -z "$PID" ] || kill -KILL "$PID" 2>/dev/null || true
    [ -z "$PID" ] || wait "$PID" 2>/dev/null || true
    rm -rf --one-file-system "$STATE"
}
trap cleanup EXIT
unshare -m -p -n --kill-child --propagation private -- \
    sh "$REPO_ROOT/qemu-tests/setup/libvirt-ns.sh" "$ROOT" "$STATE" >"$STATE.log" 2>&1 &
PID=$!
# virsh runs in the daemon's mount namespace (that of unshare's child).
ns_pid() { cat "/proc/$PID/task/$PID/children" 2>/dev/null | awk '{ print $1 }'; }
start=$(date +%s)
out=
while [ $(($(date +%s) - start)) -lt 600 ]; do
    kill -0 "$PID" 2>/dev/null || die "libvirtd exited: $(tail -5 "$STATE.log")"
    child="$(ns_pid)"
    # The first connection waits for the capabilities probe.
    if [ -n "$child" ] && out="$(nsenter -t "$child" -m -- chroot "$ROOT" \
        virsh -c qemu:///system version 2>/dev/null)"; then
        break
    fi
    out=
    sleep 0.2
done
rm -f "$STATE.log"
[ -n "$out" ] || die "libvirtd did not answer within 600 s"
grep -q 'Running hypervisor: QEMU' <<<"$out" || die "libvirtd has no QEMU driver: $out"
echo "$(sed -n 's/^Using library: //p' <<<"$out"), $(sed -n 's/^Running hypervisor: //p' <<<"$out") (cached in $ROOT, ready in $(($(date +%s) - start)) s)"

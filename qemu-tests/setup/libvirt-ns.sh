#!/bin/sh
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Runs libvirtd (and virtlogd) from the libvirt chroot, without systemd,
# isolated: run it as
#
#   unshare -m -p -n --kill-child --propagation private -- \
#       sh qemu-tests/setup/libvirt-ns.sh ROOT STATE [CONF]
#
# ROOT is the chroot (.cache/libvirt-root), STATE a fresh directory that
# receives this instance's /etc/libvirt, /var/lib/libvirt and
# /var/log/libvirt (copied from ROOT on first use), so that nothing of a
# test's domains lands in the shared tree. CONF, if given, is a file of
# lines appended to this instance's libvirtd.conf (a second libvirtd on
# the machine, standing for another host, needs its own `host_uuid`, and
# its `unix_sock_dir` under /tmp so that the first one reaches it). The capabilities cache,
# /var/cache/libvirt, is the tree's own (libvirt.sh fills it).
#
# Inside the new mount, PID and network namespaces (nothing here touches the
# host's network, and killing `unshare` kills every process in it, QEMU
# included):
# - ROOT is bind-mounted on itself: libvirt needs `/` to be a mount point
#   ("Failed disable mount propagation out of the root filesystem");
# - its own /dev without /dev/kvm (with it, a TCG-only libvirt re-probes
#   QEMU on every capability lookup), /proc, /sys, a tmpfs /run;
# - with VPASID_CGROUPS, its own cgroups (a cgroup namespace);
# - the host's /tmp at /tmp, where the tests keep sockets and images.
# This shell stays PID 1 of the namespace, so that the QEMU processes
# libvirtd daemonizes are reaped (libvirtd as PID 1 would leave them
# zombies, and `virsh destroy` would wait 40 s for each).
set -eu
root=$1
state=$2

# A host of its own down to its cgroups: with one shared tree, two
# libvirtds starting domain 1 "web" use the same cgroups (see
# qemu-tests/src/host_cgroups.rs). VPASID_CGROUPS lists this instance's
# cgroups, one per hierarchy: move into them, then into a cgroup namespace
# rooted there (its hierarchies are mounted anew below).
if [ -n "${VPASID_CGROUPS-}" ]; then
    for dir in $VPASID_CGROUPS; do
        echo 0 >"$dir/cgroup.procs"
    done
    VPASID_CGROUPS='' VPASID_CGROUPNS=1 exec unshare -C -- sh "$0" "$@"
fi

for d in etc:etc/libvirt lib:var/lib/libvirt log:var/log/libvirt; do
    [ -d "$state/${d%%:*}" ] || cp -a "$root/${d#*:}" "$state/${d%%:*}"
done
if [ $# -ge 3 ] && ! grep -q '^# vpasid-tests' "$state/etc/libvirtd.conf"; then
    { echo '# vpasid-tests'; cat "$3"; } >>"$state/etc/libvirtd.conf"
fi
# No network is defined, and the bundled default one is not started.
rm -f "$state"/etc/qemu/networks/autostart/*.xml

mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
if [ -n "${VPASID_CGROUPNS-}" ]; then
    # Mounted in the cgroup namespace, a hierarchy shows its root as `/`.
    # The host's mounts go first: libvirtd must not find two of each.
    mounts=$(awk -v root="$root" 'index($2, root) == 1 &&
        ($3 == "cgroup" || $3 == "cgroup2") { print $2, $3, $4 }' /proc/self/mounts)
    echo "$mounts" | while read -r mnt type opts; do
        umount "$mnt"
        mount -t "$type" -o "$opts" "$type" "$mnt"
    done
fi
mount -t tmpfs -o mode=0755 tmpfs "$root/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    name=${node%%:*}
    nums=${node#*:}
    mknod -m 666 "$root/dev/$name" c "${nums%%:*}" "${nums#*:}"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount --bind "$state/etc" "$root/etc/libvirt"
mount --bind "$state/lib" "$root/var/lib/libvirt"
mount --bind "$state/log" "$root/var/log/libvirt"
mount --rbind /tmp "$root/tmp"

chroot "$root" virtlogd -d
chroot "$root" libvirtd &
wait $!

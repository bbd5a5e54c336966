#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build.sh NAME - build virtio_pasid.ko and ioasid_exerciser.ko for the
# kernel NAME, and check the driver's sources:
#   6.1, 5.10		the test guest kernels (qemu-tests/setup/kernels.sh)
#   5.10-oldest, 5.10-newest, 6.1-oldest, 6.1-newest
#			headers of the oldest and newest point release
#			Debian serves of each series, for the build check
#			(qemu-tests/setup/build-kernels.sh headers, run
#			from here when missing)
#
# First check-layers.sh (no call circle among the driver's files) and
# checkpatch --strict (Linux 6.1's, from Debian's linux-source-6.1:
# build-kernels.sh checkpatch, run from here when missing): any error,
# warning or check not in checkpatch-allowed fails. The sources are copied
# to .cache/build/NAME/ in the DKMS layout (header in include/), so builds
# for different kernels never collide, and built with -Werror (KCFLAGS:
# the project's builds only; Kbuild ships without it) and sparse (C=1):
# any compiler or sparse diagnostic fails.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NAME=${1:-}
SETUP=$REPO/qemu-tests/setup
case $NAME in
6.1 | 5.10)
	KDIR=$REPO/.cache/kernels/$NAME/headers
	KVER=$(cat "$REPO/.cache/kernels/$NAME/kver" 2>/dev/null || true)
	if [ ! -f "$KDIR/Makefile" ]; then
		echo "[build] $KDIR missing: run qemu-tests/setup/kernels.sh first" >&2
		exit 1
	fi
	;;
5.10-oldest | 5.10-newest | 6.1-oldest | 6.1-newest)
	bash "$SETUP/build-kernels.sh" headers "$NAME"
	KDIR=$REPO/.cache/build-kernels/$NAME/headers
	KVER=$(cat "$REPO/.cache/build-kernels/$NAME/kver")
	;;
*)
	echo "usage: $0 {6.1|5.10|5.10-oldest|5.10-newest|6.1-oldest|6.1-newest}" >&2
	exit 2
	;;
esac
OUT=$REPO/.cache/build/$NAME

SOURCES=("$REPO"/guest-driver/*.[ch])

echo "[build] $NAME: no call circle among the driver's files"
bash "$REPO/guest-driver/check-layers.sh" >/dev/null

echo "[build] $NAME: checkpatch --strict"
bash "$SETUP/build-kernels.sh" checkpatch >/dev/null
CHECKPATCH=$REPO/.cache/checkpatch/checkpatch.pl
# --no-tree: there is no kernel tree here, and what needs one concerns
# in-tree files only; spelling.txt and const_structs.checkpatch are read
# from checkpatch.pl's own directory. Any diagnostic fails the build
# unless checkpatch-allowed (file:type patterns) names it; each allowed
# one is explained in a comment beside the code.
mkdir -p "$REPO/.cache/build"
CHECKPATCH_LOG=$REPO/.cache/build/checkpatch.$NAME.log
rc=0
(cd "$REPO" && perl "$CHECKPATCH" --strict --no-tree \
	--terse --no-summary --show-types -f "${SOURCES[@]#"$REPO/"}") \
	>"$CHECKPATCH_LOG" 2>&1 || rc=$?
if [ "$rc" -gt 1 ]; then
	cat "$CHECKPATCH_LOG" >&2
	echo "[build] $NAME: FAILED: checkpatch did not run (status $rc)" >&2
	exit 1
fi
if grep -v -E -f "$REPO/guest-driver/checkpatch-allowed" "$CHECKPATCH_LOG" >&2; then
	echo "[build] $NAME: FAILED: checkpatch diagnostics above" >&2
	exit 1
fi

echo "[build] $NAME: copying sources to .cache/build/$NAME"
rm -rf "$OUT"
mkdir -p "$OUT/include"
cp "$REPO"/guest-driver/{Kbuild,Makefile,dkms.conf} "${SOURCES[@]}" "$OUT/"
cp "$REPO/protocol/include/virtio_pasid.h" "$OUT/include/"

echo "[build] $NAME: make -C $KDIR M=$OUT C=1 KCFLAGS=-Werror modules"
# Kbuild prints progress on stdout; compiler and sparse diagnostics go to
# stderr, which must stay empty.
if ! make -C "$KDIR" M="$OUT" C=1 KCFLAGS=-Werror modules >"$OUT/build.log" 2>"$OUT/diagnostics.log"; then
	cat "$OUT/build.log" "$OUT/diagnostics.log" >&2
	echo "[build] $NAME: FAILED" >&2
	exit 1
fi
# Kbuild's note that BTF needs a vmlinux the headers do not ship is no
# diagnostic of ours.
grep -v '^Skipping BTF generation for .* due to unavailability of vmlinux$' \
	"$OUT/diagnostics.log" >"$OUT/diagnostics.ours.log" || true
if [ -s "$OUT/diagnostics.ours.log" ]; then
	cat "$OUT/diagnostics.ours.log" >&2
	echo "[build] $NAME: FAILED: compiler or sparse diagnostics above" >&2
	exit 1
fi
for src in "${SOURCES[@]}"; do
	[[ $src == *.c ]] || continue
	if ! grep -q "CHECK.*/${src##*/}\$" "$OUT/build.log"; then
		echo "[build] $NAME: FAILED: sparse did not check ${src##*/} (is sparse installed?)" >&2
		exit 1
	fi
done

for ko in virtio_pasid.ko ioasid_exerciser.ko; do
	[ -f "$OUT/$ko" ] || { echo "[build] $NAME: $ko missing" >&2; exit 1; }
done
echo "[build] $NAME: ok ($KVER): .cache/build/$NAME/virtio_pasid.ko .cache/build/$NAME/ioasid_exerciser.ko"

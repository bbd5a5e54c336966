#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build-kernels.sh - what the guest driver's build check needs besides the
# test kernels (kernels.sh):
#
#   build-kernels.sh headers [NAME...]
#       kernel headers, no image, for NAME in 5.10-oldest, 5.10-newest,
#       6.1-oldest and 6.1-newest (default: all four): the oldest and the
#       newest cloud-amd64 ABI that Debian still serves for the series, 5.10
#       from bullseye, bullseye-updates and bullseye-security, 6.1 from
#       bookworm, bookworm-updates and bookworm-security. The ABIs are read
#       from the package indexes (kernels.sh's private apt state), never
#       written down here. Produces .cache/build-kernels/NAME/{kver,headers}.
#   build-kernels.sh checkpatch
#       scripts/checkpatch.pl, spelling.txt and const_structs.checkpatch of
#       Debian's linux-source-6.1, in .cache/checkpatch/; the package is
#       downloaded once and only those three files are kept.
#
# Everything is cached: a second run downloads nothing (a NAME whose ABI
# the index still names is kept; checkpatch is kept once extracted).

set -euo pipefail

# shellcheck source=kernels.sh
source "$(dirname "${BASH_SOURCE[0]}")/kernels.sh"

step() { printf '[build-kernels] %s\n' "$*"; }
die() { printf '[build-kernels] error: %s\n' "$*" >&2; exit 1; }

OUT=$CACHE/build-kernels
FLAVOUR=cloud-amd64

# The cloud-amd64 header ABIs of SERIES (5.10, 6.1) the index serves, in
# version order, one per line (e.g. 5.10.0-30-cloud-amd64).
abis() {
	local series=$1 abi
	apt-cache "${APT_OPTS[@]}" pkgnames linux-headers- 2>/dev/null |
		sed -nE "s/^linux-headers-(${series//./\\.}\.0-[0-9]+-$FLAVOUR)\$/\1/p" |
		sort -V |
		while IFS= read -r abi; do
			# A name only something provides has no version: skip it.
			apt-cache "${APT_OPTS[@]}" show --no-all-versions \
				"linux-headers-$abi" >/dev/null 2>&1 && echo "$abi"
		done
}

# headers NAME: NAME is SERIES-oldest or SERIES-newest.
headers() {
	local name=$1 series suite which
	series=${name%-*}
	which=${name##*-}
	case $series in
	5.10) suite=bullseye ;;
	6.1) suite=bookworm ;;
	*) die "unknown series in $name (known: 5.10 6.1)" ;;
	esac
	case $which in
	oldest | newest) ;;
	*) die "unknown $name (want SERIES-oldest or SERIES-newest)" ;;
	esac
	apt_setup "$suite"

	local list kver
	list=$(abis "$series")
	[ -n "$list" ] || die "no linux-headers-$series.0-N-$FLAVOUR in the $suite indexes"
	if [ "$which" = oldest ]; then
		kver=$(head -n1 <<<"$list")
	else
		kver=$(tail -n1 <<<"$list")
	fi

	local out=$OUT/$name
	if [ -f "$out/.complete" ] && [ "$(cat "$out/kver")" = "$kver" ] &&
		[ -f "$(sed -n 's/^include //p' "$out/headers/Makefile" 2>/dev/null)" ]; then
		step "$name: cached ($kver)"
		return
	fi
	step "$name: $kver (of: $(tr '\n' ' ' <<<"$list"))"

	# The kbuild tools: Debian's headers ask for linux-kbuild-SERIES of
	# at least their version; the candidate is the newest.
	local common=linux-headers-${kver%-"$FLAVOUR"}-common debs=() pkg
	for pkg in "linux-headers-$kver" "$common" "linux-kbuild-$series"; do
		debs+=("$(fetch_deb "$pkg")")
	done
	extract_debs "$out" "${debs[@]}"
	fix_headers "$out/root" "$kver" "$common"
	ln -sfn "root/usr/src/linux-headers-$kver" "$out/headers"
	echo "$kver" >"$out/kver"
	touch "$out/.complete"
	step "$name: ready ($kver) in .cache/build-kernels/$name"
}

CHECKPATCH_FILES=(checkpatch.pl spelling.txt const_structs.checkpatch)

checkpatch() {
	local dir=$CACHE/checkpatch f missing=0
	for f in "${CHECKPATCH_FILES[@]}"; do
		[ -s "$dir/$f" ] || missing=1
	done
	if [ "$missing" = 0 ]; then
		step "checkpatch: cached ($(cat "$dir/version" 2>/dev/null)) in .cache/checkpatch"
		return
	fi
	apt_setup bookworm
	local deb tmp src
	deb=$(fetch_deb linux-source-6.1)
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064
	trap "rm -rf '$tmp'" RETURN
	step "checkpatch: extracting scripts/{${CHECKPATCH_FILES[*]}} from ${deb##*/}"
	# The package holds the tree as one tarball: take only the three.
	src=$(dpkg-deb -c "$deb" | sed -nE 's|.* \./(usr/src/linux-source-6\.1\.tar\.[a-z0-9]+)$|\1|p')
	[ -n "$src" ] || die "no usr/src/linux-source-6.1.tar.* in $deb"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "./$src"
	tar -x -a -f "$tmp/$src" -C "$tmp" \
		"${CHECKPATCH_FILES[@]/#/linux-source-6.1/scripts/}"
	mkdir -p "$dir"
	for f in "${CHECKPATCH_FILES[@]}"; do
		install -m 0644 "$tmp/linux-source-6.1/scripts/$f" "$dir/$f"
	done
	chmod 0755 "$dir/checkpatch.pl"
	dpkg-deb -f "$deb" Version >"$dir/version"
	# The three files are the cache: the 140 MB package is not kept.
	rm -f "$deb"
	step "checkpatch: ready ($(cat "$dir/version")) in .cache/checkpatch"
}

build_main() {
	mkdir -p "$DEBS" "$OUT"
	ensure_tools >/dev/null
	local cmd=${1:-}
	shift || true
	case $cmd in
	headers)
		local names=("$@") n
		[ ${#names[@]} -gt 0 ] || names=(5.10-oldest 5.10-newest 6.1-oldest 6.1-newest)
		for n in "${names[@]}"; do
			headers "$n"
		done
		;;
	checkpatch) checkpatch ;;
	*)
		echo "usage: $0 {headers [NAME...]|checkpatch}" >&2
		exit 2
		;;
	esac
}

build_main "$@"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# kernels.sh - fetch the Debian guest kernels used by the vpasid tests.
#
# Produces, under the git-ignored <repo>/.cache/:
#   kernels/<name>/vmlinuz      the kernel image
#   kernels/<name>/kver         its `uname -r`
#   kernels/<name>/modules/lib/modules/<kver>/   modules tree, depmod'ed
#   kernels/<name>/headers      a KDIR for `make -C KDIR M=...`
#   debs/                       the downloaded .deb files
# for <name> in 6.1 (Debian 12, bookworm) and 5.10 (Debian 11, bullseye).
#
# Package lists are resolved with a private apt state under .cache/apt/
# built from the mirror URIs of /etc/apt/sources.list.d/debian.sources, so
# the host's apt state is never touched. A kernel whose tree is complete is
# skipped, so a second run does nothing slow. Usage: kernels.sh [NAME...]

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=$REPO/.cache
DEBS=$CACHE/debs
SOURCES=/etc/apt/sources.list.d/debian.sources

step() { printf '[kernels] %s\n' "$*"; }
die() { printf '[kernels] error: %s\n' "$*" >&2; exit 1; }

# Install host tools only when missing: command -> package.
ensure_tools() {
	local missing=() cmd pkg
	local -A need=(
		[apt-get]=apt [depmod]=kmod [gcc]=gcc [make]=make [sparse]=sparse
		[dpkg-deb]=dpkg [dpkg-architecture]=dpkg-dev [perl]=perl-base
		[xz]=xz-utils
	)
	for cmd in "${!need[@]}"; do
		command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
	done
	# objtool from linux-kbuild links libelf; apt needs the CA bundle.
	for pkg in libelf1 ca-certificates; do
		dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		step "host tools present"
		return
	fi
	step "installing host tools: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	local log=$CACHE/apt-install.log
	# A new machine may have no package lists yet: update, then retry.
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
		if ! { apt-get update -qq &&
			apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
			cat "$log" >&2
			die "installing ${missing[*]} failed"
		fi
	fi
}

# The host's mirror URIs, from its deb822 sources: "main" or "security".
mirror_uri() {
	[ -r "$SOURCES" ] || die "$SOURCES not found"
	awk -v want="$1" '
		/^URIs:/ { uri = $2 }
		/^Suites:/ { sec = ($0 ~ /-security/) }
		/^[[:space:]]*$/ { flush() }
		function flush() {
			if (uri != "" && !done && (want == "security") == sec) {
				print uri; done = 1
			}
			uri = ""; sec = 0
		}
		END { flush() }' "$SOURCES"
}

# Private apt state for one suite under .cache/apt/<suite>/, built from the
# host's mirror URIs, so the host's own apt state is never touched.
APT_OPTS=()
apt_setup() {
	local suite=$1 dir=$CACHE/apt/$1 main sec tmp
	main=$(mirror_uri main)
	sec=$(mirror_uri security)
	[ -n "$main" ] || die "no mirror URI in $SOURCES"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/etc/preferences.d"
	tmp=$(mktemp)
	{
		printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
			"$main" "$suite" "$suite"
		printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
		if [ -n "$sec" ]; then
			printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' \
				"$sec" "$suite"
			printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
		fi
	} >"$tmp"
	if ! cmp -s "$tmp" "$dir/etc/debian.sources"; then
		mv "$tmp" "$dir/etc/debian.sources"
		rm -f "$dir/lists/"*_dists_*
	else
		rm -f "$tmp"
	fi
	APT_OPTS=(
		-o "Dir::Etc::sourcelist=-"
		-o "Dir::Etc::sourceparts=$dir/etc"
		-o "Dir::Etc::preferencesparts=$dir/etc/preferences.d"
		-o "Dir::State::Lists=$dir/lists"
		-o "Dir::Cache=$dir/cache"
		-o "APT::Architecture=amd64"
		-o "APT::Sandbox::User=root"
	)
	if ! ls "$dir/lists/"*_dists_"${suite}"_InRelease >/dev/null 2>&1; then
		step "apt-get update ($suite, private state in .cache/apt/$suite)"
		apt-get "${APT_OPTS[@]}" -qq update >/dev/null ||
			die "apt-get update for $suite failed"
	fi
}

# Resolve the package a meta package depends on, matching a regex.
resolve_dep() {
	local meta=$1 re=$2 dep
	dep=$(apt-cache "${APT_OPTS[@]}" depends "$meta" 2>/dev/null |
		sed -nE 's/^ *Depends: *//p' | grep -E "$re" | head -n1 || true)
	[ -n "$dep" ] || die "cannot resolve the dependency of $meta matching $re"
	echo "$dep"
}

# The cached .deb of package $1 at version $2, if any.
cached_deb() {
	local f
	for f in "$DEBS/${1}_${2//:/%3a}_"*.deb; do
		[ -f "$f" ] && echo "$f" && return 0
	done
	return 1
}

# Download a package (the candidate version, or VERSION) into .cache/debs
# (cached) and print its path: fetch_deb PACKAGE [VERSION].
fetch_deb() {
	local pkg=$1 ver=${2:-}
	if [ -z "$ver" ]; then
		ver=$(apt-cache "${APT_OPTS[@]}" show --no-all-versions "$pkg" 2>/dev/null |
			sed -n 's/^Version: //p' | head -n1)
	fi
	[ -n "$ver" ] || die "package $pkg not found"
	if ! cached_deb "$pkg" "$ver"; then
		step "downloading $pkg $ver" >&2
		(cd "$DEBS" && apt-get "${APT_OPTS[@]}" -qq download "$pkg=$ver" >/dev/null) ||
			die "download of $pkg failed"
		cached_deb "$pkg" "$ver" || die "download of $pkg left no .deb"
	fi
}

# A fresh OUT/root holding the files of the packages DEB...
# extract_debs OUT DEB...
extract_debs() {
	local out=$1 deb
	shift
	rm -rf "$out"
	mkdir -p "$out/root"
	for deb in "$@"; do
		dpkg-deb -x "$deb" "$out/root"
	done
}

# Debian's headers tree names the -common tree and the kbuild tools by
# absolute path: point them into the tree extracted under ROOT instead.
# fix_headers ROOT KVER COMMON
fix_headers() {
	local root=$1 kver=$2 common=$3
	local hdr=$root/usr/src/linux-headers-$kver
	local com=$root/usr/src/$common
	sed -i -E "s|/usr/src/$common|$com|g" "$hdr/Makefile"
	grep -q "$com" "$hdr/Makefile" || die "headers Makefile of $kver does not include $common"
	local link target
	find "$hdr" "$com" -maxdepth 2 -type l | while IFS= read -r link; do
		target=$(readlink "$link")
		case $target in
		/*) ln -sfn "$root$target" "$link" ;;
		esac
	done
	# The headers want the compiler the kernel was built with (gcc-10
	# for 5.10); the host's gcc builds working modules.
	if [ -f "$hdr/.kernelvariables" ]; then
		sed -i -E 's/^(override )?CC *=.*/CC = gcc/' "$hdr/.kernelvariables"
	fi
}

# kernel NAME SUITE KBUILD_PKG
kernel() {
	local name=$1 suite=$2 kbuild=$3
	local out=$CACHE/kernels/$name
	# Complete, and the headers still point into this tree (not a moved copy).
	if [ -f "$out/.complete" ] &&
		[ -f "$(sed -n 's/^include //p' "$out/headers/Makefile" 2>/dev/null)" ]; then
		step "$name: cached ($(cat "$out/kver")) in .cache/kernels/$name"
		return
	fi
	apt_setup "$suite"

	local image kver flavour=cloud-amd64
	image=$(resolve_dep linux-image-cloud-amd64 '^linux-image-[0-9.]+-[0-9]+-cloud-amd64')
	[[ $image =~ ^linux-image-(.*)$ ]] && kver=${BASH_REMATCH[1]}
	[[ $image == *-unsigned ]] && kver=${kver%-unsigned}
	step "$name: resolved linux-image-cloud-amd64 ($suite) -> $image"
	local common=linux-headers-${kver%-"$flavour"}-common

	local pkgs=("$image" "linux-headers-$kver" "$common" "$kbuild") debs=() pkg
	for pkg in "${pkgs[@]}"; do
		debs+=("$(fetch_deb "$pkg")")
	done

	step "$name: extracting packages"
	local root=$out/root
	extract_debs "$out" "${debs[@]}"

	step "$name: assembling vmlinuz, modules and headers"
	cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
	echo "$kver" >"$out/kver"
	mkdir -p "$out/modules/lib/modules"
	mv "$root/lib/modules/$kver" "$out/modules/lib/modules/"
	rm -f "$out/modules/lib/modules/$kver/build" "$out/modules/lib/modules/$kver/source"

	fix_headers "$root" "$kver" "$common"
	ln -sfn "root/usr/src/linux-headers-$kver" "$out/headers"

	step "$name: depmod -b"
	depmod -b "$out/modules" "$kver"
	touch "$out/.complete"
	step "$name: ready ($kver) in .cache/kernels/$name"
}

main() {
	local names=("$@")
	[ ${#names[@]} -gt 0 ] || names=(6.1 5.10)
	mkdir -p "$DEBS" "$CACHE/kernels"
	ensure_tools
	local n
	for n in "${names[@]}"; do
		case $n in
		6.1) kernel 6.1 bookworm linux-kbuild-6.1 ;;
		5.10) kernel 5.10 bullseye linux-kbuild-5.10 ;;
		*) die "unknown kernel $n (known: 6.1 5.10)" ;;
		esac
	done
}

# Sourced by build-kernels.sh for its helpers; run, it fetches kernels.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi

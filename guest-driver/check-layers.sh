#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# check-layers.sh [DIR] - fail when the files of virtio_pasid.ko call each
# other in a circle.
#
# The files are the objects Kbuild lists in virtio_pasid-y (DIR/Kbuild,
# default: this directory). For each file it reads which non-static
# functions the file defines and which of those the other files call by
# name (comments and strings are skipped; taking a function's address, as
# a completion handed to a lower layer, is no call). An edge A -> B means A
# calls a function B defines. With no circle it prints the files from the
# top layer down and exits 0; with one it prints the circle, e.g.
# "vpasid_a.c -> vpasid_b.c -> vpasid_a.c", and exits 1. build.sh runs it
# before every build.

set -euo pipefail

DIR=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
[ -f "$DIR/Kbuild" ] || { echo "check-layers: $DIR/Kbuild not found" >&2; exit 2; }

exec perl -e '
use strict;
use warnings;

my $dir = shift;
open(my $kb, "<", "$dir/Kbuild") or die "check-layers: $dir/Kbuild: $!\n";
my $kbuild = do { local $/; <$kb> };
close($kb);
$kbuild =~ s/\\\n/ /g;
my ($objs) = $kbuild =~ /^virtio_pasid-y\s*[:+]?=\s*(.*)$/m
	or die "check-layers: no virtio_pasid-y in $dir/Kbuild\n";
my @files = map { s/\.o$/.c/r } split(" ", $objs);
die "check-layers: no files in virtio_pasid-y\n" unless @files;

# The source without comments, strings and character constants, which
# may name functions without calling them.
sub code {
	my ($path) = @_;
	open(my $fh, "<", $path) or die "check-layers: $path: $!\n";
	my $s = do { local $/; <$fh> };
	close($fh);
	$s =~ s{/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\x27(?:\\.|[^\x27\\\n])*\x27}
	       { my $m = $&; $m =~ tr/\n//cd; " $m" }gse;
	return $s;
}

my (%src, %owner);
for my $f (@files) {
	$src{$f} = code("$dir/$f");
	# A definition: at the start of a line, not static, a name and its
	# parameters, optional sparse annotations, then the body.
	while ($src{$f} =~ /^(?!static\b)[A-Za-z_][\w \t*]*?\b([A-Za-z_]\w*)\s*\(([^;{}]*?)\)\s*(?:__\w+\s*\([^()]*\)\s*)*\{/mg) {
		my $name = $1;
		die "check-layers: $name is defined in both $owner{$name} and $f\n"
			if $owner{$name} && $owner{$name} ne $f;
		$owner{$name} = $f;
	}
}

my %edges;
for my $f (@files) {
	while ($src{$f} =~ /\b([A-Za-z_]\w*)\s*\(/g) {
		my $to = $owner{$1};
		$edges{$f}{$to} = 1 if $to && $to ne $f;
	}
}

# Depth-first search; a grey node met again closes a circle.
my (%colour, @order, @path);
sub visit {
	my ($f) = @_;
	$colour{$f} = 1;
	push @path, $f;
	for my $to (sort keys %{ $edges{$f} || {} }) {
		if (($colour{$to} // 0) == 1) {
			my @at = grep { $path[$_] eq $to } 0 .. $#path;
			my @circle = (@path[$at[0] .. $#path], $to);
			print STDERR "check-layers: FAILED: call circle: ",
				join(" -> ", @circle), "\n";
			exit 1;
		}
		visit($to) unless $colour{$to};
	}
	pop @path;
	$colour{$f} = 2;
	unshift @order, $f;
}
for my $f (@files) { visit($f) unless $colour{$f}; }

print "check-layers: no call circle among ", scalar(@files), " files; top to bottom:\n";
for my $f (@order) {
	my @to = sort keys %{ $edges{$f} || {} };
	printf "  %-20s -> %s\n", $f, @to ? join(" ", @to) : "(nothing)";
}
' "$DIR"

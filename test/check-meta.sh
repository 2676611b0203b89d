#!/bin/bash
# Checks the release metadata, offline (no PGXN::Meta::Validator needed):
#   test/check-meta.sh               META.json of the source tree
#   test/check-meta.sh DIST.zip      the archive made by "make dist"
# META.json must follow PGXN Meta Spec 1.0.0 (required keys, SemVer
# versions, a known license, terms and tags, prereq phases and relations,
# resources, no unknown top-level keys except x_*), its versions must equal
# distkit.control's default_version, and every file it names must exist.
# debian/changelog must package that same version.  An archive must hold
# every file under distkit-<version>/, with META.json, distkit.control and
# the Makefile at that top, and the META.json checks must hold inside it.
set -euo pipefail
zip=${1:-}
if [ -n "$zip" ]; then zip=$(realpath "$zip"); fi
cd "$(dirname "$0")/.."
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" distkit.control)

perl -MJSON::PP -MIO::Uncompress::Unzip=\$UnzipError -e '
	use strict;
	use warnings;
	my ($version, $zip) = @ARGV;
	my @err;
	sub bad { push @err, join("", @_) }

	# the files to check: the source tree, or the archive members
	my ($meta_text, %files);
	if ($zip) {
		my $u = IO::Uncompress::Unzip->new($zip) or die "$zip: $UnzipError\n";
		my $top = "distkit-$version/";
		for (my $st = 1; $st > 0; $st = $u->nextStream) {
			my $name = $u->getHeaderInfo->{Name};
			bad("$zip: $name is not under $top") unless index($name, $top) == 0;
			(my $rel = $name) =~ s/^\Q$top\E//;
			$files{$rel} = 1;
			if ($rel eq "META.json") { local $/; $meta_text = join "", <$u>; }
		}
		die "$zip: no ${top}META.json\n" unless defined $meta_text;
		for my $f (qw(distkit.control Makefile)) {
			bad("$zip: ${top}$f missing") unless $files{$f};
		}
	} else {
		open my $f, "<", "META.json" or die "META.json: $!\n";
		local $/; $meta_text = <$f>;
	}
	my $exists = sub { $zip ? $files{$_[0]} : -f $_[0] };

	my $m = eval { JSON::PP->new->decode($meta_text) } or die "META.json: not valid JSON: $@";
	die "META.json: not an object\n" unless ref $m eq "HASH";

	# PGXN Meta Spec 1.0.0 value types
	my $semver = qr/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;
	my $term = qr/^[^\/\\\s[:cntrl:]]{2,}$/;
	my $tag = qr/^[^\/\\[:cntrl:]]{2,255}$/;
	my %license = map { $_ => 1 } qw(agpl_3 apache_1_1 apache_2_0 artistic_1 artistic_2 bsd
		freebsd gfdl_1_2 gfdl_1_3 gpl_1 gpl_2 gpl_3 lgpl_2_1 lgpl_3_0 mit mozilla_1_0
		mozilla_1_1 openssl perl_5 postgresql qpl_1_0 ssleay sun zlib open_source restricted
		unrestricted unknown);
	my $str = sub { defined $_[0] && !ref $_[0] && length $_[0] > 0 };
	my $range_one = qr/(?:(?:[=!]=|[<>]=?)\s*)?(?:\d+\.\d+\.\d+\S*)/;
	my $is_range = sub {
		my $v = shift;
		return 1 if defined $v && !ref $v && ($v eq "0" || $v =~ /^$range_one(?:,\s*$range_one)*$/);
		return 0;
	};

	for my $k (qw(name version abstract maintainer license provides meta-spec)) {
		bad("META.json: missing required key \"$k\"") unless exists $m->{$k};
	}
	my %known = map { $_ => 1 } qw(name version abstract maintainer license provides meta-spec
		description generated_by tags no_index prereqs release_status resources);
	for my $k (sort keys %$m) {
		bad("META.json: unknown key \"$k\" (custom keys start with x_)") unless $known{$k} || $k =~ /^[xX]_./;
	}
	bad("META.json: name \"$m->{name}\" is not a PGXN term") unless ($m->{name} // "") =~ $term;
	bad("META.json: version \"$m->{version}\" is not SemVer") unless ($m->{version} // "") =~ $semver;
	bad("META.json: version $m->{version} != distkit.control $version") unless ($m->{version} // "") eq $version;
	for my $k (qw(abstract description generated_by)) {
		bad("META.json: $k must be a non-empty string") if exists $m->{$k} && !$str->($m->{$k});
	}
	my $mt = $m->{maintainer};
	bad("META.json: maintainer must be a string or a non-empty array of strings")
		unless $str->($mt) || (ref $mt eq "ARRAY" && @$mt && !grep { !$str->($_) } @$mt);
	my $lic = $m->{license};
	if (ref $lic eq "HASH") {
		bad("META.json: license object must map names to URLs")
			unless %$lic && !grep { !$str->($_) || $_ !~ m{^\w+://} } values %$lic;
	} else {
		my @l = ref $lic eq "ARRAY" ? @$lic : ($lic);
		bad("META.json: license must name at least one license") unless @l;
		for (@l) { bad("META.json: unknown license \"", $_ // "", "\"") unless defined $_ && $license{$_}; }
	}
	my $ms = $m->{"meta-spec"};
	if (ref $ms ne "HASH" || ($ms->{version} // "") !~ /^1\.0\.\d+$/) {
		bad("META.json: meta-spec.version must be 1.0.x");
	} elsif (exists $ms->{url} && $ms->{url} !~ m{^https?://pgxn\.org/meta/spec\.txt$}) {
		bad("META.json: meta-spec.url must be https://pgxn.org/meta/spec.txt");
	}
	my $pv = $m->{provides};
	if (ref $pv ne "HASH" || !%$pv) {
		bad("META.json: provides must be an object naming at least one extension");
	} else {
		for my $e (sort keys %$pv) {
			my $x = $pv->{$e};
			bad("META.json: provides key \"$e\" is not a term") unless $e =~ $term;
			if (ref $x ne "HASH") { bad("META.json: provides.$e must be an object"); next; }
			for my $k (sort keys %$x) {
				bad("META.json: provides.$e has unknown key \"$k\"")
					unless $k =~ /^(file|version|abstract|docfile)$/ || $k =~ /^[xX]_./;
			}
			bad("META.json: provides.$e.version \"", $x->{version} // "", "\" != $version")
				unless ($x->{version} // "") eq $version;
			for my $k (qw(file docfile)) {
				next if $k eq "docfile" && !exists $x->{docfile};
				my $p = $x->{$k} // "";
				bad("META.json: provides.$e.$k missing") unless length $p;
				bad("META.json: provides.$e.$k \"$p\" is not a relative unix path") if $p =~ m{^/|\\};
				bad("META.json: provides.$e.$k \"$p\" does not exist", $zip ? " in $zip" : "")
					if length $p && !$exists->($p);
			}
		}
	}
	if (exists $m->{tags}) {
		my $t = $m->{tags};
		if (ref $t ne "ARRAY" || !@$t) { bad("META.json: tags must be a non-empty array"); }
		else { for (@$t) { bad("META.json: tag \"", $_ // "", "\" is not a valid tag") unless defined $_ && !ref $_ && $_ =~ $tag; } }
	}
	if (exists $m->{release_status}) {
		bad("META.json: release_status must be stable, testing or unstable")
			unless ($m->{release_status} // "") =~ /^(stable|testing|unstable)$/;
	}
	if (exists $m->{prereqs}) {
		my $p = $m->{prereqs};
		if (ref $p ne "HASH" || !%$p) { bad("META.json: prereqs must be a non-empty object"); }
		else {
			for my $phase (sort keys %$p) {
				next if $phase =~ /^[xX]_/;
				if ($phase !~ /^(configure|build|test|runtime|develop)$/) { bad("META.json: unknown prereqs phase \"$phase\""); next; }
				my $ph = $p->{$phase};
				if (ref $ph ne "HASH" || !%$ph) { bad("META.json: prereqs.$phase must be a non-empty object"); next; }
				for my $rel (sort keys %$ph) {
					next if $rel =~ /^[xX]_/;
					if ($rel !~ /^(requires|recommends|suggests|conflicts)$/) { bad("META.json: unknown relation prereqs.$phase.$rel"); next; }
					my $r = $ph->{$rel};
					if (ref $r ne "HASH") { bad("META.json: prereqs.$phase.$rel must be an object"); next; }
					for my $d (sort keys %$r) {
						bad("META.json: prereqs.$phase.$rel.$d is not a term") unless $d =~ $term;
						bad("META.json: prereqs.$phase.$rel.$d: \"", $r->{$d} // "", "\" is not a version range")
							unless $is_range->($r->{$d});
					}
				}
			}
		}
	}
	if (exists $m->{no_index}) {
		my $n = $m->{no_index};
		if (ref $n ne "HASH") { bad("META.json: no_index must be an object"); }
		else {
			for my $k (sort keys %$n) {
				next if $k =~ /^[xX]_/;
				bad("META.json: no_index.$k must be file or directory") unless $k =~ /^(file|directory)$/;
				my $v = $n->{$k};
				bad("META.json: no_index.$k must be a string or an array of strings")
					unless $str->($v) || (ref $v eq "ARRAY" && @$v && !grep { !$str->($_) } @$v);
			}
		}
	}
	if (exists $m->{resources}) {
		my $r = $m->{resources};
		if (ref $r ne "HASH" || !%$r) { bad("META.json: resources must be a non-empty object"); }
		else {
			for my $k (sort keys %$r) {
				next if $k =~ /^[xX]_/;
				my $v = $r->{$k};
				if ($k eq "homepage") { bad("META.json: resources.homepage must be a URL") unless $str->($v) && $v =~ m{^\w+://}; }
				elsif ($k eq "bugtracker" || $k eq "repository") {
					my @ok = $k eq "bugtracker" ? qw(web mailto) : qw(url web type);
					if (ref $v ne "HASH" || !%$v) { bad("META.json: resources.$k must be a non-empty object"); next; }
					for my $s (sort keys %$v) {
						bad("META.json: resources.$k.$s is not allowed")
							unless grep({ $_ eq $s } @ok) || $s =~ /^[xX]_/;
					}
				}
				else { bad("META.json: unknown resources key \"$k\""); }
			}
		}
	}
	die map { "$_\n" } @err if @err;
' "$version" "$zip"

# the Debian package must carry the same upstream version
if [ -f debian/changelog ]; then
	deb=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' debian/changelog)
	deb_upstream=${deb%-*}
	if [ "$deb_upstream" != "$version" ]; then
		echo "debian/changelog: its last entry packages $deb_upstream, distkit.control says $version (add an entry: $version-1)" >&2
		exit 1
	fi
fi

if [ -n "$zip" ]; then
	echo "$zip: every file under distkit-$version/, META.json valid (PGXN Meta Spec 1.0.0) and matching distkit.control ($version)"
else
	echo "META.json valid (PGXN Meta Spec 1.0.0) and matching distkit.control ($version); debian/changelog packages $version"
fi

# Bad input (issue 8): a generated sweep of at least 100,000 calls over
# every SQL function of distkit with random and extreme arguments — empty,
# 1024/1025-byte and multibyte keys, quotes, newlines, \r\n, Lua and RESP
# syntax, NULLs, 64-bit bounds, zero, negative and huge rates, periods and
# timeouts, bad casts.  A model in Perl predicts each call: the exact
# SQLSTATE of every error and the exact result of every success (counters
# and rate limiters with fixed parameters), or invariants where a result
# depends on time (rate limiters with random parameters).  At the end every
# Redis key is accounted for by the model.  No backend may crash (the
# server never restarts).  DISTKIT_SOAK=N runs N times as many calls.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use Math::BigInt;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $soak = $ENV{DISTKIT_SOAK} || 1;
my $ncalls = $ENV{DISTKIT_SWEEP_CALLS} || 100_000 * $soak;
my $seed = $ENV{DISTKIT_SWEEP_SEED} || int(time() * 1000) % 1_000_000_007;
srand($seed);
note("sweep seed $seed (DISTKIT_SWEEP_SEED=$seed replays it)");

my $MAX = 9223372036854775807;
my $MIN = -9223372036854775807 - 1;
my $R52 = 4503599627370496;	# 2^52: largest rate, bound on tau in us

# $a + $b, or undef when it leaves bigint (exact: Perl adds IVs exactly)
sub add64
{
	my ($a, $b) = @_;
	return undef if ($b > 0 && $a > $MAX - $b) || ($b < 0 && $a < $MIN - $b);
	return $a + $b;
}

# ---------------------------------------------------------------- keys
my $e = "\xc3\xa9";				# é, 2 bytes in UTF-8
my $smile = "\xf0\x9f\x98\x80";	# 4 bytes
my @weird = (
	'a', 'b:1', 'user:42', '{tag}', '}', '{', '%', '%7D', 'x}y%z', 'a b', ' ', "\t",
	"quote'd", "''", 'dq"x', '\\', "new\nline", "cr\r\nlf", "\r\n",
	"*3\r\n\$3\r\nSET\r\n\$1\r\nx\r\n\$1\r\ny\r\n", "PING\r\n", "+OK\r\n", "-ERR x\r\n",
	"]]; redis.call('FLUSHALL') --", "'); return redis.call('FLUSHALL') --", "KEYS[1]",
	"\" .. redis.call('DEL', KEYS[1]) .. \"", 'NULL', 'null', '0', '-1', "\xe6\x97\xa5\xe6\x9c\xac");
# exactly 1024 bytes (the longest valid keys), and keys around the length
# the lax buffer can hold
my @strict_keys = ((map { "s:$_" } @weird), $e x 512, 'k' x 1024, $smile x 256, ('z' x 1023) . '}',
	('w' x 1023) . '%', 'x' x 152, 'y' x 153);
# lax keys: "<prefix>\0<key>" longer than 160 bytes is counted strictly
my @lax_keys = ((map { "l:$_" } ('a', 'b', '}', "new\nline", "cr\r\nlf", "]]--", "'q'", $e x 10,
			'p' x 150, 'q' x 151, 'r' x 152, 'x' x 200)),
	("\xe2\x82\xac" x 341) . 'l');
my @bad_keys = ('', 'k' x 1025, $e x 513, ($smile x 256) . 'x', ' ' x 1025);
my %domain;
$domain{$_} = 'strict' for @strict_keys;
$domain{$_} = 'lax' for @lax_keys;
my %long;	# lax keys the buffer cannot hold
$long{$_} = 1 for grep { length($_) + length('distkit') + 2 > 160 } @lax_keys;	# kind byte + prefix + NUL + key (lax.c BuildName)
die 'key sets overlap' if keys(%domain) != @strict_keys + @lax_keys;

# rate limiters with fixed parameters (emission interval of an hour or
# more: no refill during the sweep), modelled exactly
my @rate_fixed = (
	{ key => 'rm:1', rate => 1, per => [ 0, 1, 0 ], burst => 5 },
	{ key => 'rm:2', rate => 3, per => [ 0, 30, 0 ], burst => 10 },
	{ key => 'rm:3', rate => 1000, per => [ 0, 0, 3_600_000_000_000 ], burst => 50 },
	{ key => 'rm:4', rate => 7, per => [ 0, 7, 0 ], burst => 1000 },
	{ key => "rm:}{%\r\n'", rate => 1, per => [ 0, 1, 0 ], burst => 3 },
	{ key => 'r' x 1024, rate => 2, per => [ 0, 3, 0 ], burst => 4 },
	{ key => $e x 512, rate => 5, per => [ 0, 100, 7 ], burst => 20 },
);
my %rate_fixed = map { $_->{key} => $_ } @rate_fixed;
my @rate_free = ('ru:1', 'ru:2', "ru:\r\n*1\r\n", 'u' x 1024, $smile);

# ---------------------------------------------------------------- values
my @interesting = ($MAX, $MIN, $MAX - 1, $MIN + 1, 0, 1, -1, 2, -2, 42, -42, 2147483647, -2147483648,
	4294967296, 9007199254740991, 9007199254740992, 9007199254740993, -9007199254740993,
	4611686018427387904, -4611686018427387904, 1000000, -1000000, $R52, $R52 + 1);
/^-?\d+$/ or die "not an exact integer: $_" for @interesting;

sub rand64
{
	my $hi = int(rand(4294967296));
	my $lo = int(rand(4294967296));
	use integer;
	return ($hi << 32) | $lo;
}

sub pick { return $_[ int(rand(@_)) ]; }

# A bigint argument: usually interesting, sometimes random, or relative
# to the key's value so that calls land exactly on the bounds.
sub some_int
{
	my ($v) = @_;
	my $r = rand();
	return pick(@interesting) if $r < 0.45;
	return int(rand(2001)) - 1000 if $r < 0.65;
	return rand64() if $r < 0.75;
	if (defined $v)
	{
		my @rel = grep { defined } (add64($MAX, -$v), add64($MIN, -$v), $v == $MIN ? undef : -$v,
			add64(add64($MAX, -$v) // 0, 1), add64(add64($MIN, -$v) // 0, -1), $v);
		return pick(@rel) if @rel;
	}
	return pick(@interesting);
}

# ---------------------------------------------------------------- the model
my %cval;		# counter key -> value (Redis, after everything buffered arrived)
my %cexists;	# counter key -> 1 exists in Redis, 0.5 may exist (lax), absent: not
my %smax;		# lax key -> bounds of what may be buffered (pending), for overflow
my %smin;
my %rate_c;		# fixed rate key -> units consumed
my %rate_seen;	# free rate key -> may hold state

sub settle_all { %smax = (); %smin = (); }

# Validation of counter arguments, in the order the C code checks them.
# Returns a SQLSTATE or undef.
sub key_err
{
	my ($k) = @_;
	return '22004' unless defined $k;
	return '22023' if length($k) == 0 || length($k) > 1024;
	return undef;
}

# How many units remain of limiter $p after consuming $c; and T*n in us
sub t_times
{
	my ($p, $n) = @_;
	my $per = Math::BigInt->new($p->{per}[1])->bmul(86_400_000_000)->badd($p->{per}[2]);
	return $per->bmul($n)->bdiv($p->{rate});	# floor; ceil checked with slack
}

# The interval text of [months, days, microseconds].
sub iv_text { my ($m, $d, $us) = @{ $_[0] }; return "$m mons $d days $us microseconds"; }

# Rate argument validation (rate.c RateArgs), returning a SQLSTATE or undef.
sub rate_err
{
	my ($key, $rate, $per, $burst, $cost, $with_cost) = @_;
	return '22004' unless defined $key;
	return '22004' unless defined $rate;
	return '22004' unless defined $per;
	my ($mon, $day, $us) = @$per;
	return '22023' if $mon != 0;
	my $per_us = Math::BigInt->new($day)->bmul(86_400_000_000);
	return '22023' if $per_us->bcmp($MAX) > 0 || $per_us->bcmp($MIN) < 0;
	$per_us->badd($us);
	return '22023' if $per_us->bcmp($MAX) > 0 || $per_us->bcmp($MIN) < 0;
	return '22023' if $per_us->bcmp(0) <= 0;
	$burst //= $rate;
	return '22004' if $with_cost && !defined $cost;
	$cost = 0 unless $with_cost;
	return '22023' if $rate <= 0 || $rate > $R52;
	return '22023' if $burst <= 0;
	return '22023' if $cost < 0;
	return '22023' if $cost > $burst;
	return '22023' if $per_us->copy->bmul($burst)->bdiv($rate)->bcmp($R52) >= 0;
	return key_err($key);
}

# ---------------------------------------------------------------- calls
# A call: [function, args...] with args undef (NULL) or text; $bad{arg}
# marks a text that does not cast (expected SQLSTATE of the cast).

sub counter_key
{
	my ($dom) = @_;
	my $r = rand();
	return undef if $r < 0.02;
	return pick(@bad_keys) if $r < 0.08;
	return pick($dom eq 'lax' ? @lax_keys : @strict_keys);
}

sub mode_text
{
	my ($dom) = @_;
	my $r = rand();
	return $dom eq 'lax' ? 'lax' : pick(undef, 'strict') if $r < 0.97;
	return { bad => '22P02', text => pick('fast', '', 'LAX', 'strict ') };
}

sub int_text
{
	my ($v) = @_;
	my $r = rand();
	return undef if $r < 0.03;
	return { bad => '22003', text => pick('9223372036854775808', '-9223372036854775809', '99999999999999999999') }
	  if $r < 0.04;
	return { bad => '22P02', text => pick('1.5', 'abc', '', '1e3', '0x10') } if $r < 0.05;
	return some_int($v);
}

sub gen_counter
{
	my $dom = rand() < 0.6 ? 'strict' : 'lax';
	my $k = counter_key($dom);
	my $v = defined $k ? $cval{$k} // 0 : 0;
	my $r = rand();
	if ($r < 0.30)
	{
		return [ 'inc', $k, int_text($v), mode_text($dom) ];
	}
	if ($r < 0.40) { return [ 'dec', $k, int_text($v), mode_text($dom) ]; }
	if ($r < 0.43) { return [ $dom eq 'strict' ? pick('inc1', 'dec1') : 'inc', $k, $dom eq 'strict' ? () : (1, 'lax') ]; }
	if ($r < 0.45 && $dom eq 'strict') { return [ 'inc2', $k, int_text($v) ]; }
	if ($r < 0.55) { return [ 'get', $k, mode_text($dom) ]; }
	if ($r < 0.57 && $dom eq 'strict') { return [ 'get1', $k ]; }
	if ($r < 0.65)
	{
		my @ks = map { counter_key($dom) } 1 .. int(rand(6));
		my $arr = rand() < 0.03 ? undef : { array => \@ks, dims => rand() < 0.03 ? 2 : 1 };
		return [ 'getmany', $arr, mode_text($dom) ];
	}
	if ($r < 0.75) { return [ 'set', $k, int_text($v) ]; }
	if ($r < 0.80) { return [ 'del', $k ]; }
	my $op = rand() < 0.9 ? pick('=', '<>', '!=', '<', '<=', '>', '>=')
	  : pick(undef, '==', '', ' =', '=<', "\xe2\x89\xa5", "'; --", '<>=');
	return [ 'incif', $k, int_text($v), $op, rand() < 0.5 ? int_text($v) : pick($v, add64($v, 1) // $v, add64($v, -1) // $v) ];
}

sub per_some
{
	my $r = rand();
	return undef if $r < 0.03;
	return pick([ 0, 0, 0 ], [ 0, 0, -1_000_000 ], [ 1, 0, 0 ], [ 12, 0, 0 ], [ 0, 0, 1 ], [ 0, 0, 1000 ],
		[ 0, 0, 1_000_000 ], [ 0, 1, 0 ], [ 0, 365, 0 ], [ 0, 106751991, 0 ], [ 0, 106751992, 0 ],
		[ 0, 2147483647, 0 ], [ 0, -2147483648, 0 ], [ 0, 1, -86_400_000_000 ], [ 0, 1, -1 ],
		[ 0, 0, $MAX ], [ 0, 106751991, 14454775807 ], [ 0, 106751991, 14454775808 ], [ 0, -1, $MAX ],
		[ -1, 40, 0 ], [ 0, 0, int(rand(1e9)) + 1 ]) if $r < 0.7;
	return [ 0, int(rand(3)), int(rand(1e12)) ];
}

sub gen_rate
{
	my $r = rand();
	if ($r < 0.7)
	{
		# a limiter with fixed parameters: exact model
		my $p = pick(@rate_fixed);
		my ($key, $rate, $per, $burst) = ($p->{key}, $p->{rate}, $p->{per}, $p->{burst});
		my $f = pick('allow', 'allow', 'check', 'check', 'peek', 'reset');
		return [ 'reset', $key ] if $f eq 'reset';
		my $cost = pick(0, 1, 1, 1, 2, $burst, $burst - 1);
		if (rand() < 0.15)
		{
			# one argument made invalid: an error, nothing changes
			my $which = int(rand(5));
			$key = pick(@bad_keys, undef) if $which == 0;
			$rate = pick(0, -1, undef, $R52 + 1, $MIN) if $which == 1;
			$per = pick(undef, [ 0, 0, 0 ], [ 1, 0, 0 ], [ 0, 0, -1 ], [ 0, 2147483647, 0 ]) if $which == 2;
			$burst = pick(0, -5, $MIN) if $which == 3;
			$cost = pick(-1, $burst + 1, undef, $MAX) if $which == 4;
		}
		return [ 'peek', $key, $rate, $per, $burst ] if $f eq 'peek';
		return [ $f, $key, $rate, $per, $burst, $cost ];
	}
	# random parameters: errors exact, results checked for invariants
	my $key = rand() < 0.08 ? pick(@bad_keys, undef) : pick(@rate_free);
	my $rate = rand() < 0.5 ? pick(undef, 0, -1, 1, 2, 3, 1000, 1_000_000, $R52, $R52 + 1, $MAX, $MIN)
	  : int(rand(1e6)) + 1;
	my $burst = pick(undef, undef, 0, -1, 1, 2, 100, $R52, $MAX, int(rand(1e6)) + 1);
	my $cost = pick(undef, 0, 1, 1, 2, -1, 1000, $MAX, $MIN, $burst // 1);
	my $f = pick('allow', 'check', 'peek', 'reset', 'allowd');
	return [ 'reset', $key ] if $f eq 'reset';
	return [ 'allowd', $key, $rate ] if $f eq 'allowd';
	return [ 'peek', $key, $rate, per_some(), $burst ] if $f eq 'peek';
	return [ $f, $key, $rate, per_some(), $burst, $cost ];
}

sub gen_misc
{
	my $r = rand();
	if ($r < 0.45)
	{
		my $t = pick(undef, [ 0, 0, 5_000_000 ], [ 0, 0, 0 ], [ 0, 0, -1 ], [ 1, 0, 0 ], [ 0, 0, 999 ],
			[ 0, 0, 1000 ], [ 0, 0, 2_147_483_647_000 ], [ 0, 0, 2_147_483_648_000 ], [ 0, 25, 0 ],
			[ 0, 213503983, 0 ], [ 0, 213503984, 0 ], [ 0, 2147483647, 0 ], [ 0, -2147483648, 0 ],
			[ 0, 106751991, 14454775807 ], [ 0, 0, $MAX ], [ 0, -1, 86_400_010_000 ]);
		return [ 'flush', $t ];
	}
	return [ 'stats' ];
}

# call number $i (from 1)
sub gen_call
{
	my ($i) = @_;
	my $r = rand();
	return [ 'clear' ] if $i % 20000 == 10000;
	return gen_counter() if $r < 0.55;
	return gen_rate() if $r < 0.93;
	return gen_misc();
}

# ---------------------------------------------------------------- predict / check
# Interval bounds (in us) accepted for a time that the model knows up to
# the time elapsed since the start of the sweep.
my $slack_us = 3600 * 1_000_000;

# The cast error of a call's arguments, in argument order (a bad literal).
sub cast_err
{
	my ($c) = @_;
	for my $a (@$c[ 2 .. $#$c ])
	{
		return $a->{bad} if ref $a eq 'HASH' && $a->{bad};
	}
	return undef;
}

# Check $got ("ok:..." / "err:SQLSTATE") for call $c against the model and
# update the model.  Returns '' or a description of the mismatch.
sub step
{
	my ($c, $got) = @_;
	my ($f, @a) = @$c;
	my $want_err = sub {
		my ($st) = @_;
		return $got eq "err:$st" ? '' : "expected err:$st";
	};
	my $ce = cast_err($c);
	return $want_err->($ce) if $ce && $f ne 'getmany';
	if ($f =~ /^(inc|dec|inc1|inc2|dec1)$/)
	{
		my ($k, $d, $mode) = @a;
		$d = 1 if $f =~ /1$/;
		$mode = undef if $f =~ /[12]$/;
		return $want_err->('22004') unless defined $k;
		return $want_err->('22004') unless defined $d;
		if ($f =~ /^dec/)
		{
			return $want_err->('22003') if $d == $MIN;
			$d = -$d;
		}
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		my $v = $cval{$k} // 0;
		my $n = add64($v, $d);
		if (($mode // 'strict') eq 'lax' && !$long{$k})
		{
			return $want_err->('22003') unless defined $n;
			# the buffered part may overflow on its own
			my $maybe = $d > 0 ? ($smax{$k} // 0) > $MAX - $d : $d < 0 ? ($smin{$k} // 0) < $MIN - $d : 0;
			if ($maybe && $got eq 'err:22003') { return ''; }
			return "expected ok:$n" . ($maybe ? ' or err:22003' : '') unless $got eq "ok:$n";
			$cval{$k} = $n;
			$cexists{$k} = 0.5 if ($cexists{$k} // 0) < 1 && $d != 0;
			my $hi = add64($smax{$k} // 0, $d) // ($d > 0 ? $MAX : $MIN);
			my $lo = add64($smin{$k} // 0, $d) // ($d > 0 ? $MAX : $MIN);
			$smax{$k} = $hi > 0 ? $hi : 0;
			$smin{$k} = $lo < 0 ? $lo : 0;
			return '';
		}
		return $want_err->('22003') unless defined $n;
		return "expected ok:$n" unless $got eq "ok:$n";
		$cval{$k} = $n;
		$cexists{$k} = 1;
		return '';
	}
	if ($f eq 'get' || $f eq 'get1')
	{
		my ($k) = @a;
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		my $v = $cval{$k} // 0;
		return $got eq "ok:$v" ? '' : "expected ok:$v";
	}
	if ($f eq 'getmany')
	{
		my ($arr, $mode) = @a;
		return $want_err->('22P02') if ref $mode eq 'HASH';
		return $want_err->('22004') unless defined $arr;
		return $want_err->('2202E') if $arr->{dims} == 2 && @{ $arr->{array} };
		my @vals;
		for my $k (@{ $arr->{array} })
		{
			my $ke = key_err($k);
			return $want_err->($ke) if $ke;
			push @vals, $cval{$k} // 0;
		}
		my $want = 'ok:' . scalar(@vals) . ':' . join(',', @vals) . ':true';
		return $got eq $want ? '' : "expected $want";
	}
	if ($f eq 'set')
	{
		my ($k, $v) = @a;
		return $want_err->('22004') unless defined $k;
		return $want_err->('22004') unless defined $v;
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		return "expected ok:$v" unless $got eq "ok:$v";
		$cval{$k} = $v;
		$cexists{$k} = 1;
		delete $smax{$k};
		delete $smin{$k};
		return '';
	}
	if ($f eq 'del')
	{
		my ($k) = @a;
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		my $v = $cval{$k} // 0;
		return "expected ok:$v" unless $got eq "ok:$v";
		$cval{$k} = 0;
		delete $cexists{$k};
		delete $smax{$k};
		delete $smin{$k};
		return '';
	}
	if ($f eq 'incif')
	{
		my ($k, $d, $op, $x) = @a;
		return $want_err->('22004') unless defined $k && defined $d && defined $op;
		return $want_err->('22023') unless grep { $_ eq $op } ('=', '<>', '!=', '<', '<=', '>', '>=');
		return $want_err->('22004') unless defined $x;
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		my $v = $cval{$k} // 0;
		# the buffered increments of the key reach Redis first
		delete $smax{$k};
		delete $smin{$k};
		my $holds = $op eq '=' ? $v == $x : $op =~ /^(<>|!=)$/ ? $v != $x : $op eq '<' ? $v < $x
		  : $op eq '<=' ? $v <= $x : $op eq '>' ? $v > $x : $v >= $x;
		return $got eq "ok:$v,false" ? '' : "expected ok:$v,false" unless $holds;
		my $n = add64($v, $d);
		return $want_err->('22003') unless defined $n;
		return "expected ok:$n,true" unless $got eq "ok:$n,true";
		$cval{$k} = $n;
		$cexists{$k} = 1;
		return '';
	}
	if ($f eq 'clear')
	{
		my ($sure, $maybe) = (0, 0);
		for my $k (keys %cexists)
		{
			if ($cexists{$k} == 1) { $sure++; } else { $maybe++; }
		}
		my ($n) = $got =~ /^ok:(\d+)$/;
		return "expected ok:$sure..." . ($sure + $maybe) unless defined $n && $n >= $sure && $n <= $sure + $maybe;
		%cval = ();
		%cexists = ();
		settle_all();
		return '';
	}
	if ($f eq 'flush')
	{
		my ($t) = @a;
		return $want_err->('22004') unless defined $t;
		my ($mon, $day, $us) = @$t;
		my $total = Math::BigInt->new($day)->bmul(86_400_000_000)->badd($us);
		my $ms = $total->copy->btdiv(1000);
		return $want_err->('22023') if $mon != 0 || $ms->bcmp(0) <= 0 || $ms->bcmp(2147483647) > 0;
		# a timeout shorter than a flush cycle may expire first
		return '' if $got eq 'err:08006' && $ms->bcmp(1000) < 0;
		return 'expected ok:<keys flushed>' unless $got =~ /^ok:\d+$/;
		settle_all();
		return '';
	}
	if ($f eq 'stats')
	{
		return $got =~ /^ok:[0-9a-f-]{36},[tf],\d+,-?\d+,65536,\d+,0$/ ? '' : 'expected ok:<stats row>';
	}
	if ($f eq 'reset')
	{
		my ($k) = @a;
		my $ke = key_err($k);
		return $want_err->($ke) if $ke;
		if ($rate_fixed{$k})
		{
			my $had = ($rate_c{$k} // 0) > 0 ? 'true' : 'false';
			return "expected ok:$had" unless $got eq "ok:$had";
			$rate_c{$k} = 0;
			return '';
		}
		return $got =~ /^ok:(true|false)$/ ? '' : 'expected ok:true or ok:false';
	}
	if ($f =~ /^(allow|allowd|check|peek)$/)
	{
		my ($k, $rate, $per, $burst, $cost) = @a;
		($per, $burst, $cost) = ([ 0, 0, 1_000_000 ], undef, 1) if $f eq 'allowd';
		my $err = rate_err($k, $rate, $per, $burst, $cost, $f ne 'peek');
		return $want_err->($err) if $err;
		$burst //= $rate;
		$cost = 0 if $f eq 'peek';
		my $p = $rate_fixed{$k};
		if ($p && $rate == $p->{rate} && $burst == $p->{burst} && "@$per" eq "@{$p->{per}}")
		{
			my $used = $rate_c{$k} // 0;
			my $allowed = $used + $cost <= $burst;
			my $after = $allowed ? $used + $cost : $used;
			my $rem = $burst - $after;
			my $want;
			my $in = sub {
				my ($x, $n) = @_;	# $x within (T*n - slack, ceil(T*n)]
				my $t = t_times($p, $n);
				return $x <= $t + 1 && $x > $t - $slack_us;
			};
			if ($f eq 'allow')
			{
				$want = 'ok:' . ($allowed ? 'true' : 'false');
				return "expected $want" unless $got eq $want;
			}
			elsif ($f eq 'check')
			{
				my ($ok, $al, $re, $retry, $reset) = $got =~ /^(ok):(true|false),(\d+),(null|\d+),(\d+)$/;
				return "expected ok:<check> allowed " . ($allowed ? 'true' : 'false') . " remaining $rem"
				  unless $ok && $al eq ($allowed ? 'true' : 'false') && $re == $rem
				  && ($allowed ? $retry eq 'null' : $retry ne 'null' && $in->($retry, $used + $cost - $burst))
				  && ($after == 0 ? $reset == 0 : $in->($reset, $after));
			}
			else
			{
				my ($ok, $re, $reset) = $got =~ /^(ok):(\d+),(\d+)$/;
				return "expected ok:$rem,<reset>"
				  unless $ok && $re == $rem && ($used == 0 ? $reset == 0 : $in->($reset, $used));
			}
			$rate_c{$k} = $after;
			return '';
		}
		die "fixed limiter $k called with other parameters" if $p;
		# free parameters: the shape of a valid answer
		if ($f eq 'allow' || $f eq 'allowd') { return $got =~ /^ok:(true|false)$/ ? '' : 'expected ok:<bool>'; }
		if ($f eq 'check')
		{
			my ($ok, $al, $re, $retry, $reset) = $got =~ /^(ok):(true|false),(\d+),(null|\d+),(\d+)$/;
			return '' if $ok && $re <= $burst && ($al eq 'true') == ($retry eq 'null') && ($retry eq 'null' || $retry > 0);
			return "expected ok:<check row> with remaining <= $burst";
		}
		my ($ok, $re) = $got =~ /^(ok):(\d+),(\d+)$/;
		return $ok && $re <= $burst ? '' : "expected ok:<remaining <= $burst>,<reset>";
	}
	die "no model for $f";
}

# ---------------------------------------------------------------- SQL
sub lit
{
	my ($v) = @_;
	return 'NULL' unless defined $v;
	if (ref $v eq 'HASH' && $v->{bad}) { $v = $v->{text}; }
	elsif (ref $v eq 'HASH' && $v->{array})
	{
		my @el = map {
			defined $_ ? do { (my $s = $_) =~ s/(["\\])/\\$1/g; "\"$s\"" } : 'NULL'
		} @{ $v->{array} };
		$v = $v->{dims} == 2 && @el ? '{' . join(',', map { "{$_}" } @el) . '}' : '{' . join(',', @el) . '}';
	}
	elsif (ref $v eq 'ARRAY') { $v = iv_text($v); }
	$v =~ s/'/''/g;
	return "'$v'";
}

# DISTKIT_TAP_REDIS_MODE=cluster runs the sweep against a 3-master Redis
# Cluster (the model and every check are the same)
my $mode = $ENV{DISTKIT_TAP_REDIS_MODE} // 'single';
my $url = $mode eq 'cluster' ? start_cluster('sweep') : 'redis://127.0.0.1:' . start_redis('sweep') . '/0';
diag("Redis: $mode ($url)");
my @masters = split /,/, redis_ctl_out('masters');
my $node = new_node('sweep', $url);
$node->safe_psql('postgres', q{CREATE DATABASE sweep ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('sweep', 'CREATE EXTENSION distkit');
$node->safe_psql('sweep', <<'SQL');
-- one call of a distkit function from text arguments: "ok:<result>" or
-- "err:<SQLSTATE>"
CREATE FUNCTION dk_call(f text, a text, b text, c text, d text, e text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	r text;
	st text;
BEGIN
	CASE f
	WHEN 'inc' THEN r := distkit_inc(a, b::bigint, c::distkit_mode);
	WHEN 'inc1' THEN r := distkit_inc(a);
	WHEN 'inc2' THEN r := distkit_inc(a, b::bigint);
	WHEN 'dec' THEN r := distkit_dec(a, b::bigint, c::distkit_mode);
	WHEN 'dec1' THEN r := distkit_dec(a);
	WHEN 'get' THEN r := distkit_get(a, b::distkit_mode);
	WHEN 'get1' THEN r := distkit_get(a);
	WHEN 'getmany' THEN
		SELECT count(*) || ':' || coalesce(string_agg(g.value::text, ',' ORDER BY g.o), '') || ':'
			|| coalesce(bool_and(g.key IS NOT DISTINCT FROM (a::text[])[g.o]), true)
		INTO r FROM distkit_get_many(a::text[], b::distkit_mode) WITH ORDINALITY AS g(key, value, o);
	WHEN 'set' THEN r := distkit_set(a, b::bigint);
	WHEN 'del' THEN r := distkit_del(a);
	WHEN 'incif' THEN
		SELECT i.value || ',' || i.applied INTO r FROM distkit_inc_if(a, b::bigint, c, d::bigint) i;
	WHEN 'clear' THEN r := distkit_clear();
	WHEN 'flush' THEN r := distkit_flush(a::interval);
	WHEN 'stats' THEN
		SELECT concat_ws(',', s.instance_id, s.redis_connected, s.pending_keys, s.pending_delta,
			s.buffer_capacity, s.buffer_used, s.dropped_deltas) INTO r FROM distkit_stats s;
	WHEN 'allow' THEN r := distkit_rate_allow(a, b::bigint, c::interval, d::bigint, e::bigint);
	WHEN 'allowd' THEN r := distkit_rate_allow(a, b::bigint);
	WHEN 'check' THEN
		SELECT concat_ws(',', x.allowed::text, x.remaining,
			coalesce((extract(epoch FROM x.retry_after) * 1000000)::bigint::text, 'null'),
			(extract(epoch FROM x.reset_after) * 1000000)::bigint)
		INTO r FROM distkit_rate_check(a, b::bigint, c::interval, d::bigint, e::bigint) x;
	WHEN 'peek' THEN
		SELECT x.remaining || ',' || (extract(epoch FROM x.reset_after) * 1000000)::bigint
		INTO r FROM distkit_rate_peek(a, b::bigint, c::interval, d::bigint) x;
	WHEN 'reset' THEN r := distkit_rate_reset(a);
	END CASE;
	RETURN 'ok:' || coalesce(r, '<null>');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
	RETURN 'err:' || st;
END $$;
SQL

# every lax key gets its buffer entry from a read of Redis (0): from then
# on this server's view of it is exact, which the model relies on
$node->safe_psql('sweep', 'SELECT distkit_clear()');
$node->safe_psql('sweep', "SELECT count(*) FROM distkit_get_many(ARRAY[" . join(',', map { lit($_) } @lax_keys)
	  . "], 'lax')");
my $instance = $node->safe_psql('sweep', 'SELECT instance_id FROM distkit_stats');

# Calls are generated, run and checked in chunks, so that each chunk's
# arguments can aim at the bounds of the values the model holds by then.
my $dir = $PostgreSQL::Test::Utils::tmp_check;
my $chunk = 5000;
my $batch = 500;
my $t0 = time();
my ($ran, @mismatch, %errs, %byf) = (0);
for (my $start = 0; $start < $ncalls; $start += $chunk)
{
	my @calls = map { gen_call($_) } $start + 1 .. ($start + $chunk < $ncalls ? $start + $chunk : $ncalls);
	# a clear that ends the chunk runs after the model has replayed the rest,
	# so that a count the model does not expect names the keys Redis held
	my $final_clear = $calls[-1][0] eq 'clear' ? pop @calls : undef;
	open my $fh, '>:raw', "$dir/sweep.sql" or die;
	print $fh "SET statement_timeout = '60s';\n";
	for (my $b = 0; $b < @calls; $b += $batch)
	{
		my $last = $b + $batch < @calls ? $b + $batch : scalar @calls;
		print $fh "SELECT dk_call(f, a, b, c, d, e) FROM (VALUES\n";
		print $fh join(",\n", map {
				my ($f, @a) = @{ $calls[$_] };
				'(' . join(', ', lit($f), map { lit($a[$_]) } 0 .. 4) . ')'
			} $b .. $last - 1);
		print $fh "\n) AS v(f, a, b, c, d, e);\n";
	}
	close $fh;
	my ($out, $err) = run_command([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('sweep'),
		'-f', "$dir/sweep.sql" ]);
	diag("psql: $err") if $err ne '';
	my @got = split /\n/, $out;

	# replay the model over what happened
	for my $i (0 .. $#calls)
	{
		last if $i > $#got;
		$ran++;
		my $m = step($calls[$i], $got[$i]);
		# DISTKIT_SWEEP_TRACE=<prefix of a key>: every call on such keys
		if (defined $ENV{DISTKIT_SWEEP_TRACE} && grep { defined $_ && !ref $_ && index($_, $ENV{DISTKIT_SWEEP_TRACE}) == 0 } @{ $calls[$i] }[1 .. 5])
		{
			my ($f, $k, @r) = @{ $calls[$i] };
			diag("trace call " . ($start + $i + 1) . ": $f(" . join(', ', map { ref $_ ? 'ARRAY' : lit($_) } @r) . ") on key of length " . length($k // '') . " -> $got[$i]");
		}
		$byf{ $calls[$i][0] }++;
		$errs{$1}++ if $got[$i] =~ /^err:(\w+)/;
		next if $m eq '';
		my ($f, @a) = @{ $calls[$i] };
		my $args = join(', ', map {
				my $s = lit($_);
				length($s) > 40 ? substr($s, 0, 37) . "...'(" . length($s) . ')' : $s
			} @a);
		$args =~ s/\r/\\r/g;
		$args =~ s/\n/\\n/g;
		push @mismatch, 'call ' . ($start + $i + 1) . ": $f($args): got $got[$i], $m";
	}
	last if @got < @calls;
	if ($final_clear)
	{
		$node->safe_psql('sweep', 'SELECT distkit_flush()');
		my @held = grep {
			my $k = $_; $k =~ s/%/%25/g; $k =~ s/\}/%7D/g;
			redis_cli('EXISTS', "distkit:c:{$k}") eq '1'
		} (@strict_keys, @lax_keys);
		my $got = $node->safe_psql('sweep', q{SELECT dk_call('clear', NULL, NULL, NULL, NULL, NULL)});
		$ran++;
		$byf{clear}++;
		my $m = step($final_clear, $got);
		if ($m ne '')
		{
			my @unexpected = grep { !exists $cexists{$_} } @held;
			push @mismatch, 'call ' . ($start + @calls + 1) . ": clear(): got $got, $m; keys Redis held that the model "
			  . 'did not expect: ' . join(', ', map { lit($_) } @unexpected);
			%cval = ();
			%cexists = ();
			settle_all();
		}
	}
}
my $secs = time() - $t0;
is($ran, $ncalls, sprintf('all %d calls ran (%.1f s, %.0f calls/s)', $ncalls, $secs, $ran / $secs));
is(scalar(@mismatch), 0, 'every call had the expected SQLSTATE or result');
diag($_) for @mismatch[ 0 .. ($#mismatch < 19 ? $#mismatch : 19) ];
note('calls per function: ' . join(', ', map { "$_ $byf{$_}" } sort keys %byf));
note('errors by SQLSTATE: ' . join(', ', map { "$_ $errs{$_}" } sort keys %errs));
is(scalar(keys %byf), 19, 'every SQL function was called, with and without defaults (19 forms)');

# no backend crashed: same shared memory, no abnormal exit in the log
is($node->safe_psql('sweep', 'SELECT instance_id FROM distkit_stats'), $instance,
	'the server never restarted (same lax buffer)');
unlike(slurp_file($node->logfile), qr/terminated by signal|was terminated|server process .* exited with exit code [^0]/,
	'no backend died');
is($node->safe_psql('sweep', 'SELECT dropped_deltas FROM distkit_stats'), '0', 'the flusher never dropped an increment');

# what Redis holds: every counter equals the model, and every key is one
# the model accounts for
$node->safe_psql('sweep', 'SELECT distkit_flush()');
my @ck = (@strict_keys, @lax_keys);
my @vals = split /\n/, $node->safe_psql('sweep',
	'SELECT value FROM distkit_get_many(ARRAY[' . join(',', map { lit($_) } @ck) . "], 'strict')");
my @wrong = map { $vals[$_] eq ($cval{ $ck[$_] } // 0) ? () : "key $_: $vals[$_] != " . ($cval{ $ck[$_] } // 0) } 0 .. $#ck;
is(join('; ', @wrong), '', 'every counter in Redis equals the model after the sweep');

# distkit runs only its own scripts: Redis caches no more scripts than
# lua/ holds, and nothing sent EVAL (which would carry Lua source)
# (on every master of a cluster)
my ($scripts) = sort { $b <=> $a } map { node_cli($_, 'INFO', 'memory') =~ /number_of_cached_scripts:(\d+)/ } @masters;
my $nlua = () = glob("$FindBin::RealBin/../../lua/*.lua");
ok($scripts <= $nlua, "Redis caches only distkit's own scripts ($scripts, lua/ has $nlua)");
my $evals = 0;
$evals += $_ for map { node_cli($_, 'INFO', 'commandstats') =~ /cmdstat_eval:calls=(\d+)/ } @masters;
is($evals, 0, 'nothing sent EVAL: distkit sends EVALSHA of its own scripts only');

# Every key in Redis: what the model says must, may or must not exist
sub enc { my ($k) = @_; $k =~ s/%/%25/g; $k =~ s/\}/%7D/g; return $k; }
my %expect;
for my $k (@strict_keys, @lax_keys)
{
	my $x = $cexists{$k} // 0;
	$expect{ 'distkit:c:{' . enc($k) . '}' } = $x == 1 ? 'must' : $x ? 'may' : 'not';
}
$expect{ 'distkit:r:{' . enc($_) . '}' } = ($rate_c{$_} // 0) > 0 ? 'must' : 'not' for keys %rate_fixed;
$expect{ 'distkit:r:{' . enc($_) . '}' } = 'may' for @rate_free;
# a limiter's reset epoch (lax rate limiting): bumped by distkit_rate_reset
$expect{ 'distkit:re:{' . enc($_) . '}' } = 'may' for keys %rate_fixed, @rate_free;
$expect{"distkit:reg:{instances}$_"} = 'may'	# the instance registry (heartbeats, numbers, live set)
	for ('', ':meta', ':num', ':alive', ':free', ':live');
my $hex = join("\n", map { node_cli($_, 'EVAL', q{local r = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
	r[#r + 1] = (k:gsub('.', function(c) return string.format('%02x', c:byte()) end))
end
return r}, 0) } @masters);
my (@stray, %present);
for my $h (grep { $_ ne '' } split /\n/, $hex)
{
	my $k = pack('H*', $h);
	$present{$k} = 1;
	next if ($expect{$k} // 'not') ne 'not';
	# the lax flush's exactly-once records: one per (instance, group of keys)
	next if $k =~ /^distkit:cf:\{g\d+\}:[0-9a-f-]{36}$/;
	(my $shown = length $k > 60 ? substr($k, 0, 60) . '...' : $k) =~ s/([\r\n])/$1 eq "\r" ? '\\r' : '\\n'/ge;
	push @stray, $shown;
}
is(join(' | ', @stray), '', 'Redis holds no key the model does not expect (' . keys(%present) . ' keys)');
my @missing = grep { $expect{$_} eq 'must' && !$present{$_} } sort keys %expect;
is(scalar @missing, 0, 'every key the model says must exist exists');
ok(!grep({ !/^distkit:/ } keys %present), 'every Redis key begins with the prefix distkit:');

$node->stop;
done_testing();

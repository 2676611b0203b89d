# What a lax call returns: this server's view rests on a total read from
# Redis (docs/lax.md, "What a lax increment returns").  With a tiny buffer
# (64 entries) keys are evicted by design (see fill_and_evict), so this
# checks:
#   1. an evicted key's total is remembered: its next touch needs no read
#      (seed_reads unchanged) and is right, even with Redis stopped;
#   2. a strict write on this server while the key is evicted (set) makes
#      the remembered total be forgotten and read again;
#   3. a clear forgets every remembered total;
#   4. a strict increment on this server becomes the view of a buffered key
#      at once (simple and instance-aware counters);
#   5. 8 clients over 1,000 keys through the 64-entry buffer: every key exact;
#   6. with Redis stopped, a lax read of a key read before answers with this
#      server's (stale) view, and a strict read or a lax read of a key never
#      read raises the connection error: simple and instance-aware counters
#      alike (one code path, counterkind.c).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('views');
my $node = new_node('views', "redis://127.0.0.1:$port/0", "distkit.lax_capacity = 64\n");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };
my $stat = sub { $pg->("SELECT $_[0] FROM distkit_stats") };

# Evictions made deterministic: after a restart the buffer is empty, its
# clock hand at entry 0, and entries are handed out in order.  The first
# key a scenario touches gets entry 0; fill_and_evict then fills the other
# 63 entries (flushed, so evictable), and one more key makes the sweep
# clear every entry's use bit and evict entry 0: exactly that key.
my $filler = 0;
sub restart_fresh
{
	$node->restart;
	wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq '1' },
		'the worker after the restart');
}
sub fill_and_evict
{
	my ($key) = @_;
	$pg->('SELECT distkit_flush()');
	$pg->(qq{SELECT count(distkit_inc('fill:' || g, 1, 'lax')) FROM generate_series($filler, $filler + 62) g});
	$pg->('SELECT distkit_flush()');
	is($stat->('evictions'), '0', "$key: the buffer is full, nothing evicted yet");
	$pg->(qq{SELECT distkit_inc('fill:' || @{[ $filler + 63 ]}, 1, 'lax')});
	$pg->('SELECT distkit_flush()');
	is($stat->('evictions'), '1', "$key: one more key evicted one entry, ${key}'s");
	$filler += 64;
}

# 1. an evicted key's total is remembered
restart_fresh();
is($pg->(q{SELECT distkit_set('v:a', 100)}), '100', 'v:a set to 100');
is($pg->(q{SELECT distkit_inc('v:a', 1, 'lax')}), '101', 'first lax touch reads the total (101)');
fill_and_evict('v:a');
my $seeds = $stat->('seed_reads');
is($pg->(q{SELECT distkit_inc('v:a', 1, 'lax')}), '102', 'the evicted key comes back with its total (102)');
is($stat->('seed_reads'), $seeds, '... remembered: no read of Redis');
$pg->('SELECT distkit_flush()');
is(redis_int('distkit:c:{v:a}'), 102, 'Redis holds 102');

# the same with Redis stopped: only a remembered total can answer right
restart_fresh();
is($pg->(q{SELECT distkit_inc('v:b', 5, 'lax')}), '5', 'v:b counted (5)');
fill_and_evict('v:b');
redis_ctl('stop');
is($pg->(q{SELECT distkit_inc('v:b', 1, 'lax')}), '6', 'Redis stopped: the evicted key still returns its total + 1');
redis_ctl('start');
$pg->(q{SELECT distkit_flush('10 s')});
is(redis_int('distkit:c:{v:b}'), 6, 'and Redis got the increment once');

# 2. a strict write while the key is evicted: the remembered total is forgotten
restart_fresh();
is($pg->(q{SELECT distkit_inc('v:c', 1, 'lax')}), '1', 'v:c counted');
fill_and_evict('v:c');
is($pg->(q{SELECT distkit_set('v:c', 500)}), '500', 'v:c set to 500 while evicted');
$seeds = $stat->('seed_reads');
is($pg->(q{SELECT distkit_inc('v:c', 1, 'lax')}), '501', 'the next lax touch sees the set (501)');
is($stat->('seed_reads'), $seeds + 1, '... read once from Redis');

# 3. a clear forgets every remembered total
restart_fresh();
is($pg->(q{SELECT distkit_inc('v:e', 9, 'lax')}), '9', 'v:e counted');
fill_and_evict('v:e');
$pg->('SELECT distkit_clear()');
is($pg->(q{SELECT distkit_inc('v:e', 1, 'lax')}), '1', 'after a clear the evicted key starts again at 1');

# 4. a strict increment on this server becomes the view at once
is($pg->(q{SELECT distkit_inc('v:d', 1, 'lax')}), '1', 'v:d buffered');
$pg->('SELECT distkit_flush()');
is($pg->(q{SELECT distkit_inc('v:d', 5, 'strict')}), '6', 'strict +5 (6)');
is($pg->(q{SELECT distkit_inc('v:d', 1, 'lax')}), '7', 'the lax call after it sees it (7)');
is($pg->(q{SELECT (distkit_instance_inc('v:i', 1, 'lax')).total}), '1', 'instance-aware v:i buffered');
$pg->('SELECT distkit_flush()');
is($pg->(q{SELECT (distkit_instance_inc('v:i', 5, 'strict')).total}), '6', 'instance-aware strict +5 (6)');
is($pg->(q{SELECT row(i.*)::text FROM distkit_instance_inc('v:i', 1, 'lax') i}), '(7,7)',
	'the lax call after it sees it (7, 7)');

# 5. exactness through a buffer far smaller than the key set
$pg->('SELECT distkit_clear()');
my $script = "$PostgreSQL::Test::Utils::tmp_check/views.sql";
open my $fh, '>', $script or die;
print $fh "\\set k random(1, 1000)\nSELECT distkit_inc('many:' || :k, 1, 'lax');\n";
close $fh;
my ($out, $err) = run_command([ 'pgbench', '-n', '-M', 'prepared', '-c', '8', '-j', '8', '-t', '2000',
	'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ]);
like($out, qr/number of transactions actually processed: 16000/, 'pgbench ran 8 x 2000 increments');
is($err =~ /error|abort/i ? $err : '', '', 'no pgbench client failed');
$pg->('SELECT distkit_flush()');
my $sum = 0;
$sum += redis_int("distkit:c:{many:$_}") for 1 .. 1000;
is($sum, 16000, 'Redis holds every increment exactly');
is($stat->('dropped_deltas'), '0', 'nothing was dropped');

# 6. Redis stopped: lax reads fall back to this server's view, both kinds alike
restart_fresh();
is($pg->(q{SELECT distkit_inc('fb:c', 7, 'lax')}), '7', 'fb:c counted (7)');
is($pg->(q{SELECT row(i.*)::text FROM distkit_instance_inc('fb:i', 7, 'lax') i}), '(7,7)',
	'fb:i counted (7, 7)');
$pg->('SELECT distkit_flush()');
redis_ctl('stop');
my %before = map { $_ => $stat->($_) } qw(seed_reads strict_fallbacks dropped_deltas);
is($pg->(q{SELECT distkit_inc('fb:c', 3, 'lax')}), '10', 'Redis stopped: fb:c +3 buffered (10)');
is($pg->(q{SELECT row(i.*)::text FROM distkit_instance_inc('fb:i', 3, 'lax') i}), '(10,10)',
	'Redis stopped: fb:i +3 buffered (10, 10)');
# both views are older than distkit.flush_interval (20 ms): a lax read tries Redis first
is($pg->(q{SELECT pg_sleep(0.1), distkit_get('fb:c', 'lax')}), '|10',
	'lax read of fb:c: Redis unreachable, this server\'s view (10)');
is($pg->(q{SELECT pg_sleep(0.1), row(i.*)::text FROM distkit_instance_get('fb:i', 'lax') i}), '|(10,10)',
	'lax read of fb:i: Redis unreachable, this server\'s view (10, 10)');
is($pg->(q{SELECT pg_sleep(0.1), value FROM distkit_get_many(ARRAY['fb:c'], 'lax')}), '|10',
	'lax get_many of fb:c: the same view (10)');
is($stat->($_), $before{$_}, "Redis stopped: $_ unchanged") for sort keys %before;
my $errors = sub {
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY sqlstate\n$sql");
	return $err;
};
my $strict_c = $errors->(q{SELECT distkit_get('fb:c', 'strict')});
my $strict_i = $errors->(q{SELECT distkit_instance_get('fb:i', 'strict')});
like($strict_c, qr/ERROR:\s+08\d\d\d/, "strict read of fb:c raises a connection error ($strict_c)");
is($strict_i, $strict_c, 'strict read of fb:i: the same error');
my $never_c = $errors->(q{SELECT distkit_get('fb:never', 'lax')});
my $never_i = $errors->(q{SELECT distkit_instance_get('fb:never', 'lax')});
is($never_c, $strict_c, 'lax read of a key never read (simple): the connection error');
is($never_i, $strict_c, 'lax read of a key never read (instance-aware): the same error');
my (undef, undef, $msg_c) = $node->psql('postgres', q{SELECT distkit_get('fb:c', 'strict')});
my (undef, undef, $msg_i) = $node->psql('postgres', q{SELECT distkit_instance_get('fb:i', 'strict')});
like($msg_c, qr/ERROR:  .*Redis/, "strict read of fb:c: $msg_c");
is($msg_i, $msg_c, 'the two strict reads fail with the same message');
redis_ctl('start');
$pg->(q{SELECT distkit_flush('10 s')});
is(redis_int('distkit:c:{fb:c}'), 10, 'Redis back: fb:c holds 10');
is($pg->(q{SELECT distkit_get('fb:c', 'strict')}), '10', 'strict read of fb:c: 10');
is($pg->(q{SELECT row(i.*)::text FROM distkit_instance_get('fb:i', 'strict') i}), '(10,10)',
	'strict read of fb:i: (10, 10)');

$node->stop;
done_testing();

# Lax flushes in groups (issue 15): one lua/lax_flush.lua call applies a
# whole group of counters (a hash slot in a Redis Cluster, everything on one
# Redis) with one exactly-once record per (instance, group).
#   1. two servers, 8 pgbench clients over 100,000 keys: every key exact in
#      Redis (each compared with the increments sent to it);
#   2. (single Redis) the reply-dropping proxy between server B and Redis:
#      the groups Redis applied are never applied again by the resends; then
#      Redis stopped while B holds the batch in flight, and started again;
#   2c. (DISTKIT_TAP_REDIS_MODE=cluster) a slot migrated during the load,
#       and a flush that follows an ASK once its keys are all moved;
#   3. a group with one key of the wrong type: the others apply, that key is
#      dropped with a WARNING;
#   4. the records in Redis: one per (instance, group), bounded, expiring;
#   5. a clean stop deletes the server's records.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $mode = $ENV{DISTKIT_TAP_REDIS_MODE} // 'single';
my ($url, $pport, $control);
if ($mode eq 'cluster')
{
	$url = start_cluster('batch');
}
else
{
	my $port = start_redis('batch');
	$url = "redis://127.0.0.1:$port/0";
	($pport, $control) = start_proxy($port);
}
diag("Redis: $mode ($url)");
my @masters = split /,/, redis_ctl_out('masters');
my $conf = "distkit.lax_capacity = 131072\n";
my $a = new_node('batch_a', $url, $conf);
my $b = new_node('batch_b', $mode eq 'cluster' ? $url : "redis://127.0.0.1:$pport/0", $conf);
my $qa = sub { $a->safe_psql('postgres', $_[0]) };
my $qb = sub { $b->safe_psql('postgres', $_[0]) };
$_->safe_psql('postgres', 'CREATE UNLOGGED TABLE sent (k int)') for $a, $b;

# CRC16 slot of a user key (keys.c): the hash tag is the encoded key
sub slot_of
{
	my ($k) = @_;
	$k =~ s/%/%25/g;
	$k =~ s/\}/%7D/g;
	my $crc = 0;
	for my $c (unpack 'C*', $k)
	{
		$crc ^= $c << 8;
		$crc = ($crc & 0x8000) ? (($crc << 1) ^ 0x1021) & 0xffff : ($crc << 1) & 0xffff for 1 .. 8;
	}
	return $crc & 16383;
}

# key => value of every Redis key matching pattern, on every master
sub redis_dump
{
	my ($pattern, $what) = @_;
	my %v;
	for my $p (@masters)
	{
		my $out = node_cli($p, 'EVAL', q{local r = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
	local t = redis.call('TYPE', k).ok
	if ARGV[2] == 'pttl' then
		r[#r + 1] = k .. '=' .. redis.call('PTTL', k)
	else
		r[#r + 1] = k .. '=' .. (t == 'string' and redis.call('GET', k) or t)
	end
end
return r}, 0, $pattern, $what // 'value');
		for (split /\n/, $out)
		{
			my ($k, $x) = /^(.*)=([^=]*)$/ or next;
			$v{$k} = $x;
		}
	}
	return \%v;
}

# every lb: key in Redis against what both servers sent; returns a summary
sub check_exact
{
	my ($what) = @_;
	my %want;
	for my $n ($a, $b)
	{
		for (split /\n/, $n->safe_psql('postgres', 'SELECT k, count(*) FROM sent GROUP BY k'))
		{
			my ($k, $c) = split /\|/;
			$want{"distkit:c:{lb:$k}"} += $c;
		}
	}
	my $have = redis_dump('distkit:c:{lb:*');
	my ($sum, $bad) = (0, 0);
	for my $k (keys %want)
	{
		$sum += $want{$k};
		$bad++ if ($have->{$k} // 0) != $want{$k};
	}
	$bad += grep { !exists $want{$_} } keys %$have;
	is($bad, 0, "$what: every one of " . scalar(keys %want) . " keys holds exactly its $sum increments");
	return $sum;
}

# 1. two servers, 4 pgbench clients each, over 100,000 keys
my $script = "$PostgreSQL::Test::Utils::tmp_check/lb.sql";
open my $fh, '>', $script or die;
# pgbench would read ":<name>" in a literal as a variable: chr(58) is ':'
print $fh "\\set k random(1, 100000)\nSELECT distkit_inc('lb' || chr(58) || :k, 1, 'lax');\nINSERT INTO sent VALUES (:k);\n";
close $fh;

sub pgbench
{
	my ($node, $tx) = @_;
	return IPC::Run::start([ 'pgbench', '-n', '-M', 'prepared', '-c', '4', '-j', '4', '-t', $tx,
		'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ], '>', \my $out, '2>', \my $err);
}

# 2c (cluster): a slot migrated while the load runs
my ($mslot, $src, $dst, $moved);
my $extra = 0;	# increments made besides the load's
if ($mode eq 'cluster')
{
	$mslot = slot_of('lb:1');
	$src = cluster_node_of_slot($mslot);
	($dst) = grep { $_ != $src } @masters;
	# filler keys in the slot make the migration last a while
	node_cli($src, 'EVAL', "for i = 1, 1000 do redis.call('SET', KEYS[1] .. i, i) end", 1, "filler:{lb:1}:");
	# every counter of the slot the load uses, and both servers' flush
	# records of the slot, exist before the load: the migration moves them
	# (the load may touch none of the slot's few keys before it starts),
	# and once every key is on dst a flush of the slot follows an ASK
	# (a key that exists nowhere yet would get TRYAGAIN until the end)
	my @slot_keys = grep { slot_of("lb:$_") == $mslot } 1 .. 100000;
	my $list = join(',', @slot_keys);
	for my $n ($a, $b)
	{
		$n->safe_psql('postgres', "SELECT distkit_inc('lb:' || k, 1, 'lax') FROM unnest(ARRAY[$list]) k;
			INSERT INTO sent SELECT unnest(ARRAY[$list])");
		$n->safe_psql('postgres', q{SELECT distkit_flush('30 s')});
	}
	$extra = 2 * @slot_keys + 2;
}
my $sent = sub { $qa->('SELECT count(*) FROM sent') + $qb->('SELECT count(*) FROM sent') };
my $during;
my @load = (pgbench($a, 25000), pgbench($b, 25000));
if ($mode eq 'cluster')
{
	wait_for(sub { $sent->() > 10000 }, 'the load to run');
	my $src_id = node_cli($src, 'CLUSTER', 'MYID');
	my $dst_id = node_cli($dst, 'CLUSTER', 'MYID');
	node_cli($dst, 'CLUSTER', 'SETSLOT', $mslot, 'IMPORTING', $src_id);
	node_cli($src, 'CLUSTER', 'SETSLOT', $mslot, 'MIGRATING', $dst_id);
	$during = $sent->() < 200000 + $extra;
	$moved = migrate_slot_keys($src, $dst, $mslot, 50);
	note('increments made when the migration ended: ' . $sent->() . ' of ' . (200000 + $extra));
	# the slot's keys are all on dst, the slot still MIGRATING on src: a
	# flush of lb:1 now must follow an ASK to dst (by design, whatever the
	# load touched meanwhile)
	for my $n ($a, $b)
	{
		$n->safe_psql('postgres', q{SELECT distkit_inc('lb:1', 1, 'lax'); INSERT INTO sent VALUES (1)});
		$n->safe_psql('postgres', q{SELECT distkit_flush('30 s')});
	}
	node_cli($_, 'CLUSTER', 'SETSLOT', $mslot, 'NODE', $dst_id) for @masters;
}
$_->finish for @load;
is($sent->(), 200000 + $extra,
	'8 pgbench clients on two servers made 200,000 lax increments over 100,000 keys');
$qa->(q{SELECT distkit_flush('60 s')});
$qb->(q{SELECT distkit_flush('60 s')});
if ($mode eq 'cluster')
{
	ok($moved > 1000, "slot $mslot migrated from $src to $dst ($moved keys: its counters, records and fillers)");
	ok($during, '... begun while the load ran');
	is(node_cli($src, 'CLUSTER', 'COUNTKEYSINSLOT', $mslot), '0', '... the old owner holds none of its keys');
}
my $total = check_exact('two servers, 8 clients');
my ($keys_flushed, $calls) = split /\|/,
  $qa->('SELECT keys_flushed, flush_calls FROM distkit_stats');
ok($calls > 0 && $calls < $keys_flushed, "server A: $keys_flushed keys flushed in $calls script calls");
note(sprintf('keys per flush script call on server A: %.1f', $keys_flushed / $calls));
is($qa->('SELECT pending_keys || \'/\' || dropped_deltas || \'/\' || strict_fallbacks FROM distkit_stats'), '0/0/0',
	'server A: nothing pending, dropped or counted strictly');

# 2. lost replies and a Redis restart while a batch is in flight (single Redis)
SKIP:
{
	skip 'the proxy sits in front of one Redis only', 12 if $mode eq 'cluster';
	my $errors0 = $qb->('SELECT flush_errors FROM distkit_stats');
	my $before = 0;
	$before += $_ for values %{ redis_dump('distkit:c:{lb:*') };
	# every key known on B first (delta 0: nothing to flush), so that the
	# increments below need no seeding read through the proxy
	$qb->(q{SELECT count(distkit_inc('lb:' || g, 0, 'lax')) FROM generate_series(1, 100000) g});
	is($qb->('SELECT buffer_used >= 100000 FROM distkit_stats'), 't', 'server B holds the 100,000 keys');
	# the increments accumulate while B's worker is stopped (between
	# cycles), so that one batch holds all 100,000 keys: 100 parts of 1,000
	# keys in one group
	$qb->(q{SELECT distkit_flush()});
	my $wb = stop_worker_idle($b);
	ok($wb, "server B's worker stopped while idle");
	set_proxy_mode($control, 'cut-reply');
	$qb->(q{INSERT INTO sent SELECT g FROM generate_series(1, 100000) g WHERE distkit_inc('lb:' || g, 1, 'lax') IS NOT NULL});
	is($qb->('SELECT pending_keys FROM distkit_stats'), '100000', 'the 100,000 increments wait in B\'s buffer');
	resume_worker($wb);
	# the worker's request reaches Redis and runs, its reply is lost; the
	# batch stays in flight and is resent with the same sequence
	my $sum = sub { my $s = 0; $s += $_ for values %{ redis_dump('distkit:c:{lb:*') }; $s };
	wait_for(sub { $sum->() > $before && $qb->('SELECT flush_errors FROM distkit_stats') >= $errors0 + 3 },
		'Redis to apply groups whose replies are lost, and the resends');
	my $applied = $sum->() - $before;
	ok($applied >= 1000 && $applied < 100000 && $applied % 1000 == 0,
		"whole parts of the batch were applied, their replies lost (+$applied)");
	my $errors1 = $qb->('SELECT flush_errors FROM distkit_stats');
	ok(wait_for(sub { $qb->('SELECT flush_errors FROM distkit_stats') > $errors1 + 1 }, 'more resends'),
		'the batch was resent again and again');
	is($sum->() - $before, $applied, "the resends applied nothing twice (Redis stays at +$applied)");
	is($qb->('SELECT pending_delta FROM distkit_stats'), '100000', 'server B holds the whole batch in flight');
	# Redis stops while the batch is in flight, and comes back
	redis_ctl('stop');
	set_proxy_mode($control, 'pass');
	my $errors2 = $qb->('SELECT flush_errors FROM distkit_stats');
	wait_for(sub { $qb->('SELECT flush_errors FROM distkit_stats') > $errors2 + 1 }, 'the flusher to fail against the stopped Redis');
	is($qb->('SELECT pending_delta || \' \' || redis_connected FROM distkit_stats'), '100000 false',
		'Redis stopped: the batch stays in flight on server B');
	like(slurp_file($b->logfile), qr/distkit worker cannot flush to Redis/, 'the outage was logged');
	redis_ctl('start');
	$qb->(q{SELECT distkit_flush('60 s')});
	is($qb->('SELECT pending_delta FROM distkit_stats'), '0', 'after Redis came back nothing is in flight');
	is(check_exact('lost replies and a Redis restart'), $total + 100000, '... 100,000 more increments in all');
}

# 3. a group with one key of the wrong type
my @group = ('wt:bad');
my $gslot = slot_of('wt:bad');
for (my $i = 0; @group < 4; $i++)
{
	push @group, "wt:$i" if $mode ne 'cluster' || slot_of("wt:$i") == $gslot;
}
note("one group: @group");
my $list = join(',', map { "'$_'" } @group);
# every key known to the buffer first (delta 0), then wt:bad made a hash:
# the increments below need no read, and the flush meets the wrong type
$qa->("SELECT distkit_inc(k, 0, 'lax') FROM unnest(ARRAY[$list]) k");
my $dropped0 = $qa->('SELECT dropped_deltas FROM distkit_stats');
redis_cli('HSET', 'distkit:c:{wt:bad}', 'f', 'v');
$qa->("SELECT distkit_inc(k, 5, 'lax') FROM unnest(ARRAY[$list]) k");
my ($rc, $out, $err) = $a->psql('postgres', q{SELECT distkit_flush('10 s')});
is($rc, 0, 'distkit_flush returns');
is(join(' ', map { redis_int("distkit:c:{$_}") } @group[1 .. 3]), '5 5 5', 'the other keys of the group were applied');
is(redis_cli('TYPE', 'distkit:c:{wt:bad}'), 'hash', 'the wrong-type key was left alone');
is($qa->('SELECT dropped_deltas FROM distkit_stats') - $dropped0, 1, 'one delta dropped');
like(slurp_file($a->logfile), qr/WARNING:  distkit worker dropped a delta of 5 for counter "wt:bad": WRONGTYPE/,
	'with a WARNING naming the key');

# 3b. (single Redis) the same with the group's reply lost: the resend finds
# the part applied, and the record says which key Redis refused
SKIP:
{
	skip 'the proxy sits in front of one Redis only', 4 if $mode eq 'cluster';
	my $l2 = join(',', map { "'$_'" } qw(wr:1 wr:bad wr:2));
	$qb->("SELECT distkit_inc(k, 0, 'lax') FROM unnest(ARRAY[$l2]) k");
	redis_cli('HSET', 'distkit:c:{wr:bad}', 'f', 'v');
	my $dropped = $qb->('SELECT dropped_deltas FROM distkit_stats');
	# one batch for the three keys: they wait while the worker is stopped
	$qb->(q{SELECT distkit_flush()});
	my $wb = stop_worker_idle($b);
	ok($wb, "server B's worker stopped while idle");
	set_proxy_mode($control, 'cut-reply');
	$qb->("SELECT distkit_inc(k, 3, 'lax') FROM unnest(ARRAY[$l2]) k");
	resume_worker($wb);
	wait_for(sub { redis_int('distkit:c:{wr:1}') == 3 && redis_int('distkit:c:{wr:2}') == 3 },
		'the group to be applied, its reply lost');
	set_proxy_mode($control, 'pass');
	$qb->(q{SELECT distkit_flush('30 s')});
	is(redis_int('distkit:c:{wr:1}') . ' ' . redis_int('distkit:c:{wr:2}'), '3 3',
		'lost reply: the other keys were applied once');
	is($qb->('SELECT dropped_deltas FROM distkit_stats') - $dropped, 1, '... the refused one dropped once');
	like(slurp_file($b->logfile), qr/WARNING:  distkit worker dropped a delta of 3 for counter "wr:bad": DKREFUSED/,
		'... named by the resend (DKREFUSED: the record kept the refusal)');
}

# 4. the records: one per (instance, group), each with its 7-day lifetime
my $recs = redis_dump('distkit:cf:*', 'pttl');
my ($bad_name, $bad_ttl) = (0, 0);
my %per;
for my $k (keys %$recs)
{
	my ($inst) = $k =~ /^distkit:cf:\{g\d+\}:([0-9a-f-]{36})$/ or do { $bad_name++; next };
	$per{$inst}++;
	$bad_ttl++ unless $recs->{$k} > 0 && $recs->{$k} <= 7 * 86400 * 1000;
}
is($bad_name, 0, 'every record is named <prefix>:cf:{<slot tag>}:<instance id>');
is($bad_ttl, 0, 'every record expires within 7 days');
my $groups = $mode eq 'cluster' ? 16384 : 1;
for my $n ($a, $b)
{
	my ($id, $records) = split /\|/, $n->safe_psql('postgres', 'SELECT instance_id, flush_records FROM distkit_stats');
	is($per{$id} // 0, $records, "instance $id: distkit_stats.flush_records ($records) = its records in Redis");
	ok($records >= 1 && $records <= $groups, "... at most one per group ($groups)");
}
is(scalar(keys %per), 2, 'records of the two instances only');
is(scalar(grep { /^distkit:cf:\{[^}]*\}$/ } keys %{ redis_dump('distkit:cf:*') }), 0, 'no per-counter records');

# 5. a clean stop with nothing in flight deletes the server's records (they
#    guard only its own resends; its instance id is never used again)
my $b_id = $qb->('SELECT instance_id FROM distkit_stats');
$qa->(q{SELECT distkit_flush()});
# room for up to 16,384 deletions on a loaded machine (default exit_timeout: 1 s)
$qa->(q{ALTER SYSTEM SET distkit.exit_timeout = '10s'});
$qa->('SELECT pg_reload_conf()');
my ($a_id, $a_records) = split /\|/, $qa->('SELECT instance_id, flush_records FROM distkit_stats');
my $b_before = scalar grep { /:\Q$b_id\E$/ } keys %{ redis_dump('distkit:cf:*') };
$a->stop('fast');
my $left = redis_dump('distkit:cf:*');
is(scalar(grep { /:\Q$a_id\E$/ } keys %$left), 0, "server A stopped: none of its $a_records records is left");
ok($b_before >= 1, "server B holds $b_before records");
is(scalar(grep { /:\Q$b_id\E$/ } keys %$left), $b_before, '... which stay');
like(slurp_file($a->logfile), qr/LOG:  distkit worker deleted its $a_records lax flush records?\n/,
	'the stop logged how many');

done_testing();

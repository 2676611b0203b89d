# Instance-aware counters in a fleet of thousands of servers: two real
# PostgreSQL servers and up to 5,000 simulated instances, registered by
# test/fake-instance.sh exactly as a server's worker registers (numbers,
# serials, the live set and its version), with slices written straight into
# the counters' hashes.  Checks exact totals beyond 1,024 live servers,
# O(1) arguments per call, a simulated instance dropping out exactly once
# and coming back exactly once, the epoch rule, recycled numbers never
# reviving a reaped instance's slice, the distkit.max_instances refusal,
# the representation-version refusal, and a real server paused longer than
# the reap time whose number went to a newer instance (DKREAPED): met by a
# strict call, the worker's lax flush, a deferred increment at commit
# (distkit.transactional) and distkit_instance_clear_here.
# DISTKIT_TAP_REDIS_MODE=cluster runs it against a 3-master Redis Cluster
# (the registry and each counter are in one hash slot either way).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mode = $ENV{DISTKIT_TAP_REDIS_MODE} // 'single';
my $url = $mode eq 'cluster' ? start_cluster('fleet') : 'redis://127.0.0.1:' . start_redis('fleet') . '/0';
diag("Redis: $mode ($url)");
my $threshold = 600000;	# the simulated fleet beats at each step, well within it (even on a slow machine)
my $conf = "distkit.heartbeat_interval = '200ms'\ndistkit.dead_instance_threshold = '${threshold}ms'\n";
my $a = new_node('fa', $url, $conf);
my $b = new_node('fb', $url, $conf);
my $qa = sub { $a->safe_psql('postgres', $_[0]) };
my $qb = sub { $b->safe_psql('postgres', $_[0]) };
my $get = sub { my ($q, $k) = @_; $q->("SELECT total || ' ' || this_instance FROM distkit_instance_get('$k')") };
my $fake = "$FindBin::RealBin/../fake-instance.sh";
my $reg = 'distkit:reg:{instances}';

# simulated instance ids: 00000000-0000-4000-8000-<12 digits>
my @fakes = map { sprintf('00000000-0000-4000-8000-%012d', $_) } 1 .. 5000;

# the port of the Redis node holding a key (the only one in single mode)
sub node_of_key
{
	my ($key) = @_;
	return redis_ctl_out('port') if $mode ne 'cluster';
	return cluster_node_of_slot(redis_cli('CLUSTER', 'KEYSLOT', $key));
}

# run fake-instance.sh op for a list of ids; returns its error count
sub fleet
{
	my ($op, @ids) = @_;
	my $list = "$PostgreSQL::Test::Utils::tmp_check/fleet-ids";
	open(my $fh, '>', $list) or die "cannot write $list";
	print $fh map { "$_\n" } @ids;
	close $fh;
	my $errors = `'$fake' distkit $op $threshold < '$list'`;
	chomp $errors;
	return $errors;
}

# number and serial of an instance id
sub numser
{
	my ($id) = @_;
	my $v = redis_cli('HGET', "$reg:num", $id);
	return split(/:/, $v);
}

# a simulated instance's slice of counter key (fake-instance.sh slice),
# under the counter prefix given (default: distkit, the registry's)
sub slice
{
	my ($key, $id, $value, $cprefix) = @_;
	system($fake, 'distkit', 'slice', $id, $key, $value, $cprefix // 'distkit') == 0
	  or die "fake-instance.sh slice failed";
}

# a simulated instance's heartbeat made old: the next heartbeat of a real
# server takes it out of the live set
sub silence
{
	my ($id, $age_ms) = @_;
	my ($sec) = split(/\n/, redis_cli('TIME'));
	my $old = $sec * 1000 - $age_ms;
	redis_cli('ZADD', "$reg:alive", 'XX', $old, $id);
	redis_cli('ZADD', $reg, 'XX', $old, $id);
}

# a's registry entry made 8 days old, reaped by b's next heartbeat, and its
# number given to a newer (simulated) instance id; returns that number
sub reap_a
{
	my ($a_id, $newer) = @_;
	my ($old) = numser($a_id);
	silence($a_id, 8 * 24 * 3600 * 1000);
	wait_for(sub { redis_cli('HEXISTS', "$reg:num", $a_id) eq '0' }, 'b\'s heartbeat to reap a', 10);
	is(fleet('beat', $newer), '0', "a newer instance registers ($newer)");
	is((numser($newer))[0], $old, "it gets a's number ($old)");
	return $old;
}

# how many times a's log (from byte $from) says number $old went to a newer
# instance and a registered again as $new during op $op
sub logged_again
{
	my ($from, $old, $new, $op) = @_;
	my $alog = slurp_file($a->logfile, $from);
	my @again = $alog =~ /instance number \Q$old\E went to a newer instance[^\n]*registered again as number \Q$new\E \(op "\Q$op\E"\)/g;
	my @any = $alog =~ /went to a newer instance/g;
	return scalar(@again) . ' of ' . scalar(@any);
}

wait_for(sub { $qa->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances') eq '2' },
	'both servers registered and alive');

# 1. 1,500 live instances: exact totals on both real servers
is(fleet('beat', @fakes[0 .. 1499]), '0', '1,500 simulated instances registered');
slice('fleet', $_, 1) for @fakes[0 .. 4];
$qa->(q{SELECT distkit_instance_inc('fleet', 1)});
$qb->(q{SELECT distkit_instance_inc('fleet', 5)});
wait_for(sub { $get->($qa, 'fleet') eq '11 1' && $get->($qb, 'fleet') eq '11 5' },
	'both servers to count the simulated slices', 10);
is($get->($qa, 'fleet'), '11 1', '1,502 live: a sees 1 + 5 + 5 simulated slices');
is($get->($qb, 'fleet'), '11 5', '1,502 live: b sees the same total');
is($qa->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances'), '1502', 'distkit_instances: 1,502 alive');
is($qa->('SELECT count(DISTINCT instance_number) FROM distkit_instances WHERE instance_number IS NOT NULL'),
	'1502', 'each instance has its own number');

# 2. 5,000 simulated instances; slices of the last 100 (numbers above 4,900)
is(fleet('beat', @fakes), '0', '5,000 simulated instances registered (heartbeats renewed)');
slice('fleet5k', $_, 1) for @fakes[4900 .. 4999];
$qa->(q{SELECT distkit_instance_inc('fleet5k', 1)});
$qb->(q{SELECT distkit_instance_inc('fleet5k', 5)});
wait_for(sub { $get->($qa, 'fleet5k') eq '106 1' && $get->($qb, 'fleet5k') eq '106 5' },
	'both servers to count 5,000 instances', 10);
is($get->($qa, 'fleet5k'), '106 1', '5,002 live: exact total at a');
is($get->($qb, 'fleet5k'), '106 5', '5,002 live: exact total at b');
my ($n5000) = numser($fakes[4999]);
ok($n5000 > 4000, "the last simulated instance has number $n5000 (beyond 1,024)");

# 3. per call, O(1) arguments whatever the fleet size: the slow log records
#    every command with its arguments
is(fleet('beat', @fakes), '0', 'the simulated fleet keeps beating');
my $node5k = node_of_key('distkit:i:{fleet5k}');
node_cli($node5k, 'CONFIG', 'SET', 'slowlog-max-len', '100000');
node_cli($node5k, 'CONFIG', 'SET', 'slowlog-log-slower-than', '0');
node_cli($node5k, 'SLOWLOG', 'RESET');
$qa->(q{SELECT distkit_instance_inc('fleet5k', 0)});
my $log = node_cli($node5k, 'SLOWLOG', 'GET', '100000');
node_cli($node5k, 'CONFIG', 'SET', 'slowlog-log-slower-than', '10000');
my @lines = split(/\n/, $log);
# EVALSHA sha 1 key op number serial value version live, then the client
my @calls = grep { lc($lines[$_]) eq 'evalsha' && ($lines[$_ + 4] // '') eq 'inc' } 0 .. $#lines;
is(scalar(@calls), 1, 'the slow log holds the one call') or diag($log);
my $e = $calls[0] // 0;
my @args = @lines[$e .. $e + 9];
like($lines[$e + 10] // '', qr/^127\.0\.0\.1:\d+$/, 'the call has 10 arguments (then the client address)');
ok(length(join('', @args)) < 200, 'short ones: O(1) payload with 5,002 live instances') or diag(join(' ', @args));

# 4. a simulated instance whose heartbeat stops drops out exactly once
is(fleet('beat', @fakes), '0', 'the simulated fleet keeps beating');
silence($fakes[4999], $threshold + 5000);
wait_for(sub { $get->($qa, 'fleet5k') eq '105 1' }, 'the silent instance to drop out', 10);
wait_for(sub { $get->($qb, 'fleet5k') eq '105 5' }, '... at b too', 10);
$qa->(q{SELECT distkit_instance_inc('fleet5k', 1)});
is($get->($qb, 'fleet5k'), '106 5', 'dead: its slice is not subtracted twice (a adds 1: 106)');
is(fleet('beat', @fakes[0 .. 4998]), '0', 'the others keep beating');
is($get->($qa, 'fleet5k'), '106 2', 'still 106 after more heartbeats');

# 5. ... and comes back exactly once
is(fleet('beat', $fakes[4999]), '0', 'the silent instance beats again');
wait_for(sub { $get->($qa, 'fleet5k') eq '107 2' }, 'the instance to count again', 10);
is(fleet('beat', $fakes[4999]), '0', 'and beats once more');
is($get->($qb, 'fleet5k'), '107 5', 'counted again exactly once');

# 6. the epoch rule: a set makes older slices stale, whoever comes back
is(fleet('beat', @fakes[0 .. 4998]), '0', 'the simulated fleet keeps beating');
$qb->(q{SELECT distkit_instance_inc('ep', 5)});
slice('ep', $fakes[10], 7);
wait_for(sub { $get->($qa, 'ep') eq '12 0' }, 'the simulated slice to count', 10);
$qa->(q{SELECT distkit_instance_set('ep', 100)});
is($get->($qa, 'ep'), '100 100', 'after set: 100');
silence($fakes[10], $threshold + 5000);
is(fleet('beat', @fakes[0 .. 9]), '0', 'a heartbeat of others');
wait_for(sub { redis_cli('ZSCORE', "$reg:alive", $fakes[10]) eq '' }, 'the silenced instance to leave the live set', 10);
is($get->($qb, 'ep'), '100 0', 'it died: still 100');
is(fleet('beat', $fakes[10]), '0', 'it comes back');
wait_for(sub { $qb->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances') eq '5002' }, 'all live again', 10);
$qb->(q{SELECT distkit_instance_inc('ep', 0)});
is($get->($qb, 'ep'), '100 0', 'it came back: still 100 (its slice is of an older epoch)');

# 7. reaping: an instance silent for 7 days is forgotten and its number
#    recycled; the new holder of the number does not inherit its slice
is(fleet('beat', @fakes), '0', 'the simulated fleet keeps beating');
my ($n7, $s7) = numser($fakes[20]);
slice('reap', $fakes[20], 1000);
silence($fakes[20], 8 * 24 * 3600 * 1000);
wait_for(sub { redis_cli('HEXISTS', "$reg:num", $fakes[20]) eq '0' }, 'the silent instance to be reaped', 10);
is(fleet('beat', 'ffffffff-0000-4000-8000-000000000001'), '0', 'a new instance registers');
my ($nn, $ns) = numser('ffffffff-0000-4000-8000-000000000001');
is($nn, $n7, 'it gets the recycled number');
ok($ns > $s7, 'with a new serial');
$qa->(q{SELECT distkit_instance_inc('reap', 1)});
wait_for(sub { $get->($qb, 'reap') eq '1 0' }, 'b to see the total', 10);
is($get->($qb, 'reap'), '1 0', 'the reaped instance\'s slice does not count for the new holder of its number');

# 8. distkit.max_instances: a server finding no free number is refused, and listed
my $c = new_node('fc', $url, $conf . "distkit.max_instances = 100\n");
my $c_id = $c->safe_psql('postgres', 'SELECT instance_id FROM distkit_stats');
wait_for(sub { $qa->(qq{SELECT count(*) FROM distkit_instances WHERE instance_id = '$c_id'}) eq '1' },
	'c to appear in the registry', 10);
is($qa->(qq{SELECT coalesce(instance_number::text, 'none') || ' ' || alive FROM distkit_instances WHERE instance_id = '$c_id'}),
	'none false', 'distkit_instances: c has no number and is not alive');
my ($rc, $out, $err) = $c->psql('postgres', q{SELECT distkit_instance_inc('fleet', 1)}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/54000.*registry of distkit.prefix "distkit" is full/s, 'c: ERROR 54000, the registry is full');
like($err, qr/HINT:.*distkit.max_instances/, '... with a hint naming distkit.max_instances');
$c->stop;

# 9. another representation under the prefix: refused, saying what to do
redis_cli('HSET', "$reg:meta", 'format', '1');
wait_for(sub { my ($r) = $a->psql('postgres', q{SELECT distkit_instance_get('fleet')}); $r != 0 },
	'a to notice the other representation', 10);
($rc, $out, $err) = $a->psql('postgres', q{SELECT distkit_instance_get('fleet')}, extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/55000.*representation 1; this server uses representation 3/s, 'ERROR 55000 naming both representations');
like($err, qr/HINT:.*own distkit.prefix/, '... and what to do');
redis_cli('HSET', "$reg:meta", 'format', '3');
wait_for(sub { my ($r) = $a->psql('postgres', q{SELECT distkit_instance_get('fleet')}); $r == 0 },
	'a to work again', 10);
pass('the refusal ends when the representation matches');

# 10. a real server paused longer than the reap time: its number went to a
#     newer instance, which wrote a slice under it.  a's worker is stopped
#     (SIGSTOP: no heartbeat, a's shared memory keeps the old number), a's
#     registry entry is made 8 days old, b's next heartbeat reaps it and a
#     simulated instance gets the number.  a's next call meets DKREAPED
#     (nothing changed), registers again with a new number and counts from
#     an empty slice, exactly once.
is(fleet('beat', @fakes), '0', 'the simulated fleet keeps beating');
is($get->($qa, 'rk'), '0 0', 'rk is new');
$qa->(q{SELECT distkit_instance_inc('rk', 10)});
is($get->($qa, 'rk'), '10 10', 'a counts 10 in rk');
my $a_id = $qa->('SELECT instance_id FROM distkit_stats');
my ($na, $sa) = numser($a_id);
my $worker = stop_worker_idle($a);
ok($worker, 'a\'s worker stopped while idle (holding no lock)');
silence($a_id, 8 * 24 * 3600 * 1000);
wait_for(sub { redis_cli('HEXISTS', "$reg:num", $a_id) eq '0' }, 'b\'s heartbeat to reap a', 10);
my $newer = 'ffffffff-0000-4000-8000-000000000002';
is(fleet('beat', $newer), '0', 'a newer instance registers');
my ($nn2, $ns2) = numser($newer);
is($nn2, $na, "it gets a's number ($na)");
slice('rk', $newer, 50);
is($qa->('SELECT instance_number FROM distkit_instances WHERE is_this_server'), '',
	'a (paused worker) is not in the registry');
is($qa->(q{SELECT row(i.*)::text FROM distkit_instance_inc('rk', 1) i}), '(51,1)',
	'a\'s next call: DKREAPED, a registers again and counts 1 in an empty slice (51 = 50 + 1)');
my ($na2, $sa2) = numser($a_id);
ok(defined($na2) && $na2 ne $na && $sa2 > $ns2, "a holds a new number ($na2) and a newer serial");
is($qa->('SELECT instance_number FROM distkit_instances WHERE is_this_server'), $na2,
	'distkit_instances shows a\'s new number (its worker still stopped)');
wait_for(sub { $get->($qb, 'rk') eq '51 0' }, 'b to see 51', 10);
is($get->($qb, 'rk'), '51 0', 'b: 51, the newer instance\'s 50 and a\'s 1 (a\'s old 10 does not count)');
resume_worker($worker);
$qa->(q{SELECT distkit_instance_inc('rk', 1)});
wait_for(sub { $get->($qb, 'rk') eq '52 0' }, 'b to see 52', 10);
is($get->($qa, 'rk'), '52 2', 'a\'s worker resumed: a counts on with its new number (52, slice 2)');
is(join(':', numser($a_id)), "$na2:$sa2", 'and keeps it');

# 11. the same, with a's deltas buffered in lax mode while its worker is
#     stopped: when it resumes, its latch (set by the increment) makes it
#     flush before its heartbeat, with the reaped number.  The flush meets
#     DKREAPED (the script changed nothing), registers again and resends the
#     delta under the new number: counted once, nothing dropped.
is($qa->(q{SELECT row(i.*)::text FROM distkit_instance_inc('rf', 5) i}), '(5,5)', 'a counts 5 in rf (strict)');
my ($na3) = numser($a_id);
my $dropped = $qa->('SELECT dropped_deltas FROM distkit_stats');
ok($worker = stop_worker_idle($a), 'a\'s worker stopped while idle');
is($qa->(q{SELECT row(i.*)::text FROM distkit_instance_inc('rf', 7, 'lax') i}), '(12,12)',
	'a buffers 7 in rf (lax; its worker is stopped, nothing is flushed)');
is($qa->('SELECT pending_keys FROM distkit_stats'), '1', 'the delta waits in a\'s buffer');
silence($a_id, 8 * 24 * 3600 * 1000);
wait_for(sub { redis_cli('HEXISTS', "$reg:num", $a_id) eq '0' }, 'b\'s heartbeat to reap a again', 10);
my $newer3 = 'ffffffff-0000-4000-8000-000000000003';
is(fleet('beat', $newer3), '0', 'another newer instance registers');
is((numser($newer3))[0], $na3, "it gets a's number ($na3)");
slice('rf', $newer3, 100);
my $log_at = -s $a->logfile;
resume_worker($worker);
wait_for(sub { $get->($qb, 'rf') eq '107 0' }, 'b to see 107', 10);
is($get->($qb, 'rf'), '107 0', 'b: 107, the newer instance\'s 100 and a\'s 7 (a\'s old 5 does not count)');
my ($na4) = numser($a_id);
ok(defined($na4) && $na4 ne $na3, "a holds a new number ($na4)");
is($qa->('SELECT dropped_deltas FROM distkit_stats'), $dropped, 'no delta dropped');
is(logged_again($log_at, $na3, $na4, 'flush'), '1 of 1', 'the worker\'s flush met DKREAPED and registered again (logged once)');
unlike(slurp_file($a->logfile, $log_at), qr/dropped a delta/, 'no WARNING about a dropped delta');

# 12. a deferred increment (distkit.transactional) meeting DKREAPED at
#     commit: a transaction of a adds 3 to rt (deferred), then a's worker
#     is stopped, a is reaped and a newer instance writes 50 under a's
#     number.  The COMMIT's add meets DKREAPED (the script changed
#     nothing), registers again and resends once: the commit succeeds and
#     the 3 count once, in a's new slice.
is($qa->(q{SELECT row(i.*)::text FROM distkit_instance_inc('rt', 10) i}), '(10,10)', 'a counts 10 in rt (strict)');
my $tx = $a->background_psql('postgres');
$tx->query_safe('BEGIN');
$tx->query_safe('SET LOCAL distkit.transactional = on');
is($tx->query_safe(q{SELECT row(i.*)::text FROM distkit_instance_inc('rt', 3) i}), '(13,13)',
	'a transaction of a adds 3 (deferred: it sees 13)');
ok($worker = stop_worker_idle($a), 'a\'s worker stopped while idle');
my $na5 = reap_a($a_id, 'ffffffff-0000-4000-8000-000000000004');
slice('rt', 'ffffffff-0000-4000-8000-000000000004', 50);
wait_for(sub { $get->($qb, 'rt') eq '50 0' }, 'b to see the newer instance\'s 50 (a\'s old 10 gone)', 10);
$log_at = -s $a->logfile;
my $commit_error = eval { $tx->query_safe('COMMIT'); '' } // $@;
is($commit_error, '', 'COMMIT succeeds although a\'s number was reaped');
$tx->quit;
my ($na6) = numser($a_id);
ok(defined($na6) && $na6 ne $na5, "a registered again as number $na6");
is(logged_again($log_at, $na5, $na6, 'add'), '1 of 1', 'the commit met DKREAPED and registered again (logged once)');
is($get->($qa, 'rt'), '53 3', 'a: 53, its 3 counted once in its new slice (not twice, not lost)');
wait_for(sub { $get->($qb, 'rt') eq '53 0' }, 'b to see 53', 10);
is($get->($qb, 'rt'), '53 0', 'b: 53 = the newer instance\'s 50 + a\'s 3');
resume_worker($worker);
$qa->(q{SELECT distkit_instance_inc('rt', 1)});
wait_for(sub { $get->($qb, 'rt') eq '54 0' }, 'b to see 54', 10);
is($get->($qa, 'rt'), '54 4', 'a\'s worker resumed: a counts on in its new slice (54, slice 4)');
is((numser($a_id))[0], $na6, 'and keeps its number');

# 13. distkit_instance_clear_here after a reap, under another prefix (only
#     ch there): a counts 4 in ch, is reaped, and a newer instance writes 30
#     under a's old number.  clear_here meets DKREAPED, registers again and
#     resends under a's new number: it does not fail and leaves the newer
#     instance's 30 alone; then it clears what a counts under the new one.
my $q13a = sub { $qa->("SET distkit.prefix = 'p13';\n$_[0]") };
my $q13b = sub { $qb->("SET distkit.prefix = 'p13';\n$_[0]") };
my $get13 = sub { $_[0]->(q{SELECT total || ' ' || this_instance FROM distkit_instance_get('ch')}) };
is($q13a->(q{SELECT row(i.*)::text FROM distkit_instance_inc('ch', 4) i}), '(4,4)', 'a counts 4 in p13 ch');
wait_for(sub { $get13->($q13b) eq '4 0' }, 'b to see 4', 10);
ok($worker = stop_worker_idle($a), 'a\'s worker stopped while idle');
my $na7 = reap_a($a_id, 'ffffffff-0000-4000-8000-000000000005');
slice('ch', 'ffffffff-0000-4000-8000-000000000005', 30, 'p13');
wait_for(sub { $get13->($q13b) eq '30 0' }, 'b to see the newer instance\'s 30', 10);
$log_at = -s $a->logfile;
my ($rc13, $out13, $err13) = $a->psql('postgres', "SET distkit.prefix = 'p13';\nSELECT distkit_instance_clear_here()");
is($err13, '', 'clear_here after the reap: no error');
is($out13, '0', '... and no slice removed (the newer instance\'s 30 is not a\'s)');
my ($na8) = numser($a_id);
ok(defined($na8) && $na8 ne $na7, "a registered again as number $na8");
is(logged_again($log_at, $na7, $na8, 'del_here'), '1 of 1', 'clear_here met DKREAPED and registered again (logged once)');
is($get13->($q13b), '30 0', 'b: the newer instance\'s 30 is intact');
is($get13->($q13a), '30 0', 'a: the same, with an empty slice');
is($q13a->(q{SELECT row(i.*)::text FROM distkit_instance_inc('ch', 2) i}), '(32,2)', 'a counts 2 under its new number');
wait_for(sub { $get13->($q13b) eq '32 0' }, 'b to see 32', 10);
is($q13a->('SELECT distkit_instance_clear_here()'), '1', 'clear_here removes a\'s one slice');
is($get13->($q13a), '30 0', 'a: 30, its 2 cleared');
wait_for(sub { $get13->($q13b) eq '30 0' }, 'b to see 30', 10);
is($get13->($q13b), '30 0', 'b: 30, the newer instance\'s slice only');
resume_worker($worker);

# 14. the lax flush of instance-aware counters goes in groups (one script
#     call per group part, lua/instance_flush.lua, one exactly-once record
#     per instance and group, no record per counter), and survives live-set
#     changes between flushes, by design:
#     - a simulated instance joins (a new live-set version) with a slice in
#       g:1; a learns the version, b does not (its worker stopped while
#       idle): a's flush finds every counter computed at the old version
#       and is answered DKSTALE; it resends its parts with the live set;
#     - then b's worker, resumed, flushes first thing with the old version
#       and finds counters computed at the new one: DKNEWER, b refreshes its
#       live set and resends.
my @masters = $mode eq 'cluster' ? split(/,/, redis_ctl_out('masters')) : (redis_ctl_out('port'));
sub count_keys
{
	my ($pattern) = @_;
	my $n = 0;
	$n += node_cli($_, 'EVAL', q{return #redis.call('KEYS', ARGV[1])}, 0, $pattern) for @masters;
	return $n;
}
my $nk = 2000;
my $totals = sub {
	my ($q) = @_;
	$q->(qq{SELECT string_agg(t::text || 'x' || n, ' ') FROM (SELECT total AS t, count(*) AS n FROM
		generate_series(1, $nk) k, distkit_instance_get('g:' || k) GROUP BY total ORDER BY total) s});
};
# a's increments wait while its worker is stopped: then one batch takes them all
$qa->(q{SELECT distkit_flush('2 min')});
ok($worker = stop_worker_idle($a), 'a\'s worker stopped while idle');
my ($calls0) = $qa->('SELECT flush_calls FROM distkit_stats');
$qa->(qq{SELECT count(distkit_instance_inc('g:' || k, 1, 'lax')) FROM generate_series(1, $nk) k});
resume_worker($worker);
$qa->(q{SELECT distkit_flush('2 min')});
$qb->(qq{SELECT count(distkit_instance_inc('g:' || k, 2, 'lax')) FROM generate_series(1, $nk) k});
$qb->(q{SELECT distkit_flush('2 min')});
my $calls = $qa->('SELECT flush_calls FROM distkit_stats') - $calls0;
# one call per group and 100 counters: 20 on one Redis, one per hash slot in a cluster
my $expect = $mode eq 'cluster'
	? scalar(keys %{ { map { (redis_cli('CLUSTER', 'KEYSLOT', "distkit:i:{g:$_}") => 1) } 1 .. $nk } })
	: $nk / 100;
is($calls, $expect, "a's flush of $nk instance-aware counters took $expect script calls");
is($totals->($qa), "3x$nk", "every one of the $nk counters is exact (3) on a");
is(count_keys('distkit:if:*'), 0, 'no exactly-once record per counter');
my $newcomer = 'ffffffff-0000-4000-8000-000000000014';
ok($worker = stop_worker_idle($b), 'b\'s worker stopped while idle');
my $version = sub { $_[0]->(q{SELECT count(*) FILTER (WHERE alive) FROM distkit_instances WHERE instance_id = '} . $newcomer . q{'}) };
is(fleet('beat', $newcomer), '0', 'a simulated instance joins the live set');
slice('g:1', $newcomer, 10);
is($version->($qa), '1', '... it is live in the registry');
# distkit_instances reads the registry in Redis, not what a's worker knows:
# a knows the new version once a heartbeat sent after the join has been
# answered, which is certain once its worker has sent the next one
my $beat = sub { redis_cli('ZSCORE', "$reg:alive", $a_id) };
my ($joined) = split(/\n/, redis_cli('TIME'));
$joined *= 1000;
wait_for(sub { $beat->() > $joined + 1000 }, 'a heartbeat of a after the join', 10);
my $first = $beat->();
wait_for(sub { $beat->() > $first }, 'the next heartbeat of a (the first one answered)', 10);
$qa->(qq{SELECT count(distkit_instance_inc('g:' || k, 1, 'lax')) FROM generate_series(1, $nk) k});
$qa->(q{SELECT distkit_flush('2 min')});
is($qa->(q{SELECT total || ' ' || this_instance FROM distkit_instance_get('g:1', 'lax')}), '14 2',
	'a\'s flush (DKSTALE, resent with the live set) answered g:1 = 1 + 2 + 10 + 1');
is($totals->($qa), "4x" . ($nk - 1) . " 14x1", 'a: every counter exact after the live-set change');
$qb->(qq{SELECT count(distkit_instance_inc('g:' || k, 1, 'lax')) FROM generate_series(1, $nk) k});
resume_worker($worker);
$qb->(q{SELECT distkit_flush('2 min')});
is($qb->(q{SELECT total || ' ' || this_instance FROM distkit_instance_get('g:1', 'lax')}), '15 3',
	'b\'s flush (DKNEWER, refreshed, resent) answered g:1 = 15');
is($totals->($qb), "5x" . ($nk - 1) . " 15x1", 'b: every counter exact');
is($totals->($qa), "5x" . ($nk - 1) . " 15x1", 'a: the same');
is($qb->('SELECT dropped_deltas FROM distkit_stats') . ' ' . $qa->('SELECT dropped_deltas FROM distkit_stats'), '0 0',
	'no delta dropped');

# 15. a counter of the part that Redis cannot read as one (a key of another
#     type) is refused alone: the other counters of its part apply
#     (a known to a: a lax increment of a key it never read reads it first)
$qa->(q{SELECT distkit_instance_inc('g:bad', 1, 'lax')});
$qa->(q{SELECT distkit_flush('2 min')});
redis_cli('DEL', 'distkit:i:{g:bad}');
redis_cli('SET', 'distkit:i:{g:bad}', 'not a hash');
my $a_log = -s $a->logfile;
ok($worker = stop_worker_idle($a), 'a\'s worker stopped while idle');
$qa->(q{SELECT count(distkit_instance_inc(k, 1, 'lax')) FROM unnest(ARRAY['g:2', 'g:bad', 'g:3']) k});
resume_worker($worker);
$qa->(q{SELECT distkit_flush('2 min')});
is($qa->(q{SELECT string_agg(total::text, ' ') FROM unnest(ARRAY['g:2', 'g:3']) k, distkit_instance_get(k)}), '6 6',
	'the other counters of the part applied');
is($qa->('SELECT dropped_deltas FROM distkit_stats'), '1', 'one delta dropped');
like(slurp_file($a->logfile, $a_log), qr/WARNING:  distkit worker dropped a delta of 1 for instance-aware counter "g:bad": WRONGTYPE/,
	'... with a WARNING naming the key');
is(redis_cli('GET', 'distkit:i:{g:bad}'), 'not a hash', 'the key of another type was left alone');

done_testing();

# Leader election across two PostgreSQL servers sharing one Redis: one
# leader at a time; the worker keeps renewing it; a crashed leader
# (pg_ctl stop -m immediate) is replaced after the ttl, a cleanly stopped one
# at once; with Redis unreachable the leader stops believing it leads
# within the ttl, from shared memory, without waiting for Redis.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_redis('leader');
my $pa = new_node('a', "redis://127.0.0.1:$port/0", "log_statement = none\n");
my $pb = new_node('b', "redis://127.0.0.1:$port/0", "log_statement = none\n");
my $q = sub { my ($node, $sql) = @_; return $node->safe_psql('postgres', $sql) };
my $id_a = $q->($pa, 'SELECT instance_id FROM distkit_stats');
my $id_b = $q->($pb, 'SELECT instance_id FROM distkit_stats');

# 1. one leader
is($q->($pa, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 't', 'server a becomes the leader');
is($q->($pb, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 'f', 'server b does not');
is($q->($pa, q{SELECT distkit_is_leader('nightly')}), 't', 'a: is_leader');
is($q->($pb, q{SELECT distkit_is_leader('nightly')}), 'f', 'b: not is_leader');
is($q->($pb, q{SELECT holder FROM distkit_leader_holder('nightly')}), $id_a, 'b sees a (its instance id) as the leader');
is($q->($pb, 'SELECT count(*) FROM distkit_leaders'), '0', "b's distkit_leaders is empty");

# 2. the worker renews it: 3 s later (1.5 ttl) a still leads
sleep 3;
is($q->($pa, q{SELECT distkit_is_leader('nightly')}), 't', 'a still leads after 1.5 ttl (renewed by the worker)');
is($q->($pa, q{SELECT is_leader AND clock_timestamp() - last_renewed < '1 s' FROM distkit_leaders}), 't',
	'renewed within the last ttl / 2');
is($q->($pb, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 'f', 'b still cannot take over');

# 3. the leader crashes: b takes over after the ttl, not before
$pa->stop('immediate');
my $t0 = time();
is($q->($pb, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 'f', 'just after the crash, b cannot take over yet');
my $took = 0;
while (time() - $t0 < 10)
{
	if ($q->($pb, q{SELECT distkit_leader_acquire('nightly', '2 s')}) eq 't') { $took = time() - $t0; last; }
	usleep(50_000);
}
ok($took > 0.5 && $took < 3, sprintf('b took over %.2f s after the crash (ttl 2 s)', $took));
is($q->($pb, q{SELECT distkit_is_leader('nightly')}), 't', 'b: is_leader');
is($q->($pb, q{SELECT term FROM distkit_leaders WHERE name = 'nightly'}), '2', 'a new term');

# a restarts: it does not lead
$pa->start;
is($q->($pa, q{SELECT distkit_is_leader('nightly')}), 'f', 'the restarted a does not believe it leads');
is($q->($pa, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 'f', 'nor can it take over from b');
is($q->($pa, q{SELECT holder FROM distkit_leader_holder('nightly')}), $id_b, 'b leads');

# 4. a clean stop hands over at once
$pb->stop('fast');
$t0 = time();
is($q->($pa, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 't', 'after b stopped cleanly, a takes over at once');
ok(time() - $t0 < 1, sprintf('(%.2f s after the stop)', time() - $t0));
like(slurp_file($pb->logfile), qr/distkit released 1 leaderships at shutdown/, 'b logged the release');

# 5. Redis unreachable (SIGSTOP): a stops believing it leads within the
# ttl, before the leadership can expire in Redis; is_leader stays a
# shared-memory read, fast while Redis hangs
$id_a = $q->($pa, 'SELECT instance_id FROM distkit_stats');
sleep 1;	# a renewal or two
redis_ctl('pause');
my $paused = time();
my ($false_after, $slowest) = (0, 0);
while (time() - $paused < 5)
{
	my $c0 = time();
	my $v = $q->($pa, q{SELECT distkit_is_leader('nightly')});
	my $call = time() - $c0;
	$slowest = $call if $call > $slowest;
	if ($v eq 'f') { $false_after = time() - $paused; last; }
	usleep(20_000);
}
ok($false_after > 0 && $false_after <= 2,
	sprintf('with Redis hanging, a stopped believing it leads %.2f s after the pause (ttl 2 s)', $false_after));
ok($slowest < 0.5, sprintf('distkit_is_leader never waited for Redis (slowest call %.3f s, psql included)', $slowest));
is($q->($pa, q{SELECT is_leader FROM distkit_leaders WHERE name = 'nightly'}), 'f', 'distkit_leaders shows it');
sleep 1;
redis_ctl('resume');
# the leadership expired in Redis meanwhile: the next renewal finds it gone
wait_for(sub { $q->($pa, 'SELECT count(*) FROM distkit_leaders') eq '0' }, 'a to drop the lost leadership');
like(slurp_file($pa->logfile), qr/this server no longer leads "nightly"/, 'a logged the loss');
is($q->($pa, q{SELECT distkit_is_leader('nightly')}), 'f', 'a does not lead');
is($q->($pa, q{SELECT distkit_leader_acquire('nightly', '2 s')}), 't', 'a can acquire it anew');
is($q->($pa, q{SELECT term FROM distkit_leaders}), '4', 'with the next term');

$pa->stop;
done_testing();

# Instance-aware counters on two PostgreSQL servers sharing one Redis:
# slices, totals, crashes, clean stops, paused workers and the epoch rule.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_redis('instance');
my $conf = "distkit.heartbeat_interval = '200ms'\ndistkit.dead_instance_threshold = '3s'\n";
my $a = new_node('a', "redis://127.0.0.1:$port/0", $conf);
my $b = new_node('b', "redis://127.0.0.1:$port/0", $conf);
my $qa = sub { $a->safe_psql('postgres', $_[0]) };
my $qb = sub { $b->safe_psql('postgres', $_[0]) };
my $get = sub { my ($q, $k) = @_; $q->("SELECT total || ' ' || this_instance FROM distkit_instance_get('$k')") };

wait_for(sub { $qa->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances') eq '2' },
	'both instances to be registered and alive');
# Each server's live list (what instance-aware totals add up) is refreshed by
# its worker at its next heartbeat, which may come after the registry shows
# the other server: wait until each server counts the other's slice.
$qa->(q{SELECT distkit_instance_inc('probe:a', 1)});
$qb->(q{SELECT distkit_instance_inc('probe:b', 1)});
wait_for(sub { $qb->(q{SELECT total FROM distkit_instance_get('probe:a')}) eq '1' },
	'b to count a');
wait_for(sub { $qa->(q{SELECT total FROM distkit_instance_get('probe:b')}) eq '1' },
	'a to count b');

# 1. both servers count into one counter: one total, one slice each
$qa->(q{SELECT count((distkit_instance_inc('jobs', 1)).total) FROM generate_series(1, 30)});
$qb->(q{SELECT count((distkit_instance_inc('jobs', 1)).total) FROM generate_series(1, 12)});
is($get->($qa, 'jobs'), '42 30', 'server a: total 42, its slice 30');
is($get->($qb, 'jobs'), '42 12', 'server b: total 42, its slice 12');

# 2. lax and strict mixed on both servers: exact totals
$qa->(q{SELECT count((distkit_instance_inc('mixed', 1, 'lax')).total) FROM generate_series(1, 1000)});
$qb->(q{SELECT count((distkit_instance_inc('mixed', 2, 'strict')).total) FROM generate_series(1, 100)});
$qb->(q{SELECT count((distkit_instance_dec('mixed', 1, 'lax')).total) FROM generate_series(1, 50)});
$qa->('SELECT distkit_flush()');
$qb->('SELECT distkit_flush()');
is($get->($qa, 'mixed'), '1150 1000', 'lax + strict from two servers: exact total (a)');
is($get->($qb, 'mixed'), '1150 150', 'lax + strict from two servers: exact total (b)');

# 3. epoch rule: B adds 5, A sets 100, B dies -> 100, not 95
$qb->(q{SELECT distkit_instance_inc('epoch', 5)});
$qa->(q{SELECT distkit_instance_set('epoch', 100)});
is($get->($qa, 'epoch'), '100 100', 'after set the total is 100 (b\'s slice is stale)');
my $b_id = $qb->('SELECT instance_id FROM distkit_stats');
my $t0 = time();	# before the stop: b's last heartbeat is at most 200 ms older than this
$b->stop('immediate');
wait_for(sub { $get->($qa, 'jobs') eq '30 30' }, "b's slice to stop counting after the threshold", 15);
my $waited = time() - $t0;
ok($waited >= 2.5, sprintf('a crashed server keeps counting until the threshold (%.1f s)', $waited));
is($get->($qa, 'epoch'), '100 100', 'b died: the total stays 100 (only current-epoch slices count)');
is($get->($qa, 'mixed'), '1000 1000', 'b died: its slice of "mixed" no longer counts');
is($qa->(q{SELECT alive FROM distkit_instances WHERE instance_id = '} . $b_id . q{'}), 'f',
	'distkit_instances shows b as dead');

# 4. a restarted server is a new instance
$b->start;
wait_for(sub { $qb->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq '1' },
	'b to restart');
isnt($qb->('SELECT instance_id FROM distkit_stats'), $b_id, 'the restarted server is a new instance');
wait_for(sub { $qa->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances') eq '2' }, 'two live instances');
is($get->($qb, 'jobs'), '30 0', 'the new instance starts with an empty slice');
$qb->(q{SELECT distkit_instance_inc('jobs', 7)});
# distkit_instances reads the registry; a's totals use the live list its
# worker refreshes every heartbeat (200 ms): b's new id joins it by then
my $t1 = time();
wait_for(sub { $get->($qa, 'jobs') eq '37 30' }, "a's live list to include the restarted b", 5);
is($get->($qa, 'jobs'), '37 30', sprintf('and counts from there (seen by a after %.1f s)', time() - $t1));

# 5. a clean stop: the slice disappears without waiting for the threshold
$b->stop('fast');
$t0 = time();
wait_for(sub { $get->($qa, 'jobs') eq '30 30' }, "the cleanly stopped server's slice to go", 10);
$waited = time() - $t0;
ok($waited < 2.0, sprintf('clean stop: the slice went in %.1f s (threshold 3 s)', $waited));
$b->start;
wait_for(sub { $qa->('SELECT count(*) FILTER (WHERE alive) FROM distkit_instances') eq '2' }, 'b back');

# 6. a paused worker (SIGSTOP) past the threshold: its slice stops counting,
#    and comes back exactly once when the worker resumes
$qb->(q{SELECT distkit_instance_inc('paused', 9)});
$qa->(q{SELECT distkit_instance_inc('paused', 1)});
wait_for(sub { $get->($qa, 'paused') eq '10 1' }, "a's live list to include the restarted b", 10);
is($get->($qa, 'paused'), '10 1', 'before the pause: 10');
my $wpid = $qb->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
kill 'STOP', $wpid;
wait_for(sub { $get->($qa, 'paused') eq '1 1' }, "the paused server's slice to stop counting", 15);
pass('paused past the threshold: its slice no longer counts');
kill 'CONT', $wpid;
wait_for(sub { $get->($qa, 'paused') eq '10 1' }, 'the slice to count again after resume', 10);
is($get->($qa, 'paused'), '10 1', 'resumed: its slice counts again, exactly once');
is($get->($qb, 'paused'), '10 9', 'and the resumed server agrees');

# 7. *_here functions touch only this instance
$qa->(q{SELECT distkit_instance_set_here('here', 3)});
$qb->(q{SELECT distkit_instance_set_here('here', 4)});
is($get->($qb, 'here'), '7 4', 'set_here on both: 7');
$qa->(q{SELECT distkit_instance_del_here('here')});
is($get->($qb, 'here'), '4 4', 'del_here on a leaves b\'s slice');
$qb->(q{SELECT distkit_instance_clear_here()});
is($get->($qa, 'jobs'), '30 30', 'clear_here on b leaves a\'s slices');
is($get->($qa, 'here'), '0 0', 'and removes b\'s');

done_testing();

# Lax counters under concurrency, restarts and a killed flusher: the totals
# in Redis equal exactly the increments PostgreSQL acknowledged.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('flush');
my $node = new_node('flush', "redis://127.0.0.1:$port/0", "restart_after_crash = on\n");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# 1. pgbench, 8 clients, over 100 keys: sum in Redis == transactions
my $script = "$PostgreSQL::Test::Utils::tmp_check/lax100.sql";
open my $fh, '>', $script or die;
print $fh "\\set k random(1, 100)\nSELECT distkit_inc('bench:' || :k, 1, 'lax');\n";
close $fh;
# a fixed number of transactions per client (-t), so the expected total does
# not depend on how pgbench counts the transactions cut by a time limit
my ($out, $err) = run_command([ 'pgbench', '-n', '-M', 'prepared', '-c', '8', '-j', '8', '-t', '25000',
	'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ]);
my ($txns) = $out =~ /number of transactions actually processed: (\d+)/;
is($txns, 200000, "pgbench ran 8 x 25000 transactions");
is($err =~ /error|abort/i ? $err : '', '', 'no pgbench client failed');
$pg->('SELECT distkit_flush()');
my $sum = 0;
$sum += redis_int("distkit:c:{bench:$_}") for 1 .. 100;
is($sum, $txns, 'Redis holds exactly the number of increments pgbench made');
is($pg->(q{SELECT sum(value) FROM distkit_get_many(ARRAY(SELECT 'bench:' || g FROM generate_series(1, 100) g), 'lax')}),
	$txns, "this server's lax view agrees");
my ($calls) = redis_cli('INFO', 'commandstats') =~ /cmdstat_evalsha:calls=(\d+)/;
ok($calls < $txns / 5, "flushes batch increments ($txns increments, $calls EVALSHA calls)");
note("increments per Redis command: " . sprintf('%.1f', $txns / $calls));

# 2. a clean restart right after a burst loses nothing (final flush)
$pg->(q{SELECT count(distkit_inc('burst:' || (g % 10), 1, 'lax')) FROM generate_series(1, 20000) g});
$node->restart;	# fast mode
my $burst = 0;
$burst += redis_int("distkit:c:{burst:$_}") for 0 .. 9;
is($burst, 20000, 'fast restart: all 20000 buffered increments reached Redis');
wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq '1' },
	'the flusher after restart');
$pg->(q{SELECT count(distkit_inc('burst:' || (g % 10), 1, 'lax')) FROM generate_series(1, 5000) g});
$node->stop('smart');
$node->start;
$burst = 0;
$burst += redis_int("distkit:c:{burst:$_}") for 0 .. 9;
is($burst, 25000, 'smart stop: the next 5000 reached Redis too');

# 3. the flusher terminated (pg_terminate_backend) comes back; nothing lost
wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq '1' },
	'the flusher');
my $pid1 = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
my $acked = 0;
for my $round (1 .. 5)
{
	$pg->(q{SELECT count(distkit_inc('term', 1, 'lax')) FROM generate_series(1, 1000)});
	$acked += 1000;
	$pg->(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
	wait_for(sub {
		my $p = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
		$p ne '' && $p ne $pid1;
	}, 'a new flusher process');
	$pid1 = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
}
$pg->('SELECT distkit_flush()');
is(redis_int('distkit:c:{term}'), $acked, 'terminated 5 times during load: every increment arrived once');

# 4. SIGKILL of the flusher: crash restart of the server; flushing resumes
$pg->('SELECT distkit_flush()');
my $before_id = $pg->('SELECT instance_id FROM distkit_stats');
my $fpid = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
kill 'KILL', $fpid;
wait_for(sub {
	my ($ok, $res) = (0, '');
	eval { $res = $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}); $ok = 1; };
	$ok && $res eq '1';
}, 'the server and its flusher after a crash restart');
isnt($pg->('SELECT instance_id FROM distkit_stats'), $before_id, 'a crash restart starts a new instance');
$pg->(q{SELECT count(distkit_inc('after-crash', 1, 'lax')) FROM generate_series(1, 777)});
$pg->('SELECT distkit_flush()');
is(redis_int('distkit:c:{after-crash}'), 777, 'after the crash restart lax increments are flushed again');
is(redis_int('distkit:c:{term}'), $acked, 'nothing flushed before the crash was lost or doubled');

# 5. an idle server's flusher sleeps: it wakes for its heartbeat
# (distkit.heartbeat_interval, 1 s), not at every flush_interval (20 ms),
# which would be 150 wake-ups in 3 seconds
$pg->('SELECT distkit_flush()');
sleep 1;
my $wpid = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
my $usage = sub {
	open my $s, '<', "/proc/$wpid/stat" or return (-1, -1);
	my @f = split ' ', <$s>;
	close $s;
	open my $st, '<', "/proc/$wpid/status" or return (-1, -1);
	my ($sw) = map { /^voluntary_ctxt_switches:\s+(\d+)/ ? $1 : () } <$st>;
	close $st;
	return ($f[13] + $f[14], $sw);
};
my ($t0, $s0) = $usage->();
sleep 3;
my ($t1, $s1) = $usage->();
note("idle worker in 3 s: " . ($t1 - $t0) . " CPU ticks, " . ($s1 - $s0) . " wake-ups");
ok($s0 >= 0 && $s1 - $s0 <= 30, 'the idle flusher woke at most 30 times in 3 seconds (' . ($s1 - $s0) . ')');
ok($t1 - $t0 <= 5, 'the idle flusher used at most 5 CPU ticks in 3 seconds (' . ($t1 - $t0) . ')');

done_testing();

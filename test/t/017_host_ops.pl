# distkit never holds up the server it lives in.  DROP DATABASE, ALTER
# DATABASE ... SET TABLESPACE and DROP TABLESPACE wait until every process
# has absorbed a procsignal barrier; the distkit worker (and a backend
# blocked on Redis) used to ignore barriers, so these commands hung forever
# on the primary and, replayed, stopped a streaming standby (failover
# impossible).  Each is timed here:
#   1. idle;
#   2. while 8 clients run strict and lax increments (then: totals exact);
#   3. while Redis is paused (SIGSTOP): the worker waits in a flush and a
#      backend in a strict call, with a 300 s command timeout;
#   4. while a session waits in distkit_lease_acquire;
#   5. on a pg_basebackup -R standby with distkit preloaded: the primary's
#      commands replay promptly, also with Redis paused, and the standby
#      can be promoted.
# Also: a cancel of the worker abandons its Redis wait without killing it,
# and pg_log_backend_memory_contexts works on it.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_redis('hostops');
my $url = "redis://127.0.0.1:$port/0";

# every command under test finishes within this (about 0.1 s seen here, on
# an idle machine); with the bug it waited for the 300 s command timeout or
# the 30 s statement_timeout, so a loaded machine's slowness is no failure
my $BOUND = 10;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'distkit'
distkit.redis_url = '$url'
distkit.command_timeout = '300s'
distkit.heartbeat_interval = '200ms'
allow_in_place_tablespaces = on
log_min_messages = info
# allows_streaming sets 10: 8 pgbench clients, the test's psql and a backend
# of the previous psql still exiting can reach it
max_connections = 40
});
$primary->start;
my $pg = sub { $primary->safe_psql('postgres', $_[0]) };
$pg->('CREATE EXTENSION distkit');
my $worker_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'};
wait_for(sub { $pg->($worker_sql) ne '' }, 'the worker to start');

# Run the three commands on $node, each timed; returns the slowest time.
my $round = 0;
sub host_ops
{
	my ($node, $what) = @_;
	$round++;
	my $slowest = 0;
	my @steps = (
		[ "CREATE DATABASE dk_db$round", 0 ],
		[ "DROP DATABASE dk_db$round", 1 ],
		[ "CREATE TABLESPACE dk_ts$round LOCATION ''", 0 ],
		[ "CREATE DATABASE dk_mv$round", 0 ],
		[ "ALTER DATABASE dk_mv$round SET TABLESPACE dk_ts$round", 1 ],
		[ "DROP DATABASE dk_mv$round", 1 ],
		[ "CREATE TABLE dk_t$round (a int) TABLESPACE dk_ts$round", 0 ],
		[ "DROP TABLE dk_t$round", 0 ],
		[ "DROP TABLESPACE dk_ts$round", 1 ]);
	for my $s (@steps)
	{
		my ($sql, $timed) = @$s;
		my $t0 = time();
		my ($rc, $out, $err) = $node->psql('postgres', "SET statement_timeout = '30s'; $sql");
		my $secs = time() - $t0;
		is($rc, 0, "$what: $sql") or diag($err);
		if ($timed)
		{
			ok($secs < $BOUND, sprintf("%s: %s took %.2f s", $what, $sql, $secs));
			$slowest = $secs if $secs > $slowest;
		}
	}
	is($node->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname LIKE 'dk\\_%$round'"),
		'0', "$what: no database left behind (none marked invalid)");
	note(sprintf("%s: slowest barrier command %.3f s", $what, $slowest));
	return $slowest;
}

# 1. idle
host_ops($primary, 'idle');

# 2. under load: 8 clients, strict and lax increments; every one counted
{
	my $script = "$PostgreSQL::Test::Utils::tmp_check/hostops_load.sql";
	open my $fh, '>', $script or die;
	print $fh "SELECT distkit_inc('ops:lax', 1, 'lax');\nSELECT distkit_inc('ops:strict', 1, 'strict');\n";
	close $fh;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'pgbench', '-n', '-c', '8', '-j', '8', '-T', '6', '-f', $script,
		'-h', $primary->host, '-p', $primary->port, 'postgres' ], '>', \$out, '2>', \$err);
	usleep(500_000);
	host_ops($primary, 'under load');
	$h->finish;
	my ($txns) = $out =~ /number of transactions actually processed: (\d+)/;
	ok($txns && $txns > 100, 'load ran (' . ($txns // 0) . ' transactions)') or diag($err);
	$pg->('SELECT distkit_flush()');
	is(redis_int('distkit:c:{ops:lax}'), $txns, 'under load: every lax increment is in Redis');
	is(redis_int('distkit:c:{ops:strict}'), $txns, 'under load: every strict increment is in Redis');
}

# 3. Redis paused: the worker is in a Redis wait (a flush of buffered
# increments, 300 s command timeout: the section must fit in it on a loaded
# machine) and so is a backend (a strict call in a new session, which may
# still be in its connection handshake: its connect timeout is 300 s too)
{
	my $worker = $pg->($worker_sql);
	redis_ctl('pause');
	$pg->(q{SELECT distkit_inc('ops:paused', 7, 'lax')});
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $primary->connstr('postgres'), '-c',
		q{SET distkit.connect_timeout = '300s'; SELECT distkit_inc('ops:blocked', 3)} ], '>', \$out, '2>', \$err);
	wait_for(sub {
		$pg->(q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'Extension'
			AND query LIKE '%ops:blocked%'}) eq '1' }, 'the backend to wait on Redis');
	host_ops($primary, 'Redis paused');
	is($h->pumpable ? 'running' : 'done', 'running', 'Redis paused: the strict call is still waiting');

	# a cancel of the worker abandons its Redis wait; the worker lives on
	is($pg->("SELECT pg_cancel_backend($worker)"), 't', 'cancel sent to the worker');
	wait_for(sub { $primary->log_contains('Redis request canceled by a cancel request to the distkit worker') },
		'the worker to log the abandoned request');
	# memory contexts are logged at the worker's next interrupt check
	is($pg->("SELECT pg_log_backend_memory_contexts($worker)"), 't', 'memory context logging requested');
	wait_for(sub { $primary->log_contains("logging memory contexts of PID $worker") },
		'the worker to log its memory contexts');
	redis_ctl('resume');
	$h->finish;
	is($out, "3\n", 'Redis resumed: the waiting strict call completed once')
		or diag("psql stderr: $err");
	$pg->('SELECT distkit_flush()');
	is(redis_int('distkit:c:{ops:paused}'), 7, 'the increment buffered while paused reached Redis once');
	is($pg->($worker_sql), $worker, 'the worker survived the cancel (same pid)');
	ok(!$primary->log_contains('canceling statement due to user request'),
		'the worker never died of a cancel');
}

# 4. a session waits in distkit_lease_acquire while another holds the lease
{
	# the holder stays connected (a session's leases are released when it ends)
	my ($hout, $herr) = ('', '');
	my $holder = IPC::Run::start([ 'psql', '-XAt', '-d', $primary->connstr('postgres'), '-c',
		q{SELECT distkit_lease_acquire('ops:lease', '60 s') IS NOT NULL, pg_sleep(60)} ],
		'>', \$hout, '2>', \$herr);
	wait_for(sub {
		$pg->(q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'
			AND query LIKE '%ops:lease%'}) eq '1' }, 'the lease holder to hold the lease');
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-XAt', '-d', $primary->connstr('postgres'), '-c',
		q{SELECT distkit_lease_acquire('ops:lease', '60 s', '20 s') IS NULL} ], '>', \$out, '2>', \$err);
	wait_for(sub {
		$pg->(q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ops:lease%20 s%'
			AND pid <> pg_backend_pid()}) eq '1' }, 'the lease wait to start');
	usleep(200_000);
	host_ops($primary, 'lease wait');
	ok($h->pumpable, 'the lease waiter is still waiting');
	$h->kill_kill;
	$h->finish;
	$holder->kill_kill;
	$holder->finish;
}

# 5. a streaming standby with distkit preloaded replays the barrier commands
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
wait_for(sub { $standby->safe_psql('postgres', $worker_sql) ne '' }, 'the standby worker to start');
# counters work on a standby (they write to Redis, not to PostgreSQL); its
# worker talks to Redis too (flushes, heartbeats)
$standby->safe_psql('postgres', q{SELECT distkit_inc('ops:standby', 1, 'lax')});
is($standby->safe_psql('postgres', q{SELECT distkit_inc('ops:standby-strict', 4)}), '4',
	'a strict increment on the standby (read-only transaction) is applied in Redis');

sub replay_ops
{
	my ($what) = @_;
	$round++;
	my @sql = ("CREATE DATABASE dk_db$round", "CREATE TABLESPACE dk_ts$round LOCATION ''",
		"CREATE DATABASE dk_mv$round", "ALTER DATABASE dk_mv$round SET TABLESPACE dk_ts$round",
		"DROP DATABASE dk_mv$round", "DROP DATABASE dk_db$round", "DROP TABLESPACE dk_ts$round");
	for my $sql (@sql)
	{
		my ($rc, $out, $err) = $primary->psql('postgres', "SET statement_timeout = '30s'; $sql");
		is($rc, 0, "$what: $sql on the primary") or diag($err);
	}
	my $lsn = $pg->('SELECT pg_current_wal_lsn()');
	my $t0 = time();
	my $caught_up = 0;
	while (time() - $t0 < 30)
	{
		$caught_up = $standby->safe_psql('postgres',
			"SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn") eq 't';
		last if $caught_up;
		usleep(20_000);
	}
	my $secs = time() - $t0;
	ok($caught_up && $secs < $BOUND, sprintf("%s: the standby replayed them in %.2f s", $what, $secs));
	is($standby->safe_psql('postgres', "SELECT count(*) FROM pg_database WHERE datname LIKE 'dk\\_%$round'"),
		'0', "$what: the standby dropped the databases too");
}

replay_ops('standby');
redis_ctl('pause');
# both workers now wait on Redis (their heartbeats, 300 s timeout)
for my $n ($primary, $standby)
{
	wait_for(sub { $n->safe_psql('postgres', q{SELECT state || ' ' || coalesce(wait_event, '')
		FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq 'active Extension' },
		$n->name . "'s worker to wait on the paused Redis", 10);
}
replay_ops('standby, Redis paused');
redis_ctl('resume');

# promotion (failover) works and the promoted server counts
my $t0 = time();
$standby->promote;
ok(time() - $t0 < 30, sprintf('the standby was promoted in %.2f s', time() - $t0));
$standby->safe_psql('postgres', 'SELECT distkit_flush()');
is($standby->safe_psql('postgres', q{SELECT distkit_inc('ops:promoted', 2)}), '2',
	'the promoted server counts in Redis');
is(redis_int('distkit:c:{ops:standby}'), 1, "the standby's lax increment reached Redis once");

$standby->stop;
$primary->stop;
done_testing();

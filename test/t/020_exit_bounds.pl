# Work done when a session ends or the server stops is bounded by
# distkit.exit_timeout (a superuser setting, default 1 s), never by the
# distkit.command_timeout / connect_timeout a user may raise to an hour:
#   1. Redis healthy: a terminated session's lease is released at once and
#      a fast stop flushes every buffered lax increment and releases the
#      leases of the sessions it ends and the server's leadership (exact
#      values in Redis);
#   2. Redis frozen (SIGSTOP): pg_terminate_backend of a session that holds
#      a lease with command_timeout = 30s returns and the backend is gone
#      within exit_timeout + a margin (timed);
#   3. Redis frozen: pg_ctl -m fast stop with lax increments buffered, a
#      session holding a lease with 30 s timeouts and the worker itself set
#      to 30 s timeouts finishes within exit_timeout + a margin (timed).
# Before distkit.exit_timeout, 2 took 30 s and 3 about 30 s.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_redis('exitbounds');
my $url = "redis://127.0.0.1:$port/0";

# exit_timeout is 1 s (the default); the margin covers process start-up
# and exit, the checkpoint of a stop, pg_ctl's polling and a loaded
# machine's noise (a fresh-root run measured 0.10, 1.03 and 1.11 s);
# without the bounds under test the same steps take the 30 s timeouts
my $EXIT = 1.0;
my $MARGIN = 4.0;

my $node = new_node('exitbounds', $url, qq{
distkit.flush_interval = '60s'
distkit.heartbeat_interval = '1h'
});
my $pg = sub { $node->safe_psql('postgres', $_[0]) };
is($pg->('SHOW distkit.exit_timeout'), '1s', 'distkit.exit_timeout defaults to 1 s');

# only a superuser sets it, in postgresql.conf or ALTER SYSTEM
$pg->('CREATE ROLE dk_user LOGIN');
my ($rc, $out, $err) = $node->psql('postgres', q{SET distkit.exit_timeout = '1h'},
	extra_params => [ '-U', 'dk_user' ]);
like($err, qr/parameter "distkit.exit_timeout" cannot be changed now/,
	'a session cannot SET distkit.exit_timeout');
($rc, $out, $err) = $node->psql('postgres', q{ALTER ROLE dk_user SET distkit.exit_timeout = '1h'});
like($err, qr/parameter "distkit.exit_timeout" cannot be changed now/,
	'nor can ALTER ROLE ... SET');

# A background session that sets long timeouts and takes a lease; returns (session, pid).
sub lease_session
{
	my ($name) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe(q{SET distkit.command_timeout = '30s'});
	$s->query_safe(q{SET distkit.connect_timeout = '30s'});
	my $token = $s->query_safe(qq{SELECT distkit_lease_acquire('$name', '1 hour')});
	chomp $token;
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	chomp $pid;
	return ($s, $pid, $token);
}

# pg_terminate_backend(pid) and wait until the backend is gone; returns seconds.
sub terminate_timed
{
	my ($pid) = @_;
	my $t0 = time();
	$pg->("SELECT pg_terminate_backend($pid)");
	wait_for(sub { $pg->("SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '0' },
		"backend $pid to exit", 60);
	return time() - $t0;
}

# 1a. healthy: the terminated session's lease is released at exit
{
	my ($s, $pid, $token) = lease_session('exit_a');
	is(redis_cli('HGET', 'distkit:l:{exit_a}', 'token'), $token, 'healthy: the session holds lease exit_a');
	my $secs = terminate_timed($pid);
	is(redis_cli('EXISTS', 'distkit:l:{exit_a}'), '0',
		sprintf('healthy: pg_terminate_backend released the lease at exit (%.2f s)', $secs));
	$s->quit;
}

# 1b. healthy fast stop: buffered lax increments reach Redis, the leases of
#     ended sessions and the server's leadership are released
{
	$pg->(q{SELECT distkit_inc('exit_lax', 1, 'lax')});
	wait_for(sub { redis_int('distkit:c:{exit_lax}') == 1 }, 'the first lax increment to be flushed');
	# the worker now sleeps flush_interval (60 s): these stay buffered
	$pg->(q{SELECT distkit_inc('exit_lax', 10, 'lax'); SELECT distkit_inc('exit_lax', 100, 'lax')});
	is($pg->('SELECT pending_keys || \'/\' || pending_delta FROM distkit_stats'), '1/110',
		'healthy: 110 lax increments buffered before the stop');
	is($pg->(q{SELECT distkit_leader_acquire('exit_leader', '1 hour')}), 't', 'healthy: this server leads exit_leader');
	my ($s, $pid, $token) = lease_session('exit_b');
	my $t0 = time();
	$node->stop('fast');
	my $secs = time() - $t0;
	ok($secs < $EXIT + $MARGIN, sprintf('healthy: fast stop took %.2f s', $secs));
	is(redis_int('distkit:c:{exit_lax}'), 111, 'healthy: the final flush sent every buffered increment (111)');
	is(redis_cli('EXISTS', 'distkit:l:{exit_b}'), '0', 'healthy: the stop released the session lease exit_b');
	is(redis_cli('EXISTS', 'distkit:ld:{exit_leader}'), '0', 'healthy: the stop released the leadership');
	$s->{run}->kill_kill;
	$node->start;
	wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) eq '1' },
		'the worker to start again');
}

# 2. Redis frozen: a session with a 30 s command timeout holding a lease is
#    terminated within exit_timeout + margin
{
	my ($s, $pid, $token) = lease_session('exit_c');
	redis_ctl('pause');
	my $secs = terminate_timed($pid);
	ok($secs < $EXIT + $MARGIN,
		sprintf('frozen: pg_terminate_backend with command_timeout = 30s: gone in %.2f s (bound %.1f s)',
			$secs, $EXIT + $MARGIN));
	ok($secs >= $EXIT - 0.05, sprintf('frozen: ... after trying to release the lease for exit_timeout (%.2f s)', $secs));
	$s->quit;
	redis_ctl('resume');
	# the release was written before the bound ran out: Redis runs it when it wakes
	wait_for(sub { redis_cli('EXISTS', 'distkit:l:{exit_c}') eq '0' },
		'the release written before the bound to apply when Redis wakes', 10);
}

# 3. Redis frozen: a fast stop with lax increments buffered, a session
#    holding a lease with 30 s timeouts and the worker at 30 s timeouts
{
	$node->append_conf('postgresql.conf', qq{
distkit.command_timeout = '30s'
distkit.connect_timeout = '30s'
});
	$node->reload;
	wait_for(sub { $node->safe_psql('postgres', 'SHOW distkit.command_timeout') eq '30s' }, 'the reload');
	my ($s, $pid, $token) = lease_session('exit_d');
	redis_ctl('pause');
	$pg->(q{SELECT distkit_inc('exit_frozen', 5, 'lax')});
	my $log_offset = -s $node->logfile;
	my $t0 = time();
	$node->stop('fast');
	my $secs = time() - $t0;
	ok($secs < $EXIT + $MARGIN,
		sprintf('frozen: fast stop with 30 s timeouts everywhere took %.2f s (bound %.1f s)', $secs, $EXIT + $MARGIN));
	like(slurp_file($node->logfile, $log_offset),
		qr/distkit worker stopped with lax increments not yet in Redis.*\n.*DETAIL:  Redis could not be reached within distkit.exit_timeout \(1000 ms\)/,
		'frozen: the worker says what it could not flush and why');
	$s->{run}->kill_kill;
	redis_ctl('resume');
}

# the server starts again and works
$node->start;
is($node->safe_psql('postgres', q{SELECT distkit_inc('exit_after')}), '1', 'after the stops distkit works');
$node->stop('fast');
done_testing();

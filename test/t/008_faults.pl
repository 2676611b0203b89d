# Faults under mixed load (issue 8): four psql clients run strict and lax
# counter calls, conditional increments and rate-limiter calls on shared
# keys while Redis is killed, paused, cut off at random moments, slowed
# down or filled up, while a backend is killed (crash restart) and while
# the flusher worker is killed.  Every call is accounted for (see
# DistkitLoad.pm): what Redis holds at the end lies between what was
# acknowledged and that plus the calls reported as of unknown outcome;
# nothing is lost (except within the documented bound of a crash) and
# nothing is counted twice.  DISTKIT_SOAK=N runs every load N times longer.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use DistkitLoad;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $soak = $ENV{DISTKIT_SOAK} || 1;
# two clients run every operation; two leave out inc_if, which waits for
# buffered increments to reach Redis (up to 2 command timeouts during an
# outage), so that they keep calling Redis while it fails
my @ALL = qw(strict_inc strict_dec lax_inc lax_dec mixed_strict mixed_lax mixed_inc_if rate_allow);
my @NO_WAIT = grep { $_ ne 'mixed_inc_if' } @ALL;
my @MIX = (\@ALL, \@ALL, \@NO_WAIT, \@NO_WAIT);

# timeouts of the fault node, and the bound on one call they imply:
# waiting for buffered increments (2 command + flush interval), then a
# connection (connect) and a script with its NOSCRIPT reload (2 command);
# a read may reconnect and retry once (2 connect + 3 command).  Plus 1 s
# of scheduling slack on a loaded 2-core machine.
my ($connect_ms, $command_ms, $interval_ms) = (500, 500, 20);
my $bound_ms = 2 * $connect_ms + 4 * $command_ms + $interval_ms + 1000;

# the servers authenticate as a Redis ACL user with a password (also in
# redis.conf, so that it survives the restart of scenario 1): every
# reconnection after a fault authenticates again, and no log line may show
# the password
my $port = start_redis('faults8');
my $pw = 's3cret-faults';
redis_cli('ACL', 'SETUSER', 'dkload', 'on', ">$pw", '~*', '+@all');
open my $conf, '>>', redis_ctl_out('conf') or die;
print $conf "user dkload on >$pw ~* +\@all\n";
close $conf;
my $node = new_node('faults8', "redis://dkload:$pw\@127.0.0.1:$port/0", <<"CONF");
restart_after_crash = on
distkit.connect_timeout = '${connect_ms}ms'
distkit.command_timeout = '${command_ms}ms'
distkit.flush_interval = '${interval_ms}ms'
CONF
install_load($node);
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# Wait until the node flushed everything it buffered (Redis is back).
sub settle
{
	my ($n) = @_;
	wait_for(sub {
		my ($rc) = $n->psql('postgres', "SELECT distkit_flush('5 s')");
		$rc == 0 && $n->safe_psql('postgres', 'SELECT pending_delta FROM distkit_stats') eq '0';
	}, 'every buffered increment to reach Redis', 60);
}

# Checks shared by the scenarios without a crash.
sub no_loss_checks
{
	my ($sum, $n) = @_;
	my $t = $sum->{tag};
	is($sum->{mode}{lax}{failed} // 0, 0, "$t: no lax call failed");
	is($sum->{mode}{lax}{ambiguous} // 0, 0, "$t: no lax call was of unknown outcome");
	is($n->safe_psql('postgres', 'SELECT dropped_deltas FROM distkit_stats'), '0',
		"$t: the flusher dropped nothing");
}

my %results;

# 1. Redis killed (SIGKILL) during the load and restarted 1 s later; it
# persists with appendfsync always, so nothing it acknowledged is lost
{
	my $l = run_load(node => $node, tag => 'redis-kill', mixes => \@MIX, seconds => 4 * $soak,
		timeline => [
			[ 1.0, sub { redis_ctl('kill') }, 'Redis killed (SIGKILL)' ],
			[ 2.0, sub { redis_ctl('start') }, 'Redis restarted' ] ]);
	settle($node);
	my $s = account_load($l, expected_errors => [qw(08001 08006 57P03)], max_ms => $bound_ms);
	ok($s->{by_state}{'08001'}, 'redis-kill: calls during the outage failed to connect (08001)');
	no_loss_checks($s, $node);
	$results{'redis-kill'} = $s;
}

# 2. Redis paused (SIGSTOP) for 1.5 s, three command timeouts: strict calls
# fail within their timeouts with a clear error, lax calls go on, and the
# flusher catches up when Redis resumes
{
	my $l = run_load(node => $node, tag => 'redis-pause', mixes => \@MIX, seconds => 4 * $soak,
		timeline => [
			[ 1.0, sub { redis_ctl('pause') }, 'Redis paused (SIGSTOP)' ],
			[ 2.5, sub { redis_ctl('resume') }, 'Redis resumed' ] ]);
	settle($node);
	my $s = account_load($l, expected_errors => [qw(08001 08006)], max_ms => $bound_ms);
	ok($s->{ambiguous} > 0, "redis-pause: writes whose reply never came were reported as 08007 ($s->{ambiguous})");
	like($s->{first_msg}{'08007'} // '', qr/^lost the reply from Redis at 127\.0\.0\.1:\d+: no reply within $command_ms ms/,
		'redis-pause: 08007 says which Redis and that the reply did not come in time');
	no_loss_checks($s, $node);
	$results{'redis-pause'} = $s;
}

# 3. Through a loopback proxy: connections cut at random moments (before a
# request reaches Redis, after it ran but before its reply, in the middle
# of a reply), then 20 ms of latency each way
my ($pport, $control) = start_proxy($port);
my $pnode = new_node('proxied8', "redis://dkload:$pw\@127.0.0.1:$pport/0", "distkit.flush_interval = '${interval_ms}ms'\n");
install_load($pnode);
{
	set_proxy_mode($control, 'random-cut:0.03');
	my $l = run_load(node => $pnode, tag => 'random-cut', mixes => \@MIX, seconds => 4 * $soak);
	set_proxy_mode($control, 'pass');
	settle($pnode);
	my $s = account_load($l, expected_errors => [qw(08001 08006)], max_ms => 2 * 1000 + 4 * 1000 + 20 + 1000);
	ok($s->{ambiguous} > 0 && $s->{failed} > 0,
		"random-cut: cuts made calls fail ($s->{failed}) and left outcomes unknown ($s->{ambiguous})");
	no_loss_checks($s, $pnode);
	$results{'random-cut'} = $s;

	# random cuts may or may not hit a flush: cut one by design.  The flush
	# runs in Redis, its reply is swallowed; the flusher must resend it
	# (same sequence) and Redis must apply it once.
	my $errors = $pnode->safe_psql('postgres', 'SELECT flush_errors FROM distkit_stats');
	set_proxy_mode($control, 'cut-reply');
	$pnode->safe_psql('postgres', q{SELECT distkit_inc('cut:flush', 1, 'lax')});
	wait_for(sub { $pnode->safe_psql('postgres', 'SELECT flush_errors FROM distkit_stats') > $errors },
		'the flusher to meet the cut');
	set_proxy_mode($control, 'pass');
	settle($pnode);
	ok($pnode->safe_psql('postgres', 'SELECT flush_errors FROM distkit_stats') > $errors,
		'random-cut: a flush was cut (by design) and retried');
	is($pnode->safe_psql('postgres', q{SELECT distkit_get('cut:flush', 'strict')}), '1',
		'random-cut: the cut flush was applied once');
}
{
	set_proxy_mode($control, 'latency:20');
	my $l = run_load(node => $pnode, tag => 'latency', mixes => \@MIX, seconds => 3 * $soak);
	set_proxy_mode($control, 'pass');
	settle($pnode);
	my $s = account_load($l, expected_errors => [], max_ms => 1000);
	is($s->{ambiguous} + $s->{failed}, 0, 'latency: 20 ms each way makes no call fail');
	no_loss_checks($s, $pnode);
	$results{latency} = $s;
}

# 4. A backend killed with SIGKILL during the load: the postmaster restarts
# every process and re-creates shared memory and the flusher.  Lax
# increments buffered but not yet in Redis are lost; the bound: only those
# acknowledged after the flusher's second-to-last completed flush (each
# flush takes what was buffered when it started).  Strict calls lose
# nothing.
{
	my $id_before = $pg->('SELECT instance_id FROM distkit_stats');
	my $kill_time;
	my $l = run_load(node => $node, tag => 'crash', mixes => \@MIX, seconds => 3 * $soak, monitor_flush => 1,
		timeline => [
			[ 1.5, sub {
				my $pid = $pg->("SELECT pid FROM pg_stat_activity WHERE application_name = 'dkload-1'");
				$kill_time = time();
				kill 'KILL', $pid;
			}, 'the backend of client 1 killed (SIGKILL)' ] ]);
	wait_for(sub {
		my ($rc, $n) = $node->psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'");
		$rc == 0 && $n eq '1';
	}, 'the server and its flusher after the crash restart', 60);
	like(slurp_file($node->logfile), qr/server process \(PID \d+\) was terminated by signal 9/,
		'crash: the postmaster saw the backend die and restarted');
	isnt($pg->('SELECT instance_id FROM distkit_stats'), $id_before,
		'crash: shared memory was re-created (new instance id)');
	settle($node);

	# flushes seen before the kill: everything buffered before the
	# second-to-last of them was in Redis when the server crashed
	my @seen = do { my %u; grep { !$u{$_}++ && $_ < $kill_time } @{ $l->{flushes} } };
	@seen = sort { $a <=> $b } @seen;
	ok(@seen >= 2, 'crash: the monitor saw the flusher complete flushes before the kill (' . scalar(@seen) . ')');
	my $since = @seen >= 2 ? $seen[-2] : 0;
	my %recent;
	for my $o (@{ $l->{outcomes} })
	{
		next unless $DistkitLoad::OPS{ $o->{op} }{lax};
		$recent{ $o->{key} }++ if $o->{state} eq 'ok' && $o->{t} >= $since;
	}
	my $s = account_load($l, expected_errors => [], max_ms => $bound_ms,
		allow_loss => sub { $recent{ $_[0] } // 0 });
	my $lost_clients = grep { $_->{state} eq 'lost' } @{ $l->{outcomes} };
	is($lost_clients, 4, 'crash: every client lost its connection, with one call in flight');
	$results{crash} = $s;

	# after the restart the same load is exact again
	my $l2 = run_load(node => $node, tag => 'after-crash', mixes => \@MIX, seconds => 2 * $soak);
	settle($node);
	my $s2 = account_load($l2, expected_errors => [], max_ms => $bound_ms);
	is($s2->{ambiguous} + $s2->{failed}, 0, 'after-crash: every call succeeded');
	no_loss_checks($s2, $node);
	$results{'after-crash'} = $s2;
}

# 5. The flusher killed (SIGTERM) twice and cancelled (SIGINT) often
# during the load.  A terminated flusher makes a final flush before it
# exits, which under load lasts its full bound (5 s); the postmaster starts
# a new one 1 s later, and that one is terminated in turn.
{
	my $id_before = $pg->('SELECT instance_id FROM distkit_stats');
	my $flusher = sub { $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'}) };
	my (%sent, %terminated);
	my $signal = sub {
		my ($sig) = @_;
		return sub {
			my $pid = $flusher->();
			return if $pid eq '' || !kill($sig, $pid);
			$sent{$sig}++;
			$terminated{$pid} = 1 if $sig eq 'TERM';
		};
	};
	my $next_flusher = sub {
		wait_for(sub { my $p = $flusher->(); $p ne '' && !$terminated{$p} }, 'a new flusher', 10);
	};
	my $l = run_load(node => $node, tag => 'flusher-kill', mixes => \@MIX, seconds => 9 * $soak,
		timeline => [
			[ 0.3, $signal->('INT'), 'flusher cancelled (SIGINT)' ],
			[ 0.5, $signal->('TERM'), 'flusher terminated (SIGTERM)' ],
			(map { [ $_, $signal->('INT'), 'flusher cancelled (SIGINT)' ] } 1.5, 2.5, 3.5, 4.5),
			[ 5.0, $next_flusher, 'a new flusher started' ],
			[ 5.1, $signal->('TERM'), 'flusher terminated (SIGTERM)' ],
			(map { [ $_, $signal->('INT'), 'flusher cancelled (SIGINT)' ] } 6, 7, 8) ]);
	settle($node);
	is(scalar(keys %terminated), 2, 'flusher-kill: two flusher processes were terminated during the load');
	# a cancel reaches a flusher only when one runs at that moment (a
	# terminated one exits after its final flush, the next starts 1 s
	# later): how many of the 8 do is timing, at least the first one is not
	ok(($sent{INT} // 0) >= 1, 'flusher-kill: the flusher was cancelled during the load (' . ($sent{INT} // 0) . ' of 8 times)');
	is($pg->('SELECT instance_id FROM distkit_stats'), $id_before, 'flusher-kill: no crash restart');
	my $s = account_load($l, expected_errors => [qw(08006)], max_ms => $bound_ms);
	no_loss_checks($s, $node);
	$results{'flusher-kill'} = $s;
}

# 6. Redis full: maxmemory with noeviction, then a large value written by
# another program takes the last of it; 1.5 s later it is deleted
{
	my $l = run_load(node => $node, tag => 'redis-full', mixes => \@MIX, seconds => 4 * $soak,
		timeline => [
			[ 1.0, sub {
				my ($used) = redis_cli('INFO', 'memory') =~ /^used_memory:(\d+)/m;
				redis_cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
				redis_cli('CONFIG', 'SET', 'maxmemory', $used + 1_000_000);
				redis_cli('SETRANGE', 'filler', 4_000_000, 'x');
			}, 'Redis filled up (maxmemory, noeviction)' ],
			[ 2.5, sub {
				redis_cli('DEL', 'filler');
			}, 'memory freed' ] ]);
	settle($node);
	redis_cli('CONFIG', 'SET', 'maxmemory', 0);
	my $s = account_load($l, expected_errors => [qw(53200 08006)], max_ms => $bound_ms);
	ok($s->{by_state}{53200}, 'redis-full: writes were refused with 53200');
	like($s->{first_msg}{53200} // '', qr/^Redis is out of memory: (counter|rate limiter) ".*" was not changed$/,
		'redis-full: the error says Redis is out of memory and nothing changed');
	like($pg->('SELECT last_error FROM distkit_stats'), qr/OOM|out of memory/,
		'redis-full: the flusher reported the refusal and kept the increments');
	no_loss_checks($s, $node);
	$results{'redis-full'} = $s;
}

# the report, for docs/reliability.md
diag("$_: " . load_summary($results{$_})) for sort keys %results;

$pnode->stop;
$node->stop;
for my $n ($node, $pnode)
{
	unlike(slurp_file($n->logfile), qr/\Q$pw\E/, $n->name . ': no log line shows the password');
}
done_testing();

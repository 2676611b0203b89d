# Redis connections: what a server holds, and what happens when Redis is
# full (maxclients).
#   1. distkit.idle_connection_timeout: a session's Redis connection is
#      closed after that much time without a distkit call (counted on the
#      Redis side, CLIENT LIST), the next call reconnects transparently; 0
#      keeps it; only a superuser sets it; the worker keeps its connection.
#   2. Redis at maxclients, full of sessions' connections: a session that
#      needs a new connection gets SQLSTATE 08004 with a hint; the worker,
#      which kept its connection, still flushes lax increments and renews
#      a leadership (exact values);
#   3. the worker loses its connection while Redis is full: it says so
#      (distkit_stats.last_error, the log), asks again every 10-100 ms and
#      is back (the buffered increments exactly in Redis) as soon as one
#      slot is free;
#   4. sessions that go idle give their slots back: a new session's call
#      works again.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $port = start_redis('connections');
my $url = "redis://127.0.0.1:$port/0";
my $node = new_node('connections', $url, qq{
distkit.idle_connection_timeout = '2s'
distkit.heartbeat_interval = '1h'
distkit.flush_interval = '10ms'
});
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# Our own connection to Redis, held for the whole test: when Redis is full
# a redis-cli could not connect.  Sends one command, returns its reply
# (arrays as array refs, errors as "ERR ..." strings).
my $mon = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "cannot connect to Redis: $!";
sub read_reply
{
	my $line = <$mon>;
	die 'Redis closed our connection' unless defined $line;
	$line =~ s/\r\n$//;
	my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
	return $v if $t eq '+' || $t eq ':' || $t eq '-';
	if ($t eq '$')
	{
		return undef if $v < 0;
		my $data = '';
		read($mon, $data, $v + 2) == $v + 2 or die 'short read';
		return substr($data, 0, $v);
	}
	if ($t eq '*')
	{
		return [ map { read_reply() } 1 .. $v ];
	}
	die "unexpected reply from Redis: $line";
}
sub mon
{
	my @args = @_;
	print $mon '*' . scalar(@args) . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
	return read_reply();
}
my $mon_id = mon('CLIENT', 'ID');

# The other clients of Redis: [id, ...] in connection order.
sub others
{
	my @ids;
	for (split /\n/, mon('CLIENT', 'LIST'))
	{
		my ($id) = /\bid=(\d+)/;
		push @ids, $id if $id != $mon_id;
	}
	return sort { $a <=> $b } @ids;
}
sub nothers { return scalar(my @o = others()); }
sub rint { my $v = mon('GET', $_[0]); return defined $v ? $v : 0; }

# the worker connects at start (its first heartbeat) and is alone
wait_for(sub { nothers() == 1 }, 'the worker to be the only other client');
my ($worker_id) = others();

# 1. idle sessions give their connection back
my @s = map { $node->background_psql('postgres', on_error_stop => 0) } 1 .. 3;
$_->query_safe(q{SELECT distkit_inc('idle')}) for @s;
my $last_call = time();
is(nothers(), 4, 'three sessions that called distkit hold a Redis connection each (+ the worker)');
wait_for(sub { nothers() == 1 }, 'the idle sessions to close their connections', 10);
my $closed_after = time() - $last_call;
ok($closed_after >= 1.9 && $closed_after < 4,
	sprintf('after distkit.idle_connection_timeout (2 s) they are closed (%.2f s after the last call)', $closed_after));
is(join(',', others()), $worker_id, 'the worker kept its connection (idle too: heartbeat every hour)');
is($s[0]->query_safe(q{SELECT distkit_inc('idle')}), '4', 'the next call reconnects transparently');
is(nothers(), 2, '... with one new connection');
$s[1]->query_safe(q{SET distkit.idle_connection_timeout = 0});
$s[1]->query_safe(q{SELECT distkit_get('idle')});
wait_for(sub { nothers() == 2 }, "the first session's connection to close again", 10);
usleep(2_500_000);
is(nothers(), 2, 'with distkit.idle_connection_timeout = 0 a session keeps its connection');
$pg->('CREATE ROLE dk_user LOGIN');
my ($rc, $out, $err) = $node->psql('postgres', q{SET distkit.idle_connection_timeout = 0},
	extra_params => [ '-U', 'dk_user' ]);
like($err, qr/permission denied to set parameter "distkit.idle_connection_timeout"/,
	'only a superuser sets distkit.idle_connection_timeout');

# 2. Redis full of sessions' connections
$_->query_safe(q{SET distkit.idle_connection_timeout = 0}) for @s;
$_->query_safe(q{SELECT distkit_get('idle')}) for @s;
is(nothers(), 4, 'three sessions hold connections (kept), with the worker');
is($pg->(q{SELECT distkit_leader_acquire('conn_leader', '3 s')}), 't', 'this server leads conn_leader');
wait_for(sub { nothers() == 4 }, 'the short session to close its connection', 10);
my $term = mon('HGET', 'distkit:ld:{conn_leader}', 'token');
my $full = nothers() + 1;
is(mon('CONFIG', 'SET', 'maxclients', $full), 'OK', "Redis at maxclients $full: full");

my $refused = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT distkit_inc('full')}, stderr => \$err);
$err =~ s/\n(LOCATION|CONTEXT):[^\n]*//g;
is($err, qq{psql:<stdin>:2: ERROR:  08004: Redis at 127.0.0.1:$port refused the connection: max number of clients reached
DETAIL:  Redis replied: ERR max number of clients reached
HINT:  Raise maxclients in Redis, or lower distkit.idle_connection_timeout so that idle sessions give their Redis connections back sooner: each PostgreSQL server needs one connection for its distkit worker and one per session that used distkit within distkit.idle_connection_timeout.},
	'a session that needs a new connection gets 08004 with a hint');
is(rint('distkit:c:{full}'), 0, '... and nothing was applied');

$pg->(q{SELECT distkit_inc('full_lax', 7, 'lax')});
$pg->(q{SELECT distkit_flush()});
is(rint('distkit:c:{full_lax}'), 7, 'the worker kept its connection: lax increments still reach Redis');
usleep(4_000_000);
is($pg->(q{SELECT distkit_is_leader('conn_leader')}), 't',
	'... and it renewed the leadership (ttl 3 s) for 4 s of full Redis');
is(mon('HGET', 'distkit:ld:{conn_leader}', 'token'), $term, '... in the same term');

# 3. the worker loses its connection while Redis is full
my $log_offset = -s $node->logfile;
is(mon('CLIENT', 'KILL', 'ID', $worker_id), 1, "the worker's connection is cut");
is(mon('CONFIG', 'SET', 'maxclients', $full - 1), 'OK', '... and its slot taken (maxclients lowered by one)');
$pg->(q{SELECT distkit_inc('full_lax', 3, 'lax')});
wait_for(sub { $pg->(q{SELECT last_error FROM distkit_stats}) =~ /max number of clients reached/ },
	'distkit_stats.last_error to say Redis is full', 10);
is($pg->(q{SELECT last_error FROM distkit_stats}),
	"Redis at 127.0.0.1:$port refused the connection: max number of clients reached",
	'distkit_stats.last_error says Redis is full');
my @lines = slurp_file($node->logfile, $log_offset) =~
  /distkit worker cannot flush to Redis: Redis at 127\.0\.0\.1:$port refused the connection: max number of clients reached/g;
is(scalar(@lines), 1, 'so does the log, once for the outage');
is(rint('distkit:c:{full_lax}'), 7, 'the 3 stay buffered');
my $t0 = time();
is(mon('CONFIG', 'SET', 'maxclients', $full), 'OK', 'one slot frees up');
wait_for(sub { rint('distkit:c:{full_lax}') == 10 }, 'the worker to flush again', 10);
my $back = time() - $t0;
ok($back < 1, sprintf('the worker took the free slot and flushed %.2f s later (it asks every 10-100 ms)', $back));
is(nothers(), 4, 'Redis is full again, with the worker in');
ok($node->log_contains(qr/distkit worker reached Redis again after \d+ failed attempts/, $log_offset),
	'the log says the worker is back');
is($pg->(q{SELECT distkit_is_leader('conn_leader')}), 't', 'this server still leads conn_leader');
is(mon('HGET', 'distkit:ld:{conn_leader}', 'token'), $term, '... in the same term');

# 4. sessions going idle give their slots back
$_->query_safe(q{RESET distkit.idle_connection_timeout}) for @s;
$_->query_safe(q{SELECT distkit_get('idle')}) for @s;	# arms their idle timers (2 s)
wait_for(sub { nothers() == 1 }, 'the sessions to close their idle connections', 10);
is($pg->(q{SELECT distkit_inc('full')}), '1', 'a new session can use distkit again');
$_->quit for @s;
is(mon('CONFIG', 'SET', 'maxclients', 10000), 'OK', 'maxclients back to 10000');
close $mon;
$node->stop('fast');
done_testing();

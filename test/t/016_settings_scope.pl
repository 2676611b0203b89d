# Settings scope (issue 21): one server talks to one Redis.  The settings
# the worker must agree on — distkit.redis_url, the worker's intervals and
# thresholds, the buffer size — are server-wide: every place that would
# give them another value for one database, role, function or session is
# refused with 55P02 and a hint, and nothing is stored.  Per-session
# settings (timeouts, modes, distkit.prefix) may still differ, and a
# per-database prefix keeps its lax flushes in its own namespace.  ALTER
# SYSTEM + pg_reload_conf moves strict calls and the worker (flushes,
# heartbeats, leader renewals) to a new Redis together, and increments
# buffered while the old one was down go to the new one.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port_a = start_redis('scope-a');
my $dir_a = $ENV{DISTKIT_REDIS_DIR};
my $port_b = start_redis('scope-b');
my $url_a = "redis://127.0.0.1:$port_a/0";
my $url_b = "redis://127.0.0.1:$port_b/0";
my $node = new_node('scope', $url_a, "distkit.heartbeat_interval = '200ms'\n");
my $pg = sub { $node->safe_psql($_[1] // 'postgres', $_[0]) };
my $a_get = sub { my $v = node_cli($port_a, 'GET', $_[0]); $v eq '' ? 0 : $v };
my $b_get = sub { my $v = node_cli($port_b, 'GET', $_[0]); $v eq '' ? 0 : $v };

$pg->('CREATE DATABASE appb');
$pg->('CREATE EXTENSION distkit', 'appb');
$pg->('CREATE ROLE app LOGIN');

# stderr of a statement as role (superuser when undef) in database db, with SQLSTATEs
my $err_of = sub {
	my ($sql, $db, $role) = @_;
	my ($rc, $out, $err) = $node->psql($db // 'postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose', ($role ? ('-U', $role) : ()) ]);
	$err =~ s/^psql:<stdin>:\d+: //mg;
	$err =~ s/\n?LOCATION: [^\n]*//g;
	return $rc == 0 ? 'ok' : $err;
};

# ------------------------------------------------------------ server-wide settings
my %server_wide = (
	'distkit.redis_url' => "'$url_b'",
	'distkit.heartbeat_interval' => "'500ms'",
	'distkit.dead_instance_threshold' => "'10s'",
	'distkit.flush_interval' => "'50ms'",
	'distkit.lax_capacity' => "'1000'");
my %before = map { $_ => $pg->("SHOW $_") } keys %server_wide;
for my $name (sort keys %server_wide)
{
	my $v = $server_wide{$name};
	my $restart = $name eq 'distkit.lax_capacity';
	my $expected = $restart
	  ? qq{ERROR:  55P02: parameter "$name" cannot be changed without restarting the server\n}
	  . qq{HINT:  $name is a server-wide setting: set it in postgresql.conf or with ALTER SYSTEM, then restart the server.}
	  : qq{ERROR:  55P02: parameter "$name" cannot be changed now\n}
	  . qq{HINT:  $name is a server-wide setting: set it in postgresql.conf or with ALTER SYSTEM, then reload with SELECT pg_reload_conf().};
	my @places = (
		[ "ALTER DATABASE appb SET $name = $v" ],
		[ "ALTER ROLE app SET $name = $v" ],
		[ "ALTER ROLE app IN DATABASE appb SET $name = $v" ],
		[ "ALTER ROLE ALL SET $name = $v" ],
		[ "SET $name = $v" ],
		[ "BEGIN; SET LOCAL $name = $v; COMMIT" ],
		[ "SELECT set_config('$name', $v, false)" ],
		[ "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET $name = $v AS 'SELECT 1'" ],
		[ "SET $name = $v", 'app' ],
		[ "SELECT set_config('$name', $v, true)", 'app' ]);
	for my $p (@places)
	{
		my ($sql, $role) = @$p;
		is($err_of->($sql, 'appb', $role), $expected, "refused with a hint: $sql" . ($role ? " (as $role)" : ''));
	}
	is($pg->("SHOW $name", 'appb'), $before{$name}, "$name is unchanged in appb");
}
is($pg->('SELECT count(*) FROM pg_db_role_setting') . $pg->(q{SELECT count(*) FROM pg_proc WHERE proname = 'f'}),
	'00', 'nothing was stored in pg_db_role_setting or pg_proc');
# an error caught by an exception block keeps core's text (the hint is added when a message is emitted)
is($pg->(q{DO $$ BEGIN SET distkit.redis_url = 'redis://127.0.0.1:1/0';
	EXCEPTION WHEN cant_change_runtime_param THEN RAISE NOTICE 'caught'; END $$;
	SELECT 'still ' || current_setting('distkit.redis_url')}), "still $url_a", 'caught as cant_change_runtime_param (55P02)');

# ------------------------------------------------------------ per-session settings
# these may differ per database, role, function or session: they change
# what one call does, not where the server's data goes
for my $s ([ 'distkit.prefix', q{'appb'} ], [ 'distkit.command_timeout', q{'2s'} ],
	[ 'distkit.connect_timeout', q{'2s'} ], [ 'distkit.default_mode', q{'lax'} ],
	[ 'distkit.transactional', q{'on'} ], [ 'distkit.idempotency_lease', q{'30s'} ],
	[ 'distkit.allow_standby_leader', q{'on'} ])
{
	my ($name, $v) = @$s;
	is($err_of->("ALTER ROLE app IN DATABASE appb SET $name = $v; ALTER ROLE app IN DATABASE appb RESET $name; "
		  . "SET $name = $v; SELECT set_config('$name', $v, false)", 'appb'), 'ok',
		"$name may be set per database, role and session");
}
# the prefix, distkit.allow_standby_leader are for superusers to set
is($err_of->(q{SET distkit.prefix = 'mine'}, 'appb', 'app') =~ /^ERROR:  42501: permission denied to set parameter "distkit.prefix"/ ? 1 : 0,
	1, 'a plain role cannot set distkit.prefix');
is($err_of->(q{SET distkit.allow_standby_leader = on}, 'appb', 'app') =~ /^ERROR:  42501: permission denied to set parameter "distkit.allow_standby_leader"/ ? 1 : 0,
	1, 'a plain role cannot set distkit.allow_standby_leader');

# ------------------------------------------------------------ a per-database prefix
$pg->(q{ALTER DATABASE appb SET distkit.prefix = 'appb'});
is($pg->('SHOW distkit.prefix', 'appb'), 'appb', 'appb runs with prefix appb');
is($pg->(q{SELECT distkit_inc('scope:strict', 5)}), '5', 'a strict increment in postgres');
is($pg->(q{SELECT distkit_inc('scope:strict', 6)}, 'appb'), '6', 'a strict increment of the same name in appb');
$pg->(q{SELECT distkit_inc('scope:lax', 3, 'lax'); SELECT distkit_flush()}, 'appb');
$pg->(q{SELECT distkit_inc('scope:lax', 1, 'lax'); SELECT distkit_flush()});
is(join(' ', map { $a_get->($_) } 'distkit:c:{scope:strict}', 'appb:c:{scope:strict}',
		'appb:c:{scope:lax}', 'distkit:c:{scope:lax}'), '5 6 3 1',
	"each database's strict and lax (flushed by the server's one worker) counts are in its own prefix");
# leaders and instance-aware counters of appb's prefix, renewed / counted by the one worker
is($pg->(q{SELECT distkit_leader_acquire('scope:lead', '1 s')}, 'appb'), 't', 'appb acquires a leadership under its prefix');
is($pg->(q{SELECT total FROM distkit_instance_inc('scope:inst', 2)}, 'appb'), '2', 'an instance-aware counter in appb');
usleep_ms(1500);
is($pg->(q{SELECT distkit_is_leader('scope:lead')}, 'appb') . $pg->(q{SELECT distkit_is_leader('scope:lead')}), 'tf',
	'the worker keeps renewing it beyond its ttl (appb: true; postgres, another prefix: false)');
ok(node_cli($port_a, 'EXISTS', 'appb:ld:{scope:lead}') eq '1', 'the leadership key is under appb:');
is($pg->(q{SELECT total FROM distkit_instance_get('scope:inst')}, 'appb'), '2', 'the instance-aware total counts this live server');
# heartbeats go to the registry of the server-wide prefix: distkit_instances
# reads the registry of the session's prefix
is($pg->('SELECT count(*) FROM distkit_instances') . ' ' . $pg->('SELECT count(*) FROM distkit_instances', 'appb'), '1 0',
	'distkit_instances lists the registry of the session prefix (heartbeats use the server-wide one)');
$pg->(q{SELECT distkit_leader_release('scope:lead')}, 'appb');

# ------------------------------------------------------------ ALTER SYSTEM + reload: a new Redis
my $instance = $pg->('SELECT instance_id FROM distkit_stats');
# the old Redis goes away; increments buffered meanwhile stay buffered
{
	local $ENV{DISTKIT_REDIS_DIR} = $dir_a;
	redis_ctl('stop');
}
$pg->(q{SELECT distkit_inc('scope:lax', 4, 'lax')}, 'appb');
$pg->(q{SELECT distkit_inc('scope:lax', 7, 'lax')});
wait_for(sub { $pg->('SELECT flush_errors > 0 FROM distkit_stats') eq 't' }, 'a failed flush to the stopped Redis');
is($pg->('SELECT pending_delta FROM distkit_stats'), '11', 'the increments stay buffered');
is($err_of->(qq{ALTER SYSTEM SET distkit.redis_url = '$url_b'}), 'ok', 'ALTER SYSTEM SET distkit.redis_url');
$pg->('SELECT pg_reload_conf()');
# a new session starts after the postmaster has reloaded
is($pg->('SHOW distkit.redis_url', 'appb'), $url_b, 'a new session uses the new URL');
is($pg->(q{SELECT distkit_flush('10 s') >= 0}, 'appb'), 't', 'the worker flushes the buffered increments to the new Redis');
is(join(' ', map { $b_get->($_) } 'appb:c:{scope:lax}', 'distkit:c:{scope:lax}'), '4 7',
	'the buffered deltas are in the new Redis (totals are not copied from the old one)');
is($pg->(q{SELECT distkit_inc('scope:strict', 2)}), '2', 'a strict call goes to the new Redis');
is($b_get->('distkit:c:{scope:strict}'), 2, '... and is there');
wait_for(sub { node_cli($port_b, 'ZSCORE', 'distkit:reg:{instances}', $instance) ne '' },
	'the heartbeat of this server in the new Redis');
pass('the worker records its heartbeat in the new Redis');
is($pg->(q{SELECT distkit_leader_acquire('scope:lead2', '1 s')}), 't', 'a leadership in the new Redis');
usleep_ms(1500);
is($pg->(q{SELECT distkit_is_leader('scope:lead2')}), 't', 'renewed by the worker in the new Redis beyond its ttl');
is(node_cli($port_b, 'EXISTS', 'distkit:ld:{scope:lead2}'), '1', 'the leadership key is in the new Redis');
is($pg->('SELECT dropped_deltas FROM distkit_stats'), '0', 'nothing was dropped');

# the other worker settings take ALTER SYSTEM + reload (lax_capacity: a restart)
for my $s ([ 'distkit.flush_interval', q{'50ms'}, '50ms' ], [ 'distkit.heartbeat_interval', q{'300ms'}, '300ms' ],
	[ 'distkit.dead_instance_threshold', q{'10s'}, '10s' ])
{
	my ($name, $v, $shown) = @$s;
	is($err_of->("ALTER SYSTEM SET $name = $v"), 'ok', "ALTER SYSTEM SET $name");
	$pg->('SELECT pg_reload_conf()');
	is($pg->("SHOW $name", 'appb'), $shown, "$name after the reload");
}
is($err_of->('ALTER SYSTEM SET distkit.lax_capacity = 1000'), 'ok', 'ALTER SYSTEM SET distkit.lax_capacity');
$pg->('SELECT pg_reload_conf()');
is($pg->(q{SELECT setting || ' ' || pending_restart FROM pg_settings WHERE name = 'distkit.lax_capacity'}),
	'65536 true', 'distkit.lax_capacity waits for a restart');
$pg->('ALTER SYSTEM RESET distkit.lax_capacity');

$node->stop;
unlike(slurp_file($node->logfile), qr/terminated by signal|PANIC/, 'no crash');
done_testing();

sub usleep_ms { select(undef, undef, undef, $_[0] / 1000) }

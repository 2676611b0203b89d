# Leaders on a standby (issue 21): a leader is usually elected to run a job
# that writes, and a standby cannot write.  distkit_leader_acquire on a
# server in recovery is refused (25006, with detail and hint) unless a
# superuser sets distkit.allow_standby_leader; with it, the standby's
# worker renews the leadership during recovery.  After promotion (same
# instance id) leaderships are acquired as on any primary, and one taken
# during recovery is still held.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('standby-leader');
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'distkit'
distkit.redis_url = 'redis://127.0.0.1:$port/0'
distkit.heartbeat_interval = '200ms'
log_min_messages = info
});
$primary->start;
my $pg = sub { $primary->safe_psql('postgres', $_[0]) };
$pg->('CREATE EXTENSION distkit');
$pg->('CREATE ROLE app LOGIN');
my $worker_sql = q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'};
wait_for(sub { $pg->($worker_sql) eq '1' }, 'the primary worker to start');

$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
my $sb = sub { $standby->safe_psql('postgres', $_[0]) };
wait_for(sub { $sb->($worker_sql) eq '1' }, 'the standby worker to start');
is($sb->('SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

# stderr of a statement on the standby (as role, if given), without psql's prefix and LOCATION
my $sb_err = sub {
	my ($sql, $role) = @_;
	my ($rc, $out, $err) = $standby->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose', ($role ? ('-U', $role) : ()) ]);
	$err =~ s/^psql:<stdin>:\d+: //mg;
	$err =~ s/\n?LOCATION: [^\n]*//g;
	return $rc == 0 ? "ok: $out" : $err;
};

is($pg->(q{SELECT distkit_leader_acquire('job', '2 s')}), 't', 'the primary leads "job"');

# refused by default, for every name, as every role
for my $case ([ 'job', undef ], [ 'free-job', undef ], [ 'free-job', 'app' ])
{
	my ($name, $role) = @$case;
	is($sb_err->(qq{SELECT distkit_leader_acquire('$name', '2 s')}, $role),
		qq{ERROR:  25006: cannot acquire leadership "$name" on a server in recovery\n}
		  . qq{DETAIL:  This server is a standby: a leader elected here could not write to its database.\n}
		  . qq{HINT:  Acquire it on the primary, or let standbys lead with distkit.allow_standby_leader = on (superuser).},
		"the standby is refused \"$name\"" . ($role ? " (as $role)" : ''));
}
is(redis_cli('EXISTS', 'distkit:ld:{free-job}'), '0', 'nothing was written to Redis');
is($sb->('SELECT count(*) FROM distkit_leaders'), '0', 'the standby leads nothing');
is($sb_err->(q{SET distkit.allow_standby_leader = on}, 'app') =~ /^ERROR:  42501: permission denied to set parameter "distkit.allow_standby_leader"/ ? 1 : 0,
	1, 'a plain role cannot allow it');
# reading is fine on a standby
like($sb->(q{SELECT holder || ' ' || term FROM distkit_leader_holder('job')}), qr/^[0-9a-f-]{36} 1$/,
	'the standby sees who leads "job"');
is($sb->(q{SELECT distkit_is_leader('job')}), 'f', '... and that it does not');

# allowed by a superuser: the standby's worker renews it during recovery
is($sb->(q{SET distkit.allow_standby_leader = on; SELECT distkit_leader_acquire('job', '2 s')}), 'f',
	'allowed, the standby still does not get a name the primary leads');
is($sb->(q{SET distkit.allow_standby_leader = on; SELECT distkit_leader_acquire('standby-job', '1 s')}), 't',
	'allowed, the standby leads "standby-job"');
select(undef, undef, undef, 2.5);
is($sb->(q{SELECT distkit_is_leader('standby-job') AND term = 1 FROM distkit_leaders WHERE name = 'standby-job'}), 't',
	'renewed by the standby worker beyond its ttl (2.5 s > 1 s)');
is($sb->(q{SELECT distkit_leader_release('standby-job')}), 't', 'and released');
is($sb->(q{SET distkit.allow_standby_leader = on; SELECT distkit_leader_acquire('kept', '1 s')}), 't',
	'the standby takes "kept" before the promotion');

# promotion: the same instance, now a primary
my $instance = $sb->('SELECT instance_id FROM distkit_stats');
$standby->promote;
is($sb->('SELECT pg_is_in_recovery()'), 'f', 'promoted');
is($sb->('SELECT instance_id FROM distkit_stats'), $instance, 'the promoted server keeps its instance id');
is($sb->(q{SELECT distkit_leader_acquire('after', '2 s')}), 't', 'after promotion a leadership is acquired without the setting');
is($standby->safe_psql('postgres', q{SELECT distkit_leader_acquire('after', '2 s')}, extra_params => [ '-U', 'app' ]),
	't', '... by any role (a renewal)');
select(undef, undef, undef, 1.5);
is($sb->(q{SELECT distkit_is_leader('kept')}), 't', 'the leadership taken during recovery is still held and renewed');
is($pg->(q{SELECT distkit_leader_acquire('after', '2 s')}), 'f', 'the old primary does not get it');

$standby->stop;
$primary->stop;
unlike(slurp_file($standby->logfile) . slurp_file($primary->logfile), qr/terminated by signal|PANIC/, 'no crash');
done_testing();

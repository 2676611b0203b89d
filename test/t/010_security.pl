# Security (issue 8): the Redis password never reaches a non-superuser —
# settings views, catalogs, errors, distkit_stats, pg_stat_activity, the
# server log; nobody can set distkit.redis_url per session, role, database
# or function (it is server-wide), non-superusers cannot change
# distkit.prefix; namespace-wide destructive functions are not executable
# by PUBLIC; distkit works with a Redis ACL user restricted to its prefix
# and to the commands docs/reliability.md lists, and each of those commands
# is needed; no Lua source is built from input.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use DistkitLoad;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $pw = 's3cret-acl-pw';
my $prefix = 'dkacl';
# the commands counters, rate limiters and lax flushing need (a subset of
# the list in docs/reliability.md, which the source check at the end keeps
# exact for every primitive; incr: distkit_rate_reset's reset epoch); AUTH is
# always allowed
my @needed = qw(evalsha script|load select get set incr incrby del pexpire time scan unlink);

my $port = start_redis('security');
sub acl_user
{
	my (@cmds) = @_;
	redis_cli('ACL', 'SETUSER', 'dkacl', 'reset', 'on', ">$pw", "~$prefix:*", 'resetchannels', '-@all',
		map { "+$_" } @cmds);
}
acl_user(@needed);
my $url = "redis://dkacl:$pw\@127.0.0.1:$port/0";
my $node = new_node('security', $url, "distkit.prefix = '$prefix'\nlog_statement = 'all'\n");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# Runs SQL and returns "ok" or "SQLSTATE|message|detail|hint|context".
$pg->(<<'SQL');
CREATE FUNCTION dk_err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text; hint text; ctx text;
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hint = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
	RETURN concat_ws('|', st, msg, det, hint, ctx);
END $$;
GRANT EXECUTE ON FUNCTION dk_err(text) TO PUBLIC;
CREATE ROLE plain LOGIN;
GRANT CREATE ON SCHEMA public TO plain;	-- so that only the SET clause can refuse its function
CREATE ROLE settings_reader LOGIN IN ROLE pg_read_all_settings;
CREATE ROLE stats_reader LOGIN IN ROLE pg_read_all_stats;
SQL
my $as = sub {
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
};
my $state = sub { (split /\|/, $_[0])[0] };
# The SQLSTATE of a statement run as a role (or "ok").
my $code = sub {
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	return $rc == 0 ? 'ok' : $err =~ /ERROR:  ([0-9A-Z]{5}):/ ? $1 : "rc $rc: $err";
};

is($pg->(q{SELECT current_setting('distkit.redis_url')}), $url, 'a superuser reads the URL');

# ------------------------------------------------------------ settings
for my $q (q{SHOW distkit.redis_url}, q{SELECT current_setting('distkit.redis_url')},
	q{SELECT current_setting('distkit.redis_url', true)}, q{SELECT * FROM pg_file_settings},
	q{SELECT * FROM pg_show_all_file_settings()}, q{SELECT pg_read_file('postgresql.conf')},
	q{SELECT pg_read_file('postgresql.auto.conf')})
{
	is($code->('plain', $q), '42501', "a plain role is refused: $q");
}
is($as->('plain', q{SELECT count(*) FROM pg_settings WHERE name = 'distkit.redis_url'}), '0',
	'pg_settings hides the URL from a plain role');
unlike($as->('plain', 'SHOW ALL'), qr/redis_url|\Q$pw\E/, 'SHOW ALL hides it too');
is($as->('settings_reader', q{SELECT current_setting('distkit.redis_url')}), $url,
	'members of pg_read_all_settings read it (PostgreSQL grants them every setting)');

# distkit.redis_url is server-wide (55P02 wherever a session, role or
# database would set it); ALTER SYSTEM and distkit.prefix need a superuser
for my $c ([ q{SET distkit.redis_url = 'redis://127.0.0.1:1/0'}, '55P02' ],
	[ q{SELECT set_config('distkit.redis_url', 'redis://127.0.0.1:1/0', false)}, '55P02' ],
	[ q{ALTER ROLE plain SET distkit.redis_url = 'redis://127.0.0.1:1/0'}, '55P02' ],
	[ q{ALTER SYSTEM SET distkit.redis_url = 'redis://127.0.0.1:1/0'}, '42501' ],
	[ q{SET distkit.prefix = 'other'}, '42501' ], [ q{SELECT set_config('distkit.prefix', 'other', false)}, '42501' ],
	[ q{ALTER ROLE plain SET distkit.prefix = 'other'}, '42501' ], [ q{ALTER SYSTEM SET distkit.prefix = 'other'}, '42501' ],
	[ q{CREATE FUNCTION f() RETURNS int LANGUAGE sql SET distkit.prefix = 'other' AS 'SELECT 1'}, '42501' ])
{
	my ($q, $want) = @$c;
	is($code->('plain', $q), $want, "a plain role cannot ($want): $q");
}

# every user can read database, role and function settings: none can hold
# the URL, with or without a password, even when a superuser sets it
for my $q (qq{ALTER DATABASE postgres SET distkit.redis_url = 'redis://:s3cret-db\@127.0.0.1:$port/0'},
	qq{ALTER ROLE plain SET distkit.redis_url = 'redis://u:s3cret-role\@127.0.0.1:$port/0'},
	qq{CREATE FUNCTION leak() RETURNS int LANGUAGE sql SET distkit.redis_url = 'unix://u:s3cret-fn\@/tmp/r.sock' AS 'SELECT 1'},
	qq{ALTER ROLE plain SET distkit.redis_url = 'redis://127.0.0.1:$port/1'})
{
	my ($rc, $out, $err) = $node->psql('postgres', $q, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  55P02: parameter "distkit.redis_url" cannot be changed now/,
		'refused: ' . substr($q, 0, 36) . '...');
	unlike($err, qr/s3cret/, '... and the error the client sees does not show the password');
}
is($as->('plain', q{SELECT count(*) FROM pg_db_role_setting, unnest(setconfig) c WHERE c LIKE '%s3' || 'cret%'})
	  . $as->('plain', q{SELECT count(*) FROM pg_proc, unnest(proconfig) c WHERE c LIKE '%s3' || 'cret%'}), '00',
	'no password in pg_db_role_setting or pg_proc, which every user can read');

# ------------------------------------------------------------ privileges
is($code->('plain', 'SELECT distkit_clear()'), '42501',
	'distkit_clear is not executable by PUBLIC');
# every function that clears a whole namespace must be revoked from PUBLIC
# (a later distkit_instance_clear too), and the reset of the call metrics
# (distkit_stat_calls_reset); every other function is for all
is($as->('plain', q{
	SELECT coalesce(string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1), '')
	FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
	JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
	WHERE e.extname = 'distkit'
	  AND has_function_privilege('plain', p.oid, 'EXECUTE')
	      = (p.proname LIKE '%clear%' OR p.proname IN ('distkit_stat_calls_reset', 'distkit_queue_purge'))}), '',
	'only the namespace-wide clear functions, the queue purge and the metrics reset are revoked from PUBLIC');
# the outbox: a plain role sends (inserts and learns the id) but cannot read
# or change other messages
like($as->('plain', q{SELECT distkit_outbox_send('plain-q', '{"a": 1}')}), qr/^\d+$/, 'a plain role sends through the outbox');
is($code->('plain', 'SELECT * FROM distkit_outbox'), '42501', '... but cannot read the outbox');
is($code->('plain', 'DELETE FROM distkit_outbox'), '42501', '... nor delete from it');
is($code->('plain', q{SELECT distkit_queue_purge('plain-q')}), '42501', 'distkit_queue_purge is not executable by PUBLIC');
$pg->('GRANT EXECUTE ON FUNCTION distkit_clear() TO plain');
like($as->('plain', 'SELECT distkit_clear()'), qr/^\d+$/, 'GRANT EXECUTE ON FUNCTION distkit_clear() TO a role lets it clear');
$pg->('REVOKE EXECUTE ON FUNCTION distkit_clear() FROM plain');
is($as->('plain', q{SELECT distkit_inc('plain-use')}), '1', 'a plain role uses counters through the ACL user');

# ------------------------------------------------------------ reconnection
# a connection Redis closed is opened again with the same password, by a
# backend and by the flusher
my $ctl = "$FindBin::RealBin/../redis-ctl.sh";
is($pg->(qq{SELECT distkit_inc('re');\n\\! "$ctl" cli CLIENT KILL USER dkacl >/dev/null\nSELECT distkit_inc('re');}),
	"1\n2", 'a backend authenticates again after Redis closed its connection');
$pg->(q{SELECT distkit_inc('re-lax', 1, 'lax')});
$pg->(q{SELECT distkit_flush('5 s')});
redis_cli('CLIENT', 'KILL', 'USER', 'dkacl');
$pg->(q{SELECT distkit_inc('re-lax', 1, 'lax')});
is($pg->(q{SELECT dk_err('SELECT distkit_flush(''5 s'')')}), 'ok', '... and so does the flusher');
is(redis_int("$prefix:c:{re-lax}"), 2, 'both lax increments arrived');

# ------------------------------------------------------------ Redis ACL
# With the listed commands and keys ~dkacl:* only, every function works.
# Then each command is taken away in turn: something must fail with 42501
# (or the flusher must report NOPERM), never another SQLSTATE, and the one
# lax increment of each round must reach Redis exactly once when the
# command is given back.
my @exercise = (
	q{SELECT distkit_clear()},
	q{SELECT distkit_inc('c', 5)}, q{SELECT distkit_dec('c')}, q{SELECT distkit_get('c')},
	q{SELECT * FROM distkit_get_many(ARRAY['c', 'd'])}, q{SELECT distkit_set('d', 7)}, q{SELECT distkit_del('d')},
	q{SELECT * FROM distkit_inc_if('c', 1, '>=', 0)}, q{SELECT distkit_rate_allow('r', 10)},
	q{SELECT * FROM distkit_rate_check('r', 10)}, q{SELECT * FROM distkit_rate_peek('r', 10)},
	q{SELECT distkit_rate_reset('r')}, q{SELECT distkit_inc('lx:%ROUND%', 1, 'lax')},
	q{SELECT distkit_flush('1 s')});
sub exercise
{
	my ($round) = @_;
	my $sql = 'SELECT ' . join(" || E'\\n' || ", map {
			(my $q = $_) =~ s/%ROUND%/$round/;
			"replace(dk_err(\$q\$$q\$q\$), E'\\n', ' ')"
		} @exercise);
	return split /\n/, $pg->($sql);
}

my @r = exercise('all');
is(join(' ', map { $state->($_) } @r), join(' ', ('ok') x @exercise), 'with the listed commands every function works');
is(redis_int("$prefix:c:{lx:all}"), 1, 'the lax increment arrived');
for my $cmd (@needed)
{
	acl_user(grep { $_ ne $cmd } @needed);
	redis_cli('SCRIPT', 'FLUSH');	# so that scripts must be loaded again
	my $errors_before = $pg->('SELECT flush_errors FROM distkit_stats');
	my @states = map { $state->($_) } exercise($cmd);
	my ($errors, $last) = split /\|/, $pg->(q{SELECT flush_errors || '|' || coalesce(last_error, '') FROM distkit_stats});
	my $refused = grep { $_ eq '42501' } @states;
	ok($refused || ($errors > $errors_before && $last =~ /NOPERM/),
		"without +$cmd distkit is refused ($refused calls with 42501" . ($errors > $errors_before ? ", flush: $last" : '') . ')');
	is(join(' ', grep { $_ ne 'ok' && $_ ne '42501' && $_ ne '08006' } @states), '',
		"without +$cmd every failure is 42501 (or a flush timeout)");
	acl_user(@needed);
	$pg->(q{SELECT distkit_flush('5 s')});
	is(redis_int("$prefix:c:{lx:$cmd}"), 1, "without +$cmd the lax increment was kept, then applied once");
}
is($pg->('SELECT dropped_deltas FROM distkit_stats'), '0', 'the flusher never dropped an increment');
# a strict increment refused by the ACL was not applied
$pg->(q{SELECT distkit_set('g', 10)});
acl_user(grep { $_ ne 'get' } @needed);
is($state->($pg->(q{SELECT dk_err('SELECT distkit_inc(''g'')')})), '42501', 'without +get an increment is refused');
acl_user(@needed);
is(redis_int("$prefix:c:{g}"), 10, '... and was not applied');

# A mixed load from four clients through the ACL user: exact accounting.
{
	local $DistkitLoad::PREFIX = $prefix;
	install_load($node);
	my $l = run_load(node => $node, tag => 'acl', seconds => 2,
		ops => [qw(strict_inc strict_dec lax_inc lax_dec mixed_strict mixed_lax mixed_inc_if rate_allow)]);
	$pg->(q{SELECT distkit_flush('5 s')});
	my $s = account_load($l, expected_errors => []);
	is($s->{ambiguous} + $s->{failed}, 0, 'acl: every call of the load succeeded');
	diag("acl: " . load_summary($s));
}
# The documented ACL command, pasted as it is (one line; only the password,
# the user name and the prefix replaced): every primitive works through it.
{
	my @docs = map { slurp_file($_) } ("$FindBin::RealBin/../../README.md", glob("$FindBin::RealBin/../../docs/*.md"));
	is(scalar(() = join('', @docs) =~ /^\s*ACL SETUSER/mg), 1, 'the docs hold one ACL command (docs/reliability.md)');
	my ($line) = slurp_file("$FindBin::RealBin/../../docs/reliability.md") =~ /^(ACL SETUSER distkit on [^\n]*)$/m;
	my @words = split ' ', $line // '';
	$words[2] = 'dkacl';
	s/^>PASSWORD$/>$pw/, s/^~distkit:\*$/~$prefix:*/ for @words;
	redis_cli('ACL', 'SETUSER', 'dkacl', 'reset');
	is(redis_cli(@words), 'OK', 'redis-cli accepts the documented ACL command');
	redis_cli('SCRIPT', 'FLUSH');
	my @all = (@exercise,
		q{SELECT distkit_cache_set('ck', '{"a": 1}', '1 min')}, q{SELECT distkit_cache_add_text('ck2', 'x')},
		q{SELECT distkit_cache_get('ck'), distkit_cache_get_text('ck2'), distkit_cache_exists('ck'), distkit_cache_ttl('ck')},
		q{SELECT distkit_cache_delete('ck')}, q{SELECT distkit_cache_clear()},
		q{SELECT distkit_lease_release('ls', distkit_lease_acquire('ls', '10 s'))},
		q{SELECT distkit_lease_renew('ls', distkit_lease_acquire('ls', '10 s'), '10 s')},
		q{SELECT * FROM distkit_lease_holder('ls')},
		q{SELECT distkit_semaphore_release('sm', distkit_semaphore_acquire('sm', 2, '10 s'))},
		q{SELECT distkit_semaphore_renew('sm', distkit_semaphore_acquire('sm', 2, '10 s'), '10 s')},
		q{SELECT distkit_semaphore_count('sm')},
		q{SELECT distkit_leader_acquire('ld', '1 s')}, q{SELECT * FROM distkit_leader_holder('ld')},
		q{SELECT distkit_leader_release('ld')},
		q{SELECT * FROM distkit_idempotency_begin('ik')}, q{SELECT distkit_idempotency_complete('ik', '1')},
		q{SELECT * FROM distkit_idempotency_begin('ik2')}, q{SELECT distkit_idempotency_abandon('ik2')},
		q{SELECT distkit_breaker_configure('br', minimum_calls => 1)}, q{SELECT distkit_breaker_allow('br')},
		q{SELECT distkit_breaker_record('br', false)}, q{SELECT * FROM distkit_breaker_state('br')},
		q{SELECT distkit_breaker_trip('br')}, q{SELECT distkit_breaker_reset('br')},
		q{SELECT * FROM distkit_instance_inc('ic')}, q{SELECT * FROM distkit_instance_inc('ic', 1, 'lax')},
		q{SELECT * FROM distkit_instance_set('ic', 5)}, q{SELECT * FROM distkit_instance_set_here('ic', 2)},
		q{SELECT * FROM distkit_instance_get('ic')}, q{SELECT * FROM distkit_instance_dec('ic')},
		q{SELECT * FROM distkit_instance_del_here('ic')}, q{SELECT * FROM distkit_instance_del('ic')},
		q{SELECT distkit_instance_clear()}, q{SELECT distkit_instance_clear_here()},
		q{SELECT count(*) FROM distkit_instances}, q{SELECT distkit_flush('5 s')},
		q{SELECT distkit_queue_send('qu', '{"a": 1}')}, q{SELECT distkit_outbox_send('qo', '{"b": 2}')},
		q{SELECT * FROM distkit_queue_read('qu', 'g', 'c', 10)},
		q{SELECT distkit_queue_ack('qu', 'g', id) FROM distkit_queue_read('qu', 'g', 'c2', 10, '1 ms')},
		q{SELECT * FROM distkit_queue_pending('qu', 'g')}, q{SELECT distkit_queue_length('qu')},
		q{SELECT distkit_queue_purge('qu')});
	my $sql = 'SELECT ' . join(" || E'\\n' || ", map {
			(my $q = $_) =~ s/%ROUND%/doc/;
			"replace(dk_err(\$q\$$q\$q\$), E'\\n', ' ')"
		} @all);
	my @res = split /\n/, $pg->($sql);
	my @bad = map { "$all[$_] -> $res[$_]" } grep { $res[$_] ne 'ok' } 0 .. $#all;
	is(join("\n", @bad), '', 'with the documented ACL user every primitive works (' . scalar(@all) . ' calls)');
	wait_for(sub { $pg->(q{SELECT distkit_queue_length('qo')}) eq '1' }, 'the outbox shipper to ship through the ACL user');
	is($pg->(q{SELECT count(*) FROM distkit_outbox WHERE queue = 'qo'}), '0', '... and delete the shipped row');
	acl_user(@needed);
}

my @foreign = grep { !/^\Q$prefix\E:/ } split /\n/, redis_cli('KEYS', '*');
is(join(' ', @foreign), '', "every key distkit wrote begins with $prefix:");

# ------------------------------------------------------------ secrets in errors and stats
# errors of every kind that names the Redis: none shows the password
my @errs;
redis_cli('ACL', 'SETUSER', 'dkacl', 'resetpass', '>other-password');
redis_cli('CLIENT', 'KILL', 'USER', 'dkacl');
push @errs, $pg->(q{SELECT dk_err('SELECT distkit_inc(''c'')')});
like($errs[-1], qr/^28P01\|authentication to Redis at 127\.0\.0\.1:\d+ failed/, 'a wrong password: 28P01');
$pg->(q{SELECT distkit_inc('l', 1, 'lax')});
push @errs, $pg->(q{SELECT dk_err('SELECT distkit_flush(''300 ms'')')});
wait_for(sub { $pg->('SELECT last_error FROM distkit_stats') =~ /authentication/ }, 'the flusher to fail', 10);
push @errs, $pg->(q{SELECT last_error FROM distkit_stats});
like($errs[-1], qr/authentication to Redis at 127\.0\.0\.1:\d+ failed/, 'distkit_stats names the failure');
redis_cli('ACL', 'SETUSER', 'dkacl', 'resetpass', ">$pw");
for my $u ("redis://dkacl:$pw\@127.0.0.1:1/0", "redis://dkacl:$pw\@127.0.0.1:99999/0",
	"redis://dkacl:$pw\@[::1:$port/0", "rediss://dkacl:$pw\@127.0.0.1:$port/0", "unix://dkacl:$pw\@/nonexistent.sock")
{
	# server-wide: ALTER SYSTEM + reload; a new connection starts after the reload
	$pg->("ALTER SYSTEM SET distkit.redis_url = '$u'");
	$pg->('SELECT pg_reload_conf()');
	push @errs, $pg->(q{SELECT dk_err('SELECT distkit_get(''c'')')});
}
$pg->('ALTER SYSTEM RESET distkit.redis_url');
$pg->('SELECT pg_reload_conf()');
is($pg->(q{SELECT current_setting('distkit.redis_url')}), $url, 'back to the URL of postgresql.conf');
acl_user(grep { $_ ne 'incrby' } @needed);
push @errs, $pg->(q{SELECT dk_err('SELECT distkit_inc(''c'')')});
like($errs[-1], qr/^42501\|Redis refused counter "c": permission denied\|Redis replied: NOPERM/, 'NOPERM in a script: 42501');
# the flusher keeps what Redis refuses that way, and sends it once allowed
$pg->(q{SELECT distkit_inc('nodrop', 3, 'lax')});
is($state->($pg->(q{SELECT dk_err('SELECT distkit_flush(''300 ms'')')})), '08006', 'a refused flush times out');
acl_user(@needed);
$pg->(q{SELECT distkit_flush('5 s')});
is(redis_int("$prefix:c:{nodrop}"), 3, '... and its increment arrives once the command is allowed');
# (caught in PL/pgSQL, these are distkit's texts as they are, before the
# log hook could redact anything)
is(join("\n", grep { /\Q$pw\E/ } @errs), '', 'no error message, detail, hint or context of distkit shows the password ('
	  . scalar(@errs) . ' errors)');
# PostgreSQL's own messages that quote a URL are redacted on their way to
# the client and the log
my (undef, undef, $quoted) = $node->psql('postgres', qq{SELECT 'redis://dkacl:$pw\@127.0.0.1/0'::int});
like($quoted, qr{"redis://dkacl:\*\*\*\@127\.0\.0\.1/0"}, 'an error quoting a URL shows it without the password');
unlike($as->('plain', 'SELECT * FROM distkit_stats()'), qr/\Q$pw\E/, 'distkit_stats() (executable by all) does not show it');

# pg_stat_activity: a superuser session whose query holds the URL
my ($bg_out, $bg_err) = ('', '');
my $bg = IPC::Run::start([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		"SELECT 'redis://dkacl:$pw\@127.0.0.1/0' AS url, pg_sleep(60)" ], '>', \$bg_out, '2>', \$bg_err);
my $sleeping = q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()};
wait_for(sub { $pg->($sleeping) eq '1' }, 'the background query', 10);
ok($as->('plain', q{SELECT count(*) FROM pg_stat_activity WHERE query = '<insufficient privilege>'}) >= 1,
	"a plain role sees '<insufficient privilege>' for other roles' queries");
is($as->('plain', q{SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%s3' || 'cret%'}), '0',
	'no text a plain role sees in pg_stat_activity holds the password');
like($as->('stats_reader', q{SELECT query FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()}),
	qr/\Q$pw\E/, 'members of pg_read_all_stats see the query text of every session (PostgreSQL grants it)');
is($pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker' AND (coalesce(query, '') <> '' OR application_name LIKE '%s3' || 'cret%')}),
	'0', "distkit's own worker shows no query text");
$pg->(q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()});
$bg->finish;

# ------------------------------------------------------------ Lua
# scripts are files in lua/ embedded at build time; the C code sends only
# EVALSHA of their SHA1s and SCRIPT LOAD of their text: no other command
# carries Lua, and none is built from an argument
my $src = join('', map { slurp_file($_) } glob("$FindBin::RealBin/../../src/*.c"));
my %cmds = map { $_ => 1 } grep { defined } $src =~ /DkCmdNew\("([A-Z]+)"\)|CacheKeyCommand\(fcinfo, "([A-Z]+)"/g;
is(join(' ', sort keys %cmds),
	'ASKING AUTH CLUSTER DEL EVALSHA EXISTS GET PTTL ROLE SCAN SCRIPT SELECT SENTINEL SET UNLINK WAIT XACK XLEN',
	'the only commands the C code builds');
# Redis Cluster (CLUSTER SLOTS, ASKING) and Sentinel (SENTINEL to the
# sentinels, ROLE and WAIT to the master) commands: only the connection
# module (src/redis*.c) builds them, and only in those modes
my $others = join('', map { slurp_file($_) } grep { !/\/redis(_\w+)?\.c$/ } glob("$FindBin::RealBin/../../src/*.c"));
is(join(' ', grep { $others =~ /DkCmdNew\("$_"\)/ } qw(ASKING CLUSTER ROLE SENTINEL WAIT)), '',
	'cluster and sentinel commands are built in the connection module (redis*.c) only');
# the ACL command list of docs/reliability.md (one Redis server) is exactly
# what the C code and the Lua scripts call: AUTH is always allowed, SCRIPT
# is only SCRIPT LOAD, and the cluster/sentinel commands are listed apart
my %used = map { lc($_) => 1 } grep { !/^(AUTH|ASKING|CLUSTER|ROLE|SENTINEL|WAIT|SCRIPT)$/ } keys %cmds;
$used{'script|load'} = 1;
$used{ lc($_) } = 1 for join('', map { slurp_file($_) } glob("$FindBin::RealBin/../../lua/*.lua $FindBin::RealBin/../../lua/lib/*.lua")) =~ /redis\.p?call\('([A-Za-z]+)'/g;
my ($acl) = slurp_file("$FindBin::RealBin/../../docs/reliability.md") =~ /^ACL SETUSER distkit on ([^\n]*)\n/m;
my @documented = sort grep { s/^\+// } split ' ', $acl // '';
is(join(' ', @documented), join(' ', sort keys %used),
	'docs/reliability.md lists exactly the commands distkit runs on one Redis server');
my @load = $src =~ /DkCmdArgStr\(load, ([^;]+)\);/g;
is(join(' ', @load), '"LOAD" DkLuaScripts[s].source', 'SCRIPT LOAD sends only an embedded script');
unlike($src, qr/"EVAL"/, 'no EVAL');

# An ACL refusal in the middle of an instance-aware lax flush part: user
# dkiacl may read every counter but write instance-aware counters whose
# name starts with "r" only while it is given back.  A fresh server
# touches i1, i2, i3 and then ro, so its buffer holds them in that order
# and one part of one batch (the worker stopped while they are made) writes
# i1..i3 before it meets ro: the script
# must undo them (and its record) and fail, the batch stays in flight, and
# once the permission is back every increment is applied exactly once.
sub iacl_user
{
	my ($ro) = @_;
	redis_cli('ACL', 'SETUSER', 'dkiacl', 'reset', 'on', ">$pw", 'resetchannels', '+@all',
		"%RW~$prefix:[^i]*", "%RW~$prefix:i:{[^r]*", ($ro ? '%R' : '%RW') . "~$prefix:i:{r*");
}
iacl_user(0);
my $inode = new_node('security_i', "redis://dkiacl:$pw\@127.0.0.1:$port/0", "distkit.prefix = '$prefix'\n");
my $ip = sub { $inode->safe_psql('postgres', $_[0]) };
my $islices = sub {
	join(' ', map { redis_cli('EVAL', q{local s = 0
local f = redis.call('HGETALL', KEYS[1])
for i = 1, #f, 2 do if string.sub(f[i], 1, 2) == 'v:' then s = s + tonumber(f[i + 1]) end end
return s}, 1, "$prefix:i:{$_}") } qw(i1 i2 i3 ro));
};
$ip->(q{SELECT distkit_instance_inc(k, 1, 'lax') FROM unnest(ARRAY['i1', 'i2', 'i3', 'ro']) k});
$ip->('SELECT distkit_flush()');
is($islices->(), '1 1 1 1', 'instance-aware lax: the four counters flushed');
my $rec_before = redis_cli('EVAL', q{local r = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do r[#r + 1] = k .. '=' .. redis.call('GET', k) end return r}, 0, "$prefix:cf:*");
iacl_user(1);
my $ierr0 = $ip->('SELECT flush_errors FROM distkit_stats');
# one batch holds the four increments: the worker waits (stopped while idle) until all are made
my $iw = stop_worker_idle($inode);
ok($iw, 'the worker stopped while idle');
$ip->(q{SELECT count(distkit_instance_inc(k, 5, 'lax')) FROM unnest(ARRAY['i1', 'i2', 'i3', 'ro']) k});
resume_worker($iw);
wait_for(sub { $ip->("SELECT flush_errors > $ierr0 FROM distkit_stats") eq 't' }, 'the flush refused by the ACL', 10);
like($ip->('SELECT last_error FROM distkit_stats'), qr/NOPERM|user executing the script/, '... with NOPERM');
is($islices->(), '1 1 1 1', 'the part was undone: i1..i3 unchanged, ro unchanged');
is(redis_cli('EVAL', q{local r = {} for _, k in ipairs(redis.call('KEYS', ARGV[1])) do r[#r + 1] = k .. '=' .. redis.call('GET', k) end return r}, 0, "$prefix:cf:*"),
	$rec_before, '... and so was its record');
iacl_user(0);
$ip->(q{SELECT distkit_flush('10 s')});
is($islices->(), '6 6 6 6', 'permission back: each increment applied exactly once');
is($ip->('SELECT dropped_deltas FROM distkit_stats'), '0', 'nothing dropped');
$inode->stop;

$node->stop;
like(slurp_file($node->logfile), qr/statement: ALTER SYSTEM SET distkit.redis_url = 'redis:\/\/dkacl:\*\*\*\@/,
	'the log has the statements (log_statement = all), redacted');
like(slurp_file($node->logfile), qr/parameter "distkit.redis_url" changed to "redis:\/\/dkacl:\*\*\*\@/,
	"the log has the postmaster's reload line, redacted");
unlike(slurp_file($node->logfile), qr/\Q$pw\E|s3cret/, 'the server log never shows a password');
done_testing();

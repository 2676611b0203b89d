# Transactional counting under concurrency: 8 pgbench clients that randomly
# commit, roll back and roll back to savepoints leave in Redis exactly the
# increments of what committed (strict and lax, from a trigger and from
# direct calls).  Then the documented gap: a reply lost at commit.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('txn');
my ($pport, $control) = start_proxy($port);
my $node = new_node('txn', "redis://127.0.0.1:$pport/0");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

$pg->(q{
CREATE TABLE ev (tenant int NOT NULL, mode distkit_mode NOT NULL);
CREATE TABLE direct (tenant int NOT NULL, mode distkit_mode NOT NULL);
CREATE FUNCTION ev_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM distkit_inc('ev.' || NEW.mode || '.' || NEW.tenant, 1, NEW.mode);
	RETURN NULL;
END $$;
ALTER FUNCTION ev_count() SET distkit.transactional = on;
CREATE TRIGGER ev_count AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION ev_count();
});

# 1. pgbench, 8 clients: each transaction inserts a counted row, makes a
# direct increment of a counter and of an instance-aware counter (in the
# other mode; session setting through PGOPTIONS) and records them,
# inserts another counted row after a savepoint and maybe rolls back to it,
# then commits (2 in 3) or rolls back.
my $script = "$PostgreSQL::Test::Utils::tmp_check/txn_mix.sql";
open my $fh, '>', $script or die;
print $fh <<'SQL';
\set t random(1, 10)
\set lax random(0, 1)
\set sp random(0, 1)
\set c random(0, 2)
BEGIN;
INSERT INTO ev VALUES (:t, CASE WHEN :lax = 1 THEN 'lax' ELSE 'strict' END::distkit_mode);
SELECT distkit_inc('direct.' || :t, 1, CASE WHEN :lax = 1 THEN 'lax' ELSE 'strict' END::distkit_mode);
SELECT total FROM distkit_instance_inc('inst.' || :t, 1, CASE WHEN :lax = 1 THEN 'strict' ELSE 'lax' END::distkit_mode);
INSERT INTO direct VALUES (:t, CASE WHEN :lax = 1 THEN 'lax' ELSE 'strict' END::distkit_mode);
SAVEPOINT s;
INSERT INTO ev VALUES (:t, CASE WHEN :lax = 1 THEN 'strict' ELSE 'lax' END::distkit_mode);
\if :sp
ROLLBACK TO s;
\endif
\if :c
COMMIT;
\else
ROLLBACK;
\endif
SQL
close $fh;
{
	local $ENV{PGOPTIONS} = '-c distkit.transactional=on';
	my ($out, $err) = run_command([ 'pgbench', '-n', '-M', 'prepared', '-c', '8', '-j', '8', '-T', '5',
		'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ]);
	my ($txns) = $out =~ /number of transactions actually processed: (\d+)/;
	ok($txns && $txns > 500, "pgbench ran (" . ($txns // 0) . " transactions)");
	is($err =~ /error|abort/i ? $err : '', '', 'no pgbench client failed');
	my $committed = $pg->('SELECT count(*) FROM direct');
	ok($committed > 0 && $committed < $txns, "some transactions committed ($committed), others rolled back");
}
$pg->('SELECT distkit_flush()');

# every counter equals its committed rows, key by key
my $expect = $pg->(q{
	SELECT string_agg(k || '=' || n, ' ' ORDER BY k) FROM (
		SELECT 'ev.' || mode || '.' || tenant AS k, count(*) AS n FROM ev GROUP BY 1
		UNION ALL
		SELECT 'direct.' || tenant, count(*) FROM direct GROUP BY 1) s});
my @got;
for my $k (sort map { my $m = $_; map { "$m.$_" } 1 .. 10 } qw(ev.strict ev.lax direct))
{
	my $v = redis_int("distkit:c:{$k}");
	push @got, "$k=$v" if $v != 0;
}
is(join(' ', sort @got), join(' ', sort split / /, $expect),
	'Redis holds exactly the committed increments of every key (trigger and direct, strict and lax)');
# instance-aware: this instance's slice in Redis, and the total, equal the committed rows
my $num = $pg->('SELECT instance_number FROM distkit_instances WHERE is_this_server');
my $inst_expect = $pg->(q{SELECT string_agg('inst.' || tenant || '=' || n, ' ' ORDER BY tenant)
	FROM (SELECT tenant, count(*) AS n FROM direct GROUP BY 1) s});
my @islices;
for my $t (1 .. 10)
{
	my $v = redis_cli('HGET', "distkit:i:{inst.$t}", "v:$num");
	push @islices, "inst.$t=$v" if $v ne '' && $v != 0;
}
is(join(' ', @islices), $inst_expect, "Redis holds exactly the committed instance-aware increments (this instance's slices)");
is($pg->(q{SELECT string_agg('inst.' || g || '=' || (distkit_instance_get('inst.' || g, 'strict')).total, ' ' ORDER BY g)
	FROM generate_series(1, 10) g WHERE (distkit_instance_get('inst.' || g, 'strict')).total <> 0}),
	$inst_expect, 'and their totals agree');

my ($strict_rows, $lax_rows) = split /\|/, $pg->(q{
	SELECT count(*) FILTER (WHERE mode = 'strict'), count(*) FILTER (WHERE mode = 'lax') FROM ev});
ok($strict_rows > 100 && $lax_rows > 100, "both modes were exercised ($strict_rows strict, $lax_rows lax rows)");
is($pg->(q{SELECT sum(value) FROM distkit_get_many(ARRAY(SELECT 'ev.lax.' || g FROM generate_series(1, 10) g), 'lax')}),
	$lax_rows, "this server's lax view agrees");

# 2. the gap: Redis applies the increments before PostgreSQL writes its
# commit record; if the reply is lost then, the transaction rolls back with
# SQLSTATE 08007 (outcome unknown) although Redis counted them
$pg->(q{SELECT distkit_set('gap', 0)});
$pg->(q{CREATE TABLE gap_rows (id int)});
my ($ret, $stdout, $stderr) = $node->psql('postgres', qq{
SET distkit.transactional = on;
\\set VERBOSITY verbose
BEGIN;
SELECT distkit_inc('gap', 1);
INSERT INTO gap_rows VALUES (1);
\\! printf 'cut-reply\\n' > '$control.tmp' && mv '$control.tmp' '$control'
COMMIT;
});
set_proxy_mode($control, 'pass');
like($stderr, qr/ERROR:  08007: lost the reply from Redis/, 'a lost reply at commit fails the commit with 08007');
like($stderr, qr/CONTEXT:  while applying 1 deferred distkit increment before commit; the transaction is rolled back/,
	'the error says that the transaction is rolled back');
is($pg->('SELECT count(*) FROM gap_rows'), '0', 'the transaction did not commit');
is(redis_int('distkit:c:{gap}'), 1, 'but Redis applied the increment (the documented gap)');

# 3. Redis killed between two commits: the next commit fails, later ones work
$pg->(q{SELECT distkit_set('kill', 0)});
my $ctl = "$FindBin::RealBin/../redis-ctl.sh";
($ret, $stdout, $stderr) = $node->psql('postgres', qq{
SET distkit.transactional = on;
SELECT distkit_inc('kill', 1);
BEGIN;
SELECT distkit_inc('kill', 10);
\\! '$ctl' kill
COMMIT;
});
like($stderr, qr/ERROR:  .*Redis/, 'Redis killed before COMMIT: the commit fails');
redis_ctl('start');
is($pg->(q{SET distkit.transactional = on; SELECT distkit_inc('kill', 100)}), '101',
	'after a restart the next transactional increment works');
is(redis_int('distkit:c:{kill}'), 101, 'Redis holds the committed increments only');

# 4. the path after the commit record: a lax key the buffer could hold at
# the call but not at COMMIT (it filled up meanwhile with increments Redis
# cannot take) is sent to Redis after the commit; Redis down then too, the
# increment is lost with a WARNING naming it.  The session must stay
# cancellable afterwards: an error caught after the commit record once
# zeroed the interrupt hold-off count that COMMIT restores, which made the
# session ignore statement_timeout and pg_cancel_backend.
my $small = new_node('txnsmall', "redis://127.0.0.1:$port/0", "distkit.lax_capacity = 64\n");
$small->safe_psql('postgres', q{SELECT distkit_inc('late', 1, 'lax'), distkit_flush()});
redis_ctl('stop');
($ret, $stdout, $stderr) = $small->psql('postgres', q{
BEGIN;
SET LOCAL distkit.transactional = on;
SELECT distkit_inc('late', 5, 'lax');
SET LOCAL distkit.transactional = off;
DO $$
BEGIN
	FOR i IN 1..200 LOOP
		BEGIN
			PERFORM distkit_inc('fill:' || i, 1, 'lax');
		EXCEPTION WHEN connection_failure OR sqlclient_unable_to_establish_sqlconnection THEN
			NULL;
		END;
	END LOOP;
END $$;
COMMIT;
SET statement_timeout = '300ms';
SELECT pg_sleep(5);
});
like($stderr, qr/WARNING:  distkit may have lost 1 committed lax increment, such as counter "late" by 5/,
	'a lax increment the full buffer refused at commit, with Redis down: lost with a WARNING naming it');
like($stderr, qr/ERROR:  canceling statement due to statement timeout/,
	'and the session still honours statement_timeout after that commit');
is($small->safe_psql('postgres', q{SELECT buffer_used FROM distkit_stats}), '64', 'the buffer was full');
redis_ctl('start');
$small->safe_psql('postgres', 'SELECT distkit_flush()');
is(redis_int('distkit:c:{late}'), 1, 'Redis has the increment made before, not the lost one');
$small->stop;

done_testing();

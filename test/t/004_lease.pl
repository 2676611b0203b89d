# Leases and semaphores across two PostgreSQL servers sharing one Redis:
# many sessions contend for one lease (never two holders at once, tokens
# strictly increasing, a stale holder fenced off), session end,
# pg_terminate_backend and a crashed backend; 50 sessions on a semaphore of
# 5 permits, and a crashed holder's permit reclaimed by its ttl.
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

my $port = start_redis('lease');

my @nodes;
for my $name ('a', 'b')
{
	my $node = new_node($name, "redis://127.0.0.1:$port/0",
		"log_statement = none\nmax_connections = 60\nrestart_after_crash = on\n");
	$node->safe_psql('postgres', <<'SQL');
CREATE TABLE cs_log (token bigint, t0 timestamptz, t1 timestamptz, inside bigint);
-- n times: take the lease 'cs', run a critical section that counts how many
-- are inside it (a Redis counter, independent of the lease), release
CREATE FUNCTION contend(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	tok bigint;
	t0 timestamptz;
	inside bigint;
	got int := 0;
BEGIN
	FOR i IN 1 .. n LOOP
		tok := distkit_lease_acquire('cs', '10 s', '60 s');
		CONTINUE WHEN tok IS NULL;
		t0 := clock_timestamp();
		inside := distkit_inc('cs:inside');
		PERFORM pg_sleep(random() * 0.003);
		PERFORM distkit_dec('cs:inside');
		INSERT INTO cs_log VALUES (tok, t0, clock_timestamp(), inside);
		got := got + 1;
		IF NOT distkit_lease_release('cs', tok) THEN
			RAISE EXCEPTION 'lost lease cs (token %)', tok;
		END IF;
	END LOOP;
	RETURN got;
END $$;
CREATE TABLE sem_log (inside bigint, counted int);
-- n times: take a permit of 'sem' (5 permits), note how many are inside
CREATE FUNCTION use_permit(n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	p text;
	got int := 0;
BEGIN
	FOR i IN 1 .. n LOOP
		p := distkit_semaphore_acquire('sem', 5, '30 s', '60 s');
		CONTINUE WHEN p IS NULL;
		INSERT INTO sem_log VALUES (distkit_inc('sem:inside'), distkit_semaphore_count('sem'));
		PERFORM pg_sleep(0.01 + random() * 0.02);
		PERFORM distkit_dec('sem:inside');
		got := got + 1;
		IF NOT distkit_semaphore_release('sem', p) THEN
			RAISE EXCEPTION 'lost permit %', p;
		END IF;
	END LOOP;
	RETURN got;
END $$;
CREATE TABLE resource (id int PRIMARY KEY, value text, fence bigint NOT NULL DEFAULT 0);
INSERT INTO resource VALUES (1, 'initial', 0);
SQL
	push @nodes, $node;
}
my ($pa, $pb) = @nodes;

# Run one SQL statement in each of the given clients (nodes) at once; returns the outputs.
sub concurrently
{
	my ($sql, @on) = @_;
	my (@h, @out, @err);
	for my $i (0 .. $#on)
	{
		$out[$i] = '';
		$err[$i] = '';
		push @h,
		  IPC::Run::start(
			[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $on[$i]->connstr('postgres'), '-c', $sql ],
			'>', \$out[$i], '2>', \$err[$i]);
	}
	for my $i (0 .. $#h)
	{
		$h[$i]->finish;
		chomp $out[$i];
		diag("client $i: $err[$i]") if $err[$i] ne '';
	}
	return @out;
}

# 1. 12 sessions on two servers, 25 acquisitions each, one lease
my @out = concurrently('SELECT contend(25)', ($pa) x 6, ($pb) x 6);
my $got = 0;
$got += $_ for @out;
is($got, 300, "12 sessions on 2 servers: every one of 300 acquisitions succeeded (@out)");
my @rows;
for my $node ($pa, $pb)
{
	for my $line (split /\n/,
		$node->safe_psql('postgres',
			q{SELECT token, extract(epoch FROM t0), extract(epoch FROM t1), inside FROM cs_log}))
	{
		push @rows, [ split /\|/, $line ];
	}
}
@rows = sort { $a->[0] <=> $b->[0] } @rows;
is(scalar(@rows), 300, 'both servers logged every critical section');
is(scalar(grep { $_->[3] != 1 } @rows), 0, 'never two sessions inside the critical section (Redis-side count)');
my ($overlaps, $misordered) = (0, 0);
for my $i (1 .. $#rows)
{
	$misordered++ if $rows[$i]->[0] <= $rows[ $i - 1 ]->[0];
	# both servers run on this machine: their clocks are one clock
	$overlaps++ if $rows[$i]->[1] < $rows[ $i - 1 ]->[2];
}
is($misordered, 0, 'tokens strictly increase: no token was handed out twice');
is($overlaps, 0, 'holders in token order, each interval after the previous one: at most one holder at any moment');
is(redis_cli('GET', 'distkit:c:{cs:inside}'), '0', 'nobody left inside');

# 2. fencing: holder A (server a) stalls past its ttl, B (server b) takes
# over; A's write with its stale token is rejected by the fenced UPDATE
my $fenced = sub {
	my ($tok, $who) = @_;
	return $pa->safe_psql('postgres',
		"UPDATE resource SET value = '$who', fence = $tok WHERE id = 1 AND fence <= $tok RETURNING value");
};
my $sa = $pa->background_psql('postgres');
my $ta = $sa->query_safe(q{SELECT distkit_lease_acquire('res:1', '500 ms')});
is($fenced->($ta, 'A'), 'A', "A (token $ta) writes");
usleep(800_000);	# A stalls (a GC pause, a slow disk...) and its lease expires
my $tb = $pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('res:1', '10 s')});
ok($tb > $ta, "B on the other server gets a higher token ($tb > $ta)");
is($fenced->($tb, 'B'), 'B', 'B writes');
is($sa->query_safe(q{SELECT distkit_lease_renew('res:1', } . $ta . q{, '10 s')}), 'f',
	'A learns it lost the lease when it tries to renew');
is($fenced->($ta, 'A-stale'), '', "A's write with its stale token is rejected");
is($pa->safe_psql('postgres', 'SELECT value || fence FROM resource'), "B$tb", 'the resource holds B\'s write');
$sa->quit;

# 3. session end releases; pg_terminate_backend releases; the next holder
# on the other server gets it well before the ttl
my $s = $pa->background_psql('postgres');
$s->query_safe(q{SELECT distkit_lease_acquire('end', '1 min')});
is($pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('end', '1 min') IS NULL}), 't',
	'held by a session of server a');
$s->quit;
my $t0 = time();
isnt($pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('end', '1 min', '10 s')}), '',
	'released when that session ended');
ok(time() - $t0 < 5, sprintf('... at once (%.2f s), not after the 1 min ttl', time() - $t0));

$s = $pa->background_psql('postgres', on_error_stop => 0);
$s->query_safe(q{SELECT distkit_lease_acquire('term', '1 min')});
my $pid = $s->query_safe('SELECT pg_backend_pid()');
like($pb->safe_psql('postgres', q{SELECT holder FROM distkit_lease_holder('term')}), qr{/postgres/$pid$},
	'the holder names database and pid');
$pa->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$t0 = time();
isnt($pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('term', '1 min', '10 s')}), '',
	'pg_terminate_backend of the holder released its lease');
ok(time() - $t0 < 5, sprintf('... at once (%.2f s)', time() - $t0));
$s->{run}->kill_kill;

# 4. a crashed backend releases nothing: its lease and permit expire by ttl
$s = $pa->background_psql('postgres', on_error_stop => 0);
$s->query_safe(q{SELECT distkit_lease_acquire('crash', '3 s')});
$s->query_safe(q{SELECT distkit_semaphore_acquire('crash', 1, '3 s')});
$pid = $s->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $pid;
my $killed_at = time();
$s->{run}->kill_kill;
is($pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('crash', '10 s') IS NULL}), 't',
	'after the crash the lease is still held');
is($pb->safe_psql('postgres', q{SELECT distkit_semaphore_count('crash')}), '1', '... and so is the permit');
isnt($pb->safe_psql('postgres', q{SELECT distkit_lease_acquire('crash', '10 s', '10 s')}), '',
	'the lease expired by its ttl');
my $after = time() - $killed_at;
ok($after > 1.5 && $after < 6, sprintf('... %.2f s after the crash (ttl 3 s)', $after));
isnt($pb->safe_psql('postgres', q{SELECT distkit_semaphore_acquire('crash', 1, '10 s', '10 s')}), '',
	'the crashed holder\'s permit was reclaimed by its ttl');
# server a restarted after the crash (restart_after_crash) and works
wait_for(sub { $pa->psql('postgres', 'SELECT 1') == 0 }, 'server a to restart');

# 5. semaphore: 50 sessions (25 per server), 5 permits, 4 uses each
@out = concurrently('SELECT use_permit(4)', ($pa) x 25, ($pb) x 25);
$got = 0;
$got += $_ for @out;
is($got, 200, '50 sessions: all 200 uses got a permit');
my ($max_inside, $max_counted) = (0, 0);
for my $node ($pa, $pb)
{
	my ($i, $c) = split /\|/, $node->safe_psql('postgres', 'SELECT max(inside), max(counted) FROM sem_log');
	$max_inside = $i if $i > $max_inside;
	$max_counted = $c if $c > $max_counted;
}
ok($max_inside <= 5, "never more than 5 holders at once (at most $max_inside seen inside)");
ok($max_counted <= 5, "distkit_semaphore_count never above 5 (at most $max_counted)");
ok($max_inside >= 3, "the permits were used concurrently ($max_inside at once)");
is($pa->safe_psql('postgres', q{SELECT distkit_semaphore_count('sem')}), '0', 'all permits returned');

$_->stop for @nodes;
done_testing();

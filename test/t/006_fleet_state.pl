# Fleet state shared by two PostgreSQL servers through one Redis: the
# cache (values, expiry, the cache-aside pattern under concurrency: one
# computation wins), idempotency keys (the webhook example called from both
# servers at once performs its side effect once; a claim whose holder dies
# expires after the lease) and circuit breakers (every transition driven
# from both servers; half-open trial slots counted across the fleet).
# Time-dependent checks are bounded from the parameters (open_for, lease,
# window) and from times measured around the calls.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $port = start_redis('fleet');

my @nodes;
for my $name ('a', 'b')
{
	my $node = new_node($name, "redis://127.0.0.1:$port/0", "log_statement = none\n");
	$node->safe_psql('postgres', <<"SQL");
CREATE FUNCTION node() RETURNS text LANGUAGE sql IMMUTABLE AS \$\$ SELECT '$name' \$\$;

-- the README's cache-aside pattern; the computation is slow (0.3 s) so
-- that concurrent callers all miss, and each records itself
CREATE TABLE computations (computed_by text);
CREATE FUNCTION compute_report(tenant text) RETURNS jsonb
LANGUAGE plpgsql AS \$\$
DECLARE
	me text := node() || ':' || pg_backend_pid();
BEGIN
	PERFORM pg_sleep(0.3);
	INSERT INTO computations VALUES (me);
	RETURN jsonb_build_object('tenant', tenant, 'computed_by', me);
END \$\$;
CREATE FUNCTION tenant_report(tenant text) RETURNS jsonb
LANGUAGE plpgsql AS \$\$
DECLARE
	k text := 'report:' || tenant;
	v jsonb;
BEGIN
	v := distkit_cache_get(k);
	IF v IS NOT NULL THEN
		RETURN v;
	END IF;
	v := compute_report(tenant);
	IF NOT distkit_cache_add(k, v, '5 minutes') THEN
		v := coalesce(distkit_cache_get(k), v);
	END IF;
	RETURN v;
END \$\$;

-- the README's webhook handler; the side effect (an insert) is slow
-- (0.5 s) so that concurrent callers find the claim in progress
CREATE TABLE payments (event_id text PRIMARY KEY, amount int, id serial);
CREATE FUNCTION handle_payment_webhook(event_id text, payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS \$\$
DECLARE
	k text := 'webhook:' || event_id;
	claim record;
	res jsonb;
BEGIN
	FOR attempt IN 1 .. 200 LOOP
		SELECT * INTO claim FROM distkit_idempotency_begin(k, '7 days');
		EXIT WHEN claim.state <> 'in_progress';
		PERFORM pg_sleep(0.05);
	END LOOP;
	IF claim.state = 'completed' THEN
		RETURN claim.result;
	ELSIF claim.state = 'in_progress' THEN
		RAISE EXCEPTION 'webhook event % is still being handled', event_id
			USING ERRCODE = 'lock_not_available', HINT = 'Retry later.';
	END IF;
	BEGIN
		PERFORM pg_sleep(0.5);
		INSERT INTO payments (event_id, amount)
		VALUES (event_id, (payload ->> 'amount')::int)
		RETURNING jsonb_build_object('payment', id, 'amount', amount, 'node', node()) INTO res;
	EXCEPTION WHEN OTHERS THEN
		PERFORM distkit_idempotency_abandon(k);
		RAISE;
	END;
	PERFORM distkit_idempotency_complete(k, res);
	RETURN res;
END \$\$;
SQL
	push @nodes, $node;
}
my ($pa, $pb) = @nodes;

# Run one SQL script on each of the given nodes at the same time; returns
# the outputs.
sub concurrently
{
	my ($sql, @on) = @_;
	my (@h, @out, @err);
	for my $i (0 .. $#on)
	{
		$out[$i] = '';
		$err[$i] = '';
		push @h,
		  IPC::Run::start([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $on[$i]->connstr('postgres'),
				'-c', $sql ],
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

sub sql_a { return $pa->safe_psql('postgres', $_[0]); }
sub sql_b { return $pb->safe_psql('postgres', $_[0]); }

###
### Cache
###
sql_a(q{SELECT distkit_cache_set('shared', '{"from": "a"}', '1000 s')});
is(sql_b(q{SELECT distkit_cache_get('shared')}), '{"from": "a"}', 'cache: b reads what a stored');
is(sql_b(q{SELECT distkit_cache_ttl('shared') BETWEEN '998 s' AND '1000 s'}), 't', 'cache: b sees the ttl a set');
is(sql_b(q{SELECT distkit_cache_add('shared', '{"from": "b"}')}), 'f', 'cache: b cannot add over a\'s value');
is(sql_b(q{SELECT distkit_cache_delete('shared')}), 't', 'cache: b deletes it');
is(sql_a(q{SELECT distkit_cache_exists('shared')}), 'f', 'cache: a sees it gone');
# expiry, seen from both servers
my $t0 = time();
sql_a(q{SELECT distkit_cache_set_text('brief', 'here', '2 s')});
is(sql_b(q{SELECT distkit_cache_get_text('brief')}), 'here', 'cache: b reads a value with a 2 s ttl');
is(sql_b(q{SELECT distkit_cache_ttl('brief') BETWEEN '0' AND '2 s'}), 't', 'cache: b sees the 2 s ttl');
sleep($t0 + 2.2 - time());
is(sql_b(q{SELECT coalesce(distkit_cache_get_text('brief'), 'expired')}), 'expired', 'cache: expired for b after 2.2 s');
is(sql_a(q{SELECT distkit_cache_exists('brief')}), 'f', 'cache: expired for a too');

# cache-aside under concurrency: 4 sessions on each server miss at once,
# compute, and add; only one computation wins and every session returns it
my @out = concurrently(q{SELECT tenant_report('acme')}, $pa, $pa, $pa, $pa, $pb, $pb, $pb, $pb);
my %distinct = map { $_ => 1 } @out;
is(scalar(keys %distinct), 1, 'cache-aside: all 8 sessions on 2 servers return the same value');
my $stored = sql_a(q{SELECT distkit_cache_get('report:acme')});
is($out[0], $stored, 'cache-aside: the value returned is the value in the cache');
my ($winner) = $stored =~ /"computed_by": "([ab]:\d+)"/;
ok(defined $winner, "cache-aside: the value names the computation that won ($stored)");
my $computations = sql_a(q{SELECT count(*) FROM computations}) + sql_b(q{SELECT count(*) FROM computations});
my $winner_rows =
  sql_a(qq{SELECT count(*) FROM computations WHERE computed_by = '$winner'}) +
  sql_b(qq{SELECT count(*) FROM computations WHERE computed_by = '$winner'});
ok($computations >= 1 && $computations <= 8, "cache-aside: $computations computations for 8 sessions");
is($winner_rows, 1, 'cache-aside: the winning value comes from exactly one computation');
# afterwards, hits only
concurrently(q{SELECT tenant_report('acme')}, $pa, $pb);
is(sql_a(q{SELECT count(*) FROM computations}) + sql_b(q{SELECT count(*) FROM computations}),
	$computations, 'cache-aside: later calls on both servers compute nothing');

###
### Idempotency keys
###
# the webhook called on a, then on b: one payment, the same result
my $r1 = sql_a(q{SELECT handle_payment_webhook('evt_seq', '{"amount": 10}')});
my $r2 = sql_b(q{SELECT handle_payment_webhook('evt_seq', '{"amount": 10}')});
is($r1, '{"node": "a", "amount": 10, "payment": 1}', 'webhook: a handles the event');
is($r2, $r1, 'webhook: b returns the same result');
is(sql_b(q{SELECT count(*) FROM payments}), '0', 'webhook: b performed no side effect');

# called from both servers at once (3 sessions each): one payment in all,
# the same result everywhere
@out = concurrently(q{SELECT handle_payment_webhook('evt_par', '{"amount": 20}')},
	$pa, $pa, $pa, $pb, $pb, $pb);
%distinct = map { $_ => 1 } @out;
is(scalar(keys %distinct), 1, "webhook at once on 2 servers: all 6 calls return the same result ($out[0])");
my $payments = sql_a(q{SELECT count(*) FROM payments WHERE event_id = 'evt_par'}) +
  sql_b(q{SELECT count(*) FROM payments WHERE event_id = 'evt_par'});
is($payments, 1, 'webhook at once on 2 servers: the side effect happened once');
like($out[0], qr/^\{"node": "[ab]", "amount": 20, "payment": \d+\}$/, 'webhook: the result is the payment');

# a claim whose holder dies expires after the lease (1.5 s here)
my ($in, $hout, $herr) = ('', '', '');
my $holder = IPC::Run::start([ 'psql', '-XAtq', '-d', $pa->connstr('postgres') ],
	'<', \$in, '>', \$hout, '2>', \$herr);
my $before_claim = time();
$in .= "SET distkit.idempotency_lease = '1500ms';\n"
  . "SELECT state || ' ' || pg_backend_pid() FROM distkit_idempotency_begin('dies');\n";
wait_for(sub { $holder->pump_nb; $hout =~ /^started \d+$/m }, 'the holder to claim the key');
my ($holder_pid) = $hout =~ /^started (\d+)$/m;
is(sql_b(q{SELECT state FROM distkit_idempotency_begin('dies')}), 'in_progress', 'lease: b sees the claim in progress');
is(sql_a(qq{SELECT pg_terminate_backend($holder_pid)}), 't', 'lease: the holder\'s backend is terminated');
$holder->finish;
my $started_at;
wait_for(
	sub {
		my $s = sql_b(q{SELECT state FROM distkit_idempotency_begin('dies')});
		$started_at = time() if $s eq 'started';
		return $s eq 'started';
	},
	'the claim to expire', 10);
my $free_after = $started_at - $before_claim;
ok($free_after >= 1.45 && $free_after <= 1.5 + 2,
	sprintf('lease: the key is free again %.2f s after the claim (lease 1.5 s)', $free_after));
is(sql_b(q{SELECT distkit_idempotency_complete('dies', '"b finished"')}), 'f',
	'lease: another session of b does not hold the claim b took');

###
### Circuit breakers, driven from both servers
### (a boolean concatenated to text reads true / false)
###
sql_a(q{SELECT distkit_breaker_configure('svc', failure_rate_threshold => 50, minimum_calls => 4,
	sliding_window => '10 s', open_for => '2 s', half_open_calls => 3)});
is(sql_b(q{SELECT state || ' ' || calls FROM distkit_breaker_state('svc')}), 'closed 0', 'breaker: closed for b');
is(sql_a(q{SELECT distkit_breaker_record('svc', true)}), 'closed', 'breaker: a records a success');
is(sql_b(q{SELECT distkit_breaker_record('svc', false)}), 'closed', 'breaker: b records a failure');
is(sql_a(q{SELECT distkit_breaker_record('svc', true)}), 'closed', 'breaker: a records a success');
is(sql_b(q{SELECT state || ' ' || round(failure_rate::numeric, 2) || ' ' || calls FROM distkit_breaker_state('svc')}),
	'closed 33.33 3', 'breaker: b sees both servers\' calls in the window');
my $t_open = time();
is(sql_b(q{SELECT distkit_breaker_record('svc', false)}), 'open', 'breaker: closed -> open at 2 of 4 failed (b)');
is(sql_a(q{SELECT state || ' ' || (retry_after BETWEEN '1 s' AND '2 s') FROM distkit_breaker_state('svc')}),
	'open true', 'breaker: a sees it open, retry_after within open_for');
is(sql_a(q{SELECT distkit_breaker_allow('svc')}), 'f', 'breaker: a is rejected while open');
is(sql_b(q{SELECT distkit_breaker_allow('svc')}), 'f', 'breaker: b is rejected while open');

# open -> half-open after open_for (2 s): a polls until a trial is admitted
my $t_half;
wait_for(
	sub {
		return 0 unless sql_a(q{SELECT distkit_breaker_allow('svc')}) eq 't';
		$t_half = time();
		return 1;
	},
	'the breaker to admit a trial', 10);
my $waited = $t_half - $t_open;
ok($waited >= 1.99 && $waited <= 2 + 1.5,
	sprintf('breaker: open -> half-open after %.2f s (open_for 2 s)', $waited));
is(sql_b(q{SELECT state FROM distkit_breaker_state('svc')}), 'half_open', 'breaker: b sees it half-open');
# 1 of 3 trial slots taken: 8 sessions on 2 servers trying 5 times each get
# exactly the 2 left
@out = concurrently(q{SELECT count(*) FILTER (WHERE distkit_breaker_allow('svc')) FROM generate_series(1, 5)},
	$pa, $pa, $pa, $pa, $pb, $pb, $pb, $pb);
my $trials = 0;
$trials += $_ for @out;
is($trials, 2, "breaker: exactly the 2 free trial slots admitted across 2 servers (@out)");
is(sql_a(q{SELECT distkit_breaker_record('svc', true)}), 'half_open', 'breaker: trial 1 succeeds (a)');
is(sql_b(q{SELECT distkit_breaker_record('svc', true)}), 'half_open', 'breaker: trial 2 succeeds (b)');
is(sql_a(q{SELECT distkit_breaker_allow('svc')}), 'f', 'breaker: no slot left while trial 3 runs');
is(sql_b(q{SELECT distkit_breaker_record('svc', true)}), 'closed', 'breaker: half-open -> closed after 3 successes (b)');
is(sql_a(q{SELECT state || ' ' || calls || ' ' || distkit_breaker_allow('svc') FROM distkit_breaker_state('svc')}),
	'closed 0 true', 'breaker: a sees it closed with an empty window');

# half-open -> open on a failed trial
sql_a(q{SELECT distkit_breaker_record('svc', false), distkit_breaker_record('svc', false)});
$t_open = time();
is(sql_b(q{SELECT distkit_breaker_record('svc', false) || ' ' || distkit_breaker_record('svc', false)}),
	'closed open', 'breaker: 4 failures from 2 servers open it again');
wait_for(sub { sql_b(q{SELECT distkit_breaker_allow('svc')}) eq 't' }, 'a trial on b', 10);
$waited = time() - $t_open;
ok($waited >= 1.99, sprintf('breaker: the trial came %.2f s after opening (open_for 2 s)', $waited));
is(sql_a(q{SELECT distkit_breaker_record('svc', false)}), 'open', 'breaker: half-open -> open on a failed trial (a)');
is(sql_b(q{SELECT state || ' ' || (retry_after BETWEEN '1 s' AND '2 s') || ' ' || distkit_breaker_allow('svc') FROM distkit_breaker_state('svc')}),
	'open true false', 'breaker: b sees it open again for open_for');

# the kill switch: tripped on a, forced open on b until reset, whatever the time
sql_a(q{SELECT distkit_breaker_trip('svc')});
is(sql_b(q{SELECT state || ' ' || distkit_breaker_allow('svc') FROM distkit_breaker_state('svc')}),
	'forced_open false', 'breaker: b sees the breaker a tripped');
sleep(2.2);
is(sql_b(q{SELECT state || ' ' || distkit_breaker_allow('svc') || ' ' || distkit_breaker_record('svc', true) FROM distkit_breaker_state('svc')}),
	'forced_open false forced_open', 'breaker: still forced open after open_for has passed');
is(sql_b(q{SELECT distkit_breaker_reset('svc')}), 't', 'breaker: b resets it');
is(sql_a(q{SELECT state || ' ' || distkit_breaker_allow('svc') FROM distkit_breaker_state('svc')}),
	'closed true', 'breaker: a sees it closed');

# slow calls from both servers; the configuration b writes applies on a
sql_b(q{SELECT distkit_breaker_configure('slow', 50, 4, '10 s', '1000 s', 1, slow_call_threshold => '100 ms')});
is(sql_a(q{SELECT distkit_breaker_record('slow', true, '20 ms') || ' ' || distkit_breaker_record('slow', true, '150 ms')}),
	'closed closed', 'slow calls: a records a fast and a slow success');
is(sql_b(q{SELECT distkit_breaker_record('slow', true, '20 ms')}), 'closed', 'slow calls: b records a fast one');
is(sql_b(q{SELECT distkit_breaker_record('slow', true, '1 s')}), 'open', 'slow calls: 2 slow of 4 open it (b)');
is(sql_a(q{SELECT state || ' ' || distkit_breaker_allow('slow') FROM distkit_breaker_state('slow')}),
	'open false', 'slow calls: a is rejected');

# the window (2 s) from both servers: calls older than the window stop counting
sql_a(q{SELECT distkit_breaker_configure('win', 50, 3, '2 s', '1000 s')});
sql_a(q{SELECT distkit_breaker_record('win', false)});
sql_b(q{SELECT distkit_breaker_record('win', false)});
is(sql_a(q{SELECT calls FROM distkit_breaker_state('win')}), '2', 'window: 2 failures from 2 servers');
sleep(2.1);
is(sql_b(q{SELECT distkit_breaker_record('win', false)}), 'closed', 'window: a third failure 2.1 s later does not open it');
is(sql_a(q{SELECT state || ' ' || calls FROM distkit_breaker_state('win')}), 'closed 1', 'window: only it counts');

$_->stop for @nodes;
done_testing();

# Lax counters against faults: replies lost after Redis applied a batch
# (exactly-once flush), added latency, Redis killed and restarted, and a
# full buffer.  Every acknowledged increment is counted and compared with
# what Redis holds.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('faults');
my ($pport, $control) = start_proxy($port);
my $node = new_node('faults', "redis://127.0.0.1:$pport/0", "distkit.lax_capacity = 64\n");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# warm up: scripts loaded, one flush done through the proxy
$pg->(q{SELECT distkit_inc('cut', 1, 'lax')});
$pg->('SELECT distkit_flush()');
is(redis_int('distkit:c:{cut}'), 1, 'warm-up flush through the proxy');

# 1. every flush reply is lost after Redis applied the batch
set_proxy_mode($control, 'cut-reply');
my $acked = 1;
$pg->(q{SELECT count(distkit_inc('cut', 1, 'lax')) FROM generate_series(1, 100)});
$acked += 100;
# the flusher's batch (all or part of these 100, depending on timing)
# reaches Redis and is applied, but its reply is lost
wait_for(sub { redis_int('distkit:c:{cut}') > 1 }, 'Redis to apply the batch whose reply is lost');
my $applied = redis_int('distkit:c:{cut}');
ok($applied > 1 && $applied <= $acked, "the in-flight batch was applied once ($applied)");
wait_for(sub { $pg->('SELECT flush_errors > 0 FROM distkit_stats') eq 't' }, 'the flusher to notice the lost reply');
# the flusher does not know the batch arrived: it stays in flight and is
# resent with the same sequence number; later increments wait behind it
for (1 .. 4)
{
	$pg->(q{SELECT count(distkit_inc('cut', 1, 'lax')) FROM generate_series(1, 100)});
	$acked += 100;
}
sleep 1;	# several resends, each refused by the flush script as a duplicate
is(redis_int('distkit:c:{cut}'), $applied, "the resent batch was not applied twice (Redis stays at $applied)");
is($pg->('SELECT pending_delta FROM distkit_stats'), $acked - 1,
	'unacknowledged and newer increments stay buffered on the PostgreSQL side');
set_proxy_mode($control, 'pass');
$pg->(q{SELECT distkit_flush('10 s')});
is(redis_int('distkit:c:{cut}'), $acked, 'after recovery Redis holds each increment exactly once');
is($pg->('SELECT pending_delta FROM distkit_stats'), '0', 'nothing left in flight');

# 1b. the same for a batch holding both kinds of counter: a simple one and
# an instance-aware one, two parts of one group under one exactly-once
# record.  The worker is stopped while idle so that one batch holds both.
my $islice = sub {
	redis_cli('EVAL', q{local s = 0
local f = redis.call('HGETALL', KEYS[1])
for i = 1, #f, 2 do if string.sub(f[i], 1, 2) == 'v:' then s = s + tonumber(f[i + 1]) end end
return s}, 1, 'distkit:i:{icut}');
};
$pg->(q{SELECT distkit_inc('cut2', 1, 'lax'), distkit_instance_inc('icut', 1, 'lax')});
$pg->('SELECT distkit_flush()');
is(redis_int('distkit:c:{cut2}') . ' ' . $islice->(), '1 1', 'warm-up: both kinds flushed');
my $w = stop_worker_idle($node);
ok($w, 'the worker stopped while idle');
$pg->(q{SELECT count(distkit_inc('cut2', 1, 'lax')), count(distkit_instance_inc('icut', 1, 'lax')) FROM generate_series(1, 100)});
my $errs = $pg->('SELECT flush_errors FROM distkit_stats');
set_proxy_mode($control, 'cut-reply');
resume_worker($w);
wait_for(sub { $pg->("SELECT flush_errors > $errs FROM distkit_stats") eq 't' }, 'the flusher to lose the reply of the two-kind batch');
is(redis_int('distkit:c:{cut2}') . ' ' . $islice->(), '101 101', 'the batch of both kinds was applied once');
$pg->(q{SELECT count(distkit_inc('cut2', 1, 'lax')), count(distkit_instance_inc('icut', 1, 'lax')) FROM generate_series(1, 50)});
sleep 1;	# several resends, each answered "already applied"
is(redis_int('distkit:c:{cut2}') . ' ' . $islice->(), '101 101', '... and not again by its resends');
set_proxy_mode($control, 'pass');
$pg->(q{SELECT distkit_flush('10 s')});
is(redis_int('distkit:c:{cut2}') . ' ' . $islice->(), '151 151', 'after recovery both hold each increment exactly once');
is($pg->(q{SELECT total FROM distkit_instance_get('icut')}), '151', '... and so does the instance-aware total');

# 2. latency: lax calls stay local; the totals stay exact
set_proxy_mode($control, 'latency:30');
$pg->(q{SELECT count(distkit_inc('slow:' || (g % 5), 1, 'lax')) FROM generate_series(1, 5000) g});
$pg->(q{SELECT distkit_flush('10 s')});
my $slow = 0;
$slow += redis_int("distkit:c:{slow:$_}") for 0 .. 4;
is($slow, 5000, 'with 30 ms of added latency all 5000 increments arrived once');
is($pg->(q{SELECT distkit_inc('slow:strict', 1, 'strict')}), '1', 'a strict call works through the slow link');
set_proxy_mode($control, 'pass');

# 3. Redis killed (SIGKILL, persistence on) during lax load, then restarted
$pg->(q{SELECT distkit_set('kill', 0)});
my $killed = 0;
for my $round (1 .. 6)
{
	$pg->(q{SELECT count(distkit_inc('kill', 1, 'lax')) FROM generate_series(1, 500)});
	$killed += 500;
	if ($round == 2) { redis_ctl('kill'); }
	if ($round == 4) { redis_ctl('start'); }
}
$pg->(q{SELECT distkit_flush('15 s')});
is(redis_int('distkit:c:{kill}'), $killed, 'Redis SIGKILLed and restarted: every acknowledged increment arrived once');
my $log = slurp_file($node->logfile);
my $outages = () = $log =~ /distkit worker cannot flush to Redis/g;
ok($outages >= 1, "the outage was logged ($outages times, once per outage)");
like($log, qr/distkit worker reached Redis again/, 'the recovery was logged');

# 4. a full buffer (64 entries): new keys are counted strictly, never dropped
my $before = $pg->('SELECT strict_fallbacks FROM distkit_stats');
$pg->(q{SELECT count(distkit_inc('full:' || (g % 300), 1, 'lax')) FROM generate_series(1, 3000) g});
$pg->(q{SELECT distkit_flush('10 s')});
my $full = 0;
$full += redis_int("distkit:c:{full:$_}") for 0 .. 299;
is($full, 3000, 'with the buffer full all 3000 increments over 300 keys arrived once');
ok($pg->('SELECT strict_fallbacks FROM distkit_stats') > $before, 'the strict fallbacks were counted');
is($pg->('SELECT buffer_used <= buffer_capacity AND buffer_capacity = 64 FROM distkit_stats'), 't',
	'the buffer never exceeds its capacity');
# idle, flushed keys are evicted to make room for new ones
$pg->(q{SELECT count(distkit_inc('fresh:' || g, 1, 'lax')) FROM generate_series(1, 10) g});
$pg->(q{SELECT distkit_flush('10 s')});
my $fresh = 0;
$fresh += redis_int("distkit:c:{fresh:$_}") for 1 .. 10;
is($fresh, 10, 'new keys after eviction are counted exactly');

done_testing();

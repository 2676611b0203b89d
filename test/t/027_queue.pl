# The transactional outbox under faults (issue 18): a trigger sends one
# event per row of table ev; the rows that committed are the truth, and
# after every fault the queue's stream must hold exactly one entry per
# committed row -- none lost, none doubled, none from a rolled-back
# transaction.  Faults, each by design: out-of-order commits, Redis
# stopped while rows commit (the backlog view shows them), every reply of
# a shipping script lost (the proxy cuts it after Redis ran the script),
# the shipper killed with -9 while it waits for Redis mid-batch (server
# crash restart), an immediate stop of the server during load.  Then DROP
# DATABASE and ALTER DATABASE RENAME with a shipper connected to the
# database, a standby that must not ship, and consumers of one group (SQL
# and redis-cli) with one that dies without acknowledging.
# DISTKIT_TAP_REDIS_MODE=cluster runs it against a 3-master Redis Cluster
# (queues spread over the masters: one queue per master is checked); the
# faults that need the proxy in front of one Redis (lost replies, the
# shipper killed mid-batch, the standby whose primary cannot ship) run in
# single mode only (030_outbox_crash.pl has more kill -9 cases).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IPC::Run;

my $mode = $ENV{DISTKIT_TAP_REDIS_MODE} // 'single';
my $cluster = $mode eq 'cluster';
my ($redis_port, $proxy_port, $control, $url);
if ($cluster)
{
	$url = start_cluster('queue27');
}
else
{
	$redis_port = start_redis('queue27');
	($proxy_port, $control) = start_proxy($redis_port);
	$url = "redis://127.0.0.1:$proxy_port/0";
}
my $node = new_node('queue27', $url, <<'CONF');
restart_after_crash = on
wal_level = replica
max_wal_senders = 4
distkit.connect_timeout = '500ms'
distkit.command_timeout = '1s'
distkit.outbox_databases = 'postgres'
CONF
my $pg = sub { $node->safe_psql('postgres', $_[0]) };
my $stream = 'distkit:q:{q:ev}';

create_outbox_trigger($node, 'q:ev');
$pg->(q{
-- a load: rows from..to, one transaction each; every third transaction
-- also inserts a row it rolls back (a savepoint) and every fifth one is
-- rolled back whole
CREATE PROCEDURE ev_load(a int, b int) LANGUAGE plpgsql AS $$
BEGIN
	FOR k IN a .. b LOOP
		IF k % 5 = 0 THEN
			INSERT INTO ev VALUES (k);
			ROLLBACK;
			CONTINUE;
		END IF;
		INSERT INTO ev VALUES (k);
		IF k % 3 = 0 THEN
			BEGIN
				INSERT INTO ev VALUES (-k);
				RAISE EXCEPTION 'undo';
			EXCEPTION WHEN raise_exception THEN
				NULL;
			END;
		END IF;
		COMMIT;
	END LOOP;
END $$;
});

# The payloads' i of every entry of the stream, sorted.
sub stream_values { return join(',', @{ (stream_entries($stream))[0] }) }

# Wait until the outbox is empty, then compare the stream with ev.
sub check
{
	my ($label) = @_;
	wait_for(sub {
		my ($rc, $out) = $node->psql('postgres', 'SELECT count(*) FROM distkit_outbox');
		$rc == 0 && $out eq '0';
	}, "$label: the outbox to drain", 60);
	my $committed = $pg->('SELECT coalesce(string_agg(i::text, \',\' ORDER BY i), \'\') FROM ev');
	my $n = $pg->('SELECT count(*) FROM ev');
	is(redis_cli('XLEN', $stream), $n, "$label: the stream has one entry per committed row ($n)");
	is(stream_values(), $committed, "$label: ... exactly the committed rows, each once");
}

# A load in the background (psql), for faults during it.
sub start_load
{
	my ($a, $b) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start([ $node->installed_command('psql'), '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
		'-c', "CALL ev_load($a, $b)" ], '>', \$out, '2>', \$err);
}

# 1. steady load, rollbacks of every kind
$pg->('CALL ev_load(1, 1000)');
check('1,000 transactions');
is($pg->('SELECT count(*) FROM ev'), '800', 'of which 800 committed (every fifth rolled back)');

# 2. out-of-order commits: A takes an outbox id, B takes a larger one and
# ships; A commits afterwards
my $sa = $node->background_psql('postgres');
$sa->query_safe('BEGIN');
$sa->query_safe('INSERT INTO ev VALUES (2001)');
my $a_id = $sa->query_safe(q{SELECT max(id) FROM distkit_outbox});
$pg->('INSERT INTO ev VALUES (2002)');
wait_for(sub { stream_values() =~ /,2002$/ && $pg->(q{SELECT count(*) FROM distkit_outbox}) eq '0' },
	'B (the larger id) to ship and its row to be deleted');
unlike(stream_values(), qr/(^|,)2001(,|$)/, 'B shipped while A is uncommitted (its row is invisible to the shipper)');
$sa->query_safe('COMMIT');
$sa->quit;
check('out-of-order commits');
ok($a_id ne '', "A's outbox id ($a_id) was smaller and still shipped once");

my $load;

# 3. Redis stopped while rows commit: they wait, the view shows them
redis_ctl('stop');
$pg->('CALL ev_load(3001, 3300)');
is($pg->(q{SELECT messages FROM distkit_outbox_backlog WHERE queue = 'q:ev'}), '240',
	'Redis down: the 240 committed messages wait in the backlog view');
ok($pg->(q{SELECT oldest_age > '0' FROM distkit_outbox_backlog}) eq 't', '... with their age');
$load = start_load(3301, 3600);
sleep 2;
redis_ctl('start');
$load->finish;
check('Redis stopped during load');

# 4. every reply of a shipping script lost: Redis runs it, the shipper
# never learns it and sends the rows again
if (!$cluster)
{
	set_proxy_mode($control, 'cut-reply');
	$pg->('CALL ev_load(4001, 4100)');
	wait_for(sub { redis_cli('XLEN', $stream) == $pg->('SELECT count(*) FROM ev') }, 'the scripts to run in Redis');
	is($pg->(q{SELECT count(*) FROM distkit_outbox}), '80',
		'replies lost: the 80 rows are in the stream and still in the outbox');
	sleep 2;	# several resends, all refused as already there
	set_proxy_mode($control, 'pass');
	check('lost replies');

	# 5. the shipper killed (-9) while it waits for Redis in the middle of a batch
	set_proxy_mode($control, 'latency:3000');
	$load = start_load(5001, 5300);
	wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper'
		AND query = 'shipping outbox rows to Redis' AND state = 'active'}) eq '1' }, 'the shipper to wait for Redis mid-batch');
	my $pid = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper'});
	kill 'KILL', $pid;
	$load->finish;
	set_proxy_mode($control, 'pass');
	wait_for(sub { my ($rc) = $node->psql('postgres', 'SELECT 1'); $rc == 0 }, 'the crash restart');
	$load = start_load(5301, 5400);
	$load->finish;
	check('shipper killed mid-batch');
}

# 6. immediate stop of the server during load
$load = start_load(6001, 7000);
usleep(500_000);
$node->stop('immediate');
$load->finish;
$node->start;
check('immediate stop during load');

# 7. DROP DATABASE with a shipper connected to it
$pg->('CREATE DATABASE d27');
$node->safe_psql('d27', q{CREATE EXTENSION distkit; SELECT distkit_outbox_send('q:d27', '{"x": 1}')});
wait_for(sub { $pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper' AND datname = 'd27'}) eq '1' },
	'the shipper of d27 to start on demand');
wait_for(sub { redis_cli('XLEN', 'distkit:q:{q:d27}') eq '1' }, 'the message of d27 to ship');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE d27');
is($rc, 0, 'DROP DATABASE succeeds while its shipper was connected') or diag($err);
is($pg->(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper' AND datname = 'd27'}), '0',
	'... the shipper has exited');

# ALTER DATABASE ... RENAME too
$pg->('CREATE DATABASE d27b');
$node->safe_psql('d27b', q{CREATE EXTENSION distkit; SELECT distkit_outbox_send('q:d27', '{"x": 2}')});
wait_for(sub { redis_cli('XLEN', 'distkit:q:{q:d27}') eq '2' }, 'the message of d27b to ship');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE d27b RENAME TO d27c');
is($rc, 0, 'ALTER DATABASE RENAME succeeds while its shipper was connected') or diag($err);
$node->safe_psql('d27c', q{SELECT distkit_outbox_send('q:d27', '{"x": 3}')});
wait_for(sub { redis_cli('XLEN', 'distkit:q:{q:d27}') eq '3' }, 'the next commit to start a shipper again and ship');
$pg->('DROP DATABASE d27c');

# 8. a standby never ships
if (!$cluster)
{
	$node->backup('b27');
	my $standby = PostgreSQL::Test::Cluster->new('standby27');
	$standby->init_from_backup($node, 'b27', has_streaming => 1);
	# the standby reaches Redis directly; the primary cannot ship for now
	$standby->append_conf('postgresql.conf', "distkit.redis_url = 'redis://127.0.0.1:$redis_port/0'");
	$standby->start;
	set_proxy_mode($control, 'refuse');
	$pg->('CALL ev_load(8001, 8010)');
	$node->wait_for_catchup($standby);
	sleep 2;
	is($standby->safe_psql('postgres', 'SELECT count(*) FROM distkit_outbox'), '8', 'the standby sees the 8 waiting rows');
	is(redis_cli('XLEN', $stream), $pg->('SELECT count(*) FROM ev') - 8, '... and ships none of them');
	set_proxy_mode($control, 'pass');
	check('standby');
	$standby->stop;
}
else
{
	# queues spread over the masters: for each master a queue whose slot it
	# serves gets 10 outbox messages, and that master holds its stream
	my %queue_of;
	for (my $k = 0; keys(%queue_of) < 3 && $k < 1000; $k++)
	{
		my $slot = redis_cli('CLUSTER', 'KEYSLOT', "distkit:q:{q:spread$k}");
		my $port = cluster_node_of_slot($slot);
		$queue_of{$port} //= "q:spread$k";
	}
	is(scalar(keys %queue_of), 3, 'a queue for each of the 3 masters');
	$pg->(qq{SELECT distkit_outbox_send('$_', jsonb_build_object('n', n)) FROM generate_series(1, 10) n}) for values %queue_of;
	wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, 'the spread queues to ship');
	is(join(',', map { node_cli($_, 'XLEN', "distkit:q:{$queue_of{$_}}") } sort keys %queue_of), '10,10,10',
		'each master holds the stream of its queue, 10 entries each');
}

# 9. consumers: two SQL consumers and a redis-cli one share a group; one
# SQL consumer dies without acknowledging: its messages go to another
# consumer after the visibility timeout, delivered a second time
$pg->(q{SELECT count(distkit_queue_send('q:work', jsonb_build_object('n', n))) FROM generate_series(1, 30) n});
my $sql_read = sub {
	my ($consumer, $vis) = @_;
	return map { [ split /=/ ] } split /,/, $pg->(qq{SELECT coalesce(string_agg(id || '=' || (payload->>'n') || '=' || deliveries, ',' ORDER BY id), '')
		FROM distkit_queue_read('q:work', 'w', '$consumer', 10, '$vis')});
};
# sql-1 takes its 10; a reader reclaims what others took longer ago than
# its own visibility: with 1 hour nobody gets them, then (by design, not
# by waiting) the dead consumer's entries are made 2 hours idle
my @s1 = $sql_read->('sql-1', '1 hour');
my @s2 = $sql_read->('sql-2', '1 hour');
my @cli_lines = split /\n/, redis_cli('XREADGROUP', 'GROUP', 'w', 'cli-1', 'COUNT', '10', 'STREAMS', 'distkit:q:{q:work}', '>');
my (@cli, $cur);
for my $j (0 .. $#cli_lines)
{
	$cur = $cli_lines[$j] if $cli_lines[$j] =~ /^\d+-\d+$/;
	push @cli, [ $cur, $1 ] if $cli_lines[$j] eq 'payload' && $cli_lines[$j + 1] =~ /^\{"n": (\d+)\}$/;
}
is(join(',', sort { $a <=> $b } map { $_->[1] } @s1, @s2, @cli), join(',', 1 .. 30),
	'two SQL consumers and redis-cli XREADGROUP share the 30 messages, each delivered once');
is(scalar(@cli), 10, '... 10 of them to redis-cli');
$pg->(qq{SELECT distkit_queue_ack('q:work', 'w', '$_->[0]')}) for @s2;
redis_cli('XACK', 'distkit:q:{q:work}', 'w', map { $_->[0] } @cli);
is($pg->(q{SELECT string_agg(consumer || ':' || pending, ',') FROM distkit_queue_pending('q:work', 'w')}), 'sql-1:10',
	'only the consumer that died has pending messages');
is(scalar($sql_read->('sql-3', '1 hour')), 0, 'before the visibility timeout (1 hour) nobody gets them');
# XCLAIM to the same consumer with IDLE and JUSTID: only the idle time changes
is(redis_cli('XCLAIM', 'distkit:q:{q:work}', 'w', 'sql-1', '0', (map { $_->[0] } @s1), 'IDLE', '7200000', 'JUSTID'),
	join("\n", map { $_->[0] } @s1), 'the dead consumer\'s 10 entries made 2 hours idle');
my @s3 = $sql_read->('sql-3', '1 hour');
is(join(',', sort { $a <=> $b } map { $_->[1] } @s3), join(',', sort { $a <=> $b } map { $_->[1] } @s1),
	"after it, another consumer gets the dead consumer's 10 messages");
is(join(',', map { $_->[2] } @s3), join(',', (2) x 10), '... as their second delivery');

like(slurp_file($node->logfile), qr/distkit outbox shipper started for database "postgres"/, 'the listed database had its shipper');
done_testing();

# The outbox across kill -9 (issue 18), counted from the clients' side.
# Four producers (psql, one autocommit INSERT per message, a trigger sends
# the event) print "ack K" after each COMMIT reply they got: the acked rows
# are known committed; the one row per producer whose reply the crash
# swallowed is resolved by looking in the table it was inserted into (the
# row and its outbox message commit together).  The faults, by design:
#  (a) kill -9 of a producer's backend while the shipper has a script in
#      flight whose entries Redis already added (the proxy holds the
#      reply) and the backlog is non-empty: the postmaster restarts the
#      whole server;
#  (b) kill -9 of the shipper itself in the same state;
#  (c) the shipper's DELETE of rows Redis took lost in a crash: the WAL
#      writer is stopped (SIGSTOP) so that the DELETE, committed
#      asynchronously, stays in the WAL buffers; then the WAL writer is
#      killed (-9) and the crash restart loses it.  The rows come back and
#      ship again; the queue's record must still refuse them, so the
#      shipper may forget their members only once the DELETE is flushed;
#  (d) standbys that have the rows but not the shipper's DELETE: (d1) a
#      connected standby without a slot, its WAL receiver stopped, holds
#      the members until it is resumed and reports the DELETE flushed;
#      (d2) a failover: the standby (with a physical replication slot) receives the
#      rows, then its WAL receiver is stopped (SIGSTOP); the primary ships
#      and deletes them and stops (immediate); the WAL receiver is killed
#      (-9, what it had not written is lost), the standby promoted: it has
#      the rows, ships them again, and the record must still refuse them,
#      so the primary may forget members only once its standbys have the
#      DELETE too.
# Afterwards, with no further commit, the shipper (started on demand, no
# distkit.outbox_databases) must come back by itself and drain the
# backlog; the stream must then hold each committed message exactly once:
# every acked one, the in-flight ones that committed, nothing else.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $redis_port = start_redis('crash30');
my ($proxy_port, $control) = start_proxy($redis_port);
my $node = new_node('crash30', "redis://127.0.0.1:$proxy_port/0", <<'CONF');
restart_after_crash = on
distkit.connect_timeout = '500ms'
distkit.command_timeout = '10s'
# (c) needs a WAL that nothing flushes but commits: no autovacuum (a worker
# already running when a reload turned it off could still flush), no
# checkpoints or background writes
autovacuum = off
checkpoint_timeout = '1d'
bgwriter_lru_maxpages = 0
# (d) has a standby
wal_level = replica
max_wal_senders = 4
CONF
my $pg = sub { $node->safe_psql('postgres', $_[0]) };
my $stream = 'distkit:q:{q:crash}';
my $nprod = 4;

create_outbox_trigger($node, 'q:crash');

my $shipper_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper'};

# Start the producers on rows base+p*100000+1 .. +60000; returns their handles and ack files.
sub start_producers
{
	my ($base) = @_;
	my @h;
	for my $p (1 .. $nprod)
	{
		my $first = $base + $p * 100_000 + 1;
		my $script = "$PostgreSQL::Test::Utils::tmp_check/prod-$base-$p.sql";
		open my $fh, '>', $script or die;
		print $fh "INSERT INTO ev VALUES ($_);\n\\echo ack $_\n" for $first .. $first + 59_999;
		close $fh;
		my $acks = "$PostgreSQL::Test::Utils::tmp_check/prod-$base-$p.acks";
		my $err = '';
		my $run = IPC::Run::start([ $node->installed_command('psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-h', $node->host, '-p', $node->port, '-d', "dbname=postgres application_name=producer$p", '-f', $script ],
			'>', $acks, '2>', \$err);
		push @h, { run => $run, acks => $acks, first => $first, last => $first + 59_999 };
	}
	return @h;
}

# Wait until the shipper has a script in flight that Redis ran (its entries
# are in the stream, their rows still in the outbox) and the backlog holds
# more rows than that; returns the shipper's pid.
sub wait_ship_in_flight
{
	my ($label) = @_;
	my $pid;
	wait_for(sub {
		my $last = (split /\n/, redis_cli('XREVRANGE', $stream, '+', '-', 'COUNT', '1'))[6] // '';
		return 0 unless $last =~ /^\d+$/;
		my $r = $pg->(qq{SELECT (SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit outbox shipper'
				AND query = 'shipping outbox rows to Redis' AND state = 'active')
			|| ':' || (SELECT count(*) FROM distkit_outbox WHERE id = $last)
			|| ':' || (SELECT messages FROM distkit_outbox_backlog WHERE queue = 'q:crash')
			|| ':' || (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'producer%')});
		return 0 unless $r =~ /^(\d+):1:(\d+):(\d+)$/ && $2 > 500 && $3 == $nprod;
		$pid = $1;
		return 1;
	}, "$label: a shipping script applied in Redis, its reply in flight, a backlog, $nprod producers connected", 60);
	return $pid;
}

# After the crash: the shipper back without any commit, the backlog drained,
# then the exact comparison with the producers' acknowledgements.
sub check_after_crash
{
	my ($label, $old_shipper, @h) = @_;
	# the restarted server cannot reach Redis until the shipper is seen back
	set_proxy_mode($control, 'refuse');
	$_->{run}->finish for @h;	# each exits on the lost connection
	wait_for(sub { my ($rc) = $node->psql('postgres', 'SELECT 1'); $rc == 0 }, "$label: the crash restart");
	my $new;
	wait_for(sub { $new = $pg->($shipper_sql); $new ne '' && $new ne $old_shipper },
		"$label: the shipper to come back by itself (no commit since the crash)", 30);
	my $left = $pg->('SELECT count(*) FROM distkit_outbox');
	ok($left > 0, "$label: after the restart the outbox holds the backlog ($left rows)");
	set_proxy_mode($control, 'pass');
	wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, "$label: the backlog to drain", 60);
	my ($acked, $lost, $resolved) = (0, 0, 0);
	my $ok = 1;
	for my $p (@h)
	{
		open my $fh, '<', $p->{acks} or die;
		my @a = map { /^ack (\d+)$/ ? $1 : () } <$fh>;
		close $fh;
		$acked += @a;
		my $next = @a ? $a[-1] + 1 : $p->{first};
		my @c = split /\n/, $pg->("SELECT i FROM ev WHERE i BETWEEN $p->{first} AND $p->{last} ORDER BY i");
		# the committed rows: the acked ones, and the one in flight if it made it
		my $expect = join(',', @a);
		if (@c == @a + 1 && $c[-1] == $next)
		{
			$resolved++;
			$expect = join(',', @a, $next);
		}
		elsif ($next <= $p->{last})
		{
			$lost++;
		}
		$ok = 0 unless join(',', @c) eq $expect;
	}
	ok($ok, "$label: the committed rows are exactly the acked ones plus in-flight ones that committed ($acked acked, $resolved in-flight committed, $lost in-flight lost)");
	ok($acked > 1000, "$label: the load ran ($acked acked commits)");
	is($resolved + $lost, $nprod, "$label: each of the $nprod producers had one commit in flight when the server crashed");
	my ($vals, $ids) = stream_entries($stream);
	my $committed = $pg->(q{SELECT string_agg(i::text, ',' ORDER BY i) FROM ev});
	is(scalar(@$vals), $pg->('SELECT count(*) FROM ev'), "$label: the stream has one entry per committed message");
	is(join(',', @$vals), $committed, "$label: ... exactly the committed messages, each once");
	my %seen;
	is(scalar(grep { $seen{$_}++ } @$ids), 0, "$label: no outbox id twice in the stream");
}

# (a) kill -9 of a producer's backend
$pg->('INSERT INTO ev VALUES (1)');	# starts the shipper on demand
wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, 'the first message to ship');
set_proxy_mode($control, 'latency:1500');
my @h = start_producers(0);
my $shipper = wait_ship_in_flight('backend killed');
my $victim = $pg->(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'producer1'});
ok(kill('KILL', $victim), 'kill -9 of a producing backend while a ship is in flight');
check_after_crash('backend killed', $shipper, @h);

# (b) kill -9 of the shipper
set_proxy_mode($control, 'latency:1500');
@h = start_producers(1_000_000);
$shipper = wait_ship_in_flight('shipper killed');
ok(kill('KILL', $shipper), 'kill -9 of the shipper while its ship is in flight');
check_after_crash('shipper killed', $shipper, @h);

# (c), (d): each on a queue of its own, whose record starts empty (the
# kills above may leave members of q:crash that no shipper knows of any
# more: they stay until the record's 7-day expiry, which is safe).
# $n messages i = 1..$n sent to queue $q in one (synchronous) commit.
sub send_batch
{
	my ($q, $n) = @_;
	$pg->(qq{SELECT count(distkit_outbox_send('$q', jsonb_build_object('i', g))) FROM generate_series(1, $n) g});
}
# the stream of queue $q holds i = 1..$n, each once
sub check_stream
{
	my ($q, $n, $label) = @_;
	my ($v) = stream_entries("distkit:q:{$q}");
	is(join(',', @$v), join(',', 1 .. $n), "$label: the stream holds each of the $n messages once");
}

# (d): $n messages to queue $q reach standby $sb (Redis refused until
# then), its WAL receiver is stopped while it waits, and the primary ships
# and deletes them; returns the stopped WAL receiver's pid once three idle
# polls of the shipper have passed
sub ship_behind_standby
{
	my ($sb, $q, $n, $label) = @_;
	set_proxy_mode($control, 'refuse');
	send_batch($q, $n);
	$node->wait_for_catchup($sb);
	is($sb->safe_psql('postgres', 'SELECT count(*) FROM distkit_outbox'), $n, "$label: the standby has the $n rows");
	my $rcv = stop_process_waiting($sb, $sb->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'walreceiver'}),
		'WalReceiverMain');
	ok($rcv, "$label: the standby's WAL receiver stopped while waiting");
	set_proxy_mode($control, 'pass');
	wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, "$label: the $n rows to ship and their DELETEs to commit", 60);
	is(redis_cli('ZCARD', "distkit:qo:{$q}"), $n, "$label: the record holds the $n shipped rows");
	sleep 3;	# three idle polls of the shipper
	return $rcv;
}

# (c) the shipper's DELETE lost in a crash
my $record = 'distkit:qo:{q:crash-c}';
# nothing else may flush the WAL meanwhile (see the configuration above)
$pg->('CHECKPOINT');	# none running (its page writes flush WAL)
my $walwriter = $pg->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'});
ok(kill('STOP', $walwriter), 'the WAL writer stopped');
send_batch('q:crash-c', 50);
wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, 'the 50 rows to ship and their DELETE to commit');
is(redis_cli('ZCARD', $record), '50', 'the record holds the 50 shipped rows');
my $flushed = $pg->('SELECT pg_current_wal_flush_lsn()');
sleep 3;	# three idle polls of the shipper
is($pg->('SELECT pg_current_wal_flush_lsn()'), $flushed, 'no WAL was flushed meanwhile');
is(redis_cli('ZCARD', $record), '50', '... so the members of the deleted rows are not forgotten');
set_proxy_mode($control, 'refuse');
ok(kill('KILL', $walwriter), 'kill -9 of the (stopped) WAL writer: crash restart');
wait_for(sub { my ($rc) = $node->psql('postgres', 'SELECT 1'); $rc == 0 }, 'the crash restart after the WAL writer');
is($pg->('SELECT count(*) FROM distkit_outbox'), '50',
	'the crash lost the DELETE: the 50 shipped rows are back in the outbox');
set_proxy_mode($control, 'pass');
wait_for(sub { $pg->('SELECT count(*) FROM distkit_outbox') eq '0' }, 'the 50 rows to ship again', 60);
check_stream('q:crash-c', 50, 'DELETE lost');
wait_for(sub { redis_cli('ZCARD', $record) eq '0' }, 'their members to be forgotten once the second DELETE is flushed', 30);
is(redis_cli('ZCARD', $record), '0', '... and they are');

my $log = slurp_file($node->logfile);
my $restarts = () = $log =~ /all server processes terminated; reinitializing/g;
is($restarts, 3, 'the three kills made the postmaster restart the server');

# (d) standbys that lack the shipper's last DELETE hold its members.
# d1: a standby without a slot, connected (its walsender's flush position):
# its WAL receiver stopped after it has the rows, the members stay; resumed,
# it reports the DELETEs flushed and they go (1,000 per script call)
my $sa = PostgreSQL::Test::Cluster->new('standby30a');
$node->backup('b30a');
$sa->init_from_backup($node, 'b30a', has_streaming => 1);
$sa->start;
$record = 'distkit:qo:{q:crash-d1}';
my $rcv_a = ship_behind_standby($sa, 'q:crash-d1', 2500, 'no slot');
is($pg->(q{SELECT flush_lsn < pg_current_wal_flush_lsn() FROM pg_stat_replication}), 't',
	'no slot: the DELETE is flushed on the primary, not on the connected standby');
is(redis_cli('ZCARD', $record), '2500', '... so the members of the 2,500 deleted rows are not forgotten');
resume_worker($rcv_a);
wait_for(sub { redis_cli('ZCARD', $record) eq '0' }, 'the members to go once the standby reports the DELETE flushed', 30);
is(redis_cli('ZCARD', $record), '0', 'the standby resumed: the members are forgotten');
$sa->stop;

# d2: a failover to a standby with a physical slot that lacks the DELETE:
# its WAL receiver stopped after it has the rows, the primary ships and
# deletes them and stops; the WAL receiver killed (what it had not written
# is lost), the standby promoted ships the rows again: the record refuses them
$pg->(q{SELECT pg_create_physical_replication_slot('standby30', true)});
$node->backup('b30');
my $standby = PostgreSQL::Test::Cluster->new('standby30');
$standby->init_from_backup($node, 'b30', has_streaming => 1);
$standby->append_conf('postgresql.conf', "primary_slot_name = 'standby30'\ndistkit.outbox_databases = 'postgres'\n");
$standby->start;
my $sb = sub { $standby->safe_psql('postgres', $_[0]) };
$record = 'distkit:qo:{q:crash-d2}';
my $walreceiver = ship_behind_standby($standby, 'q:crash-d2', 40, 'slot');
is($pg->(q{SELECT pg_current_wal_flush_lsn() > restart_lsn FROM pg_replication_slots WHERE slot_name = 'standby30'}), 't',
	'the DELETE is flushed on the primary, not on the standby');
is(redis_cli('ZCARD', $record), '40', '... so the members of the deleted rows are not forgotten');
$node->stop('immediate');
my $sblog_at = -s $standby->logfile;
ok(kill('KILL', $walreceiver), "kill -9 of the standby's (stopped) WAL receiver: the standby restarts without the DELETE");
resume_worker($walreceiver);	# (gone: only forgets it)
wait_for(sub { slurp_file($standby->logfile, $sblog_at) =~ /all server processes terminated; reinitializing/ },
	'the standby\'s crash restart', 30);
wait_for(sub { my ($rc, $out) = $standby->psql('postgres', 'SELECT pg_is_in_recovery()'); $rc == 0 && $out eq 't' },
	'the standby to restart in recovery', 60);
$standby->promote;
is($sb->('SELECT pg_is_in_recovery()'), 'f', 'the standby promoted');
wait_for(sub { $sb->('SELECT count(*) FROM distkit_outbox') eq '0' }, 'the promoted standby to ship the 40 rows again', 60);
check_stream('q:crash-d2', 40, 'failover');
wait_for(sub { redis_cli('ZCARD', $record) eq '0' }, 'their members to be forgotten by the new primary', 30);
$standby->stop;
done_testing();

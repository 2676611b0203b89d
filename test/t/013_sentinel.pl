# Redis Sentinel: one master, one replica, three sentinels.  A SENTINEL
# FAILOVER during lax load: the worker and the backends follow the new
# master without a restart and the lax total is exact (flushes are
# acknowledged only once the replica has them, so none is lost with the
# old master).
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $url = start_sentinel('sentinel');
like($url, qr{^redis-sentinel://127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+#distkit$}, 'three sentinels');
my $node = new_node('sentinel', $url, "distkit.heartbeat_interval = '200ms'\n");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };
my $old = redis_ctl_out('master-port');

is($pg->(q{SELECT distkit_inc('warm')}), '1', 'a strict call reaches the master found through the sentinels');
$pg->(q{SELECT distkit_inc('warm', 1, 'lax')});
$pg->(q{SELECT distkit_flush()});
is(node_cli($old, 'GET', 'distkit:c:{warm}'), '2', 'the flusher writes to that master');

$pg->(q{
CREATE PROCEDURE laxload(k text, secs float8, INOUT n bigint DEFAULT 0) LANGUAGE plpgsql AS $$
DECLARE stop timestamptz := clock_timestamp() + secs * interval '1 second';
BEGIN
	WHILE clock_timestamp() < stop LOOP
		PERFORM distkit_inc(k, 1, 'lax');
		n := n + 1;
	END LOOP;
END $$;
});

my @h;
for my $c (1 .. 4)
{
	my ($out, $err) = ('', '');
	push @h, [ IPC::Run::start(
		[ 'psql', '-X', '-q', '-At', '-d', $node->connstr('postgres'), '-c', "CALL laxload('failover', 6)" ],
		'>', \$out, '2>', \$err), \$out, \$err ];
}
sleep 2;
my $t0 = time();
is(redis_ctl_out('sentinel-cli', 'SENTINEL', 'failover', 'distkit'), 'OK', 'SENTINEL FAILOVER started');
wait_for(sub { redis_ctl_out('master-port') ne $old }, 'the sentinels to name a new master', 30);
my $new = redis_ctl_out('master-port');
note(sprintf('new master %s after %.2f s', $new, time() - $t0));
isnt($new, $old, 'the replica was promoted');
my $sum = 0;
for my $h (@h)
{
	$h->[0]->finish;
	diag("client: ${$h->[2]}") if ${$h->[2]} ne '';
	$sum += ${$h->[1]};
}
ok($sum > 0, "the clients made $sum lax increments");
$pg->(q{SELECT distkit_flush('60 s')});
is(node_cli($new, 'GET', 'distkit:c:{failover}'), $sum,
	'every lax increment is in the new master exactly once');
like(node_cli($new, 'ROLE'), qr/^master/, 'the new master says it is the master');

# the worker and new backends keep following the new master
$pg->(q{SELECT distkit_inc('after', 5, 'lax')});
$pg->(q{SELECT distkit_flush('30 s')});
is(node_cli($new, 'GET', 'distkit:c:{after}'), '5', 'the flusher writes to the new master');
is($pg->(q{SELECT distkit_inc('after')}), '6', 'a strict call reaches the new master');
wait_for(sub { $pg->(q{SELECT count(*) FROM distkit_instances WHERE alive AND is_this_server}) eq '1' },
	'the heartbeat to go on at the new master', 10);
pass('heartbeats go on at the new master');

# the old master comes back as a replica of the new one
wait_for(sub { node_cli($old, 'ROLE') =~ /^slave/ }, 'the old master to become a replica', 60);
is($pg->(q{SELECT distkit_get('failover')}), $sum, 'reads agree after the old master rejoined');

done_testing();

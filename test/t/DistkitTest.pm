# Helpers for distkit's TAP tests: a real redis-server per test file (via
# test/redis-ctl.sh, on a free loopback port), PostgreSQL nodes with
# distkit preloaded (PostgreSQL::Test::Cluster), and a loopback TCP proxy
# whose behaviour the test switches at run time.  Everything started here
# is stopped at the end of the test file, also when it fails.
package DistkitTest;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(start_redis redis_cli redis_ctl new_node wait_for
  start_proxy set_proxy_mode stop_proxy redis_int start_cluster start_sentinel
  redis_ctl_out node_cli cluster_node_of_slot migrate_slot_keys stop_worker_idle
  resume_worker create_outbox_trigger stream_entries stop_process_waiting);

my $root = dirname(dirname(dirname(__FILE__)));	# repository root
my $ctl = "$root/test/redis-ctl.sh";
my @redis_dirs;
my @proxies;
my %stopped;	# pids of distkit workers stop_worker_idle stopped

# Start a redis-server for this test; returns its port.
sub start_redis
{
	my ($name) = @_;
	my $dir = File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/redis-$name");
	make_path($dir);
	$ENV{DISTKIT_REDIS_DIR} = $dir;
	push @redis_dirs, $dir;		# stopped at the end even if init fails half-way
	system($ctl, 'init', $dir) == 0 or die "could not start redis-server";
	my $port = `$ctl port`;
	chomp $port;
	return $port;
}

# Start a Redis Cluster of 3 masters (with $replicas replicas each) for
# this test; returns its distkit URL.  redis_cli follows redirections.
sub start_cluster
{
	my ($name, $replicas) = @_;
	local $ENV{DISTKIT_REDIS_MODE} = 'cluster';
	local $ENV{DISTKIT_REDIS_REPLICAS} = $replicas // 0;
	start_redis($name);
	return redis_ctl_out('url');
}

# Start one master, one replica and three sentinels (master name
# "distkit"); returns the distkit URL (redis-sentinel://...#distkit).
sub start_sentinel
{
	my ($name) = @_;
	local $ENV{DISTKIT_REDIS_MODE} = 'sentinel';
	start_redis($name);
	return redis_ctl_out('url');
}

# Output of redis-ctl.sh with arguments, trimmed.
sub redis_ctl_out
{
	my @args = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @_;
	my $out = `$ctl @args`;
	chomp $out;
	return $out;
}

# Raw output of redis-cli against one node (by port).
sub node_cli
{
	my ($port, @args) = @_;
	return redis_ctl_out('node-cli', $port, '--raw', @args);
}

# Move every key of a slot (already IMPORTING on dst, MIGRATING on src)
# from src to dst, count keys per MIGRATE; returns how many moved.
sub migrate_slot_keys
{
	my ($src, $dst, $slot, $count) = @_;
	my $moved = 0;
	for (;;)
	{
		my @keys = split /\n/, node_cli($src, 'CLUSTER', 'GETKEYSINSLOT', $slot, $count);
		last unless @keys;
		my $r = node_cli($src, 'MIGRATE', '127.0.0.1', $dst, '', 0, 5000, 'KEYS', @keys);
		die "MIGRATE: $r" unless $r eq 'OK' || $r eq 'NOKEY';
		$moved += @keys;
		usleep(20_000);
	}
	return $moved;
}

# Port of the master serving a hash slot, as that node sees it (CLUSTER NODES).
sub cluster_node_of_slot
{
	my ($slot) = @_;
	for my $p (split /,/, redis_ctl_out('masters'))
	{
		for my $line (split /\n/, node_cli($p, 'CLUSTER', 'NODES'))
		{
			my @f = split / /, $line;
			next unless $f[2] =~ /master/;
			for my $range (@f[8 .. $#f])
			{
				next if $range =~ /^\[/;
				my ($lo, $hi) = split /-/, $range;
				$hi //= $lo;
				if ($slot >= $lo && $slot <= $hi)
				{
					my ($port) = $f[1] =~ /:(\d+)@/;
					return $port;
				}
			}
		}
		last;
	}
	return undef;
}

# Run redis-ctl.sh with arguments (start, stop, kill, pause, resume).
sub redis_ctl
{
	system($ctl, @_) == 0 or die "redis-ctl.sh @_ failed";
}

# Run a redis-cli command; returns its raw output, trimmed.
sub redis_cli
{
	my @args = map { my $a = $_; $a =~ s/'/'\\''/g; "'$a'" } @_;
	my $out = `$ctl cli --raw @args`;
	chomp $out;
	return $out;
}

# An integer held by a Redis key (0 when missing).
sub redis_int
{
	my ($key) = @_;
	my $v = redis_cli('GET', $key);
	return $v eq '' ? 0 : $v;
}

# A PostgreSQL node with distkit preloaded, pointed at redis_url.
sub new_node
{
	my ($name, $redis_url, $extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'distkit'
distkit.redis_url = '$redis_url'
log_min_messages = info
} . ($extra // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION distkit');
	wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'") eq '1';
	}, 'the flusher worker to start');
	return $node;
}

# Poll cond every 50 ms for up to $secs seconds (default 30); fails the test if it never holds.
sub wait_for
{
	my ($cond, $what, $secs) = @_;
	my $deadline = time() + ($secs // 30);
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(50_000);
	}
	fail("timed out waiting for $what");
	return 0;
}

# Start test/proxy.pl from a free loopback port to target_port; returns
# (listen port, control file).
sub start_proxy
{
	my ($target_port) = @_;
	my $n = scalar @proxies;
	my $control = File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/proxy$n.mode");
	my $portfile = File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/proxy$n.port");
	unlink $portfile;
	open my $fh, '>', $control or die;
	print $fh "pass\n";
	close $fh;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		exec($^X, "$root/test/proxy.pl", $target_port, $control, $portfile);
		die "exec: $!";
	}
	push @proxies, $pid;
	wait_for(sub { -s $portfile }, 'the proxy to listen', 10);
	open $fh, '<', $portfile or die;
	my $port = <$fh>;
	close $fh;
	chomp $port;
	return ($port, $control);
}

# Switch a proxy's mode: pass, cut-reply, latency:<ms>, refuse (which
# also closes the connections open); returns once the proxy applies it.
sub set_proxy_mode
{
	my ($control, $mode) = @_;
	open my $fh, '>', "$control.tmp" or die;
	print $fh "$mode\n";
	close $fh;
	rename "$control.tmp", $control or die;
	wait_for(sub {
		open my $af, '<', "$control.applied" or return 0;
		my $m = <$af> // '';
		close $af;
		chomp $m;
		return $m eq $mode;
	}, "the proxy to apply mode $mode", 10);
}

# Stop a node's distkit worker (SIGSTOP) while it sleeps between cycles:
# every lax increment made meanwhile waits in the buffer, and once resumed
# (resume_worker) the worker's next step is one flush cycle that takes them
# all in one batch (its latch was set; a heartbeat comes after the flush).
# Returns the worker's pid, or undef if it was never caught idle.
sub stop_worker_idle
{
	my ($node) = @_;
	my $pid = $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'distkit worker'});
	return undef unless $pid =~ /^\d+$/;
	return stop_when_shown($node, $pid, 'state', 'idle');
}

# Stop process pid of node (SIGSTOP) while pg_stat_activity shows it in
# wait event $event (waiting, so holding no lock or spinlock); resume it
# with resume_worker (the END block resumes it if the test dies first).
# Returns the pid, or undef if it was never caught there.
sub stop_process_waiting
{
	my ($node, $pid, $event) = @_;
	return stop_when_shown($node, $pid, 'wait_event', $event);
}

# Stop pid (SIGSTOP) at a moment pg_stat_activity's $column shows $value
# for it: stopped, resumed and tried again until caught there (100 tries).
sub stop_when_shown
{
	my ($node, $pid, $column, $value) = @_;
	for (1 .. 100)
	{
		kill('STOP', $pid) or return undef;
		$stopped{$pid} = 1;
		return $pid
		  if $node->safe_psql('postgres', "SELECT $column FROM pg_stat_activity WHERE pid = $pid") eq $value;
		resume_worker($pid);
		usleep(20_000);
	}
	return undef;
}

sub resume_worker
{
	my ($pid) = @_;
	kill('CONT', $pid);
	delete $stopped{$pid};
}

# The outbox tests' table ev in database postgres of node: a trigger sends
# {"i": <the row>} to queue with distkit_outbox_send for every row
# inserted, in the inserting transaction.
sub create_outbox_trigger
{
	my ($node, $queue) = @_;
	$node->safe_psql('postgres', qq{
CREATE TABLE ev (i int PRIMARY KEY);
CREATE FUNCTION ev_send() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM distkit_outbox_send('$queue', jsonb_build_object('i', NEW.i));
	RETURN NEW;
END \$\$;
CREATE TRIGGER ev_send AFTER INSERT ON ev FOR EACH ROW EXECUTE FUNCTION ev_send();
});
}

# The entries of a queue's stream (its Redis key): the payloads' i, sorted,
# and the entries' outbox ids in stream order (two array references).
sub stream_entries
{
	my ($stream) = @_;
	my @lines = split /\n/, redis_cli('XRANGE', $stream, '-', '+');
	my (@v, @ids);
	for (my $j = 0; $j < $#lines; $j++)
	{
		push @v, $1 if $lines[$j] eq 'payload' && $lines[$j + 1] =~ /^\{"i": (-?\d+)\}$/;
		push @ids, $lines[$j + 1] if $lines[$j] eq 'outbox_id';
	}
	return ([ sort { $a <=> $b } @v ], \@ids);
}

sub stop_proxy
{
	kill 'KILL', @proxies if @proxies;
	waitpid($_, 0) for @proxies;
	@proxies = ();
}

END
{
	my $rc = $?;
	resume_worker($_) for keys %stopped;	# a stopped worker would hold up the server's stop
	stop_proxy();
	for my $dir (@redis_dirs)
	{
		$ENV{DISTKIT_REDIS_DIR} = $dir;
		system($ctl, 'stop');
	}
	$? = $rc;
}

1;

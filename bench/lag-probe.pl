#!/usr/bin/perl
# Flush-lag probe for bench/run.sh: how long after a lax distkit_inc has
# returned does its increment show in Redis?
#
#   lag-probe.pl SECONDS REDIS_PORT REDIS_KEY SQL_KEY [PAUSE_MS]
#
# Talks to PostgreSQL through one psql (PGHOST, PGPORT, ... from the
# environment) and to Redis through one raw RESP connection on 127.0.0.1.
# Loop until SECONDS have passed:
#   1. sleep a random 0..PAUSE_MS ms (default 25), so that the calls fall at
#      random points of the flusher's cycle;
#   2. SELECT distkit_inc(SQL_KEY, 1, 'lax') -> v (this server's view);
#   3. poll GET REDIS_KEY until it is >= v (or 5 s pass): every 0.1 ms
#      during the first 2 ms, then every 0.5 ms, so that the probe adds at
#      most ~2,000 GETs per second to a Redis that may be busy flushing.
# Prints one line per sample: "call_ms lag_ms", where call_ms is the SQL
# round trip of step 2 and lag_ms runs from the moment its reply arrived to
# the first GET that showed v (resolution: one poll, ~0.1-0.3 ms below
# 2 ms, ~0.5-0.7 ms above); a lag of -1 means not visible within 5 s.
# Nothing else writes the probe key, so v is exact.
use strict;
use warnings;
use IO::Socket::INET;
use IPC::Open2;
use Time::HiRes qw(time sleep);

my ($seconds, $port, $rkey, $key, $pause_ms) = @ARGV;
die "usage: lag-probe.pl SECONDS REDIS_PORT REDIS_KEY SQL_KEY [PAUSE_MS]\n" unless defined $key;
$pause_ms //= 25;
$| = 1;

my $redis = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	or die "lag-probe: cannot connect to Redis on port $port: $!\n";
$redis->autoflush(1);
setsockopt($redis, 6, 1, 1);	# TCP_NODELAY

# one RESP command, one reply (integer, bulk or nil)
sub redis_cmd {
	my @args = @_;
	my $req = '*' . scalar(@args) . "\r\n";
	$req .= '$' . length($_) . "\r\n$_\r\n" for @args;
	print $redis $req;
	my $line = <$redis>;
	defined $line or die "lag-probe: Redis closed the connection\n";
	$line =~ s/\r\n$//;
	if ($line =~ /^\$(-?\d+)$/) {
		return undef if $1 < 0;
		my $data = '';
		read($redis, $data, $1 + 2) == $1 + 2 or die "lag-probe: short read from Redis\n";
		return substr($data, 0, $1);
	}
	return $1 if $line =~ /^[:+](.*)$/;
	die "lag-probe: Redis error: $line\n";
}

(my $qkey = $key) =~ s/'/''/g;
my $pid = open2(my $from_psql, my $to_psql, 'psql', '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1');
$to_psql->autoflush(1);
sub sql_value {
	print $to_psql "$_[0];\n";
	my $v = <$from_psql>;
	defined $v or die "lag-probe: psql exited\n";
	chomp $v;
	return $v;
}

# make sure the probe key exists in the buffer and in Redis before timing
sql_value("SELECT distkit_inc('$qkey', 1, 'lax')");
sql_value("SELECT distkit_flush()");

my $end = time + $seconds;
while (time < $end) {
	sleep(rand($pause_ms) / 1000);
	my $t0 = time;
	my $v = sql_value("SELECT distkit_inc('$qkey', 1, 'lax')");
	my $t1 = time;
	die "lag-probe: unexpected reply '$v'\n" unless $v =~ /^-?\d+$/;
	my $lag = -1;
	while (time - $t1 < 5) {
		my $r = redis_cmd('GET', $rkey);
		my $now = time;
		if (defined $r && $r >= $v) { $lag = ($now - $t1) * 1000; last; }
		sleep($now - $t1 < 0.002 ? 0.0001 : 0.0005);
	}
	printf "%.3f %.3f\n", ($t1 - $t0) * 1000, $lag;
}
close $to_psql;
waitpid($pid, 0);

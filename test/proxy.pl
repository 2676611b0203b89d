#!/usr/bin/perl
# A loopback TCP proxy for fault tests: listens on a free 127.0.0.1 port
# (written to PORTFILE) and forwards to 127.0.0.1:TARGET.  Its behaviour is
# read from CONTROL (one word) at every event, so a test switches it live:
#   pass           forward both ways
#   cut-reply      forward each request that runs a script (EVALSHA) to
#                  Redis, then close both sides instead of relaying the
#                  reply (the script ran, the client never learns it); the
#                  connection handshake passes
#   random-cut:P   for each chunk read from either side, with probability P
#                  close the connection: a request is either dropped before
#                  Redis sees it or forwarded and its reply swallowed; a
#                  reply is cut after a random number of its bytes
#   latency:MS     deliver every chunk MS milliseconds after it was read,
#                  in order, without holding up other connections
#   refuse         close every connection, and accept new ones only to
#                  close them at once
# After switching, the proxy writes the mode it applies to CONTROL.applied
# (within half a second; set_proxy_mode waits for it).
# The random choices come from DISTKIT_PROXY_SEED (default: the time); the
# seed is printed on stderr so that a failing run can be replayed.
# Usage: proxy.pl TARGET CONTROL PORTFILE
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time);

my ($target, $control, $portfile) = @ARGV;
my $seed = $ENV{DISTKIT_PROXY_SEED} // int(time() * 1000) % 1_000_000_007;
srand($seed);
print STDERR "proxy.pl: seed $seed\n";
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 128, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
open my $pf, '>', "$portfile.tmp" or die;
print $pf $listen->sockport, "\n";
close $pf;
rename "$portfile.tmp", $portfile;

sub mode
{
	open my $fh, '<', $control or return 'pass';
	my $m = <$fh> // 'pass';
	close $fh;
	chomp $m;
	return $m;
}

my $sel = IO::Select->new($listen);
my %peer;		# socket -> its partner
my %is_client;	# sockets accepted from the client side
my %doomed;		# client socket -> [socket, deadline]: its reply is swallowed, then both close
my @queue;		# delayed deliveries, in order: [due, from, data or undef for EOF]

sub close_pair
{
	my ($s) = @_;
	my $p = delete $peer{$s};
	for my $x (grep { defined } ($s, $p))
	{
		$sel->remove($x);
		delete $peer{$x};
		delete $is_client{$x};
		delete $doomed{$x};
		close $x;
	}
	@queue = grep { $_->[1] != $s && (!defined $p || $_->[1] != $p) } @queue;
}

sub write_all
{
	my ($to, $data) = @_;
	while (length $data)
	{
		my $n = syswrite($to, $data);
		return 0 unless $n;
		substr($data, 0, $n) = '';
	}
	return 1;
}

# Deliver data read from $from to its partner now (or close on EOF).
sub deliver
{
	my ($from, $data) = @_;
	my $to = $peer{$from} or return;
	if (!defined $data || !write_all($to, $data)) { close_pair($from); }
}

my $applied = '';
while (1)
{
	my $m0 = mode();
	if ($m0 eq 'refuse')
	{
		close_pair($_) for grep { $is_client{$_} } $sel->handles;
	}
	if ($m0 ne $applied)
	{
		open my $af, '>', "$control.applied.tmp" or die;
		print $af "$m0\n";
		close $af;
		rename "$control.applied.tmp", "$control.applied" or die;
		$applied = $m0;
	}
	my $now = time();
	my $wait = 0.5;
	while (@queue && $queue[0][0] <= $now)
	{
		my $item = shift @queue;
		deliver($item->[1], $item->[2]);
	}
	$wait = $queue[0][0] - $now if @queue && $queue[0][0] - $now < $wait;
	for my $d (values %doomed)
	{
		close_pair($d->[0]) if $d->[1] <= $now;	# Redis never answered
	}
	for my $s ($sel->can_read($wait > 0 ? $wait : 0))
	{
		if ($s == $listen)
		{
			my $c = $listen->accept or next;
			if (mode() eq 'refuse') { close $c; next; }
			my $r = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $target,
				Proto => 'tcp');
			if (!$r) { close $c; next; }
			$peer{$c} = $r;
			$peer{$r} = $c;
			$is_client{$c} = 1;
			$sel->add($c, $r);
			next;
		}
		next unless exists $peer{$s};
		my $buf;
		my $n = sysread($s, $buf, 65536);
		$buf = undef unless $n;
		my $m = mode();
		my $client = $is_client{$s} ? $s : $peer{$s};
		if ($client && $doomed{$client})
		{
			# the reply of a forwarded request: swallow it and cut
			close_pair($s) if !$is_client{$s} || !defined $buf;
			next;
		}
		if (defined $buf && $m eq 'cut-reply' && $is_client{$s} && $buf =~ /EVALSHA/i)
		{
			deliver($s, $buf);		# the request reaches Redis ...
			$doomed{$s} = [ $s, time() + 2 ];	# ... and its reply is lost
			next;
		}
		if (defined $buf && $m =~ /^random-cut:([0-9.]+)$/ && rand() < $1)
		{
			if ($is_client{$s})
			{
				if (rand() < 0.5) { close_pair($s); }	# request dropped
				else { deliver($s, $buf); $doomed{$s} = [ $s, time() + 2 ]; }	# reply lost
			}
			else
			{
				# a reply cut after a random number of its bytes
				write_all($peer{$s}, substr($buf, 0, int(rand(length $buf))));
				close_pair($s);
			}
			next;
		}
		if ($m =~ /^latency:(\d+)$/ || @queue)
		{
			my $due = time() + ($m =~ /^latency:(\d+)$/ ? $1 / 1000 : 0);
			# never overtake what is queued: the queue stays in order
			$due = $queue[-1][0] if @queue && $queue[-1][0] > $due;
			push @queue, [ $due, $s, $buf ];
			next;
		}
		deliver($s, $buf);
	}
}

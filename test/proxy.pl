#!/usr/bin/perl
# A loopback TCP proxy for fault tests: listens on a free 127.0.0.1 port
# (written to PORTFILE) and forwards to 127.0.0.1:TARGET.  Its behaviour is
# read from CONTROL (one word) at every event, so a test switches it live:
#   pass         forward both ways
#   cut-reply    forward each request that runs a script (EVALSHA) to
#                Redis, then close both sides before relaying the reply
#                (the script ran, the client never learns it); the
#                connection handshake passes
#   latency:MS   delay every chunk by MS milliseconds
#   refuse       accept, then close at once
# Usage: proxy.pl TARGET CONTROL PORTFILE
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(usleep);

my ($target, $control, $portfile) = @ARGV;
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 64, ReuseAddr => 1, Proto => 'tcp') or die "listen: $!";
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

sub close_pair
{
	my ($s) = @_;
	my $p = delete $peer{$s};
	for my $x (grep { defined } ($s, $p))
	{
		$sel->remove($x);
		delete $peer{$x};
		delete $is_client{$x};
		close $x;
	}
}

while (1)
{
	for my $s ($sel->can_read(0.5))
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
		if (!$n) { close_pair($s); next; }
		my $m = mode();
		if ($m =~ /^latency:(\d+)$/) { usleep($1 * 1000); }
		my $p = $peer{$s};
		if ($m eq 'cut-reply' && $is_client{$s} && $buf =~ /EVALSHA/i)
		{
			syswrite($p, $buf);		# the request reaches Redis ...
			my $rs = IO::Select->new($p);
			if ($rs->can_read(2))	# ... wait until Redis has answered
			{
				my $discard;
				sysread($p, $discard, 65536);
			}
			close_pair($s);			# ... and the reply is lost
			next;
		}
		syswrite($p, $buf);
	}
}

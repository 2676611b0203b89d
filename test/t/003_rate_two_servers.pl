# Two PostgreSQL servers sharing one Redis enforce one global rate limit:
# the sum of what they allow equals what one server alone would allow.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('rate');

my @nodes;
for my $name ('a', 'b')
{
	my $node = new_node($name, "redis://127.0.0.1:$port/0", "log_statement = none\n");
	$node->safe_psql('postgres', <<'SQL');
-- calls distkit_rate_allow for a while; returns allowed and the epochs of
-- the first and last calls
CREATE FUNCTION sustain(k text, rate bigint, burst bigint, seconds float8,
                        OUT allowed bigint, OUT first_call numeric, OUT last_call numeric)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	t timestamptz;
BEGIN
	allowed := 0;
	first_call := extract(epoch FROM t0);
	LOOP
		IF distkit_rate_allow(k, rate, '1 s', burst) THEN
			allowed := allowed + 1;
		END IF;
		t := clock_timestamp();
		EXIT WHEN t - t0 >= seconds * interval '1 s';
	END LOOP;
	last_call := extract(epoch FROM t);
END $$;
SQL
	push @nodes, $node;
}
my ($pa, $pb) = @nodes;

# sequential: what one server consumes, the other sees
is( $pa->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE distkit_rate_allow('g1', 10, '1000 s', 50)) FROM generate_series(1, 30)"),
	'30', 'server a: 30 of burst 50 allowed');
is($pb->safe_psql('postgres', "SELECT remaining FROM distkit_rate_peek('g1', 10, '1000 s', 50)"),
	'20', 'server b sees 20 remaining');
is( $pb->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE distkit_rate_allow('g1', 10, '1000 s', 50)) FROM generate_series(1, 30)"),
	'20', 'server b: only the 20 remaining allowed');
is($pa->safe_psql('postgres', "SELECT distkit_rate_allow('g1', 10, '1000 s', 50)"),
	'f', 'server a: denied once the shared burst is used');
is($pa->safe_psql('postgres', "SELECT distkit_rate_reset('g1')"), 't', 'server a resets');
is($pb->safe_psql('postgres', "SELECT remaining FROM distkit_rate_peek('g1', 10, '1000 s', 50)"),
	'50', 'server b sees the reset');

# Run one SQL statement on each of the given nodes at the same time; returns
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

# concurrent burst: 4 clients on each server, 500 calls each, burst 1000
# and no refill during the test: exactly 1000 allowed in all
my @out = concurrently(
	"SELECT count(*) FILTER (WHERE distkit_rate_allow('g2', 10, '1000 s', 1000)) FROM generate_series(1, 500)",
	$pa, $pa, $pa, $pa, $pb, $pb, $pb, $pb);
my $sum = 0;
$sum += $_ for @out;
is($sum, 1000, "8 clients on 2 servers: exactly the burst (1000) allowed in all (@out)");
my ($on_a, $on_b) = (0, 0);
$on_a += $out[$_] for 0 .. 3;
$on_b += $out[$_] for 4 .. 7;
ok($on_a > 0 && $on_b > 0, "both servers got a share ($on_a + $on_b)");

# sustained: both servers call for 2 s at 100 per second, burst 20: together
# they allow what one server would, 20 + 100 per second of calls (± 1 for
# the edges of the measured interval)
@out = concurrently("SELECT allowed || ' ' || first_call || ' ' || last_call FROM sustain('g3', 100, 20, 2)",
	$pa, $pb);
my ($total, $start_min, $start_max, $end_min, $end_max) = (0, undef, undef, undef, undef);
for (@out)
{
	my ($n, $s, $e) = split / /;
	$total += $n;
	$start_min = $s if !defined $start_min || $s < $start_min;
	$start_max = $s if !defined $start_max || $s > $start_max;
	$end_min = $e if !defined $end_min || $e < $end_min;
	$end_max = $e if !defined $end_max || $e > $end_max;
}
my $lo = 20 + int(($end_min - $start_max) * 100) - 1;
my $hi = 20 + int(($end_max - $start_min) * 100) + 1;
ok($total >= $lo && $total <= $hi,
	"sustained on 2 servers: $total allowed, one server alone would allow $lo..$hi");

$_->stop for @nodes;
done_testing();

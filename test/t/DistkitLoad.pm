# Mixed load from several psql clients with an exact account of every call,
# for the fault tests (008_faults.pl).
#
# Each client is one psql session reading a generated script of calls,
# each wrapped in dk_try(), which runs it, catches any error and prints one
# line: "ok|result|..." or "err|SQLSTATE|...", with the time the call ended
# and how long it took.  A client stops at a deadline (dk_try raises
# SQLSTATE DKEND and psql's ON_ERROR_STOP ends the script).  If the
# connection dies (a crash restart), the call that was running is counted
# as ambiguous: it may or may not have been applied.
#
# Every operation adds exactly one unit to the state of its key when it is
# applied, so after the load each key's stored value must lie between the
# units acknowledged (lo) and those plus the calls whose outcome is unknown
# (hi).  lost = stored below lo, doubled = stored above hi; both must be 0.
#
# To put another primitive under fault load, add its operations to %OPS
# and, if it keeps a new kind of state, a reader to %CLASS; a scenario then
# names the operations it mixes.
package DistkitLoad;

use strict;
use warnings;
use Exporter 'import';
use File::Spec;
use POSIX qw(WNOHANG);
use List::Util qw(max sum0);
use Time::HiRes qw(time usleep);
use Test::More;
use PostgreSQL::Test::Utils;
use DistkitTest;

our @EXPORT = qw(install_load run_load account_load load_summary);

# Operations: the SQL expression of one call (%K: the key, quoted), the key
# set it draws from (keys "<tag>:<set>:<i>"), the class of state it changes,
# lax => 1 for calls buffered in shared memory, and applied: from the
# result of a successful call, whether it added its unit (default: yes).
our %OPS = (
	strict_inc => { class => 'counter', keys => 'st', sql => q{distkit_inc(%K, 1, 'strict')} },
	strict_dec => { class => 'counter', keys => 'st', sql => q{distkit_dec(%K, -1, 'strict')} },
	lax_inc => { class => 'counter', keys => 'lx', lax => 1, sql => q{distkit_inc(%K, 1, 'lax')} },
	lax_dec => { class => 'counter', keys => 'lx', lax => 1, sql => q{distkit_dec(%K, -1, 'lax')} },
	# strict and lax calls on the same keys; inc_if waits for this
	# server's buffered increments of the key before it runs
	mixed_strict => { class => 'counter', keys => 'mx', sql => q{distkit_inc(%K, 1, 'strict')} },
	mixed_lax => { class => 'counter', keys => 'mx', lax => 1, sql => q{distkit_inc(%K, 1, 'lax')} },
	mixed_inc_if => {
		class => 'counter', keys => 'mx',
		sql => q{(SELECT applied FROM distkit_inc_if(%K, 1, '>=', 0))},
		applied => sub { $_[0] eq 'true' }, must_apply => 1 },
	# a limiter that refills one unit per 100 s with a burst of 100000:
	# during a test every call is allowed and consumes one unit
	rate_allow => {
		class => 'rate', keys => 'rt',
		sql => q{distkit_rate_allow(%K, 1, '100 s', 100000)},
		applied => sub { $_[0] eq 'true' }, must_apply => 1 },
);

# Key sets: how many keys each has.
our %KEYSETS = (st => 4, lx => 4, mx => 2, rt => 1);

# distkit.prefix of the nodes under load.
our $PREFIX = 'distkit';

# Readers of the stored state of one key (after the load, with Redis up).
our %CLASS = (
	counter => sub {
		my ($node, $key) = @_;
		return redis_int("$PREFIX:c:{$key}");
	},
	rate => sub {
		my ($node, $key) = @_;
		return 100000 - $node->safe_psql('postgres',
			"SELECT remaining FROM distkit_rate_peek('$key', 1, '100 s', 100000)");
	},
);

# SQLSTATEs after which a call may or may not have been applied.
my %AMBIGUOUS = ('08007' => 1, '57014' => 1, lost => 1);

# Create dk_try() in the node's postgres database.
sub install_load
{
	my ($node) = @_;
	$node->safe_psql('postgres', <<'SQL');
CREATE FUNCTION dk_try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	r text;
	st text;
	msg text;
BEGIN
	IF extract(epoch FROM t0) > current_setting('dk.deadline')::float8 THEN
		RAISE EXCEPTION 'load finished' USING ERRCODE = 'DKEND';
	END IF;
	BEGIN
		EXECUTE 'SELECT (' || call || ')::text' INTO r;
		r := 'ok|' || coalesce(r, '<null>');
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
		r := 'err|' || st;
	END;
	RETURN r || '|' || extract(epoch FROM clock_timestamp()) || '|'
		|| round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1) || '|'
		|| coalesce(translate(msg, E'\n\r|', '   '), '');
END $$;
SQL
}

# Start a command with stdout and stderr going to files; returns its pid.
sub spawn
{
	my ($cmd, $out, $err) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null' or die;
		open STDOUT, '>', $out or die;
		open STDERR, '>', $err or die;
		exec @$cmd or die "exec: $!";
	}
	return $pid;
}

# Wait for pid until the time limit (then kill it); returns its exit code
# or 'hung'.
sub reap
{
	my ($pid, $limit) = @_;
	while (time() < $limit)
	{
		return $? >> 8 if waitpid($pid, WNOHANG) == $pid;
		usleep(20_000);
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return 'hung';
}

# Run a load and return its record.  Arguments:
#   node, tag (key prefix, one per scenario), ops (names from %OPS) or
#   mixes (one list of names per client), clients (default 4, or one per
#   mix), seconds (load duration),
#   timeline: [[seconds after the start, sub], ...] run during the load,
#   monitor_flush: also record distkit_stats.last_flush every 20 ms.
sub run_load
{
	my (%a) = @_;
	my $node = $a{node};
	my @mixes = $a{mixes} ? @{ $a{mixes} } : map { $a{ops} } 1 .. ($a{clients} // 4);
	my $clients = @mixes;
	my $dir = File::Spec->rel2abs("$PostgreSQL::Test::Utils::tmp_check/load-$a{tag}");
	mkdir $dir;
	my $per_client = int(10000 * $a{seconds}) + 100;
	my $start = time() + 0.3;
	my $deadline = $start + $a{seconds};
	my (@h, @plan);
	for my $c (0 .. $clients - 1)
	{
		my @calls;
		my @ops = @{ $mixes[$c] };
		open my $fh, '>', "$dir/in$c.sql" or die;
		printf $fh "SET dk.deadline = '%.6f';\n", $deadline;
		printf $fh "SELECT pg_sleep(greatest(0, %.6f - extract(epoch FROM clock_timestamp())))::text || 'start';\n",
		  $start;
		for my $i (1 .. $per_client)
		{
			my $op = $ops[ int(rand(@ops)) ];
			my $def = $OPS{$op} or die "unknown operation $op";
			my $key = sprintf('%s:%s:%d', $a{tag}, $def->{keys}, int(rand($KEYSETS{ $def->{keys} })));
			(my $sql = $def->{sql}) =~ s/%K/'$key'/g;
			$sql =~ s/'/''/g;
			print $fh "SELECT dk_try('$sql');\n";
			push @calls, [ $op, $key ];
		}
		close $fh;
		push @plan, \@calls;
		push @h, spawn([ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d',
				$node->connstr('postgres') . " application_name=dkload-$c", '-f', "$dir/in$c.sql" ],
			"$dir/out$c", "$dir/err$c");
	}
	my $mon;
	if ($a{monitor_flush})
	{
		open my $fh, '>', "$dir/monitor.sql" or die;
		print $fh "SELECT extract(epoch FROM clock_timestamp()) || '|' || "
		  . "coalesce(extract(epoch FROM last_flush)::text, '') FROM distkit_stats \\watch 0.02\n";
		close $fh;
		$mon = spawn([ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-f', "$dir/monitor.sql" ],
			"$dir/monitor", "$dir/monitor.err");
	}

	# the fault timeline
	my @events;
	for my $ev (sort { $a->[0] <=> $b->[0] } @{ $a{timeline} // [] })
	{
		my $at = $start + $ev->[0];
		usleep(($at - time()) * 1e6) if $at > time();
		push @events, sprintf('%.2f s: %s', time() - $start, $ev->[2] // 'event');
		$ev->[1]->();
	}

	# every client ends by its deadline: wait a bounded time
	my $limit = $deadline + 60;
	my @rc = map { reap($_, $limit) } @h;
	if ($mon)
	{
		kill 'TERM', $mon;	# it ends at a crash, else here
		reap($mon, time() + 10);
	}

	# read the outcomes
	my @outcomes;
	my $clean_end = 0;
	for my $c (0 .. $clients - 1)
	{
		my @lines = split /\n/, slurp_file("$dir/out$c");
		shift @lines if @lines && $lines[0] =~ /start$/;
		my $err = slurp_file("$dir/err$c");
		for my $i (0 .. $#lines)
		{
			my ($st, $res, $t, $ms, $msg) = split /\|/, $lines[$i], 5;
			my ($op, $key) = @{ $plan[$c][$i] };
			push @outcomes, { client => $c, op => $op, key => $key, t => $t, ms => $ms,
				state => $st eq 'ok' ? 'ok' : $res, result => $st eq 'ok' ? $res : undef,
				msg => $msg };
		}
		if ($err =~ /DKEND|load finished/) { $clean_end++; }
		elsif ($err =~ /connection|terminat|server closed/i && @lines < @{ $plan[$c] })
		{
			# the call in flight when the connection died
			my ($op, $key) = @{ $plan[$c][ scalar @lines ] };
			push @outcomes, { client => $c, op => $op, key => $key, t => time(), ms => 0,
				state => 'lost', msg => (split /\n/, $err)[0] };
		}
		else
		{
			diag("load client $c ended with rc $rc[$c]: $err");
		}
	}
	my @flushes;
	if ($mon && -e "$dir/monitor")
	{
		for (split /\n/, slurp_file("$dir/monitor"))
		{
			my ($now, $lf) = split /\|/;
			push @flushes, $lf if defined $lf && $lf ne '';
		}
	}
	return { tag => $a{tag}, node => $node, outcomes => \@outcomes, clients => $clients,
		clean_end => $clean_end, rc => \@rc, events => \@events, flushes => \@flushes,
		seconds => $a{seconds} };
}

# Compare a load's record with what is stored and test the accounting.
#   expected_errors: SQLSTATEs a call may fail with in this scenario;
#   max_ms: bound on the duration of every call;
#   allow_loss: sub(key) -> units of that key allowed to be lost (a crash).
# Returns the summary (see load_summary).
sub account_load
{
	my ($load, %a) = @_;
	my $node = $a{node} // $load->{node};
	my (%lo, %hi, %class, %by_state, %by_op);
	my ($attempted, $acked, $ambiguous, $failed, $max_ms) = (0, 0, 0, 0, 0);
	my (%lax, %unexpected, %first_msg, @not_applied_ok);
	for my $o (@{ $load->{outcomes} })
	{
		my $def = $OPS{ $o->{op} };
		my $mode = $def->{lax} ? 'lax' : 'strict';
		$class{ $o->{key} } = $def->{class};
		$lo{ $o->{key} } //= 0;
		$hi{ $o->{key} } //= 0;
		$attempted++;
		$lax{$mode}{attempted}++;
		$by_op{ $o->{op} }{ $o->{state} }++;
		$max_ms = $o->{ms} if $o->{ms} > $max_ms;
		if ($o->{state} eq 'ok')
		{
			my $applied = $def->{applied} ? $def->{applied}->($o->{result}) : 1;
			push @not_applied_ok, "$o->{op} $o->{key} -> $o->{result}" if !$applied && $def->{must_apply};
			if ($applied) { $lo{ $o->{key} }++; $hi{ $o->{key} }++; }
			$acked++;
			$lax{$mode}{acked}++;
		}
		elsif ($AMBIGUOUS{ $o->{state} })
		{
			$hi{ $o->{key} }++;
			$ambiguous++;
			$lax{$mode}{ambiguous}++;
		}
		else
		{
			$failed++;
			$lax{$mode}{failed}++;
		}
		if ($o->{state} ne 'ok')
		{
			$by_state{ $o->{state} }++;
			$first_msg{ $o->{state} } //= $o->{msg};
			$unexpected{ $o->{state} }++
			  unless $AMBIGUOUS{ $o->{state} } || grep { $_ eq $o->{state} } @{ $a{expected_errors} // [] };
		}
	}
	my ($stored, $lost, $doubled, $allowed_loss) = (0, 0, 0, 0);
	my @bad;
	for my $key (sort keys %lo)
	{
		my $s = $CLASS{ $class{$key} }->($node, $key);
		my $allow = $a{allow_loss} ? $a{allow_loss}->($key) : 0;
		$stored += $s;
		$allowed_loss += $allow;
		my $l = $s < $lo{$key} ? $lo{$key} - $s : 0;
		my $d = $s > $hi{$key} ? $s - $hi{$key} : 0;
		$lost += $l;
		$doubled += $d;
		push @bad, "$key: stored $s, acknowledged $lo{$key}, at most $hi{$key}, loss allowed $allow"
		  if $l > $allow || $d > 0;
	}
	my $sum = {
		tag => $load->{tag}, attempted => $attempted, acked => $acked, ambiguous => $ambiguous,
		failed => $failed, stored => $stored, lost => $lost, doubled => $doubled,
		allowed_loss => $allowed_loss, max_ms => $max_ms, by_state => \%by_state, mode => \%lax,
		first_msg => \%first_msg, bad => \@bad, events => $load->{events} };

	my $t = $load->{tag};
	ok($attempted > 0 && $acked > 0, "$t: the load ran ($attempted calls, $acked acknowledged)");
	is(scalar(grep { $_ eq 'hung' } @{ $load->{rc} }), 0, "$t: every client finished by its deadline");
	is(join('; ', @bad), '', "$t: every key holds its acknowledged units, none doubled"
		  . ($a{allow_loss} ? ' (and no more lost than the bound allows)' : ', none lost'));
	is(join(', ', map { "$_ x$unexpected{$_}" } sort keys %unexpected), '',
		"$t: every error has an expected SQLSTATE");
	is(scalar(@not_applied_ok) . (@not_applied_ok ? " (first: $not_applied_ok[0])" : ''), '0',
		"$t: every acknowledged conditional call was applied");
	ok($max_ms <= $a{max_ms}, "$t: no call took longer than $a{max_ms} ms (longest: $max_ms ms)")
	  if defined $a{max_ms};
	for my $s (sort keys %first_msg)
	{
		note("$t: first $s: $first_msg{$s}");
	}
	note("$t: " . load_summary($sum));
	return $sum;
}

# One line for docs/reliability.md.
sub load_summary
{
	my ($s) = @_;
	my $errs = join(', ', map { "$_ x$s->{by_state}{$_}" } sort keys %{ $s->{by_state} });
	my $modes = join('; ', map {
			my $m = $s->{mode}{$_};
			sprintf('%s: %d attempted, %d acknowledged, %d ambiguous, %d failed', $_,
				$m->{attempted} // 0, $m->{acked} // 0, $m->{ambiguous} // 0, $m->{failed} // 0)
		} sort keys %{ $s->{mode} });
	return sprintf('attempted %d, acknowledged %d, ambiguous %d, failed cleanly %d, stored %d, '
		  . 'lost %d%s, doubled %d; errors: %s; %s; longest call %s ms',
		$s->{attempted}, $s->{acked}, $s->{ambiguous}, $s->{failed}, $s->{stored}, $s->{lost},
		$s->{allowed_loss} ? " (bound $s->{allowed_loss})" : '', $s->{doubled}, $errs || 'none',
		$modes, $s->{max_ms});
}

1;

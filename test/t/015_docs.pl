# The docs run (issue 20): every ```sql block of README.md and docs/*.md is
# run against a real server (distkit preloaded, a real redis-server), in
# document order, and the results the docs show are checked.  The
# convention is in docs/hacking.md, "Docs that run":
#
#   * each Markdown file runs in a fresh world: the server is restarted,
#     Redis is emptied (FLUSHALL) and a new database is created, with
#     CREATE EXTENSION distkit unless the file's blocks create it;
#   * each block runs in one psql session, statement by statement;
#   * a comment after a statement's terminator, on the same line, is its
#     expected output: `-- 11`, `-- 2|true` (columns as psql -A prints
#     them, `true`/`false` for t/f, `NULL` for an empty field, rows joined
#     with `; `), a command tag (`-- UPDATE 0`), or `-- ERROR: ...`;
#   * comment lines right after a statement that start with ERROR:, DETAIL:
#     or HINT: are its expected error (`-- ERROR: 22023`, `-- ERROR:  the
#     message`, `-- ERROR: 22023: the message`; a trailing `...` matches a
#     prefix);
#   * any other error fails the test;
#   * `<!-- not run: reason -->` on the line before a block skips it.
# Files added to docs/ later are picked up by the glob.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $root = "$FindBin::RealBin/../..";
my @files = ("$root/README.md", sort glob("$root/docs/*.md"));

# ------------------------------------------------------------ extraction
# Blocks of one file: { line, indent, text, skip (reason or undef) }.
sub blocks_of
{
	my ($file) = @_;
	my @lines = split /\n/, slurp_file($file), -1;
	my (@blocks, $cur, $pending_skip, $pending_line);
	for my $i (0 .. $#lines)
	{
		my $l = $lines[$i];
		if ($cur)
		{
			if ($l =~ /^\s*```\s*$/)
			{
				push @blocks, $cur;
				undef $cur;
				next;
			}
			my $ind = $cur->{indent};
			$l =~ s/^\Q$ind\E//;
			$cur->{text} .= "$l\n";
			next;
		}
		if ($l =~ /^(\s*)```sql\s*$/)
		{
			$cur = { line => $i + 1, indent => $1, text => '', skip => $pending_skip };
			undef $pending_skip;
			next;
		}
		if ($l =~ /^\s*<!--\s*not run\b(.*?)-->\s*$/)
		{
			my $reason = $1;
			$reason =~ s/^\s*:\s*//;
			$reason =~ s/\s+$//;
			fail("$file:" . ($i + 1) . ': a "not run" marker needs a reason') if $reason !~ /\S/;
			fail("$file:$pending_line: a \"not run\" marker not followed by a sql block") if defined $pending_skip;
			($pending_skip, $pending_line) = ($reason, $i + 1);
			next;
		}
		next if $l !~ /\S/;
		if (defined $pending_skip)
		{
			fail("$file:$pending_line: a \"not run\" marker not followed by a sql block");
			undef $pending_skip;
		}
	}
	fail("$file:$cur->{line}: a sql block is not closed") if $cur;
	fail("$file:$pending_line: a \"not run\" marker not followed by a sql block") if defined $pending_skip;
	return @blocks;
}

# Split a block into statements, the way psql does: a statement ends at a
# ';' outside quotes, dollar quotes and comments, or with a backslash
# command (\gset ...) that ends the line; a line of its own starting with
# a backslash is a meta-command.  Each statement: { text, end_line (0-based
# line of the block where it ends), expect (trailing comment), errors }.
sub statements_of
{
	my ($text) = @_;
	my @lines = split /\n/, $text, -1;
	my @stmts;
	my $buf = '';
	my ($state, $dollar, $depth) = ('', '', 0);
	for my $ln (0 .. $#lines)
	{
		my $l = $lines[$ln];
		my $i = 0;
		my $n = length $l;
		if ($state eq '' && $buf !~ /\S/ && $l =~ /^\s*\\/)
		{
			push @stmts, { text => $buf . $l, end_line => $ln };
			$buf = '';
			next;
		}
		while ($i < $n)
		{
			my $c = substr($l, $i, 1);
			if ($state eq "'")
			{
				if ($c eq "'") { $state = '' }
				$buf .= $c;
				$i++;
				next;
			}
			if ($state eq "E'")
			{
				if ($c eq '\\') { $buf .= substr($l, $i, 2); $i += 2; next }
				if ($c eq "'") { $state = '' }
				$buf .= $c;
				$i++;
				next;
			}
			if ($state eq '"')
			{
				$state = '' if $c eq '"';
				$buf .= $c;
				$i++;
				next;
			}
			if ($state eq '$')
			{
				if (substr($l, $i, length $dollar) eq $dollar)
				{
					$buf .= $dollar;
					$i += length $dollar;
					$state = '';
					next;
				}
				$buf .= $c;
				$i++;
				next;
			}
			if ($state eq '/*')
			{
				if (substr($l, $i, 2) eq '*/') { $depth--; $buf .= '*/'; $i += 2; $state = '' if $depth == 0; next }
				if (substr($l, $i, 2) eq '/*') { $depth++; $buf .= '/*'; $i += 2; next }
				$buf .= $c;
				$i++;
				next;
			}
			# normal state
			if (substr($l, $i, 2) eq '--') { $buf .= substr($l, $i); last }
			if (substr($l, $i, 2) eq '/*') { $state = '/*'; $depth = 1; $buf .= '/*'; $i += 2; next }
			if ($c eq "'")
			{
				$state = ($i > 0 && substr($l, $i - 1, 1) =~ /[eE]/
					  && ($i == 1 || substr($l, $i - 2, 1) !~ /\w/)) ? "E'" : "'";
				$buf .= $c;
				$i++;
				next;
			}
			if ($c eq '"') { $state = '"'; $buf .= $c; $i++; next }
			if ($c eq '$' && substr($l, $i) =~ /^(\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)/
				&& ($i == 0 || substr($l, $i - 1, 1) !~ /\w/))
			{
				$dollar = $1;
				$state = '$';
				$buf .= $dollar;
				$i += length $dollar;
				next;
			}
			if ($c eq '\\')
			{
				# a backslash command ends the statement and the line
				push @stmts, { text => $buf . substr($l, $i), end_line => $ln };
				$buf = '';
				$i = $n;
				last;
			}
			if ($c eq ';')
			{
				my $rest = substr($l, $i + 1);
				my $s = { text => "$buf;", end_line => $ln };
				# a trailing comment, with nothing else after the ';'
				$s->{expect} = $1 if $rest =~ /^\s*--\s?(.*?)\s*$/;
				push @stmts, $s;
				$buf = '';
				$i++;
				if ($rest =~ /^\s*--/) { $i = $n; last }
				next;
			}
			$buf .= $c;
			$i++;
		}
		$buf .= "\n";
	}
	push @stmts, { text => $buf, end_line => $#lines, unterminated => 1 } if $buf =~ /\S/ && $buf !~ /\A(?:\s*--[^\n]*\n?)*\s*\z/;
	# expected errors: comment lines right after the statement's line
	for my $s (@stmts)
	{
		my @err;
		push @err, $s->{expect} if defined $s->{expect} && $s->{expect} =~ /^ERROR:/;
		for (my $ln = $s->{end_line} + 1; $ln <= $#lines; $ln++)
		{
			last unless $lines[$ln] =~ /^\s*--\s?((?:ERROR|DETAIL|HINT):.*?)\s*$/;
			push @err, $1;
		}
		if (@err)
		{
			delete $s->{expect};
			$s->{errors} = \@err;
		}
	}
	return @stmts;
}

# DISTKIT_DOCS_DRY=1: print what would run and what is checked, start nothing
if ($ENV{DISTKIT_DOCS_DRY})
{
	my $fh = Test::More->builder->output;	# STDOUT goes to the test's log
	for my $file (@files)
	{
		(my $name = $file) =~ s{^\Q$root\E/}{};
		for my $b (blocks_of($file))
		{
			print $fh "== $name:$b->{line}" . (defined $b->{skip} ? " (not run: $b->{skip})" : '') . "\n";
			next if defined $b->{skip};
			for my $s (statements_of($b->{text}))
			{
				(my $t = $s->{text}) =~ s/\s+/ /g;
				$t =~ s/^\s+//;
				print $fh '  ', substr($t, 0, 70), defined $s->{expect} ? "   => $s->{expect}" : '',
				  $s->{errors} ? '   => ' . join(' / ', @{ $s->{errors} }) : '',
				  $s->{unterminated} ? '   (NOT TERMINATED)' : '', "\n";
			}
		}
	}
	plan skip_all => 'dry run';
}

# ------------------------------------------------------------ running
my $port = start_redis('docs');
my $node = new_node('docs', "redis://127.0.0.1:$port/0", "distkit.heartbeat_interval = '200ms'\n");
$node->safe_psql('postgres', 'DROP EXTENSION distkit');
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

# "t"/"true", "f"/"false", ""/"NULL" are the same; rows joined with "; "
sub norm
{
	my ($s) = @_;
	return join '; ', map {
		join '|', map { $_ eq 'true' ? 't' : $_ eq 'false' ? 'f' : $_ eq 'NULL' ? '' : $_ } split /\|/, $_, -1
	} split /\s*;\s+|\n/, $s;
}

# An expected error line against what psql printed ("ERROR:  msg" etc.).
sub error_matches
{
	my ($want, $state, $got) = @_;
	my ($kind, $rest) = $want =~ /^(ERROR|DETAIL|HINT):\s*(.*)$/;
	my $text = $got->{$kind};
	if ($kind eq 'ERROR' && $rest =~ /^([0-9A-Z]{5})(?::\s*(.*))?$/)
	{
		return 0 if $1 ne $state;
		return 1 unless defined $2;
		$rest = $2;
	}
	return 0 unless defined $text;
	return substr($text, 0, length($rest) - 3) eq substr($rest, 0, -3) if $rest =~ /\.\.\.$/;
	return $text eq $rest;
}

my %count = (files => 0, found => 0, run => 0, not_run => 0, statements => 0, checked => 0);
my $db_n = 0;
for my $file (@files)
{
	my @blocks = blocks_of($file);
	(my $name = $file) =~ s{^\Q$root\E/}{};
	$count{found} += @blocks;
	$count{files}++ if @blocks;
	my @runnable = grep { !defined $_->{skip} } @blocks;
	$count{not_run} += @blocks - @runnable;
	diag("$name:$_->{line}: not run ($_->{skip})") for grep { defined $_->{skip} } @blocks;
	next unless @runnable;

	# a fresh world for each file
	$node->stop;
	redis_cli('FLUSHALL');
	$node->start;
	wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'distkit worker'") eq '1';
	}, 'the flusher worker to start');
	my $db = 'docs' . ++$db_n;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION distkit')
	  unless grep { $_->{text} =~ /CREATE\s+EXTENSION\s+(IF\s+NOT\s+EXISTS\s+)?distkit\b/i } @runnable;

	for my $b (@runnable)
	{
		my @stmts = statements_of($b->{text});
		my @problems;
		push @problems, "statement not terminated: $_->{text}" for grep { $_->{unterminated} } @stmts;
		# the script: each statement, then a marker with its SQLSTATE
		my $script = "$tmp/docs-block.sql";
		my $sql = "\\set VERBOSITY default\n\\set SHOW_CONTEXT never\n\\set SQLSTATE 00000\n";
		my $line = 3;
		my @range;
		for my $k (0 .. $#stmts)
		{
			my $t = $stmts[$k]{text};
			$t =~ s/\n+\z//;
			my $first = $line + 1;
			$line += 1 + ($t =~ tr/\n//);
			push @range, [ $first, $line ];
			$sql .= "$t\n\\echo '\@\@docs $k' :SQLSTATE\n\\set SQLSTATE 00000\n";
			$line += 2;
		}
		open my $fh, '>', $script or die;
		print $fh $sql;
		close $fh;
		# not quiet: a statement that returns no rows prints its command tag
		my ($out, $err) = ('', '');
		IPC::Run::run([ 'psql', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-d', $node->connstr($db),
				'-f', $script ], '<', \'', '>', \$out, '2>', \$err);
		my $rc = $? >> 8;
		# stdout: the output of each statement, then its marker
		my (@output, @state);
		my $acc = '';
		for my $l (split /\n/, $out // '')
		{
			if ($l =~ /^\@\@docs (\d+) (\S*)$/)
			{
				($output[$1], $state[$1]) = ($acc, $2);
				$acc = '';
			}
			else { $acc .= ($acc eq '' ? '' : "\n") . $l }
		}
		# stderr: errors by script line, with their DETAIL and HINT
		my (%errs, $cur);
		for my $l (split /\n/, $err // '')
		{
			if ($l =~ /^psql:[^:]*:(\d+): (ERROR|WARNING|NOTICE|INFO):  (.*)$/)
			{
				$cur = $2 eq 'ERROR' ? ($errs{$1} = { ERROR => $3 }) : undef;
			}
			elsif ($cur && $l =~ /^(DETAIL|HINT):  (.*)$/) { $cur->{$1} = $2 }
		}
		for my $k (0 .. $#stmts)
		{
			my $s = $stmts[$k];
			my $where = "$name:" . ($b->{line} + 1 + $s->{end_line});
			if (!defined $state[$k])
			{
				push @problems, "$where: statement did not run (psql exit $rc): $err";
				last;
			}
			$count{statements}++;
			my ($e) = map { $errs{$_} } grep { $_ >= $range[$k][0] && $_ <= $range[$k][1] } keys %errs;
			if ($s->{errors})
			{
				$count{checked}++;
				if ($state[$k] eq '00000' || $state[$k] eq '')
				{
					push @problems, "$where: expected an error ($s->{errors}[0]), the statement succeeded";
					next;
				}
				for my $w (@{ $s->{errors} })
				{
					push @problems, "$where: expected $w, got $state[$k]: "
					  . join(' | ', map { "$_: " . ($e->{$_} // '') } qw(ERROR DETAIL HINT))
					  unless error_matches($w, $state[$k], $e // {});
				}
				next;
			}
			if ($state[$k] ne '00000' && $state[$k] ne '')
			{
				push @problems, "$where: unexpected error $state[$k]: " . ($e ? $e->{ERROR} : $err);
				next;
			}
			next unless defined $s->{expect};
			$count{checked}++;
			push @problems, "$where: expected \"$s->{expect}\", got \"" . join('; ', split /\n/, $output[$k]) . '"'
			  if norm($output[$k]) ne norm($s->{expect});
		}
		$count{run}++;
		ok(!@problems, "$name:$b->{line}: " . scalar(@stmts) . ' statements run')
		  or diag(join("\n", @problems));
	}
}
ok($count{found} > 0 && $count{run} + $count{not_run} == $count{found}, 'every sql block either runs or says why not');
diag("docs: $count{files} files, $count{found} sql blocks found, $count{run} run, $count{not_run} not run; "
	  . "$count{statements} statements run, $count{checked} results checked");
done_testing();

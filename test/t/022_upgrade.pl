# The upgrade path: CREATE EXTENSION distkit VERSION '0.1.0' followed by
# ALTER EXTENSION distkit UPDATE gives exactly the objects of a fresh
# CREATE EXTENSION (compared from the catalogs), what was written to Redis
# before the update reads the same after it, and the library refuses SQL
# objects of a version it does not know, saying what to run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('upgrade');
my $node = new_node('upgrade', "redis://127.0.0.1:$port/0");
my $newest = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'distkit'});
is($newest, '0.2.0', 'the newest version is 0.2.0');
is($node->safe_psql('postgres',
		q{SELECT string_agg(version, ' ' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'distkit'}),
	'0.1.0 0.2.0', 'both versions are installable');

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('postgres', 'CREATE DATABASE upgraded');
$node->safe_psql('fresh', 'CREATE EXTENSION distkit');
$node->safe_psql('upgraded', q{CREATE EXTENSION distkit VERSION '0.1.0'});
my $q = sub { $node->safe_psql('upgraded', $_[0]) };

# 1. the library works with the 0.1.0 objects: write state of every kind
is($q->(q{SELECT extversion FROM pg_extension WHERE extname = 'distkit'}), '0.1.0', 'installed as 0.1.0');
$q->(q{SELECT distkit_inc('up:c', 5)});
$q->(q{SELECT count(distkit_inc('up:lax', 1, 'lax')) FROM generate_series(1, 7)});
$q->('SELECT distkit_flush()');
$q->(q{SELECT count(*) FROM generate_series(1, 3) WHERE distkit_rate_allow('up:r', 10, '1 day')});
$q->(q{SELECT distkit_cache_set_text('up:k', 'kept', '1 hour')});
$q->(q{SELECT (distkit_instance_inc('up:i', 4)).total});
# the 0.1.0 name of the breaker's window argument
$q->(q{SELECT distkit_breaker_configure('up:b', minimum_calls => 2, "window" => '30 s')});
is($q->(q{SELECT last_flush IS NOT NULL AND keys_flushed >= 1 AND last_error IS NULL FROM distkit_stats}), 't',
	'distkit_stats with the 13 columns of 0.1.0: each value in its own column');
is($q->(q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'distkit_stats'::regclass AND attnum > 0}), '13',
	'... the 0.1.0 view has 13 columns');
my %before = (
	counter  => $q->(q{SELECT distkit_get('up:c')}),
	lax      => $q->(q{SELECT distkit_get('up:lax')}),
	rate     => $q->(q{SELECT remaining FROM distkit_rate_peek('up:r', 10, '1 day')}),
	cache    => $q->(q{SELECT distkit_cache_get_text('up:k')}),
	instance => $q->(q{SELECT total || '/' || this_instance FROM distkit_instance_get('up:i')}),
);
is_deeply(\%before, { counter => 5, lax => 7, rate => 7, cache => 'kept', instance => '4/4' },
	'state written with the 0.1.0 objects');

# 2. the update, in a session that used distkit before it
my ($rc, $out, $err) = $node->psql('upgraded', q{SELECT distkit_get('up:c'); ALTER EXTENSION distkit UPDATE;
	SELECT extversion FROM pg_extension WHERE extname = 'distkit'; SELECT seed_reads >= 0 FROM distkit_stats;});
is($rc, 0, 'ALTER EXTENSION distkit UPDATE succeeds') or diag($err);
is($out, "5\n0.2.0\nt", 'the same session reads, updates, then sees the new columns');

my %after = (
	counter  => $q->(q{SELECT distkit_get('up:c')}),
	lax      => $q->(q{SELECT distkit_get('up:lax')}),
	rate     => $q->(q{SELECT remaining FROM distkit_rate_peek('up:r', 10, '1 day')}),
	cache    => $q->(q{SELECT distkit_cache_get_text('up:k')}),
	instance => $q->(q{SELECT total || '/' || this_instance FROM distkit_instance_get('up:i')}),
);
is_deeply(\%after, \%before, 'everything written before the update reads the same after it');
is($q->(q{SELECT distkit_inc('up:c', 1) || ' ' || distkit_inc('up:lax', 1, 'lax')}), '6 8',
	'and keeps counting from there');
$q->(q{SELECT distkit_breaker_configure('up:b', minimum_calls => 2, sliding_window => '30 s')});
is($q->(q{SELECT state FROM distkit_breaker_state('up:b')}), 'closed', 'the breaker argument is now sliding_window');

# 3. the catalogs: every member object, its definition, grants and comment
my $catalog = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'distkit'),
members AS (SELECT classid, objid FROM pg_depend WHERE refclassid = 'pg_extension'::regclass
            AND refobjid = (SELECT oid FROM ext) AND deptype = 'e')
SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
UNION ALL
SELECT format('function %s(%s) returns %s %s %s strict=%s secdef=%s leak=%s cost=%s rows=%s src=%s bin=%s acl=%s comment=%s',
       p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
       p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, p.proleakproof, p.procost, p.prorows,
       p.prosrc, p.probin, p.proacl, obj_description(p.oid, 'pg_proc'))
  FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT format('relation %s kind=%s acl=%s comment=%s def=%s columns=%s', c.relname, c.relkind, c.relacl,
       obj_description(c.oid, 'pg_class'), pg_get_viewdef(c.oid),
       (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
          FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0))
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT format('type %s labels=%s acl=%s comment=%s', t.typname,
       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
       t.typacl, obj_description(t.oid, 'pg_type'))
  FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
ORDER BY 1};
my $fresh = $node->safe_psql('fresh', $catalog);
my $upgraded = $q->($catalog);
my @lines = split /\n/, $fresh;
my $declared = () = slurp_file("$FindBin::RealBin/../../sql/distkit.sql") =~ /^CREATE FUNCTION /mg;
is(scalar(grep { /^function / } @lines), $declared, "the listing covers every function sql/distkit.sql declares ($declared)");
ok(scalar(grep { /^relation distkit_stats kind=v/ } @lines) == 1 && scalar(grep { /^type distkit_mode labels=strict,lax/ } @lines) == 1,
	'... and the views and types');
if ($fresh eq $upgraded)
{
	pass('0.1.0 + ALTER EXTENSION UPDATE = a fresh CREATE EXTENSION, object for object');
}
else
{
	my %f = map { $_ => 1 } @lines;
	my %u = map { $_ => 1 } split /\n/, $upgraded;
	diag("only in fresh: $_") for grep { !$u{$_} } sort keys %f;
	diag("only in upgraded: $_") for grep { !$f{$_} } sort keys %u;
	fail('0.1.0 + ALTER EXTENSION UPDATE = a fresh CREATE EXTENSION, object for object');
}

# 4. SQL objects of a version this library does not know are refused, with the fix
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION distkit');
for my $v ('0.0.9', '0.3.0')
{
	$node->safe_psql('other', qq{UPDATE pg_extension SET extversion = '$v' WHERE extname = 'distkit'});
	for my $sql (q{SELECT distkit_inc('up:x', 1)}, q{SELECT distkit_inc('up:x', 1, 'lax')},
		q{SELECT * FROM distkit_stats}, q{SELECT distkit_flush()}, q{SELECT distkit_cache_clear()},
		q{SELECT * FROM distkit_stat_calls}, q{SELECT * FROM distkit_stat_calls_buckets},
		q{SELECT distkit_stat_calls_reset()})
	{
		my ($r, $o, $e) = $node->psql('other', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
		like($e, qr/ERROR:  55000: distkit's SQL objects in this database are version \Q$v\E, which the loaded distkit library \(0\.2\.0\) does not support/,
			"$v: refused: $sql");
		like($e, qr/HINT:  Run ALTER EXTENSION distkit UPDATE in this database, or install the distkit library of version \Q$v\E/,
			"$v: ... with what to run: $sql");
	}
}
is(redis_cli('EXISTS', 'distkit:c:{up:x}'), '0', 'nothing was written by the refused calls');
$node->safe_psql('other', q{UPDATE pg_extension SET extversion = '0.2.0' WHERE extname = 'distkit'});
is($node->safe_psql('other', q{SELECT distkit_inc('up:x', 1)}), '1', 'back to a known version: calls work again');
like(slurp_file($node->logfile), qr/^(?!.*(terminated by signal|server process .* was terminated))/s, 'no crash');
done_testing();

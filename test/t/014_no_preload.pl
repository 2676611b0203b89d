# distkit loaded without shared_preload_libraries: strict calls work, what
# needs shared memory or the worker says so clearly (55000), nothing crashes.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $port = start_redis('nopreload');
my $node = PostgreSQL::Test::Cluster->new('nopreload');
$node->init;
$node->append_conf('postgresql.conf', "distkit.redis_url = 'redis://127.0.0.1:$port/0'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION distkit');
is($node->safe_psql('postgres', q{SELECT distkit_inc('np', 2)}), '2', 'strict increments work without preload');
is($node->safe_psql('postgres', q{SELECT distkit_rate_allow('np', 10)}), 't', 'rate limiting works without preload');
for my $sql (q{SELECT distkit_inc('np', 1, 'lax')}, q{SELECT distkit_flush()}, q{SELECT * FROM distkit_stats},
	q{SELECT * FROM distkit_instance_inc('np')}, q{SELECT * FROM distkit_stat_calls},
	q{SELECT distkit_stat_calls_reset()})
{
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  55000: .* needs distkit to be loaded at server start/, "needs preload: $sql");
	like($err, qr/HINT:  Add distkit to shared_preload_libraries/, "with a hint: $sql");
}
is($node->safe_psql('postgres', q{SELECT distkit_get('np')}), '2', 'the backend survived and the value is intact');
like(slurp_file($node->logfile), qr/^(?!.*(terminated by signal|FATAL))/s, 'no crash, no FATAL');
done_testing();

# The Prometheus query file (contrib/prometheus/distkit.yaml) with Debian's
# real prometheus-postgres-exporter: a known number of calls, one scrape of
# /metrics over loopback, the exact call counts, errors and histogram.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $exporter = '/usr/bin/prometheus-postgres-exporter';
plan skip_all => "$exporter is not installed (apt-get install prometheus-postgres-exporter; test/setup.sh does)"
  unless -x $exporter;

my $port = start_redis('prometheus');
my $node = new_node('prometheus', "redis://127.0.0.1:$port/0");
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# the exporter connects as a role that is only in pg_monitor
$pg->(q{CREATE ROLE dk_exporter LOGIN; GRANT pg_monitor TO dk_exporter});

# known calls: 7 strict and 5 lax increments, 3 rate checks, 2 failed
# increments (NULL key: 22004, counted in the default mode, strict)
$pg->(q{SELECT distkit_inc('prom', 0), distkit_inc('prom', 0, 'lax')});	# connect, seed
$pg->(q{SELECT distkit_stat_calls_reset()});
$pg->(q{SELECT distkit_inc('prom') FROM generate_series(1, 7)});
$pg->(q{SELECT distkit_inc('prom', 1, 'lax') FROM generate_series(1, 5)});
$pg->(q{SELECT distkit_rate_allow('prom', 100, '1 minute') FROM generate_series(1, 3)});
$pg->(q{SELECT distkit_queue_length('prom') FROM generate_series(1, 4)});	# an operation without a mode
for (1 .. 2)
{
	my ($ret, $out, $err) = $node->psql('postgres', q{SELECT distkit_inc(NULL)});
	like($err, qr/key must not be NULL/, 'a failing call');
}
is($pg->(q{SELECT distkit_get('prom')}), '12', 'the counter holds 7 + 5');

my $web_port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = sprintf('host=%s port=%d user=dk_exporter dbname=postgres sslmode=disable',
	$node->host, $node->port);
my $log = "${PostgreSQL::Test::Utils::tmp_check}/exporter.log";
my $h = IPC::Run::start(
	[
		$exporter, "--web.listen-address=127.0.0.1:$web_port",
		"--extend.query-path=$FindBin::RealBin/../../contrib/prometheus/distkit.yaml",
		'--disable-settings-metrics', '--log.level=warn'
	],
	'<', \undef, '>', $log, '2>&1',
	init => sub { $ENV{DATA_SOURCE_NAME} = $dsn });

my $http = HTTP::Tiny->new(timeout => 10);
my $body = '';
wait_for(sub {
	my $r = $http->get("http://127.0.0.1:$web_port/metrics");
	$body = $r->{content} if $r->{success};
	return $r->{success} && $body =~ /^distkit_calls_total/m;
}, 'the exporter to serve distkit metrics');

# The value of a sample whose labels include every given one.
sub sample
{
	my ($name, %labels) = @_;
	for my $line (split /\n/, $body)
	{
		next unless $line =~ /^\Q$name\E\{(.*)\} (\S+)$/;
		my ($l, $v) = ($1, $2);
		next if grep { $l !~ /(^|,)\Q$_\E="\Q$labels{$_}\E"/ } keys %labels;
		return $v;
	}
	return undef;
}

is(sample('distkit_calls_total', operation => 'counter/inc', mode => 'strict'), '9',
	'strict increments: 7 + 2 failed');
is(sample('distkit_calls_total', operation => 'counter/inc', mode => 'lax'), '5', 'lax increments');
is(sample('distkit_calls_total', operation => 'rate/allow', mode => 'strict'), '3', 'strict rate checks');
is(sample('distkit_call_errors_total', operation => 'counter/inc', mode => 'strict', class => '22'), '2',
	'failed increments, SQLSTATE class 22');
is(sample('distkit_call_errors_total', operation => 'counter/inc', mode => 'strict', class => '08'), '0',
	'no connection errors');
# each psql is a new session: its first call also makes the connection
# handshake, one more request
is(sample('distkit_round_trips_total', operation => 'counter/inc', mode => 'strict'), '8',
	'one Redis round trip per strict increment that ran, plus the handshake');
is(sample('distkit_round_trips_total', operation => 'counter/inc', mode => 'lax'), '0',
	'none for lax increments');
is(sample('distkit_call_duration_seconds_count', operation => 'counter/inc', mode => 'strict'), '9',
	'histogram count');
is(sample('distkit_call_duration_seconds_bucket', operation => 'counter/inc', mode => 'strict', le => '+Inf'), '9',
	'histogram +Inf bucket');
is(sample('distkit_call_duration_seconds_bucket', operation => 'queue/length', mode => '', le => '+Inf'), '4',
	'histogram of an operation without a mode');
ok(defined sample('distkit_call_duration_seconds_bucket', operation => 'counter/inc', mode => 'lax', le => '0.001'),
	'buckets in seconds (1 ms)');
ok(!defined sample('distkit_calls_total', operation => 'counter/get_many'), 'operations never called are left out');

$h->kill_kill;
$node->stop;
done_testing();

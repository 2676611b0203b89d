# TLS to Redis (rediss://, src/redis_tls.c), against a real redis-server
# that speaks TLS only (test/redis-ctl.sh with DISTKIT_REDIS_TLS=1,
# certificates from test/certs.sh), whose certificate and client
# authentication the test switches at run time (CONFIG SET tls-*):
#   1. calls and the lax flush over TLS, with a password, exactly once;
#   2. verification: unknown CA, expired certificate, host mismatch (IP),
#      tls_verify = ca and none (WARNING), tls_server_name;
#   3. mutual TLS: refused without a client certificate, works with one;
#      a group-readable key file is refused;
#   4. a plaintext server on a rediss:// URL (never answers the handshake:
#      connect_timeout) and a TLS server on a redis:// URL;
#   5. a server that accepts TCP and never answers TLS: the call ends at
#      connect_timeout, earlier on statement_timeout, and
#      pg_terminate_backend ends it at once;
#   6. no password in any message or in the server log.
# Each failure is SQLSTATE 08001 with a message naming the cause.
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use DistkitTest;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $password = 's3cret-tls';

# a plaintext Redis first (redis_cli then talks to the TLS one, started last)
my $plain_port = start_redis('tls-plain');
my $tls_port = do { local $ENV{DISTKIT_REDIS_TLS} = '1'; start_redis('tls') };
my $certs = redis_ctl_out('certs');
redis_cli('CONFIG', 'SET', 'requirepass', $password);
my $auth = sub { redis_ctl_out('cli', '-a', $password, '--raw', @_) };

my $url = "rediss://:$password\@127.0.0.1:$tls_port/0";
my $node = new_node('tls', $url, qq{
distkit.tls_ca_file = '$certs/ca.crt'
distkit.connect_timeout = '1s'
distkit.flush_interval = '10ms'
log_statement = 'all'
});
my $pg = sub { $node->safe_psql('postgres', $_[0]) };

# "SQLSTATE message | hint" of a failing query (ports replaced by PORT)
$pg->(q{CREATE FUNCTION err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
	RETURN regexp_replace(st || ' ' || msg || coalesce(' | ' || hint, ''), ':[0-9]+', ':PORT', 'g');
END $$});

# Set distkit settings server-wide and reload (each ALTER SYSTEM alone)
sub set_conf
{
	my (%kv) = @_;
	for my $k (sort keys %kv)
	{
		my $v = $kv{$k};
		$node->safe_psql('postgres',
			defined $v ? "ALTER SYSTEM SET distkit.$k = '$v'" : "ALTER SYSTEM RESET distkit.$k");
	}
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	usleep(300_000);
}

# The Redis server's certificate (new connections use it)
sub server_cert
{
	my ($name) = @_;
	$auth->('CONFIG', 'SET', 'tls-cert-file', "$certs/$name.crt", 'tls-key-file', "$certs/$name.key");
}

# 1. calls and lax over TLS
is($pg->(q{SELECT distkit_inc('tls:strict', 5)}), '5', 'strict increment over TLS');
is($auth->('GET', 'distkit:c:{tls:strict}'), '5', 'Redis holds it (its only port is the TLS port)');
$pg->(q{SELECT distkit_inc('tls:lax', 1, mode => 'lax') FROM generate_series(1, 200)});
wait_for(sub { $auth->('GET', 'distkit:c:{tls:lax}') eq '200' }, 'the lax flush over TLS');
usleep(300_000);
is($auth->('GET', 'distkit:c:{tls:lax}'), '200', 'lax increments flushed over TLS exactly once');

# 2. verification
set_conf(tls_ca_file => "$certs/other-ca.crt");
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: TLS certificate verification failed: '
	  . 'self-signed certificate in certificate chain | Check distkit.redis_url and that redis-server is running and reachable.',
	'unknown CA: 08001 naming the verification failure');
set_conf(tls_ca_file => "$certs/ca.crt");
server_cert('expired');
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: TLS certificate verification failed: certificate has expired'
	  . ' | Check distkit.redis_url and that redis-server is running and reachable.',
	'expired certificate: 08001');
server_cert('wronghost');
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: TLS certificate verification failed: IP address mismatch'
	  . ' | Check distkit.redis_url and that redis-server is running and reachable.',
	'certificate for another host: 08001 (full verification checks the IP)');
set_conf(tls_server_name => 'redis.example.com');
is($pg->(q{SELECT distkit_get('tls:strict')}), '5', 'tls_server_name names the host the certificate is for');
set_conf(tls_server_name => 'other.example.com');
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: TLS certificate verification failed: hostname mismatch'
	  . ' | Check distkit.redis_url and that redis-server is running and reachable.',
	'tls_server_name is verified');
set_conf(tls_server_name => undef, tls_verify => 'ca');
is($pg->(q{SELECT distkit_get('tls:strict')}), '5', 'tls_verify = ca: the chain only');
set_conf(tls_verify => 'none', tls_ca_file => "$certs/other-ca.crt");
my ($rc, $out, $stderr) = $node->psql('postgres', q{SELECT distkit_get('tls:strict')});
is($out, '5', 'tls_verify = none: no verification at all');
like($stderr, qr/WARNING:  the TLS connection to Redis at 127\.0\.0\.1:\d+ is not verified/,
	'tls_verify = none: a WARNING at connect');
set_conf(tls_verify => undef, tls_ca_file => "$certs/ca.crt");
server_cert('server');
is($pg->(q{SELECT distkit_get('tls:strict')}), '5', 'back to full verification with the right certificate');

# 3. mutual TLS
$auth->('CONFIG', 'SET', 'tls-auth-clients', 'yes');
like($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	qr/^08001 could not connect to Redis at 127\.0\.0\.1:PORT: TLS error: the server requires a client certificate \(set distkit\.tls_cert_file and distkit\.tls_key_file\) \(tlsv13 alert certificate required\)/,
	'mutual TLS without a client certificate: 08001 naming the cause');
copy_key('client.key', 0640);
set_conf(tls_cert_file => "$certs/client.crt", tls_key_file => "$certs/mykey.key");
like($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	qr{^08001 could not connect to Redis at 127\.0\.0\.1:PORT: distkit\.tls_key_file "[^"]*/mykey\.key" has group or world access},
	'a group-readable key file is refused');
chmod(0600, "$certs/mykey.key");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');	# a new SSL_CTX is built at the next generation
set_conf(tls_key_file => "$certs/client.key");
is($pg->(q{SELECT distkit_inc('tls:strict')}), '6', 'mutual TLS with the client certificate');
$auth->('CONFIG', 'SET', 'tls-auth-clients', 'no');

# A copy of a key the database user owns, with a mode
sub copy_key
{
	my ($name, $mode) = @_;
	my $dst = "$certs/mykey.key";
	system('cp', "$certs/$name", $dst) == 0 or die 'cp failed';
	chmod($mode, $dst);
}

# 4. the wrong kind of port
set_conf(redis_url => "rediss://:$password\@127.0.0.1:$plain_port/0", connect_timeout => '300ms');
my $t0 = time();
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: no answer to the TLS handshake within 300 ms'
	  . ' | A server without TLS never answers it: check that the port in distkit.redis_url is its TLS port, '
	  . 'and that the server is not stopped.',
	'a plaintext server on a rediss:// URL: 08001 at connect_timeout with a hint');
cmp_ok(time() - $t0, '<', 3, 'and no longer than that');
set_conf(redis_url => "redis://:$password\@127.0.0.1:$tls_port/0");
like($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	qr/^08001 could not connect to Redis at 127\.0\.0\.1:PORT: .* \| .*if its port only speaks TLS \(tls-port\), use a rediss:\/\/ URL\.$/,
	'a TLS server on a redis:// URL: 08001 with a hint');

# 5. a server that accepts TCP and never answers the TLS handshake
my $mute = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 16, ReuseAddr => 1)
  or die "listen: $!";
my $mute_port = $mute->sockport;
my $mute_pid = fork();
if ($mute_pid == 0)
{
	my @held;
	while (my $c = $mute->accept) { push @held, $c; }	# accept, never answer
	exit 0;
}
set_conf(redis_url => "rediss://:$password\@127.0.0.1:$mute_port/0", connect_timeout => '1s');
$t0 = time();
is($pg->(q{SELECT err($$SELECT distkit_get('tls:strict')$$)}),
	'08001 could not connect to Redis at 127.0.0.1:PORT: no answer to the TLS handshake within 1000 ms'
	  . ' | A server without TLS never answers it: check that the port in distkit.redis_url is its TLS port, '
	  . 'and that the server is not stopped.',
	'a mute server: the handshake ends at connect_timeout');
my $took = time() - $t0;
cmp_ok($took, '>=', 0.9, 'not before connect_timeout');
cmp_ok($took, '<', 5, 'nor long after it');
set_conf(connect_timeout => '60s');
$t0 = time();
($rc, $out, $stderr) = $node->psql('postgres',
	q{SET statement_timeout = '300ms'; SELECT distkit_get('tls:strict')});
like($stderr, qr/ERROR:  (canceling statement due to statement timeout|Redis request canceled)/,
	'statement_timeout ends a handshake that connect_timeout (60 s) would not');
cmp_ok(time() - $t0, '<', 5, 'at once');
# pg_terminate_backend during the handshake
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/, q{\echo started
SELECT distkit_get('tls:strict');
});
my $victim;
wait_for(sub {
	$victim = $pg->(q{SELECT pid FROM pg_stat_activity WHERE query LIKE '%distkit_get(''tls:strict'')%' AND pid <> pg_backend_pid() AND state = 'active'});
	$victim ne '';
}, 'the backend waiting in the handshake');
$t0 = time();
$pg->("SELECT pg_terminate_backend($victim)");
wait_for(sub { $pg->("SELECT count(*) FROM pg_stat_activity WHERE pid = $victim") eq '0' },
	'the terminated backend to exit', 5);
cmp_ok(time() - $t0, '<', 3, 'pg_terminate_backend ends a backend waiting in the TLS handshake at once');
eval { $bg->quit };
kill 'KILL', $mute_pid;
waitpid($mute_pid, 0);

# back to the TLS server: everything still exact
set_conf(redis_url => $url, connect_timeout => undef);
is($pg->(q{SELECT distkit_get('tls:strict')}), '6', 'back on TLS, the value is exact');

# 6. no password anywhere
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$password\E/, 'the password is never in the server log');
like($log, qr/rediss:\/\/:\*\*\*\@/, 'the rediss:// URL is redacted in the log');

$node->stop;
done_testing();

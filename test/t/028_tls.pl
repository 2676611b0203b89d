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
#   6. distkit.redis_password_file: read at connect; an open connection
#      sends AUTH again (exactly once) after the file changed; a rotation
#      every 1.5 s (ACL user, old and new password valid for a while, as
#      with cloud tokens) under pgbench load: no error, totals exact;
#   7. faults over TLS: connections cut at random points of the encrypted
#      stream (test/proxy.pl random-cut) during lax load, and added
#      latency: after recovery every increment is in Redis exactly once;
#   8. Sentinels over TLS that require a password of their own (an ACL
#      user): rediss-sentinel://...?sentinel_user=U&sentinel_password=P;
#   9. no password in any message or in the server log.
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
use IPC::Run;

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
	qr/^08001 could not connect to Redis at 127\.0\.0\.1:PORT: TLS error: the server requires a client certificate \(set distkit\.tls_cert_file and distkit\.tls_key_file\); (tlsv13 alert certificate required|Connection reset by peer|the server closed the connection) \| /,
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

# the worker in a handshake with the mute server (connect_timeout 60 s):
# a reload with the right distkit.redis_url abandons its attempt at once,
# instead of leaving lax flushing stalled for up to a minute
$pg->(q{SELECT distkit_inc('tls:lax', 1, 'lax')});	# a buffered key: no Redis call here
($rc, $out, $stderr) = $node->psql('postgres', q{SELECT distkit_flush('2 s')});
like($stderr, qr/ERROR:  buffered lax increments were not flushed to Redis within 2000 ms/,
	'the worker cannot flush while distkit.redis_url names the mute server');
set_conf(redis_url => $url, connect_timeout => undef);
$t0 = time();
($rc, $out, $stderr) = $node->psql('postgres', q{SELECT distkit_flush('30 s')});
is($rc, 0, 'after a reload with the right URL, the buffered increment is flushed');
cmp_ok(time() - $t0, '<', 10, '... at once, not after the 60 s connect_timeout of the attempt in progress');
is($auth->('GET', 'distkit:c:{tls:lax}'), '201', '... exactly once');
kill 'KILL', $mute_pid;
waitpid($mute_pid, 0);
close $mute;	# no more connections queued in its backlog

# back to the TLS server: everything still exact
is($pg->(q{SELECT distkit_get('tls:strict')}), '6', 'back on TLS, the value is exact');

# 6. distkit.redis_password_file
my $pwfile = $node->basedir . '/redis-password';
# write the password file atomically (as a sidecar does: rename)
sub write_password
{
	my ($pw) = @_;
	open(my $fh, '>', "$pwfile.tmp") or die "write $pwfile.tmp: $!";
	print $fh "$pw\n";
	close($fh);
	chmod(0600, "$pwfile.tmp");
	rename("$pwfile.tmp", $pwfile) or die "rename: $!";
}
# AUTH commands Redis ran since the last call of auth_since (minus the
# AUTH of redis-cli -a that reads the count)
my $auth_seen = 0;
sub auth_since
{
	my ($calls) = $auth->('INFO', 'commandstats') =~ /cmdstat_auth:calls=(\d+)/;
	my $d = $calls - $auth_seen - 1;
	$auth_seen = $calls;
	return $d;
}
$auth->('ACL', 'SETUSER', 'rotor', 'on', '>s3cret-rot-1', '~*', '+@all');
set_conf(redis_url => "rediss://rotor:\@127.0.0.1:$tls_port/0");
like($pg->(q{SELECT err($$SELECT distkit_get('tls:rot')$$)}),
	qr/^22023 distkit\.redis_url is invalid: the password is empty/,
	'user:@ without distkit.redis_password_file: the password is empty');
write_password('s3cret-rot-1');
set_conf(redis_password_file => $pwfile, heartbeat_interval => '1h');
is($pg->(q{SELECT distkit_inc('tls:rot')}), '1', 'the password is read from the file at connect');
my $sess = $node->background_psql('postgres');
is($sess->query_safe(q{SELECT distkit_inc('tls:rot')}), '2', 'a session connected with the first password');
$auth->('ACL', 'SETUSER', 'rotor', '>s3cret-rot-2');
write_password('s3cret-rot-2');
$auth->('ACL', 'SETUSER', 'rotor', '<s3cret-rot-1');
usleep(1_100_000);		# the file is looked at once a second at most
auth_since();
is($sess->query_safe(q{SELECT distkit_inc('tls:rot')}), '3', 'the open connection keeps working after the rotation');
is(auth_since(), 1, 'it sent AUTH with the new password, once');
usleep(1_100_000);
is($sess->query_safe(q{SELECT distkit_inc('tls:rot')}), '4', 'and goes on');
is(auth_since(), 0, 'without sending it again');
$sess->quit;
is($pg->(q{SELECT distkit_inc('tls:rot')}), '5', 'a new session connects with the new password');

# rotations under load: strict and lax from 4 pgbench clients for 6 s
set_conf(heartbeat_interval => undef);
my $bench = $node->basedir . '/rot.sql';
open(my $bf, '>', $bench) or die;
print $bf "SELECT distkit_inc('rot:strict');\nSELECT distkit_inc('rot:lax', 1, 'lax');\n";
close($bf);
# output to files: IPC::Run relays pipes only while the test pumps them
my $h = IPC::Run::start([ 'pgbench', '-n', '-c', '4', '-j', '2', '-T', '6', '-f', $bench,
		'-d', $node->connstr('postgres') ], '>', "$bench.out", '2>', "$bench.err");
for my $i (3 .. 5)
{
	usleep(1_500_000);
	my $prev = $i - 1;
	$auth->('ACL', 'SETUSER', 'rotor', ">s3cret-rot-$i");
	write_password("s3cret-rot-$i");
	usleep(1_200_000);		# every connection had its chance to re-authenticate
	$auth->('ACL', 'SETUSER', 'rotor', "<s3cret-rot-$prev");
}
$h->finish;
is($h->result(0), 0, 'pgbench ran without an error through three rotations') or diag(slurp_file("$bench.err"));
my ($ntx) = slurp_file("$bench.out") =~ /number of transactions actually processed: (\d+)/;
ok($ntx > 1000, "pgbench ran $ntx transactions (not held up)");
$pg->('SELECT distkit_flush()');
is($auth->('GET', 'distkit:c:{rot:strict}'), $ntx, 'strict total exact');
is($auth->('GET', 'distkit:c:{rot:lax}'), $ntx, 'lax total exact');
unlike(slurp_file($node->logfile), qr/28P01|authentication to Redis/, 'no authentication failure logged');
set_conf(redis_password_file => undef, redis_url => $url);

# 7. faults over TLS, through a proxy that cuts the encrypted stream
my ($pport, $control) = start_proxy($tls_port);
set_conf(redis_url => "rediss://:$password\@127.0.0.1:$pport/0");
is($pg->(q{SELECT distkit_inc('tls:cut', 1, 'strict')}), '1', 'through the proxy, over TLS');
set_proxy_mode($control, 'random-cut:0.05');
my $acked = 1;
for (1 .. 20)
{
	$pg->(q{SELECT count(distkit_inc('tls:cut', 1, 'lax')) FROM generate_series(1, 100)});
	$acked += 100;
	usleep(50_000);		# the flusher sends (and loses some) batches meanwhile
}
set_proxy_mode($control, 'latency:20');
$pg->(q{SELECT count(distkit_inc('tls:cut', 1, 'lax')) FROM generate_series(1, 500)});
$acked += 500;
set_proxy_mode($control, 'pass');
$pg->(q{SELECT distkit_flush('10 s')});
is($auth->('GET', 'distkit:c:{tls:cut}'), $acked,
	"after random cuts of the TLS stream and latency, Redis holds each of the $acked increments once");
is($pg->('SELECT pending_delta FROM distkit_stats'), '0', 'nothing left in flight');
set_conf(redis_url => $url);

# 8. Sentinels over TLS with a password of their own (the data nodes have none)
my $sent_url = do
{
	local $ENV{DISTKIT_REDIS_TLS} = '1';
	local $ENV{DISTKIT_TLS_CERTS} = $certs;		# the same CA
	start_sentinel('tls-sentinel');
};
my $sent_password = 's3cret-sentinel';
for my $s (split /,/, redis_ctl_out('sentinels'))
{
	node_cli($s, 'ACL', 'SETUSER', 'watcher', 'on', ">$sent_password", '+@all');
	node_cli($s, 'ACL', 'SETUSER', 'default', 'off');
}
(my $sent_base = $sent_url) =~ s/#distkit$//;
set_conf(redis_url => $sent_url);
like($pg->(q{SELECT err($$SELECT distkit_inc('tls:sentinel')$$)}),
	qr/^28000 Redis Sentinel at 127\.0\.0\.1:PORT requires authentication \| Add \?sentinel_password=/,
	'sentinels that require a password, none given: 28000 with a hint');
set_conf(redis_url => "$sent_base?sentinel_user=watcher&sentinel_password=s3cret-wrong#distkit");
like($pg->(q{SELECT err($$SELECT distkit_inc('tls:sentinel')$$)}),
	qr/^28P01 authentication to Redis Sentinel at 127\.0\.0\.1:PORT failed \| Check sentinel_user and sentinel_password/,
	'a wrong sentinel password: 28P01');
set_conf(redis_url => "$sent_base?sentinel_user=watcher&sentinel_password=$sent_password#distkit");
is($pg->(q{SELECT distkit_inc('tls:sentinel', 7)}), '7', 'sentinels with a password, over TLS: the master is found');
is(redis_cli('GET', 'distkit:c:{tls:sentinel}'), '7', 'the master holds the increment');

# 9. no password anywhere
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$password\E/, 'the password is never in the server log');
unlike($log, qr/s3cret-(sentinel|wrong)/, 'nor the sentinel password');
unlike($log, qr/s3cret-rot/, 'nor a password of the password file');
unlike($log, qr/PRIVATE KEY|BEGIN CERTIFICATE/, 'nor key or certificate contents (paths only)');
like($log, qr/sentinel_password=\*\*\*#distkit/, 'the sentinel password is redacted in the log');
like($log, qr/rediss:\/\/:\*\*\*\@/, 'the rediss:// URL is redacted in the log');

$node->stop;
done_testing();

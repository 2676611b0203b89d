-- AUTH: ACL users and requirepass; passwords never shown to non-superusers
-- nor in any message.
\set raw `"$DISTKIT_REDIS_CTL" cli ACL SETUSER alice on '>s3cret-alice' '~*' '+@all'`
SELECT :'raw' AS acl;
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" 'alice:s3cret-alice@'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_inc('auth');
\set raw `"$DISTKIT_REDIS_CTL" cli CLIENT LIST | grep -c 'user=alice'`
SELECT :'raw'::int >= 1 AS connected_as_alice;
-- wrong password: 28P01, host:port named, password not
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" 'alice:s3cret-wrong@'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_inc('auth')$$);
-- percent-escaped password
\set raw `"$DISTKIT_REDIS_CTL" cli ACL SETUSER bob on '>s3cret/b@b' '~*' '+@all'`
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" 'bob:s3cret%2Fb%40b@'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_inc('auth');
-- a user without the needed permissions (it may read the cluster slot map)
\set raw `"$DISTKIT_REDIS_CTL" cli ACL SETUSER carol on '>s3cret-carol' '~*' '+@read' '+select' '+cluster|slots'`
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" 'carol:s3cret-carol@'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_inc('auth')$$);

-- requirepass (the default user): :password@ form, and a missing password
\set raw `"$DISTKIT_REDIS_CTL" cli CONFIG SET requirepass s3cret-default`
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT dk_error($$SELECT distkit_get('auth')$$);
\set url `printf "$DISTKIT_REDIS_URL_TEMPLATE" ':s3cret-default@'`
ALTER SYSTEM SET distkit.redis_url = :'url';
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('auth');

-- a non-superuser cannot read the URL in any way
CREATE ROLE dk_reader;
SET ROLE dk_reader;
SELECT dk_error($$SHOW distkit.redis_url$$);
SELECT dk_error($$SELECT current_setting('distkit.redis_url')$$);
SELECT count(*) AS visible_in_pg_settings FROM pg_settings WHERE name = 'distkit.redis_url';
SELECT dk_error($$SET distkit.redis_url = 'redis://127.0.0.1:1/0'$$);
SELECT dk_error($$SET distkit.prefix = 'mine'$$);
-- but may use the counters
SELECT distkit_get('auth');
RESET ROLE;
DROP ROLE dk_reader;
-- a superuser can
SELECT current_setting('distkit.redis_url') = :'url' AS superuser_sees_it;

-- PostgreSQL's own messages are redacted too: an error that quotes a URL,
-- the STATEMENT log line of a failing query, log_statement lines (the test
-- server runs with log_statement = all: every ALTER SYSTEM above) and the
-- postmaster's "parameter changed" line at each reload.  test/run-tests.sh
-- checks the server log.
SELECT 'redis://alice:s3cret-in-error@127.0.0.1:6379/0'::int;
SELECT 'unix://bob:s3cret-unix@/tmp/redis.sock and redis://:s3cret-two@[::1]/0'::int;
SELECT 'http://carol:not-redis@example/'::int;
SELECT 'redis-cluster://u:s3cret-cluster@127.0.0.1:7000,127.0.0.1:7001'::int;
SELECT 'redis-sentinel://:s3cret-sentinel@127.0.0.1:26379,[::1]:26380/2#main'::int;

-- clean up Redis for later tests
\set raw `"$DISTKIT_REDIS_CTL" cli -a s3cret-default CONFIG SET requirepass ''`
\set raw `"$DISTKIT_REDIS_CTL" cli ACL DELUSER alice bob carol`
ALTER SYSTEM RESET distkit.redis_url;
SELECT pg_reload_conf() AS reloaded \gset
\c
SELECT distkit_get('auth');
SELECT distkit_clear();
